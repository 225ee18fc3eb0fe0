"""The generator objective: one clean teacher pass, the same value as its terms written by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from risloss import RISConfig, RobustnessLoss, SynthesisObjective, capture_bn_statistics
from risloss._stateless import module_state_snapshot
from risloss.functional import label_correlation_penalty
from risloss.hooks import capture_features
from risloss.losses import BNStatisticsLoss
from risloss.objective import class_similarity, label_agreement, within_class_similarity
from tests.losses.test_robustness import images, make_teacher, seeded, untouched


def count_forwards(model: nn.Module) -> tuple[list[int], Any]:
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    return calls, model.register_forward_pre_hook(hook)


@pytest.mark.parametrize(("config", "passes"), [(RISConfig().baseline(), 1), (RISConfig(), 2)])
def test_one_clean_pass_shared_by_every_term(config: RISConfig, passes: int) -> None:
    teacher = make_teacher()
    objective = SynthesisObjective.from_config(teacher, config, generator=seeded(0))
    before = module_state_snapshot(teacher)
    calls, handle = count_forwards(teacher)
    try:
        objective(images(batch=8), torch.arange(8) % 3)
    finally:
        handle.remove()
    assert calls[0] == passes  # the clean pass, plus one per robustness draw
    assert module_state_snapshot(teacher).differences(before) == []
    assert not teacher._forward_hooks and not teacher._forward_pre_hooks


def test_equals_the_terms_written_by_hand() -> None:
    teacher = make_teacher()
    x = images(batch=8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    config = RISConfig(diversity="penalty")
    objective = SynthesisObjective.from_config(teacher, config, generator=seeded(3))
    with untouched(teacher):
        parts = objective(x, labels)

    # RISConfig's prediction distance (KL) differs from RobustnessLoss's own default (L1).
    rob = RobustnessLoss(teacher, generator=seeded(3), prediction_distance="kl")
    with (
        capture_features(teacher, rob.feature_layers) as feats,
        capture_bn_statistics(teacher) as bn,
    ):
        logits = teacher(x)
    ce = F.cross_entropy(logits, labels)
    bns = BNStatisticsLoss()(bn.statistics())
    r = rob(x, clean_logits=logits, clean_features=feats)
    div = label_correlation_penalty(logits, labels)
    expected = ce + 0.1 * bns + 1.0 * r + 0.1 * div
    assert torch.equal(parts.loss, expected)
    assert torch.equal(parts.ce, ce) and parts.bns is not None and torch.equal(parts.bns, bns)
    assert parts.robustness is not None and torch.equal(parts.robustness, r)
    assert parts.diversity is not None and torch.equal(parts.diversity, div)
    assert torch.equal(parts.logits, logits)
    # Gradients reach the images through every term.
    parts.loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_baseline_has_only_ce_and_bns() -> None:
    teacher = make_teacher()
    parts = SynthesisObjective.from_config(teacher, RISConfig(bns_weight=0.3).baseline())(
        images(batch=6), torch.arange(6) % 2
    )
    assert parts.robustness is None and parts.diversity is None and parts.bns is not None
    torch.testing.assert_close(parts.loss, parts.ce + 0.3 * parts.bns, rtol=0, atol=0)
    names = set(parts.scalars())
    assert names == {"g_ce", "g_bns", "g_loss", "g_agree", "g_sim"}
    assert set(parts.scalars(prefix="")) == {n[2:] for n in names}


@settings(max_examples=15, deadline=None)
@given(
    beta=st.floats(0.0, 5.0),
    alpha=st.floats(0.0, 5.0),
    gamma=st.floats(0.0, 5.0),
)
def test_total_is_the_weighted_sum_of_its_parts(beta: float, alpha: float, gamma: float) -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, generator=seeded(0))
    objective = SynthesisObjective(
        teacher, bns_weight=beta, robustness=rob, robustness_weight=alpha, diversity_weight=gamma
    )
    parts = objective(images(batch=6), torch.arange(6) % 3)
    expected = parts.ce.clone()
    if parts.bns is not None:
        expected = expected + beta * parts.bns
    assert parts.robustness is not None
    expected = expected + alpha * parts.robustness
    if parts.diversity is not None:
        expected = expected + gamma * parts.diversity
    torch.testing.assert_close(parts.loss, expected)
    assert (parts.bns is None) == (beta == 0) and (parts.diversity is None) == (gamma == 0)
    assert float(parts.ce.detach()) >= 0 and float(parts.robustness.detach()) >= 0


def test_agreement_of_images_the_teacher_classifies_as_their_labels_is_one() -> None:
    teacher = make_teacher()
    x = images(batch=16)
    with torch.no_grad():
        predicted = teacher(x).argmax(1)
    objective = SynthesisObjective(teacher)
    assert objective(x, predicted).agreement == 1.0
    wrong = (predicted + 1) % 10
    assert objective(x, wrong).agreement == 0.0
    soft = F.one_hot(predicted, 10).float() * 0.7 + 0.03
    assert label_agreement(teacher(x), soft) == 1.0


def test_within_class_similarity_matches_a_plain_loop() -> None:
    g = seeded(0)
    f = torch.randn(12, 5, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 1, 0])
    per_class = []
    for c in labels.unique():
        rows = f[labels == c]
        if len(rows) < 2:
            continue
        sims = [
            F.cosine_similarity(rows[i], rows[j], dim=0)
            for i in range(len(rows))
            for j in range(len(rows))
            if i != j
        ]
        per_class.append(torch.stack(sims).mean())
    expected = float(torch.stack(per_class).mean())
    assert within_class_similarity(f, labels) == pytest.approx(expected, abs=1e-6)
    assert within_class_similarity(f, torch.arange(12)) is None
    same = f[:1].repeat(4, 1)
    assert within_class_similarity(same, torch.zeros(4, dtype=torch.long)) == pytest.approx(1.0)


def _loop_similarity(f: torch.Tensor, labels: torch.Tensor) -> float | None:
    per_class = []
    for c in labels.unique():
        rows = F.normalize(f[labels == c], dim=1)
        n = len(rows)
        if n >= 2:
            gram = rows @ rows.T
            per_class.append((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))
    return float(torch.stack(per_class).mean()) if per_class else None


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=20),
    seed=st.integers(0, 2**16),
)
def test_class_similarity_is_the_per_class_mean_of_pair_similarities(
    labels: list[int], seed: int
) -> None:
    y = torch.tensor(labels)
    f = torch.randn(len(labels), 6, generator=seeded(seed))
    value = class_similarity(f, y)
    expected = _loop_similarity(f, y)
    if expected is None:
        assert value is None
    else:
        assert value is not None and float(value) == pytest.approx(expected, abs=1e-5)
        assert -1.0 - 1e-6 <= float(value) <= 1.0 + 1e-6
    # Soft labels count by their largest entry.
    soft = F.one_hot(y, 5).float() * 0.6 + 0.08
    soft_value = class_similarity(f, soft)
    assert (soft_value is None) == (value is None)
    if value is not None and soft_value is not None:
        assert torch.equal(soft_value, value)


def test_feature_diversity_adds_the_differentiable_similarity() -> None:
    teacher = make_teacher()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    plain = SynthesisObjective(teacher, bns_weight=0.1)
    diverse = SynthesisObjective(teacher, bns_weight=0.1, feature_diversity_weight=2.0)
    x = images(batch=8)
    base, parts = plain(x, labels), diverse(x, labels)
    with capture_features(teacher, "penultimate") as feats:
        teacher(x)
    sim = class_similarity(next(iter(feats.values())), labels)
    assert sim is not None and parts.similarity == pytest.approx(float(sim.detach()))
    torch.testing.assert_close(parts.loss, base.loss + 2.0 * sim)
    # A step against the gradient of the term alone lowers the similarity.
    only = SynthesisObjective(teacher, bns_weight=0.0, feature_diversity_weight=1.0)
    (grad,) = torch.autograd.grad(only(x, labels).loss - only(x, labels).ce, x)
    moved = (x - 0.5 * grad / grad.norm()).detach()
    after, before = only(moved, labels).similarity, parts.similarity
    assert after is not None and before is not None and after < before
    # A setting of the generator, kept by GDFQ's objective; a teacher it cannot serve fails.
    assert RISConfig(feature_diversity_weight=0.5).baseline().feature_diversity_weight == 0.5
    no_linear = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match="feature_diversity_weight > 0 needs"):
        SynthesisObjective(no_linear, bns_weight=0.0, feature_diversity_weight=1.0)
    with pytest.raises(ValueError, match="feature_diversity_weight must be"):
        RISConfig(feature_diversity_weight=-1.0)


def test_bad_arguments_name_the_argument() -> None:
    teacher = make_teacher()
    with pytest.raises(ValueError, match=r"^bns_weight must be a finite number >= 0"):
        SynthesisObjective(teacher, bns_weight=-1.0)
    with pytest.raises(ValueError, match=r"^correlation_pairs must be one of"):
        SynthesisObjective(teacher, correlation_pairs="most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same teacher"):
        SynthesisObjective(teacher, robustness=RobustnessLoss(make_teacher(seed=1)))
    with pytest.raises(ValueError, match="no BatchNorm"):
        SynthesisObjective(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)))
    objective = SynthesisObjective(teacher)
    with pytest.raises(ValueError, match="labels must have the batch size of images"):
        objective(images(batch=4), torch.arange(3))


def test_teacher_without_linear_or_batchnorm() -> None:
    teacher = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    objective = SynthesisObjective(teacher, bns_weight=0.0)
    parts = objective(images(batch=4), torch.tensor([0, 1, 2, 0]))
    assert parts.similarity is None and parts.bns is None
    assert objective.feature_layers == {}


def test_soft_labels_report_the_divergence_from_the_requested_mixture() -> None:
    teacher = make_teacher()
    x = images(batch=6)
    with torch.no_grad():
        target = F.softmax(teacher(x), dim=1)
    parts = SynthesisObjective(teacher)(x, target)  # the teacher predicts exactly the mixture
    scalars = parts.scalars()
    entropy = float(-(target * target.log()).sum(1).mean())
    assert scalars["g_ce"] == pytest.approx(entropy, rel=1e-5)
    assert scalars["g_kl"] == pytest.approx(0.0, abs=1e-5)
    assert "g_kl" not in SynthesisObjective(teacher)(x, target.argmax(1)).scalars()
