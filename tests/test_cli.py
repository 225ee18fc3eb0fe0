"""Parsing the command line into a training configuration, and rejecting bad options.

Nothing here trains or reads a data set: every error must come before any work starts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from risloss.cli import main
from risloss.training import TrainConfig, ris_for
from tests._cli import config_of

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


def test_objective_options_reach_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = config_of(
        ["quantize", "--robustness-weight", "2", "--no-weight-perturbation", "--input-pool",
         "noise", "--robustness-mode", "input", "--num-draws", "3", "--prediction-distance",
         "kl", "--diversity", "soft", "--ce-weight", "0.5", "--kd-temperature", "4"],
        monkeypatch, tmp_path,
    )  # fmt: skip
    assert cfg.ris == attrs.evolve(
        ris_for("quantize"),
        robustness_weight=2.0,
        weight_perturbation=False,
        input_pool="noise",
        mode="input",
        num_draws=3,
        prediction_distance="kl",
        diversity="soft",
    )
    assert (cfg.ce_weight, cfg.kd_temperature) == (0.5, 4.0)
    assert config_of(["quantize"], monkeypatch, tmp_path) == TrainConfig()


def test_task_dependent_defaults_follow_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for task in ("distill", "prune", "quantize"):
        cfg = config_of([task], monkeypatch, tmp_path)
        bits = 4 if task == "quantize" else None  # distill and prune: unquantized by default
        assert cfg == TrainConfig(task=task, w_bits=bits, a_bits=bits), task
    distill = config_of(["distill"], monkeypatch, tmp_path)
    assert (distill.kd_temperature, distill.student_augmentation, distill.warmup) == (
        4.0,
        "all",
        300,  # a fifth of distillation's 1,500 iterations
    )
    assert distill.lr_student == 0.1
    args = ["distill", "--kd-temperature", "1", "--student-augmentation", "none", "--iters", "60"]
    cfg = config_of(args, monkeypatch, tmp_path)
    assert (cfg.kd_temperature, cfg.student_augmentation, cfg.warmup) == (1.0, "none", 12)
    assert config_of(["distill", "--lr-student", "0.3"], monkeypatch, tmp_path).lr_student == 0.3


# What the command line built before its options were generated from the configuration's
# fields, written out: the same arguments must build the same configuration, so that runs stay
# identical and checkpoints resume.
QUANTIZE = {
    "task": "quantize", "method": "ris", "model": "resnet20_fashion_mnist", "weights": None,
    "data": "fashion-mnist", "student": "resnet8", "student_init": "random", "w_bits": 4,
    "a_bits": 4, "first_last_bits": None, "sparsity": 0.5, "structured": False, "iters": 300,
    "warmup": 100, "batch_size": 32, "seed": 0, "device": "cpu", "lr_generator": 0.001,
    "lr_student": 0.001, "weight_decay": 0.0001, "kd_temperature": 1.0, "kd_weight": 1.0,
    "ce_weight": 0.0, "checkpoint_every": 100, "eval_every": 0, "eval_limit": None,
    "ris": {
        "bns_weight": 10.0, "bns_momentum": 0.0, "robustness_weight": 1.0,
        "diversity_weight": 0.1,
        "input_perturbation": True, "weight_perturbation": True, "weight_noise_eps": 0.05,
        "weight_noise_mode": "relative", "weight_noise_bits": 4, "input_noise_std": 0.1,
        "input_pool": "all", "mode": "random", "num_draws": 1, "feature_distance": "cosine",
        "prediction_distance": "kl", "threshold": 0.0, "diversity": "soft",
        "correlation_pairs": "all", "soft_label_classes": 2, "feature_diversity_weight": 10.0,
    },
    "global_batch_statistics": True, "generator_conditioning": "concat",
    "generator_output_lr_scale": 10.0, "generator_output_bound": "clamp", "input_mean": None,
    "input_std": None,
    "fit_input_statistics": "auto", "input_range": "none", "student_augmentation": "none",
    "student_mixup": 0.0, "student_cutmix": 0.0, "adversarial_weight": 0.0, "student_steps": 4,
    "student_batch_size": None, "replay_size": 4096, "replay_memory_mb": 64.0,
    "image_size": "default", "normalize": "default",
}  # fmt: skip
DISTILL = {
    **QUANTIZE, "task": "distill", "w_bits": None, "a_bits": None, "lr_student": 0.1,
    "kd_temperature": 4.0, "student_augmentation": "all", "iters": 1500, "warmup": 300,
    # the pool regime and its generator objective (benchmarks/distill.py)
    "student_steps": 4, "student_batch_size": 128, "replay_size": 20000, "student_mixup": 0.5,
    "adversarial_weight": 1.0, "input_range": "auto",
}  # fmt: skip
PRUNE = {
    **QUANTIZE, "task": "prune", "w_bits": None, "a_bits": None, "student_steps": 1,
    "replay_size": 0,
}  # fmt: skip
RIS = QUANTIZE["ris"]
assert isinstance(RIS, dict)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["quantize"], QUANTIZE),
        (["distill"], DISTILL),
        (["prune"], PRUNE),
        (["synthesize"], {**QUANTIZE, "warmup": 0}),
        (
            ["quantize", "--w-bits", "3", "--a-bits", "5", "--first-last-bits", "8", "--iters",
             "60", "--batch-size", "16", "--seed", "7", "--lr-generator", "0.01", "--lr-student",
             "0.02", "--checkpoint-every", "5", "--eval-every", "10", "--eval-limit", "100",
             "--local-batch-statistics"],
            {**QUANTIZE, "w_bits": 3, "a_bits": 5, "first_last_bits": 8, "iters": 60,
             "warmup": 20, "batch_size": 16, "seed": 7, "lr_generator": 0.01, "lr_student": 0.02,
             "checkpoint_every": 5, "eval_every": 10, "eval_limit": 100,
             "global_batch_statistics": False},
        ),
        (
            ["distill", "--student", "resnet20", "--student-init", "teacher", "--w-bits", "4",
             "--a-bits", "4", "--kd-temperature", "2", "--kd-weight", "0.5", "--ce-weight",
             "0.25", "--student-augmentation", "noise", "--student-steps", "3", "--replay-size",
             "128", "--replay-memory-mb", "8.5", "--adversarial-weight", "0.5", "--warmup",
             "7"],
            {**DISTILL, "student": "resnet20", "student_init": "teacher", "w_bits": 4,
             "a_bits": 4, "warmup": 7, "kd_temperature": 2.0, "kd_weight": 0.5,
             "ce_weight": 0.25, "student_augmentation": "noise", "adversarial_weight": 0.5,
             "student_steps": 3, "replay_size": 128, "replay_memory_mb": 8.5},
        ),
        (
            ["prune", "--sparsity", "0.8", "--structured", "--method", "gdfq",
             "--generator-conditioning", "multiply", "--input-mean", "0.5", "--input-std",
             "0.25", "--input-range", "-1", "2.5"],
            {**PRUNE, "method": "gdfq", "sparsity": 0.8, "structured": True,
             "generator_conditioning": "multiply", "input_mean": (0.5,), "input_std": (0.25,),
             "input_range": ((-1.0,), (2.5,))},
        ),
        (
            ["quantize", "--robustness-weight", "2", "--no-weight-perturbation", "--input-pool",
             "noise", "--robustness-mode", "input", "--num-draws", "3", "--prediction-distance",
             "js", "--diversity", "both", "--feature-diversity-weight", "0.5", "--bns-weight",
             "0.2", "--diversity-weight", "0.3", "--weight-noise-mode", "quant",
             "--weight-noise-bits", "3", "--weight-noise-eps", "0.1", "--input-noise-std", "0.2",
             "--feature-distance", "mse", "--threshold", "0.05", "--correlation-pairs", "same",
             "--soft-label-classes", "3", "--bns-momentum", "0.9"],
            {**QUANTIZE, "ris": {
                "bns_weight": 0.2, "bns_momentum": 0.9, "robustness_weight": 2.0,
                "diversity_weight": 0.3,
                "input_perturbation": True, "weight_perturbation": False,
                "weight_noise_eps": 0.1, "weight_noise_mode": "quant", "weight_noise_bits": 3,
                "input_noise_std": 0.2, "input_pool": "noise", "mode": "input", "num_draws": 3,
                "feature_distance": "mse", "prediction_distance": "js", "threshold": 0.05,
                "diversity": "both", "correlation_pairs": "same", "soft_label_classes": 3,
                "feature_diversity_weight": 0.5,
            }},
        ),
        (
            ["synthesize", "--method", "gdfq", "--fit-input-statistics", "--iters", "6",
             "--batch-size", "8", "--input-range", "auto", "--image-size", "none",
             "--no-normalize", "--data", "cifar10", "--device", "cpu", "--num-images", "20"],
            {**QUANTIZE, "method": "gdfq", "data": "cifar10", "iters": 6, "warmup": 0,
             "batch_size": 8, "fit_input_statistics": True, "input_range": "auto",
             "image_size": None, "normalize": None},
        ),
        (
            ["quantize", "--image-size", "32", "--normalize", "0.5,0.4,0.3", "0.2,0.2,0.2",
             "--model", "pkg.mod:make", "--weights", "w.pt", "--data", "imagefolder:/x"],
            {**QUANTIZE, "model": "pkg.mod:make", "weights": "w.pt", "data": "imagefolder:/x",
             "image_size": 32, "normalize": ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))},
        ),
        (
            ["distill", "--student-cutmix", "0.7", "--student-mixup", "0"],
            {**DISTILL, "student_cutmix": 0.7, "student_mixup": 0.0},
        ),
        (
            ["distill", "--no-input-perturbation", "--robustness-mode", "weight"],
            {**DISTILL, "ris": {**DISTILL["ris"], "input_perturbation": False, "mode": "weight"}},  # type: ignore[dict-item]
        ),
    ],
)  # fmt: skip
def test_command_line_builds_the_same_configuration_as_before(
    args: list[str], expected: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert config_of(args, monkeypatch, tmp_path).to_dict() == expected


def test_input_range_reaches_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def parsed(*words: str) -> object:
        return config_of(["distill", "--input-range", *words], monkeypatch, tmp_path).input_range

    assert parsed("auto") == "auto"
    assert parsed("none") == "none"
    assert parsed("-1", "2.5") == ((-1.0,), (2.5,))


def test_options_follow_the_command() -> None:
    """Each command offers the settings it uses; the student's are not synthesize's."""
    from risloss.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    def options(command: str) -> set[str]:
        return {o for a in sub.choices[command]._actions for o in a.option_strings}

    assert {"--student", "--student-init"} <= options("distill")
    assert {"--sparsity", "--structured"} <= options("prune")
    assert not {"--student", "--sparsity", "--structured"} & options("quantize")
    student = {"--w-bits", "--warmup", "--lr-student", "--kd-temperature", "--replay-size",
               "--local-batch-statistics", "--eval-limit"}  # fmt: skip
    assert student <= options("quantize") and not student & options("synthesize")
    assert "--num-images" in options("synthesize")
    assert not {"--task", "--ris", "--weight-decay"} & options("quantize")
    method = next(a for a in sub.choices["synthesize"]._actions if a.dest == "config.method")
    assert tuple(method.choices) == ("ris", "gdfq")
