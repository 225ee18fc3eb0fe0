"""Validation of the training configuration: no data, no training run."""

from __future__ import annotations

from typing import Any

import pytest

from risloss.training import RISConfig, TrainConfig


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "magic"}, "method must be one of"),
        ({"w_bits": 1}, "w_bits must be an integer in 2..16"),
        ({"iters": 0}, "iters must be an integer >= 1"),
        ({"warmup": 10, "iters": 5}, "warmup must be <= iters"),
        ({"batch_size": 1}, "batch_size"),
        ({"device": "tpu"}, "device must be"),
        ({"model": "pkg.mod:fn"}, "weights"),
        ({"task": "shrink"}, "task must be one of"),
        ({"student_steps": 0}, "student_steps must be an integer in 1..100"),
        ({"student_init": "imagenet"}, "student_init must be one of"),
        ({"student_init": "teacher"}, "student_init='teacher' applies to task='distill' only"),
        ({"replay_size": -5}, "replay_size must be an integer in 0..10000000"),
        ({"adversarial_weight": -0.1}, r"adversarial_weight must be a finite number in \[0, "),
        ({"task": "prune", "sparsity": 1.0}, r"sparsity must be a finite number in \[0, 1\)"),
        ({"task": "prune", "sparsity": -0.1}, r"sparsity must be a finite number in \[0, 1\)"),
        ({"task": "distill", "student": "vgg"}, "student must be one of"),
        ({"task": "distill", "w_bits": 4, "a_bits": None}, "w_bits and a_bits"),
        ({"task": "prune", "w_bits": None, "a_bits": 3}, "w_bits and a_bits"),
        (
            {"student_augmentation": "mixup"},
            r"student_augmentation must be one of \('none', 'all', 'noise', 'geometric', "
            r"'photometric'\), got 'mixup'",
        ),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_ris_config() -> None:
    with pytest.raises(ValueError, match="cannot both be False"):
        RISConfig(input_perturbation=False, weight_perturbation=False)
    with pytest.raises(ValueError, match="diversity must be one of"):
        RISConfig(diversity="many")


def test_student_learning_rate_depends_on_the_task() -> None:
    assert TrainConfig(task="distill").lr_student == 0.1  # a student trained from scratch
    assert TrainConfig(task="quantize").lr_student == TrainConfig(task="prune").lr_student == 1e-3
    assert TrainConfig(task="distill", lr_student=0.2).lr_student == 0.2


def test_warmup_is_a_third_of_the_iterations_unless_given() -> None:
    assert TrainConfig().warmup == 100 and TrainConfig().iters == 300
    assert TrainConfig(iters=30).warmup == 10  # a shorter run keeps a valid warm-up
    assert TrainConfig(iters=30, warmup=0).warmup == 0
    config = TrainConfig(iters=90)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_distillation_defaults_soften_the_targets_and_augment_the_batch() -> None:
    distill, quantize = TrainConfig(task="distill"), TrainConfig()
    assert (distill.kd_temperature, distill.student_augmentation) == (4.0, "all")
    assert (quantize.kd_temperature, quantize.student_augmentation) == (1.0, "none")
    assert TrainConfig(task="distill", kd_temperature=1.0).kd_temperature == 1.0
