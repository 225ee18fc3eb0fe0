"""Data-free trainers: quantization, distillation and pruning on synthesized images, and
synthetic calibration sets."""

from risloss.training._config import METHODS, TASKS, RISConfig, TrainConfig
from risloss.training._synthesize import SYNTHESIS_METHODS, synthesize
from risloss.training._trainer import TrainingInterrupted, kd_loss, train

__all__ = [
    "METHODS",
    "SYNTHESIS_METHODS",
    "TASKS",
    "RISConfig",
    "TrainConfig",
    "TrainingInterrupted",
    "kd_loss",
    "synthesize",
    "train",
]
