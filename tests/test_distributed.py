"""Data-parallel runs: collectives with gradients, global BatchNorm, a generator step, torchrun.

The multi-process tests start 2 CPU processes on the ``gloo`` backend, on the loopback address
only, and compare what they compute with one process holding the concatenation of their
batches (the global batch): values and gradients, within float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from risloss.distributed import (
    DistributedContext,
    GlobalBatchNorm,
    all_gather_differentiable,
    all_reduce_moments,
    convert_batchnorm,
    init_from_env,
    is_distributed,
    local_batch_statistics,
    rank_seed,
)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this build of torch has no torch.distributed with the gloo backend",
)

WORLD = 2
TIMEOUT = 900  # seconds for one multi-process run (generous: CI machines can be busy)
ROOT = Path(__file__).resolve().parent.parent
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_env() -> dict[str, str]:
    """Keep gloo on the loopback interface and every process single-threaded."""
    env = {"OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _entry(rank: int, fn: Callable[..., None], port: int, args: tuple[Any, ...]) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        **_loopback_env(),
    )
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    try:
        fn(ctx, *args)
    finally:
        ctx.close()


def _spawn(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(ctx, *args)`` in ``WORLD`` fresh processes; fail after ``TIMEOUT`` seconds."""
    procs = mp.start_processes(
        _entry,
        args=(fn, _free_port(), args),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        while not procs.join(timeout=2):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD}-process run did not finish in {TIMEOUT} s")
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()


# Single process: the helpers are the identity -------------------------------------------------


def test_single_process_helpers_are_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    ctx = init_from_env("cpu")
    assert ctx == DistributedContext()
    assert not ctx.distributed and ctx.is_main() and not is_distributed()
    x = torch.randn(3, 2)
    assert all_gather_differentiable(x) is x
    m, v = [torch.randn(4)], [torch.rand(4)]
    means, variances, total = all_reduce_moments(m, v, 5)
    assert means[0] is m[0] and variances[0] is v[0] and total == 5.0
    ctx.barrier()
    ctx.close()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: no process group
    assert init_from_env("cpu").backend is None
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("env", "device", "match"),
    [
        ({"WORLD_SIZE": "two"}, "cpu", "WORLD_SIZE must be an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "cpu", r"RANK must be in \[0, WORLD_SIZE=2\)"),
        ({"WORLD_SIZE": "2"}, "cpu", "RANK must be in"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "cuda:0", "give device='cuda'"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "mps", "needs device 'cpu' .gloo. or 'cuda'"),
    ],
)
def test_init_from_env_rejects_bad_launches(
    env: dict[str, str], device: str, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        init_from_env(device)
    assert not dist.is_initialized()


def test_rank_seed() -> None:
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(s, r) for s in range(3) for r in range(4)}
    assert len(seeds) == 12
    with pytest.raises(ValueError, match="seed and rank must be >= 0"):
        rank_seed(0, -1)


def test_all_reduce_moments_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="same length"):
        all_reduce_moments([torch.zeros(2)], [], 3)
    with pytest.raises(ValueError, match="same shape"):
        all_reduce_moments([torch.zeros(2)], [torch.zeros(3)], 3)
    with pytest.raises(ValueError, match="count must be > 0"):
        all_reduce_moments([torch.zeros(2)], [torch.zeros(2)], 0)


def test_global_batchnorm_is_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3, momentum=None)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    converted = convert_batchnorm(nn.Sequential(nn.Identity(), _copy_bn(reference)))
    layer = converted[1]
    assert isinstance(layer, GlobalBatchNorm)
    assert list(layer.state_dict()) == list(reference.state_dict())
    for _ in range(2):
        x = torch.randn(4, 3, 5, 5, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        y, y_ref = converted(x), reference(x_ref)
        torch.testing.assert_close(y, y_ref)
        (y * y_ref.detach()).sum().backward()
        (y_ref * y_ref.detach()).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.running_var, reference.running_var)
    assert int(layer.num_batches_tracked) == 2
    converted.eval()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(converted(x), reference.eval()(x))


def _copy_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    copy = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum)
    copy.load_state_dict(bn.state_dict())
    return copy


def test_convert_batchnorm_shares_tensors_and_local_statistics_restores() -> None:
    bn = nn.BatchNorm1d(4)
    weight = bn.weight
    new = convert_batchnorm(bn)
    assert isinstance(new, GlobalBatchNorm) and new.weight is weight
    net = nn.Sequential(new)
    with pytest.raises(RuntimeError, match="boom"), local_batch_statistics(net):
        assert not new.synchronize
        raise RuntimeError("boom")
    assert new.synchronize


def test_train_config_validates_global_batch_statistics() -> None:
    from risloss.training import TrainConfig

    assert TrainConfig().global_batch_statistics is True
    with pytest.raises(ValueError, match="global_batch_statistics must be True or False"):
        TrainConfig(global_batch_statistics="yes")  # type: ignore[arg-type]


# Collectives in 2 processes ---------------------------------------------------------------------

ROWS = (3, 5)  # per-rank batch sizes (BatchNorm and moments accept unequal batches)
C = 4


def _rank_inputs(rank: int) -> torch.Tensor:
    return torch.randn(ROWS[rank], C, 3, 3, generator=torch.Generator().manual_seed(10 + rank))


def _rank_weights(rank: int) -> torch.Tensor:
    return torch.randn(ROWS[rank], C, 3, 3, generator=torch.Generator().manual_seed(20 + rank))


def _reference_bn() -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(C, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, C))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, C))
    return bn


def _collectives_worker(ctx: DistributedContext, out: Path) -> None:
    rank = ctx.rank
    assert ctx.distributed and ctx.backend == "gloo" and is_distributed()
    assert ctx.is_main() == (rank == 0)
    result: dict[str, Any] = {}
    # A differentiable all-gather of equal-shape tensors.
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = all_gather_differentiable(x)
    weights = torch.arange(12.0).reshape(4, 3)
    (gathered * weights).sum().backward()
    result["gathered"], result["gather_grad"] = gathered.detach(), x.grad
    # Moments of unequal batches.
    inputs = _rank_inputs(rank)
    var, mean = torch.var_mean(inputs, dim=(0, 2, 3), correction=0)
    means, variances, total = all_reduce_moments([mean, mean[:2]], [var, var[:2]], ROWS[rank])
    result["means"], result["variances"], result["total"] = means, variances, total
    # GlobalBatchNorm: forward, backward across ranks, running statistics.
    bn = convert_batchnorm(_reference_bn())
    x = inputs.clone().requires_grad_(True)
    y = bn(x)
    (y * _rank_weights(rank)).sum().backward()
    result["bn_out"], result["bn_grad"] = y.detach(), x.grad
    result["bn_weight_grad"], result["bn_bias_grad"] = bn.weight.grad, bn.bias.grad
    result["running"] = (bn.running_mean.clone(), bn.running_var.clone())
    torch.save(result, out / f"rank{rank}.pt")


@pytest.mark.slow
def test_collectives_match_one_process_on_the_global_batch(tmp_path: Path) -> None:
    _spawn(_collectives_worker, tmp_path)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # all_gather: rank r's rows at r*B; the backward sums the gradients of every rank's loss.
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    weights = torch.arange(12.0).reshape(4, 3)
    for r, res in enumerate(results):
        torch.testing.assert_close(res["gathered"], expected)
        torch.testing.assert_close(res["gather_grad"], WORLD * weights[2 * r : 2 * r + 2])
    # Moments of the concatenated batch.
    everything = torch.cat([_rank_inputs(r) for r in range(WORLD)])
    var, mean = torch.var_mean(everything, dim=(0, 2, 3), correction=0)
    for res in results:
        torch.testing.assert_close(res["means"][0], mean)
        torch.testing.assert_close(res["variances"][0], var)
        torch.testing.assert_close(res["means"][1], mean[:2])
        torch.testing.assert_close(res["variances"][1], var[:2])
        assert res["total"] == sum(ROWS)
    # BatchNorm on the concatenated batch, with the sum of the ranks' losses.
    bn = _reference_bn()
    x = everything.clone().requires_grad_(True)
    y = bn(x)
    (y * torch.cat([_rank_weights(r) for r in range(WORLD)])).sum().backward()
    assert x.grad is not None and bn.weight.grad is not None and bn.bias.grad is not None
    starts = [0, ROWS[0]]
    for r, res in enumerate(results):
        rows = slice(starts[r], starts[r] + ROWS[r])
        torch.testing.assert_close(res["bn_out"], y.detach()[rows])
        torch.testing.assert_close(res["bn_grad"], x.grad[rows])
        torch.testing.assert_close(res["running"][0], bn.running_mean)
        torch.testing.assert_close(res["running"][1], bn.running_var)
    # Each rank holds the parameter gradient through its own rows; their sum is the whole.
    torch.testing.assert_close(sum(res["bn_weight_grad"] for res in results), bn.weight.grad)
    torch.testing.assert_close(sum(res["bn_bias_grad"] for res in results), bn.bias.grad)


# One generator step in 2 processes ---------------------------------------------------------------

B = 4  # per-rank batch
LABELS = (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 4, 5]))  # same-label pairs across ranks
TEACHER = "resnet8_fashion_mnist"


def _ris_config() -> Any:
    from risloss.training import RISConfig

    # Every term weighs in; "same" pairs need the labels of the other rank too.
    # The feature-diversity term needs the penultimate features of the other rank too.
    return RISConfig(
        diversity="penalty",
        diversity_weight=1.0,
        correlation_pairs="same",
        bns_weight=0.1,
        feature_diversity_weight=0.5,
    )


def _noise(rank: int) -> torch.Tensor:
    return torch.randn(B, 100, generator=torch.Generator().manual_seed(30 + rank))


def _perturbation_seed(rank: int) -> int:
    return 40 + rank


def _generator_step_worker(ctx: DistributedContext, out: Path) -> None:
    from risloss.models import load_pretrained
    from risloss.training import GeneratorSource

    rank = ctx.rank
    torch.set_default_dtype(torch.float64)  # rounding far below any real discrepancy
    teacher = load_pretrained(TEACHER).eval().requires_grad_(False)
    torch.manual_seed(0)  # the generator's initial weights, as in the reference
    source = GeneratorSource(
        teacher,
        method="ris",
        ris=_ris_config(),
        num_classes=10,
        shape=(1, 28, 28),
        batch_size=B,
        lr=1e-3,
        rng=torch.Generator().manual_seed(rank),
        perturbation_rng=torch.Generator().manual_seed(_perturbation_seed(rank)),
        device=torch.device("cpu"),
        context=ctx,
        global_batch_statistics=True,
    )
    source.generator.train()
    x = source._trainable(_noise(rank), LABELS[rank])  # through DistributedDataParallel
    result = source.objective(x, LABELS[rank])
    parts = {
        "g_ce": result.ce,
        "g_bns": result.bns,
        "g_rob": result.robustness,
        "g_div": result.diversity,
        "g_loss": result.loss,
    }
    result.loss.backward()  # DistributedDataParallel averages the gradients over ranks
    grads = {n: p.grad.clone() for n, p in source.generator.named_parameters()}  # type: ignore[union-attr]
    torch.save(
        {"x": x.detach(), "parts": {k: v.detach() for k, v in parts.items()}, "grads": grads},
        out / f"rank{rank}.pt",
    )


def _reference_step() -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The same step written plainly in one process, on the concatenated batch."""
    from risloss.functional import bn_statistics_loss, label_correlation_penalty
    from risloss.hooks import capture_bn_statistics, capture_features
    from risloss.losses import RobustnessLoss
    from risloss.models import Generator, load_pretrained
    from risloss.objective import class_similarity
    from risloss.perturb import GaussianWeightNoise, default_input_perturbation

    ris = _ris_config()
    teacher = load_pretrained(TEACHER).eval().requires_grad_(False)
    torch.manual_seed(0)
    generator = Generator(num_classes=10, image_size=28, channels=1).train()
    z = torch.cat([_noise(r) for r in range(WORLD)])
    labels = torch.cat(LABELS)
    x = generator(z, labels)
    with capture_bn_statistics(teacher) as bn, capture_features(teacher, "penultimate") as feats:
        logits = teacher(x)
    stats = bn.statistics()
    fdiv = class_similarity(next(iter(feats.values())), labels)
    assert fdiv is not None
    ce = F.cross_entropy(logits, labels)
    bns = bn_statistics_loss(
        stats.batch_means, stats.batch_vars, stats.running_means, stats.running_vars
    )
    # Each rank perturbs its own rows with its own draws; the mean over the global batch is
    # the mean of the per-rank means (equal batch sizes).
    robs = []
    for r in range(WORLD):
        rob = RobustnessLoss(
            teacher,
            input_perturbation=default_input_perturbation(noise_std=ris.input_noise_std),
            weight_perturbation=GaussianWeightNoise(
                eps=ris.weight_noise_eps, mode=ris.weight_noise_mode
            ),
            mode=ris.mode,
            num_draws=ris.num_draws,
            feature_distance=ris.feature_distance,
            prediction_distance=ris.prediction_distance,
            threshold=ris.threshold,
            generator=torch.Generator().manual_seed(_perturbation_seed(r)),
        )
        robs.append(rob(x[r * B : (r + 1) * B]))
    rob_mean = torch.stack(robs).mean()
    div = label_correlation_penalty(logits, labels, pairs="same")
    loss = ce + ris.bns_weight * bns + ris.robustness_weight * rob_mean + 1.0 * div + 0.5 * fdiv
    loss.backward()
    grads = {n: p.grad for n, p in generator.named_parameters() if p.grad is not None}
    parts = {"g_ce": ce, "g_bns": bns, "g_rob": rob_mean, "g_div": div, "g_loss": loss}
    return x.detach(), {k: v.detach() for k, v in parts.items()}, grads


@pytest.mark.slow
def test_generator_step_matches_one_process_on_the_global_batch(tmp_path: Path) -> None:
    """Loss values and DDP-averaged gradients equal one process's on the concatenated batch.

    Both sides run in float64, so that a tolerance far below any modelling error (a missing
    factor K, a rank's own batch used where the global one belongs) stays above rounding.
    """
    _spawn(_generator_step_worker, tmp_path)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x, parts, grads = _reference_step()
    finally:
        torch.set_default_dtype(default)
    assert x.dtype == torch.float64
    tol = {"rtol": 1e-7, "atol": 1e-10}
    for r, res in enumerate(results):  # images of the generator with global BatchNorm
        torch.testing.assert_close(res["x"], x[r * B : (r + 1) * B], **tol)
    for key in ("g_bns", "g_div"):  # global terms: the same value on every rank
        for res in results:
            torch.testing.assert_close(res["parts"][key], parts[key], **tol)
    for key in ("g_ce", "g_rob", "g_loss"):  # local means: their average is the global mean
        mean = torch.stack([res["parts"][key] for res in results]).mean()
        torch.testing.assert_close(mean, parts[key], **tol)
    assert parts["g_div"] > 0 and parts["g_rob"] > 0
    assert set(results[0]["grads"]) == set(grads)
    for name, grad in grads.items():
        assert grad.abs().max() > 0, name
        for res in results:  # identical on every rank after DDP, equal to the reference
            torch.testing.assert_close(res["grads"][name], grad, **tol, msg=name)


# The trainer under torchrun, and an interrupted run resumed ------------------------------------

CLI_ARGS = [
    "quantize",
    "--model",
    TEACHER,
    "--iters",
    "4",
    "--warmup",
    "2",
    "--batch-size",
    "8",
    "--eval-limit",
    "64",
    "--quiet",
]


def _cli_config() -> Any:
    """The configuration of ``risloss quantize`` with ``CLI_ARGS``."""
    from risloss.training import TrainConfig

    return TrainConfig(model=TEACHER, iters=4, warmup=2, batch_size=8, eval_limit=64)


def _interrupted_then_resumed_worker(ctx: DistributedContext, out: Path) -> None:
    """SIGINT on rank 0 only, during iteration 2: both ranks stop after it; then resume."""
    from risloss.training import TrainingInterrupted, train
    from tests._resume import sigint_after

    config = _cli_config()
    with sigint_after(2, when=lambda: ctx.rank == 0), pytest.raises(TrainingInterrupted) as info:
        train(config, out, log=None)
    (out / f"stopped{ctx.rank}.txt").write_text(str(info.value.iteration))
    train(config, out, resume=True, log=None)


@pytest.mark.slow
def test_torchrun_quantize_writes_one_set_of_outputs_and_resume_matches(tmp_path: Path) -> None:
    from tests._data import fashion_mnist_or_skip

    test_set = fashion_mnist_or_skip("test")
    out = tmp_path / "torchrun"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(_loopback_env())
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={WORLD}",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        "--local-addr=127.0.0.1",
        "-m",
        "risloss",
        *CLI_ARGS,
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("outputs:") == 1  # rank 0 alone reports
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".risloss-run.json",
        "checkpoint.pt",
        "generator.pt",
        "losses.png",
        "metrics.json",
        "samples.png",
        "student.pt",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD and metrics["global_batch_size"] == WORLD * 8
    assert len(metrics["history"]) == 4
    assert torch.load(out / "checkpoint.pt", weights_only=True)["world_size"] == WORLD
    # The sharded evaluation counts every image once: the teacher's accuracy as in one process.
    from torch.utils.data import Subset

    from risloss import evaluate
    from risloss.models import load_pretrained

    assert metrics["fp_top1"] == evaluate(load_pretrained(TEACHER), Subset(test_set, range(64)))

    # A checkpoint of 2 processes does not resume in one (the settings match: else the
    # error would name them).
    from risloss.training import train

    config = _cli_config()
    with pytest.raises(ValueError, match=r"written by a run on 2 process\(es\)"):
        train(config, out, resume=True, log=None)

    # Interrupted on one rank, every rank stops at the same iteration; resumed, the run ends
    # as the uninterrupted one.
    resumed = tmp_path / "resumed"
    _spawn(_interrupted_then_resumed_worker, resumed)
    assert {(resumed / f"stopped{r}.txt").read_text() for r in range(WORLD)} == {"2"}
    again = json.loads((resumed / "metrics.json").read_text())
    assert again["history"] == metrics["history"]
    assert again["quant_top1"] == metrics["quant_top1"]
    student = torch.load(out / "student.pt", weights_only=True)
    for name, value in torch.load(resumed / "student.pt", weights_only=True).items():
        torch.testing.assert_close(value, student[name], rtol=0, atol=0, msg=name)


def _distill_worker(ctx: DistributedContext, out: Path) -> None:
    from risloss.training import TrainConfig, train

    config = TrainConfig(
        task="distill",
        model=TEACHER,
        iters=2,
        warmup=1,
        batch_size=4,
        eval_limit=16,
        w_bits=4,
        a_bits=4,
        checkpoint_every=2,
    )
    metrics = train(config, out, log=None)
    (out / f"top1_{ctx.rank}.txt").write_text(str(metrics["student_top1"]))


@pytest.mark.slow
def test_distill_student_trains_with_global_batchnorm(tmp_path: Path) -> None:
    """A train-mode student (global BatchNorm, quantized, calibrated on the gathered batch)."""
    from tests._data import fashion_mnist_or_skip

    fashion_mnist_or_skip("test")
    _spawn(_distill_worker, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD and metrics["distill"]["arch"] == "resnet8"
    # Every rank returns the same metrics (the evaluation is summed over ranks).
    assert {(tmp_path / f"top1_{r}.txt").read_text() for r in range(WORLD)} == {
        str(metrics["student_top1"])
    }
    # student.pt has the keys of a plain student: GlobalBatchNorm keeps BatchNorm's state.
    from risloss.models import resnet8
    from risloss.quant import quantize_model

    plain = quantize_model(
        resnet8(num_classes=10, in_channels=1, image_size=28), w_bits=4, a_bits=4
    )
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    plain.load_state_dict(state)
    # the calibration batch and the four student steps of distillation's pool regime (the
    # adversarial term's pass of the student leaves its statistics as they are)
    assert int(state["bn1.num_batches_tracked"]) == 5
