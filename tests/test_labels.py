"""The labels a generator is asked for: the public sampler draws what the trainer draws."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from risloss import LabelSampler, RISConfig, SynthesisObjective
from risloss.training import GeneratorSource
from tests.losses.test_robustness import make_teacher, seeded


def reference_labels(
    batch: int, classes: int, soft_classes: int, rng: torch.Generator
) -> torch.Tensor:
    """The trainer's labels as they were drawn before the sampler was public, written out."""
    hard = torch.randint(0, classes, (batch,), generator=rng)
    if soft_classes < 2:
        return hard
    k = min(soft_classes, classes)
    others = torch.rand((batch, classes), generator=rng)
    others[torch.arange(batch), hard] = -1.0
    extra = others.topk(k - 1, dim=1).indices
    primary = 0.5 + 0.5 * torch.rand((batch, 1), generator=rng)
    rest = torch.rand((batch, k - 1), generator=rng)
    rest = rest / rest.sum(1, keepdim=True) * (1 - primary)
    soft = torch.zeros(batch, classes)
    soft[torch.arange(batch), hard] = primary.squeeze(1)
    soft.scatter_(1, extra, rest)
    return soft


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 40),
    classes=st.integers(2, 12),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sampler_draws_what_the_trainer_drew(
    batch: int, classes: int, data: st.DataObject, seed: int
) -> None:
    k = data.draw(st.integers(1, classes), label="k")
    sampler = LabelSampler.hard(classes) if k == 1 else LabelSampler.soft(classes, k)
    ours, theirs = seeded(seed), seeded(seed)
    labels = sampler.sample(batch, generator=ours)
    expected = reference_labels(batch, classes, k, theirs)
    assert labels.dtype == expected.dtype and torch.equal(labels, expected)
    assert torch.equal(ours.get_state(), theirs.get_state())  # as many draws, in the same order
    if k == 1:
        assert labels.shape == (batch,) and sampler.kind == "hard"
        assert int(labels.min()) >= 0 and int(labels.max()) < classes
    else:
        assert labels.shape == (batch, classes) and sampler.kind == "soft"
        torch.testing.assert_close(labels.sum(1), torch.ones(batch))
        assert ((labels > 0).sum(1) == k).all()
        assert (labels.max(1).values >= 0.5).all()


def test_configuration_hands_out_the_sampler_its_diversity_implies() -> None:
    assert RISConfig().label_sampler(10) == LabelSampler.soft(10, 2)
    assert RISConfig(diversity="both", soft_label_classes=3).label_sampler(10) == LabelSampler(
        10, 3
    )
    assert RISConfig(soft_label_classes=1).label_sampler(10) == LabelSampler.hard(10)
    for hard in (
        RISConfig(diversity="penalty"),
        RISConfig(diversity="none"),
        RISConfig().baseline(),
    ):
        assert hard.label_sampler(10).kind == "hard"
    with pytest.raises(ValueError, match=r"^soft_label_classes must be at most .* \(3\), got 4"):
        RISConfig(soft_label_classes=4).label_sampler(3)
    # Hard labels ask nothing of the classes.
    assert RISConfig(diversity="none", soft_label_classes=4).label_sampler(3).kind == "hard"


@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (lambda: LabelSampler.hard(0), ValueError, r"^num_classes must be an integer >= 1, got 0"),
        (lambda: LabelSampler.soft(10, 1), ValueError, r"^k must be an integer >= 2"),
        (lambda: LabelSampler.soft(3, 4), ValueError, r"^mixed must be at most num_classes \(3\)"),
        (lambda: LabelSampler(10, 0), ValueError, r"^mixed must be an integer >= 1"),
        (
            lambda: LabelSampler.hard(3).sample(0),
            ValueError,
            r"^batch_size must be an integer >= 1",
        ),
        (lambda: LabelSampler.hard(3).sample(2.0), ValueError, r"^batch_size must be"),  # type: ignore[arg-type]
    ],
    ids=["no-classes", "soft-1", "more-than-classes", "mixed-0", "batch-0", "batch-float"],
)
def test_bad_sampler_arguments_raise(build: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        build()  # type: ignore[operator]


def _source(config: RISConfig, *, adversarial_weight: float = 0.0) -> GeneratorSource:
    torch.manual_seed(0)
    return GeneratorSource(
        make_teacher(),
        method="ris",
        ris=config,
        num_classes=10,
        shape=(1, 16, 16),
        batch_size=8,
        lr=1e-3,
        rng=seeded(5),
        perturbation_rng=seeded(6),
        device=torch.device("cpu"),
        adversarial_weight=adversarial_weight,
    )


@pytest.mark.parametrize(
    "config",
    [
        RISConfig(),
        RISConfig(diversity="both", soft_label_classes=3),
        RISConfig(diversity="penalty"),
    ],
    ids=["soft", "both-3", "penalty"],
)
def test_own_loop_draws_the_labels_and_computes_the_objective_of_the_trainer(
    config: RISConfig,
) -> None:
    """The guide's loop, with the public pieces, against the trainer's generator source."""
    source = _source(config)
    teacher = make_teacher()
    generator = copy.deepcopy(source.generator)
    batch = source.next_batch()

    # The loop of docs/guides/own-trainer.md: same seeds, same generator weights.
    sampler = config.label_sampler(10)
    objective = SynthesisObjective.from_config(teacher, config, generator=seeded(6))
    rng = seeded(5)
    labels = sampler.sample(8, generator=rng)
    z = torch.randn((8, generator.latent_dim), generator=rng)
    parts = objective(generator.train()(z, labels), labels)

    assert batch.labels is not None and torch.equal(batch.labels, labels)
    assert batch.parts == parts.scalars()
    assert torch.equal(batch.teacher_logits, parts.logits.detach())


def test_adversarial_term_of_the_trainer_is_the_objectives() -> None:
    """The trainer's adversarial generator step: the objective less w * the divergence."""
    from risloss.functional import adversarial_divergence
    from risloss.objective import AdversarialTerm, ris_terms

    config = RISConfig()
    source = _source(config, adversarial_weight=0.5)
    assert list(source.objective.terms) == ["ce", "bns", "rob", "sim", "adv"]
    teacher = make_teacher()
    student = make_teacher(seed=3)
    generator = copy.deepcopy(source.generator)
    batch = source.next_batch(adversary=student)

    rng = seeded(5)
    labels = config.label_sampler(10).sample(8, generator=rng)
    images = generator.train()(torch.randn((8, generator.latent_dim), generator=rng), labels)
    plain = SynthesisObjective.from_config(teacher, config, generator=seeded(6))(images, labels)
    adv = adversarial_divergence(student(images), plain.logits)
    expected = plain.scalars()
    expected["g_adv"] = float(adv.detach())  # g_loss: the objective the generator minimizes
    assert batch.parts == expected
    terms = ris_terms(config, teacher, generator=seeded(6)) | {"adv": (0.5, AdversarialTerm())}
    parts = SynthesisObjective(teacher, terms=terms)(images, labels, student=student)
    assert torch.equal(parts.loss, plain.loss - 0.5 * adv)  # what the generator step descends
    assert parts.minimized is not None and torch.equal(parts.minimized, plain.loss)
    # Without a student (before warm-up ends) the step is the objective alone.
    source = _source(config, adversarial_weight=0.5)
    assert "g_adv" not in source.next_batch().parts
