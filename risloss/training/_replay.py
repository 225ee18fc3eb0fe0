"""A pool of past synthesized batches that extra student steps draw from."""

from __future__ import annotations

from typing import Any

import torch

from risloss._resources import pool_image_bytes
from risloss._validators import check, int_in

__all__ = ["ReplayPool"]


class ReplayPool:
    """A ring buffer of images with the teacher's logits and (optionally) their labels.

    Labels are stored as class weights ``(C,)`` per image (hard labels one-hot), so hard and
    soft labels share one buffer; a run whose batches carry no labels stores none. The oldest
    images are overwritten first. :meth:`state_dict` holds the filled part, so a resumed run
    draws exactly what an uninterrupted one would.

    Args:
        capacity: images the pool holds (at least 1).

    Example:
        >>> import torch
        >>> from risloss.training import ReplayPool
        >>> pool = ReplayPool(capacity=4)
        >>> pool.add(torch.zeros(3, 1, 2, 2), torch.zeros(3, 5), torch.tensor([0, 1, 2]))
        >>> pool.add(torch.ones(3, 1, 2, 2), torch.zeros(3, 5), torch.tensor([3, 4, 0]))
        >>> len(pool), pool.images[:, 0, 0, 0].tolist()  # the first two images overwritten
        (4, [1.0, 1.0, 0.0, 1.0])
        >>> images, logits, labels = pool.sample(2, torch.Generator().manual_seed(0))
        >>> images.shape, labels.shape
        (torch.Size([2, 1, 2, 2]), torch.Size([2, 5]))
    """

    def __init__(self, capacity: int) -> None:
        check(int_in(1), "capacity", capacity)
        self.capacity = capacity
        self.images: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.position = 0  # where the next image goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def image_bytes(image_shape: tuple[int, ...], num_classes: int) -> int:
        """The bytes one stored image takes: its float32 values, the teacher's logits and its
        label row (``num_classes`` float32 each).

        Example:
            >>> from risloss.training import ReplayPool
            >>> ReplayPool.image_bytes((1, 28, 28), 10)
            3216
        """
        return pool_image_bytes(image_shape, num_classes)

    @staticmethod
    def capacity_for(
        replay_size: int, memory_mb: float, image_shape: tuple[int, ...], num_classes: int
    ) -> int:
        """The images a pool keeps: ``replay_size``, or fewer when ``memory_mb`` megabytes
        (of ``2**20`` bytes) cannot hold them (see :meth:`image_bytes`).

        Args:
            replay_size: the images asked for (0: no pool).
            memory_mb: the pool's memory budget in megabytes.
            image_shape: ``(C, H, W)`` of one image.
            num_classes: the teacher's classes.

        Returns:
            ``min(replay_size, budget // bytes per image)``, possibly 0.

        Example:
            >>> from risloss.training import ReplayPool
            >>> ReplayPool.capacity_for(4096, 64, (1, 28, 28), 10)  # all of them fit
            4096
            >>> ReplayPool.capacity_for(4096, 64, (3, 224, 224), 1000)  # 64 MB of them
            109
        """
        budget = int(memory_mb * 2**20)
        return min(int(replay_size), budget // ReplayPool.image_bytes(image_shape, num_classes))

    @torch.no_grad()
    def add(self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Store a batch (detached copies); ``labels``: ``(B,)`` class indices, ``(B, C)``
        class weights, or ``None`` (then every batch must come without labels)."""
        b, c = logits.shape
        if labels is not None and not labels.dtype.is_floating_point:
            labels = torch.nn.functional.one_hot(labels, c).to(logits.dtype)
        if self.images is None:
            self.images = images.new_zeros((self.capacity, *images.shape[1:]))
            self.logits = logits.new_zeros((self.capacity, c))
            self.labels = None if labels is None else logits.new_zeros((self.capacity, c))
        assert self.logits is not None
        if (labels is None) != (self.labels is None):
            raise ValueError("every batch added to a ReplayPool must carry labels, or none")
        idx = (self.position + torch.arange(b, device=images.device)) % self.capacity
        self.images[idx] = images.detach()
        self.logits[idx] = logits.detach()
        if self.labels is not None and labels is not None:
            self.labels[idx] = labels.detach().to(self.labels.dtype)
        self.position = int((self.position + b) % self.capacity)
        self.size = min(self.size + b, self.capacity)

    def sample(
        self, n: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``n`` stored images drawn uniformly with replacement (indices from ``rng``), with
        their logits and labels."""
        if self.images is None or self.logits is None or self.size == 0:
            raise ValueError("the ReplayPool is empty: add a batch before sampling")
        idx = torch.randint(0, self.size, (n,), generator=rng).to(self.images.device)
        labels = None if self.labels is None else self.labels[idx]
        return self.images[idx], self.logits[idx], labels

    def state_dict(self) -> dict[str, Any]:
        """The stored images, logits and labels (the filled part) and the write position."""
        n = self.size
        return {
            "capacity": self.capacity,
            "position": self.position,
            "size": n,
            "images": None if self.images is None else self.images[:n].clone(),
            "logits": None if self.logits is None else self.logits[:n].clone(),
            "labels": None if self.labels is None else self.labels[:n].clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (same capacity)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"the checkpoint's replay pool holds {state['capacity']} images, this run's "
                f"pool holds {self.capacity} (replay_size, capped by replay_memory_mb)"
            )
        n = int(state["size"])
        self.position, self.size = int(state["position"]), n
        if state["images"] is None:
            self.images = self.logits = self.labels = None
            return
        images, logits = state["images"], state["logits"]
        self.images = images.new_zeros((self.capacity, *images.shape[1:]))
        self.logits = logits.new_zeros((self.capacity, logits.shape[1]))
        self.images[:n], self.logits[:n] = images, logits
        self.labels = None
        if state["labels"] is not None:
            self.labels = logits.new_zeros((self.capacity, logits.shape[1]))
            self.labels[:n] = state["labels"]
