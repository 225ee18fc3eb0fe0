"""ONNX export of a fake-quantized student: the graph quantizes where the simulation does, with
the same integers, and ONNX Runtime computes what the simulation computes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from risloss.quant import (
    activation_quantizers,
    affine_qparams,
    calibration,
    export_onnx,
    fake_quantize_weight,
    freeze,
    quantize_model,
    quantized_layers,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")
from onnx import TensorProto, numpy_helper  # noqa: E402

ort.set_default_logger_severity(3)


def tiny_cnn() -> nn.Module:
    """Two conv-BN-ReLU stages, pooling and a linear head; BatchNorm statistics away from the
    identity, one channel with a negative gamma (folding mirrors its grid)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.weight[1] = -bn.weight[1]
            bn.bias.uniform_(-0.3, 0.3)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def student_of(net: nn.Module, **bits: int | None) -> nn.Module:
    student = quantize_model(net, **bits).eval()  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad(), calibration(student):
        for _ in range(4):
            student(torch.randn(32, 1, 12, 12, generator=gen))
    return student


def inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(2))


def run_ort(path: Path, x: torch.Tensor, optimize: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def as_ints(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor).astype(np.int64)


@pytest.mark.parametrize(
    ("bits", "first_last", "int4"),
    [(8, None, True), (4, None, True), (4, 8, True), (4, None, False), (3, None, True)],
)
def test_graph_holds_the_students_quantization(
    tmp_path: Path, bits: int, first_last: int | None, int4: bool
) -> None:
    student = student_of(tiny_cnn(), w_bits=bits, a_bits=bits, first_last_bits=first_last)
    path = export_onnx(student, inputs(1), tmp_path / "s.onnx", int4=int4, fold_batchnorm=False)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain for o in model.opset_import} == {""}  # standard operators only
    assert model.opset_import[0].version == (21 if int4 and bits <= 4 else 17)
    inits = initializers(model)
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}

    # Weights: integer initializers, the student's scales and zero points, exactly.
    for name, layer in quantized_layers(student).items():
        layer_bits = layer.weight_fake_quant.bits
        site = f"{name}.weight_fake_quant"
        q, scale, zp = (inits[f"{site}.{part}"] for part in ("quantized", "scale", "zero_point"))
        assert (
            q.data_type
            == zp.data_type
            == (TensorProto.INT4 if int4 and layer_bits <= 4 else TensorProto.INT8)
        )
        packed = int4 and layer_bits <= 4  # two values a byte
        numel = layer.weight.numel()
        assert len(q.raw_data) == ((numel + 1) // 2 if packed else numel)
        shift = 2 ** (layer_bits - 1)
        w = layer.weight.detach()
        ranges = w.reshape(w.shape[0], -1).aminmax(dim=1)
        want_scale, want_zp = affine_qparams(ranges.min, ranges.max, layer_bits)
        assert np.array_equal(numpy_helper.to_array(scale), want_scale.numpy())
        assert np.array_equal(as_ints(zp) + shift, want_zp.numpy())
        levels = as_ints(q) + shift
        assert levels.min() >= 0 and levels.max() <= 2**layer_bits - 1
        dequantized = (levels - (as_ints(zp) + shift).reshape(-1, *[1] * (w.dim() - 1))) * (
            numpy_helper.to_array(scale).reshape(-1, *[1] * (w.dim() - 1))
        )
        want = fake_quantize_weight(w, layer_bits).numpy()
        assert np.array_equal(dequantized.astype(np.float32), want)
        (dq,) = [n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == q.name]
        assert {a.name: a.i for a in dq.attribute} == {"axis": 0}
        (user,) = [n for n in nodes if dq.output[0] in n.input]
        assert user.op_type == ("Gemm" if isinstance(layer, nn.Linear) else "Conv")
    if first_last is not None:
        assert inits["0.weight_fake_quant.quantized"].data_type == TensorProto.INT8
        assert inits["3.weight_fake_quant.quantized"].data_type == (
            TensorProto.INT4 if int4 else TensorProto.INT8
        )

    # Activations: one Q -> [Clip] -> DQ after each quantized ReLU, the student's parameters.
    acts = activation_quantizers(student)
    quantize_nodes = [n for n in nodes if n.op_type == "QuantizeLinear"]
    assert len(quantize_nodes) == len(acts) == 2
    for name, quantizer in acts.items():
        (qnode,) = [n for n in quantize_nodes if n.input[1] == f"{name}.scale"]
        assert producer[qnode.input[0]].op_type == "Relu"
        want_scale, want_zp = affine_qparams(quantizer.min_val, quantizer.max_val, bits)
        assert numpy_helper.to_array(inits[f"{name}.scale"]).item() == want_scale.item()
        zp = inits[f"{name}.zero_point"]
        assert as_ints(zp).item() == want_zp.item()
        container = TensorProto.UINT4 if int4 and bits == 4 else TensorProto.UINT8
        assert zp.data_type == container
        clips = [n for n in nodes if n.op_type == "Clip" and n.input[0] == qnode.output[0]]
        assert len(clips) == (0 if bits == 8 or container == TensorProto.UINT4 else 1)
        if clips:
            assert as_ints(inits[clips[0].input[2]]).item() == 2**bits - 1

    record = json.loads({p.key: p.value for p in model.metadata_props}["risloss.quantization"])
    assert record["3.weight_fake_quant"] == {"kind": "weight", "bits": bits, "per_channel": True}
    assert record["2.activation_fake_quant"]["kind"] == "activation"


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_onnx_runtime_agrees_with_the_simulation(tmp_path: Path, bits: int) -> None:
    student = student_of(tiny_cnn(), w_bits=bits, a_bits=bits)
    x = inputs(256)
    with torch.no_grad():
        want = student(x).numpy()
    path = export_onnx(student, x[:1], tmp_path / "s.onnx", fold_batchnorm=False)
    exact = run_ort(path, x, optimize=False)  # the graph as written
    np.testing.assert_allclose(exact, want, rtol=0, atol=1e-4)
    assert np.array_equal(exact.argmax(1), want.argmax(1))
    optimized = run_ort(path, x)  # as deployed: ONNX Runtime's own kernels and fusions
    assert (optimized.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_batchnorm_folding_keeps_the_integers(tmp_path: Path) -> None:
    net = tiny_cnn()
    student = student_of(net, w_bits=8, a_bits=8)
    x = inputs(256)
    with torch.no_grad():
        want = student(x).numpy()
    plain = onnx.load(export_onnx(student, x[:1], tmp_path / "p.onnx", fold_batchnorm=False))
    path = export_onnx(student, x[:1], tmp_path / "f.onnx")  # W8A8: folded by default
    folded = onnx.load(path)
    assert sum(n.op_type == "BatchNormalization" for n in plain.graph.node) == 2
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    a, b = initializers(plain), initializers(folded)
    for conv, bn in (("0", net[1]), ("3", net[4])):
        site = f"{conv}.weight_fake_quant"
        factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
        np.testing.assert_allclose(
            numpy_helper.to_array(b[f"{site}.scale"]),
            numpy_helper.to_array(a[f"{site}.scale"]) * np.abs(factor),
            rtol=1e-6,
        )
        q, q_folded = as_ints(a[f"{site}.quantized"]) + 128, as_ints(b[f"{site}.quantized"]) + 128
        mirrored = factor < 0
        assert mirrored.any() and not mirrored.all()
        assert np.array_equal(q_folded[~mirrored], q[~mirrored])
        assert np.array_equal(q_folded[mirrored], 255 - q[mirrored])
    out = run_ort(path, x, optimize=False)
    np.testing.assert_allclose(out, want, rtol=0, atol=0.05)  # one 8-bit level at most here
    assert (run_ort(path, x).argmax(1) == want.argmax(1)).mean() >= 0.98


def test_w8a8_runs_on_integer_kernels(tmp_path: Path) -> None:
    student = student_of(tiny_cnn(), w_bits=8, a_bits=8)
    path = export_onnx(student, inputs(1), tmp_path / "s.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kernels = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in kernels  # the second convolution: quantized input and output


def test_float_model_exports_as_a_float_graph(tmp_path: Path) -> None:
    net = tiny_cnn()
    x = inputs(16)
    path = export_onnx(net, x[:1], tmp_path / "f.onnx")
    model = onnx.load(path)
    kinds = {n.op_type for n in model.graph.node}
    assert not kinds & {"QuantizeLinear", "DequantizeLinear"}
    assert not any(p.key == "risloss.quantization" for p in model.metadata_props)
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(path, x), net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_switched_off_quantizers_stay_float(tmp_path: Path) -> None:
    student = student_of(tiny_cnn(), w_bits=4, a_bits=4)
    student[0].weight_fake_quant.disable_fake_quant()
    model = onnx.load(export_onnx(student, inputs(1), tmp_path / "s.onnx"))
    inits = initializers(model)
    assert "0.weight_fake_quant.quantized" not in inits
    assert "3.weight_fake_quant.quantized" in inits
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    assert inits[first.input[1]].data_type == TensorProto.FLOAT  # a float initializer
    with torch.no_grad():
        want = student(inputs()).numpy()
    np.testing.assert_allclose(
        run_ort(tmp_path / "s.onnx", inputs(), optimize=False), want, atol=1e-4, rtol=0
    )


def test_export_leaves_the_model_alone(tmp_path: Path) -> None:
    student = student_of(tiny_cnn(), w_bits=4, a_bits=4).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    export_onnx(student, inputs(1), tmp_path / "s.onnx")
    after = student.state_dict()
    assert student.training
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bits_above_8_are_refused(tmp_path: Path) -> None:
    student = student_of(tiny_cnn(), w_bits=4, a_bits=4, first_last_bits=12)
    with pytest.raises(ValueError, match=r"0\.weight_fake_quant \(12 bits\)") as info:
        export_onnx(student, inputs(1), tmp_path / "s.onnx")
    assert "8 bits" in str(info.value) and "8.weight_fake_quant (12 bits)" in str(info.value)
    assert not (tmp_path / "s.onnx").exists()


def test_ranges_must_be_frozen_and_calibrated(tmp_path: Path) -> None:
    fresh = quantize_model(tiny_cnn(), w_bits=8, a_bits=8)
    with pytest.raises(ValueError, match=r"never calibrated.*2\.activation_fake_quant"):
        export_onnx(fresh, inputs(1), tmp_path / "s.onnx")
    student = student_of(tiny_cnn(), w_bits=8, a_bits=8)
    with calibration(student):
        with pytest.raises(ValueError, match=r"frozen.*freeze\(model\)"):
            export_onnx(student, inputs(1), tmp_path / "s.onnx")
    freeze(student)
    assert export_onnx(student, inputs(1), tmp_path / "s.onnx").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 12}, r"opset must be None or an integer in \[13, 21\], got 12"),
        ({"opset": 17}, "opset 17 has no int4/uint4"),
        ({"int4": "yes"}, "int4 must be True or False"),
        ({"fold_batchnorm": 1}, "fold_batchnorm must be True, False or None"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    student = student_of(tiny_cnn(), w_bits=4, a_bits=4)
    with pytest.raises(ValueError, match=message):
        export_onnx(student, inputs(1), tmp_path / "s.onnx", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        export_onnx("model", inputs(1), tmp_path / "s.onnx")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"example_input must be a torch\.Tensor"):
        export_onnx(student, [1.0], tmp_path / "s.onnx")  # type: ignore[arg-type]


def test_int8_containers_at_4_bits_on_request(tmp_path: Path) -> None:
    student = student_of(tiny_cnn(), w_bits=4, a_bits=4)
    path = export_onnx(student, inputs(1), tmp_path / "s.onnx", int4=False, opset=13)
    model = onnx.load(path)
    assert model.opset_import[0].version == 13
    x = inputs(128)
    with torch.no_grad():
        want = student(x).numpy()
    np.testing.assert_allclose(run_ort(path, x, optimize=False), want, atol=1e-4, rtol=0)


def test_missing_onnx_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    student = student_of(tiny_cnn(), w_bits=8, a_bits=8)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "risloss\[export\]"'):
        export_onnx(student, inputs(1), tmp_path / "s.onnx")
