"""Synthesis figures in a run's outputs, and a generator that adapts to the teacher's input range.

The generator-only tests need no data files: they build a GeneratorSource on the shipped
ResNet-8 teacher directly, or set up a run (:class:`~risloss.training.Run`) with a small data
set object in place of the test split.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from risloss.models import load_pretrained, pretrained_info
from risloss.objective import RISConfig
from risloss.training import (
    GeneratorSource,
    Run,
    SynthesisJob,
    TrainConfig,
    TrainJob,
    synthesis_summary,
    train,
)
from tests._data import fashion_mnist_or_skip

TEACHER = "resnet8_fashion_mnist"
# One image of each class: all a run needs to check the model and learn the image shape.
SHAPE_ONLY = torch.utils.data.TensorDataset(torch.zeros(10, 1, 28, 28), torch.arange(10))


class ZeroOneTeacher(nn.Module):
    """The shipped teacher behind its own normalization: it takes images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        info = pretrained_info(TEACHER)["preprocessing"]
        self.net = load_pretrained(TEACHER)
        self.register_buffer("mean", torch.tensor(info["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(info["std"]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def generator_bns(teacher: nn.Module, steps: int, **options: Any) -> list[float]:
    return run_generator(teacher, steps, **options)[1]


def run_generator(
    teacher: nn.Module, steps: int, **options: Any
) -> tuple[GeneratorSource, list[float]]:
    torch.manual_seed(0)
    source = GeneratorSource(
        teacher.eval().requires_grad_(False),
        method="gdfq",
        ris=RISConfig(),
        num_classes=10,
        shape=(1, 28, 28),
        batch_size=16,
        lr=1e-3,
        rng=torch.Generator().manual_seed(0),
        perturbation_rng=torch.Generator().manual_seed(1),
        device=torch.device("cpu"),
        **options,
    )
    return source, [source.next_batch().parts["g_bns"] for _ in range(steps)]


def test_the_output_statistics_adapt_to_a_teacher_that_takes_zero_one_images() -> None:
    teacher = ZeroOneTeacher()  # started standardized on purpose: the learning alone
    source, learned = run_generator(teacher, 60, fit_input_statistics=False)
    frozen = generator_bns(teacher, 60, output_lr_scale=0.0, fit_input_statistics=False)
    start, end = statistics.fmean(learned[:3]), statistics.fmean(learned[-5:])
    assert end < 0.5 * start  # the BNS loss falls
    assert end < 0.8 * statistics.fmean(frozen[-5:])  # faster than with fixed statistics
    # The images' statistics moved from (0, 1) towards the teacher's input range.
    g = source.generator
    assert float(g.output_scale.detach()) < 1.0 and float(g.output_shift.detach()) > 0.0


def test_fitted_input_statistics_start_the_generator_in_the_teachers_range() -> None:
    teacher = ZeroOneTeacher()
    info = pretrained_info(TEACHER)["preprocessing"]
    source, fitted = run_generator(teacher, 3, output_lr_scale=0.0, fit_input_statistics=True)
    undeclared = generator_bns(teacher, 3, output_lr_scale=0.0, fit_input_statistics=False)
    assert statistics.fmean(fitted) < 0.2 * statistics.fmean(undeclared)
    g = source.generator
    assert abs(float(g.output_shift.detach()) - info["mean"][0]) < 0.1
    assert 0.5 * info["std"][0] < float(g.output_scale.detach()) < 1.5 * info["std"][0]


def test_auto_fits_the_start_only_for_a_teacher_far_from_standardized_inputs() -> None:
    info = pretrained_info(TEACHER)["preprocessing"]
    bare, _ = run_generator(load_pretrained(TEACHER), 1, output_lr_scale=0.0)
    assert bare.fitted_input_statistics is not None and not bare.input_statistics_fitted
    assert float(bare.generator.output_shift.detach()) == 0.0
    assert float(bare.generator.output_scale.detach()) == 1.0
    wrapped, _ = run_generator(ZeroOneTeacher(), 1, output_lr_scale=0.0)
    assert wrapped.input_statistics_fitted
    assert abs(float(wrapped.generator.output_shift.detach()) - info["mean"][0]) < 0.1


def test_the_fit_follows_a_normalization_in_front_of_the_teacher() -> None:
    """The wrapped teacher's fit is the bare one's, mapped through the normalization."""
    from risloss.objective import fit_input_statistics, natural_noise

    info = pretrained_info(TEACHER)["preprocessing"]
    probe = natural_noise(64, (1, 28, 28), generator=torch.Generator().manual_seed(0))
    scale, shift = fit_input_statistics(load_pretrained(TEACHER), probe)
    wscale, wshift = fit_input_statistics(ZeroOneTeacher().eval(), probe)
    mean, std = info["mean"][0], info["std"][0]
    assert torch.allclose(wscale, std * scale, rtol=1e-2)
    assert torch.allclose(wshift, mean + std * shift, atol=5e-3)


def built(job: Any, folder: Any, log: Any = None) -> Any:
    """``job`` set up in ``folder`` (teacher and data checked, everything built, no iteration)."""
    Run(job, folder, log=log).setup()
    return job


@pytest.mark.parametrize("fit", [True, False])
def test_the_trainer_passes_the_fit_option_to_its_generator(fit: bool, tmp_path: Any) -> None:
    info = pretrained_info(TEACHER)["preprocessing"]
    config = TrainConfig(method="gdfq", fit_input_statistics=fit, iters=2, warmup=1)
    job = built(TrainJob(config, model=ZeroOneTeacher(), test_data=SHAPE_ONLY), tmp_path)
    assert isinstance(job.source, GeneratorSource)
    shift = float(job.source.generator.output_shift.detach())
    if fit:
        assert abs(shift - info["mean"][0]) < 0.1
    else:
        assert shift == 0.0


def test_declared_input_statistics_start_the_generator_in_the_teachers_range() -> None:
    teacher = ZeroOneTeacher()
    info = pretrained_info(TEACHER)["preprocessing"]
    declared = generator_bns(
        teacher, 3, output_lr_scale=0.0, input_mean=info["mean"], input_std=info["std"]
    )
    undeclared = generator_bns(teacher, 3, output_lr_scale=0.0, fit_input_statistics=False)
    assert statistics.fmean(declared) < 0.2 * statistics.fmean(undeclared)


def test_input_statistics_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^input_mean must have 1 or 1 values"):
        generator_bns(load_pretrained(TEACHER), 1, input_mean=[0.1, 0.2], input_std=[1.0])
    with pytest.raises(ValueError, match="input_mean and input_std must both be given"):
        TrainConfig(input_mean=0.5)
    with pytest.raises(ValueError, match=r"^input_std must be finite numbers > 0"):
        TrainConfig(input_mean=0.5, input_std=0.0)
    assert TrainConfig(input_mean=0.5, input_std=[0.25]).input_std == (0.25,)


def test_synthesis_summary_averages_the_last_iterations() -> None:
    history = [{"g_agree": 0.0, "s_kd": 1.0}] + [{"g_agree": 1.0, "g_ce": 0.5}] * 3
    assert synthesis_summary(history, window=3) == {"g_agree": 1.0, "g_ce": 0.5}
    assert synthesis_summary([{"s_kd": 1.0}]) == {}
    assert synthesis_summary([]) == {}


@pytest.mark.data
def test_a_run_reports_what_the_generator_reached(tmp_path: Any) -> None:
    fashion_mnist_or_skip("test")
    config = TrainConfig(
        model=TEACHER, method="gdfq", iters=8, warmup=4, batch_size=8, eval_limit=32
    )
    metrics = train(config, tmp_path / "run", log=None, progress=False)
    for record in metrics["history"]:
        assert 0.0 <= record["g_agree"] <= 1.0 and record["g_bns"] >= 0.0
        assert -1.0 <= record["g_sim"] <= 1.0
    tail = metrics["history"][-8:]
    assert metrics["synthesis"]["g_agree"] == pytest.approx(
        statistics.fmean(r["g_agree"] for r in tail)
    )
    assert set(metrics["synthesis"]) >= {"g_agree", "g_ce", "g_bns", "g_sim", "g_loss"}


def test_a_teacher_that_wants_another_input_range_gets_a_hint(tmp_path: Any) -> None:
    def notes(config: TrainConfig, model: nn.Module | None = None) -> list[str]:
        said: list[str] = []
        job = SynthesisJob(config, num_images=1, model=model, test_data=SHAPE_ONLY)
        built(job, tmp_path / str(len(list(tmp_path.iterdir()))), log=said.append)
        return said

    plain = TrainConfig(model=TEACHER, method="gdfq", warmup=0)
    said = notes(plain, ZeroOneTeacher())  # "auto": the generator starts in the fitted range
    assert len(said) == 1 and "the generator starts there" in said[0]
    assert "--no-fit-input-statistics" in said[0]
    never = TrainConfig(model=TEACHER, method="gdfq", warmup=0, fit_input_statistics=False)
    said = notes(never, ZeroOneTeacher())
    assert len(said) == 1 and "--fit-input-statistics (fit_input_statistics=True)" in said[0]
    # A standardized teacher, a fitted start on request or declared statistics: nothing to say.
    assert notes(plain) == [] and notes(never) == []
    fitted = TrainConfig(model=TEACHER, method="gdfq", warmup=0, fit_input_statistics=True)
    assert notes(fitted, ZeroOneTeacher()) == []
    declared = TrainConfig(model=TEACHER, method="gdfq", warmup=0, input_mean=0.3, input_std=0.35)
    assert notes(declared, ZeroOneTeacher()) == []


def test_an_output_range_clamps_the_images_per_channel() -> None:
    from risloss.models import Generator

    torch.manual_seed(0)
    g = Generator(num_classes=3, image_size=8, channels=2, output_range=([-0.5, 0.0], [0.5, 2.0]))
    x = g(torch.randn(12, g.latent_dim), torch.arange(12) % 3).detach()
    for c, (low, high) in enumerate([(-0.5, 0.5), (0.0, 2.0)]):
        assert float(x[:, c].min()) == low and float(x[:, c].max()) == high  # both bounds hit
    free = Generator(num_classes=3, image_size=8, channels=2)
    free.load_state_dict(g.state_dict())  # the bounds are not part of the weights
    y = free(torch.randn(12, g.latent_dim), torch.arange(12) % 3).detach()
    assert float(y.min()) < -0.5 and float(y.max()) > 2.0
    with pytest.raises(ValueError, match=r"^output_range must have low < high per channel"):
        Generator(num_classes=3, image_size=8, channels=1, output_range=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"^output_range low must have 1 or 2 values"):
        Generator(num_classes=3, image_size=8, channels=2, output_range=([0, 0, 0], 1.0))


@given(
    low=st.floats(-3.0, 0.0),
    width=st.floats(0.1, 4.0),
    values=st.lists(st.floats(-8.0, 8.0), min_size=1, max_size=16),
)
def test_a_tanh_bound_stays_inside_keeps_order_and_a_gradient(
    low: float, width: float, values: list[float]
) -> None:
    from risloss.models._generator import bounded

    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    lo, hi = torch.tensor(low, dtype=torch.float64), torch.tensor(low + width, dtype=torch.float64)
    y = bounded(x, lo, hi, "tanh")
    eps = 1e-12
    assert bool(((y >= lo - eps) & (y <= hi + eps)).all())
    order = torch.argsort(x.detach())
    assert bool((y.detach()[order].diff() >= 0).all())  # monotone: no two pixels swap
    (grad,) = torch.autograd.grad(y.sum(), x)
    # a gradient for every value up to a few half widths past the bound (tanh then saturates)
    near = (x.detach() - (lo + hi) / 2).abs() < 5 * width / 2
    assert bool((grad[near] > 0).all())
    # the identity's value and slope at the middle
    m = (lo + hi) / 2
    mid = m.clone().requires_grad_(True)
    out = bounded(mid, lo, hi, "tanh")
    torch.testing.assert_close(out.detach(), m)
    torch.testing.assert_close(torch.autograd.grad(out, mid)[0], torch.tensor(1.0, dtype=out.dtype))
    # the clamp gives no gradient to the values it cuts
    clipped = bounded(x, lo, hi, "clamp")
    (cgrad,) = torch.autograd.grad(clipped.sum(), x)
    outside = (x.detach() < lo) | (x.detach() > hi)
    assert bool((cgrad[outside] == 0).all())


def test_a_tanh_bound_keeps_the_images_strictly_inside_where_the_clamp_hits_the_bounds() -> None:
    from risloss.models import Generator

    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"num_classes": 3, "image_size": 8, "channels": 2}
    bounds = ([-0.5, 0.0], [0.5, 2.0])
    soft = Generator(**kwargs, output_range=bounds, output_bound="tanh")
    hard = Generator(**kwargs, output_range=bounds)
    hard.load_state_dict(soft.state_dict())  # the same weights: only the bound differs
    z, labels = torch.randn(12, soft.latent_dim), torch.arange(12) % 3
    x, clipped = soft(z, labels).detach(), hard(z, labels).detach()
    for c, (low, high) in enumerate([(-0.5, 0.5), (0.0, 2.0)]):
        assert float(x[:, c].min()) > low and float(x[:, c].max()) < high
        assert float(clipped[:, c].min()) == low and float(clipped[:, c].max()) == high
    with pytest.raises(ValueError, match=r"^output_bound must be one of \('clamp', 'tanh'\)"):
        Generator(**kwargs, output_bound="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generator_output_bound"):
        TrainConfig(generator_output_bound="sigmoid")  # type: ignore[arg-type]


def test_input_range_values_are_checked_and_round_trip() -> None:
    assert TrainConfig().input_range == "none"
    assert TrainConfig(input_range=None).input_range == "none"
    assert TrainConfig(input_range="auto").input_range == "auto"
    config = TrainConfig(input_range=([-1, -2], [1, 2]))
    assert config.input_range == ((-1.0, -2.0), (1.0, 2.0))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig(input_range=(0, 1)).input_range == ((0.0,), (1.0,))
    for bad in ("all", (1.0, 0.0), (0.0, float("inf")), ([0, 0], [1]), (0.0,), ("a", "b")):
        with pytest.raises(ValueError, match=r"^input_range must be 'auto', 'none' or \(low"):
            TrainConfig(input_range=bad)


def test_the_trainer_gives_its_generator_the_input_range(tmp_path: Any) -> None:
    info = pretrained_info(TEACHER)
    mean, std = info["preprocessing"]["mean"][0], info["preprocessing"]["std"][0]

    def source(input_range: str, fit: bool) -> GeneratorSource:
        config = TrainConfig(
            model=TEACHER, method="gdfq", input_range=input_range, fit_input_statistics=fit
        )
        job = built(TrainJob(config, test_data=SHAPE_ONLY), tmp_path / input_range)
        assert job.spec.input_range == (
            None if input_range == "none" else (((0.0 - mean) / std,), ((1.0 - mean) / std,))
        )
        assert isinstance(job.source, GeneratorSource)
        return job.source

    bounded, free = source("auto", True), source("none", True)
    # the fit of the output statistics sees the unclamped images: the same start either way
    assert torch.equal(bounded.generator.output_scale, free.generator.output_scale)
    assert torch.equal(bounded.generator.output_shift, free.generator.output_shift)
    images = bounded.next_batch().images
    assert float(images.min()) == pytest.approx(-mean / std)
    assert float(images.max()) <= (1 - mean) / std + 1e-6
    assert float(free.next_batch().images.min()) < -mean / std - 0.1


def test_the_robustness_loss_perturbs_a_wrapped_teachers_images_where_they_are_standardized() -> (
    None
):
    """Noise of std 0.1 means the same for a teacher that takes [0, 1] images as for the bare
    one: the perturbations act on the images standardized by the start's statistics."""
    from risloss.objective import RobustnessTerm
    from risloss.perturb import Standardized

    def pool(source: GeneratorSource) -> Any:
        (term,) = [t for t in source.objective.term_modules if isinstance(t, RobustnessTerm)]
        return term.loss.input_perturbation

    def ris(teacher: nn.Module, **options: Any) -> GeneratorSource:
        return GeneratorSource(
            teacher.eval().requires_grad_(False), method="ris", ris=RISConfig(),
            num_classes=10, shape=(1, 28, 28), batch_size=4, lr=1e-3,
            rng=torch.Generator().manual_seed(0),
            perturbation_rng=torch.Generator().manual_seed(1),
            device=torch.device("cpu"), **options,
        )  # fmt: skip

    wrapped = ris(ZeroOneTeacher())  # "auto": fitted, so the pool is standardized there
    assert isinstance(pool(wrapped), Standardized)
    scale, shift = wrapped.fitted_input_statistics or (None, None)
    assert torch.equal(pool(wrapped).scale.flatten(), scale)
    assert torch.equal(pool(wrapped).shift.flatten(), shift)
    info = pretrained_info(TEACHER)["preprocessing"]
    declared = ris(ZeroOneTeacher(), input_mean=info["mean"], input_std=info["std"])
    assert pool(declared).scale.flatten().tolist() == pytest.approx(info["std"])
    # a teacher of standardized images, or a run told to start standardized: the pool as it is
    assert not isinstance(pool(ris(load_pretrained(TEACHER))), Standardized)
    assert not isinstance(pool(ris(ZeroOneTeacher(), fit_input_statistics=False)), Standardized)
