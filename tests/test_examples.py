"""The example scripts run end to end at a tiny size (they are documentation that must work)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._data import fashion_mnist_or_skip

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--teacher", "resnet8_fashion_mnist", "--iters", "3", "--batch-size", "8"]
TINY += ["--eval-limit", "64"]


def _run(script: str, *args: str) -> str:
    fashion_mnist_or_skip("test")
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("script", ["distill_custom_loop.py", "prune_custom_loop.py"])
def test_examples_stay_short(script: str) -> None:
    text = (EXAMPLES / script).read_text()
    assert len(text.splitlines()) < 100
    for piece in ("SynthesisObjective.from_config(", "parts.loss.backward()", "kd_loss("):
        assert piece in text, piece


def test_distill_example_runs() -> None:
    out = _run("distill_custom_loop.py")
    assert "iter 3:" in out
    top1 = re.search(r"student top-1: ([\d.]+)%", out)
    assert top1 is not None and 0.0 <= float(top1.group(1)) <= 100.0


@pytest.mark.parametrize("structured", [False, True])
def test_prune_example_runs(structured: bool) -> None:
    out = _run(
        "prune_custom_loop.py", "--sparsity", "0.5", *(["--structured"] if structured else [])
    )
    assert "iter 3:" in out
    teacher = re.search(r"teacher top-1: .*params (\d+)", out)
    pruned = re.search(r"pruned top-1: .*params (\d+) \(non-zero (\d+)\).*sparsity ([\d.]+)", out)
    assert teacher is not None and pruned is not None, out
    if structured:
        assert int(pruned.group(1)) < int(teacher.group(1))
    else:
        assert int(pruned.group(2)) < int(pruned.group(1)) == int(teacher.group(1))
        assert float(pruned.group(3)) == pytest.approx(0.5, abs=1e-3)


def test_ptq_example_stays_short() -> None:
    text = (EXAMPLES / "ptq_calibration.py").read_text()
    assert len(text.splitlines()) < 100
    for piece in ("prepare_pt2e(", "convert_pt2e(", "weights_only=True"):
        assert piece in text, piece


def _ptq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "ptq_calibration.py"), "--teacher",
         "resnet8_fashion_mnist", "--num-images", "64", "--eval-limit", "200", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _top1(out: str, label: str) -> float:
    found = re.search(rf"{label} top-1: ([\d.]+)%", out)
    assert found is not None, out
    return float(found.group(1))


@pytest.mark.parametrize("source", ["noise", "real", "file"])
def test_ptq_example_runs(source: str, tmp_path: Path) -> None:
    import torch

    test = fashion_mnist_or_skip("test")
    calibration = source
    if source == "file":  # a calibration file: real test images in the normalized input space
        calibration = str(tmp_path / "calibration.pt")
        torch.save({"images": test.images[-64:].clone(), "labels": test.labels[-64:]}, calibration)
    res = _ptq("--calibration", calibration)
    assert res.returncode == 0, res.stderr
    assert "calibration: " in res.stdout and "(64 images)" in res.stdout
    fp, int8 = _top1(res.stdout, "full-precision"), _top1(res.stdout, "W8A8")
    # An int8 model calibrated on representative images stays close to full precision.
    assert fp > 80.0 and (source == "noise" or abs(int8 - fp) <= 5.0), res.stdout


def test_ptq_example_rejects_a_bad_calibration_file(tmp_path: Path) -> None:
    import torch

    fashion_mnist_or_skip("test")
    bad = tmp_path / "bad.pt"
    torch.save({"images": torch.zeros(8, 3, 32, 32)}, bad)
    res = _ptq("--calibration", str(bad))
    assert res.returncode != 0 and "needs an 'images' tensor" in res.stderr
    res = _ptq("--calibration", str(tmp_path / "missing.pt"))
    assert res.returncode != 0 and "expected noise, real or a .pt file" in res.stderr
