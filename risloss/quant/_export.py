"""ONNX export of a fake-quantized student: QuantizeLinear/DequantizeLinear where it quantizes.

How the graph is built. The student is copied and every quantizer of the copy
(:class:`~risloss.quant.WeightFakeQuant`, :class:`~risloss.quant.ActivationFakeQuant`) is replaced
by a *site*: a module that computes what the quantizer computes and that PyTorch's TorchScript
ONNX exporter writes as one placeholder node (domain ``risloss.export``). The float graph around
the sites is PyTorch's own export. Each placeholder is then replaced, with the ``onnx`` helper
API, by standard operators:

- a weight site by ``DequantizeLinear(integers, scale, zero_point, axis=0)`` over an integer
  initializer (the float weight is dropped);
- an activation site by ``QuantizeLinear -> DequantizeLinear`` with per-tensor parameters (and an
  integer ``Clip`` between the two when the bit width is below its container's).

The integers are those of the simulation: the grid ``{0, ..., 2**b - 1}`` of
:mod:`risloss.quant` with its zero point. Weights are stored as signed ``b``-bit values (the grid
shifted by ``2**(b - 1)``, zero point shifted alike: the same dequantized numbers); activations as
unsigned values, unshifted. The containers are ``int8`` / ``uint8``, or ``int4`` / ``uint4``
(ONNX opset 21) for tensors of 4 bits or fewer unless ``int4=False``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from risloss._checkpoint import atomic_write
from risloss.quant._fake_quant import (
    ActivationFakeQuant,
    WeightFakeQuant,
    affine_qparams,
    fake_quantize_on_grid,
    weight_qparams,
)

if TYPE_CHECKING:
    import onnx

__all__ = ["EXPORT_HINT", "MAX_EXPORT_BITS", "export_onnx", "require_onnx"]

EXPORT_HINT = 'pip install "risloss[export]"'
"""How to install what ONNX export needs (``onnx``; ``onnxruntime`` to run the result)."""

MAX_EXPORT_BITS = 8
"""The widest quantizer the export writes: ONNX's 8-bit QuantizeLinear/DequantizeLinear."""

MIN_OPSET = 13
"""The first opset with per-channel (``axis``) QuantizeLinear/DequantizeLinear."""

INT4_OPSET = 21
"""The first opset with ``int4`` / ``uint4`` tensors."""

MAX_OPSET = 21

DEFAULT_OPSET = 17
"""The opset of a graph without 4-bit tensors (the newest the TorchScript exporter writes is 20)."""

_DOMAIN = "risloss.export"
_TORCHSCRIPT_MAX_OPSET = 20
_METADATA_KEY = "risloss.quantization"


def require_onnx() -> Any:
    """Import and return the ``onnx`` package, or say in one line how to install it.

    Raises:
        ImportError: ``onnx`` is not installed; the message names ``pip install
            "risloss[export]"``.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx package: {EXPORT_HINT}") from exc
    return onnx


class _Site:
    """One quantizer of the student: what it quantizes and, once traced, its parameters."""

    def __init__(self, index: int, name: str, kind: str, bits: int, per_channel: bool) -> None:
        self.index = index
        self.name = name
        self.kind = kind  # "weight" or "activation"
        self.bits = bits
        self.per_channel = per_channel
        self.scale: torch.Tensor | None = None
        self.zero_point: torch.Tensor | None = None
        self.grid: torch.Tensor | None = None  # weights: integers in [0, 2**bits - 1]


class _SiteOp(torch.autograd.Function):
    """The simulation in a forward, one placeholder node in the exported graph."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, site: _Site, simulate: Any) -> torch.Tensor:
        out: torch.Tensor = simulate(x)
        return out

    @staticmethod
    def symbolic(g: Any, x: Any, site: _Site, simulate: Any) -> Any:
        out = g.op(f"{_DOMAIN}::Site", x, index_i=site.index)
        out.setType(x.type())
        return out


class _WeightSite(nn.Module):
    """Stands in for a :class:`WeightFakeQuant` during export."""

    def __init__(self, site: _Site) -> None:
        super().__init__()
        self.site = site

    def _simulate(self, weight: torch.Tensor) -> torch.Tensor:
        site = self.site
        scale, zero_point = weight_qparams(weight, site.bits, site.per_channel)
        fake = fake_quantize_on_grid(weight, scale, zero_point, site.bits)
        shape = (-1,) + (1,) * (weight.dim() - 1) if scale.dim() == 1 else ()
        levels = torch.round(fake.detach() / scale.reshape(shape)).to(torch.int64)
        site.scale, site.zero_point = scale, zero_point
        site.grid = (levels + zero_point.to(torch.int64).reshape(shape)).clamp(0, 2**site.bits - 1)
        return fake

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _SiteOp.apply(weight, self.site, self._simulate)
        return out


class _ActivationSite(nn.Module):
    """Stands in for an :class:`ActivationFakeQuant` (frozen range) during export."""

    def __init__(self, site: _Site, quantizer: ActivationFakeQuant) -> None:
        super().__init__()
        self.site = site
        scale, zero_point = affine_qparams(
            quantizer.min_val.detach().reshape(()),
            quantizer.max_val.detach().reshape(()),
            site.bits,
        )
        site.scale, site.zero_point = scale.cpu(), zero_point.cpu()

    def _simulate(self, x: torch.Tensor) -> torch.Tensor:
        site = self.site
        assert site.scale is not None and site.zero_point is not None
        return torch.fake_quantize_per_tensor_affine(
            x, site.scale, site.zero_point, 0, 2**site.bits - 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _SiteOp.apply(x, self.site, self._simulate)
        return out


def _install_sites(net: nn.Module) -> list[_Site]:
    """Replace every enabled quantizer of ``net`` by a site; check what the export can write."""
    sites: list[_Site] = []
    too_wide: list[str] = []
    not_frozen: list[str] = []
    uncalibrated: list[str] = []
    found: list[tuple[nn.Module, str, str, WeightFakeQuant | ActivationFakeQuant]] = []
    for owner_name, owner in net.named_modules():
        for child_name, child in owner.named_children():
            if isinstance(child, (WeightFakeQuant, ActivationFakeQuant)):
                name = f"{owner_name}.{child_name}" if owner_name else child_name
                found.append((owner, child_name, name, child))
    for _, _, name, quantizer in found:
        if not bool(quantizer.fake_quant_enabled):
            continue  # the simulation lets the tensor through: so does the graph
        if quantizer.bits > MAX_EXPORT_BITS:
            too_wide.append(f"{name} ({quantizer.bits} bits)")
        if isinstance(quantizer, ActivationFakeQuant):
            if bool(quantizer.observer_enabled):
                not_frozen.append(name)
            elif not quantizer.is_calibrated:
                uncalibrated.append(name)
    if too_wide:
        raise ValueError(
            f"quantizers wider than {MAX_EXPORT_BITS} bits cannot be written as ONNX "
            f"QuantizeLinear/DequantizeLinear pairs (int8 at most): {', '.join(too_wide)}"
        )
    if not_frozen:
        raise ValueError(
            "activation ranges must be frozen before export (risloss.quant.freeze(model)); "
            f"still observing: {', '.join(not_frozen)}"
        )
    if uncalibrated:
        raise ValueError(
            "activation quantizers never calibrated (run risloss.quant.calibration first): "
            f"{', '.join(uncalibrated)}"
        )
    for owner, child_name, name, quantizer in found:
        if not bool(quantizer.fake_quant_enabled):
            continue
        if isinstance(quantizer, WeightFakeQuant):
            site = _Site(len(sites), name, "weight", quantizer.bits, quantizer.per_channel)
            setattr(owner, child_name, _WeightSite(site))
        else:
            assert isinstance(quantizer, ActivationFakeQuant)
            site = _Site(len(sites), name, "activation", quantizer.bits, False)
            setattr(owner, child_name, _ActivationSite(site, quantizer))
        sites.append(site)
    return sites


def _check_opset(opset: object, needs_int4: bool) -> int:
    if opset is None:
        return INT4_OPSET if needs_int4 else DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"opset must be None or an integer in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}"
        )
    if needs_int4 and opset < INT4_OPSET:
        raise ValueError(
            f"opset {opset} has no int4/uint4 tensors for the model's quantizers of 4 bits or "
            f"fewer: use opset >= {INT4_OPSET} (or None), or int4=False for 8-bit containers"
        )
    return opset


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    int4: bool = True,
    fold_batchnorm: bool | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file, its fake quantization as QuantizeLinear/DequantizeLinear.

    For a student of :func:`~risloss.quant.quantize_model` with frozen activation ranges (after
    :func:`~risloss.quant.calibration` or a training run), the graph quantizes exactly where the
    simulation does, with the same integers:

    - every quantized layer's weight becomes ``DequantizeLinear`` over an integer initializer
      ``<quantizer>.quantized`` with ``<quantizer>.scale`` and ``<quantizer>.zero_point``
      (per output channel, ``axis=0``, or per tensor), at the layer's own bit width (the first
      and last layers at ``first_last_bits`` when the student has them); ``<quantizer>`` is the
      qualified name of the :class:`~risloss.quant.WeightFakeQuant`, e.g.
      ``conv1.weight_fake_quant``;
    - every quantized ReLU is followed by ``QuantizeLinear -> DequantizeLinear`` with the
      per-tensor ``<quantizer>.scale`` and ``<quantizer>.zero_point`` of its
      :class:`~risloss.quant.ActivationFakeQuant` (one pair per call site);
    - layers and activations the student keeps in full precision (biases, BatchNorm, the
      residual additions, pooling, quantizers switched off) stay float.

    Integers: a ``b``-bit weight grid ``{0, ..., 2**b - 1}`` with zero point ``z`` is stored
    as the signed values ``q - 2**(b-1)`` with zero point ``z - 2**(b-1)``; activations as the
    unsigned ``q`` with zero point ``z``. Weights of 4 bits or fewer are ``int4`` and 4-bit
    activations ``uint4`` (opset 21) unless ``int4=False``; everything else is ``int8`` /
    ``uint8``. An activation narrower than its container gets an integer ``Clip`` between the
    ``QuantizeLinear`` and the ``DequantizeLinear``, so that it saturates at ``2**b - 1`` as in
    the simulation (ONNX's ``Clip`` has no 4-bit types, so 2- and 3-bit activations use
    ``uint8``). Widths above 8 bits are refused.

    *BatchNorm folding.* With ``fold_batchnorm=True``, a ``BatchNormalization`` that directly
    follows a quantized convolution is folded into it, as deployment toolchains do: the
    convolution's integers stay the student's, its per-channel scales are multiplied by
    ``|gamma| / sqrt(running_var + eps)`` (a channel whose factor is negative has its grid
    mirrored, ``q -> 2**b - 1 - q``, which gives the same numbers) and its bias absorbs the
    shift. ONNX Runtime can then run a quantized convolution between two quantized activations
    as one integer ``QLinearConv`` (8-bit containers only: its CPU kernels have no 4-bit types),
    which rounds the convolution's bias to the int32 grid of input scale times weight scale: a
    fine grid at 8 bits, a coarse one at 4. With ``False`` the BatchNorm stays a float node and
    every scale is the student's as it is (ONNX Runtime then computes the convolutions in float
    from the dequantized tensors, as the simulation does). ``None`` (the default) folds when
    every quantizer of the model has 8 bits.

    A model without enabled quantizers (a pruned or distilled full-precision student) is
    written as a plain float graph (PyTorch folds its BatchNorm layers).

    The model is exported from a copy, in eval mode, on the CPU; ``model`` is not changed. The
    graph's input is ``input`` and its output ``output``; with ``dynamic_batch`` their first
    dimension is free. The file passes :func:`onnx.checker.check_model` and uses standard
    operators only; its metadata entry ``risloss.quantization`` records each quantizer's kind
    and bit width (JSON). Needs the ``onnx`` package (``pip install "risloss[export]"``), and
    PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, deprecated
    but shipped by torch 2.14).

    Args:
        model: the student (or any model PyTorch's exporter can trace).
        example_input: one input batch for tracing, e.g. ``torch.zeros(1, 1, 28, 28)``.
        path: the ``.onnx`` file to write (replaced if it exists; missing folders are made).
        opset: ONNX opset, in ``[13, 21]``; ``None``: 21 when some tensor is ``int4``/``uint4``,
            else 17.
        int4: store weights of 4 bits or fewer as ``int4`` and 4-bit activations as ``uint4``
            (a smaller file; opset 21) rather than in 8-bit containers.
        fold_batchnorm: fold a BatchNorm that follows a quantized convolution into its scales
            (``None``: when every quantizer has 8 bits).
        dynamic_batch: let the batch dimension vary.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` not a tensor.
        ValueError: a quantizer wider than 8 bits (the message names it and its bits), activation
            ranges not frozen or never calibrated, or ``opset`` out of range or too old for
            ``int4`` tensors.
        ImportError: ``onnx`` is not installed.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from risloss.quant import calibration, export_onnx, quantize_model
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> with torch.no_grad(), calibration(student):
        ...     _ = student(torch.randn(64, 4))
        >>> path = export_onnx(student, torch.zeros(1, 4), tempfile.mkdtemp() + "/student.onnx")
        >>> import onnx
        >>> sorted({n.op_type for n in onnx.load(path).graph.node})
        ['DequantizeLinear', 'Gemm', 'QuantizeLinear', 'Relu']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if not example_input.is_floating_point() or example_input.dim() < 1:
        raise ValueError(
            "example_input must be a floating-point batch with a batch dimension, got "
            f"{example_input.dtype} of shape {tuple(example_input.shape)}"
        )
    for flag_name, flag in (("int4", int4), ("dynamic_batch", dynamic_batch)):
        if not isinstance(flag, bool):
            raise ValueError(f"{flag_name} must be True or False, got {flag!r}")
    if fold_batchnorm is not None and not isinstance(fold_batchnorm, bool):
        raise ValueError(f"fold_batchnorm must be True, False or None, got {fold_batchnorm!r}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"path must be a file name, got {path!r}")
    if opset is not None:
        _check_opset(opset, needs_int4=False)
    onnx_mod = require_onnx()

    net = copy.deepcopy(model).cpu().eval()
    sites = _install_sites(net)
    needs_int4 = int4 and any(
        site.bits <= 4 if site.kind == "weight" else site.bits == 4 for site in sites
    )
    target = _check_opset(opset, needs_int4)
    proto = _torch_export(
        net,
        example_input.detach().cpu(),
        min(target, _TORCHSCRIPT_MAX_OPSET),
        bool(sites),
        dynamic_batch,
    )
    if target > _TORCHSCRIPT_MAX_OPSET:
        from onnx import version_converter

        proto = version_converter.convert_version(proto, target)
    _drop_initializer_identities(proto)
    if sites:
        _lower_sites(proto, sites, int4)
        if fold_batchnorm or (fold_batchnorm is None and all(s.bits == 8 for s in sites)):
            _fold_batchnorm(proto, sites)
        _drop_unused_initializers(proto)
        kept = [o for o in proto.opset_import if o.domain != _DOMAIN]
        del proto.opset_import[:]
        proto.opset_import.extend(kept)
        record = {
            site.name: {"kind": site.kind, "bits": site.bits, "per_channel": site.per_channel}
            for site in sites
        }
        onnx_mod.helper.set_model_props(proto, {_METADATA_KEY: json.dumps(record)})
    onnx_mod.checker.check_model(proto, full_check=True)
    return atomic_write(path, lambda fh: fh.write(proto.SerializeToString()))


def _torch_export(
    net: nn.Module, x: torch.Tensor, opset: int, has_sites: bool, dynamic_batch: bool
) -> onnx.ModelProto:
    import onnx

    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            net,
            (x,),
            buffer,  # type: ignore[arg-type]  # a file object works (and is documented)
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=axes,
            custom_opsets={_DOMAIN: 1} if has_sites else None,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


# Graph surgery -----------------------------------------------------------------------------


def _initializers(proto: onnx.ModelProto) -> dict[str, Any]:
    return {init.name: init for init in proto.graph.initializer}


def _consumers(proto: onnx.ModelProto) -> dict[str, list[Any]]:
    uses: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            if name:
                uses.setdefault(name, []).append(node)
    return uses


def _rename_input(proto: onnx.ModelProto, old: str, new: str) -> None:
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _drop_initializer_identities(proto: onnx.ModelProto) -> None:
    """Remove ``Identity`` nodes over initializers (the exporter's shared-constant aliases)."""
    inits = _initializers(proto)
    outputs = {o.name for o in proto.graph.output}
    for node in list(proto.graph.node):
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            _rename_input(proto, node.output[0], node.input[0])
            proto.graph.node.remove(node)


def _drop_unused_initializers(proto: onnx.ModelProto) -> None:
    used = {name for node in proto.graph.node for name in node.input}
    used |= {o.name for o in proto.graph.output}
    for init in list(proto.graph.initializer):
        if init.name not in used:
            proto.graph.initializer.remove(init)


def _weight_container(bits: int, int4: bool) -> tuple[int, int]:
    """(ONNX element type, shift) of a weight of ``bits`` bits."""
    from onnx import TensorProto

    return (TensorProto.INT4 if int4 and bits <= 4 else TensorProto.INT8), 2 ** (bits - 1)


def _activation_container(bits: int, int4: bool) -> tuple[int, int]:
    """(ONNX element type, largest value it holds) of an activation of ``bits`` bits."""
    from onnx import TensorProto

    # A narrower grid saturates below its container's top with an integer Clip, which ONNX
    # defines for 8-bit integers but not for 4-bit ones: 2- and 3-bit activations stay uint8.
    return (TensorProto.UINT4, 15) if int4 and bits == 4 else (TensorProto.UINT8, 255)


def _int_tensor(name: str, elem_type: int, values: torch.Tensor) -> Any:
    """An integer initializer, stored as raw bytes (4-bit values packed two to a byte)."""
    from onnx import helper, numpy_helper

    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return numpy_helper.from_array(values.to(torch.int64).cpu().numpy().astype(dtype), name)


def _float_tensor(name: str, values: torch.Tensor) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(values.detach().to(torch.float32).cpu().numpy(), name)


def _lower_sites(proto: onnx.ModelProto, sites: list[_Site], int4: bool) -> None:
    """Replace each placeholder by DequantizeLinear (weights) or Q -> [Clip] -> DQ."""
    from onnx import helper

    by_index = {site.index: site for site in sites}
    graph = proto.graph
    written: set[int] = set()
    new_nodes: list[Any] = []
    for node in graph.node:
        if node.domain != _DOMAIN:
            new_nodes.append(node)
            continue
        index = next(a.i for a in node.attribute if a.name == "index")
        site = by_index[index]
        assert site.scale is not None and site.zero_point is not None
        scale_name, zp_name = f"{site.name}.scale", f"{site.name}.zero_point"
        out = node.output[0]
        if site.kind == "weight":
            assert site.grid is not None
            elem, shift = _weight_container(site.bits, int4)
            q_name = f"{site.name}.quantized"
            if index not in written:
                graph.initializer.extend(
                    [
                        _int_tensor(q_name, elem, site.grid - shift),
                        _float_tensor(scale_name, site.scale),
                        _int_tensor(zp_name, elem, site.zero_point.to(torch.int64) - shift),
                    ]
                )
            dequantize = helper.make_node(
                "DequantizeLinear",
                [q_name, scale_name, zp_name],
                [out],
                name=f"{out}/DequantizeLinear",
            )
            if site.scale.dim() == 1:
                dequantize.attribute.append(helper.make_attribute("axis", 0))
            new_nodes.append(dequantize)
        else:
            elem, top = _activation_container(site.bits, int4)
            qmax = 2**site.bits - 1
            if index not in written:
                graph.initializer.extend(
                    [
                        _float_tensor(scale_name, site.scale),
                        _int_tensor(zp_name, elem, site.zero_point.to(torch.int64)),
                    ]
                )
                if qmax < top:
                    graph.initializer.append(
                        _int_tensor(f"{site.name}.qmax", elem, torch.tensor(qmax))
                    )
            quantized = f"{out}/quantized"
            new_nodes.append(
                helper.make_node(
                    "QuantizeLinear",
                    [node.input[0], scale_name, zp_name],
                    [quantized],
                    name=f"{out}/QuantizeLinear",
                )
            )
            if qmax < top:
                clipped = f"{out}/saturated"
                new_nodes.append(
                    helper.make_node(
                        "Clip", [quantized, "", f"{site.name}.qmax"], [clipped], name=f"{out}/Clip"
                    )
                )
                quantized = clipped
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [quantized, scale_name, zp_name],
                    [out],
                    name=f"{out}/DequantizeLinear",
                )
            )
        written.add(index)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _fold_batchnorm(proto: onnx.ModelProto, sites: list[_Site]) -> None:
    """Fold ``DequantizeLinear(w) -> Conv -> BatchNormalization`` into the DQ's scales."""
    import numpy as np
    from onnx import helper, numpy_helper

    weights = {f"{s.name}.quantized": s for s in sites if s.kind == "weight"}
    graph = proto.graph
    inits = _initializers(proto)
    uses = _consumers(proto)
    outputs = {o.name for o in graph.output}
    for conv in list(graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        producers = [n for n in graph.node if conv.input[1] in n.output]
        if len(producers) != 1 or producers[0].op_type != "DequantizeLinear":
            continue
        dq = producers[0]
        site = weights.get(dq.input[0])
        if site is None or len(uses.get(dq.output[0], [])) != 1:
            continue
        if any(len(uses.get(name, [])) != 1 for name in dq.input):  # shared parameters
            continue
        after = uses.get(conv.output[0], [])
        if len(after) != 1 or after[0].op_type != "BatchNormalization" or conv.output[0] in outputs:
            continue
        bn = after[0]
        if len(bn.output) != 1 or not all(name in inits for name in bn.input[1:5]):
            continue
        gamma, beta, mean, var = (
            numpy_helper.to_array(inits[name]).astype(np.float64) for name in bn.input[1:5]
        )
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = gamma / np.sqrt(var + eps)
        if not np.all(np.isfinite(factor)) or np.any(factor == 0):
            continue
        channels = factor.shape[0]
        assert site.grid is not None and site.scale is not None and site.zero_point is not None
        if site.grid.shape[0] != channels:
            continue
        grid = site.grid.reshape(channels, -1)
        qmax = 2**site.bits - 1
        zero = site.zero_point.to(torch.int64).expand(channels).clone()
        scale = site.scale.to(torch.float64).expand(channels).clone()
        flip = torch.from_numpy(factor < 0)
        grid = torch.where(flip[:, None], qmax - grid, grid).reshape(site.grid.shape)
        zero = torch.where(flip, qmax - zero, zero)
        new_scale = scale * torch.from_numpy(np.abs(factor))
        bias = np.zeros(channels)
        if len(conv.input) > 2 and conv.input[2]:
            bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        new_bias = factor * (bias - mean) + beta
        elem = next(i.data_type for i in graph.initializer if i.name == dq.input[0])
        shift = 2 ** (site.bits - 1)
        for name, tensor in (
            (dq.input[0], _int_tensor(dq.input[0], elem, grid - shift)),
            (dq.input[1], _float_tensor(dq.input[1], new_scale)),
            (dq.input[2], _int_tensor(dq.input[2], elem, zero - shift)),
        ):
            graph.initializer.remove(inits[name])
            graph.initializer.append(tensor)
            inits[name] = tensor
        del dq.attribute[:]
        dq.attribute.append(helper.make_attribute("axis", 0))
        bias_name = f"{bn.output[0]}/folded_bias"
        bias_tensor = numpy_helper.from_array(new_bias.astype(np.float32), bias_name)
        graph.initializer.append(bias_tensor)
        inits[bias_name] = bias_tensor
        if len(conv.input) > 2:
            conv.input[2] = bias_name
        else:
            conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
