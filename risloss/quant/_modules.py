"""Quantized layers: convolution and linear layers with a weight quantizer, ReLUs with activation
quantizers."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from risloss._validators import check, int_in
from risloss.quant._fake_quant import ActivationFakeQuant, WeightFakeQuant

__all__ = ["QuantConv2d", "QuantLinear", "QuantReLU"]


class QuantConv2d(nn.Conv2d):
    """An :class:`torch.nn.Conv2d` whose weight is fake-quantized at every forward.

    ``forward(x) = conv2d(x, weight_fake_quant(weight), bias)``: the quantizer is applied to
    whatever ``self.weight`` is at call time, so weights substituted through
    :func:`torch.func.functional_call` are quantized too. The bias stays in full precision (as in
    the peers' quantizer). State-dict keys: those of ``nn.Conv2d`` plus
    ``weight_fake_quant.fake_quant_enabled``.

    The arguments before ``*`` (``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``bias``, ``padding_mode``, ``device``, ``dtype``) are
    those of :class:`torch.nn.Conv2d`.

    Args:
        w_bits: weight bit width, in ``[2, 16]``.
        per_channel: one quantization range per output channel (``True``) or per tensor.

    Shape:
        As :class:`torch.nn.Conv2d`.

    Raises:
        ValueError: ``w_bits`` is out of range.

    Example:
        >>> import torch
        >>> conv = QuantConv2d(3, 8, 3, padding=1, w_bits=4)
        >>> conv(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 8, 8, 8])
        >>> conv.weight_fake_quant(conv.weight)[0].unique().numel() <= 16
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        w_bits: int = 4,
        per_channel: bool = True,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.weight_fake_quant = WeightFakeQuant(w_bits, per_channel, device=device)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, *, w_bits: int, per_channel: bool) -> QuantConv2d:
        """Wrap an existing convolution: same hyperparameters, the *same* weight and bias
        ``Parameter`` objects (so an optimizer holding them keeps working), same train/eval mode.

        No random initialization happens (the global RNG is not touched). Hooks registered on
        ``conv`` are not carried over.

        Args:
            conv: the convolution to wrap.
            w_bits: weight bit width, in ``[2, 16]``.
            per_channel: one quantization range per output channel (``True``) or per tensor.

        Returns:
            The fake-quantized convolution.

        Example:
            >>> from torch import nn
            >>> conv = nn.Conv2d(3, 8, 3, groups=1, dilation=2)
            >>> qconv = QuantConv2d.from_float(conv, w_bits=4, per_channel=True)
            >>> qconv.weight is conv.weight, qconv.dilation
            (True, (2, 2))
        """
        weight = conv.weight
        padding: Any = conv.padding
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=padding,
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
            dtype=weight.dtype,
            w_bits=w_bits,
            per_channel=per_channel,
        )
        new.weight = weight
        new.bias = conv.bias
        new.weight_fake_quant = WeightFakeQuant(w_bits, per_channel, device=weight.device)
        return new.train(conv.training)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """An :class:`torch.nn.Linear` whose weight is fake-quantized at every forward.

    ``forward(x) = linear(x, weight_fake_quant(weight), bias)``; see :class:`QuantConv2d` (the
    rows of the weight are its output channels).

    The arguments before ``*`` (``in_features``, ``out_features``, ``bias``, ``device``,
    ``dtype``) are those of :class:`torch.nn.Linear`.

    Args:
        w_bits: weight bit width, in ``[2, 16]``.
        per_channel: one quantization range per output feature (``True``) or per tensor.

    Shape:
        As :class:`torch.nn.Linear`.

    Raises:
        ValueError: ``w_bits`` is out of range.

    Example:
        >>> import torch
        >>> fc = QuantLinear(16, 10, w_bits=8)
        >>> fc(torch.randn(4, 16)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        w_bits: int = 4,
        per_channel: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_fake_quant = WeightFakeQuant(w_bits, per_channel, device=device)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, w_bits: int, per_channel: bool) -> QuantLinear:
        """Wrap an existing linear layer, sharing its ``Parameter`` objects (see
        :meth:`QuantConv2d.from_float`).

        Args:
            linear: the linear layer to wrap.
            w_bits: weight bit width, in ``[2, 16]``.
            per_channel: one quantization range per output feature (``True``) or per tensor.

        Returns:
            The fake-quantized linear layer.

        Example:
            >>> from torch import nn
            >>> fc = nn.Linear(16, 10, bias=False)
            >>> qfc = QuantLinear.from_float(fc, w_bits=4, per_channel=False)
            >>> qfc.weight is fc.weight, qfc.bias
            (True, None)
        """
        weight = linear.weight
        new = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device="meta",
            dtype=weight.dtype,
            w_bits=w_bits,
            per_channel=per_channel,
        )
        new.weight = weight
        new.bias = linear.bias
        new.weight_fake_quant = WeightFakeQuant(w_bits, per_channel, device=weight.device)
        return new.train(linear.training)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight_fake_quant(self.weight), self.bias)


def _site_name(index: int) -> str:
    return "activation_fake_quant" if index == 0 else f"activation_fake_quant_{index}"


class QuantReLU(nn.Module):
    """A ReLU (or ReLU6) module followed by an activation quantizer: ``q(act(x))``.

    State-dict keys: ``<name>.activation_fake_quant.<buffer>`` where ``<name>`` is where the
    original ReLU was registered and ``<buffer>`` is one of :class:`ActivationFakeQuant`'s buffers
    (``min_val``, ``max_val``, ``num_observed``, ``observer_enabled``, ``fake_quant_enabled``).
    The original module is kept as ``act`` (it has no state).

    *Call sites.* Some architectures register one ReLU module and call it several times in one
    forward (torchvision's ``BasicBlock`` calls ``self.relu`` twice, ``Bottleneck`` three times),
    and the activations at those sites have different ranges. With ``num_sites = k > 1`` the
    module holds ``k`` quantizers (``activation_fake_quant``, ``activation_fake_quant_1``, ...,
    ``activation_fake_quant_{k-1}``) and the ``i``-th call after :meth:`reset_sites` uses the
    ``i``-th one; :func:`risloss.quant.quantize_model` resets the counter with a forward pre-hook
    on the module that owns the ReLU (the block), so each call site gets its own range. With
    ``num_sites=1`` every call uses the single quantizer, whose EMA then sees every site.

    Args:
        act: the activation module, applied first (kept as is, ``inplace`` included).
        bits: activation bit width, in ``[2, 16]``.
        momentum: EMA momentum of the range observer, in ``[0, 1)``.
        num_sites: number of call sites per forward of the owner, at least 1.
        device: where the quantizers' buffers live.

    Shape:
        - Input: any shape.
        - Output: same shape and dtype.

    Raises:
        ValueError: ``bits``, ``momentum`` or ``num_sites`` is out of range.
        RuntimeError: (at call time) the module was called more than ``num_sites`` times since
            the last :meth:`reset_sites`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> relu = QuantReLU(nn.ReLU(), bits=4)
        >>> relu(torch.tensor([-1.0, 2.0]))  # not calibrated yet: plain ReLU
        tensor([0., 2.])
        >>> [name for name, _ in relu.named_buffers()][:2]
        ['activation_fake_quant.min_val', 'activation_fake_quant.max_val']
    """

    activation_fake_quant: ActivationFakeQuant

    def __init__(
        self,
        act: nn.Module,
        bits: int = 4,
        momentum: float = 0.9,
        num_sites: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check(int_in(1), "num_sites", num_sites)
        self.act = act
        self.num_sites = num_sites
        for index in range(num_sites):
            self.add_module(_site_name(index), ActivationFakeQuant(bits, momentum, device=device))
        self._next_site = 0

    @property
    def sites(self) -> tuple[ActivationFakeQuant, ...]:
        """The quantizers, one per call site, in call order."""
        quantizers = []
        for index in range(self.num_sites):
            quantizer = getattr(self, _site_name(index))
            assert isinstance(quantizer, ActivationFakeQuant)
            quantizers.append(quantizer)
        return tuple(quantizers)

    def reset_sites(self) -> None:
        """Make the next call use the first call site's quantizer."""
        self._next_site = 0

    def _reset_sites_hook(self, module: nn.Module, args: Any) -> None:
        self._next_site = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = 0
        if self.num_sites > 1:
            index = self._next_site
            if index >= self.num_sites:
                raise RuntimeError(
                    f"QuantReLU with num_sites={self.num_sites} was called more often than that "
                    "since its last reset_sites(); its owner's forward calls it at more sites "
                    "than declared"
                )
            self._next_site = index + 1
        quantizer: nn.Module = getattr(self, _site_name(index))
        out: torch.Tensor = quantizer(self.act(x))
        return out

    def extra_repr(self) -> str:
        return f"num_sites={self.num_sites}" if self.num_sites > 1 else ""
