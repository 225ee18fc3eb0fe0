"""SynthesisObjective: named, weighted terms summed over one clean teacher pass."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import attrs
import torch
from torch import nn

from risloss._fields import default_of
from risloss._validators import non_negative, one_of
from risloss.functional import PAIR_SELECTIONS, BNStatistics, PairSelection
from risloss.hooks import (
    BNStatisticsCollector,
    capture_bn_statistics,
    capture_features,
    resolve_layers,
)
from risloss.hooks import FeatureKind as CaptureKind
from risloss.losses import RobustnessLoss
from risloss.objective._config import RISConfig
from risloss.objective._figures import label_agreement
from risloss.objective._presets import composed_terms, ris_terms
from risloss.objective._terms import RobustnessTerm, TeacherPass, Term, TermValue

__all__ = ["SynthesisObjective", "SynthesisParts"]

_RESERVED = ("loss", "agree", "kl")  # names of the objective's own figures
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@attrs.frozen
class SynthesisParts:
    """What one call of :class:`SynthesisObjective` computed.

    Every term's value is in :attr:`terms` under its name; the attributes below read the names
    of the shipped presets (:func:`ris_terms`), and :meth:`scalars` reports every term.

    Attributes:
        loss: the weighted sum of the terms (``CE + beta*BNS + alpha*L_rob + gamma*L_div`` for
            RIS, less ``w * adv`` with an adversarial term), with its graph: what to minimize.
        terms: each computed term's value by name, in summation order (a term with weight 0
            is a figure, without graph; a term that returned ``None`` is absent).
        details: the named parts a term reported beside its value
            (``details["rob"]["feature"]``), detached.
        logits: the teacher's logits of the clean pass (with their graph; detach them to use
            them as the student's target).
        agreement: share of the batch the teacher classifies as the requested label.
        label_entropy: mean entropy of soft requested labels (``None`` for hard labels):
            the floor of a soft-target ``ce``, which ``ce - label_entropy`` (the KL divergence
            of the teacher's prediction from the requested mixture) removes.
        minimized: with a term to maximize (:attr:`Term.maximize`), the weighted sum of the
            other terms, which ``g_loss`` reports (the maximized term is reported on its own,
            ``g_adv``); ``None`` when no term is maximized (``g_loss`` is then :attr:`loss`).
    """

    loss: torch.Tensor
    terms: Mapping[str, torch.Tensor]
    details: Mapping[str, Mapping[str, torch.Tensor]]
    logits: torch.Tensor
    agreement: float
    label_entropy: float | None = None
    minimized: torch.Tensor | None = None

    @property
    def ce(self) -> torch.Tensor:
        """The teacher's cross-entropy on the requested labels (the term ``"ce"``).

        Raises:
            AttributeError: the objective has no term named ``"ce"``.
        """
        if "ce" not in self.terms:
            raise AttributeError("this objective has no term named 'ce'")
        return self.terms["ce"]

    @property
    def bns(self) -> torch.Tensor | None:
        """The BatchNorm-statistics loss (term ``"bns"``; ``None`` when off)."""
        return self.terms.get("bns")

    @property
    def robustness(self) -> torch.Tensor | None:
        """The robustness loss (term ``"rob"``; ``None`` when off)."""
        return self.terms.get("rob")

    @property
    def robustness_feature(self) -> torch.Tensor | None:
        """The robustness loss's mean feature inconsistency (detached; ``None`` when off)."""
        return self.details.get("rob", {}).get("feature")

    @property
    def robustness_prediction(self) -> torch.Tensor | None:
        """The robustness loss's mean prediction divergence (detached; ``None`` when off)."""
        return self.details.get("rob", {}).get("prediction")

    @property
    def diversity(self) -> torch.Tensor | None:
        """The label-correlation penalty (term ``"div"``; ``None`` when off)."""
        return self.terms.get("div")

    @property
    def similarity(self) -> float | None:
        """Mean within-class cosine similarity of the teacher's penultimate features (term
        ``"sim"``; ``None`` when the teacher has no final ``nn.Linear`` or no class has two
        samples)."""
        sim = self.terms.get("sim")
        return None if sim is None else float(sim.detach())

    def scalars(self, prefix: str = "g_") -> dict[str, float]:
        """The parts as plain floats, named as the trainer logs them.

        Args:
            prefix: put before every name.

        Returns:
            ``{prefix + name: ...}`` for every computed term (``"ce"``, ``"bns"``, ``"rob"``,
            ``"div"``, ``"sim"``, ``"adv"``, a term of your own), each followed by its parts
            (``"rob_feature"``, ``"rob_prediction"``); then ``"loss"`` (the terms to minimize,
            :attr:`minimized` when a term is maximized), ``"agree"`` and, with soft labels and
            a ``"ce"`` term, ``"kl"``: ``ce`` less the labels' entropy, comparable with a
            hard-label ``ce``.
        """
        named: dict[str, Any] = {}
        for name, value in self.terms.items():
            named[name] = value
            for part, detail in self.details.get(name, {}).items():
                named[f"{name}_{part}"] = detail
        named["loss"] = self.loss if self.minimized is None else self.minimized
        named["agree"] = self.agreement
        if self.label_entropy is not None and "ce" in self.terms:
            named["kl"] = self.terms["ce"] - self.label_entropy
        return {
            prefix + k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in named.items()
        }


def _entropy(labels: torch.Tensor) -> float:
    p = labels.detach().float()
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _same_statistics(stats: BNStatistics, batch: int) -> BNStatistics:
    return stats


def _accumulate(
    total: torch.Tensor | None, weight: float, value: torch.Tensor, *, subtract: bool = False
) -> torch.Tensor:
    """``total + weight * value`` (``-`` to subtract); the first term is ``value`` itself at
    weight 1, as the objective was always summed."""
    if total is None:
        first = value if weight == 1 else weight * value
        return -first if subtract else first
    return total - weight * value if subtract else total + weight * value


def _checked_terms(terms: Any) -> list[tuple[str, float, Term]]:
    """``(name, weight, term)`` triples of a ``{name: (weight, term)}`` mapping, validated."""
    if not isinstance(terms, Mapping):
        raise TypeError(
            f"terms must be a mapping {{name: (weight, term)}}, got {type(terms).__name__}"
        )
    if not terms:
        raise ValueError("terms must name at least one term, got an empty mapping")
    checked = []
    for name, entry in terms.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(
                f"term names must be identifiers (a letter, then letters, digits or '_') other "
                f"than {_RESERVED}, got {name!r}"
            )
        if not (isinstance(entry, tuple | list) and len(entry) == 2):
            raise TypeError(
                f"terms[{name!r}] must be a (weight, term) pair, got {type(entry).__name__}"
            )
        weight, term = entry
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise ValueError(
                f"the weight of term {name!r} must be a finite number >= 0, got {weight!r}"
            )
        if not isinstance(term, Term):
            raise TypeError(
                f"terms[{name!r}] must pair a weight with a Term (risloss.objective.Term), "
                f"got {type(term).__name__}"
            )
        checked.append((name, weight, term))
    return checked


class SynthesisObjective(nn.Module):
    r"""The generator objective, built once and called on each synthesized batch.

    A weighted sum of named terms (:class:`Term`), each computed from **one** shared clean
    teacher pass. RIS's objective (:func:`ris_terms`) is

    .. math::

        L_G = CE(F(x), y) + \beta L_{BNS}(x) + \alpha L_{rob}(x) + \gamma L_{div}(F(x), y)

    and GDFQ's is the same with the RIS terms off (:meth:`RISConfig.baseline`). One call runs
    the teacher once with the hooks the terms need (:class:`Needs`: BatchNorm batch
    statistics, the robustness loss's feature layers, the penultimate feature) and shares the
    pass: the cross-entropy, the BNS loss, the clean branch of the robustness loss and the
    diversity penalty all read it, and its logits are returned for the student. The robustness
    loss adds one teacher pass per draw; nothing else runs the teacher.

    The total is summed in the terms' order: the first term's value (times its weight unless
    it is 1), then ``+ weight * value`` for each further term (``- weight * value`` for a
    term to maximize, such as :class:`AdversarialTerm`, which ``g_loss`` leaves out and
    reports on its own). A term with weight 0 is a figure: computed on the pass without graph
    and reported, never added.

    Args:
        teacher: the frozen classifier (referenced, never copied or registered).
        terms: ``{name: (weight, term)}`` in summation order, weights finite and ``>= 0``;
            names are identifiers other than ``"loss"``, ``"agree"`` and ``"kl"`` and are
            logged as ``g_<name>``. Default: GDFQ's objective (``"ce"``, ``"bns"`` with
            weight 0.1, the ``"sim"`` figure).
        gather: makes a per-rank tensor the global batch's, for the terms defined over the
            whole batch (a differentiable all-gather in a distributed run; identity by
            default).
        batch_statistics: applied to the BatchNorm statistics and the batch size before the
            terms read them (global moments in a distributed run; identity by default).
        bns_weight: deprecated, as the five below (pass ``terms=``; :func:`ris_terms` builds
            them from a :class:`RISConfig`): the weight of the term ``"bns"`` (default 0.1; 0
            leaves it out). These arguments build ``"ce"``, ``"bns"``, ``"rob"``, ``"div"``
            and ``"sim"``, in this order.
        robustness: deprecated: the :class:`~risloss.RobustnessLoss` of the term ``"rob"``.
        robustness_weight: deprecated: the weight of ``"rob"`` (default 1).
        diversity_weight: deprecated: the weight of the correlation penalty ``"div"`` (default
            0, which leaves it out).
        correlation_pairs: deprecated: the pairs ``"div"`` covers (default ``"all"``).
        feature_diversity_weight: deprecated: the weight of ``"sim"`` (default 0: a figure).

    Raises:
        TypeError: ``terms`` that is not a mapping of ``(weight, Term)`` pairs, or ``terms``
            together with a deprecated weight argument.
        ValueError: an empty ``terms``, a bad name, a negative or non-finite weight, a term
            that cannot serve the teacher (a robustness loss built on another model), feature
            layers that match nothing, a term that needs the penultimate feature of a teacher
            without a final ``nn.Linear``, or one that needs BatchNorm statistics of a teacher
            without BatchNorm layers.

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

        Terms by name, one of your own beside them:

        >>> from risloss.objective import CrossEntropyTerm, TeacherPass, Term
        >>> class Brightness(Term):
        ...     def forward(self, record: TeacherPass) -> torch.Tensor:
        ...         return record.images.mean().abs()
        >>> mine = SynthesisObjective(
        ...     teacher, terms={"ce": (1.0, CrossEntropyTerm()), "light": (0.5, Brightness())}
        ... )
        >>> sorted(mine(x, torch.arange(8) % 4).scalars())
        ['g_agree', 'g_ce', 'g_light', 'g_loss']
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        terms: Mapping[str, tuple[float, Term]] | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_statistics: Callable[[BNStatistics, int], BNStatistics] | None = None,
        bns_weight: float | None = None,
        robustness: RobustnessLoss | None = None,
        robustness_weight: float | None = None,
        diversity_weight: float | None = None,
        correlation_pairs: PairSelection | None = None,
        feature_diversity_weight: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        legacy: dict[str, Any] = {
            "bns_weight": bns_weight,
            "robustness": robustness,
            "robustness_weight": robustness_weight,
            "diversity_weight": diversity_weight,
            "correlation_pairs": correlation_pairs,
            "feature_diversity_weight": feature_diversity_weight,
        }
        given = [name for name, value in legacy.items() if value is not None]
        if given and terms is not None:
            raise TypeError(f"pass terms= or the deprecated {given}, not both")
        if given:
            warnings.warn(
                f"SynthesisObjective's arguments {', '.join(given)} are deprecated; pass "
                "terms= instead (ris_terms(config, teacher) builds them from a RISConfig)",
                DeprecationWarning,
                stacklevel=2,
            )
        if terms is None:
            w = _Weights(**{k: v for k, v in legacy.items() if v is not None and k != "robustness"})
            if robustness is not None and not isinstance(robustness, RobustnessLoss):
                raise TypeError(
                    f"robustness must be a RobustnessLoss or None, got {type(robustness).__name__}"
                )
            if robustness is not None and robustness.model is not teacher:
                raise ValueError("robustness must be a RobustnessLoss built on the same teacher")
            terms = composed_terms(
                teacher,
                bns_weight=w.bns_weight,
                robustness=robustness,
                robustness_weight=w.robustness_weight,
                diversity_weight=w.diversity_weight,
                correlation_pairs=w.correlation_pairs,
                feature_diversity_weight=w.feature_diversity_weight,
            )
        checked = _checked_terms(terms)
        self.__dict__["teacher"] = teacher  # referenced, not registered
        self._names = tuple(name for name, _, _ in checked)
        self._weights = tuple(weight for _, weight, _ in checked)
        self._terms = tuple(term for _, _, term in checked)
        # Registered, so the modules a term holds move with the objective.
        self.term_modules = nn.ModuleList(self._terms)
        self.gather = gather or _identity
        self.batch_statistics = batch_statistics or _same_statistics
        layers: dict[str, CaptureKind] = {}
        owners: dict[str, str] = {}
        penultimate_needed = bn_needed = False
        for name, _, term in checked:
            term.check_teacher(teacher)
            needs = term.needs
            if needs.features:
                for layer, kind in resolve_layers(teacher, needs.features):
                    if layers.setdefault(layer, kind) != kind:
                        raise ValueError(
                            f"term {name!r} reads the {kind} of {layer!r} and term "
                            f"{owners[layer]!r} its {layers[layer]}: a layer is captured once"
                        )
                    owners.setdefault(layer, name)
            penultimate_needed |= needs.penultimate
            bn_needed |= needs.bn_statistics
        self._penultimate: str | None = None
        if penultimate_needed:
            try:
                ((self._penultimate, kind),) = resolve_layers(teacher, "penultimate")
            except ValueError:
                wanting = [n for n, _, t in checked if t.needs.penultimate]
                raise ValueError(
                    f"terms {wanting} need the penultimate feature, the input of the teacher's "
                    "last nn.Linear, and the teacher has no nn.Linear"
                ) from None
            if layers.setdefault(self._penultimate, kind) != kind:
                raise ValueError(
                    f"term {owners[self._penultimate]!r} reads the {layers[self._penultimate]} "
                    f"of {self._penultimate!r}, whose input is the penultimate feature: a layer "
                    "is captured once"
                )
        self._layers = layers
        self._bn = bn_needed
        if bn_needed:  # fail now, not at the first call, on a teacher without BatchNorm
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

        The same as ``SynthesisObjective(teacher, terms=ris_terms(config, teacher,
        generator=generator), gather=gather, batch_statistics=batch_statistics)``.

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
            terms=ris_terms(config, teacher, generator=generator),
            gather=gather,
            batch_statistics=batch_statistics,
        )

    @property
    def terms(self) -> dict[str, tuple[float, Term]]:
        """``{name: (weight, term)}`` in summation order (a new dict)."""
        return {
            name: (weight, term)
            for name, weight, term in zip(self._names, self._weights, self._terms, strict=True)
        }

    @property
    def weights(self) -> dict[str, float]:
        """``{name: weight}`` in summation order."""
        return dict(zip(self._names, self._weights, strict=True))

    @property
    def robustness(self) -> RobustnessLoss | None:
        """The robustness loss of the first :class:`RobustnessTerm`, or ``None``."""
        for term in self._terms:
            if isinstance(term, RobustnessTerm):
                return term.loss
        return None

    @property
    def feature_layers(self) -> dict[str, Any]:
        """Layers captured in the clean pass (the terms' and the penultimate)."""
        return dict(self._layers)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        student: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> SynthesisParts:
        """Evaluate the objective on a batch of synthesized images.

        Args:
            images: ``(B, C, H, W)``, typically a generator's output (gradients reach it).
            labels: the requested labels, hard ``(B,)`` or soft ``(B, C)``.
            student: the student's logits of a batch, differentiable with respect to the
                images (for :class:`AdversarialTerm`; ``None``: such a term has no value).

        Returns:
            A :class:`SynthesisParts` record.

        Raises:
            ValueError: ``labels`` whose batch size differs from ``images``.
            TypeError: a term that returned something other than a tensor, a
                :class:`TermValue` or ``None``.
        """
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have the batch size of images ({images.shape[0]}), "
                f"got {tuple(labels.shape)}"
            )
        statistics: AbstractContextManager[BNStatisticsCollector | None] = (
            capture_bn_statistics(self.teacher) if self._bn else nullcontext()
        )
        with capture_features(self.teacher, self._layers) as feats, statistics as bn:
            logits = self.teacher(images)
        record = TeacherPass(
            images=images,
            labels=labels,
            logits=logits,
            features=feats,
            bn_statistics=(
                None if bn is None else self.batch_statistics(bn.statistics(), images.shape[0])
            ),
            penultimate=None if self._penultimate is None else feats[self._penultimate],
            gather=self.gather,
            student=student,
        )
        figures: TeacherPass | None = None
        values: dict[str, torch.Tensor] = {}
        details: dict[str, dict[str, torch.Tensor]] = {}
        loss: torch.Tensor | None = None
        minimized: torch.Tensor | None = None  # the terms to minimize, once a term is maximized
        maximized = False
        for name, weight, term in zip(self._names, self._weights, self._terms, strict=True):
            if weight == 0:
                if figures is None:
                    figures = record.detached()
                out = term(figures)
            else:
                out = term(record)
            if out is None:
                continue
            if isinstance(out, TermValue):
                value, parts = out.value, dict(out.parts)
            elif isinstance(out, torch.Tensor):
                value, parts = out, {}
            else:
                raise TypeError(
                    f"term {name!r} must return a tensor, a TermValue or None, "
                    f"got {type(out).__name__}"
                )
            values[name] = value if weight != 0 else value.detach()
            if parts:
                details[name] = {k: v.detach() for k, v in parts.items()}
            if weight == 0:
                continue
            if term.maximize:
                loss = _accumulate(loss, weight, value, subtract=True)
                maximized = True
            else:
                loss = _accumulate(loss, weight, value)
                minimized = _accumulate(minimized, weight, value) if maximized else loss
        if loss is None:  # only figures
            loss = logits.new_zeros(())
        if maximized and minimized is None:
            minimized = logits.new_zeros(())
        return SynthesisParts(
            loss=loss,
            terms=values,
            details=details,
            logits=logits,
            agreement=label_agreement(logits, labels),
            label_entropy=_entropy(labels) if labels.dtype.is_floating_point else None,
            minimized=minimized if maximized else None,
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={w}" for n, w in zip(self._names, self._weights, strict=True))


@attrs.frozen(kw_only=True)
class _Weights:
    """The deprecated weight arguments, validated with messages that name them."""

    bns_weight: float = attrs.field(
        default=default_of(RISConfig, "bns_weight"), validator=non_negative
    )
    robustness_weight: float = attrs.field(
        default=default_of(RISConfig, "robustness_weight"), validator=non_negative
    )
    # The constructor's own default: no penalty unless asked for (RISConfig's 0.1 comes with
    # its diversity mode).
    diversity_weight: float = attrs.field(default=0.0, validator=non_negative)
    correlation_pairs: PairSelection = attrs.field(
        default=default_of(RISConfig, "correlation_pairs"), validator=one_of(PAIR_SELECTIONS)
    )
    feature_diversity_weight: float = attrs.field(
        default=default_of(RISConfig, "feature_diversity_weight"), validator=non_negative
    )
