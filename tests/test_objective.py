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
from risloss.functional import adversarial_divergence, label_correlation_penalty
from risloss.hooks import capture_features
from risloss.losses import BNStatisticsLoss
from risloss.objective import (
    AdversarialTerm,
    BNSTerm,
    CorrelationTerm,
    CrossEntropyTerm,
    Needs,
    RobustnessTerm,
    SimilarityTerm,
    TeacherPass,
    Term,
    class_similarity,
    label_agreement,
    ris_terms,
    within_class_similarity,
)
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
        teacher,
        terms={
            "ce": (1.0, CrossEntropyTerm()),
            "bns": (beta, BNSTerm()),
            "rob": (alpha, RobustnessTerm(rob)),
            "div": (gamma, CorrelationTerm()),
        },
    )
    parts = objective(images(batch=6), torch.arange(6) % 3)
    assert parts.bns is not None and parts.robustness is not None and parts.diversity is not None
    expected = parts.ce + beta * parts.bns + alpha * parts.robustness + gamma * parts.diversity
    torch.testing.assert_close(parts.loss, expected)
    # A weight-0 term is a figure: reported without graph, not summed.
    for value, weight in ((parts.bns, beta), (parts.robustness, alpha), (parts.diversity, gamma)):
        assert value.requires_grad == (weight > 0)
    assert float(parts.ce.detach()) >= 0 and float(parts.robustness.detach()) >= 0


def test_agreement_of_images_the_teacher_classifies_as_their_labels_is_one() -> None:
    teacher = make_teacher()
    x = images(batch=16)
    with torch.no_grad():
        predicted = teacher(x).argmax(1)
    objective = SynthesisObjective(teacher)  # GDFQ's terms by default
    assert list(objective.terms) == ["ce", "bns", "sim"]
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
    plain = SynthesisObjective.from_config(teacher, RISConfig().baseline())
    diverse = SynthesisObjective.from_config(
        teacher, RISConfig(feature_diversity_weight=2.0).baseline()
    )
    x = images(batch=8)
    base, parts = plain(x, labels), diverse(x, labels)
    with capture_features(teacher, "penultimate") as feats:
        teacher(x)
    sim = class_similarity(next(iter(feats.values())), labels)
    assert sim is not None and parts.similarity == pytest.approx(float(sim.detach()))
    torch.testing.assert_close(parts.loss, base.loss + 2.0 * sim)
    # A step against the gradient of the term alone lowers the similarity.
    only = SynthesisObjective(teacher, terms={"sim": (1.0, SimilarityTerm())})
    (grad,) = torch.autograd.grad(only(x, labels).loss, x)
    moved = (x - 0.5 * grad / grad.norm()).detach()
    after, before = only(moved, labels).similarity, parts.similarity
    assert after is not None and before is not None and after < before
    # A setting of the generator, kept by GDFQ's objective; a teacher it cannot serve fails.
    assert RISConfig(feature_diversity_weight=0.5).baseline().feature_diversity_weight == 0.5
    no_linear = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match="feature_diversity_weight > 0 needs"):
        ris_terms(RISConfig(bns_weight=0.0, feature_diversity_weight=1.0).baseline(), no_linear)
    with pytest.raises(ValueError, match=r"terms \['sim'\] need the penultimate feature"):
        SynthesisObjective(no_linear, terms={"sim": (1.0, SimilarityTerm())})
    with pytest.raises(ValueError, match="feature_diversity_weight must be"):
        RISConfig(feature_diversity_weight=-1.0)


def test_bad_arguments_name_the_argument() -> None:
    teacher = make_teacher()
    with pytest.raises(ValueError, match="same teacher"):
        SynthesisObjective(
            teacher, terms={"rob": (1.0, RobustnessTerm(RobustnessLoss(make_teacher(seed=1))))}
        )
    with pytest.raises(ValueError, match="no BatchNorm"):
        SynthesisObjective(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)))
    objective = SynthesisObjective(teacher)
    with pytest.raises(ValueError, match="labels must have the batch size of images"):
        objective(images(batch=4), torch.arange(3))


def test_teacher_without_linear_or_batchnorm() -> None:
    teacher = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    objective = SynthesisObjective.from_config(teacher, RISConfig(bns_weight=0.0).baseline())
    assert list(objective.terms) == ["ce"]  # no similarity figure without a final nn.Linear
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


# --------------------------------------------------------------------------------------------
# Named terms
# --------------------------------------------------------------------------------------------


class TotalVariation(Term):
    """A user's term: mean absolute difference of neighbouring pixels."""

    def forward(self, record: TeacherPass) -> torch.Tensor:
        x = record.images
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
            x[..., :, 1:] - x[..., :, :-1]
        ).abs().mean()


@settings(max_examples=12, deadline=None)
@given(weight=st.floats(0.0, 10.0, allow_subnormal=False), seed=st.integers(0, 2**16))
def test_a_term_of_ones_own_adds_exactly_weight_times_its_value(weight: float, seed: int) -> None:
    teacher = make_teacher()
    config = RISConfig(diversity="both", feature_diversity_weight=0.5)
    x, labels = images(batch=6, seed=seed), torch.arange(6) % 3
    objective = SynthesisObjective(
        teacher, terms=ris_terms(config, teacher, generator=seeded(seed))
    )
    base = objective(x, labels)
    terms = ris_terms(config, teacher, generator=seeded(seed))
    terms["tv"] = (weight, TotalVariation())
    with untouched(teacher):
        parts = SynthesisObjective(teacher, terms=terms)(x, labels)
    tv = parts.terms["tv"]
    alone = TotalVariation()(TeacherPass(images=x, labels=labels, logits=x))
    assert float(tv.detach()) == float(alone.detach())
    if weight > 0:
        assert torch.equal(parts.loss, base.loss + weight * tv)
    else:  # a figure: reported, not summed
        assert torch.equal(parts.loss, base.loss) and not tv.requires_grad
    for name in base.terms:  # the other terms, their perturbation draws included, are unchanged
        assert torch.equal(parts.terms[name], base.terms[name])
    assert parts.scalars()["g_tv"] == float(tv.detach())
    assert {k: v for k, v in parts.scalars().items() if k not in ("g_tv", "g_loss")} == {
        k: v for k, v in base.scalars().items() if k != "g_loss"
    }


def test_terms_are_summed_in_order_exactly_as_the_objective_was() -> None:
    """ce + w_bns*bns + w_rob*rob + w_div*div + w_fd*sim - w_adv*adv, in this order."""
    teacher = make_teacher()
    config = RISConfig(diversity="both", feature_diversity_weight=0.3)
    x, labels = images(batch=8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    student = make_teacher(seed=2)
    terms = ris_terms(config, teacher, generator=seeded(3))
    terms["adv"] = (0.5, AdversarialTerm())
    objective = SynthesisObjective(teacher, terms=terms)
    parts = objective(x, labels, student=student)
    t = parts.terms
    expected = (
        t["ce"] + 0.1 * t["bns"] + 1.0 * t["rob"] + 0.1 * t["div"] + 0.3 * t["sim"] - 0.5 * t["adv"]
    )
    assert torch.equal(parts.loss, expected)
    assert torch.equal(t["adv"], adversarial_divergence(student(x), parts.logits))
    # g_loss is the sum of the terms to minimize; the maximized one is reported on its own.
    minimized = t["ce"] + 0.1 * t["bns"] + 1.0 * t["rob"] + 0.1 * t["div"] + 0.3 * t["sim"]
    assert parts.minimized is not None and torch.equal(parts.minimized, minimized)
    assert parts.scalars()["g_loss"] == float(minimized.detach())
    assert parts.scalars()["g_adv"] == float(t["adv"].detach())
    # Without a student the adversarial term has no value and is not reported.
    terms = ris_terms(config, teacher, generator=seeded(3))
    terms["adv"] = (0.5, AdversarialTerm())
    assert "g_adv" not in SynthesisObjective(teacher, terms=terms)(x, labels).scalars()


@pytest.mark.parametrize(
    ("term", "names"),
    [
        (lambda t: CrossEntropyTerm(), ["g_x"]),
        (lambda t: BNSTerm(), ["g_x"]),
        (
            lambda t: RobustnessTerm(RobustnessLoss(t, generator=seeded(0))),
            ["g_x", "g_x_feature", "g_x_prediction"],
        ),
        (lambda t: CorrelationTerm("same"), ["g_x"]),
        (lambda t: SimilarityTerm(), ["g_x"]),
        (lambda t: AdversarialTerm(), ["g_x"]),
        (lambda t: TotalVariation(), ["g_x"]),
    ],
    ids=["ce", "bns", "rob", "div", "sim", "adv", "tv"],
)
@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_every_term_reports_under_its_name(term: Any, names: list[str], weight: float) -> None:
    teacher = make_teacher()
    objective = SynthesisObjective(teacher, terms={"x": (weight, term(teacher))})
    parts = objective(images(batch=6), torch.arange(6) % 3, student=make_teacher(seed=1))
    scalars = parts.scalars()
    assert sorted(scalars) == sorted([*names, "g_loss", "g_agree"])
    assert set(parts.scalars(prefix="")) == {n[2:] for n in scalars}
    if weight == 0:
        assert scalars["g_loss"] == 0.0
    else:
        sign = -1.0 if isinstance(objective.terms["x"][1], AdversarialTerm) else 1.0
        assert torch.equal(parts.loss, sign * (weight * parts.terms["x"]))


class ReturnsAFloat(Term):
    def forward(self, record: TeacherPass) -> Any:
        return 1.0


@pytest.mark.parametrize(
    ("terms", "error", "words"),
    [
        ([("ce", (1.0, CrossEntropyTerm()))], TypeError, "terms must be a mapping"),
        ({}, ValueError, "at least one term"),
        ({"loss": (1.0, CrossEntropyTerm())}, ValueError, "term names must be identifiers"),
        ({"g.ce": (1.0, CrossEntropyTerm())}, ValueError, "term names must be identifiers"),
        ({"1st": (1.0, CrossEntropyTerm())}, ValueError, "term names must be identifiers"),
        ({"ce": CrossEntropyTerm()}, TypeError, r"terms\['ce'\] must be a \(weight, term\) pair"),
        ({"ce": (1.0, CrossEntropyTerm(), 2)}, TypeError, r"\(weight, term\) pair"),
        ({"ce": (-1.0, CrossEntropyTerm())}, ValueError, "weight of term 'ce' must be a finite"),
        ({"ce": (float("nan"), CrossEntropyTerm())}, ValueError, "weight of term 'ce'"),
        ({"ce": (True, CrossEntropyTerm())}, ValueError, "weight of term 'ce'"),
        ({"ce": ("1", CrossEntropyTerm())}, ValueError, "weight of term 'ce'"),
        ({"ce": (1.0, nn.CrossEntropyLoss())}, TypeError, "must pair a weight with a Term"),
    ],
    ids=[
        "list", "empty", "reserved", "dot", "digit", "bare", "triple", "negative", "nan", "bool",
        "str", "not-a-term",
    ],
)  # fmt: skip
def test_bad_terms_raise_clear_errors(terms: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        SynthesisObjective(make_teacher(), terms=terms)


def test_bad_term_arguments_raise_clear_errors() -> None:
    teacher = make_teacher()
    with pytest.raises(ValueError, match=r"^pairs must be one of \('all', 'same', 'different'\)"):
        CorrelationTerm("most")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss must be a RobustnessLoss, got BNStatisticsLoss"):
        RobustnessTerm(BNStatisticsLoss())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss must be a BNStatisticsLoss"):
        BNSTerm(nn.MSELoss())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agreeing_only must be True or False"):
        AdversarialTerm(agreeing_only=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pass terms= or the deprecated"):
        SynthesisObjective(teacher, terms={"ce": (1.0, CrossEntropyTerm())}, bns_weight=0.1)
    no_bn = nn.Sequential(nn.Flatten(), nn.Linear(256, 3))
    with pytest.raises(ValueError, match="no BatchNorm"):
        SynthesisObjective(no_bn, terms={"bns": (0.0, BNSTerm())})  # a figure needs it too

    class Layer9(Term):
        needs = Needs(features="layer9")

        def forward(self, record: TeacherPass) -> torch.Tensor:
            return record.logits.sum()

    with pytest.raises(ValueError, match="'layer9'"):
        SynthesisObjective(teacher, terms={"l9": (1.0, Layer9())})

    class FcOutput(Term):
        needs = Needs(features={"fc": "output"})

        def forward(self, record: TeacherPass) -> torch.Tensor:
            return record.features["fc"].sum()

    with pytest.raises(ValueError, match="a layer is captured once"):
        SynthesisObjective(
            teacher, terms={"out": (1.0, FcOutput()), "sim": (0.0, SimilarityTerm())}
        )
    objective = SynthesisObjective(teacher, terms={"bad": (1.0, ReturnsAFloat())})
    with pytest.raises(TypeError, match="term 'bad' must return a tensor, a TermValue or None"):
        objective(images(batch=4), torch.arange(4))


def test_a_term_reads_the_features_it_declares() -> None:
    teacher = make_teacher()
    seen: dict[str, Any] = {}

    class Reads(Term):
        needs = Needs(features=["layer2", "layer3"], bn_statistics=True, penultimate=True)

        def forward(self, record: TeacherPass) -> torch.Tensor:
            seen.update(
                features=sorted(record.features),
                bn=record.bn_statistics is not None and len(record.bn_statistics) > 0,
                penultimate=None if record.penultimate is None else record.penultimate.shape,
            )
            return record.features["layer3"].mean()

    objective = SynthesisObjective(teacher, terms={"reads": (1.0, Reads())})
    assert objective.feature_layers == {"layer2": "output", "layer3": "output", "fc": "input"}
    calls, handle = count_forwards(teacher)
    try:
        objective(images(batch=4), torch.arange(4))
    finally:
        handle.remove()
    assert calls[0] == 1
    assert seen == {"features": ["fc", "layer2", "layer3"], "bn": True, "penultimate": (4, 64)}


def test_deprecated_weight_arguments_build_the_same_terms() -> None:
    teacher = make_teacher()
    x, labels = images(batch=6), torch.arange(6) % 3
    with pytest.warns(DeprecationWarning, match="bns_weight, robustness, diversity_weight"):
        old = SynthesisObjective(
            teacher,
            bns_weight=0.2,
            robustness=RobustnessLoss(teacher, generator=seeded(0), prediction_distance="kl"),
            diversity_weight=0.3,
        )
    assert old.weights == {"ce": 1.0, "bns": 0.2, "rob": 1.0, "div": 0.3, "sim": 0.0}
    config = RISConfig(bns_weight=0.2, diversity="penalty", diversity_weight=0.3)
    new = SynthesisObjective(teacher, terms=ris_terms(config, teacher, generator=seeded(0)))
    a, b = old(x, labels), new(x, labels)
    assert torch.equal(a.loss, b.loss) and a.scalars() == b.scalars()
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"^bns_weight must be"):
        SynthesisObjective(teacher, bns_weight=-1.0)
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match=r"^correlation_pairs must be one of"),
    ):
        SynthesisObjective(teacher, correlation_pairs="most")  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="same teacher"):
        SynthesisObjective(teacher, robustness=RobustnessLoss(make_teacher(seed=1)))
    no_linear = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match="feature_diversity_weight > 0 needs"),
    ):
        SynthesisObjective(no_linear, bns_weight=0.0, feature_diversity_weight=1.0)


def test_terms_move_with_the_objective_and_show_in_its_repr() -> None:
    teacher = make_teacher()
    objective = SynthesisObjective.from_config(teacher, RISConfig(), generator=seeded(0))
    assert objective.robustness is objective.terms["rob"][1].loss  # type: ignore[attr-defined]
    assert objective.robustness in list(objective.modules())
    assert "ce=1.0, bns=0.1, rob=1.0, sim=0.0" in repr(objective)
    assert not any(p is q for p in objective.parameters() for q in teacher.parameters())


# --------------------------------------------------------------------------------------------
# Settings: one declaration each
# --------------------------------------------------------------------------------------------


def test_every_ris_setting_has_a_help_line_and_the_robustness_ones_are_inherited() -> None:
    import attrs

    from risloss._fields import default_of
    from risloss.losses import RobustnessConfig

    fields = attrs.fields(RISConfig)
    for f in fields:
        assert isinstance(f.metadata.get("help"), str) and f.metadata["help"], f.name
    low = attrs.fields(RobustnessConfig)
    for name in ("mode", "num_draws", "feature_distance", "prediction_distance", "threshold"):
        ours, theirs = getattr(fields, name), getattr(low, name)
        assert (
            ours.validator == theirs.validator and ours.metadata["help"] == theirs.metadata["help"]
        )
    assert fields.mode.metadata["option"] == "--robustness-mode"
    # The one intended difference: RIS's KL against the paper's L1.
    assert default_of(RISConfig, "prediction_distance") == "kl"
    assert default_of(RobustnessConfig, "prediction_distance") == "l1"
    with pytest.raises(ValueError, match=r"^num_draws must be an integer in 1\.\.64, got 65"):
        RISConfig(num_draws=65)
    with pytest.raises(ValueError, match=r"^num_draws must be an integer in 1\.\.64, got 65"):
        RobustnessLoss(make_teacher(), num_draws=65)
    # The default Gaussian weight noise is RobustnessLoss's.
    rob = RobustnessLoss(make_teacher())
    assert RISConfig().weight_noise() == rob.weight_perturbation


# ------------------------------------------------------------------------------------------
# BNSTerm with momentum
# ------------------------------------------------------------------------------------------


def _stats(seed: int, layers: int = 2, channels: int = 3, shift: float = 0.0) -> Any:
    from risloss.functional import BNStatistics

    g = seeded(seed)
    return BNStatistics(
        names=tuple(f"bn{i}" for i in range(layers)),
        batch_means=tuple(torch.randn(channels, generator=g) + shift for _ in range(layers)),
        batch_vars=tuple(torch.rand(channels, generator=g) + 0.5 for _ in range(layers)),
        running_means=tuple(torch.zeros(channels) for _ in range(layers)),
        running_vars=tuple(torch.ones(channels) for _ in range(layers)),
    )


class _Record:
    """The one field of a teacher pass that BNSTerm reads."""

    def __init__(self, stats: Any) -> None:
        self.bn_statistics = stats


def test_bns_momentum_zero_is_the_plain_loss_and_keeps_no_state() -> None:
    term = BNSTerm()
    for seed in range(3):
        stats = _stats(seed)
        torch.testing.assert_close(term(_Record(stats)), BNStatisticsLoss()(stats))
    assert term.get_extra_state() is None


@given(m=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_bns_momentum_compares_the_blend_with_the_earlier_batches(m: float, seed: int) -> None:
    from risloss.functional import bn_statistics_loss

    term = BNSTerm(momentum=m)
    first, second, third = (_stats(seed + k, shift=k) for k in range(3))
    # the first batch alone
    torch.testing.assert_close(term(_Record(first)), BNStatisticsLoss()(first))
    # the second against (1 - m) * second + m * first
    blend_means = [
        (1 - m) * b + m * p for b, p in zip(second.batch_means, first.batch_means, strict=True)
    ]
    blend_vars = [
        (1 - m) * b + m * p for b, p in zip(second.batch_vars, first.batch_vars, strict=True)
    ]
    expected = bn_statistics_loss(
        blend_means, blend_vars, second.running_means, second.running_vars
    )
    torch.testing.assert_close(term(_Record(second)), expected)
    # the past is now the exponential average m * first + (1 - m) * second
    past = term.get_extra_state()
    assert past is not None
    for p, a, b in zip(past["means"], first.batch_means, second.batch_means, strict=True):
        torch.testing.assert_close(p, m * a + (1 - m) * b)
    # an evaluation under no_grad leaves the past as it was
    with torch.no_grad():
        term(_Record(third))
    after = term.get_extra_state()
    assert after is not None
    for p, q in zip(past["means"] + past["vars"], after["means"] + after["vars"], strict=True):
        assert torch.equal(p, q)


@given(m=st.floats(0.0, 0.95), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_bns_momentum_of_batches_at_the_running_statistics_is_zero(m: float, seed: int) -> None:
    from risloss.functional import BNStatistics

    g = seeded(seed)
    mean, var = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.1
    term = BNSTerm(momentum=m)
    for _ in range(3):  # every batch at the running statistics: so is every blend of them
        stats = BNStatistics(
            names=("bn",),
            batch_means=(mean.clone(),),
            batch_vars=(var.clone(),),
            running_means=(mean,),
            running_vars=(var,),
        )
        assert float(term(_Record(stats))) == pytest.approx(0.0, abs=1e-10)


def test_bns_momentum_state_travels_in_the_state_dict() -> None:
    term = BNSTerm(momentum=0.9)
    term(_Record(_stats(0)))
    term(_Record(_stats(1, shift=2.0)))
    copy = BNSTerm(momentum=0.9)
    copy.load_state_dict(term.state_dict())
    probe = _stats(2, shift=-1.0)
    torch.testing.assert_close(copy(_Record(probe)), term(_Record(probe)))


def test_bns_momentum_gradient_reaches_only_the_current_batch() -> None:
    term = BNSTerm(momentum=0.5)
    term(_Record(_stats(0)))
    stats = _stats(1)
    for t in stats.batch_means + stats.batch_vars:
        t.requires_grad_(True)
    term(_Record(stats)).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in stats.batch_means)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, float("nan")])
def test_bns_momentum_out_of_range_names_the_argument(momentum: float) -> None:
    with pytest.raises(ValueError, match="momentum"):
        BNSTerm(momentum=momentum)
    with pytest.raises(ValueError, match="bns_momentum"):
        RISConfig(bns_momentum=momentum)


def test_ris_config_builds_its_bns_term_with_the_momentum() -> None:
    teacher = make_teacher()
    terms = ris_terms(RISConfig(bns_momentum=0.9), teacher)
    assert terms["bns"][1].momentum == 0.9
    assert ris_terms(RISConfig(bns_momentum=0.9).baseline(), teacher)["bns"][1].momentum == 0.9
