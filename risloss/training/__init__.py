"""Data-free trainers: quantization, distillation and pruning on synthesized images."""

from risloss.training._config import METHODS, TASKS, RISConfig, TrainConfig
from risloss.training._trainer import TrainingInterrupted, kd_loss, train

__all__ = [
    "METHODS",
    "TASKS",
    "RISConfig",
    "TrainConfig",
    "TrainingInterrupted",
    "kd_loss",
    "train",
]
