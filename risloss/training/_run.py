"""The run loop that :func:`~risloss.training.train` and :func:`~risloss.training.synthesize`
share: seeding, checkpoints, Ctrl-C, progress and the metrics file, around a :class:`Job`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

import torch

from risloss._checkpoint import atomic_save, load_checkpoint
from risloss.distributed import DistributedContext, init_from_env, rank_seed
from risloss.training._config import TrainConfig
from risloss.training._plots import save_loss_plot
from risloss.training._progress import Progress

__all__ = [
    "CHECKPOINT",
    "PERTURBATION_SEED_OFFSET",
    "SYNTHESIS_WINDOW",
    "Job",
    "Run",
    "TrainingInterrupted",
    "run_loop",
    "synthesis_summary",
]

CHECKPOINT = "checkpoint.pt"
"""The checkpoint file a run writes in its output folder."""
PERTURBATION_SEED_OFFSET = 1_000_003
"""The perturbation draws of a run seeded with ``s`` come from seed ``s + 1_000_003``."""
SYNTHESIS_WINDOW = 10
"""The synthesis figures of ``metrics.json`` are means over this many final iterations."""
_SHOWN = ("g_loss", "g_agree", "s_loss")
"""The record entries the progress line shows."""


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once the run's state is safely checkpointed.

    Continue the run with ``train(config, out_dir, resume=True)`` (``--resume`` on the command
    line).

    Args:
        path: the checkpoint file that was written.
        iteration: the number of iterations completed.

    Example:
        >>> from pathlib import Path
        >>> from risloss.training import TrainingInterrupted
        >>> err = TrainingInterrupted(Path("runs/q/checkpoint.pt"), 120)
        >>> err.iteration, str(err)
        (120, 'interrupted at iteration 120; checkpoint saved to runs/q/checkpoint.pt')
    """

    def __init__(self, path: Path, iteration: int) -> None:
        super().__init__(f"interrupted at iteration {iteration}; checkpoint saved to {path}")
        self.path = path
        self.iteration = iteration


@runtime_checkable
class Job(Protocol):
    """What :class:`Run` drives: the work of one run, iteration by iteration.

    :class:`~risloss.training.TrainJob` (behind :func:`~risloss.training.train`) and
    :class:`~risloss.training.SynthesisJob` (behind :func:`~risloss.training.synthesize`) are
    jobs. The run calls :meth:`prepare`, seeds the random state, calls :meth:`build`, then
    :meth:`step` once per iteration and :meth:`outputs` at the end; :meth:`state_dict` and
    :meth:`load_state_dict` carry the job's part of a checkpoint.

    Attributes:
        config: the run's settings (``seed``, ``iters``, ``checkpoint_every``, ``device``; a
            checkpoint resumes only with an equal ``config.to_dict()``).
        kind: what the job is, recorded in the checkpoint (a checkpoint resumes only the same
            kind of job).
        label: the progress line's label.
    """

    config: TrainConfig
    kind: str
    label: str

    def prepare(self, run: Run) -> None:
        """Load and check what the job needs, before the random state is seeded; nothing is
        written yet (every mistake of the inputs is raised here)."""

    def build(self, run: Run) -> None:
        """Build what the run trains, after seeding (:attr:`Run.data_rng`,
        :attr:`Run.perturbation_rng` and the global torch seed are set)."""

    def step(self, it: int) -> dict[str, float]:
        """Iteration ``it`` (from 0); returns its record of named figures."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The job's part of a checkpoint (tensors, numbers, strings, lists and dicts)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the checkpoint ``state`` (what :meth:`state_dict` wrote, with the
        run's own entries beside it)."""

    def outputs(self, run: Run) -> dict[str, Any]:
        """Write the job's files into :attr:`Run.out` (on the main process) and return the
        metrics; called on every process."""
        ...


@contextmanager
def _interruptible(grace: float = 0.0) -> Iterator[Callable[[], bool]]:
    """Turn SIGINT/SIGTERM into a flag checked between iterations (main thread only).

    A second signal stops at once, unless it comes within ``grace`` seconds of the first:
    under torchrun a Ctrl-C reaches each worker twice, from the terminal and from the launcher.
    """
    received: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received and time.monotonic() - received[0] >= grace:
            raise KeyboardInterrupt  # a second signal: stop at once
        if not received:
            received.append(time.monotonic())

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def synthesis_summary(
    history: list[dict[str, float]], window: int = SYNTHESIS_WINDOW
) -> dict[str, float]:
    """Means of the generator's figures over the last ``window`` iterations of a history.

    Args:
        history: per-iteration records (``metrics["history"]``).
        window: how many final iterations to average.

    Returns:
        ``{"g_agree": ..., "g_ce": ..., "g_bns": ..., "g_sim": ..., ...}`` for every ``g_``
        entry present in those iterations (empty for a run without a generator).

    Example:
        >>> from risloss.training import synthesis_summary
        >>> synthesis_summary([{"g_agree": 0.5}, {"g_agree": 1.0}], window=2)
        {'g_agree': 0.75}
    """
    tail = history[-window:]
    keys = [k for k in (tail[-1] if tail else {}) if k.startswith("g_")]
    return {k: sum(r[k] for r in tail if k in r) / sum(1 for r in tail if k in r) for k in keys}


class Run:
    """One run of a :class:`Job` in an output folder.

    The run owns what every job shares: the seeding (``torch.manual_seed(config.seed)``, then
    :attr:`data_rng` from :func:`~risloss.distributed.rank_seed` ``(seed, rank)`` and
    :attr:`perturbation_rng` from ``rank_seed(seed + 1_000_003, rank)``), the checkpoint
    ``out_dir/checkpoint.pt`` (written atomically every ``config.checkpoint_every``
    iterations, at the end and on SIGINT/SIGTERM, with every random state; read back with
    ``weights_only=True``), the signal handling (:class:`TrainingInterrupted` once the
    checkpoint is written), the progress line, the per-iteration :attr:`history` (averaged over
    the processes of a distributed run), ``losses.png`` and ``metrics.json`` (written
    atomically, last). In a distributed run rank 0 writes every file.

    Args:
        job: the work.
        out_dir: output folder (created once the job is built).
        resume: continue from ``out_dir/checkpoint.pt``; its settings must match
            ``job.config``.
        progress: show a progress line (default: only on a terminal).
        log: where one-line messages go (``None``: silent).
        context: where this process stands (default: a single process on
            ``job.config.device``; :func:`run_loop` reads ``torchrun``'s environment).

    Attributes:
        job: as given.
        context: as given, or the single process's.
        out: ``out_dir`` as a :class:`~pathlib.Path`.
        checkpoint: ``out / "checkpoint.pt"``.
        data_rng: the run's random stream of images and labels, seeded by :meth:`setup`.
        perturbation_rng: the run's random stream of perturbations, seeded by :meth:`setup`.
        history: one record per finished iteration.
        start: the first iteration to run (later than 0 after resuming).
        train_seconds: time spent in the iterations of this call.

    Example:
        >>> from risloss.training import Run, TrainConfig, TrainJob
        >>> run = Run(TrainJob(TrainConfig(iters=4)), "runs/q", log=None)
        >>> run.checkpoint.name, run.start
        ('checkpoint.pt', 0)
        >>> metrics = run.execute()  # doctest: +SKIP
    """

    def __init__(
        self,
        job: Job,
        out_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        progress: bool | None = None,
        log: Callable[[str], None] | None = print,
        context: DistributedContext | None = None,
    ) -> None:
        if not isinstance(job, Job):
            raise TypeError(
                f"job must have config, kind, label, prepare, build, step, state_dict, "
                f"load_state_dict and outputs (see risloss.training.Job), got {type(job).__name__}"
            )
        self.job = job
        self.out = Path(out_dir)
        self.checkpoint = self.out / CHECKPOINT
        self.context = context or DistributedContext(device=torch.device(job.config.device))
        self.resume = resume
        self.progress = progress
        main = self.context.is_main()
        self.say: Callable[[str], None] = (log if main else None) or (lambda _msg: None)
        self.history: list[dict[str, float]] = []
        self.start = 0
        self.train_seconds = 0.0
        self.data_rng = torch.Generator()
        self.perturbation_rng = torch.Generator()
        self._ready = False

    def setup(self) -> None:
        """Check the checkpoint (when resuming), prepare, seed and build the job, restore the
        checkpoint and create the output folder; done once, by :meth:`execute` if not before.

        Raises:
            ValueError: ``out_dir`` is a file; a checkpoint that is missing (with
                ``resume``), of another kind of job, made with other settings or by another
                number of processes; whatever the job's :meth:`~Job.prepare` refuses.
        """
        if self._ready:
            return
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out_dir {str(self.out)!r} is a file, not a folder")
        state = self._read_checkpoint() if self.resume else None
        self.job.prepare(self)
        config, rank = self.job.config, self.context.rank
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.data_rng.manual_seed(rank_seed(config.seed, rank))
        self.perturbation_rng.manual_seed(rank_seed(config.seed + PERTURBATION_SEED_OFFSET, rank))
        self.job.build(self)
        if state is not None:
            self._restore(state)
            self.say(f"resumed from {self.checkpoint} at iteration {self.start}")
        if self.context.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        self._ready = True

    def execute(self) -> dict[str, Any]:
        """Set up (if not done), run the remaining iterations and write the outputs.

        Returns:
            The metrics written to ``metrics.json`` (the same on every process).

        Raises:
            TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint (in a
                distributed run every rank stops at the same iteration).
        """
        self.setup()
        ctx, config = self.context, self.job.config
        bar = Progress(
            config.iters,
            start=self.start,
            desc=self.job.label,
            enabled=self.progress if ctx.is_main() else False,
        )
        t0 = time.monotonic()
        with _interruptible(grace=5.0 if ctx.distributed else 0.0) as interrupted:
            for it in range(self.start, config.iters):
                record = self.job.step(it)
                record["iter"] = it + 1
                ctx.average(record, skip=("iter", "lr"))  # distributed: the global batch's
                self.history.append(record)
                done = it + 1
                bar.update(done, {k: v for k, v in record.items() if k in _SHOWN})
                if done % config.checkpoint_every == 0 or done == config.iters:
                    self.save(done)
                if ctx.any(interrupted()) and done < config.iters:  # all ranks stop together
                    self.save(done)
                    bar.close()
                    ctx.barrier()  # the checkpoint is on disk before any rank reports it
                    raise TrainingInterrupted(self.checkpoint, done)
        bar.close()
        self.train_seconds = time.monotonic() - t0
        metrics = self.job.outputs(self)
        if ctx.is_main():
            save_loss_plot(self.history, self.out / "losses.png")
            tmp = self.out / "metrics.json.tmp"
            tmp.write_text(json.dumps(metrics, indent=1) + "\n")
            os.replace(tmp, self.out / "metrics.json")
        ctx.barrier()  # the outputs are written before any rank returns
        return metrics

    def _rng_states(self) -> dict[str, torch.Tensor]:
        return {
            "data_rng": self.data_rng.get_state(),
            "perturbation_rng": self.perturbation_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, iteration: int) -> None:
        """Write the checkpoint atomically after ``iteration`` iterations (rank 0, with every
        rank's random state; every rank must call it)."""
        ctx = self.context
        every = ctx.all_objects(self._rng_states())  # a collective: all ranks call it
        if not ctx.is_main():
            return
        extra: dict[str, Any] = {}
        if ctx.distributed:
            extra = {"world_size": ctx.world_size, "rank_rng": every}
        state = {
            "kind": self.job.kind,
            "config": self.job.config.to_dict(),
            "iteration": iteration,
            **self.job.state_dict(),
            **self._rng_states(),
            "history": self.history,
            **extra,
        }
        atomic_save(state, self.checkpoint)

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.job.load_state_dict(state)
            ctx = self.context
            rng_state = state["rank_rng"][ctx.rank] if ctx.distributed else state
            self.data_rng.set_state(rng_state["data_rng"])
            self.perturbation_rng.set_state(rng_state["perturbation_rng"])
            torch.set_rng_state(rng_state["torch_rng"])
            self.history = state["history"]
            self.start = int(state["iteration"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            missing = f"it has no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else None
            raise ValueError(
                f"resume: {self.checkpoint} does not hold what a {self.job.kind} run saves ("
                f"{missing or type(exc).__name__ + ': ' + str(exc).splitlines()[0]}); it was "
                "written by another version or another kind of run: start over with "
                "--overwrite"
            ) from exc

    def _read_checkpoint(self) -> dict[str, Any]:
        """Read and check the checkpoint (rank 0 reads it and sends it to the other ranks)."""
        ctx, path = self.context, self.checkpoint
        state: Any = None
        error = None
        if ctx.is_main():
            try:
                state = _checked_checkpoint(path, self.job)
            except ValueError as exc:
                if not ctx.distributed:
                    raise
                state, error = None, str(exc)
        state, error = ctx.from_main((state, error))
        if error is not None:
            raise ValueError(error)
        saved_world = int(state.get("world_size", 1))
        if saved_world != ctx.world_size:
            raise ValueError(
                f"resume: the checkpoint was written by a run on {saved_world} process(es); "
                f"resume it with the same number (this run has {ctx.world_size})"
            )
        result: dict[str, Any] = state
        return result


def _checked_checkpoint(path: Path, job: Job) -> dict[str, Any]:
    """The checkpoint at ``path``, if it was written by the same kind of job and settings."""
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path}")
    state = load_checkpoint(
        path, expected="a checkpoint of a risloss run", keys=("config", "iteration")
    )
    kind = state.get("kind") or ("train" if "student" in state else "synthesize")
    if kind != job.kind:
        raise ValueError(f"resume: {path} was written by {kind}, not by {job.kind}")
    saved, ours = state["config"], job.config.to_dict()
    if saved != ours:
        a, b = _flat(saved), _flat(ours)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        shown = ", ".join(f"{k} {a.get(k)!r} there, {b.get(k)!r} here" for k in diff[:4])
        more = f", and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise ValueError(
            f"resume: the checkpoint was made with other settings: {shown}{more}; resume with "
            "the same settings"
        )
    result: dict[str, Any] = state
    return result


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration's entries with those of a nested one (``ris``) at the top level."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def run_loop(
    job: Job,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    context: DistributedContext | None = None,
) -> dict[str, Any]:
    """Run ``job`` to its end in ``out_dir`` (see :class:`Run`) and return its metrics.

    Without ``context``, the process's place comes from ``torchrun``'s environment
    (:func:`~risloss.distributed.init_from_env` on ``job.config.device``; a process group it
    creates is closed at the end).

    Args:
        job: the work, e.g. a :class:`~risloss.training.TrainJob`.
        out_dir: output folder (created).
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: show a progress line (default: only on a terminal).
        log: where one-line messages go (``None``: silent).
        context: where this process stands (default: from the environment).

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint.
        ValueError: see :meth:`Run.setup`.

    Example:
        >>> from risloss.training import TrainConfig, TrainJob, run_loop
        >>> job = TrainJob(TrainConfig(task="prune", w_bits=None, a_bits=None))
        >>> metrics = run_loop(job, "runs/prune", log=None)  # doctest: +SKIP
    """
    ctx = context or init_from_env(job.config.device)
    try:
        run = Run(job, out_dir, resume=resume, progress=progress, log=log, context=ctx)
        return run.execute()
    finally:
        if context is None:
            ctx.close()
