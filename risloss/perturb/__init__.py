"""Perturbations of the inputs and of the weights of a model.

Input perturbations (:class:`InputPerturbation`) are differentiable image transforms whose random
parameters are drawn by ``sample`` (from an explicit ``torch.Generator``) and used by ``apply``,
so that a draw can be replayed. Weight perturbations (:class:`WeightPerturbation`) return
perturbed copies of a model's parameters for a stateless call; the model is never modified:
Gaussian noise (:class:`GaussianWeightNoise`) or the rounding error of the quantized student's
weights (:class:`QuantizationWeightNoise`).
"""

from risloss.perturb._base import InputPerturbation
from risloss.perturb._compose import (
    INPUT_POOLS,
    ChoiceParams,
    Compose,
    ComposeParams,
    InputPool,
    RandomChoice,
    Standardized,
    default_input_perturbation,
)
from risloss.perturb._input import (
    AffineParams,
    Brightness,
    BrightnessParams,
    Contrast,
    ContrastParams,
    CropParams,
    CutMix,
    CutMixParams,
    Cutout,
    CutoutParams,
    FlipParams,
    GaussianNoise,
    MixParams,
    MixUp,
    NoiseParams,
    RandomAffine,
    RandomHorizontalFlip,
    RandomResizedCrop,
)
from risloss.perturb._weight import (
    WEIGHT_NOISE_MODES,
    GaussianWeightNoise,
    QuantizationWeightNoise,
    Selector,
    WeightNoiseMode,
    WeightPerturbation,
    by_name,
    conv_linear_weights,
)

__all__ = [
    "INPUT_POOLS",
    "WEIGHT_NOISE_MODES",
    "InputPool",
    "WeightNoiseMode",
    "AffineParams",
    "Brightness",
    "BrightnessParams",
    "ChoiceParams",
    "Compose",
    "ComposeParams",
    "Contrast",
    "ContrastParams",
    "CropParams",
    "CutMix",
    "CutMixParams",
    "Cutout",
    "CutoutParams",
    "FlipParams",
    "GaussianNoise",
    "GaussianWeightNoise",
    "InputPerturbation",
    "MixParams",
    "MixUp",
    "NoiseParams",
    "QuantizationWeightNoise",
    "RandomAffine",
    "RandomChoice",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Selector",
    "Standardized",
    "WeightPerturbation",
    "by_name",
    "conv_linear_weights",
    "default_input_perturbation",
]
