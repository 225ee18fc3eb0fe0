"""Data-free trainers: quantization, distillation and pruning on synthesized images, and
synthetic calibration sets.

:func:`train` and :func:`synthesize` run a job (:class:`TrainJob`, :class:`SynthesisJob`) on
one run loop (:func:`run_loop`, :class:`Run`), which seeds, checkpoints, handles Ctrl-C, shows
progress and writes ``metrics.json`` for every job alike. Both take the teacher and the data
by name (:class:`TrainConfig`'s ``model``, ``weights`` and ``data``) or as objects
(``model=``, ``test_data=``, ``train_data=``); what the model takes as input is resolved once
into a :class:`risloss.data.InputSpec`. The images come from an :class:`ImageSource`: a
:class:`GeneratorSource` trained on the synthesis objective, :class:`NoiseSource` or
:class:`RealSource`.
"""

from risloss._util import machine_info
from risloss.training._config import METHODS, TASKS, RISConfig, TrainConfig, ris_for
from risloss.training._replay import ReplayPool
from risloss.training._run import Job, Run, TrainingInterrupted, run_loop, synthesis_summary
from risloss.training._sources import (
    Batch,
    GeneratorSource,
    ImageSource,
    NoiseSource,
    RealSource,
)
from risloss.training._synthesize import SYNTHESIS_METHODS, SynthesisJob, synthesize
from risloss.training._trainer import TrainJob, kd_loss, train

__all__ = [
    "METHODS",
    "SYNTHESIS_METHODS",
    "TASKS",
    "Batch",
    "GeneratorSource",
    "ImageSource",
    "Job",
    "NoiseSource",
    "RISConfig",
    "RealSource",
    "ReplayPool",
    "Run",
    "SynthesisJob",
    "TrainConfig",
    "TrainJob",
    "TrainingInterrupted",
    "kd_loss",
    "machine_info",
    "ris_for",
    "run_loop",
    "synthesis_summary",
    "synthesize",
    "train",
]
