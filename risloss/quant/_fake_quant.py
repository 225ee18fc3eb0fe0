"""Asymmetric uniform fake quantization: the functional kernels and the two quantizer modules.

A ``b``-bit asymmetric quantizer with range ``[lo, hi]`` (``lo <= 0 <= hi``; zero is always
representable) uses the integer grid ``{0, ..., 2**b - 1}``:

.. math::

    s = \\max\\left(\\frac{hi - lo}{2^b - 1}, \\varepsilon\\right), \\qquad
    z = \\operatorname{clamp}\\left(\\operatorname{round}(-lo / s), 0, 2^b - 1\\right)

    q(x) = s \\cdot \\left(\\operatorname{clamp}(\\operatorname{round}(x / s) + z, 0, 2^b - 1)
    - z\\right)

The rounding is made differentiable with the clipped straight-through estimator: the gradient of
``q`` with respect to ``x`` is 1 where ``x`` falls inside the grid's range and 0 outside. The
kernels are :func:`torch.fake_quantize_per_channel_affine` and
:func:`torch.fake_quantize_per_tensor_affine`, which carry that gradient; ``s`` and ``z`` receive
none (they are statistics of the data, not parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from risloss import _validators as rules
from risloss._validators import check

__all__ = [
    "ActivationFakeQuant",
    "WeightFakeQuant",
    "affine_qparams",
    "fake_quantize_activation",
    "fake_quantize_weight",
]

SCALE_EPS = float(torch.finfo(torch.float32).eps)
"""Lower bound of every scale, so that a constant (e.g. all-zero) channel quantizes to itself."""

MOMENTUM = rules.number_in(0.0, 1.0, open_high=True)
"""The rule of an EMA momentum: a finite number in ``[0, 1)``."""


def affine_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of the asymmetric ``bits``-bit grid covering ``[min_val, max_val]``.

    The range is first widened to contain zero (``lo = min(min_val, 0)``, ``hi = max(max_val,
    0)``), then ``s = max((hi - lo) / (2**bits - 1), eps)`` with ``eps`` the float32 machine
    epsilon, and ``z = clamp(round(-lo / s), 0, 2**bits - 1)``.

    Args:
        min_val: lower ends of the ranges, any shape (one per channel, or a scalar).
        max_val: upper ends, same shape as ``min_val``.
        bits: bit width, in ``[2, 16]``.

    Returns:
        ``(scale, zero_point)``, both of ``min_val``'s shape: ``scale`` float32 and
        ``zero_point`` int32 (the dtypes the fake-quantization kernels require). Both are
        detached from autograd.

    Raises:
        ValueError: ``bits`` is out of range, or the shapes of the ends differ.

    Example:
        >>> import torch
        >>> scale, zero_point = affine_qparams(torch.tensor(-1.0), torch.tensor(2.0), bits=2)
        >>> scale.item(), zero_point.item()
        (1.0, 1)
    """
    check(rules.bits, "bits", bits)
    if min_val.shape != max_val.shape:
        raise ValueError(
            f"min_val and max_val must have the same shape, got {tuple(min_val.shape)} "
            f"and {tuple(max_val.shape)}"
        )
    qmax = 2**bits - 1
    lo = min_val.detach().float().clamp(max=0.0)
    hi = max_val.detach().float().clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=SCALE_EPS)
    zero_point = torch.round(-lo / scale).clamp(0, qmax).to(torch.int32)
    return scale, zero_point


def fake_quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Fake-quantize a weight tensor on the asymmetric min/max grid of its own values.

    With ``per_channel=True`` the range ``[min, max]`` is taken over each output channel (dim 0:
    the filters of a convolution, the rows of a linear layer's weight) and each channel has its
    own scale and zero point; with ``per_channel=False`` one range covers the whole tensor. See the
    module docstring for the grid. Each output channel of the result takes at most ``2**bits``
    distinct values. Quantizing twice selects the same integer levels (the recomputed scale may
    differ from the first in its last float bit), except when an end of the range is an exact
    rounding tie: then the quantized tensor spans one step less and a second pass re-grids it,
    moving values by at most half a step.

    Args:
        weight: ``(C_out, ...)`` tensor, float32 or float64, at least one dimension.
        bits: bit width, in ``[2, 16]``.
        per_channel: one range per output channel (``True``) or per tensor.

    Returns:
        A new tensor of ``weight``'s shape and dtype. Its gradient with respect to ``weight`` is
        the identity (straight-through: every entry lies inside its own range).

    Raises:
        ValueError: ``bits`` is out of range or ``weight`` is a scalar.

    Example:
        >>> import torch
        >>> w = torch.tensor([[-1.0, 0.1, 2.0], [0.0, 0.4, 1.0]])
        >>> fake_quantize_weight(w, bits=2)
        tensor([[-1.0000,  0.0000,  2.0000],
                [ 0.0000,  0.3333,  1.0000]])
    """
    scale, zero_point = weight_qparams(weight, bits, per_channel)
    return fake_quantize_on_grid(weight, scale, zero_point, bits)


def weight_qparams(
    weight: torch.Tensor, bits: int, per_channel: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid :func:`fake_quantize_weight` puts ``weight`` on: ``(scale, zero_point)``.

    Per output channel (shapes ``(C_out,)``) or per tensor (scalars), from the weight's own
    min/max through :func:`affine_qparams`. Package-internal: the weight perturbation that
    mimics the student's rounding uses the same grid.
    """
    check(rules.bits, "bits", bits)
    if weight.dim() < 1:
        raise ValueError("weight must have at least one dimension (output channels first)")
    if per_channel:
        min_val, max_val = weight.detach().reshape(weight.shape[0], -1).aminmax(dim=1)
    else:
        min_val, max_val = weight.detach().aminmax()
    return affine_qparams(min_val, max_val, bits)


def fake_quantize_on_grid(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> torch.Tensor:
    """Fake-quantize ``x`` on a given grid (per channel along dim 0 when ``scale`` is 1-D).

    Package-internal kernel of :func:`fake_quantize_weight`; values outside the grid are
    clamped to its ends.
    """
    qmax = 2**bits - 1
    if scale.dim() == 1:
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, 0, 0, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)


def fake_quantize_activation(
    x: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, bits: int
) -> torch.Tensor:
    """Fake-quantize an activation tensor on a fixed per-tensor range ``[min_val, max_val]``.

    Values outside the range (widened to contain zero) are clipped to its ends, and their gradient
    is zero (clipped straight-through estimator); inside, the gradient is the identity.

    Args:
        x: any shape, float32 or float64.
        min_val: scalar tensor, the lower end of the range.
        max_val: scalar tensor, the upper end.
        bits: bit width, in ``[2, 16]``.

    Returns:
        A new tensor of ``x``'s shape and dtype with at most ``2**bits`` distinct values.

    Raises:
        ValueError: ``bits`` is out of range or the range ends are not scalars.

    Example:
        >>> import torch
        >>> x = torch.tensor([-0.5, 0.4, 1.2, 3.0])
        >>> fake_quantize_activation(x, torch.tensor(0.0), torch.tensor(3.0), bits=2)
        tensor([0., 0., 1., 3.])
    """
    if min_val.numel() != 1 or max_val.numel() != 1:
        raise ValueError(
            "min_val and max_val must be scalars (per-tensor range), got shapes "
            f"{tuple(min_val.shape)} and {tuple(max_val.shape)}"
        )
    scale, zero_point = affine_qparams(min_val.reshape(()), max_val.reshape(()), bits)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 2**bits - 1)


def _flag(value: bool, device: torch.device | str | None) -> torch.Tensor:
    return torch.tensor(int(value), dtype=torch.uint8, device=device)


class WeightFakeQuant(nn.Module):
    """Weight quantizer: :func:`fake_quantize_weight` with its range recomputed at every call.

    The weight's min/max are statistics of the tensor it is given, so the module quantizes
    whatever weight it is called with - including weights substituted through
    :func:`torch.func.functional_call`. It has no observer; its only state is the
    ``fake_quant_enabled`` flag (a ``uint8`` buffer, saved in the ``state_dict``). When the flag is
    0 the weight passes through unchanged.

    Args:
        bits: bit width, in ``[2, 16]``.
        per_channel: one range per output channel (dim 0) or one per tensor.
        device: where the flag buffer lives.

    Shape:
        - Input: ``(C_out, ...)`` weight.
        - Output: same shape and dtype.

    Raises:
        ValueError: ``bits`` is out of range.

    Example:
        >>> import torch
        >>> quantizer = WeightFakeQuant(bits=2)
        >>> w = torch.randn(4, 3, 3, 3)
        >>> quantizer(w)[0].unique().numel() <= 4
        True
    """

    fake_quant_enabled: torch.Tensor

    def __init__(
        self, bits: int = 4, per_channel: bool = True, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.bits = check(rules.bits, "bits", bits)
        self.per_channel = bool(per_channel)
        self.register_buffer("fake_quant_enabled", _flag(True, device))

    def enable_fake_quant(self, enabled: bool = True) -> WeightFakeQuant:
        """Turn quantization on (or off with ``enabled=False``); returns ``self``.

        Args:
            enabled: the new value of the ``fake_quant_enabled`` flag.
        """
        self.fake_quant_enabled.fill_(int(enabled))
        return self

    def disable_fake_quant(self) -> WeightFakeQuant:
        """Let weights pass through unchanged; returns ``self``."""
        return self.enable_fake_quant(False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not bool(self.fake_quant_enabled):
            return weight
        return fake_quantize_weight(weight, self.bits, self.per_channel)

    def extra_repr(self) -> str:
        granularity = "per_channel" if self.per_channel else "per_tensor"
        return f"bits={self.bits}, {granularity}"


class ActivationFakeQuant(nn.Module):
    """Activation quantizer: a per-tensor range observed as an EMA of batch min/max, then frozen.

    While ``observer_enabled`` is 1, every call observes its input's batch extremes ``m_t =
    min(x)``, ``M_t = max(x)`` (over the whole tensor, without gradient) and updates the stored
    range with an exponential moving average:

    .. math::

        lo_1 = m_1, \\quad hi_1 = M_1; \\qquad
        lo_t = \\mu\\, lo_{t-1} + (1 - \\mu)\\, m_t, \\quad
        hi_t = \\mu\\, hi_{t-1} + (1 - \\mu)\\, M_t

    The first observation initializes the range, so no bias correction is needed (and none is
    applied: re-dividing the stored average at every step, as some published quantizers do,
    inflates the range). While ``fake_quant_enabled`` is 1 the input is fake-quantized with
    :func:`fake_quantize_activation` on the current range (observation happens first, so a call
    in calibration mode quantizes with the range that includes its own batch). A quantizer that
    has never observed anything passes its input through unchanged: check
    :attr:`is_calibrated`, or run a calibration first (:func:`risloss.quant.calibration`).

    Observation ignores ``module.training``: the student typically runs in eval mode, and the
    range is governed by ``observer_enabled`` alone. The default momentum ``0.9`` averages over
    about the last ten batches, which suits a calibration of a few tens of batches; the peers use
    ``0.99`` over a warm-up of hundreds of steps.

    State (buffers, saved in the ``state_dict``): ``min_val``, ``max_val`` (float32 scalars),
    ``num_observed`` (int64 scalar, number of observed batches), ``observer_enabled`` and
    ``fake_quant_enabled`` (``uint8`` scalars). Observer off and quantization on by default.

    Args:
        bits: bit width, in ``[2, 16]``.
        momentum: EMA momentum ``mu``, in ``[0, 1)``; ``0`` keeps the last batch's range.
        device: where the buffers live.

    Shape:
        - Input: any shape.
        - Output: same shape and dtype.

    Raises:
        ValueError: ``bits`` or ``momentum`` is out of range.

    Example:
        >>> import torch
        >>> quantizer = ActivationFakeQuant(bits=2)
        >>> quantizer.enable_observer()
        ActivationFakeQuant(bits=2, momentum=0.9, range=[0, 0], num_observed=0)
        >>> _ = quantizer(torch.tensor([0.0, 3.0]))
        >>> quantizer.disable_observer()
        ActivationFakeQuant(bits=2, momentum=0.9, range=[0, 3], num_observed=1)
        >>> quantizer(torch.tensor([0.4, 1.2, 5.0]))
        tensor([0., 1., 3.])
    """

    min_val: torch.Tensor
    max_val: torch.Tensor
    num_observed: torch.Tensor
    observer_enabled: torch.Tensor
    fake_quant_enabled: torch.Tensor

    def __init__(
        self, bits: int = 4, momentum: float = 0.9, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.bits = check(rules.bits, "bits", bits)
        self.momentum = float(check(MOMENTUM, "momentum", momentum))
        self.register_buffer("min_val", torch.zeros((), dtype=torch.float32, device=device))
        self.register_buffer("max_val", torch.zeros((), dtype=torch.float32, device=device))
        self.register_buffer("num_observed", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("observer_enabled", _flag(False, device))
        self.register_buffer("fake_quant_enabled", _flag(True, device))

    @property
    def is_calibrated(self) -> bool:
        """Whether the range has been observed at least once."""
        return bool(self.num_observed > 0)

    def enable_observer(self, enabled: bool = True) -> ActivationFakeQuant:
        """Start (or stop, with ``enabled=False``) updating the range; returns ``self``.

        Args:
            enabled: the new value of the ``observer_enabled`` flag.
        """
        self.observer_enabled.fill_(int(enabled))
        return self

    def disable_observer(self) -> ActivationFakeQuant:
        """Freeze the range; returns ``self``."""
        return self.enable_observer(False)

    def enable_fake_quant(self, enabled: bool = True) -> ActivationFakeQuant:
        """Turn quantization on (or off with ``enabled=False``); returns ``self``.

        Args:
            enabled: the new value of the ``fake_quant_enabled`` flag.
        """
        self.fake_quant_enabled.fill_(int(enabled))
        return self

    def disable_fake_quant(self) -> ActivationFakeQuant:
        """Let activations pass through unchanged (observation is unaffected); returns ``self``."""
        return self.enable_fake_quant(False)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the EMA range with the extremes of ``x`` (in place on the buffers).

        The first observation sets the range; later ones move it by ``1 - momentum`` towards
        the batch's minimum and maximum.

        Args:
            x: activations of any shape.

        Example:
            >>> import torch
            >>> from risloss.quant import ActivationFakeQuant
            >>> q = ActivationFakeQuant(bits=4, momentum=0.5)
            >>> q.observe(torch.tensor([0.0, 2.0]))
            >>> q.observe(torch.tensor([0.0, 4.0]))
            >>> float(q.max_val), q.is_calibrated
            (3.0, True)
        """
        batch_min, batch_max = x.detach().aminmax()
        batch_min = batch_min.to(self.min_val.dtype)
        batch_max = batch_max.to(self.max_val.dtype)
        if bool(self.num_observed == 0):
            self.min_val.copy_(batch_min)
            self.max_val.copy_(batch_max)
        else:
            weight = 1.0 - self.momentum
            self.min_val.lerp_(batch_min, weight)
            self.max_val.lerp_(batch_max, weight)
        self.num_observed.add_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(self.observer_enabled):
            self.observe(x)
        if not bool(self.fake_quant_enabled) or not self.is_calibrated:
            return x
        return fake_quantize_activation(x, self.min_val, self.max_val, self.bits)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, momentum={self.momentum}, "
            f"range=[{self.min_val.item():.4g}, {self.max_val.item():.4g}], "
            f"num_observed={int(self.num_observed)}"
        )
