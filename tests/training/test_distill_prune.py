"""Distillation and pruning through the shared trainer, its API and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import risloss.training._trainer as trainer_mod
from risloss.cli import main
from risloss.models import load_pretrained, resnet8
from risloss.pruning import model_stats, prune_model, sparsity
from risloss.quant import quantize_model
from risloss.training import TrainConfig, TrainingInterrupted, train
from tests._data import fashion_mnist_or_skip

TEACHER = "resnet8_fashion_mnist"
SHAPE = (1, 28, 28)
TINY: dict[str, Any] = dict(
    model=TEACHER,
    iters=4,
    warmup=1,
    batch_size=8,
    checkpoint_every=2,
    eval_limit=64,
    w_bits=None,
    a_bits=None,
)


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    fashion_mnist_or_skip("test")


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _student() -> Any:
    return resnet8(num_classes=10, in_channels=1, image_size=28)


# API -------------------------------------------------------------------------------------------


def test_distill_writes_outputs_and_metrics(tmp_path: Path) -> None:
    metrics = train(TrainConfig(task="distill", method="ris", **TINY), tmp_path, log=None)
    assert 0.0 <= metrics["student_top1"] <= 100.0
    assert "quant_top1" not in metrics
    assert len(metrics["history"]) == TINY["iters"]
    info = metrics["distill"]
    assert info["arch"] == "resnet8"
    assert info["student"]["params"] == sum(p.numel() for p in _student().parameters())
    assert info["teacher"] == model_stats(load_pretrained(TEACHER), SHAPE)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["distill"] == info
    assert saved["student_top1"] == metrics["student_top1"]
    assert {"g_rob", "s_kd", "s_loss"} <= set(metrics["history"][-1])
    for name in ("generator.pt", "samples.png", "losses.png", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0
    student = _student()
    student.load_state_dict(_load(tmp_path / "student.pt"))  # strict: a plain ResNet-8
    # A fresh student trains in train mode: its BatchNorm layers learned running statistics.
    assert float(student.bn1.running_mean.abs().sum()) > 0
    assert int(student.bn1.num_batches_tracked) > 0


def test_distill_quantized_student(tmp_path: Path) -> None:
    cfg = TrainConfig(task="distill", method="noise", **{**TINY, "w_bits": 4, "a_bits": 4})
    metrics = train(cfg, tmp_path, log=None)
    assert metrics["quant_top1"] == metrics["student_top1"]
    quantize_model(_student(), w_bits=4, a_bits=4).load_state_dict(_load(tmp_path / "student.pt"))


def test_prune_unstructured_keeps_masks_and_saves_plain_weights(tmp_path: Path) -> None:
    metrics = train(
        TrainConfig(task="prune", method="ris", sparsity=0.5, **TINY), tmp_path, log=None
    )
    info = metrics["prune"]
    assert info["target_sparsity"] == 0.5 and info["structured"] is False
    before, after = info["before"], info["after"]
    assert before["sparsity"] == 0.0
    assert after["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert after["params"] == before["params"]
    assert after["nonzero_params"] < before["nonzero_params"]
    assert after["effective_macs"] < before["effective_macs"]
    assert "quant_top1" not in metrics
    state = _load(tmp_path / "student.pt")
    assert not any(k.endswith(("weight_orig", "weight_mask")) for k in state)
    student: Any = load_pretrained(TEACHER)
    student.load_state_dict(state)  # strict: plain weights of the teacher's architecture
    # The weights pruned at the start are still zero after the student's optimizer steps.
    masks: Any = prune_model(load_pretrained(TEACHER), sparsity=0.5)
    for (name, m), trained in zip(masks.named_modules(), student.modules(), strict=True):
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert bool((trained.weight[m.weight_mask == 0] == 0).all()), name
    kept = masks.fc.weight_mask == 1  # ... while the kept ones trained
    teacher: Any = load_pretrained(TEACHER)
    assert not torch.equal(student.fc.weight[kept], teacher.fc.weight[kept])
    ckpt: Any = _load(tmp_path / "checkpoint.pt")["student"]
    assert any(k.endswith("weight_mask") for k in ckpt)  # the checkpoint keeps the masks


def test_prune_structured_shrinks_the_student(tmp_path: Path) -> None:
    cfg = TrainConfig(task="prune", method="gdfq", sparsity=0.5, structured=True, **TINY)
    metrics = train(cfg, tmp_path, log=None)
    before, after = metrics["prune"]["before"], metrics["prune"]["after"]
    assert after["params"] < before["params"]
    assert after["macs"] < before["macs"]
    shell: Any = prune_model(load_pretrained(TEACHER), sparsity=0.5, structured=True)
    shell.load_state_dict(_load(tmp_path / "student.pt"))  # same (shrunken) shapes
    assert shell.layer1[0].conv1.out_channels == 8
    assert after["params"] == sum(p.numel() for p in shell.parameters())


def test_prune_and_quantize_compose(tmp_path: Path) -> None:
    cfg = TrainConfig(
        task="prune", method="noise", sparsity=0.5, **{**TINY, "w_bits": 4, "a_bits": 4}
    )
    metrics = train(cfg, tmp_path, log=None)
    assert metrics["quant_top1"] == metrics["student_top1"]
    assert metrics["prune"]["after"]["sparsity"] == pytest.approx(0.5, abs=1e-4)
    shell = quantize_model(load_pretrained(TEACHER), w_bits=4, a_bits=4)
    shell.load_state_dict(_load(tmp_path / "student.pt"))
    assert sparsity(shell) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize(
    ("task", "method", "extra"),
    [
        ("distill", "gdfq", {}),
        ("prune", "ris", {"sparsity": 0.5}),
        ("prune", "noise", {"sparsity": 0.5, "structured": True}),
    ],
)
def test_resume_equals_uninterrupted(
    task: str, method: str, extra: dict[str, Any], tmp_path: Path
) -> None:
    cfg = TrainConfig(task=task, method=method, **extra, **TINY)
    full = train(cfg, tmp_path / "full", log=None)
    original = trainer_mod.Progress.update

    def update(self: Any, n: int, values: Any = None) -> None:
        original(self, n, values)
        if n == 2:
            os.kill(os.getpid(), signal.SIGINT)

    trainer_mod.Progress.update = update  # type: ignore[method-assign]
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train(cfg, tmp_path / "part", log=None)
    finally:
        trainer_mod.Progress.update = original  # type: ignore[method-assign]
    assert info.value.iteration == 2
    resumed = train(cfg, tmp_path / "part", resume=True, log=None)
    assert resumed["history"] == full["history"]
    assert resumed["student_top1"] == full["student_top1"]
    assert resumed.get(task) == full.get(task)
    a, b = _load(tmp_path / "full" / "student.pt"), _load(tmp_path / "part" / "student.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_rejects_other_pruning(tmp_path: Path) -> None:
    cfg = TrainConfig(task="prune", method="noise", sparsity=0.5, **{**TINY, "iters": 2})
    train(cfg, tmp_path, log=None)
    for other in ({"sparsity": 0.3}, {"structured": True}):
        changed = TrainConfig(task="prune", method="noise", **{**TINY, "iters": 2, **other})
        with pytest.raises(ValueError, match=next(iter(other))):
            train(changed, tmp_path, resume=True, log=None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "shrink"}, "task must be one of"),
        ({"task": "prune", "sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"task": "prune", "sparsity": -0.1}, "sparsity must be a finite number >= 0"),
        ({"task": "distill", "student": "vgg"}, "student must be one of"),
        ({"task": "distill", "w_bits": 4, "a_bits": None}, "w_bits and a_bits"),
        ({"task": "prune", "w_bits": None, "a_bits": 3}, "w_bits and a_bits"),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# Command line ----------------------------------------------------------------------------------

RUN = ["--model", TEACHER, "--iters", "3", "--warmup", "1", "--batch-size", "8"]
RUN += ["--eval-limit", "64", "--quiet"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "risloss", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=env,
    )


def test_cli_distill_default_output_folder(tmp_path: Path) -> None:
    res = _cli(["distill", "--method", "noise", *RUN], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "resnet8 student top-1:" in res.stdout
    assert "parameters:" in res.stdout and "MACs per image:" in res.stdout
    metrics = json.loads((tmp_path / "runs" / "distill" / "metrics.json").read_text())
    assert metrics["config"]["task"] == "distill"
    assert metrics["config"]["eval_limit"] == 64
    assert metrics["distill"]["arch"] == "resnet8"


def test_cli_prune_run_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["prune", "--method", "gdfq", "--sparsity", "0.6", "--w-bits", "8", "--a-bits", "8"]
    res = _cli([*args, *RUN, "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "pruned + quantized top-1:" in res.stdout
    assert "sparsity:                 0.0% -> 60.0%" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sparsity"] == 0.6
    assert metrics["prune"]["after"]["sparsity"] == pytest.approx(0.6, abs=1e-4)
    assert "quant_top1" in metrics
    # In-process from here on: resuming a finished run only re-evaluates and rewrites outputs.
    assert _main_exit_code([*args, *RUN, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["history"] == metrics["history"]
    assert "pruned + quantized top-1:" in capsys.readouterr().out
    assert _main_exit_code([*args, *RUN, "--out", str(out), "--resume", "--structured"]) == 2
    assert "other settings (['structured'])" in capsys.readouterr().err


def _main_exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("command", "args", "match"),
    [
        ("prune", ["--sparsity", "1.0"], "--sparsity"),
        ("prune", ["--sparsity", "-0.2"], "--sparsity"),
        ("prune", ["--sparsity", "half"], "--sparsity"),
        ("prune", ["--w-bits", "4"], "--w-bits and --a-bits"),
        ("prune", ["--a-bits", "1"], "--a-bits"),
        ("prune", ["--first-last-bits", "8"], "--first-last-bits"),
        ("prune", ["--data", "mnist"], "--data"),
        ("prune", ["--eval-limit", "0"], "--eval-limit"),
        ("prune", ["--student", "resnet8"], "--student"),
        ("distill", ["--student", "vgg"], "--student"),
        ("distill", ["--sparsity", "0.5"], "--sparsity"),
        ("distill", ["--structured"], "--structured"),
        ("distill", ["--weights", "w.pt"], "--weights"),
        ("distill", ["--model", "pkg.mod:fn"], "--weights"),
        ("distill", ["--model", "nope"], "shipped teachers"),
        ("distill", ["--model", "pkg.mod:"], "--model"),
        ("distill", ["--iters", "2", "--warmup", "5"], "--warmup must be <= --iters"),
        ("distill", ["--method", "magic"], "--method"),
    ],
)
def test_cli_bad_options_fail_before_any_work(
    command: str,
    args: list[str],
    match: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    base = ["--model", TEACHER] if "--model" not in args else []
    code = _main_exit_code([command, *base, "--out", str(out), *args])
    assert code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_student_learning_rate_depends_on_the_task() -> None:
    from risloss.cli import _config_from_args, build_parser

    assert TrainConfig(task="distill").lr_student == 0.05  # a student trained from scratch
    assert TrainConfig(task="quantize").lr_student == TrainConfig(task="prune").lr_student == 1e-3
    assert TrainConfig(task="distill", lr_student=0.2).lr_student == 0.2
    for task, lr in (("distill", 0.05), ("prune", 1e-3), ("quantize", 1e-3)):
        cfg = _config_from_args(build_parser().parse_args([task]), task)
        assert cfg.lr_student == lr
    args = build_parser().parse_args(["distill", "--lr-student", "0.3"])
    assert _config_from_args(args, "distill").lr_student == 0.3
