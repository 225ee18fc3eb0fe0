"""Where a trainer's images come from: a generator (RIS or GDFQ), Gaussian noise, or real data."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, cast

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from risloss.functional import BNStatistics, label_correlation_penalty
from risloss.hooks import capture_bn_statistics, capture_features
from risloss.losses import BNStatisticsLoss, RobustnessLoss
from risloss.models import Generator
from risloss.perturb import GaussianWeightNoise, default_input_perturbation
from risloss.training._config import RISConfig

if TYPE_CHECKING:
    from risloss.distributed import DistributedContext

__all__ = ["Batch", "GeneratorSource", "ImageSource", "NoiseSource", "RealSource"]


@attrs.frozen
class Batch:
    """One iteration's images, their labels and the teacher's logits (all detached)."""

    images: torch.Tensor
    labels: torch.Tensor | None  # (B,) ints, (B, C) soft labels, or None
    teacher_logits: torch.Tensor
    parts: dict[str, float]


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard ``(B,)`` or soft ``(B, C)`` targets, averaged over the batch."""
    if labels.dtype.is_floating_point:
        return -(labels * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, labels)


class ImageSource:
    """Produces a :class:`Batch` per iteration; its state is checkpointed with the run."""

    def next_batch(self, train: bool) -> Batch:
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
    def next_batch(self, train: bool) -> Batch:
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
    def next_batch(self, train: bool) -> Batch:
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
    """A conditional generator trained against the teacher: GDFQ's objective, or RIS's.

    One generator step per batch: a single clean teacher pass (with feature and BatchNorm hooks)
    is shared by the cross-entropy, the BNS loss, the clean branch of the robustness loss and
    the diversity penalty, and its logits are returned for the student's distillation.

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
        perturbation_rng: torch.Generator,
        device: torch.device,
        context: DistributedContext | None = None,
        global_batch_statistics: bool = True,
    ) -> None:
        self.teacher = teacher
        self.ris = ris
        self.method = method
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.rng = rng
        self.device = device
        c, h, w = shape
        if h != w or h % 4:
            raise ValueError(
                f"the generator makes square images with a side divisible by 4, got {h}x{w}"
            )
        self.generator = Generator(num_classes=num_classes, image_size=h, channels=c).to(device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.distributed = context is not None and context.distributed
        self.global_batch_statistics = self.distributed and global_batch_statistics
        self._trainable: nn.Module = self.generator
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            from risloss.distributed import convert_batchnorm

            if self.global_batch_statistics:
                convert_batchnorm(self.generator)
            self._trainable = DistributedDataParallel(
                self.generator,
                device_ids=[device] if device.type == "cuda" else None,
            )
        self.bns = BNStatisticsLoss()
        self.robustness: RobustnessLoss | None = None
        use_ris = method == "ris"
        if use_ris and ris.robustness_weight > 0:
            self.robustness = RobustnessLoss(
                teacher,
                input_perturbation=(
                    default_input_perturbation(noise_std=ris.input_noise_std, pool=ris.input_pool)
                    if ris.input_perturbation
                    else None
                ),
                weight_perturbation=(
                    GaussianWeightNoise(
                        eps=ris.weight_noise_eps, mode=cast(Any, ris.weight_noise_mode)
                    )
                    if ris.weight_perturbation
                    else None
                ),
                mode=cast(
                    Any,
                    ris.mode
                    if (ris.input_perturbation and ris.weight_perturbation)
                    else ("input" if ris.input_perturbation else "weight"),
                ),
                num_draws=ris.num_draws,
                feature_distance=cast(Any, ris.feature_distance),
                prediction_distance=cast(Any, ris.prediction_distance),
                threshold=ris.threshold,
                generator=perturbation_rng,
            )
        self.diversity_penalty = (
            use_ris and ris.diversity in ("penalty", "both") and (ris.diversity_weight > 0)
        )
        self.soft_labels = use_ris and ris.diversity in ("soft", "both")
        if self.soft_labels and ris.soft_label_classes > num_classes:
            raise ValueError(
                f"soft_label_classes must be at most the teacher's number of classes "
                f"({num_classes}), got {ris.soft_label_classes}"
            )

    def _labels(self) -> torch.Tensor:
        b, c = self.batch_size, self.num_classes
        hard = torch.randint(0, c, (b,), generator=self.rng)
        if not self.soft_labels or self.ris.soft_label_classes < 2:
            return hard.to(self.device)
        # Soft labels: the drawn class keeps the largest weight; k - 1 other classes share the
        # rest, so rows of different primary classes stay weakly correlated.
        k = min(self.ris.soft_label_classes, c)
        others = torch.rand((b, c), generator=self.rng)
        others[torch.arange(b), hard] = -1.0
        extra = others.topk(k - 1, dim=1).indices
        primary = 0.5 + 0.5 * torch.rand((b, 1), generator=self.rng)
        rest = torch.rand((b, k - 1), generator=self.rng)
        rest = rest / rest.sum(1, keepdim=True) * (1 - primary)
        soft = torch.zeros(b, c)
        soft[torch.arange(b), hard] = primary.squeeze(1)
        soft.scatter_(1, extra, rest)
        return soft.to(self.device)

    def next_batch(self, train: bool) -> Batch:
        labels = self._labels()
        z = torch.randn((self.batch_size, self.generator.latent_dim), generator=self.rng)
        x, logits, parts = self.losses(z.to(self.device), labels, train=train)
        if train:
            self.optimizer.zero_grad(set_to_none=True)
            parts["g_loss"].backward()
            self.optimizer.step()
        return Batch(
            x.detach(),
            labels,
            logits.detach(),
            {k: float(v.detach()) for k, v in parts.items()},
        )

    def losses(
        self, z: torch.Tensor, labels: torch.Tensor, *, train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Synthesize a batch and compute the generator objective and its parts (no step).

        Args:
            z: the noise, ``(B, latent_dim)`` on the source's device.
            labels: hard ``(B,)`` or soft ``(B, C)`` labels on the source's device.
            train: run the generator as trained (through DistributedDataParallel in a
                distributed run, so that a backward averages its gradients over ranks).

        Returns:
            ``(images, teacher_logits, parts)`` with the named loss components as tensors
            (``"g_loss"`` the total, with its graph).
        """
        self.generator.train()
        x = (self._trainable if train else self.generator)(z, labels)
        layers = self.robustness.feature_layers if self.robustness is not None else {}
        features: AbstractContextManager[Any] = (
            capture_features(self.teacher, layers) if layers else nullcontext({})
        )
        with features as feats, capture_bn_statistics(self.teacher) as bn:
            logits = self.teacher(x)
        parts: dict[str, torch.Tensor] = {"g_ce": soft_cross_entropy(logits, labels)}
        loss = parts["g_ce"]
        if self.ris.bns_weight > 0:
            stats = bn.statistics()
            if self.global_batch_statistics:
                stats = _global_statistics(stats, x.shape[0])
            parts["g_bns"] = self.bns(stats)
            loss = loss + self.ris.bns_weight * parts["g_bns"]
        if self.robustness is not None:
            rob = self.robustness(x, clean_logits=logits, clean_features=feats, return_parts=True)
            parts["g_rob"] = rob["loss"]
            parts["g_rob_feature"] = rob["feature"]
            parts["g_rob_prediction"] = rob["prediction"]
            loss = loss + self.ris.robustness_weight * rob["loss"]
        if self.diversity_penalty:
            all_logits, all_labels = logits, labels
            if self.distributed:
                from risloss.distributed import all_gather_differentiable

                all_logits = all_gather_differentiable(logits)
                all_labels = all_gather_differentiable(labels)
            parts["g_div"] = label_correlation_penalty(
                all_logits, all_labels, pairs=cast(Any, self.ris.correlation_pairs)
            )
            loss = loss + self.ris.diversity_weight * parts["g_div"]
        parts["g_loss"] = loss
        return x, logits, parts

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])


def _global_statistics(stats: BNStatistics, batch: int) -> BNStatistics:
    """The same statistics with the batch moments of the global batch over all ranks."""
    from risloss.distributed import all_reduce_moments

    means, variances, _ = all_reduce_moments(stats.batch_means, stats.batch_vars, batch)
    return BNStatistics(
        names=stats.names,
        batch_means=means,
        batch_vars=variances,
        running_means=stats.running_means,
        running_vars=stats.running_vars,
    )
