from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from risloss.training import METHODS, RISConfig, TrainConfig, TrainingInterrupted, train
from tests._data import fashion_mnist_or_skip

TINY = dict(
    model="resnet8_fashion_mnist",
    iters=6,
    warmup=2,
    batch_size=8,
    checkpoint_every=2,
    eval_limit=64,
)


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    fashion_mnist_or_skip("test")


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_and_writes_outputs(method: str, tmp_path: Path) -> None:
    metrics = train(TrainConfig(method=method, **TINY), tmp_path, log=None)
    assert 0.0 <= metrics["quant_top1"] <= 100.0
    assert metrics["fp_top1"] > 50.0
    assert len(metrics["history"]) == TINY["iters"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["quant_top1"] == metrics["quant_top1"]
    assert saved["config"]["method"] == method
    state = _load(tmp_path / "student.pt")
    assert any(k.endswith("weight") for k in state)
    assert (tmp_path / "losses.png").stat().st_size > 0
    if method in ("ris", "gdfq"):
        _load(tmp_path / "generator.pt")
        assert (tmp_path / "samples.png").stat().st_size > 0
        keys = set(metrics["history"][-1])
        assert {"g_ce", "g_bns", "s_kd", "s_loss"} <= keys
        assert ("g_rob" in keys) == (method == "ris")
        assert ("g_div" in keys) == (method == "ris")


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = TrainConfig(method="ris", **TINY)
    full = train(cfg, tmp_path / "full", log=None)
    # Interrupt a second run with a real SIGINT after iteration 4 of 6, then resume it.
    part_dir = tmp_path / "part"
    import risloss.training._trainer as trainer_mod

    original = trainer_mod.Progress.update

    def update(self, n, values=None):  # type: ignore[no-untyped-def]
        original(self, n, values)
        if n == 4:
            os.kill(os.getpid(), signal.SIGINT)

    trainer_mod.Progress.update = update  # type: ignore[method-assign]
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train(cfg, part_dir, log=None)
    finally:
        trainer_mod.Progress.update = original  # type: ignore[method-assign]
    assert info.value.iteration == 4
    resumed = train(cfg, part_dir, resume=True, log=None)
    assert resumed["quant_top1"] == full["quant_top1"]
    assert resumed["history"] == full["history"]
    a, b = _load(tmp_path / "full" / "student.pt"), _load(part_dir / "student.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_rejects_other_settings(tmp_path: Path) -> None:
    train(TrainConfig(method="noise", **TINY), tmp_path, log=None)
    other = TrainConfig(method="noise", **{**TINY, "batch_size": 4})
    with pytest.raises(ValueError, match="batch_size"):
        train(other, tmp_path, resume=True, log=None)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(other, tmp_path / "empty", resume=True, log=None)


def test_ptq_only_when_warmup_covers_all(tmp_path: Path) -> None:
    cfg = TrainConfig(method="noise", **{**TINY, "iters": 3, "warmup": 3})
    metrics = train(cfg, tmp_path, log=None)
    assert all("s_loss" not in h for h in metrics["history"])


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
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_ris_config() -> None:
    with pytest.raises(ValueError, match="cannot both be False"):
        RISConfig(input_perturbation=False, weight_perturbation=False)
    with pytest.raises(ValueError, match="diversity must be one of"):
        RISConfig(diversity="many")


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "risloss", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--w-bits", "1"], "--w-bits"),
        (["--method", "foo"], "--method"),
        (["--iters", "0"], "--iters"),
        (["--device", "tpu"], "--device"),
        (["--model", "nope"], "shipped teachers"),
        (["--iters", "3", "--warmup", "5"], "--warmup must be <= --iters"),
        (["--input-pool", "color"], "--input-pool"),
        (["--robustness-weight", "-1"], "--robustness-weight"),
        (["--num-draws", "0"], "--num-draws"),
        (["--no-input-perturbation", "--no-weight-perturbation"], "--robustness-weight 0"),
    ],
)
def test_cli_bad_options_fail_fast(args: list[str], match: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    res = _cli("quantize", "--out", str(tmp_path), *args)
    assert res.returncode == 2, res.stderr
    assert match in res.stderr
    assert not (tmp_path / "checkpoint.pt").exists()
    assert time.monotonic() - t0 < 60


def test_cli_objective_options_reach_the_config() -> None:
    from risloss.cli import _config_from_args, build_parser

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


def test_cli_sigint_leaves_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "risloss", "quantize", "--model", "resnet8_fashion_mnist",
        "--iters", "100000", "--warmup", "2", "--batch-size", "8", "--checkpoint-every",
        "100000", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        # Wait until the loop is running (the output folder exists once set-up is done).
        while not out.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 1
