"""A user's own model and data through the trainer and the command line: a tiny RGB model on a
16x16 ImageFolder written here, the data options, the model and data passed as objects, and the
checks that run before any work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from risloss.cli import main
from risloss.training import TrainConfig, train
from tests._resume import assert_same_state

CLASSES = 3
RUN = ["--iters", "2", "--warmup", "1", "--batch-size", "4", "--quiet"]
MODULE = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from risloss.models import resnet8


def rgb16():
    return resnet8(num_classes=3, in_channels=3, image_size=16)


class FixedSize(nn.Module):
    """Takes only 3x16x16 images: the linear layer fixes the size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def fixed():
    return FixedSize()


def pixels(split):
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    return TensorDataset(torch.rand(8, 3, 16, 16, generator=gen), torch.arange(8) % 3)
'''


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A module with the user's models and data, their weights, and a 16x16 RGB ImageFolder."""
    from PIL import Image

    name = f"user_models_{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib

    mod = importlib.import_module(name)
    torch.manual_seed(0)
    for factory in ("rgb16", "fixed"):
        torch.save(getattr(mod, factory)().state_dict(), tmp_path / f"{factory}.pt")
    gen = torch.Generator().manual_seed(0)
    for k in range(CLASSES):
        (tmp_path / "images" / f"c{k}").mkdir(parents=True)
        for i in range(3):
            img = torch.randint(0, 256, (16, 16, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(img.numpy()).save(tmp_path / "images" / f"c{k}" / f"{i}.png")
    return {"module": name, "images": str(tmp_path / "images"), "root": str(tmp_path)}


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


def _model(user: dict[str, str], factory: str) -> list[str]:
    return ["--model", f"{user['module']}:{factory}", "--weights", f"{factory}.pt"]


def test_own_rgb_model_on_own_image_folder(
    user: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(user["root"]) / "run"
    data = ["--data", f"imagefolder:{user['images']}", "--image-size", "16", "--no-normalize"]
    code = _run(["quantize", *_model(user, "rgb16"), *data, *RUN, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test_images"] == 3 * CLASSES
    assert metrics["config"]["image_size"] == 16 and metrics["config"]["normalize"] is None
    spec = metrics["input_spec"]
    assert (spec["channels"], spec["height"], spec["width"], spec["image_size"]) == (3, 16, 16, 16)
    assert spec["normalization"] is None and metrics["objects"] == {}
    assert (out / "student.pt").is_file()


def test_own_data_set_from_code(user: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out = Path(user["root"]) / "run"
    data = ["--data", f"{user['module']}:pixels", "--method", "real"]
    code = _run(["quantize", *_model(user, "rgb16"), *data, *RUN, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["num_test_images"] == 8


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("case", "pieces"),
    [
        # ImageNet-style default: 224x224 images for a model that takes 16x16 ones.
        ("size", ["(3, 224, 224)", "--image-size"]),
        # RGB images for the shipped 1-channel teacher (resized to its 28x28 by default).
        ("channels", ["(3, 28, 28)", "(1, 28, 28)", "channel"]),
        # Labels 0..2 for a model with 3 outputs is fine; a 4th class folder is not.
        ("classes", ["0..3", "3 outputs", "at least 4 classes"]),
    ],
)
def test_mismatch_fails_before_any_output(
    case: str, pieces: list[str], user: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(user["root"]) / "run"
    images = Path(user["images"])
    if case == "classes":
        (images / "c3").mkdir()
        (images / "c0" / "0.png").rename(images / "c3" / "0.png")
    model = ["--model", "resnet8_fashion_mnist"] if case == "channels" else _model(user, "fixed")
    extra = ["--image-size", "16"] if case == "classes" else []
    args = ["quantize", *model, "--data", f"imagefolder:{images}", *extra, *RUN]
    assert _run([*args, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    for piece in pieces:
        assert piece in err, (piece, err)
    assert not out.exists()


def test_empty_image_folder_fails_before_any_output(
    user: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(user["root"]) / "run"
    empty = Path(user["root"]) / "empty"
    empty.mkdir()
    args = ["quantize", *_model(user, "fixed"), "--data", f"imagefolder:{empty}", *RUN]
    assert _run([*args, "--out", str(out)]) == 1
    assert "no class sub-folders" in _one_line_error(capsys)
    assert not out.exists()


def test_missing_fashion_mnist_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchvision.datasets import FashionMNIST

    folder = tmp_path / "fmnist"
    folder.mkdir()
    monkeypatch.setenv("RISLOSS_FASHION_MNIST", str(folder))
    monkeypatch.delenv("RISLOSS_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed port
    out = tmp_path / "run"
    assert _run(["quantize", "--model", "resnet8_fashion_mnist", *RUN, "--out", str(out)]) == 1
    err = _one_line_error(capsys)
    assert str(folder) in err and "download with torchvision was tried and failed" in err
    assert list(folder.iterdir()) == [] and not out.exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--image-size", "0"], "--image-size"),
        (["--image-size", "big"], "--image-size"),
        (["--normalize", "0.5,0.5", "0.2"], "MEAN and STD need as many values"),
        (["--normalize", "0.5", "0"], "STD values must be > 0"),
        (["--normalize", "0.5", "x"], "comma-separated numbers"),
        (["--normalize", "0.5", "0.5", "--no-normalize"], "not allowed with"),
        (["--data", "mod:"], "--data"),
    ],
)
def test_cli_bad_data_options(
    args: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["quantize", *args, "--out", str(tmp_path / "run")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_data_options_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests._cli import config_of

    def config(*args: str) -> TrainConfig:
        return config_of(["quantize", *args], monkeypatch, tmp_path)

    assert (config().image_size, config().normalize) == ("default", "default")
    custom = config("--image-size", "32", "--normalize", "0.5,0.4,0.3", "0.2,0.2,0.2")
    assert custom.image_size == 32
    assert custom.normalize == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert config("--image-size", "none", "--no-normalize").image_size is None
    assert config("--no-normalize").normalize is None
    assert config("--data", "cifar100").data == "cifar100"
    assert config("--data", "pkg.mod:make").data == "pkg.mod:make"
    assert TrainConfig.from_dict(custom.to_dict()) == custom  # JSON lists come back as tuples


def _objects(user: dict[str, str]) -> dict[str, object]:
    """The user's model (with its weights) and data sets, as objects."""
    import importlib

    mod = importlib.import_module(user["module"])
    model = mod.rgb16()
    model.load_state_dict(torch.load(Path(user["root"]) / "rgb16.pt", weights_only=True))
    return {"model": model, "test_data": mod.pixels("test"), "train_data": mod.pixels("train")}


SMALL = dict(iters=2, warmup=1, batch_size=4, method="real")


def test_objects_in_train_as_their_names_do(user: dict[str, str]) -> None:
    """A model object and data set objects give the run that their names give, bit for bit."""
    root = Path(user["root"])
    named = TrainConfig(
        model=f"{user['module']}:rgb16",
        weights=str(root / "rgb16.pt"),
        data=f"{user['module']}:pixels",
        **SMALL,
    )
    by_name = train(named, root / "named", log=None, progress=False)
    objects = _objects(user)
    model = objects["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    given = train(TrainConfig(**SMALL), root / "objects", log=None, progress=False, **objects)
    assert given["history"] == by_name["history"]
    assert given["quant_top1"] == by_name["quant_top1"]
    assert_same_state(root / "named" / "student.pt", root / "objects" / "student.pt")
    assert given["input_spec"] == by_name["input_spec"]
    assert by_name["objects"] == {}
    assert set(given["objects"]) == {"model", "test_data", "train_data"}
    assert given["objects"]["test_data"] == "torch.utils.data.dataset.TensorDataset"
    assert given["objects"]["model"].endswith(type(model).__qualname__)
    # The object itself is left as it was: a copy was trained against.
    assert model.training and all(p.requires_grad for p in model.parameters())  # type: ignore[attr-defined]
    for name, value in model.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(value, before[name]), name


def test_bad_objects_are_refused_before_any_output(user: dict[str, str]) -> None:
    root = Path(user["root"])
    objects = _objects(user)
    cases = [
        ({"train_data": objects["train_data"]}, {"method": "ris"}, ValueError, "method='real'"),
        ({"test_data": objects["test_data"]}, {}, ValueError, "needs train_data too"),
        ({"model": "resnet8_fashion_mnist"}, {}, TypeError, "TrainConfig.model"),
        ({"test_data": "fashion-mnist"}, {}, TypeError, "TrainConfig.data"),
        ({"model": objects["model"]}, {"weights": "rgb16.pt"}, ValueError, "weights="),
        ({"model": objects["model"], "test_data": objects["test_data"]}, {"method": "ris",
         "normalize": ((0.5, 0.5), (0.2, 0.2))}, ValueError, "normalize: 2 mean"),
    ]  # fmt: skip
    for i, (given, changes, error, match) in enumerate(cases):
        config = TrainConfig(**{**SMALL, **changes})
        with pytest.raises(error, match=match):
            train(config, root / f"out{i}", log=None, **given)  # type: ignore[arg-type]
        assert not (root / f"out{i}").exists()
