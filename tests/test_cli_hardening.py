"""The command line as a careless user meets it: each case ends in the right exit status, at most
three lines of output and no traceback, and leaves every file that was there before as it was.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from risloss import _outputs
from tests._cli import TINY, hashes, run
from tests._data import fashion_mnist_or_skip

SOURCE = """
import pathlib
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset


class Net(nn.Sequential):
    def __init__(self, channels=1, bn=True):
        super().__init__(
            nn.Conv2d(channels, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if bn else []),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
        )


def good():
    return Net()


def rgb():
    return Net(3)


def flat():
    return Net(bn=False)


def broken():
    raise RuntimeError("the factory's own mistake")


def paused():
    pathlib.Path(__file__).with_name("paused.ready").write_text("ready")
    time.sleep(4)
    return Net()


def _labels(bad):
    return torch.tensor([0, 1, 2, 3] * 4 + [bad], dtype=torch.float if bad == 3.7 else torch.long)


def label_50(split):
    return TensorDataset(torch.rand(17, 1, 8, 8), _labels(50))


def label_minus_1(split):
    return TensorDataset(torch.rand(17, 1, 8, 8), _labels(-1))


def label_3_7(split):
    return TensorDataset(torch.rand(17, 1, 8, 8), _labels(3.7))


class Mixed(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        side = 8 if i < 7 else 12
        return torch.rand(1, side, side), i % 4


def mixed(split):
    return Mixed()


def raising(split):
    raise OSError("the data set's own mistake")
"""

FAST = ["--iters", "4", "--warmup", "1", "--batch-size", "4", "--checkpoint-every", "2"]


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with ``usermods.py`` (models, data sets) and ``w.pt``/``rgb.pt``/
    ``flat.pt`` weights, the working folder of the test."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "usermods.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "usermods", raising=False)
    monkeypatch.chdir(folder)
    import importlib

    mods = importlib.import_module("usermods")
    torch.save(mods.good().state_dict(), folder / "w.pt")
    torch.save(mods.rgb().state_dict(), folder / "rgb.pt")
    torch.save(mods.flat().state_dict(), folder / "flat.pt")
    return folder


def refused(
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    root: Path,
    code: int,
    *needles: str,
) -> str:
    """Run ``risloss ARGS``; check the exit status, at most three lines, no traceback, every
    file below ``root`` unchanged; the error line."""
    before = hashes(root)
    status, out, err = run(args, capsys)
    lines = (out + err).strip().splitlines()
    assert status == code, err
    assert len(lines) <= 3, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert hashes(root) == before
    return lines[-1]


# Models and data sets from code ---------------------------------------------------------------


def test_a_file_path_as_the_module_is_accepted(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from risloss._imports import import_factory

    assert import_factory("./usermods.py:good")().__class__.__name__ == "Net"
    line = refused(
        ["quantize", *TINY, "--model", "./nothere.py:good", "--weights", "w.pt", "--out", "o"],
        capsys, user, 2, "--model './nothere.py:good': no Python file './nothere.py'",
    )  # fmt: skip
    assert line.startswith("risloss quantize: error:")
    refused(
        ["quantize", *TINY, "--model", "./w.pt:good", "--weights", "w.pt", "--out", "o"],
        capsys, user, 2, "is not a Python file (.py)",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--model", "usermods:broken", "--model 'usermods:broken': the factory raised "
         "RuntimeError: the factory's own mistake"),
        ("--model", "sys:exit", "--model 'sys:exit': the factory exited"),
        ("--data", "usermods:raising", "data 'usermods:raising': the factory raised OSError"),
    ],
)  # fmt: skip
def test_a_factory_that_raises_is_one_line_naming_it(
    option: str, value: str, needle: str, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = [] if option == "--model" else ["--model", "usermods:good"]
    args = ["quantize", *FAST, *model, option, value, "--weights", "w.pt", "--out", "o"]
    refused(args, capsys, user, 2, needle)
    assert not (user / "o").exists()


def test_a_model_object_that_is_not_a_module_is_refused(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quantize", *FAST, "--model", "builtins:dict", "--weights", "w.pt", "--out", "o"]
    refused(args, capsys, user, 2, "the factory returned dict; it must return a torch.nn.Module")


@pytest.mark.parametrize(
    ("factory", "code", "needle"),
    [
        # The model/data check sees the labels' span (a usage error: another model or data).
        ("label_50", 2, "the data's labels span 0..50 but the model has 10 outputs"),
        ("label_minus_1", 2, "the data's labels span -1..3 but the model has 10 outputs"),
        ("label_3_7", 1, "the evaluation data: item 16 has label 3.7, not a whole number"),
        ("mixed", 1, "the evaluation data: images differ in size"),
    ],
)
def test_every_evaluation_label_and_size_is_checked_before_training(
    factory: str, code: int, needle: str, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "quantize", *FAST, "--model", "usermods:good", "--weights", "w.pt",
        "--data", f"usermods:{factory}", "--out", "o",
    ]  # fmt: skip
    refused(args, capsys, user, code, needle)
    assert not (user / "o").exists()


def test_a_corrupt_image_in_the_evaluation_folder_is_reported_before_training(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    for label in ("a", "b"):
        (user / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(user / "imgs" / label / f"{i}.png")
    (user / "imgs" / "b" / "2.png").write_bytes(b"not a png at all")
    args = [
        "quantize", *FAST, "--model", "usermods:rgb", "--weights", "rgb.pt", "--image-size",
        "16", "--data", f"imagefolder:{user / 'imgs'}", "--out", "o",
    ]  # fmt: skip
    refused(args, capsys, user, 1, "2.png")
    assert not (user / "o").exists()


def test_a_model_without_batchnorm_says_what_works(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quantize", *FAST, "--model", "usermods:flat", "--weights", "flat.pt", "--out", "o"]
    refused(args, capsys, user, 2, "no BatchNorm layer", "--bns-weight 0", "--method noise")


def test_nan_weights_name_the_file(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = torch.load(user / "w.pt", weights_only=True)
    state["5.weight"][0, 0] = float("nan")
    torch.save(state, user / "nan.pt")
    args = ["quantize", *FAST, "--model", "usermods:good", "--weights", "nan.pt", "--out", "o"]
    refused(
        args, capsys, user, 2, "nan.pt: the weights of model 'usermods:good' hold NaN", "5.weight"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_weights_on_a_named_pipe_are_refused_at_once(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = user.parent / "pipe"  # beside the folder whose files are hashed (reading would block)
    os.mkfifo(pipe)
    args = ["quantize", *FAST, "--model", "usermods:good", "--weights", str(pipe), "--out", "o"]
    t0 = time.monotonic()
    refused(args, capsys, user, 2, "pipe", "not a regular file")
    assert time.monotonic() - t0 < 30


def test_normalize_of_another_channel_count_names_normalize(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    args = ["quantize", *TINY, "--normalize", "0.5,0.5,0.5", "0.2,0.2,0.2", "--out", "o"]
    line = refused([*args[:-1], str(tmp_path / "o")], capsys, tmp_path, 2, "--normalize")
    assert "--no-normalize" not in line


# Limits that fit memory -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--replay-size", "10000000", "--replay-memory-mb", "100000"],
            "--replay-size 10000000: the replay pool needs about",
        ),
        (["--image-size", "100000"], "--image-size 100000: one 1x100000x100000 image needs"),
        (["--batch-size", "100000000000000000000"], "--batch-size 100000000000000000000: "),
    ],
)
def test_settings_that_cannot_fit_memory_are_refused_before_any_work(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("risloss._resources.available_memory", lambda device="cpu": 8 * 2**30)
    monkeypatch.setattr("risloss.models.load_pretrained", _no_loading)  # refused before it
    refused(["quantize", *TINY, *args, "--out", str(tmp_path / "o")], capsys, tmp_path, 2, needle)
    assert not (tmp_path / "o").exists()


def _no_loading(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded")


def test_synthesize_too_many_images_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("risloss._resources.available_memory", lambda device="cpu": 8 * 2**30)
    args = ["synthesize", "--num-images", "1000000000", "--out", str(tmp_path / "o")]
    refused(args, capsys, tmp_path, 2, "--num-images 1000000000: the synthesized images need")


# Folders, resuming, options -----------------------------------------------------------------


@pytest.mark.parametrize("out", [".", "/", "..", "teachers/"])
def test_train_teacher_out_that_names_a_folder_is_refused(
    out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused(["train-teacher", "--out", out], capsys, tmp_path, 2, f"--out {out}: expected a path")


def test_options_are_not_abbreviated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(
        ["quantize", "--ov", "--out", str(tmp_path / "o")], capsys, tmp_path, 2,
        "unrecognized arguments: --ov",
    )  # fmt: skip


@pytest.mark.parametrize("value", ["false", "no", "0", "", "off", "False"])
def test_debug_off_values_show_no_traceback(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISLOSS_DEBUG", value)
    refused(["quantize", "--batch-size", "0"], capsys, tmp_path, 2, "--batch-size")


@pytest.mark.parametrize("rank", ["1", "abc"])
def test_a_stray_rank_does_not_silence_messages(
    rank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    refused(["quantize", "--batch-size", "0"], capsys, tmp_path, 2, "--batch-size")


def _synthesize_run(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synthesize", "--model", "resnet8_fashion_mnist", "--iters", "2", "--batch-size", "4",
            "--num-images", "4", "--quiet", "--out", str(out)]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err


def test_resume_of_another_kind_of_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "s"
    _synthesize_run(out, capsys)
    refused(
        ["quantize", *TINY, "--resume", "--out", str(out)], capsys, tmp_path, 2,
        "a finished synthesize run, not a quantize run",
    )  # fmt: skip
    # Without the manifest (a folder of an earlier version) the checkpoint tells.
    (out / _outputs.MANIFEST).unlink()
    refused(
        ["quantize", *TINY, "--resume", "--out", str(out)], capsys, tmp_path, 2,
        "was written by synthesize, not by train",
    )  # fmt: skip


def _finished_noise_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The folder of a finished tiny ``--method noise`` run (its checkpoint to tamper with)."""
    fashion_mnist_or_skip("test")
    out = tmp_path / "q"
    code, _, err = run(
        ["quantize", *TINY, "--method", "noise", "--quiet", "--out", str(out)], capsys
    )
    assert code == 0, err
    return out


def test_a_checkpoint_missing_an_entry_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _finished_noise_run(tmp_path, capsys)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, out / "checkpoint.pt")
    args = ["quantize", *TINY, "--method", "noise", "--resume", "--out", str(out)]
    refused(args, capsys, tmp_path, 2, "does not hold what a train run saves", "'optimizer'")


def test_resume_mismatches_are_listed_as_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _finished_noise_run(tmp_path, capsys)
    args = ["quantize", *TINY, "--method", "noise", "--w-bits", "3", "--resume", "--out", str(out)]
    line = refused(args, capsys, tmp_path, 2, "--w-bits 4 there, 3 here")
    assert "w_bits" not in line


def test_synthesize_keeps_a_users_files_in_synthetic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "o"
    (out / "synthetic" / "mine").mkdir(parents=True)
    (out / "synthetic" / "mine" / "f").write_text("x")
    (out / "student.pt").write_text("not a run's")
    args = ["synthesize", "--iters", "2", "--batch-size", "4", "--num-images", "4",
            "--out", str(out)]  # fmt: skip
    refused(args, capsys, tmp_path, 2, "holds files that no risloss run wrote")
    # With --overwrite the run writes beside them; a second one replaces only its own images.
    for _ in range(2):
        code, _, err = run([*args, "--overwrite", "--quiet"], capsys)
        assert code == 0, err
        assert (out / "synthetic" / "mine" / "f").read_text() == "x"
        assert (out / "student.pt").read_text() == "not a run's"
        assert len(list((out / "synthetic").glob("*/*.png"))) == 4


def test_pt_files_follow_the_umask(tmp_path: Path) -> None:
    from risloss._checkpoint import atomic_save

    old = os.umask(0o022)
    try:
        atomic_save({"a": torch.zeros(1)}, tmp_path / "a.pt")
        os.umask(0o077)
        atomic_save({"a": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o600


def test_train_teacher_reports_during_an_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    from risloss.models import resnet8

    class TensorImageDataset:  # what an epoch reads of the training split
        mean, std = (0.0,), (1.0,)  # the normalization the padding's black is computed from

        def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
            self.images, self.labels = images, labels

        def __len__(self) -> int:
            return len(self.labels)

    from risloss.models._teacher import _epoch, _reporter

    model = resnet8(num_classes=10, in_channels=1, image_size=28)
    data = TensorImageDataset(torch.rand(16, 1, 28, 28), torch.arange(16) % 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(0)
    report = _reporter("epoch 1/1", time.time())
    _epoch(model, opt, sched, data, gen, 2, 8, report=report)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(", loss")[0] for line in lines] == [
        "epoch 1/1: 2/8 steps (25%)",
        "epoch 1/1: 4/8 steps (50%)",
        "epoch 1/1: 6/8 steps (75%)",
    ]


# Several processes, streams, interrupts ---------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def test_a_second_run_into_a_folder_in_use_is_refused_while_the_first_finishes(
    user: Path,
) -> None:
    fashion_mnist_or_skip("test")
    out = user / "o"
    cmd = [sys.executable, "-m", "risloss", "quantize", *TINY, "--method", "noise", "--quiet",
           "--weights", "w.pt", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(
        [*cmd, "--model", "usermods:paused"], cwd=user, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (user / "paused.ready").exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        second = subprocess.run(
            [*cmd, "--model", "usermods:good"], cwd=user, env=_env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"risloss quantize: error: --out {out} is in use by another run (process {first.pid}): "
        "wait for it to end, or choose another --out"
    ]
    assert first.returncode == 0, stderr
    assert json.loads((out / "metrics.json").read_text())["config"]["model"] == "usermods:paused"


@pytest.mark.parametrize("how", ["closed", "broken pipe"])
def test_a_closed_or_broken_stderr_does_not_stop_the_run(how: str, tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "risloss", "quantize", *TINY, "--method", "noise", "--out",
           str(out)]  # fmt: skip
    if how == "closed":
        result = subprocess.run(
            cmd, env=_env(), stdout=subprocess.DEVNULL, timeout=300,
            preexec_fn=lambda: os.close(2),
        )  # fmt: skip
        code = result.returncode
    else:
        script = (
            f"{subprocess.list2cmdline(cmd)} 2>&1 | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}"
        )
        code = subprocess.run(["bash", "-c", script], env=_env(), timeout=300).returncode
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["method"] == "noise"


def _interrupt_in(point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from risloss.training import TrainJob

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    if point == "prepare":
        monkeypatch.setattr(TrainJob, "prepare", stop)
    elif point == "training":
        step = TrainJob.step

        def late(self: TrainJob, it: int) -> dict[str, float]:
            if it == 3:  # after the checkpoint of iteration 2
                raise KeyboardInterrupt
            return step(self, it)

        monkeypatch.setattr(TrainJob, "step", late)
    elif point == "outputs":
        monkeypatch.setattr(TrainJob, "outputs", stop)
    else:  # the commit, after the first new file is in place

        def hook(name: str) -> None:
            if name == "moved-in":
                raise KeyboardInterrupt

        monkeypatch.setattr(_outputs, "_stage_hook", hook)


@pytest.mark.parametrize("point", ["prepare", "training", "outputs", "commit"])
def test_an_interrupted_overwrite_keeps_the_earlier_run(
    point: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fashion_mnist_or_skip("test")
    out = tmp_path / "o"
    code, _, err = run(
        ["quantize", *TINY, "--method", "noise", "--quiet", "--out", str(out)], capsys
    )
    assert code == 0, err
    before = hashes(out)
    with monkeypatch.context() as patch:
        _interrupt_in(point, patch)
        code, _, err = run(["quantize", *TINY, "--overwrite", "--quiet", "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1 and "Traceback" not in err, err
    assert "the earlier run's files are as they were" in lines[0]
    work = _outputs.WORK_FOLDER
    after = {k: v for k, v in hashes(out).items() if k != work and not k.startswith(f"{work}/")}
    assert after == before
