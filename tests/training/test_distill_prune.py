"""Distillation and pruning through the shared trainer, its API and the command line.

Every test here runs on the Fashion-MNIST files; the pure configuration and command-line checks
live in ``test_config.py`` and ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from risloss import evaluate
from risloss.cli import main
from risloss.models import load_pretrained, resnet8
from risloss.pruning import model_stats, prune_model, sparsity
from risloss.quant import quantize_model
from risloss.training import TrainConfig, train
from tests._data import fashion_mnist_or_skip
from tests._resume import assert_resume_matches_uninterrupted, load_state

pytestmark = pytest.mark.data

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


def _student() -> Any:
    return resnet8(num_classes=10, in_channels=1, image_size=28)


# API -------------------------------------------------------------------------------------------


def test_distill_writes_outputs_and_metrics(tmp_path: Path) -> None:
    metrics = train(TrainConfig(task="distill", method="ris", **TINY), tmp_path, log=None)
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
    student.load_state_dict(load_state(tmp_path / "student.pt"))  # strict: a plain ResNet-8
    # A fresh student trains in train mode: its BatchNorm layers learned running statistics.
    assert float(student.bn1.running_mean.abs().sum()) > 0
    assert int(student.bn1.num_batches_tracked) > 0
    # The reported accuracy is that of the saved student on the first eval_limit test images.
    test = Subset(fashion_mnist_or_skip("test"), range(TINY["eval_limit"]))
    assert metrics["student_top1"] == evaluate(student, test)


def test_distill_quantized_student(tmp_path: Path) -> None:
    cfg = TrainConfig(task="distill", method="noise", **{**TINY, "w_bits": 4, "a_bits": 4})
    metrics = train(cfg, tmp_path, log=None)
    assert metrics["quant_top1"] == metrics["student_top1"]
    shell = quantize_model(_student(), w_bits=4, a_bits=4)
    shell.load_state_dict(load_state(tmp_path / "student.pt"))


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
    state = load_state(tmp_path / "student.pt")
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
    ckpt: Any = load_state(tmp_path / "checkpoint.pt")["student"]
    assert any(k.endswith("weight_mask") for k in ckpt)  # the checkpoint keeps the masks


def test_prune_structured_shrinks_the_student(tmp_path: Path) -> None:
    cfg = TrainConfig(task="prune", method="gdfq", sparsity=0.5, structured=True, **TINY)
    metrics = train(cfg, tmp_path, log=None)
    before, after = metrics["prune"]["before"], metrics["prune"]["after"]
    assert after["params"] < before["params"]
    assert after["macs"] < before["macs"]
    shell: Any = prune_model(load_pretrained(TEACHER), sparsity=0.5, structured=True)
    shell.load_state_dict(load_state(tmp_path / "student.pt"))  # same (shrunken) shapes
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
    shell.load_state_dict(load_state(tmp_path / "student.pt"))
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
    full, resumed = assert_resume_matches_uninterrupted(cfg, tmp_path, at=2)
    assert resumed.get(task) == full.get(task)


def test_resume_rejects_other_pruning(tmp_path: Path) -> None:
    cfg = TrainConfig(task="prune", method="noise", sparsity=0.5, **{**TINY, "iters": 2})
    train(cfg, tmp_path, log=None)
    for other in ({"sparsity": 0.3}, {"structured": True}):
        changed = TrainConfig(task="prune", method="noise", **{**TINY, "iters": 2, **other})
        with pytest.raises(ValueError, match=next(iter(other))):
            train(changed, tmp_path, resume=True, log=None)


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
    assert "other settings: --structured False there, True here" in capsys.readouterr().err


def _main_exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


def test_student_augmentation_trains_on_views_labelled_by_the_teacher(tmp_path: Path) -> None:
    from risloss.functional import kd_loss
    from risloss.training import Run, TrainJob

    # one step on the iteration's batch, so the view can be set beside the batch
    one_step = dict(student_batch_size=None, replay_size=0, student_steps=1, student_mixup=0.0)
    config = TrainConfig(task="distill", method="gdfq", adversarial_weight=0.0, **one_step, **TINY)
    assert config.student_augmentation == "all"  # the default of distillation
    job = TrainJob(config)
    Run(job, tmp_path, log=None).setup()
    batches: list[Any] = []
    next_batch = job.source.next_batch

    def spy_batch(adversary: Any = None) -> Any:
        batches.append(next_batch(adversary))
        return batches[-1]

    seen: dict[str, Any] = {}
    job.source.next_batch = spy_batch  # type: ignore[method-assign]
    h1 = job.student.register_forward_hook(
        lambda m, args, out: seen.update(student_in=args[0], student_out=out.detach())
    )
    h2 = job.teacher.register_forward_hook(
        lambda m, args, out: seen.update(teacher_in=args[0], teacher_out=out.detach())
    )
    try:
        record = job.step(config.warmup)  # a student step
    finally:
        h1.remove()
        h2.remove()
    images = batches[-1].images
    assert seen["student_in"].shape == images.shape
    assert not torch.equal(seen["student_in"], images)  # a perturbed view, not the batch
    assert torch.equal(seen["teacher_in"], seen["student_in"])  # labelled by the teacher
    expected = kd_loss(seen["student_out"], seen["teacher_out"], config.kd_temperature)
    assert record["s_kd"] == pytest.approx(float(expected), rel=1e-6)


def test_quantize_and_prune_train_on_the_batch_itself() -> None:
    assert TrainConfig().student_augmentation == "none"
    assert TrainConfig(task="prune").student_augmentation == "none"
    assert TrainConfig(task="distill", student_augmentation="none").student_augmentation == "none"
