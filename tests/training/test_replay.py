"""The replay pool of past batches: a ring buffer whose state round-trips exactly."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch

from risloss._checkpoint import atomic_save
from risloss.cli import main
from risloss.training import ReplayPool, TrainConfig, train
from risloss.training._trainer import check_fit
from tests._data import fashion_mnist_or_skip


def _batch(start: int, n: int = 3, classes: int = 4) -> tuple[torch.Tensor, ...]:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    images = ids.view(n, 1, 1, 1).expand(n, 2, 3, 3).clone()
    logits = ids.view(n, 1).expand(n, classes).clone()
    return images, logits, torch.arange(start, start + n) % classes


def test_keeps_the_newest_images_and_one_hot_labels() -> None:
    pool = ReplayPool(capacity=5)
    for start in (0, 3, 6):  # 9 images into 5 places
        pool.add(*_batch(start))
    assert len(pool) == 5
    assert pool.images is not None and pool.labels is not None
    kept = sorted(pool.images[:, 0, 0, 0].tolist())
    assert kept == [4.0, 5.0, 6.0, 7.0, 8.0]
    for row in range(5):
        image_id = int(pool.images[row, 0, 0, 0])
        assert pool.labels[row].tolist() == torch.eye(4)[image_id % 4].tolist()


def test_samples_only_stored_images_with_their_logits_and_labels() -> None:
    pool = ReplayPool(capacity=100)
    pool.add(*_batch(10, n=4))
    images, logits, labels = pool.sample(50, torch.Generator().manual_seed(1))
    assert images.shape == (50, 2, 3, 3) and labels is not None
    ids = images[:, 0, 0, 0]
    assert set(ids.tolist()) <= {10.0, 11.0, 12.0, 13.0}
    assert len(set(ids.tolist())) > 1  # a draw, not one image repeated
    assert torch.equal(logits[:, 0], ids)
    assert torch.equal(labels.argmax(1), ids.long() % 4)


def test_soft_labels_are_kept_as_given_and_unlabelled_batches_store_none() -> None:
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.6, 0.4]])
    pool = ReplayPool(capacity=4)
    pool.add(torch.zeros(2, 1, 2, 2), torch.zeros(2, 4), soft)
    assert pool.labels is not None and torch.equal(pool.labels[:2], soft)
    bare = ReplayPool(capacity=4)
    bare.add(torch.zeros(2, 1, 2, 2), torch.zeros(2, 4), None)
    assert bare.sample(3, torch.Generator())[2] is None
    with pytest.raises(ValueError, match="must carry labels, or none"):
        bare.add(torch.zeros(2, 1, 2, 2), torch.zeros(2, 4), torch.tensor([0, 1]))


def test_state_round_trip_draws_the_same_batches() -> None:
    pool = ReplayPool(capacity=7)
    for start in (0, 3, 6):
        pool.add(*_batch(start))
    copy = ReplayPool(capacity=7)
    copy.load_state_dict(pool.state_dict())
    for a, b in zip(pool.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    pool.add(*_batch(20))
    copy.add(*_batch(20))
    draws = [p.sample(6, torch.Generator().manual_seed(3)) for p in (pool, copy)]
    for x, y in zip(*draws, strict=True):
        assert torch.equal(x, y)


def test_bad_capacity_empty_pool_and_other_capacity_are_refused() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
            ReplayPool(capacity=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        ReplayPool(capacity=3).sample(1, torch.Generator())
    pool = ReplayPool(capacity=3)
    pool.add(*_batch(0))
    with pytest.raises(ValueError, match=r"this run's pool holds 4 \(replay_size, capped by"):
        ReplayPool(capacity=4).load_state_dict(pool.state_dict())


# The pool's size in bytes ----------------------------------------------------------------


def test_the_default_budget_keeps_every_image_of_small_inputs_and_caps_large_ones() -> None:
    budget = TrainConfig().replay_memory_mb
    assert budget == 64.0
    assert ReplayPool.image_bytes((1, 28, 28), 10) == (784 + 20) * 4
    assert ReplayPool.capacity_for(4096, budget, (1, 28, 28), 10) == 4096
    assert ReplayPool.capacity_for(4096, budget, (3, 32, 32), 10) == 4096
    capped = ReplayPool.capacity_for(4096, budget, (3, 224, 224), 1000)
    per_image = ReplayPool.image_bytes((3, 224, 224), 1000)
    assert capped == 64 * 2**20 // per_image == 109
    assert ReplayPool.capacity_for(50, budget, (3, 224, 224), 1000) == 50  # replay_size wins
    assert ReplayPool.capacity_for(0, budget, (1, 28, 28), 10) == 0


def test_a_capped_pool_of_large_images_keeps_its_checkpoint_within_the_budget(
    tmp_path: Path,
) -> None:
    shape, classes = (3, 224, 224), 1000
    pool = ReplayPool(ReplayPool.capacity_for(4096, 64, shape, classes))
    for _ in range(3):  # 120 images offered, 109 kept
        pool.add(torch.rand(40, *shape), torch.randn(40, classes), torch.randint(0, classes, (40,)))
    assert len(pool) == pool.capacity == 109
    atomic_save({"replay": pool.state_dict()}, tmp_path / "checkpoint.pt")
    size = (tmp_path / "checkpoint.pt").stat().st_size
    assert 109 * ReplayPool.image_bytes(shape, classes) <= size <= 64 * 2**20 + 2**16


def test_a_budget_below_one_batch_is_refused_before_any_work(tmp_path: Path) -> None:
    config = TrainConfig(replay_memory_mb=0.01, batch_size=32)  # 3 images of 1x28x28
    with pytest.raises(ValueError, match=r"^replay_memory_mb 0.01: .* holds 3 images of 1x28x28"):
        check_fit(config, (1, 28, 28), 10, tmp_path)
    check_fit(attrs.evolve(config, replay_memory_mb=0.1), (1, 28, 28), 10, tmp_path)  # 32 fit
    check_fit(attrs.evolve(config, student_steps=1), (1, 28, 28), 10, tmp_path)  # never drawn
    check_fit(attrs.evolve(config, replay_size=0), (1, 28, 28), 10, tmp_path)  # no pool
    assert not list(tmp_path.iterdir())


@pytest.mark.data
def test_the_command_line_refuses_the_budget_in_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "o"
    args = ["quantize", "--iters", "4", "--replay-memory-mb", "0.01", "--out", str(out)]
    assert main(args) == 2
    errors = capsys.readouterr().err.strip().splitlines()  # the run's start line, the refusal
    assert len(errors) <= 2 and not any("Traceback" in line for line in errors)
    assert "error: --replay-memory-mb 0.01: the replay pool then holds 3 images" in errors[-1]
    assert not out.exists()


@pytest.mark.data
def test_a_run_records_the_capped_pool_and_says_so(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    config = TrainConfig(
        method="noise", iters=3, warmup=1, batch_size=8, eval_limit=16, checkpoint_every=2,
        student_steps=2, replay_memory_mb=0.05,
    )  # fmt: skip
    lines: list[str] = []
    metrics = train(config, tmp_path, log=lines.append)
    per_image = ReplayPool.image_bytes((1, 28, 28), 10)
    capacity = int(0.05 * 2**20) // per_image
    assert metrics["replay"] == {"capacity": capacity, "bytes": capacity * per_image}
    assert json.loads((tmp_path / "metrics.json").read_text())["replay"]["capacity"] == capacity
    assert f"replay pool: {capacity} images of 4096" in "\n".join(lines)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["replay"]["capacity"] == capacity


def test_configurations_written_before_the_budget_existed_take_the_default() -> None:
    old = TrainConfig(seed=3).to_dict()
    del old["replay_memory_mb"]
    assert TrainConfig.from_dict(old) == TrainConfig(seed=3)
