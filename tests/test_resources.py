"""Memory estimates from a run's settings, and early refusals naming the option to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import risloss._resources as resources
from risloss._resources import (
    GENERATOR_VALUES_PER_PIXEL,
    ResourceError,
    available_disk,
    available_memory,
    check_disk,
    check_memory,
    estimate_memory,
)

GIB = 2**30


def test_the_estimate_adds_up_the_buffers() -> None:
    c, h, w, k = 3, 32, 32, 10
    need = estimate_memory(
        image_shape=(c, h, w), num_classes=k, batch_size=64, replay_size=4096,
        num_images=512, eval_images=1000,
    )  # fmt: skip
    assert need.pool == 4096 * (c * h * w + k + k) * 4  # images, logits, one-hot labels
    assert need.batch == 64 * h * w * (GENERATOR_VALUES_PER_PIXEL + 3 * c) * 4
    assert need.images == 512 * (c * h * w + k) * 4
    assert need.evaluation == 1000 * c * h * w * 4
    assert need.total == need.pool + need.batch + need.images + need.evaluation
    assert need.checkpoint == need.pool
    # The figure: a 32x32 RGB run's pool of 4,096 images is about 50 MB in memory
    # and in every checkpoint; at 224x224 about 2.4 GB.
    assert 48 * 2**20 < need.pool < 49 * 2**20
    big = estimate_memory(image_shape=(3, 224, 224), num_classes=1000, batch_size=1,
                          replay_size=4096)  # fmt: skip
    assert 2.4e9 < big.pool < 2.5e9
    noise = estimate_memory(image_shape=(c, h, w), num_classes=k, batch_size=64, generator=False)
    assert noise.batch == 64 * c * h * w * 2 * 4 and noise.pool == 0


def test_generator_values_per_pixel_match_the_generator() -> None:
    from risloss.models import Generator

    for side, channels in ((32, 3), (28, 1)):
        g = Generator(num_classes=10, image_size=side, channels=channels)
        params = {p.data_ptr() for p in g.parameters()}
        saved: list[int] = []

        def keep(
            t: torch.Tensor, params: set[int] = params, saved: list[int] = saved
        ) -> torch.Tensor:
            if t.data_ptr() not in params:  # activations, not the weights
                saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            g(torch.randn(4, g.latent_dim), torch.arange(4)).sum().backward()
        # The estimate is a floor of what the backward pass keeps, and close to it.
        estimate = 4 * (GENERATOR_VALUES_PER_PIXEL + 3 * channels) * side * side
        assert estimate <= sum(saved) < 1.02 * estimate


def test_absurd_settings_are_refused_naming_the_option() -> None:
    common: dict[str, Any] = {"num_classes": 10, "available": 16 * GIB}
    with pytest.raises(ResourceError, match=r"^--image-size 100000: one 3x100000x100000 image"):
        check_memory(image_shape=(3, 100_000, 100_000), batch_size=8, image_size=100_000,
                     **common)  # fmt: skip
    with pytest.raises(ResourceError, match=r"^--batch-size 100000000000000000000: a batch"):
        check_memory(image_shape=(1, 28, 28), batch_size=10**20, **common)
    with pytest.raises(ResourceError, match=r"^--replay-size 10000000: the replay pool needs"):
        check_memory(image_shape=(1, 28, 28), batch_size=256, replay_size=10_000_000, **common)
    with pytest.raises(ResourceError, match=r"^--num-images 1000000000: the synthesized images"):
        check_memory(image_shape=(1, 28, 28), batch_size=256, num_images=10**9, **common)
    with pytest.raises(ResourceError, match=r"^--eval-limit: the 100000000 evaluation images"):
        check_memory(image_shape=(1, 28, 28), batch_size=256, eval_images=10**8, **common)
    # Without --image-size the batch size is what to change.
    with pytest.raises(ResourceError, match=r"^--batch-size 8: even one 3x100000x100000 image"):
        check_memory(image_shape=(3, 100_000, 100_000), batch_size=8, **common)


@pytest.mark.parametrize("setting", ["batch_size", "replay_size", "num_images"])
def test_the_suggested_limit_fits_and_one_more_does_not(setting: str) -> None:
    room = 3 * GIB
    settings: dict[str, Any] = {"batch_size": 64, "replay_size": 4096, "num_images": 0}
    settings[setting] = 10**9
    with pytest.raises(ResourceError) as err:
        check_memory(image_shape=(3, 32, 32), num_classes=10, available=room, **settings)
    suggested = (
        int(str(err.value).rsplit(" ", 1)[-1])
        if setting != "num_images"
        else int(str(err.value).split("use at most --num-images ")[1].split(",")[0])
    )
    settings[setting] = suggested
    check_memory(image_shape=(3, 32, 32), num_classes=10, available=room, **settings)
    settings[setting] = suggested + 1
    with pytest.raises(ResourceError):
        check_memory(image_shape=(3, 32, 32), num_classes=10, available=room, **settings)


def test_on_a_gpu_the_pool_and_batch_count_there_the_images_on_the_host() -> None:
    shape: dict[str, Any] = {"image_shape": (3, 32, 32), "num_classes": 10}
    # The pool fits the host but not the GPU.
    with pytest.raises(ResourceError, match=r"more than the 1\.07 GB of cuda:0 memory free"):
        check_memory(**shape, batch_size=8, replay_size=100_000, device="cuda:0",
                     available=GIB, host_available=64 * GIB)  # fmt: skip
    # The synthesized images fit the GPU (they are not there) but not the host.
    with pytest.raises(ResourceError, match="--num-images"):
        check_memory(**shape, batch_size=8, num_images=10**6, device="cuda:0",
                     available=64 * GIB, host_available=GIB)  # fmt: skip
    check_memory(**shape, batch_size=8, num_images=10**4, device="cuda:0",
                 available=GIB, host_available=GIB)  # fmt: skip


def test_unknown_memory_refuses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": None)
    need = check_memory(image_shape=(3, 32, 32), num_classes=10, batch_size=10**20)
    assert need.batch > 10**25
    assert available_memory("mps") is None


def test_messages_can_name_the_arguments() -> None:
    names = {**resources.OPTION_NAMES, "replay_size": "replay_size="}
    with pytest.raises(ResourceError, match=r"^replay_size= 10000000: .* use at most replay_size="):
        check_memory(image_shape=(1, 28, 28), num_classes=10, batch_size=8,
                     replay_size=10_000_000, available=GIB, names=names)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"replay_size": -1}, "replay_size must be an integer >= 0, got -1"),
        ({"image_shape": (3, 32)}, r"image_shape must be \(C, H, W\), got \(3, 32\)"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"image_shape": (3, 32, 32), "num_classes": 10, "batch_size": 8}
    with pytest.raises(ValueError, match=message):
        estimate_memory(**{**args, **kwargs})  # type: ignore[arg-type]


def test_memory_is_read_from_meminfo_and_the_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 100 kB\nMemAvailable:  50 kB\nSwapFree: 10 kB\nHugePages: 0\n")
    assert resources._meminfo(str(info)) == {
        "MemTotal": 102400, "MemAvailable": 51200, "SwapFree": 10240, "HugePages": 0
    }  # fmt: skip
    group = tmp_path / "cgroup"
    group.mkdir()
    (group / "memory.max").write_text("max\n")
    (group / "memory.current").write_text("100\n")
    assert resources._cgroup_room(str(group)) is None
    (group / "memory.max").write_text("1000\n")
    assert resources._cgroup_room(str(group)) == 900
    monkeypatch.setattr(resources, "_meminfo", lambda: {"MemAvailable": 5000, "SwapFree": 1000})
    monkeypatch.setattr(resources, "_cgroup_room", lambda: 900)
    assert available_memory() == 900
    monkeypatch.setattr(resources, "_cgroup_room", lambda: None)
    assert available_memory() == 6000


def test_a_checkpoint_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    need = estimate_memory(image_shape=(3, 224, 224), num_classes=1000, batch_size=1,
                           replay_size=4096)  # fmt: skip
    check_disk(tmp_path, need, replay_size=4096, free=2 * need.checkpoint)
    with pytest.raises(ResourceError, match=r"^--replay-size 4096: each checkpoint holds"):
        check_disk(tmp_path / "new" / "out", need, replay_size=4096, free=need.checkpoint)
    free = available_disk(tmp_path / "not" / "yet")
    assert free is not None and free > 0
