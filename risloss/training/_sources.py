"""Where a trainer's images come from: a generator (RIS or GDFQ), Gaussian noise, or real data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from risloss._validators import check, non_negative
from risloss.distributed import DistributedContext, convert_batchnorm
from risloss.models import Conditioning, Generator, OutputBound
from risloss.objective import (
    AdversarialTerm,
    BNSTerm,
    RISConfig,
    SynthesisObjective,
    fit_input_statistics,
    is_standardized,
    natural_noise,
    ris_terms,
)

__all__ = ["Batch", "GeneratorSource", "ImageSource", "NoiseSource", "RealSource"]


@attrs.frozen
class Batch:
    """One iteration's images, their labels and the teacher's logits (all detached)."""

    images: torch.Tensor
    labels: torch.Tensor | None  # (B,) ints, (B, C) soft labels, or None
    teacher_logits: torch.Tensor
    parts: dict[str, float]  # the generator's loss parts and synthesis figures, by name


Adversary = Callable[[torch.Tensor], torch.Tensor]
"""The student's logits of a batch, differentiable with respect to the images only."""


class ImageSource:
    """Produces a :class:`Batch` per iteration; its state is checkpointed with the run."""

    def next_batch(self, adversary: Adversary | None = None) -> Batch:
        """The next batch; ``adversary`` is used only by a source that trains a generator."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class NoiseSource(ImageSource):
    """Standard normal images (the statistics of normalized real data); no labels."""

    def __init__(
        self,
        teacher: nn.Module,
        shape: tuple[int, int, int],
        batch_size: int,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        self.teacher, self.shape, self.batch_size, self.rng, self.device = (
            teacher, shape, batch_size, rng, device,
        )  # fmt: skip

    @torch.no_grad()
    def next_batch(self, adversary: Adversary | None = None) -> Batch:
        del adversary
        x = torch.randn((self.batch_size, *self.shape), generator=self.rng).to(self.device)
        return Batch(x, None, self.teacher(x), {})


class RealSource(ImageSource):
    """Random batches of a real training split (the ceiling a data-free method chases)."""

    def __init__(
        self,
        teacher: nn.Module,
        dataset: Any,
        batch_size: int,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        self.teacher, self.dataset, self.batch_size, self.rng, self.device = (
            teacher, dataset, batch_size, rng, device,
        )  # fmt: skip

    @torch.no_grad()
    def next_batch(self, adversary: Adversary | None = None) -> Batch:
        del adversary
        idx = torch.randint(0, len(self.dataset), (self.batch_size,), generator=self.rng)
        if hasattr(self.dataset, "images"):
            x, y = self.dataset.images[idx], self.dataset.labels[idx]
        else:
            items = [self.dataset[int(i)] for i in idx]
            x = torch.stack([it[0] for it in items])
            y = torch.tensor([int(it[1]) for it in items])
        x, y = x.to(self.device), y.to(self.device)
        return Batch(x, y, self.teacher(x), {})


class GeneratorSource(ImageSource):
    """A conditional generator trained against the teacher with a :class:`SynthesisObjective`.

    One generator step per batch: the objective (GDFQ's with ``method="gdfq"``, RIS's with
    ``"ris"``, :func:`~risloss.objective.ris_terms`, and with ``adversarial_weight > 0`` the
    term ``"adv"``, an :class:`~risloss.objective.AdversarialTerm`) runs a single clean teacher
    pass shared by all its terms, whose logits are returned for the student's distillation.
    The labels come from the configuration's :class:`~risloss.objective.LabelSampler`
    (``ris.label_sampler(num_classes)``), drawn from ``rng`` before the latent codes.

    In a distributed run (``context.distributed``) the generator is wrapped in
    DistributedDataParallel and each rank draws its own batch; the label-correlation penalty is
    computed on the logits and labels of the global batch (differentiable all-gather), and with
    ``global_batch_statistics`` the generator's BatchNorm layers and the BNS loss use the
    moments of the global batch, so one step equals a single-process step on the concatenated
    batch (with each rank's perturbation draws).
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        method: str,
        ris: RISConfig,
        num_classes: int,
        shape: tuple[int, int, int],
        batch_size: int,
        lr: float,
        rng: torch.Generator,
        conditioning: Conditioning = "concat",
        output_lr_scale: float = 10.0,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        fit_input_statistics: bool | str = "auto",
        output_range: tuple[Sequence[float], Sequence[float]] | None = None,
        output_bound: OutputBound = "clamp",
        perturbation_rng: torch.Generator,
        device: torch.device,
        context: DistributedContext | None = None,
        global_batch_statistics: bool = True,
        adversarial_weight: float = 0.0,
    ) -> None:
        check(non_negative, "adversarial_weight", adversarial_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.teacher = teacher
        self.ris = ris if method == "ris" else ris.baseline()
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.rng = rng
        self.device = device
        c, h, w = shape
        if h != w or h % 4:
            raise ValueError(
                f"the generator makes square images with a side divisible by 4, got {h}x{w}"
            )
        for name, stats in (("input_mean", input_mean), ("input_std", input_std)):
            if stats is not None and len(stats) not in (1, c):
                raise ValueError(
                    f"{name} must have 1 or {c} values (one per image channel), got {len(stats)}"
                )
        self.generator = Generator(
            num_classes=num_classes,
            image_size=h,
            channels=c,
            conditioning=conditioning,
            output_mean=0.0 if input_mean is None else input_mean,
            output_std=1.0 if input_std is None else input_std,
            output_range=output_range,
            output_bound=output_bound,
        ).to(device)
        if fit_input_statistics not in (True, False, "auto"):
            raise ValueError(
                f"fit_input_statistics must be True, False or 'auto', got {fit_input_statistics!r}"
            )
        # Where the teacher's first BatchNorm layer wants the images (None: declared, or no
        # BatchNorm); applied with fit_input_statistics=True, or "auto" where it is far from
        # standardized images, else only reported (see input_range_hint).
        self.fitted_input_statistics: tuple[torch.Tensor, torch.Tensor] | None = None
        if input_mean is None:
            try:
                self.fitted_input_statistics = self._fitted_output(teacher, c, h)
            except ValueError:  # a teacher without BatchNorm layers
                if fit_input_statistics is True:
                    raise
        fitted = self.fitted_input_statistics
        self.input_statistics_fitted = fitted is not None and (
            fit_input_statistics is True
            or (fit_input_statistics == "auto" and not is_standardized(*fitted))
        )
        """Whether the generator starts at :attr:`fitted_input_statistics`."""
        if self.input_statistics_fitted:
            assert fitted is not None
            scale, shift = fitted
            with torch.no_grad():
                self.generator.output_scale.copy_(scale)
                self.generator.output_shift.copy_(shift)
        self.optimizer = torch.optim.Adam(
            self.generator.param_groups(lr, output_lr_scale=output_lr_scale), betas=(0.5, 0.999)
        )
        ctx = context or DistributedContext(device=device)
        global_stats = ctx.distributed and global_batch_statistics
        if global_stats:
            convert_batchnorm(self.generator)
        self._trainable = ctx.wrap(self.generator)
        # Where the teacher's standardized images lie (declared or fitted statistics, which
        # the generator's output affine starts at): the robustness loss perturbs the images
        # there, whatever the input convention.
        standard: tuple[Any, Any] | None = None
        if input_mean is not None or self.input_statistics_fitted:
            g = self.generator
            standard = (g.output_scale.detach().clone(), g.output_shift.detach().clone())
        terms = ris_terms(self.ris, teacher, generator=perturbation_rng, input_statistics=standard)
        if self.adversarial_weight > 0:  # summed last: - w * adv
            terms["adv"] = (self.adversarial_weight, AdversarialTerm())
        self.objective = SynthesisObjective(
            teacher,
            terms=terms,
            gather=ctx.gather,
            batch_statistics=ctx.global_statistics if global_stats else None,
        )
        self.label_sampler = self.ris.label_sampler(num_classes)

    @torch.no_grad()
    def _fitted_output(
        self, teacher: nn.Module, channels: int, side: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` that start the images where the teacher's first BatchNorm layer
        wants them.

        64 standardized images with natural images' correlations
        (:func:`~risloss.objective.natural_noise`, from a random source of their own, so the
        run's draws are unchanged) go through :func:`~risloss.objective.fit_input_statistics`.
        """
        rng = torch.Generator().manual_seed(0)
        probe = natural_noise(64, (channels, side, side), generator=rng)
        return fit_input_statistics(teacher, probe.to(self.device))

    def _labels(self) -> torch.Tensor:
        return self.label_sampler.sample(self.batch_size, generator=self.rng, device=self.device)

    def next_batch(self, adversary: Adversary | None = None) -> Batch:
        """Synthesize a batch, take one generator step on its objective, return it detached.

        Args:
            adversary: the student's logits of a batch (gradients to the images only); with
                ``adversarial_weight > 0`` the step also maximizes the student's divergence
                from the teacher on this batch. ``None``: the objective alone.
        """
        labels = self._labels()
        z = torch.randn((self.batch_size, self.generator.latent_dim), generator=self.rng)
        self.generator.train()
        images = self._trainable(z.to(self.device), labels)
        parts = self.objective(images, labels, student=adversary)
        self.optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        self.optimizer.step()
        return Batch(images.detach(), labels, parts.logits.detach(), parts.scalars())

    def _stateful_terms(self) -> dict[str, BNSTerm]:
        """The objective's terms that carry state between steps (BNS with momentum)."""
        return {
            name: term
            for name, (_, term) in self.objective.terms.items()
            if isinstance(term, BNSTerm) and term.momentum > 0
        }

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}
        terms = {name: t.get_extra_state() for name, t in self._stateful_terms().items()}
        if terms:
            state["terms"] = terms
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, term in self._stateful_terms().items():
            term.set_extra_state(state.get("terms", {}).get(name))
