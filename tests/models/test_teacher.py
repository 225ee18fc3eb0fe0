"""Training a teacher from a seed: CIFAR-10 (from image files) beside Fashion-MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from risloss.models._teacher import train_teacher
from tests._data import write_cifar_files


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_cifar10_teacher_trains_from_image_files(precision: str, tmp_path: Path) -> None:
    write_cifar_files(tmp_path / "c10", per_class=4)
    out = tmp_path / "teacher"
    meta = train_teacher(
        "resnet8", dataset="cifar10", epochs=2, batch_size=8, lr=0.05, out=out,
        data_root=tmp_path / "c10", precision=precision, log=False,
    )  # fmt: skip
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == meta
    assert meta["input_shape"] == [3, 32, 32] and meta["dataset"] == "cifar10"
    assert meta["device"] == "cpu"
    assert meta["preprocessing"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert meta["train_images"] == 40 and meta["test_images"] == 40
    assert len(meta["history"]) == 2 and all(h["seconds"] > 0 for h in meta["history"])
    assert meta["train_seconds"] == pytest.approx(sum(h["seconds"] for h in meta["history"]))
    assert ("precision" in meta) == (precision == "bf16")
    weights = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert weights["conv1.weight"].shape[1] == 3 and weights["conv1.weight"].dtype == torch.float32
    assert not out.with_suffix(".ckpt").exists()


def test_a_cifar10_teacher_resumes_bitwise(tmp_path: Path) -> None:
    write_cifar_files(tmp_path / "c10", per_class=2)
    common = dict(dataset="cifar10", batch_size=8, lr=0.05, data_root=tmp_path / "c10", log=False)
    train_teacher("resnet8", epochs=2, out=tmp_path / "whole", **common)
    # one epoch, then the checkpoint continued by a second call of the same settings
    ckpt_run = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_first_epoch(ckpt_run, common)
    assert ckpt_run.with_suffix(".ckpt").exists()
    train_teacher("resnet8", epochs=2, out=ckpt_run, **common)
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "parts.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _interrupt_after_first_epoch(out: Path, common: dict) -> None:
    import risloss.models._teacher as teacher

    calls = {"n": 0}
    real = teacher.evaluate

    def evaluate_then_stop(*args, **kwargs):  # the second epoch's evaluation: Ctrl-C
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    teacher.evaluate = evaluate_then_stop
    try:
        train_teacher("resnet8", epochs=2, out=out, **common)
    finally:
        teacher.evaluate = real


def test_bad_teacher_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset must be one of \('fashion-mnist', 'cifar10'\)"):
        train_teacher("resnet8", dataset="mnist", out=tmp_path / "t")
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\)"):
        train_teacher("resnet8", precision="fp16", out=tmp_path / "t")
    with pytest.raises(ValueError, match=r"device must be one of \('cpu', 'cuda'\)"):
        train_teacher("resnet8", device="tpu", out=tmp_path / "t")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' was asked for but"):
            train_teacher("resnet8", device="cuda", out=tmp_path / "t")
    assert list(tmp_path.iterdir()) == []
