"""``synthesize`` and ``risloss synthesize``: the files it writes, resuming, what the images are
worth to the teacher, and the errors that come before any output.

The user-model tests (an RGB model on 16x16 images from a data set built by code) need no data
files; the ones on the shipped teachers need Fashion-MNIST for the image shape check.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from risloss.cli import main
from risloss.models import load_pretrained, pretrained_info
from risloss.training import Run, TrainConfig, TrainingInterrupted, synthesize, train
from tests._data import fashion_mnist_or_skip
from tests._resume import assert_resume_matches_uninterrupted, assert_same_state, sigint_after

ROOT = Path(__file__).resolve().parents[2]
TEACHER = "resnet8_fashion_mnist"
TINY: dict[str, Any] = dict(model=TEACHER, iters=4, warmup=0, batch_size=8, checkpoint_every=2)
MODULE = """
import torch
from torch.utils.data import TensorDataset

from risloss.models import resnet8


def rgb16():
    return resnet8(num_classes=3, in_channels=3, image_size=16)


def two_channels():
    return resnet8(num_classes=3, in_channels=2, image_size=16)


def _images(split, shape):
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    return TensorDataset(torch.rand(6, *shape, generator=gen), torch.arange(6) % 3)


def pixels(split):
    return _images(split, (3, 16, 16))


def pixels18(split):
    return _images(split, (3, 18, 18))


def pixels_two(split):
    return _images(split, (2, 16, 16))
"""


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A module with the user's models and data sets, and the models' weights."""
    name = f"user_synth_{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    torch.manual_seed(0)
    weights = {}
    for factory in ("rgb16", "two_channels"):
        weights[factory] = str(tmp_path / f"{factory}.pt")
        torch.save(getattr(mod, factory)().state_dict(), weights[factory])
    return {"module": name, "weights": weights, "model": mod.rgb16}


def _user_config(user: dict[str, Any], **changes: Any) -> TrainConfig:
    fields: dict[str, Any] = dict(
        model=f"{user['module']}:rgb16",
        weights=user["weights"]["rgb16"],
        data=f"{user['module']}:pixels",
        iters=3,
        warmup=0,
        batch_size=4,
    )
    return TrainConfig(**{**fields, **changes})


def _pngs(folder: Path) -> dict[str, Any]:
    """``{"CLASS/INDEX.png": (mode, size, pixels as a uint8 tensor (H, W, C))}``."""
    from PIL import Image

    found = {}
    for path in sorted(folder.glob("*/*.png")):
        with Image.open(path) as image:
            image.load()
            array = torch.from_numpy(np.array(image))
            found[f"{path.parent.name}/{path.name}"] = (
                image.mode,
                image.size,
                array.view(image.size[1], image.size[0], -1),
            )
    return found


def _pixels(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """``(N, C, H, W)`` normalized images to ``(N, H, W, C)`` 8-bit pixels."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((images * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _check_files(out: Path, num_images: int, num_classes: int, shape: tuple[int, ...]) -> Any:
    """The tensor file and the ImageFolder agree with each other; returns the tensor file."""
    data = torch.load(out / "synthetic.pt", weights_only=True)
    assert set(data) == {"images", "labels", "teacher_logits"}
    images, labels, logits = data["images"], data["labels"], data["teacher_logits"]
    assert images.shape == (num_images, *shape) and images.dtype == torch.float32
    assert labels.shape == (num_images,) and labels.dtype == torch.int64
    assert logits.shape == (num_images, num_classes)
    # The requested labels are balanced over the classes.
    counts = torch.bincount(labels, minlength=num_classes)
    assert int(counts.max() - counts.min()) <= 1
    pngs = _pngs(out / "synthetic")
    predicted = logits.argmax(1).tolist()
    width = len(str(num_classes - 1))
    assert sorted(pngs) == sorted(f"{c:0{width}d}/{i:05d}.png" for i, c in enumerate(predicted))
    mode = "L" if shape[0] == 1 else "RGB"
    assert {(m, size) for m, size, _ in pngs.values()} == {(mode, (shape[2], shape[1]))}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"]["agreement"] == pytest.approx(
        float((logits.argmax(1) == labels).float().mean())
    )
    assert sum(metrics["images"]["predicted"].values()) == num_images
    return data, pngs, metrics


@pytest.mark.data
def test_writes_pngs_a_tensor_file_and_metrics(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    metrics = synthesize(TrainConfig(**TINY), tmp_path, num_images=20, log=None)
    data, pngs, saved = _check_files(tmp_path, 20, 10, (1, 28, 28))
    assert saved == json.loads(json.dumps(metrics))
    # The logits are the teacher's, in eval mode, on the saved images.
    teacher = load_pretrained(TEACHER)
    assert torch.allclose(teacher(data["images"]), data["teacher_logits"], atol=1e-4)
    # The PNG pixels are the images mapped back through the teacher's recorded normalization.
    prep = pretrained_info(TEACHER)["preprocessing"]
    expected = _pixels(data["images"], prep["mean"], prep["std"])
    for name, (_, _, array) in pngs.items():
        index = int(name.split("/")[1].removesuffix(".png"))
        assert torch.equal(array, expected[index]), name
    # The synthesis figures average the last iterations (all four here) of the training.
    history = saved["history"]
    assert len(history) == TINY["iters"]
    for key in ("g_agree", "g_ce", "g_bns", "g_sim"):
        mean = sum(h[key] for h in history) / len(history)
        assert saved["synthesis"][key] == pytest.approx(mean)
    for key in ("ce", "bns", "similarity"):
        assert isinstance(saved["images"][key], float)
    assert saved["pixels"]["mean"] == pytest.approx(prep["mean"])
    # The trained generator is saved; the draw with batch statistics left it unchanged.
    generator = torch.load(tmp_path / "generator.pt", weights_only=True)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for name, value in checkpoint["source"]["generator"].items():
        assert torch.equal(generator[name], value), name
    # The folder reads as an ImageFolder.
    from torchvision.datasets import ImageFolder

    assert len(ImageFolder(str(tmp_path / "synthetic"))) == 20


@pytest.mark.data
def test_the_tensor_file_calibrates_the_ptq_example(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    synthesize(TrainConfig(**TINY), tmp_path, num_images=16, log=None)
    spec = importlib.util.spec_from_file_location(
        "ptq_example", ROOT / "examples" / "ptq_calibration.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    images = example.calibration_images(str(tmp_path / "synthetic.pt"), TEACHER, 12, 0)
    assert images.shape == (12, 1, 28, 28)
    int8 = example.quantize_w8a8(load_pretrained(TEACHER), images, batch_size=8)
    assert int8(images[:4]).shape == (4, 10)


@pytest.mark.data
def test_resume_writes_the_same_files(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    config = TrainConfig(**{**TINY, "iters": 5})
    run = functools.partial(synthesize, num_images=12)
    assert_resume_matches_uninterrupted(
        config,
        tmp_path,
        at=3,  # between checkpoints: the interrupt writes its own
        run=run,
        same=("history", "synthesis", "images"),
        files=("synthetic.pt", "generator.pt"),
    )
    assert (
        _pngs(tmp_path / "full" / "synthetic").keys()
        == _pngs(tmp_path / "part" / "synthetic").keys()
    )
    for path in (tmp_path / "full" / "synthetic").glob("*/*.png"):
        twin = tmp_path / "part" / "synthetic" / path.parent.name / path.name
        assert path.read_bytes() == twin.read_bytes(), path.name


@pytest.mark.data
@pytest.mark.slow
def test_images_show_the_teacher_their_labels(tmp_path: Path) -> None:
    """After a short training the teacher recognizes the requested class well above chance."""
    fashion_mnist_or_skip("test")
    config = TrainConfig(
        model="resnet20_fashion_mnist",
        method="gdfq",
        generator_conditioning="concat",
        iters=40,  # with concatenated labels the agreement nears 1 within ~25 steps
        warmup=0,
        batch_size=16,
        checkpoint_every=1000,
    )
    metrics = synthesize(config, tmp_path, num_images=100, log=None)
    data = torch.load(tmp_path / "synthetic.pt", weights_only=True)
    agreement = float((data["teacher_logits"].argmax(1) == data["labels"]).float().mean())
    assert metrics["images"]["agreement"] == pytest.approx(agreement)
    assert agreement > 0.5, metrics["images"]  # chance: 0.1


def test_user_model_pixels_follow_the_normalization(user: dict[str, Any], tmp_path: Path) -> None:
    """An RGB model on 16x16 images: PNG pixels per normalization option, none of the files."""
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
    for name, normalize in (("given", (mean, std)), ("none", None), ("default", "default")):
        out = tmp_path / name
        synthesize(_user_config(user, normalize=normalize), out, num_images=6, log=None)
        data, pngs, metrics = _check_files(out, 6, 3, (3, 16, 16))
        images = data["images"]
        if name == "given":
            expected = _pixels(images, mean, std)
        elif name == "none":  # the model takes [0, 1] images
            expected = _pixels(images, [0.0], [1.0])
        else:  # a data set from code, as its factory returns it: min-max per image
            lo = images.flatten(1).min(1).values.view(-1, 1, 1, 1)
            hi = images.flatten(1).max(1).values.view(-1, 1, 1, 1)
            expected = _pixels((images - lo) / (hi - lo), [0.0], [1.0])
            assert "min-max" in metrics["pixels"]["mapping"]
        for key, (_, _, array) in pngs.items():
            index = int(key.split("/")[1].removesuffix(".png"))
            # One step of 8-bit rounding is allowed for the min-max scaling's float error.
            diff = (array.int() - expected[index].int()).abs().max()
            assert diff <= (1 if name == "default" else 0), (name, key)


def test_objects_in_synthesize_as_their_names_do(user: dict[str, Any], tmp_path: Path) -> None:
    """A model object and a data set object write the files their names write, bit for bit."""
    by_name = synthesize(
        _user_config(user, normalize=None), tmp_path / "named", num_images=6, log=None
    )
    model = user["model"]()
    model.load_state_dict(torch.load(user["weights"]["rgb16"], weights_only=True))
    pixels = importlib.import_module(user["module"]).pixels("test")
    config = TrainConfig(iters=3, warmup=0, batch_size=4, normalize=None)
    given = synthesize(
        config, tmp_path / "objects", num_images=6, model=model, test_data=pixels, log=None
    )
    for key in ("history", "synthesis", "images", "pixels", "input_spec"):
        assert given[key] == by_name[key], key
    for name in ("synthetic.pt", "generator.pt"):
        assert_same_state(tmp_path / "named" / name, tmp_path / "objects" / name)
    assert by_name["objects"] == {}
    assert given["objects"]["test_data"] == "torch.utils.data.dataset.TensorDataset"
    assert given["pixels"] == {"mapping": "none (the model takes [0, 1] images)"}


def test_a_checkpoint_resumes_only_its_own_kind_of_job(
    user: dict[str, Any], tmp_path: Path
) -> None:
    config = _user_config(user, method="gdfq", normalize=None)
    synthesize(config, tmp_path / "synth", num_images=2, log=None)
    with pytest.raises(ValueError, match="written by synthesize, not by train"):
        train(config, tmp_path / "synth", resume=True, log=None)
    with pytest.raises(TrainingInterrupted), sigint_after(1):
        train(config, tmp_path / "train", log=None)
    with pytest.raises(ValueError, match="written by train, not by synthesize"):
        synthesize(config, tmp_path / "train", num_images=2, resume=True, log=None)
    with pytest.raises(TypeError, match=r"see risloss\.training\.Job"):
        Run(object(), tmp_path / "other")  # type: ignore[arg-type]


def test_cli_writes_the_set(user: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    args = [
        "synthesize", "--model", f"{user['module']}:rgb16", "--weights",
        user["weights"]["rgb16"], "--data", f"{user['module']}:pixels", "--no-normalize",
        "--iters", "2", "--batch-size", "4", "--method", "gdfq", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main([*args, "--num-images", "5"]) == 0
    _, _, metrics = _check_files(out, 5, 3, (3, 16, 16))
    assert metrics["config"]["method"] == "gdfq"
    assert metrics["config"]["iters"] == 2 and metrics["config"]["normalize"] is None
    printed = capsys.readouterr().out
    assert f"{100 * metrics['images']['agreement']:.1f}% of 5 images" in printed
    # The folder now holds a run: refused as it is, replaced with --overwrite.
    assert main([*args, "--num-images", "7"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    _check_files(out, 5, 3, (3, 16, 16))
    assert main([*args, "--num-images", "7", "--overwrite"]) == 0
    _check_files(out, 7, 3, (3, 16, 16))


@pytest.mark.parametrize(
    ("changes", "num_images", "match"),
    [
        ({"method": "noise"}, 4, r"method must be one of \('ris', 'gdfq'\)"),
        ({"method": "real"}, 4, "method must be one of"),
        ({}, 0, "num_images must be an integer >= 1"),
        ({}, True, "num_images must be an integer >= 1"),
        ({"data": "{module}:pixels18"}, 4, "divisible by 4"),
        (
            {
                "model": "{module}:two_channels",
                "weights": "two_channels",
                "data": "{module}:pixels_two",
            },
            4,
            r"1 \(grayscale\) or 3 \(RGB\)",
        ),
        ({"data": "{module}:pixels_two"}, 4, "3-channel images"),
    ],
)
def test_bad_requests_fail_before_any_output(
    user: dict[str, Any], tmp_path: Path, changes: dict[str, Any], num_images: Any, match: str
) -> None:
    fields = {k: v.format(module=user["module"]) for k, v in changes.items()}
    if "weights" in fields:
        fields["weights"] = user["weights"][fields["weights"]]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        synthesize(_user_config(user, **fields), out, num_images=num_images, log=None)
    assert not out.exists()


def test_resume_needs_a_checkpoint_and_a_folder(user: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        synthesize(_user_config(user), tmp_path / "out", num_images=2, resume=True, log=None)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        synthesize(_user_config(user), tmp_path / "file", num_images=2, log=None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "noise"], "--method"),
        (["--num-images", "0"], "--num-images"),
        (["--warmup", "3"], "--warmup"),
        (["--w-bits", "4"], "--w-bits"),
        (["--model", "nope"], "shipped teachers"),
        (["--resume"], "no run to continue with --resume"),
    ],
)
def test_cli_rejects_bad_options_before_any_output(
    args: list[str], message: str, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out"
    try:
        code = main(["synthesize", "--out", str(out), *args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
