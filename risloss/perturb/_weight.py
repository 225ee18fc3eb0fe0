"""Weight perturbations: random deltas added to a copy of a model's parameters."""

from __future__ import annotations

import abc
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, get_args

import attrs
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from risloss import _validators as rules
from risloss._util import listing
from risloss.quant._fake_quant import fake_quantize_on_grid, weight_qparams

__all__ = [
    "WEIGHT_NOISE_MODES",
    "GaussianWeightNoise",
    "QuantizationWeightNoise",
    "Selector",
    "WeightNoiseMode",
    "WeightPerturbation",
    "by_name",
    "conv_linear_weights",
]

Selector = Callable[[str, nn.Module, str, Tensor], bool]
"""``select(module_name, module, param_name, param) -> bool``: whether a parameter is perturbed.

``module_name`` is the module's name in ``model.named_modules()`` (``""`` for the model itself)
and ``param_name`` the parameter's local name (``"weight"``).
"""

WeightNoiseMode = Literal["relative", "filter", "absolute"]
"""How :class:`GaussianWeightNoise` scales its noise."""
WEIGHT_NOISE_MODES: tuple[str, ...] = get_args(WeightNoiseMode)
"""The allowed values of ``GaussianWeightNoise(mode=...)``."""


def conv_linear_weights(
    module_name: str, module: nn.Module, param_name: str, param: Tensor
) -> bool:
    """The default selector: the ``weight`` of every convolution and linear layer.

    Matches ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d`` and ``nn.Linear`` and their subclasses
    (fake-quantized or QAT layers, for instance); biases are not selected.

    Args:
        module_name: name of the module in the model (unused).
        module: the module owning the parameter.
        param_name: the parameter's local name.
        param: the parameter (unused).

    Returns:
        Whether the parameter is selected.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> conv_linear_weights("conv", conv, "weight", conv.weight)
        True
        >>> conv_linear_weights("conv", conv, "bias", conv.bias)
        False
    """
    del module_name, param
    return param_name == "weight" and isinstance(
        module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    )


@attrs.frozen
class _ByName:
    patterns: tuple[str, ...]

    def __call__(self, module_name: str, module: nn.Module, param_name: str, param: Tensor) -> bool:
        full = f"{module_name}.{param_name}" if module_name else param_name
        return any(fnmatch.fnmatchcase(full, pattern) for pattern in self.patterns)


def by_name(patterns: str | Sequence[str]) -> Selector:
    """A selector of the parameters whose full name matches one of ``patterns``.

    Full names are those of ``model.named_parameters()`` (``"layer1.0.conv1.weight"``);
    patterns are exact names or shell-style globs (``fnmatch``, case-sensitive):
    ``"layer3.*.weight"``.

    Args:
        patterns: a name or pattern, or a sequence of them.

    Returns:
        The selector.

    Raises:
        ValueError: no pattern, or an empty pattern.

    Example:
        >>> from torch import nn
        >>> from risloss.perturb import GaussianWeightNoise, by_name
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> GaussianWeightNoise(0.1, select=by_name("2.*")).targets(model)
        ('2.weight', '2.bias')
    """
    items = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    if not items or any(not isinstance(p, str) or not p for p in items):
        raise ValueError(f"patterns must be one or more non-empty strings, got {patterns!r}")
    return _ByName(items)


class WeightPerturbation(abc.ABC):
    """A random perturbation of (some of) a model's parameters: ``W~ = W + delta``.

    The model is never modified: a perturbation returns new tensors, to be used in a stateless
    call (``torch.func.functional_call``). Subclasses say which parameters they touch
    (:meth:`targets`) and how the deltas are drawn (:meth:`sample`); :meth:`apply` and
    :meth:`perturbed_parameters` are shared.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.perturb import GaussianWeightNoise, WeightPerturbation
        >>> noise = GaussianWeightNoise(eps=0.05)
        >>> isinstance(noise, WeightPerturbation)
        True
        >>> model = nn.Linear(4, 2)
        >>> params = noise.perturbed_parameters(model, torch.Generator().manual_seed(0))
        >>> sorted(params)
        ['bias', 'weight']
    """

    @abc.abstractmethod
    def targets(self, model: nn.Module) -> tuple[str, ...]:
        """Full names of the parameters of ``model`` that are perturbed.

        Args:
            model: the model.

        Returns:
            Parameter names, in ``model.named_parameters()`` order.
        """

    @abc.abstractmethod
    def sample(
        self,
        source: nn.Module | Mapping[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Draw the deltas.

        Args:
            source: a model (its :meth:`targets` are perturbed) or a mapping of the tensors to
                perturb (every entry is perturbed).
            generator: the source of randomness; ``None`` uses the global generator.

        Returns:
            ``{name: delta}``, each delta shaped like its parameter.
        """

    def apply(
        self, params: Mapping[str, Tensor], deltas: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Add the deltas to the parameters, out of place.

        Args:
            params: ``{name: W}``, for instance ``dict(model.named_parameters())``.
            deltas: ``{name: delta}`` for some of the names of ``params``.

        Returns:
            A new dict with ``W + delta`` for the names in ``deltas`` and the other entries of
            ``params`` unchanged (the same tensor objects). ``W + delta`` keeps ``W``'s autograd
            graph.

        Raises:
            ValueError: a delta for a name not in ``params``, or of a different shape.

        Example:
            >>> import torch
            >>> from risloss.perturb import GaussianWeightNoise
            >>> params = {"w": torch.ones(2), "b": torch.zeros(2)}
            >>> out = GaussianWeightNoise(0.1).apply(params, {"w": torch.full((2,), 0.5)})
            >>> out["w"].tolist(), out["b"] is params["b"]
            ([1.5, 1.5], True)
        """
        unknown = [name for name in deltas if name not in params]
        if unknown:
            raise ValueError(
                f"deltas has entries {unknown} that are not in params; params has: "
                f"{listing(list(params), limit=40)}"
            )
        out = dict(params)
        for name, delta in deltas.items():
            weight = params[name]
            if delta.shape != weight.shape:
                raise ValueError(
                    f"delta of {name!r} must have the parameter's shape {tuple(weight.shape)}, "
                    f"got {tuple(delta.shape)}"
                )
            out[name] = weight + delta
        return out

    def perturbed_parameters(
        self, model: nn.Module, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """All parameters of ``model``, with the selected ones perturbed.

        ``apply(dict(model.named_parameters()), sample(model, generator))``: ready for
        ``torch.func.functional_call`` (see ``risloss._stateless.stateless_call``).

        Args:
            model: the model; it is not modified.
            generator: the source of randomness; ``None`` uses the global generator.

        Returns:
            ``{name: tensor}`` for every parameter of ``model``.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from risloss.perturb import GaussianWeightNoise
            >>> model = nn.Linear(3, 2)
            >>> params = GaussianWeightNoise(0.1).perturbed_parameters(model)
            >>> params["bias"] is model.bias, torch.equal(params["weight"], model.weight)
            (True, False)
        """
        return self.apply(dict(model.named_parameters()), self.sample(model, generator))


def _selected(model: nn.Module, select: Selector) -> tuple[str, ...]:
    """The parameters of ``model`` that ``select`` picks, BatchNorm excluded; see ``targets``."""
    canonical = {id(p): name for name, p in model.named_parameters()}
    chosen: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if param.is_floating_point() and select(module_name, module, param_name, param):
                chosen.add(canonical[id(param)])
    names = tuple(name for name in canonical.values() if name in chosen)
    if not names:
        raise ValueError(
            f"select={select!r} selects no parameter of {type(model).__name__} "
            f"(BatchNorm parameters are never selected); its parameters are: "
            f"{listing(list(canonical.values()), limit=40)}"
        )
    return names


def _weights(
    perturbation: WeightPerturbation, source: nn.Module | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The tensors a ``sample`` perturbs: a model's targets, or every entry of a mapping."""
    if isinstance(source, nn.Module):
        named = dict(source.named_parameters())
        return {name: named[name] for name in perturbation.targets(source)}
    weights = dict(source)
    if not weights:
        raise ValueError("source must hold at least one tensor to perturb, got none")
    return weights


@attrs.frozen
class GaussianWeightNoise(WeightPerturbation):
    """Gaussian weight noise ``delta = eps * s(W) * xi``, ``xi ~ N(0, I)``.

    The scale ``s(W)`` depends on ``mode``:

    - ``"relative"`` (element-wise): ``s(W) = |W|``, so ``delta / |W| ~ N(0, eps^2)``;
    - ``"filter"`` (per output channel ``c``, dimension 0): ``s(W)_c = ||W_c|| / sqrt(n_c)``,
      the root mean square of the ``n_c`` entries of the channel;
    - ``"absolute"``: ``s(W) = 1``.

    By default the weights of every convolution and linear layer are perturbed
    (:func:`conv_linear_weights`); ``select`` chooses others. BatchNorm parameters are never
    perturbed, whatever ``select`` says, and buffers (running statistics) never are.

    Gradients: the scale and ``xi`` are computed from detached weights (under ``no_grad``), so
    deltas carry no graph; ``W + delta`` (:meth:`~WeightPerturbation.apply`) keeps ``W``'s graph.
    Whether gradients reach the teacher's parameters is the caller's choice (usually the teacher
    is frozen with ``requires_grad_(False)``). ``eps = 0`` gives deltas that are exactly zero.

    Args:
        eps: noise level, ``>= 0``.
        mode: ``"relative"``, ``"filter"`` or ``"absolute"``.
        select: which parameters are perturbed, a :data:`Selector`.

    Raises:
        ValueError: ``eps`` negative or not finite; ``mode`` unknown.
        TypeError: ``select`` not callable.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> from risloss.perturb import GaussianWeightNoise
        >>> model = resnet8().eval()
        >>> noise = GaussianWeightNoise(eps=0.05, mode="relative")
        >>> noise.targets(model)[:2]
        ('conv1.weight', 'layer1.0.conv1.weight')
        >>> deltas = noise.sample(model, torch.Generator().manual_seed(0))
        >>> deltas["fc.weight"].shape == model.fc.weight.shape
        True
    """

    eps: float = attrs.field(validator=rules.non_negative)
    mode: WeightNoiseMode = attrs.field(
        default="relative", validator=rules.one_of(WEIGHT_NOISE_MODES)
    )
    select: Selector = attrs.field(default=conv_linear_weights, validator=rules.is_callable)

    def targets(self, model: nn.Module) -> tuple[str, ...]:
        """Full names of the selected parameters of ``model``, in ``named_parameters`` order.

        BatchNorm modules are skipped before ``select`` is asked; a parameter shared by several
        modules is reported under its ``named_parameters`` name.

        Args:
            model: the model.

        Returns:
            The selected parameter names.

        Raises:
            ValueError: nothing selected (the message lists the model's parameters).

        Example:
            >>> from torch import nn
            >>> from risloss.perturb import GaussianWeightNoise
            >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
            >>> GaussianWeightNoise(0.1).targets(model)
            ('0.weight',)
        """
        return _selected(model, self.select)

    def sample(
        self,
        source: nn.Module | Mapping[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Draw ``delta = eps * s(W) * xi`` for every target.

        The ``xi`` are drawn in target order on the generator's device (the weight's device
        without a generator) and moved to the weight's device; deltas have no autograd graph.

        Args:
            source: a model (its :meth:`targets` are perturbed) or a mapping ``{name: W}`` of
                exactly the tensors to perturb.
            generator: the source of randomness; ``None`` uses the global generator.

        Returns:
            ``{name: delta}``.

        Raises:
            ValueError: a model with no selected parameter, or an empty mapping.

        Example:
            >>> import torch
            >>> from risloss.perturb import GaussianWeightNoise
            >>> w = {"w": torch.tensor([[1.0, -2.0], [0.0, 4.0]])}
            >>> d = GaussianWeightNoise(0.1, mode="relative").sample(w)["w"]
            >>> bool(d[1, 0] == 0)
            True
        """
        weights = _weights(self, source)
        deltas: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, weight in weights.items():
                w = weight.detach()
                device = generator.device if generator is not None else w.device
                xi = torch.randn(w.shape, generator=generator, device=device, dtype=w.dtype)
                deltas[name] = self.eps * self._scale(w) * xi.to(w.device)
        return deltas

    def _scale(self, w: Tensor) -> Tensor:
        if self.mode == "relative":
            return w.abs()
        if self.mode == "filter":
            flat = w.reshape(w.shape[0], -1) if w.dim() > 0 else w.reshape(1, 1)
            rms = flat.norm(dim=1) / math.sqrt(flat.shape[1])
            return rms.view((-1,) + (1,) * (w.dim() - 1)) if w.dim() > 0 else rms.view(())
        return torch.ones((), dtype=w.dtype, device=w.device)


QuantRounding = Literal["stochastic", "nearest"]
QUANT_ROUNDINGS = ("stochastic", "nearest")
"""How :class:`QuantizationWeightNoise` rounds onto the grid."""
QuantSubset = Literal["channel", "layer"]
QUANT_SUBSETS = ("channel", "layer")
"""What :class:`QuantizationWeightNoise` quantizes with probability ``p``."""


@attrs.frozen
class QuantizationWeightNoise(WeightPerturbation):
    """The rounding error of fake-quantizing the weights: ``delta = eps * m * (q(W) - W)``.

    ``q`` is the student's weight quantizer (:func:`risloss.quant.fake_quantize_weight`): an
    asymmetric ``bits``-bit grid per output channel (per tensor with ``per_channel=False``)
    spanning the channel's own min/max, widened to contain zero, with step ``s_c`` and zero point
    ``z_c`` from :func:`risloss.quant.affine_qparams`. With ``eps = 1`` and every unit quantized,
    the perturbed weight ``W + delta`` is the quantized student's weight: where
    :class:`GaussianWeightNoise` stands in for quantization, this noise is quantization.

    Randomness, so that draws differ:

    - ``rounding="stochastic"`` (default) adds a dither ``s_c * (u - 1/2)``, ``u ~ U(0, 1)`` per
      entry, before rounding to the nearest level: each weight goes to one of its two
      neighbouring levels, the upper one with probability equal to its distance from the lower
      one in steps, so that ``E[q(W)] = W`` (exactly so except at the ends of the grid, where
      levels are clamped). ``rounding="nearest"`` is the student's deterministic rounding.
    - ``p < 1`` quantizes each output channel (``subset="channel"``) or each whole tensor
      (``subset="layer"``) independently with probability ``p`` per draw; ``m`` is 1 on the
      quantized units and 0 elsewhere (those weights stay in full precision).

    With ``rounding="nearest"`` and ``p = 1`` the noise is deterministic and every draw equals
    the student's rounding error. Random numbers are drawn per target, in target order: the
    dither (``W``'s shape) when stochastic, then the mask (``(C_out,)`` or one number) when
    ``p < 1``; with neither, nothing is drawn.

    Targets, BatchNorm and gradients as for :class:`GaussianWeightNoise`: the weight of every
    convolution and linear layer by default, ``select`` for others (each must have at least one
    dimension, output channels first); deltas are computed from detached weights and carry no
    graph. ``eps = 0`` gives deltas that are exactly zero.

    Args:
        bits: bit width of the grid, an integer in ``[2, 16]`` (the student's ``w_bits``).
        eps: multiplier of the rounding error, ``>= 0``; 1 lands on the grid.
        rounding: ``"stochastic"`` (dithered, unbiased) or ``"nearest"``.
        p: probability that a unit is quantized in a draw, in ``(0, 1]``.
        subset: the unit ``p`` applies to: ``"channel"`` (output channel) or ``"layer"``
            (whole tensor).
        per_channel: one grid per output channel (``True``, the student's default) or one per
            tensor, as ``QuantSpec.per_channel``.
        select: which parameters are perturbed, a :data:`Selector`.

    Raises:
        ValueError: ``bits`` not an integer in ``[2, 16]``; ``eps`` negative or not finite;
            ``rounding`` or ``subset`` unknown; ``p`` outside ``(0, 1]``; ``per_channel`` not a
            bool.
        TypeError: ``select`` not callable.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> from risloss.perturb import QuantizationWeightNoise
        >>> from risloss.quant import fake_quantize_weight
        >>> model = resnet8().eval()
        >>> exact = QuantizationWeightNoise(bits=4, rounding="nearest")
        >>> params = exact.perturbed_parameters(model)
        >>> torch.allclose(params["fc.weight"], fake_quantize_weight(model.fc.weight, 4))
        True
        >>> noise = QuantizationWeightNoise(bits=4)  # stochastic rounding
        >>> a = noise.sample(model, torch.Generator().manual_seed(0))
        >>> b = noise.sample(model, torch.Generator().manual_seed(1))
        >>> torch.equal(a["fc.weight"], b["fc.weight"])
        False
    """

    bits: int = attrs.field(validator=rules.bits)
    eps: float = attrs.field(default=1.0, validator=rules.non_negative)
    rounding: QuantRounding = attrs.field(
        default="stochastic", validator=rules.one_of(QUANT_ROUNDINGS)
    )
    p: float = attrs.field(default=1.0, validator=rules.number_in(0.0, 1.0, open_low=True))
    subset: QuantSubset = attrs.field(default="channel", validator=rules.one_of(QUANT_SUBSETS))
    per_channel: bool = attrs.field(default=True, validator=rules.boolean)
    select: Selector = attrs.field(default=conv_linear_weights, validator=rules.is_callable)

    def targets(self, model: nn.Module) -> tuple[str, ...]:
        """Full names of the selected parameters of ``model``, in ``named_parameters`` order.

        As :meth:`GaussianWeightNoise.targets`: BatchNorm modules are skipped before
        ``select`` is asked.

        Args:
            model: the model.

        Returns:
            The selected parameter names.

        Raises:
            ValueError: nothing selected (the message lists the model's parameters).

        Example:
            >>> from torch import nn
            >>> from risloss.perturb import QuantizationWeightNoise
            >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 3))
            >>> QuantizationWeightNoise(bits=4).targets(model)
            ('0.weight', '2.weight')
        """
        return _selected(model, self.select)

    def sample(
        self,
        source: nn.Module | Mapping[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Draw ``delta = eps * m * (q(W) - W)`` for every target.

        Random numbers are drawn on the generator's device (the weight's device without a
        generator) and moved to the weight's device; deltas have no autograd graph.

        Args:
            source: a model (its :meth:`targets` are perturbed) or a mapping ``{name: W}`` of
                exactly the tensors to perturb.
            generator: the source of randomness; ``None`` uses the global generator.

        Returns:
            ``{name: delta}``.

        Raises:
            ValueError: a model with no selected parameter, an empty mapping, or a tensor
                without dimensions (the quantizer needs output channels first).

        Example:
            >>> import torch
            >>> from risloss.perturb import QuantizationWeightNoise
            >>> w = {"w": torch.tensor([[0.0, 0.25, 1.0]])}
            >>> QuantizationWeightNoise(bits=2, rounding="nearest").sample(w)["w"]
            tensor([[0.0000, 0.0833, 0.0000]])
        """
        weights = _weights(self, source)
        deltas: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, weight in weights.items():
                if weight.dim() < 1:
                    raise ValueError(
                        f"{name!r} has no dimensions; QuantizationWeightNoise quantizes tensors "
                        f"with output channels first (select chose a scalar)"
                    )
                deltas[name] = self._delta(weight.detach(), generator)
        return deltas

    def _delta(self, w: Tensor, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else w.device
        scale, zero_point = weight_qparams(w, self.bits, self.per_channel)
        x = w
        if self.rounding == "stochastic":
            u = torch.rand(w.shape, generator=generator, device=device, dtype=w.dtype)
            step = scale.to(w.dtype)
            if self.per_channel:
                step = step.view((-1,) + (1,) * (w.dim() - 1))
            x = w + step * (u.to(w.device) - 0.5)
        error = fake_quantize_on_grid(x, scale, zero_point, self.bits) - w
        if self.p < 1:
            shape = (w.shape[0],) if self.subset == "channel" else ()
            keep = torch.rand(shape, generator=generator, device=device) < self.p
            mask = keep.to(device=w.device, dtype=w.dtype)
            error = error * mask.view(shape + (1,) * (w.dim() - len(shape)))
        return self.eps * error
