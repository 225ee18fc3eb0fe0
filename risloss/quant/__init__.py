"""Fake quantization for quantization-aware training of a data-free student.

The peers' quantizer (GDFQ, Qimera, IntraQ, AdaDFQ, HAST), with a correct EMA:

- :func:`quantize_model` copies a network and replaces its ``nn.Conv2d`` / ``nn.Linear`` layers
  by :class:`QuantConv2d` / :class:`QuantLinear` (weights fake-quantized per output channel,
  asymmetric, min/max recomputed at every forward) and its ``nn.ReLU`` / ``nn.ReLU6`` modules by
  :class:`QuantReLU` (activation followed by an :class:`ActivationFakeQuant`: per tensor,
  asymmetric, range from an EMA of batch min/max).
- :func:`calibration` observes activation ranges inside a ``with`` block; :func:`freeze` stops
  observation. The toggles :func:`enable_observer`, :func:`disable_observer`,
  :func:`enable_fake_quant` and :func:`disable_fake_quant` work with ``model.apply``.
- The flags and ranges are buffers: a student saves and loads with ``state_dict()`` /
  ``load_state_dict()`` (``torch.load(..., weights_only=True)`` works).
- :func:`export_onnx` writes a calibrated student as an ONNX graph with
  QuantizeLinear/DequantizeLinear pairs where it quantizes (needs ``pip install
  "risloss[export]"``).

Typical use::

    student = quantize_model(teacher, w_bits=4, a_bits=4).eval()
    with torch.no_grad(), calibration(student):
        for x in batches:
            student(x)
    # observers are off again here: ranges are frozen

Perturbed forwards through :func:`torch.func.functional_call` (as in the robustness loss) quantize
the substituted weights, and should run with the observers off (frozen, the default outside
:func:`calibration`): the flags that count are those in the buffers handed to the call, and an
observing quantizer updates those buffers in place.

Coverage: exactly ``nn.Conv2d``, ``nn.Linear``, ``nn.ReLU`` and ``nn.ReLU6`` modules; activations
applied functionally (``F.relu`` inside a ``forward``) get no quantizer (see
:func:`quantize_model`).
"""

from risloss.quant._convert import (
    QuantSpec,
    activation_quantizers,
    quantize_model,
    quantized_layers,
)
from risloss.quant._export import export_onnx
from risloss.quant._fake_quant import (
    ActivationFakeQuant,
    WeightFakeQuant,
    affine_qparams,
    fake_quantize_activation,
    fake_quantize_weight,
)
from risloss.quant._modes import (
    calibration,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
    freeze,
)
from risloss.quant._modules import QuantConv2d, QuantLinear, QuantReLU

__all__ = [
    "ActivationFakeQuant",
    "QuantConv2d",
    "QuantLinear",
    "QuantReLU",
    "QuantSpec",
    "WeightFakeQuant",
    "activation_quantizers",
    "affine_qparams",
    "calibration",
    "disable_fake_quant",
    "disable_observer",
    "enable_fake_quant",
    "enable_observer",
    "export_onnx",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "freeze",
    "quantize_model",
    "quantized_layers",
]
