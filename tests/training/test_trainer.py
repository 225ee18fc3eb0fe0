"""The quantization trainer end to end: outputs, the trained student, resuming, SIGINT.

Every test here runs on the Fashion-MNIST files (the teacher's evaluation set); the pure
configuration and command-line checks live in ``test_config.py`` and ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Subset

from risloss import evaluate
from risloss.models import load_pretrained
from risloss.quant import activation_quantizers, quantize_model
from risloss.training import METHODS, TrainConfig, train
from tests._data import fashion_mnist_or_skip
from tests._resume import assert_resume_matches_uninterrupted, load_state

pytestmark = pytest.mark.data

TEACHER = "resnet8_fashion_mnist"
TINY: dict[str, Any] = dict(
    model=TEACHER,
    iters=6,
    warmup=2,
    batch_size=8,
    checkpoint_every=2,
    eval_limit=64,
)


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    fashion_mnist_or_skip("test")


def _saved_student(path: Path) -> Any:
    """``student.pt`` of a default (W4A4) quantization run, loaded strictly into its shell."""
    student = quantize_model(load_pretrained(TEACHER), w_bits=4, a_bits=4)
    student.load_state_dict(load_state(path))
    return student


def _moved_parameters(student: Any) -> list[str]:
    """Names of the student's parameters that differ from the teacher's."""
    teacher = dict(load_pretrained(TEACHER).named_parameters())
    return [n for n, p in student.named_parameters() if not torch.equal(p, teacher[n])]


def _ranges(student: Any) -> dict[str, tuple[float, float, int, bool]]:
    """Each activation quantizer's range, observation count and observer flag."""
    return {
        name: (float(q.min_val), float(q.max_val), int(q.num_observed), bool(q.observer_enabled))
        for name, q in activation_quantizers(student).items()
    }


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_and_writes_outputs(method: str, tmp_path: Path) -> None:
    metrics = train(TrainConfig(method=method, **TINY), tmp_path, log=None)
    assert metrics["fp_top1"] > 50.0
    assert len(metrics["history"]) == TINY["iters"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["quant_top1"] == metrics["quant_top1"] == metrics["student_top1"]
    assert saved["config"]["method"] == method
    # The reported accuracy is that of the saved student on the first eval_limit test images.
    student = _saved_student(tmp_path / "student.pt")
    test = Subset(fashion_mnist_or_skip("test"), range(TINY["eval_limit"]))
    assert metrics["quant_top1"] == evaluate(student, test)
    # Every parameter took optimizer steps after the warm-up: none is still the teacher's.
    names = [n for n, _ in student.named_parameters()]
    assert _moved_parameters(student) == names
    # The activation ranges were observed during the warm-up only, then frozen.
    for name, (_, _, observed, observing) in _ranges(student).items():
        assert (observed, observing) == (TINY["warmup"], False), name
    assert (tmp_path / "losses.png").stat().st_size > 0
    if method in ("ris", "gdfq"):
        load_state(tmp_path / "generator.pt")
        assert (tmp_path / "samples.png").stat().st_size > 0
        keys = set(metrics["history"][-1])
        assert {"g_ce", "g_bns", "s_kd", "s_loss"} <= keys
        assert ("g_rob" in keys) == (method == "ris")
        # RIS's default diversity is soft labels (g_kl), not the correlation penalty (g_div).
        assert ("g_kl" in keys) == (method == "ris") and "g_div" not in keys


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full, resumed = assert_resume_matches_uninterrupted(
        TrainConfig(method="ris", **TINY), tmp_path, at=4
    )
    assert resumed["quant_top1"] == full["quant_top1"]


def test_resume_rejects_other_settings(tmp_path: Path) -> None:
    train(TrainConfig(method="noise", **TINY), tmp_path, log=None)
    other = TrainConfig(method="noise", **{**TINY, "batch_size": 4})
    with pytest.raises(ValueError, match="batch_size"):
        train(other, tmp_path, resume=True, log=None)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(other, tmp_path / "empty", resume=True, log=None)


def test_ptq_when_warmup_covers_all_and_qat_keeps_its_ranges(tmp_path: Path) -> None:
    ptq_cfg = TrainConfig(method="noise", **{**TINY, "iters": 3, "warmup": 3})
    metrics = train(ptq_cfg, tmp_path / "ptq", log=None)
    assert all("s_loss" not in h for h in metrics["history"])
    ptq = _saved_student(tmp_path / "ptq" / "student.pt")
    assert _moved_parameters(ptq) == []  # calibration only: no weight changed
    ranges = _ranges(ptq)
    for name, (low, high, observed, observing) in ranges.items():
        assert (observed, observing) == (3, False), name  # observed 3 batches, then frozen
        assert high > low, name
    # Training after the same warm-up moves the weights and leaves the frozen ranges as they
    # were when the warm-up ended.
    qat_cfg = TrainConfig(method="noise", **{**TINY, "iters": 5, "warmup": 3})
    train(qat_cfg, tmp_path / "qat", log=None)
    qat = _saved_student(tmp_path / "qat" / "student.pt")
    assert _moved_parameters(qat) != []
    assert _ranges(qat) == ranges


def test_cli_sigint_leaves_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "risloss", "quantize", "--model", TEACHER,
        "--iters", "100000", "--warmup", "2", "--batch-size", "8", "--checkpoint-every",
        "100000", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        # Wait until the loop is running (the output folder exists once set-up is done).
        while not out.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(10)  # a few iterations, even on a loaded machine
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err
    state = load_state(out / "checkpoint.pt")
    assert state["iteration"] >= 1
