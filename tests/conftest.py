"""Shared pytest configuration.

Hypothesis profiles: ``risloss`` (the default: no deadline, 25 examples per property, fast
enough for every run) and ``ci`` (more examples, derandomized so a failure reproduces). Pick one
with the ``HYPOTHESIS_PROFILE`` environment variable.

The tests use tiny tensors, for which intra-op threads only add synchronization overhead (and
stall badly when the machine is busy), so torch runs single-threaded here.
"""

from __future__ import annotations

import os

import torch
from hypothesis import settings

settings.register_profile("risloss", deadline=None, max_examples=25)
settings.register_profile("ci", deadline=None, max_examples=100, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "risloss"))

torch.set_num_threads(1)
