"""The generator objective of data-free synthesis, as one value you build once and call.

``L_G = CE + beta * BNS + alpha * L_rob + gamma * L_div``: the teacher's cross-entropy on the
requested labels, the BatchNorm-statistics loss, the RIS robustness loss and the
label-correlation (diversity) penalty, all computed from **one** clean teacher pass whose
features, BatchNorm batch statistics and logits are shared by every term. GDFQ's objective is
the same value with the RIS terms off (:meth:`RISConfig.baseline`).

:class:`RISConfig` holds the weights and options of every term; :class:`SynthesisObjective`
builds the pieces from it (or takes them by injection) and returns a :class:`SynthesisParts`
record per call: the total with its graph, each named part, the teacher's logits (the
student's distillation target) and the synthesis figures (agreement with the requested labels,
feature similarity within a class).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, get_args

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from risloss._validators import bits, int_at_least, int_in, non_negative, number_in, one_of
from risloss.functional import (
    DIVERGENCE_KINDS,
    FEATURE_KINDS,
    PAIR_SELECTIONS,
    BNStatistics,
    DivergenceKind,
    FeatureKind,
    PairSelection,
    label_correlation_penalty,
    soft_cross_entropy,
)
from risloss.hooks import (
    BNStatisticsCollector,
    capture_bn_statistics,
    capture_features,
    resolve_layers,
)
from risloss.losses import MODES, BNStatisticsLoss, Mode, RobustnessLoss
from risloss.perturb import (
    INPUT_POOLS,
    GaussianWeightNoise,
    InputPool,
    QuantizationWeightNoise,
    WeightNoiseMode,
    WeightPerturbation,
    default_input_perturbation,
)

__all__ = [
    "DIVERSITY_MODES",
    "fit_input_statistics",
    "RIS_WEIGHT_NOISE",
    "DiversityMode",
    "RISConfig",
    "RISWeightNoise",
    "SynthesisObjective",
    "SynthesisParts",
    "label_agreement",
    "within_class_similarity",
]

RISWeightNoise = Literal[WeightNoiseMode, "quant"]
"""Weight noise of the RIS objective: a :class:`~risloss.perturb.GaussianWeightNoise` mode, or
``"quant"`` (:class:`~risloss.perturb.QuantizationWeightNoise`, the student's rounding error)."""
RIS_WEIGHT_NOISE: tuple[str, ...] = get_args(RISWeightNoise)
"""The allowed values of ``RISConfig.weight_noise_mode``."""
DiversityMode = Literal["penalty", "soft", "both", "none"]
"""How the objective asks for diversity in label space (see :class:`RISConfig`)."""
DIVERSITY_MODES: tuple[str, ...] = get_args(DiversityMode)
"""The allowed values of ``RISConfig.diversity``."""


@attrs.frozen(kw_only=True)
class RISConfig:
    """The generator objective ``CE + beta*BNS + alpha*L_rob + gamma*L_div`` and its options.

    Attributes:
        bns_weight: ``beta``, weight of the BatchNorm-statistics loss.
        robustness_weight: ``alpha``, weight of :class:`~risloss.RobustnessLoss` (0 drops it).
        diversity_weight: ``gamma``, weight of the label-correlation penalty.
        input_perturbation: perturb inputs (the default augmentation pool).
        weight_perturbation: perturb the teacher's conv and linear weights.
        weight_noise_eps, weight_noise_mode: scale and mode of the Gaussian weight noise;
            ``weight_noise_mode="quant"`` replaces it by the rounding error of quantizing the
            weights to ``weight_noise_bits`` bits with stochastic rounding
            (:class:`~risloss.perturb.QuantizationWeightNoise`; ``weight_noise_eps`` unused).
        weight_noise_bits: bit width of the ``"quant"`` weight noise (2..16).
        input_noise_std: standard deviation of the additive noise in the input pool.
        input_pool: which operators the input pool draws from (``"all"``, ``"noise"``,
            ``"geometric"``, ``"photometric"``; see
            :func:`~risloss.perturb.default_input_perturbation`).
        mode, num_draws, feature_distance, threshold: as in :class:`~risloss.RobustnessLoss`.
        prediction_distance: as in :class:`~risloss.RobustnessLoss`, but ``"kl"`` by default
            (``RobustnessLoss`` keeps the paper's ``"l1"``): measured ahead of L1 on every seed
            at W3A3 in the benchmark's ablation, with one and with four student steps per
            iteration.
        diversity: ``"soft"`` (soft-label conditioning with soft-target cross-entropy; the
            default, measured ahead of the penalty at W4A4 and W3A3 in the benchmark's
            ablation), ``"penalty"`` (label-correlation penalty on the teacher's predictions,
            weighted by ``diversity_weight``), ``"both"`` or ``"none"``. Soft labels are drawn
            by whoever calls the objective (the trainer does, with ``soft_label_classes``
            classes each): in a loop of your own that requests hard labels, ``"soft"`` adds no
            diversity; choose ``"penalty"`` there.
        correlation_pairs: which pairs the penalty covers (``"all"``, ``"same"``,
            ``"different"``).
        soft_label_classes: classes mixed in each soft label; at most the teacher's number of
            classes (checked when a run starts, once the teacher is known).
        feature_diversity_weight: weight of the mean within-class cosine similarity of the
            teacher's penultimate features (:func:`class_similarity`), a term against
            within-class collapse. A generator setting, not an RIS term: :meth:`baseline`
            keeps it, so GDFQ's objective and RIS's share it.

    Raises:
        ValueError: a value out of range (the message names the field and the allowed values),
            or both perturbations off while ``robustness_weight > 0``.

    Example:
        >>> from risloss import RISConfig
        >>> RISConfig().mode, RISConfig().prediction_distance
        ('random', 'kl')
        >>> no_weight_noise = RISConfig(weight_perturbation=False)
        >>> RISConfig(mode="sequential")
        Traceback (most recent call last):
        ...
        ValueError: mode must be one of ('random', 'joint', 'input', 'weight'), got 'sequential'
    """

    # Ranges that fit the meaning: a typo (1e30) fails here, not as NaN in the middle of a run.
    bns_weight: float = attrs.field(default=0.1, validator=number_in(0.0, 1000.0))
    robustness_weight: float = attrs.field(default=1.0, validator=number_in(0.0, 1000.0))
    diversity_weight: float = attrs.field(default=0.1, validator=number_in(0.0, 1000.0))
    input_perturbation: bool = True
    weight_perturbation: bool = True
    weight_noise_eps: float = attrs.field(default=0.05, validator=number_in(0.0, 1.0))
    weight_noise_mode: RISWeightNoise = attrs.field(
        default="relative", validator=one_of(RIS_WEIGHT_NOISE)
    )
    weight_noise_bits: int = attrs.field(default=4, validator=bits)
    input_noise_std: float = attrs.field(default=0.1, validator=number_in(0.0, 10.0))
    input_pool: InputPool = attrs.field(default="all", validator=one_of(INPUT_POOLS))
    mode: Mode = attrs.field(default="random", validator=one_of(MODES))
    num_draws: int = attrs.field(default=1, validator=int_in(1, 64))
    feature_distance: FeatureKind = attrs.field(default="cosine", validator=one_of(FEATURE_KINDS))
    prediction_distance: DivergenceKind = attrs.field(
        default="kl", validator=one_of(DIVERGENCE_KINDS)
    )
    threshold: float = attrs.field(default=0.0, validator=non_negative)
    diversity: DiversityMode = attrs.field(default="soft", validator=one_of(DIVERSITY_MODES))
    correlation_pairs: PairSelection = attrs.field(default="all", validator=one_of(PAIR_SELECTIONS))
    soft_label_classes: int = attrs.field(default=2, validator=int_at_least(1))
    feature_diversity_weight: float = attrs.field(default=0.0, validator=number_in(0.0, 1000.0))

    def __attrs_post_init__(self) -> None:
        if self.robustness_weight > 0 and not (self.input_perturbation or self.weight_perturbation):
            raise ValueError(
                "input_perturbation and weight_perturbation cannot both be False while "
                "robustness_weight > 0; set robustness_weight=0 to drop the robustness term"
            )

    def baseline(self) -> RISConfig:
        """GDFQ's objective: the same BNS weight, no robustness term and no diversity.

        Returns:
            A copy with ``robustness_weight=0`` and ``diversity="none"`` (the BNS and feature
            diversity weights kept).

        Example:
            >>> from risloss import RISConfig
            >>> gdfq = RISConfig(bns_weight=0.2).baseline()
            >>> gdfq.bns_weight, gdfq.robustness_weight, gdfq.diversity
            (0.2, 0.0, 'none')
        """
        return attrs.evolve(self, robustness_weight=0.0, diversity="none")

    @property
    def uses_penalty(self) -> bool:
        """Whether the label-correlation penalty is part of the objective."""
        return self.diversity in ("penalty", "both") and self.diversity_weight > 0

    @property
    def uses_soft_labels(self) -> bool:
        """Whether the generator is conditioned on soft labels."""
        return self.diversity in ("soft", "both")

    def weight_noise(self) -> WeightPerturbation:
        """The weight perturbation these options describe.

        Returns:
            A :class:`~risloss.perturb.QuantizationWeightNoise` of ``weight_noise_bits`` bits
            for ``weight_noise_mode="quant"``, else a
            :class:`~risloss.perturb.GaussianWeightNoise` with ``weight_noise_eps`` and
            ``weight_noise_mode``.
        """
        if self.weight_noise_mode == "quant":
            return QuantizationWeightNoise(bits=self.weight_noise_bits)
        return GaussianWeightNoise(eps=self.weight_noise_eps, mode=self.weight_noise_mode)

    def robustness_loss(
        self, teacher: nn.Module, *, generator: torch.Generator | None = None
    ) -> RobustnessLoss | None:
        """The :class:`~risloss.RobustnessLoss` these options describe (``None`` if off).

        Args:
            teacher: the model the loss perturbs (referenced, never copied).
            generator: the source of every perturbation draw.

        Returns:
            The loss, or ``None`` when ``robustness_weight == 0``.
        """
        if self.robustness_weight == 0:
            return None
        both = self.input_perturbation and self.weight_perturbation
        return RobustnessLoss(
            teacher,
            input_perturbation=(
                default_input_perturbation(noise_std=self.input_noise_std, pool=self.input_pool)
                if self.input_perturbation
                else None
            ),
            weight_perturbation=self.weight_noise() if self.weight_perturbation else None,
            mode=self.mode if both else ("input" if self.input_perturbation else "weight"),
            num_draws=self.num_draws,
            feature_distance=self.feature_distance,
            prediction_distance=self.prediction_distance,
            threshold=self.threshold,
            generator=generator,
        )


def label_agreement(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of a batch that ``logits`` classify as the requested (primary) label.

    Args:
        logits: ``(B, C)`` teacher logits.
        labels: hard ``(B,)`` labels, or soft ``(B, C)`` labels (their largest entry counts).

    Returns:
        A float in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from risloss.objective import label_agreement
        >>> label_agreement(torch.eye(3), torch.tensor([0, 1, 0]))
        0.6666666865348816
    """
    hard = labels.argmax(1) if labels.dtype.is_floating_point else labels
    return float((logits.detach().argmax(1) == hard).float().mean())


def class_similarity(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean pairwise cosine similarity of features of the same (primary) label, differentiable.

    Each class with at least two samples contributes the mean over its pairs; the classes are
    averaged. As a loss term it pushes the images of a class apart in the teacher's feature
    space (against within-class collapse); :func:`within_class_similarity` is the same figure
    as a detached float.

    Args:
        features: ``(B, D)`` (or ``(B, ...)``, flattened) features, e.g. the penultimate ones.
        labels: hard ``(B,)`` or soft ``(B, C)`` labels.

    Returns:
        A scalar tensor in ``[-1, 1]`` (with the graph of ``features``), or ``None`` when no
        class has two samples.

    Example:
        >>> import torch
        >>> from risloss.objective import class_similarity
        >>> f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> class_similarity(f, torch.tensor([0, 0, 1, 1]))
        tensor(0.5000, grad_fn=<MeanBackward0>)
    """
    hard = labels.argmax(1) if labels.dtype.is_floating_point else labels
    f = F.normalize(features.flatten(1).float(), dim=1)
    # One matrix product; same-class pairs picked by a mask (no loop over classes).
    same = (hard[:, None] == hard[None, :]).float()
    same.fill_diagonal_(0.0)
    counts = torch.zeros(int(hard.max()) + 1 if hard.numel() else 0, device=f.device, dtype=f.dtype)
    counts = counts.index_add(0, hard, torch.ones_like(hard, dtype=counts.dtype))
    has_pairs = counts >= 2
    if not bool(has_pairs.any()):
        return None
    per_sample = ((f @ f.T) * same).sum(1)
    per_class = torch.zeros_like(counts).index_add(0, hard, per_sample)
    n = counts[has_pairs]
    return (per_class[has_pairs] / (n * (n - 1))).mean()  # n (n - 1) ordered pairs per class


def within_class_similarity(features: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean pairwise cosine similarity of features of the same (primary) label.

    A measure of homogenization: near 1 when the images of a class all look alike to the
    teacher, lower when they differ. Each class with at least two samples contributes the mean
    over its pairs; the classes are averaged.

    Args:
        features: ``(B, D)`` (or ``(B, ...)``, flattened) features, e.g. the penultimate ones.
        labels: hard ``(B,)`` or soft ``(B, C)`` labels.

    Returns:
        A float in ``[-1, 1]``, or ``None`` when no class has two samples.

    Example:
        >>> import torch
        >>> from risloss.objective import within_class_similarity
        >>> f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> within_class_similarity(f, torch.tensor([0, 0, 1, 1]))
        0.5
    """
    value = class_similarity(features.detach(), labels)
    return None if value is None else float(value)


@attrs.frozen
class SynthesisParts:
    """What one call of :class:`SynthesisObjective` computed.

    Attributes:
        loss: the total ``CE + beta*BNS + alpha*L_rob + gamma*L_div``, with its graph.
        ce: the teacher's cross-entropy on the requested labels (soft-target for soft labels).
        bns: the BatchNorm-statistics loss (``None`` when its weight is 0).
        robustness: the robustness loss (``None`` when off).
        robustness_feature, robustness_prediction: its mean feature and prediction
            inconsistencies (detached; ``None`` when off).
        diversity: the label-correlation penalty (``None`` when off).
        logits: the teacher's logits of the clean pass (with their graph; detach them to use
            them as the student's target).
        agreement: share of the batch the teacher classifies as the requested label.
        similarity: mean within-class cosine similarity of the teacher's penultimate features
            (``None`` when the teacher has no final ``nn.Linear`` or no class has two samples).
        label_entropy: mean entropy of soft requested labels (``None`` for hard labels):
            the floor of a soft-target ``ce``, which ``ce - label_entropy`` (the KL divergence
            of the teacher's prediction from the requested mixture) removes.
    """

    loss: torch.Tensor
    ce: torch.Tensor
    bns: torch.Tensor | None
    robustness: torch.Tensor | None
    robustness_feature: torch.Tensor | None
    robustness_prediction: torch.Tensor | None
    diversity: torch.Tensor | None
    logits: torch.Tensor
    agreement: float
    similarity: float | None
    label_entropy: float | None = None

    def scalars(self, prefix: str = "g_") -> dict[str, float]:
        """The parts as plain floats, named as the trainer logs them.

        Args:
            prefix: put before every name.

        Returns:
            ``{prefix + "ce": ..., "bns", "rob", "rob_feature", "rob_prediction", "div",
            "loss", "agree", "sim"}`` for the parts that were computed, and with soft labels
            ``"kl"``: ``ce`` less the labels' entropy, comparable with a hard-label ``ce``.
        """
        named: dict[str, Any] = {
            "ce": self.ce,
            "bns": self.bns,
            "rob": self.robustness,
            "rob_feature": self.robustness_feature,
            "rob_prediction": self.robustness_prediction,
            "div": self.diversity,
            "loss": self.loss,
            "agree": self.agreement,
            "sim": self.similarity,
            "kl": None if self.label_entropy is None else self.ce - self.label_entropy,
        }
        return {
            prefix + k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in named.items()
            if v is not None
        }


def _entropy(labels: torch.Tensor) -> float:
    p = labels.detach().float()
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _same_statistics(stats: BNStatistics, batch: int) -> BNStatistics:
    return stats


class SynthesisObjective(nn.Module):
    r"""The generator objective, built once and called on each synthesized batch.

    .. math::

        L_G = CE(F(x), y) + \beta L_{BNS}(x) + \alpha L_{rob}(x) + \gamma L_{div}(F(x), y)

    One call runs **one** clean teacher pass with the hooks every term needs (BatchNorm batch
    statistics, the robustness loss's feature layers and the penultimate feature) and shares
    it: the cross-entropy, the BNS loss, the clean branch of the robustness loss and the
    diversity penalty all use it, and its logits are returned for the student. The robustness
    loss adds one teacher pass per draw; nothing else runs the teacher.

    Args:
        teacher: the frozen classifier (referenced, never copied or registered).
        bns_weight: ``beta >= 0``; 0 skips the BNS loss.
        robustness: a :class:`~risloss.RobustnessLoss` on ``teacher``, or ``None``.
        robustness_weight: ``alpha >= 0``.
        diversity_weight: ``gamma >= 0``; 0 skips the penalty.
        correlation_pairs: pairs covered by the penalty (``"all"``, ``"same"``,
            ``"different"``).
        feature_diversity_weight: ``>= 0``, weight of the within-class similarity of the
            teacher's penultimate features (:func:`class_similarity`, over the gathered batch);
            0 leaves it a detached figure (``SynthesisParts.similarity``). Needs a teacher
            whose last layer is an ``nn.Linear``.
        gather: applied to the logits and labels before the penalty (a differentiable
            all-gather in a distributed run; identity by default).
        batch_statistics: applied to the BatchNorm statistics and the batch size before the
            BNS loss (global moments in a distributed run; identity by default).

    Raises:
        ValueError: a negative or non-finite weight, an unknown ``correlation_pairs``, or a
            ``robustness`` loss built on another model; a teacher without BatchNorm layers
            while ``bns_weight > 0``.

    Example:
        >>> import torch
        >>> from risloss import RISConfig, SynthesisObjective
        >>> from risloss.models import resnet8
        >>> teacher = resnet8(in_channels=1).eval().requires_grad_(False)
        >>> objective = SynthesisObjective.from_config(
        ...     teacher, RISConfig(), generator=torch.Generator().manual_seed(0)
        ... )
        >>> x = torch.randn(8, 1, 28, 28, requires_grad=True)
        >>> parts = objective(x, torch.arange(8) % 4)
        >>> parts.loss.backward()
        >>> sorted(parts.scalars())[:4]
        ['g_agree', 'g_bns', 'g_ce', 'g_loss']
        >>> gdfq = SynthesisObjective.from_config(teacher, RISConfig().baseline())
        >>> gdfq.robustness is None
        True
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        bns_weight: float = 0.1,
        robustness: RobustnessLoss | None = None,
        robustness_weight: float = 1.0,
        diversity_weight: float = 0.0,
        correlation_pairs: PairSelection = "all",
        feature_diversity_weight: float = 0.0,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_statistics: Callable[[BNStatistics, int], BNStatistics] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        weights = _Weights(
            bns_weight=bns_weight,
            robustness_weight=robustness_weight,
            diversity_weight=diversity_weight,
            correlation_pairs=correlation_pairs,
            feature_diversity_weight=feature_diversity_weight,
        )
        if robustness is not None and robustness.model is not teacher:
            raise ValueError("robustness must be a RobustnessLoss built on the same teacher")
        self.__dict__["teacher"] = teacher  # referenced, not registered
        self.weights = weights
        self.robustness = robustness
        self.bns = BNStatisticsLoss()
        self.gather = gather or _identity
        self.batch_statistics = batch_statistics or _same_statistics
        layers: dict[str, Any] = dict(robustness.feature_layers) if robustness else {}
        try:
            penultimate = dict(resolve_layers(teacher, "penultimate"))
        except ValueError:  # no final nn.Linear: no similarity figure
            penultimate = {}
        self._penultimate = next(iter(penultimate), None)
        if feature_diversity_weight > 0 and self._penultimate is None:
            raise ValueError(
                "feature_diversity_weight > 0 needs a teacher whose last layer is an nn.Linear "
                "(its input is the penultimate feature); set feature_diversity_weight=0"
            )
        for name, kind in penultimate.items():
            layers.setdefault(name, kind)
        self._layers = layers
        if bns_weight > 0:  # fail now, not at the first call, on a teacher without BatchNorm
            with capture_bn_statistics(teacher):
                pass

    teacher: nn.Module

    @classmethod
    def from_config(
        cls,
        teacher: nn.Module,
        config: RISConfig,
        *,
        generator: torch.Generator | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_statistics: Callable[[BNStatistics, int], BNStatistics] | None = None,
    ) -> SynthesisObjective:
        """The objective a :class:`RISConfig` describes (``config.baseline()`` for GDFQ).

        Args:
            teacher: the frozen classifier.
            config: the weights and options of every term.
            generator: the source of the robustness loss's perturbation draws.
            gather: as in the constructor.
            batch_statistics: as in the constructor.

        Returns:
            The objective.
        """
        return cls(
            teacher,
            bns_weight=config.bns_weight,
            robustness=config.robustness_loss(teacher, generator=generator),
            robustness_weight=config.robustness_weight,
            diversity_weight=config.diversity_weight if config.uses_penalty else 0.0,
            correlation_pairs=config.correlation_pairs,
            feature_diversity_weight=config.feature_diversity_weight,
            gather=gather,
            batch_statistics=batch_statistics,
        )

    @property
    def feature_layers(self) -> dict[str, Any]:
        """Layers captured in the clean pass (the robustness loss's and the penultimate)."""
        return dict(self._layers)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> SynthesisParts:
        """Evaluate the objective on a batch of synthesized images.

        Args:
            images: ``(B, C, H, W)``, typically a generator's output (gradients reach it).
            labels: the requested labels, hard ``(B,)`` or soft ``(B, C)``.

        Returns:
            A :class:`SynthesisParts` record.

        Raises:
            ValueError: ``labels`` whose batch size differs from ``images``.
        """
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have the batch size of images ({images.shape[0]}), "
                f"got {tuple(labels.shape)}"
            )
        w = self.weights
        statistics: AbstractContextManager[BNStatisticsCollector | None] = (
            capture_bn_statistics(self.teacher) if w.bns_weight > 0 else nullcontext()
        )
        with capture_features(self.teacher, self._layers) as feats, statistics as bn:
            logits = self.teacher(images)
        ce = soft_cross_entropy(logits, labels)
        loss = ce
        bns = None
        if bn is not None:
            bns = self.bns(self.batch_statistics(bn.statistics(), images.shape[0]))
            loss = loss + w.bns_weight * bns
        rob = None
        if self.robustness is not None:
            rob = self.robustness.parts(images, clean_logits=logits, clean_features=feats)
            loss = loss + w.robustness_weight * rob.loss
        div = None
        if w.diversity_weight > 0:
            div = label_correlation_penalty(
                self.gather(logits), self.gather(labels), pairs=w.correlation_pairs
            )
            loss = loss + w.diversity_weight * div
        similarity = None
        if self._penultimate is not None:  # over the global batch: the same on every rank
            penultimate = feats[self._penultimate]
            if w.feature_diversity_weight == 0:
                penultimate = penultimate.detach()
            sim = class_similarity(self.gather(penultimate), self.gather(labels))
            if sim is not None:
                similarity = float(sim.detach())
                if w.feature_diversity_weight > 0:
                    loss = loss + w.feature_diversity_weight * sim
        return SynthesisParts(
            loss=loss,
            ce=ce,
            bns=bns,
            robustness=rob.loss if rob is not None else None,
            robustness_feature=rob.feature if rob is not None else None,
            robustness_prediction=rob.prediction if rob is not None else None,
            diversity=div,
            logits=logits,
            agreement=label_agreement(logits, labels),
            label_entropy=_entropy(labels) if labels.dtype.is_floating_point else None,
            similarity=similarity,
        )

    def extra_repr(self) -> str:
        w = self.weights
        return (
            f"bns_weight={w.bns_weight}, robustness_weight={w.robustness_weight}, "
            f"diversity_weight={w.diversity_weight}, correlation_pairs={w.correlation_pairs!r}"
        )


@attrs.frozen(kw_only=True)
class _Weights:
    bns_weight: float = attrs.field(validator=non_negative)
    robustness_weight: float = attrs.field(validator=non_negative)
    diversity_weight: float = attrs.field(validator=non_negative)
    correlation_pairs: PairSelection = attrs.field(validator=one_of(PAIR_SELECTIONS))
    feature_diversity_weight: float = attrs.field(default=0.0, validator=non_negative)


class _Reached(Exception):
    """Stops a forward pass once the first BatchNorm layer has seen its input."""


@torch.no_grad()
def _first_batchnorm(teacher: nn.Module, images: torch.Tensor) -> str:
    with capture_bn_statistics(teacher) as bn:
        teacher(images)
    return bn.statistics().names[0]


def fit_input_statistics(
    teacher: nn.Module, images: torch.Tensor, *, steps: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` that make ``scale * images + shift`` look like the
    teacher's inputs to its first BatchNorm layer.

    Data-free: only the running statistics of the first BatchNorm layer the images reach are
    used. The batch mean and variance at its input are matched to them by L-BFGS over the
    ``2 C`` numbers, running the teacher only up to that layer. Whatever affine
    preprocessing the teacher applies first (a normalization of ``[0, 1]`` images, a
    convolution) is absorbed, so a generator whose images start standardized can start in the
    teacher's own input range.

    Args:
        teacher: the frozen classifier (its state is not changed).
        images: a batch ``(B, C, H, W)``, e.g. a new generator's standardized output.
        steps: L-BFGS iterations.

    Returns:
        ``scale`` (positive) and ``shift``, each ``(C,)``, detached.

    Raises:
        ValueError: a teacher without BatchNorm layers, or ``steps < 1``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.objective import fit_input_statistics
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=None))
        >>> with torch.no_grad():  # a teacher trained on images of mean 3 and std 2
        ...     _ = net.train()(3 + 2 * torch.randn(256, 1, 8, 8))
        >>> scale, shift = fit_input_statistics(net.eval(), torch.randn(64, 1, 8, 8))
        >>> round(float(shift)), round(float(scale))  # estimates from 64 random images
        (3, 2)
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    images = images.detach()
    first = _first_batchnorm(teacher, images)
    bn = dict(teacher.named_modules())[first]
    running = (bn.running_mean.detach(), bn.running_var.detach())
    c = images.shape[1]
    log_scale = torch.zeros(c, device=images.device, requires_grad=True)
    shift = torch.zeros(c, device=images.device, requires_grad=True)
    seen: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])
        raise _Reached

    shape = (1, c, 1, 1)
    optimizer = torch.optim.LBFGS(
        [log_scale, shift], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        seen.clear()
        x = images * log_scale.exp().view(shape) + shift.view(shape)
        handle = bn.register_forward_pre_hook(stop)
        try:
            teacher(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        h = seen[0]
        dims = [d for d in range(h.dim()) if d != 1]
        mean, var = h.mean(dims), h.var(dims, unbiased=False)
        loss = ((mean - running[0]) ** 2).sum() + ((var - running[1]) ** 2).sum()
        loss.backward()
        return loss

    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            optimizer.step(closure)
    finally:
        teacher.train(was_training)
    return log_scale.detach().exp(), shift.detach()
