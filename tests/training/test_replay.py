"""The replay pool of past batches: a ring buffer whose state round-trips exactly."""

from __future__ import annotations

import pytest
import torch

from risloss.training import ReplayPool


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
    with pytest.raises(ValueError, match="replay_size is 4"):
        ReplayPool(capacity=4).load_state_dict(pool.state_dict())
