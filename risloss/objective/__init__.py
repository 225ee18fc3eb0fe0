"""The generator objective of data-free synthesis, as one value you build once and call.

``L_G = CE + beta * BNS + alpha * L_rob + gamma * L_div``: the teacher's cross-entropy on the
requested labels, the BatchNorm-statistics loss, the RIS robustness loss and the
label-correlation (diversity) penalty, all computed from **one** clean teacher pass whose
features, BatchNorm batch statistics and logits are shared by every term. GDFQ's objective is
the same value with the RIS terms off (:meth:`RISConfig.baseline`).

The objective is a weighted sum of named terms (:class:`Term`): each declares what it needs
from the clean pass (:class:`Needs`) and computes its value from the record of that pass
(:class:`TeacherPass`). The shipped terms are :class:`CrossEntropyTerm`, :class:`BNSTerm`,
:class:`RobustnessTerm`, :class:`CorrelationTerm`, :class:`SimilarityTerm` and
:class:`AdversarialTerm`; a term of your own plugs in beside them. RIS and GDFQ are presets:
:func:`ris_terms` builds the terms a :class:`RISConfig` describes, and
:meth:`SynthesisObjective.from_config` the objective. :class:`SynthesisObjective` returns a
:class:`SynthesisParts` record per call: the total with its graph, each term's value by name,
the teacher's logits (the student's distillation target) and the synthesis figures (agreement
with the requested labels, feature similarity within a class).

The labels the generator is asked for come from a :class:`LabelSampler`
(``RISConfig().label_sampler(num_classes)`` gives RIS's soft labels), the one the trainer uses.
"""

from risloss.objective._config import (
    DIVERSITY_MODES,
    RIS_WEIGHT_NOISE,
    DiversityMode,
    RISConfig,
    RISWeightNoise,
)
from risloss.objective._figures import class_similarity, label_agreement, within_class_similarity
from risloss.objective._fit import fit_input_statistics, is_standardized, natural_noise
from risloss.objective._labels import LabelKind, LabelSampler
from risloss.objective._objective import SynthesisObjective, SynthesisParts
from risloss.objective._presets import Terms, ris_terms
from risloss.objective._terms import (
    AdversarialTerm,
    BNSTerm,
    CorrelationTerm,
    CrossEntropyTerm,
    Needs,
    RobustnessTerm,
    SimilarityTerm,
    TeacherPass,
    Term,
    TermValue,
)

__all__ = [
    "DIVERSITY_MODES",
    "RIS_WEIGHT_NOISE",
    "AdversarialTerm",
    "BNSTerm",
    "CorrelationTerm",
    "CrossEntropyTerm",
    "DiversityMode",
    "LabelKind",
    "LabelSampler",
    "Needs",
    "RISConfig",
    "RISWeightNoise",
    "RobustnessTerm",
    "SimilarityTerm",
    "SynthesisObjective",
    "SynthesisParts",
    "TeacherPass",
    "Term",
    "TermValue",
    "Terms",
    "class_similarity",
    "fit_input_statistics",
    "is_standardized",
    "natural_noise",
    "label_agreement",
    "ris_terms",
    "within_class_similarity",
]
