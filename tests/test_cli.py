"""Parsing the command line into a training configuration, and rejecting bad options.

Nothing here trains or reads a data set: every error must come before any work starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from risloss.cli import _config_from_args, build_parser, main
from risloss.training import RISConfig, TrainConfig

TEACHER = "resnet8_fashion_mnist"


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("command", "args", "match"),
    [
        ("quantize", ["--w-bits", "1"], "--w-bits"),
        ("quantize", ["--method", "foo"], "--method"),
        ("quantize", ["--iters", "0"], "--iters"),
        ("quantize", ["--device", "tpu"], "--device"),
        ("quantize", ["--model", "nope"], "shipped teachers"),
        ("quantize", ["--iters", "3", "--warmup", "5"], "--warmup must be <= --iters"),
        ("quantize", ["--input-pool", "color"], "--input-pool"),
        ("quantize", ["--robustness-weight", "-1"], "--robustness-weight"),
        ("quantize", ["--num-draws", "0"], "--num-draws"),
        (
            "quantize",
            ["--no-input-perturbation", "--no-weight-perturbation"],
            "--robustness-weight 0",
        ),
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
        ("quantize", ["--input-range", "wide"], "--input-range must be auto, none or LOW HIGH"),
        ("quantize", ["--input-range", "0", "x"], "--input-range must be auto, none or LOW"),
        ("quantize", ["--input-range", "0", "1", "2"], "--input-range must be auto, none"),
        ("quantize", ["--input-range", "1", "0"], "--input-range must be 'auto', 'none' or"),
        ("distill", ["--student-steps", "0"], "--student-steps must be an integer in 1..100"),
        ("distill", ["--student-init", "pretrained"], "--student-init"),
        ("quantize", ["--student-init", "teacher"], "--student-init"),
        ("distill", ["--student-steps", "2.5"], "--student-steps"),
        ("prune", ["--replay-size", "-1"], "--replay-size must be an integer in 0.."),
        ("quantize", ["--adversarial-weight", "-1"], "--adversarial-weight must be a finite"),
        ("quantize", ["--adversarial-weight", "nan"], "--adversarial-weight"),
    ],
)
def test_bad_options_fail_before_any_work(
    command: str,
    args: list[str],
    match: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    base = ["--model", TEACHER] if "--model" not in args else []
    assert _exit_code([command, *base, "--out", str(out), *args]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_console_entry_point_reports_a_bad_option(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "risloss", "quantize", "--w-bits", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert "--w-bits" in res.stderr
    assert not out.exists()


def test_objective_options_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["quantize", "--robustness-weight", "2", "--no-weight-perturbation", "--input-pool",
         "noise", "--robustness-mode", "input", "--num-draws", "3", "--prediction-distance",
         "kl", "--diversity", "soft", "--ce-weight", "0.5", "--kd-temperature", "4"]
    )  # fmt: skip
    cfg = _config_from_args(args, "quantize")
    assert cfg.ris == RISConfig(
        robustness_weight=2.0,
        weight_perturbation=False,
        input_pool="noise",
        mode="input",
        num_draws=3,
        prediction_distance="kl",
        diversity="soft",
    )
    assert (cfg.ce_weight, cfg.kd_temperature) == (0.5, 4.0)
    defaults = _config_from_args(build_parser().parse_args(["quantize"]), "quantize")
    assert defaults == TrainConfig()


def test_student_learning_rate_follows_the_command() -> None:
    for task, lr in (("distill", 0.05), ("prune", 1e-3), ("quantize", 1e-3)):
        cfg = _config_from_args(build_parser().parse_args([task]), task)
        assert cfg.lr_student == lr
    args = build_parser().parse_args(["distill", "--lr-student", "0.3"])
    assert _config_from_args(args, "distill").lr_student == 0.3


def test_task_dependent_defaults_follow_the_command() -> None:
    for task in ("distill", "prune", "quantize"):
        cfg = _config_from_args(build_parser().parse_args([task]), task)
        bits = 4 if task == "quantize" else None  # distill and prune: unquantized by default
        expected = TrainConfig(task=task, w_bits=bits, a_bits=bits)
        assert cfg == expected, task  # every other default is the library's
    distill = _config_from_args(build_parser().parse_args(["distill"]), "distill")
    assert (distill.kd_temperature, distill.student_augmentation, distill.warmup) == (
        4.0,
        "all",
        100,
    )
    args = build_parser().parse_args(
        ["distill", "--kd-temperature", "1", "--student-augmentation", "none", "--iters", "60"]
    )
    cfg = _config_from_args(args, "distill")
    assert (cfg.kd_temperature, cfg.student_augmentation, cfg.warmup) == (1.0, "none", 20)


def test_student_schedule_options_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["distill", "--student-steps", "4", "--replay-size", "4096", "--adversarial-weight", "0.5"]
    )
    cfg = _config_from_args(args, "distill")
    assert (cfg.student_steps, cfg.replay_size, cfg.adversarial_weight) == (4, 4096, 0.5)
    args = build_parser().parse_args(["distill", "--student-init", "teacher"])
    assert _config_from_args(args, "distill").student_init == "teacher"
    for task in ("quantize", "prune"):
        args = build_parser().parse_args([task, "--adversarial-weight", "2"])
        assert _config_from_args(args, task).adversarial_weight == 2.0


def test_input_range_reaches_the_config() -> None:
    def parsed(*words: str) -> object:
        args = build_parser().parse_args(["distill", "--input-range", *words])
        return _config_from_args(args, "distill").input_range

    assert parsed("auto") == "auto"
    assert parsed("none") == "none"
    assert parsed("-1", "2.5") == ((-1.0,), (2.5,))
