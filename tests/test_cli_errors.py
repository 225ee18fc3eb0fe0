"""Mistakes a user makes on the command line end in one line and exit status 2, before any work.

Each test runs ``risloss`` as a user would (in-process, through :func:`risloss.cli.main`) and
checks the exit status, that the message is one line naming the option or the file, and that
no file that existed changed. The numbers refer to the list of hardening problems the command
line had (bad files: 3, output folder: 4, devices: 5, absurd values: 8).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from risloss.cli import main
from risloss.models import resnet8
from tests._cli import TINY, factory_module, hashes, one_line, run
from tests._data import fashion_mnist_or_skip

# 8. Finite but absurd values, and errors that named the internal field ------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--robustness-weight", "1e300"], "--robustness-weight"),
        (["--robustness-weight", "inf"], "--robustness-weight"),
        (["--robustness-weight", "nan"], "--robustness-weight"),
        (["--weight-noise-eps", "1e30"], "--weight-noise-eps"),
        (["--input-noise-std", "1e30"], "--input-noise-std"),
        (["--bns-weight", "-1"], "--bns-weight"),
        (["--num-draws", "1000"], "--num-draws"),
        (["--batch-size", "1"], "--batch-size"),
        (["--lr-student", "1e9"], "--lr-student"),
        (["--lr-generator", "0"], "--lr-generator"),
        (["--kd-temperature", "0"], "--kd-temperature"),
        (["--kd-weight", "1e30"], "--kd-weight"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--eval-limit", "0"], "--eval-limit"),
        (["--iters", "4", "--warmup", "5"], "--warmup must be <= --iters"),
        (["--w-bits", "1"], "--w-bits"),
        (["--first-last-bits", "17"], "--first-last-bits"),
        (["--robustness-mode", "sequential"], "--robustness-mode"),
        (["--model", "nope"], "--model"),
        (["--no-input-perturbation", "--no-weight-perturbation"], "--robustness-weight 0"),
        (["--iters", "many"], "--iters"),
    ],
)
def test_absurd_values_fail_naming_the_option(
    args: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["quantize", *TINY, "--out", str(tmp_path / "out"), *args], capsys)
    line = one_line(err)
    assert code == 2
    assert line.startswith("risloss quantize: error:") or line.startswith("risloss: error:")
    assert option in line
    # The option, never the configuration field: no snake_case name in the message.
    assert not any("_" in word and word.isidentifier() for word in line.split()), line
    assert hashes(tmp_path) == {}


def test_distill_student_is_one_of_the_architectures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["distill", "--student", "vgg", "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    line = one_line(err)
    assert "--student: invalid choice: 'vgg'" in line and "'resnet8', 'resnet20'" in line


def test_help_shows_the_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["quantize", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    alpha = "alpha, weight of the robustness loss: a finite number in [0, 1000] (default: 1.0)"
    assert alpha in flat
    assert "weight-noise scale: a finite number in [0, 1] (default: 0.05)" in flat
    assert "perturbation draws per step: an integer in 1..64 (default: 1)" in flat
    assert "images per iteration: an integer >= 2 (default: 32)" in flat
    assert "--robustness-mode {random,joint,input,weight}" in flat
    assert "distillation temperature: a finite number in (0, 100] (default: 1.0)" in flat
    code, out, _ = run(["distill", "--help"], capsys)
    flat = " ".join(out.split())
    assert "distillation temperature: a finite number in (0, 100] (default: 4.0)" in flat
    assert "--w-bits N bit width of the weights" in flat and "(default: off)" in flat
    assert "--student {resnet8,resnet20}" in flat


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import risloss

    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith(f"risloss {risloss.__version__} (torch ")


def test_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quantize", "--batch-size", "1", "--out", str(tmp_path / "o")]
    with pytest.raises(Exception, match="--batch-size") as info:
        main([*args, "--debug"])
    assert isinstance(info.value.__cause__, ValueError)  # TrainConfig's own error
    monkeypatch.setenv("RISLOSS_DEBUG", "1")
    with pytest.raises(Exception, match="--batch-size"):
        main(args)
    monkeypatch.setenv("RISLOSS_DEBUG", "0")
    assert main(args) == 2


# 5. Devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device",
    [
        "cuda:abc",
        "tpu",
        "cuda:-1",
        pytest.param(
            "mps",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS exists"),
        ),
        pytest.param(
            "cuda:64",
            marks=pytest.mark.skipif(torch.cuda.device_count() > 64, reason="64 GPUs exist"),
        ),
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU exists"),
        ),
    ],
)
def test_devices_are_checked_at_start(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quantize", *TINY, "--device", device, "--out", str(tmp_path / "o")]
    code, _, err = run(args, capsys)
    assert code == 2
    assert "--device" in one_line(err)
    assert hashes(tmp_path) == {}


# 4. The output folder ------------------------------------------------------------------------


def test_empty_output_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = hashes(tmp_path)
    for command in (["quantize", *TINY], ["train-teacher"]):
        code, _, err = run([*command, "--out", ""], capsys)
        assert code == 2
        assert "--out: expected an output" in one_line(err)
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("out", ["afile", "afile/sub", "afile/sub/deeper"])
def test_output_folder_under_or_at_a_file_is_refused(
    out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    before = hashes(tmp_path)
    code, _, err = run(["quantize", *TINY, "--out", str(tmp_path / out)], capsys)
    assert code == 2
    line = one_line(err)
    assert f"--out {tmp_path / out}" in line and "is a file" in line
    assert hashes(tmp_path) == before


def test_train_teacher_output_under_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    before = hashes(tmp_path)
    code, _, err = run(["train-teacher", "--out", str(tmp_path / "afile" / "t")], capsys)
    assert code == 2
    assert "is a file" in one_line(err)
    assert hashes(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_unwritable_output_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(["quantize", *TINY, "--out", str(locked / "run")], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert "cannot write in" in one_line(err)
    assert hashes(tmp_path) == {"locked": "<dir>"}


def test_output_folder_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As above, where permissions do not stop the user (root): the write itself fails."""
    import tempfile

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = run(["quantize", *TINY, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert one_line(err).endswith(f"--out {tmp_path / 'run'}: cannot write in {tmp_path} "
                                  "(Permission denied)")  # fmt: skip
    assert hashes(tmp_path) == {}


# 3. Files that cannot be loaded ---------------------------------------------------------------


def _bad_weights(kind: str, path: Path, module: str) -> None:
    if kind == "random bytes":
        path.write_bytes(os.urandom(2048))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "a tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "a list":
        torch.save([1, 2, 3], path)
    elif kind == "a pickle":
        path.write_bytes(pickle.dumps({"weights": [1.0]}))
    elif kind == "a whole model":
        import importlib

        torch.save(importlib.import_module(module).factory(), path)
    elif kind == "other weights":
        torch.save(nn.Linear(3, 3).state_dict(), path)
    elif kind == "a folder":
        path.mkdir()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("random bytes", "not a file written by torch.save"),
        ("empty", "empty or truncated"),
        ("a tensor", "it holds a single tensor of shape (3,)"),
        ("a list", "it holds a list"),
        ("a pickle", "not a file written by torch.save"),
        ("a whole model", "save model.state_dict(), not the model"),
        ("other weights", "does not fit model"),
        ("a folder", "it is a folder"),
        ("missing", "no such file"),
    ],
)
def test_bad_weights_file_is_one_line_naming_it(
    kind: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = factory_module(tmp_path, monkeypatch)
    weights = tmp_path / "weights.pt"
    _bad_weights(kind, weights, module)
    before = hashes(tmp_path)
    args = ["quantize", *TINY, "--model", f"{module}:factory", "--weights", str(weights)]
    code, _, err = run([*args, "--out", str(tmp_path / "out")], capsys)
    line = one_line(err)
    assert code == 2
    assert str(weights) in line and expected in line
    assert hashes(tmp_path) == before


def _checkpoint_bytes(kind: str) -> bytes:
    if kind == "random bytes":
        return os.urandom(4096)
    if kind == "empty":
        return b""
    import io

    buffer = io.BytesIO()
    torch.save({"config": {}, "iteration": 2, "student": nn.Linear(8, 8).state_dict()}, buffer)
    data = buffer.getvalue()
    if kind == "truncated":
        return data[: len(data) // 2]
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)  # "a list"
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("random bytes", "not a file written by torch.save"),
        ("empty", "empty or truncated"),
        ("truncated", "truncated or not a file written by torch.save"),
        ("a list", "it holds a list"),
    ],
)
def test_resume_from_a_bad_checkpoint_is_one_line_naming_it(
    kind: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(_checkpoint_bytes(kind))
    before = hashes(tmp_path)
    code, _, err = run(["quantize", *TINY, "--out", str(out), "--resume"], capsys)
    line = one_line(err)
    assert code == 2
    assert str(out / "checkpoint.pt") in line and expected in line
    assert hashes(tmp_path) == before


def _teacher_checkpoint(arch: str, settings: dict | None) -> dict:
    model = resnet8(num_classes=10, in_channels=1, image_size=28)
    state = {
        "model": model.state_dict(),
        "opt": {},
        "sched": {},
        "gen": torch.Generator().get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": 1,
        "history": [],
    }
    if settings is not None:
        state["settings"] = settings
    return state


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("random bytes", "t.ckpt (expected a train-teacher checkpoint): it is not a file"),
        ("truncated", "t.ckpt (expected a train-teacher checkpoint): it is truncated"),
        ("other arch", "t.ckpt holds an unfinished run with other settings (--arch)"),
        ("old format, other arch", "t.ckpt does not fit a resnet20: "),
    ],
)
def test_train_teacher_bad_checkpoint_is_one_line_naming_it(
    content: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("train")
    ckpt = tmp_path / "t.ckpt"
    if content == "random bytes":
        ckpt.write_bytes(os.urandom(4096))
    else:
        settings = {"arch": "resnet8", "dataset": "fashion-mnist", "epochs": 1,
                    "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "seed": 0}  # fmt: skip
        state = _teacher_checkpoint("resnet8", None if "old" in content else settings)
        torch.save(state, ckpt)
        if content == "truncated":
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = hashes(tmp_path)
    code, _, err = run(["train-teacher", "--epochs", "1", "--out", str(tmp_path / "t")], capsys)
    line = one_line(err)
    assert code == 2
    assert expected in line
    assert hashes(tmp_path) == before


def test_train_teacher_refuses_to_replace_a_finished_teacher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.pt").write_bytes(b"weights")
    (tmp_path / "t.json").write_text("{}")
    before = hashes(tmp_path)
    code, _, err = run(["train-teacher", "--out", str(tmp_path / "t")], capsys)
    line = one_line(err)
    assert code == 2
    assert "already exist" in line and "--overwrite" in line
    assert hashes(tmp_path) == before
