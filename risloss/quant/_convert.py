"""Turn a full-precision model into its fake-quantized student."""

from __future__ import annotations

import copy

import attrs
from torch import nn

from risloss._fields import default_of, setting
from risloss._util import model_device
from risloss._validators import bits, boolean, check, optional_bits
from risloss.quant._fake_quant import MOMENTUM, ActivationFakeQuant
from risloss.quant._modules import QuantConv2d, QuantLinear, QuantReLU

__all__ = ["QuantSpec", "activation_quantizers", "quantize_model", "quantized_layers"]

# Owners known to call one registered ReLU module at several sites per forward:
# (class module, class qualname) -> {child name: number of calls per forward}.
_CALL_SITES: dict[tuple[str, str], dict[str, int]] = {
    ("torchvision.models.resnet", "BasicBlock"): {"relu": 2},
    ("torchvision.models.resnet", "Bottleneck"): {"relu": 3},
}


@attrs.frozen
class QuantSpec:
    """The validated configuration of a quantized student (see :func:`quantize_model`).

    :func:`quantize_model` validates its arguments through this class. Its fields are
    :func:`quantize_model`'s keyword arguments, so ``attrs.asdict(spec)`` is a JSON-ready record
    from which ``quantize_model(model, **attrs.asdict(spec))`` rebuilds the same architecture
    (e.g. to load a saved ``state_dict``; the bit widths are not stored in it).

    Args:
        w_bits: weight bit width, in ``[2, 16]``.
        a_bits: activation bit width, in ``[2, 16]``.
        per_channel: per-output-channel weight ranges (``True``) or one per weight tensor.
        first_last_bits: weight bit width of the first and last quantized layer, in ``[2, 16]``,
            or ``None`` to quantize them with ``w_bits`` like the rest.
        momentum: EMA momentum of the activation range observers, in ``[0, 1)``.

    Raises:
        ValueError: a field is out of range (the message names it and the allowed values).

    Example:
        >>> import attrs
        >>> attrs.asdict(QuantSpec(w_bits=4, a_bits=8))
        {'w_bits': 4, 'a_bits': 8, 'per_channel': True, 'first_last_bits': None, 'momentum': 0.9}
        >>> QuantSpec(w_bits=1)
        Traceback (most recent call last):
        ...
        ValueError: w_bits must be an integer in 2..16, got 1
    """

    w_bits: int = setting(4, validator=bits, help="bit width of the weights")
    a_bits: int = setting(4, validator=bits, help="bit width of the activations")
    per_channel: bool = setting(
        True, validator=boolean, help="one weight range per output channel, not per tensor"
    )
    first_last_bits: int | None = setting(
        None,
        validator=optional_bits,
        help="bit width of the weights of the first and last quantized layer",
    )
    momentum: float = setting(
        0.9, validator=MOMENTUM, help="EMA momentum of the activation range observers"
    )


_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
_ACT_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
_QUANT_TYPES: tuple[type[nn.Module], ...] = (QuantConv2d, QuantLinear, QuantReLU)


def quantize_model(
    model: nn.Module,
    *,
    w_bits: int = default_of(QuantSpec, "w_bits"),
    a_bits: int = default_of(QuantSpec, "a_bits"),
    per_channel: bool = default_of(QuantSpec, "per_channel"),
    first_last_bits: int | None = default_of(QuantSpec, "first_last_bits"),
    momentum: float = default_of(QuantSpec, "momentum"),
    inplace: bool = False,
) -> nn.Module:
    """Build the fake-quantized student of ``model`` (the peers' W``w_bits``A``a_bits`` protocol).

    What is replaced (matching exact types, in the copy unless ``inplace=True``):

    - every ``nn.Conv2d`` by a :class:`QuantConv2d` and every ``nn.Linear`` by a
      :class:`QuantLinear` (same hyperparameters, groups, dilation and padding mode included,
      and the same weight/bias ``Parameter`` objects). Their weights are quantized
      asymmetrically with min/max ranges recomputed at every forward, per output channel or
      per tensor; biases stay in full precision. The first and the last of these layers in
      module registration order (for a CNN classifier: the stem convolution and the classifier
      head) use ``first_last_bits`` for their weights when it is given; as in the peers'
      protocol, only their weights are affected (activation quantizers all use ``a_bits``).
    - every ``nn.ReLU`` / ``nn.ReLU6`` module by a :class:`QuantReLU`, i.e. the activation
      followed by an :class:`ActivationFakeQuant` (per tensor, asymmetric, EMA range). Fresh
      activation quantizers do not observe and pass through unchanged until they have been
      calibrated (see :func:`calibration` and :func:`freeze`).

    What is *not* covered: subclasses of ``nn.Conv2d`` / ``nn.Linear`` (their ``forward`` may
    differ; e.g. parametrized layers), other layer types (``ConvTranspose2d``, attention),
    activation functions called functionally inside a ``forward`` (``F.relu``, ``torch.relu``,
    ``x.relu()``) and non-ReLU activation modules - module replacement cannot reach them, so no
    quantizer is inserted there. Hooks registered on replaced modules are not carried over.

    A ReLU module called at several sites per forward of its owner is handled with one quantizer
    per site for torchvision's ``BasicBlock`` (``relu``: 2 sites) and ``Bottleneck`` (3 sites),
    see :class:`QuantReLU`; any other reuse shares one quantizer whose EMA observes every call.

    State-dict keys are those of ``model`` plus, for each quantized layer ``<l>``,
    ``<l>.weight_fake_quant.fake_quant_enabled`` and, for each replaced activation ``<a>``,
    ``<a>.activation_fake_quant.{min_val, max_val, num_observed, observer_enabled,
    fake_quant_enabled}`` (and ``activation_fake_quant_<i>`` for extra call sites). All buffers
    have fixed shapes, so a state dict loads into a fresh ``quantize_model`` of the same
    architecture with the same arguments (the bit widths themselves are not stored).

    Args:
        model: the full-precision network. Left untouched unless ``inplace=True``.
        w_bits: weight bit width, in ``[2, 16]``.
        a_bits: activation bit width, in ``[2, 16]``.
        per_channel: per-output-channel weight ranges (``True``) or per tensor.
        first_last_bits: weight bit width of the first and last quantized layers, or ``None``.
        momentum: EMA momentum of the activation range observers, in ``[0, 1)``.
        inplace: modify ``model`` itself and return it, instead of a deep copy.

    Returns:
        The quantized model (``model`` itself when ``inplace=True``), in ``model``'s train/eval
        mode, on its device.

    Raises:
        ValueError: a bit width or ``momentum`` is out of range (the message names the argument);
            ``model`` has no ``nn.Conv2d`` or ``nn.Linear``; ``model`` is already quantized; or
            ``inplace=True`` and ``model`` is itself a bare layer.
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> from risloss.quant import calibration, freeze, quantize_model, quantized_layers
        >>> student = quantize_model(resnet8(in_channels=1).eval(), w_bits=4, a_bits=4)
        >>> len(quantized_layers(student))
        10
        >>> with torch.no_grad(), calibration(student):
        ...     _ = student(torch.randn(8, 1, 28, 28))
        >>> student(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    spec = QuantSpec(w_bits, a_bits, per_channel, first_last_bits, momentum)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check(boolean, "inplace", inplace)
    modules = list(model.modules())
    already = [type(m).__name__ for m in modules if isinstance(m, _QUANT_TYPES)]
    if already:
        raise ValueError(f"model is already quantized (it contains {already[0]} modules)")
    layers = [m for m in modules if type(m) in _LAYER_TYPES]
    if not layers:
        raise ValueError(
            f"model must contain at least one nn.Conv2d or nn.Linear layer to quantize; "
            f"{type(model).__name__} has none"
        )
    if inplace and (type(model) in _LAYER_TYPES or type(model) in _ACT_TYPES):
        raise ValueError(
            "inplace=True cannot replace a bare layer; wrap it in nn.Sequential or use "
            "inplace=False"
        )
    target = model if inplace else copy.deepcopy(model)
    return _convert(target, spec)


def _convert(model: nn.Module, spec: QuantSpec) -> nn.Module:
    modules = list(model.modules())
    layers = [m for m in modules if type(m) in _LAYER_TYPES]
    edge = {id(layers[0]), id(layers[-1])}
    replacements: dict[int, nn.Module] = {}
    for layer in layers:
        bits = spec.w_bits
        if spec.first_last_bits is not None and id(layer) in edge:
            bits = spec.first_last_bits
        if isinstance(layer, nn.Conv2d):
            replacements[id(layer)] = QuantConv2d.from_float(
                layer, w_bits=bits, per_channel=spec.per_channel
            )
        else:
            assert isinstance(layer, nn.Linear)
            replacements[id(layer)] = QuantLinear.from_float(
                layer, w_bits=bits, per_channel=spec.per_channel
            )

    # Call sites per activation module, from the owners that are known to reuse one.
    num_sites: dict[int, int] = {}
    owners: dict[int, list[nn.Module]] = {}
    for parent in modules:
        table = _CALL_SITES.get((type(parent).__module__, type(parent).__qualname__), {})
        for name, child in parent._modules.items():
            if child is not None and type(child) in _ACT_TYPES:
                sites = table.get(name, 1)
                num_sites[id(child)] = max(num_sites.get(id(child), 1), sites)
                if sites > 1:
                    owners.setdefault(id(child), []).append(parent)
    device = model_device(model)
    for module in modules:
        if type(module) in _ACT_TYPES:
            replacements[id(module)] = QuantReLU(
                module,
                bits=spec.a_bits,
                momentum=spec.momentum,
                num_sites=num_sites.get(id(module), 1),
                device=device,
            ).train(module.training)

    for parent in modules:
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    for act_id, parents in owners.items():
        quant_relu = replacements[act_id]
        assert isinstance(quant_relu, QuantReLU)
        for parent in parents:
            parent.register_forward_pre_hook(quant_relu._reset_sites_hook)
    return replacements.get(id(model), model)


def quantized_layers(model: nn.Module) -> dict[str, QuantConv2d | QuantLinear]:
    """The weight-quantized layers of ``model``, by qualified name, in registration order.

    Args:
        model: any module, usually one built by :func:`quantize_model`.

    Returns:
        ``{name: layer}`` for every :class:`QuantConv2d` and :class:`QuantLinear`; empty for a
        model that is not quantized.

    Example:
        >>> from torch import nn
        >>> from risloss.quant import quantize_model
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> layers = quantized_layers(student)
        >>> {name: layer.weight_fake_quant.bits for name, layer in layers.items()}
        {'0': 4, '2': 4}
    """
    return {
        name: m for name, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))
    }


def activation_quantizers(model: nn.Module) -> dict[str, ActivationFakeQuant]:
    """The activation quantizers of ``model``, by qualified name, in registration order.

    Args:
        model: any module, usually one built by :func:`quantize_model`.

    Returns:
        ``{name: quantizer}`` for every :class:`ActivationFakeQuant` (one per call site of each
        :class:`QuantReLU`); empty for a model that is not quantized.

    Example:
        >>> from torch import nn
        >>> from risloss.quant import quantize_model
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> list(activation_quantizers(student))
        ['1.activation_fake_quant']
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, ActivationFakeQuant)}
