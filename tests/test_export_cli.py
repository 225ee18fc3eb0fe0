"""``risloss export RUN``: the student of a finished run as an ONNX file, and one line for each
mistake (exit status 2 for the command, 1 for the files or the installation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from risloss.models import load_pretrained, resnet8
from risloss.quant import calibration, quantize_model
from risloss.training import TrainConfig
from tests._cli import hashes, one_line, run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TEACHER = "resnet8_fashion_mnist"


def write_run(folder: Path, config: TrainConfig, student: torch.nn.Module) -> Path:
    """A finished run as ``train`` leaves it: ``metrics.json`` and ``student.pt``."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": config.to_dict()}))
    torch.save(student.state_dict(), folder / "student.pt")
    return folder


@pytest.fixture(scope="module")
def quantized() -> torch.nn.Module:
    student = quantize_model(load_pretrained(TEACHER), w_bits=4, a_bits=4).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), calibration(student):
        student(torch.randn(32, 1, 28, 28, generator=gen))
    return student


@pytest.fixture
def quantize_run(tmp_path: Path, quantized: torch.nn.Module) -> Path:
    config = TrainConfig(task="quantize", model=TEACHER, w_bits=4, a_bits=4)
    return write_run(tmp_path / "q", config, quantized)


def test_a_quantize_run_exports_and_runs_in_onnx_runtime(
    quantize_run: Path, quantized: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["export", str(quantize_run)], capsys)
    assert (code, out) == (0, ""), err
    path = quantize_run / "student.onnx"
    assert str(path) in err and "W4A4" in err
    model = onnx.load(path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = quantized(x).numpy()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    assert abs(got - want).max() < 0.5


def test_a_distill_run_exports_as_a_float_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    student = resnet8(num_classes=10, in_channels=1, image_size=28).eval()
    config = TrainConfig(task="distill", model=TEACHER, w_bits=None, a_bits=None)
    folder = write_run(tmp_path / "d", config, student)
    out = tmp_path / "exported" / "d.onnx"
    code, _, err = run(["export", str(folder), "--format", "onnx", "--out", str(out)], capsys)
    assert code == 0, err
    assert "float32" in err
    assert not {"QuantizeLinear", "DequantizeLinear"} & {
        n.op_type for n in onnx.load(out).graph.node
    }
    x = torch.randn(4, 1, 28, 28)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    with torch.no_grad():
        assert abs(got - student(x).numpy()).max() < 1e-4


def test_an_existing_out_needs_overwrite(
    quantize_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = quantize_run / "student.onnx"
    out.write_text("keep me")
    code, _, err = run(["export", str(quantize_run)], capsys)
    assert code == 2
    assert "exists" in one_line(err) and "--overwrite" in one_line(err)
    assert out.read_text() == "keep me"
    code, _, err = run(["export", str(quantize_run), "--overwrite"], capsys)
    assert code == 0, err
    onnx.checker.check_model(onnx.load(out))


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: None, 2, "no such folder"),
        (lambda p: p.write_text("x"), 2, "is a file"),
        (lambda p: (p.mkdir(), (p / "checkpoint.pt").write_bytes(b"x")), 2, "unfinished run"),
        (lambda p: p.mkdir(), 2, "no metrics.json"),
        (
            lambda p: (
                p.mkdir(),
                (p / "metrics.json").write_text(json.dumps({"config": {"task": "quantize"}})),
                (p / "synthetic.pt").write_bytes(b"x"),
            ),
            2,
            "synthesize run",
        ),
        (
            lambda p: (
                p.mkdir(),
                (p / "metrics.json").write_text(json.dumps({"config": {"task": "teach"}})),
                (p / "student.pt").write_bytes(b"x"),
            ),
            2,
            "task 'teach'",
        ),
        (lambda p: (p.mkdir(), (p / "metrics.json").write_text("{not json")), 1, "cannot read"),
    ],
)
def test_folders_without_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, code: int, words: str
) -> None:
    folder = tmp_path / "run"
    make(folder)  # type: ignore[operator]
    before = hashes(tmp_path)
    got, out, err = run(["export", str(folder)], capsys)
    assert (got, out) == (code, "")
    assert words in one_line(err) and one_line(err).startswith("risloss export: error:")
    assert hashes(tmp_path) == before  # nothing written


def test_an_unreadable_student_is_a_file_error(
    quantize_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (quantize_run / "student.pt").write_bytes(b"not a state dict")
    code, _, err = run(["export", str(quantize_run)], capsys)
    assert code == 1
    assert "student.pt" in one_line(err)
    assert not (quantize_run / "student.onnx").exists()


def test_a_student_of_another_run_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(task="quantize", model=TEACHER, w_bits=4, a_bits=4)
    folder = write_run(tmp_path / "q", config, resnet8(num_classes=3, in_channels=1))
    code, _, err = run(["export", str(folder)], capsys)
    assert code == 1
    assert "does not fit" in one_line(err)


def test_without_onnx_the_command_says_how_to_get_it(
    quantize_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    code, _, err = run(["export", str(quantize_run)], capsys)
    assert code == 1
    assert 'pip install "risloss[export]"' in one_line(err)
    assert not (quantize_run / "student.onnx").exists()


def test_an_unknown_format_is_a_usage_error(
    quantize_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["export", str(quantize_run), "--format", "tflite"], capsys)
    assert code == 2
    assert "tflite" in one_line(err)


def test_export_run_from_python(quantize_run: Path, tmp_path: Path) -> None:
    from risloss.export import export_run

    path = export_run(quantize_run, tmp_path / "s.onnx")
    assert path == tmp_path / "s.onnx" and path.is_file()
    with pytest.raises(ValueError, match=r"format must be one of \['onnx'\], got 'tflite'"):
        export_run(quantize_run, format="tflite")
    with pytest.raises(ValueError, match="exists"):
        export_run(quantize_run, path)
    assert export_run(quantize_run, path, overwrite=True, int4=False) == path
    assert onnx.load(path).opset_import[0].version == 17  # 8-bit containers only
