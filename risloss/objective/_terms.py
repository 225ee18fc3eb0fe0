"""The terms of the generator objective: each reads what it needs from one clean teacher pass.

A :class:`Term` declares what it needs from the teacher's clean pass (:class:`Needs`: feature
layers to capture, the BatchNorm batch statistics, the penultimate feature) and computes its
value from a :class:`TeacherPass`, the record of that pass.
:class:`~risloss.objective.SynthesisObjective` runs the union of its terms' needs in one pass
and sums their weighted values.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

import attrs
import torch
from torch import nn

from risloss._validators import check, number_in
from risloss.functional import (
    PAIR_SELECTIONS,
    BNStatistics,
    PairSelection,
    adversarial_divergence,
    label_correlation_penalty,
    soft_cross_entropy,
)
from risloss.hooks import LayerSpec
from risloss.losses import BNStatisticsLoss, RobustnessLoss
from risloss.objective._figures import class_similarity

__all__ = [
    "AdversarialTerm",
    "BNSTerm",
    "CorrelationTerm",
    "CrossEntropyTerm",
    "Needs",
    "RobustnessTerm",
    "SimilarityTerm",
    "TeacherPass",
    "Term",
    "TermValue",
]


@attrs.frozen(kw_only=True)
class Needs:
    """What a :class:`Term` needs from the teacher's clean pass, besides its logits.

    Attributes:
        features: teacher layers whose features the term reads (a layer selection as in
            :func:`~risloss.hooks.capture_features`: names, glob patterns or a
            ``{name: "input" | "output"}`` mapping; ``None`` for none). They arrive in
            :attr:`TeacherPass.features` under their resolved names.
        bn_statistics: the batch statistics at every BatchNorm layer
            (:attr:`TeacherPass.bn_statistics`).
        penultimate: the penultimate feature, the input of the teacher's last ``nn.Linear``
            (:attr:`TeacherPass.penultimate`).

    Example:
        >>> from risloss.objective import Needs
        >>> Needs(bn_statistics=True)
        Needs(features=None, bn_statistics=True, penultimate=False)
    """

    features: LayerSpec | None = None
    bn_statistics: bool = False
    penultimate: bool = False


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


@attrs.frozen(kw_only=True)
class TeacherPass:
    """The record of one clean teacher pass, from which every term computes its value.

    Attributes:
        images: the synthesized images ``(B, C, H, W)`` (gradients reach whatever made them).
        labels: the requested labels, hard ``(B,)`` or soft ``(B, C)``.
        logits: the teacher's logits ``(B, C)``, with their graph.
        features: the captured features by resolved layer name (the union of the terms'
            :attr:`Needs.features` and the penultimate feature).
        bn_statistics: the BatchNorm statistics of the pass (``None`` when no term needs them),
            already global in a distributed run (the objective's ``batch_statistics``).
        penultimate: the penultimate feature (``None`` when no term needs it).
        gather: makes a per-rank tensor the global batch's (a differentiable all-gather in a
            distributed run; the identity otherwise). Terms defined over the whole batch apply
            it to what they read.
        student: the student's logits of a batch, differentiable with respect to the images
            (``None`` when the caller passed no student); :meth:`student_logits` calls it once.
    """

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    features: Mapping[str, torch.Tensor] = attrs.field(factory=dict)
    bn_statistics: BNStatistics | None = None
    penultimate: torch.Tensor | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] = _same
    student: Callable[[torch.Tensor], torch.Tensor] | None = None
    _student_logits: list[torch.Tensor] = attrs.field(
        factory=list, init=False, repr=False, eq=False
    )

    @property
    def batch_size(self) -> int:
        """``B``, the number of images of this rank's batch."""
        return int(self.images.shape[0])

    def student_logits(self) -> torch.Tensor | None:
        """The student's logits of :attr:`images` (computed on the first call), or ``None``
        without a student."""
        if self.student is None:
            return None
        if not self._student_logits:
            self._student_logits.append(self.student(self.images))
        return self._student_logits[0]

    def detached(self) -> TeacherPass:
        """The same record without graphs (what a weight-0 term, a figure, is computed on)."""
        stats = self.bn_statistics
        if stats is not None:
            stats = BNStatistics(
                names=stats.names,
                batch_means=tuple(t.detach() for t in stats.batch_means),
                batch_vars=tuple(t.detach() for t in stats.batch_vars),
                running_means=stats.running_means,
                running_vars=stats.running_vars,
            )
        return TeacherPass(
            images=self.images.detach(),
            labels=self.labels.detach(),
            logits=self.logits.detach(),
            features={n: f.detach() for n, f in self.features.items()},
            bn_statistics=stats,
            penultimate=None if self.penultimate is None else self.penultimate.detach(),
            gather=self.gather,
            student=self.student,
        )


@attrs.frozen
class TermValue:
    """A term's value with named parts to report beside it (detached figures).

    A term returns a plain scalar tensor, or this record when it has parts worth logging:
    the parts are reported as ``<term name>_<part>`` (``g_rob_feature`` for the part
    ``"feature"`` of the term ``"rob"``) and never enter the total.

    Attributes:
        value: the scalar that enters the objective, with its graph.
        parts: named scalars reported beside it.
    """

    value: torch.Tensor
    parts: Mapping[str, torch.Tensor] = attrs.field(factory=dict)


class Term(nn.Module, abc.ABC):
    """One term of the generator objective, computed from the teacher's clean pass.

    Subclass it and implement :meth:`forward`; set :attr:`needs` (a class attribute or an
    instance attribute) when the term reads more than the images, labels and logits.
    :class:`~risloss.objective.SynthesisObjective` takes terms by name with a weight
    (``terms={"tv": (0.01, TotalVariation())}``), captures what they need in one teacher pass
    and adds ``weight * value`` (or subtracts it, for a term to :attr:`maximize`). A term with
    weight 0 is a figure: it is computed without graph and reported, not added. A term that
    returns ``None`` contributes nothing this call (and is not reported).

    A term is an ``nn.Module``: the modules it holds move with the objective
    (``objective.to(device)``).

    Example:
        >>> import torch
        >>> from risloss.objective import TeacherPass, Term
        >>> class MeanLogit(Term):
        ...     def forward(self, record: TeacherPass) -> torch.Tensor:
        ...         return record.logits.mean()
        >>> record = TeacherPass(
        ...     images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]), logits=torch.eye(2)
        ... )
        >>> MeanLogit()(record)
        tensor(0.5000)
    """

    needs: Needs = Needs()
    """What the term reads from the clean pass besides the images, labels and logits."""
    maximize: bool = False
    """Subtract ``weight * value`` from the total instead of adding it."""

    def check_teacher(self, teacher: nn.Module) -> None:
        """Called once when an objective is built: raise ``ValueError`` if this term cannot
        serve ``teacher`` (the default accepts any teacher)."""

    @abc.abstractmethod
    def forward(self, record: TeacherPass) -> torch.Tensor | TermValue | None:
        """The term's value on one batch.

        Args:
            record: the clean teacher pass.

        Returns:
            A scalar tensor, a :class:`TermValue` (the value with parts to report), or
            ``None`` when the term has no value for this batch.
        """


class CrossEntropyTerm(Term):
    """The teacher's cross-entropy on the requested labels (soft-target for soft labels):
    :func:`~risloss.functional.soft_cross_entropy` of the clean logits.

    Example:
        >>> import torch
        >>> from risloss.objective import CrossEntropyTerm, TeacherPass
        >>> record = TeacherPass(
        ...     images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]), logits=torch.eye(2)
        ... )
        >>> CrossEntropyTerm()(record)
        tensor(0.3133)
    """

    def forward(self, record: TeacherPass) -> torch.Tensor:
        return soft_cross_entropy(record.logits, record.labels)


class BNSTerm(Term):
    """The BatchNorm-statistics loss: the batch moments at every BatchNorm layer of the teacher
    against its running statistics (:class:`~risloss.losses.BNStatisticsLoss`).

    With ``momentum = m > 0`` a batch is not asked to match the running statistics alone, but
    together with the batches before it (the momentum matching of Fast-DFKD and NAYER): the
    loss compares ``(1 - m) * batch + m * past`` with the running statistics, where ``past`` is
    an exponential average of the earlier batches' moments (the first batch is compared alone).
    A batch may then lie away from the teacher's statistics where earlier batches leave room,
    so batches can differ from one another. Each call counts as one step: it updates ``past``
    with the batch's moments (detached), except under ``torch.no_grad()``. ``past`` is saved in
    the module's state dict (extra state), so a run resumes exactly.

    Args:
        loss: the loss module (default ``BNStatisticsLoss()``).
        momentum: ``m``, in ``[0, 1)``; 0 (the default) compares each batch alone.

    Raises:
        TypeError: ``loss`` is not a ``BNStatisticsLoss``.
        ValueError: ``momentum`` outside ``[0, 1)``.

    Example:
        >>> from risloss.objective import BNSTerm
        >>> BNSTerm(momentum=0.9)
        BNSTerm(
          momentum=0.9
          (loss): BNStatisticsLoss(reduction='mean', channel_reduction='sum')
        )
    """

    needs = Needs(bn_statistics=True)

    def __init__(self, loss: BNStatisticsLoss | None = None, *, momentum: float = 0.0) -> None:
        super().__init__()
        if loss is not None and not isinstance(loss, BNStatisticsLoss):
            raise TypeError(f"loss must be a BNStatisticsLoss, got {type(loss).__name__}")
        self.loss = loss if loss is not None else BNStatisticsLoss()
        self.momentum = float(check(number_in(0.0, 1.0, open_high=True), "momentum", momentum))
        self._past: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def forward(self, record: TeacherPass) -> torch.Tensor:
        stats = record.bn_statistics
        if stats is None:
            raise ValueError("BNSTerm needs the BatchNorm statistics of the clean pass")
        if self.momentum == 0.0:
            out: torch.Tensor = self.loss(stats)
            return out
        means, variances = stats.batch_means, stats.batch_vars
        if self._past is not None:
            m = self.momentum
            past_means, past_vars = self._past
            if len(past_means) != len(means):
                raise ValueError(
                    f"BNSTerm(momentum={m}) averaged {len(past_means)} BatchNorm layers, this "
                    f"pass has {len(means)}: one term serves one teacher"
                )
            pairs = zip((*means, *variances), (*past_means, *past_vars), strict=True)
            blended = tuple((1 - m) * b + m * p for b, p in pairs)
            n = len(means)
            stats = attrs.evolve(stats, batch_means=blended[:n], batch_vars=blended[n:])
        out = self.loss(stats)
        if torch.is_grad_enabled():
            self._remember(means, variances)
        return out

    @torch.no_grad()
    def _remember(self, means: Sequence[torch.Tensor], variances: Sequence[torch.Tensor]) -> None:
        if self._past is None:
            self._past = ([b.clone() for b in means], [v.clone() for v in variances])
            return
        m = self.momentum
        past = self._past[0] + self._past[1]
        for old, new in zip(past, [*means, *variances], strict=True):
            old.mul_(m).add_(new, alpha=1 - m)

    def get_extra_state(self) -> dict[str, list[torch.Tensor]] | None:
        """The average of the earlier batches' moments (``None`` before the first batch)."""
        if self._past is None:
            return None
        means, variances = self._past
        return {"means": [t.clone() for t in means], "vars": [t.clone() for t in variances]}

    def set_extra_state(self, state: dict[str, list[torch.Tensor]] | None) -> None:
        """Restore what :meth:`get_extra_state` returned."""
        if state is None:
            self._past = None
            return
        self._past = ([t.clone() for t in state["means"]], [t.clone() for t in state["vars"]])

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}" if self.momentum else ""


class RobustnessTerm(Term):
    """The RIS robustness loss, its clean branch taken from the shared pass; its mean feature
    and prediction inconsistencies are reported as the parts ``feature`` and ``prediction``.

    Each call makes the loss's perturbation draws (one teacher pass per draw).

    Args:
        loss: a :class:`~risloss.RobustnessLoss` on the objective's teacher.

    Raises:
        TypeError: ``loss`` is not a ``RobustnessLoss``.
    """

    def __init__(self, loss: RobustnessLoss) -> None:
        super().__init__()
        if not isinstance(loss, RobustnessLoss):
            raise TypeError(f"loss must be a RobustnessLoss, got {type(loss).__name__}")
        self.loss = loss
        self.needs = Needs(features=dict(loss.feature_layers) or None)

    def check_teacher(self, teacher: nn.Module) -> None:
        if self.loss.model is not teacher:
            raise ValueError("robustness must be a RobustnessLoss built on the same teacher")

    def forward(self, record: TeacherPass) -> TermValue:
        parts = self.loss.parts(
            record.images, clean_logits=record.logits, clean_features=record.features
        )
        return TermValue(parts.loss, {"feature": parts.feature, "prediction": parts.prediction})


class CorrelationTerm(Term):
    """The label-correlation (diversity) penalty on the teacher's predictions, over the global
    batch (:func:`~risloss.functional.label_correlation_penalty`).

    Args:
        pairs: which pairs it covers: ``"all"``, ``"same"`` or ``"different"`` labels.

    Raises:
        ValueError: an unknown ``pairs``.
    """

    def __init__(self, pairs: PairSelection = "all") -> None:
        super().__init__()
        if pairs not in PAIR_SELECTIONS:
            raise ValueError(f"pairs must be one of {PAIR_SELECTIONS}, got {pairs!r}")
        self.pairs: PairSelection = pairs

    def forward(self, record: TeacherPass) -> torch.Tensor:
        return label_correlation_penalty(
            record.gather(record.logits), record.gather(record.labels), pairs=self.pairs
        )

    def extra_repr(self) -> str:
        return f"pairs={self.pairs!r}"


class SimilarityTerm(Term):
    """Mean within-class cosine similarity of the teacher's penultimate features, over the
    global batch (:func:`~risloss.objective.class_similarity`): with a weight, a term against
    within-class collapse; with weight 0, the figure ``sim``. ``None`` when no class has two
    samples.
    """

    needs = Needs(penultimate=True)

    def forward(self, record: TeacherPass) -> torch.Tensor | None:
        if record.penultimate is None:
            raise ValueError("SimilarityTerm needs the penultimate feature of the clean pass")
        return class_similarity(record.gather(record.penultimate), record.gather(record.labels))


class AdversarialTerm(Term):
    """The student's divergence from the teacher, to maximize
    (:func:`~risloss.functional.adversarial_divergence`): images the student has not learned.

    It reads the student's logits of the batch, so it needs a student at call time
    (``objective(images, labels, student=...)``); without one it has no value.

    Args:
        agreeing_only: count only the samples both classify alike.
    """

    maximize = True

    def __init__(self, *, agreeing_only: bool = True) -> None:
        super().__init__()
        if not isinstance(agreeing_only, bool):
            raise TypeError(f"agreeing_only must be True or False, got {agreeing_only!r}")
        self.agreeing_only = agreeing_only

    def forward(self, record: TeacherPass) -> torch.Tensor | None:
        student = record.student_logits()
        if student is None:
            return None
        return adversarial_divergence(student, record.logits, agreeing_only=self.agreeing_only)

    def extra_repr(self) -> str:
        return f"agreeing_only={self.agreeing_only}"
