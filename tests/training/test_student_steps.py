"""What the student is shown: the adversarial generator term, several student steps per
iteration and the replay pool of past batches, through the shared trainer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from risloss.functional import adversarial_divergence
from risloss.training import Run, TrainConfig, TrainJob, ris_for, train
from tests._data import fashion_mnist_or_skip
from tests._resume import assert_resume_matches_uninterrupted
from tests.training.test_distill_prune import TINY as DISTILL_PRUNE_TINY

pytestmark = pytest.mark.data

TINY: dict[str, Any] = {**DISTILL_PRUNE_TINY, "iters": 6}


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    fashion_mnist_or_skip("test")


def _run(tmp_path: Path, **settings: Any) -> TrainJob:
    """A distillation job set up in ``tmp_path``: built, no iteration taken."""
    config = TrainConfig(**{"task": "distill", "method": "gdfq", **TINY, **settings})
    job = TrainJob(config)
    Run(job, tmp_path, log=None).setup()
    return job


def test_the_adversary_pass_reaches_the_images_and_leaves_the_student_as_it_was(
    tmp_path: Path,
) -> None:
    job = _run(tmp_path, adversarial_weight=1.0)
    student = job.student
    assert student.training  # a distillation student: BatchNorm updates its statistics
    before = copy.deepcopy(student.state_dict())
    images = torch.randn(8, 1, 28, 28, requires_grad=True)
    logits = job.adversary(images)
    logits.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in student.parameters())
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats included
    with torch.no_grad():
        assert torch.allclose(logits, student(images), atol=1e-6)  # the same function


def test_adversarial_term_is_recorded_from_the_student_phase_on(tmp_path: Path) -> None:
    job = _run(tmp_path, adversarial_weight=1.0)
    warm = job.step(0)  # warm-up: no student yet, no adversarial term
    assert "g_adv" not in warm
    batches: list[Any] = []
    next_batch = job.source.next_batch

    def spy(adversary: Any = None) -> Any:
        batches.append(next_batch(adversary))
        return batches[-1]

    job.source.next_batch = spy  # type: ignore[method-assign]
    student_then = copy.deepcopy(job.student)
    record = job.step(1)
    images = batches[-1].images
    with torch.no_grad():
        expected = adversarial_divergence(student_then(images), job.teacher(images))
    assert record["g_adv"] == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
    plain = _run(tmp_path / "plain", adversarial_weight=0.0)
    assert "g_adv" not in plain.step(1)  # weight 0: the objective alone


def test_the_adversarial_term_changes_the_generator_step(tmp_path: Path) -> None:
    weights, records = [], []
    for w in (0.0, 10.0):
        job = _run(tmp_path / str(w), adversarial_weight=w)
        # A student of the teacher's architecture with its weights and a shifted last bias:
        # it predicts the teacher's classes with other probabilities, so the term is active.
        job.student.load_state_dict(job.teacher.state_dict())
        job.student.eval()
        last = [m for m in job.student.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias += torch.linspace(-0.5, 0.5, last.bias.numel())
        job.step(0)
        records.append(job.step(1))
        generator = job.source.generator
        weights.append(torch.cat([p.detach().flatten() for p in generator.parameters()]))
    assert records[1]["g_adv"] > 0
    assert not torch.equal(weights[0], weights[1])


def test_student_steps_draw_from_the_replay_pool(tmp_path: Path) -> None:
    job = _run(
        tmp_path,
        student_steps=3,
        replay_size=20,
        student_batch_size=None,  # the first step on the batch, the others on the pool
        student_augmentation="none",
        student_mixup=0.0,
        adversarial_weight=0.0,
    )
    seen: list[torch.Tensor] = []
    hook = job.student.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    steps: list[int] = []
    counter = job.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    try:
        job.step(0)  # warm-up
        lr0 = job.optimizer.param_groups[0]["lr"]
        for it in (1, 2, 3):
            job.step(it)
    finally:
        hook.remove()
        counter.remove()
    assert len(steps) == 9  # three student steps per iteration after warm-up
    assert job.scheduler.last_epoch == 3  # the schedule advances once per iteration
    assert job.optimizer.param_groups[0]["lr"] < lr0
    assert job.replay is not None and len(job.replay) == 20  # 3 batches of 8, capacity 20
    stored = {tuple(x.flatten()[:5].tolist()) for x in job.replay.images}
    for batch in seen[3:]:  # the draws of the second and third steps of the last iteration
        assert batch.shape == (8, 1, 28, 28)
    for batch in (seen[-2], seen[-1]):
        assert all(tuple(x.flatten()[:5].tolist()) in stored for x in batch)
    assert not torch.equal(seen[-2], seen[-3])  # a pool draw, not the iteration's batch again


def test_without_a_pool_the_extra_steps_see_new_views_of_the_batch(tmp_path: Path) -> None:
    job = _run(  # distillation: augmentation on
        tmp_path,
        student_steps=2,
        replay_size=0,
        student_batch_size=None,
        student_mixup=0.0,
        adversarial_weight=0.0,
    )
    seen: list[torch.Tensor] = []
    hook = job.student.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        job.step(1)
    finally:
        hook.remove()
    assert len(seen) == 2
    assert not torch.equal(seen[0], seen[1])


def test_resume_equals_uninterrupted_with_pool_steps_and_adversary(tmp_path: Path) -> None:
    config = TrainConfig(
        task="distill",
        method="ris",
        adversarial_weight=0.5,
        student_steps=2,
        replay_size=12,
        **TINY,
    )
    full, _ = assert_resume_matches_uninterrupted(config, tmp_path, at=3)
    assert any("g_adv" in r for r in full["history"])


@pytest.mark.parametrize("task", ["quantize", "prune"])
def test_quantized_and_pruned_students_take_the_adversarial_term(task: str, tmp_path: Path) -> None:
    bits = {"w_bits": 4, "a_bits": 4} if task == "quantize" else {}
    config = TrainConfig(
        **{**TINY, "iters": 3, **bits}, task=task, method="gdfq", adversarial_weight=1.0
    )
    metrics = train(config, tmp_path, log=None)
    assert [("g_adv" in r) for r in metrics["history"]] == [False, True, True]
    assert all(r["g_adv"] >= 0 for r in metrics["history"][1:])


def test_a_student_started_from_the_teacher_holds_its_matching_tensors(tmp_path: Path) -> None:
    job = _run(tmp_path, student_init="teacher")
    theirs, ours = job.teacher.state_dict(), job.student.state_dict()
    assert ours.keys() <= theirs.keys()  # a ResNet-8 teacher: every tensor matches
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name
    fresh = _run(tmp_path / "fresh").student.state_dict()
    assert not torch.equal(fresh["conv1.weight"], theirs["conv1.weight"])


def test_student_init_needs_a_tensor_in_common(tmp_path: Path) -> None:
    class Flat(torch.nn.Module):  # a classifier with none of ResNet-8's tensor names
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(28 * 28, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    config = TrainConfig(task="distill", method="noise", student_init="teacher", **TINY)
    job = TrainJob(config, model=Flat())
    with pytest.raises(ValueError, match="shares no parameter or buffer"):
        Run(job, tmp_path / "out", log=None).setup()
    assert not (tmp_path / "out").exists()


def test_the_pool_regime_draws_every_student_batch_from_the_whole_pool(tmp_path: Path) -> None:
    job = _run(
        tmp_path,
        student_steps=3,
        student_batch_size=5,
        replay_size=100,
        student_augmentation="none",
        student_mixup=0.0,
        adversarial_weight=0.0,
    )
    seen: list[torch.Tensor] = []
    hook = job.student.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    batches: list[torch.Tensor] = []
    next_batch = job.source.next_batch

    def recording(*args: Any, **kwargs: Any) -> Any:
        batch = next_batch(*args, **kwargs)
        batches.append(batch.images)
        return batch

    job.source.next_batch = recording  # type: ignore[method-assign]
    try:
        job.step(0)  # warm-up: the pool starts with the first student iteration
        job.step(1)
        job.step(2)
    finally:
        hook.remove()
    assert job.replay is not None and len(job.replay) == 16  # two batches of 8 kept
    assert [x.shape[0] for x in seen] == [5] * 6  # every step: student_batch_size images
    pool = {tuple(x.flatten()[:5].tolist()) for x in torch.cat(batches[1:])}
    assert all(tuple(x.flatten()[:5].tolist()) in pool for x in torch.cat(seen))
    # the last iteration's steps draw from both batches, not only the newest one
    older = {tuple(x.flatten()[:5].tolist()) for x in batches[1]}
    assert any(tuple(x.flatten()[:5].tolist()) in older for x in torch.cat(seen[3:]))


def _one_mixed_step(
    tmp_path: Path, **mixing: float
) -> tuple[TrainJob, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One student step of 16 pool images, mixed as ``mixing`` says and not augmented: the
    job, the pool's images, the images the student saw and the teacher's logits of them."""
    job = _run(
        tmp_path,
        student_steps=1,
        student_batch_size=16,
        replay_size=64,
        student_augmentation="none",
        adversarial_weight=0.0,
        **mixing,
    )
    seen: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    hook = job.student.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    teacher_hook = job.teacher.register_forward_hook(lambda m, a, out: targets.append(out))
    try:
        job.step(1)
    finally:
        hook.remove()
        teacher_hook.remove()
    assert job.replay is not None
    return job, job.replay.images[: len(job.replay)], seen[-1], targets[-1]


def test_mixup_shows_the_student_mixed_images_labelled_by_the_teacher(tmp_path: Path) -> None:
    job, stored, mixed, target = _one_mixed_step(tmp_path, student_mixup=1.0)
    # every image is mixed (p=1); only one mixed with a copy of itself (the draws of 16 from
    # 8 pool images repeat some) can still be a pool image
    distances = torch.cdist(mixed.flatten(1), stored.flatten(1)).min(dim=1).values
    assert (distances > 1e-4).float().mean() > 0.5
    with torch.no_grad():  # the target is the teacher's prediction of the mixed images
        torch.testing.assert_close(target, job.teacher(mixed))


def test_mixed_labels_follow_the_images_weights() -> None:
    from risloss.perturb import MixParams
    from risloss.training._trainer import _mixed_labels

    mixing = MixParams(partner=torch.tensor([1, 0, 2]), weight=torch.tensor([0.25, 1.0, 0.5]))
    labels = _mixed_labels(torch.tensor([0, 1, 2]), mixing.partner, mixing.weight, 3)
    assert labels is not None
    torch.testing.assert_close(
        labels, torch.tensor([[0.25, 0.75, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    )
    assert _mixed_labels(None, mixing.partner, mixing.weight, 3) is None


def test_cutmix_labels_follow_the_pasted_area() -> None:
    from risloss.perturb import CutMixParams
    from risloss.training._trainer import _mixed_labels

    cut = CutMixParams(
        partner=torch.tensor([1, 0]),
        boxes=torch.tensor([[0, 0, 2, 4], [0, 0, 4, 4]]),  # half of the first image pasted
        active=torch.tensor([True, False]),
    )
    labels = _mixed_labels(torch.tensor([0, 1]), cut.partner, cut.kept_fraction(4, 4), 2)
    torch.testing.assert_close(labels, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))


def test_cutmix_shows_the_student_pasted_images_labelled_by_the_teacher(
    tmp_path: Path,
) -> None:
    job, pool, shown, target = _one_mixed_step(tmp_path, student_mixup=0.0, student_cutmix=1.0)
    stored = pool.flatten(1)
    pasted = shown.flatten(1)
    # every pixel of a pasted image is the same pixel of some pool image
    assert bool((pasted.unsqueeze(1) == stored.unsqueeze(0)).any(1).all())
    # and most pasted images are none of the pool images as a whole
    distances = torch.cdist(pasted, stored).min(dim=1).values
    assert (distances > 1e-4).float().mean() > 0.5
    with torch.no_grad():  # the target is the teacher's prediction of the pasted images
        torch.testing.assert_close(target, job.teacher(shown))


def test_resume_equals_uninterrupted_in_the_pool_regime_with_mixing_and_bns_momentum(
    tmp_path: Path,
) -> None:
    config = TrainConfig(
        task="distill",
        method="gdfq",
        student_steps=2,
        student_batch_size=6,
        replay_size=40,
        student_mixup=0.5,
        student_cutmix=0.5,
        adversarial_weight=1.0,
        input_range="auto",
        ris=attrs.evolve(ris_for("distill"), bns_momentum=0.9),
        **TINY,
    )
    full, _ = assert_resume_matches_uninterrupted(config, tmp_path, at=3)
    assert all("seconds" in e for e in full["evals"])
