"""Data-parallel runs under ``torchrun``: process group, collectives with gradients, global BN.

A run launched by ``torchrun --nproc_per_node=K`` (or on several nodes) has ``K`` processes
(*ranks*), each with its own batch. :func:`init_from_env` reads the launcher's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), sets up the process group (``gloo`` on the CPU,
``nccl`` on GPUs) and returns a :class:`DistributedContext`. The rest of the module makes the
quantities that depend on the whole batch come out as in a single process that holds the
concatenation of every rank's batch (the *global batch*):

- :func:`all_gather_differentiable` concatenates a tensor over ranks and lets the gradient flow
  back to the rank that owns each slice (for the label-correlation penalty);
- :func:`all_reduce_moments` combines per-rank batch means and variances into those of the
  global batch (for the BNS loss), differentiably;
- :class:`GlobalBatchNorm` (via :func:`convert_batchnorm`) normalizes with the statistics of the
  global batch, the CPU-capable counterpart of :class:`torch.nn.SyncBatchNorm`.

Outside a distributed run (no process group, or a single process) every helper is the identity
or a no-op, and nothing here touches :mod:`torch.distributed`.

Why no extra scaling is needed. DistributedDataParallel averages the parameter gradients of the
``K`` ranks. A loss term that is a mean over the local batch (cross-entropy, the robustness
loss) then gives the gradient of the mean over the global batch. A term computed from gathered
or reduced tensors (the correlation penalty, the global BNS loss) has the same value ``G`` on
every rank; the backward of the gather (an all-reduce of the incoming gradients, then the own
slice) hands each rank ``K`` times the gradient of ``G`` through its own slice, and the average
over ranks turns the sum of the ``K`` slices' contributions times ``K`` back into the gradient of
``G``. ``tests/test_distributed.py`` checks it against a single process on the concatenated batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from risloss.functional import BNStatistics

__all__ = [
    "RANK_SEED_STRIDE",
    "DistributedContext",
    "GlobalBatchNorm",
    "all_gather_differentiable",
    "all_reduce_moments",
    "convert_batchnorm",
    "init_from_env",
    "is_distributed",
    "local_batch_statistics",
    "rank_seed",
]

RANK_SEED_STRIDE = 1_000_000_007
"""Rank ``r`` of a run with seed ``s`` draws its images from seed ``s + r * RANK_SEED_STRIDE``."""


def _dist() -> Any:
    """:mod:`torch.distributed` if this build has it and a process group is up, else ``None``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialized.

    Example:
        >>> from risloss.distributed import is_distributed
        >>> is_distributed()
        False
    """
    dist = _dist()
    return dist is not None and dist.get_world_size() > 1


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random draws in a run seeded with ``seed``.

    ``seed + rank * RANK_SEED_STRIDE`` (a large prime): rank 0 draws exactly what a
    single-process run draws, the other ranks draw independent streams.

    Args:
        seed: the run's seed, ``>= 0``.
        rank: the process rank, ``>= 0``.

    Returns:
        The seed for :meth:`torch.Generator.manual_seed`.

    Raises:
        ValueError: a negative ``seed`` or ``rank``.

    Example:
        >>> from risloss.distributed import rank_seed
        >>> rank_seed(3, 0), rank_seed(3, 1)
        (3, 1000000010)
    """
    if seed < 0 or rank < 0:
        raise ValueError(f"seed and rank must be >= 0, got seed={seed}, rank={rank}")
    return seed + rank * RANK_SEED_STRIDE


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


@attrs.frozen(kw_only=True)
class DistributedContext:
    """Where this process stands in a run: its rank, the world size and its device.

    Built by :func:`init_from_env`; a single-process run gets ``world_size == 1`` and no
    process group.

    Attributes:
        rank: this process's global rank, ``0 <= rank < world_size``.
        world_size: number of processes ``K``; the global batch is ``K`` times the per-rank
            batch.
        local_rank: rank on this node (selects the GPU: ``cuda:local_rank``).
        device: the device this rank computes on.
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (single process).
        owns_group: whether :meth:`close` destroys the process group (it was created by
            :func:`init_from_env`, not by the caller).

    Example:
        >>> import torch
        >>> from risloss.distributed import DistributedContext
        >>> ctx = DistributedContext()
        >>> ctx.distributed, ctx.is_main(), ctx.world_size
        (False, True, 1)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether the run has more than one process."""
        return self.world_size > 1

    def is_main(self) -> bool:
        """Whether this process is rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        dist = _dist()
        if self.distributed and dist is not None:
            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel in a distributed run; else ``module``."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of every rank, concatenated (differentiable); ``x`` in a single process."""
        return all_gather_differentiable(x) if self.distributed else x

    def global_statistics(self, stats: BNStatistics, batch: int) -> BNStatistics:
        """``stats`` with the batch moments of the global batch (``batch`` rows per rank)."""
        if not self.distributed:
            return stats
        means, variances, _ = all_reduce_moments(stats.batch_means, stats.batch_vars, batch)
        return attrs.evolve(stats, batch_means=means, batch_vars=variances)

    def average(self, values: dict[str, float], *, skip: Sequence[str] = ()) -> None:
        """Average ``values`` over ranks in place, but the keys in ``skip`` (a no-op in a single
        process)."""
        dist = _dist()
        if not self.distributed or dist is None:
            return
        keys = sorted(k for k in values if k not in skip)
        packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(packed)
        for k, v in zip(keys, packed.tolist(), strict=True):
            values[k] = v / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (``flag`` itself in a single process)."""
        dist = _dist()
        if not self.distributed or dist is None:
            return flag
        packed = torch.tensor([float(flag)], dtype=torch.float64, device=self.device)
        dist.all_reduce(packed)
        return bool(packed.item() > 0)

    def evaluate(self, model: nn.Module, dataset: Any) -> float:
        """Top-1 accuracy of ``model`` on ``dataset`` in percent, the same on every rank.

        In a distributed run each rank scores every ``world_size``-th image and the counts
        are summed.
        """
        from risloss._eval import evaluate

        dist = _dist()
        if not self.distributed or dist is None:
            return evaluate(model, dataset)
        n = len(dataset)
        rows = range(self.rank, n, self.world_size)
        correct = 0
        if len(rows):
            images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
            shard: Any
            if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
                index = torch.arange(self.rank, n, self.world_size)
                shard = _TensorDataset(images[index], labels[index])
            else:
                shard = torch.utils.data.Subset(dataset, rows)
            correct = round(evaluate(model, shard) * len(rows) / 100.0)
        total = torch.tensor([correct], dtype=torch.int64, device=self.device)
        dist.all_reduce(total)
        return 100.0 * int(total.item()) / n

    def all_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
        dist = _dist()
        if not self.distributed or dist is None:
            return [obj]
        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, obj)
        return every

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (``obj`` in a single process)."""
        dist = _dist()
        if not self.distributed or dist is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if :func:`init_from_env` created it; else do nothing."""
        dist = _dist()
        if self.owns_group and dist is not None:
            dist.destroy_process_group()


class _TensorDataset:
    """A data set of ``(image, label)`` pairs held as two tensors of equal length."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def init_from_env(device: str | torch.device = "cpu") -> DistributedContext:
    """Set up data-parallel execution from the ``torchrun`` environment, if there is one.

    ``torchrun`` (``python -m torch.distributed.run``) starts every process with ``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. With ``WORLD_SIZE > 1``
    this initializes the default process group (``env://``) with the ``gloo`` backend for a CPU
    ``device`` and ``nccl`` for CUDA, where each process takes the GPU ``cuda:LOCAL_RANK`` (and
    makes it the current device). A process group the caller already initialized is used as it
    is and left open by :meth:`DistributedContext.close`. Without the variables, or with
    ``WORLD_SIZE=1``, nothing is initialized and the context describes a single process on
    ``device``.

    Args:
        device: ``"cpu"``, ``"cuda"`` (one GPU per process, picked by ``LOCAL_RANK``) or a
            device the single-process run uses as it is.

    Returns:
        The :class:`DistributedContext` of this process.

    Raises:
        ValueError: malformed variables; ``RANK`` outside ``[0, WORLD_SIZE)``; a distributed run
            on ``"cuda:N"`` with ``N != LOCAL_RANK`` (give ``"cuda"``), on a device type other
            than CPU and CUDA, or on a GPU that does not exist; ``torch.distributed`` missing
            from this build of torch.

    Example:
        >>> from risloss.distributed import init_from_env
        >>> ctx = init_from_env("cpu")  # not launched by torchrun: a single process
        >>> ctx.world_size, ctx.backend, str(ctx.device)
        (1, None, 'cpu')
    """
    dev = torch.device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {world_size}")
    if world_size == 1:
        return DistributedContext(device=dev)
    rank = _env_int("RANK", -1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(
            f"environment variable RANK must be in [0, WORLD_SIZE={world_size}), got {rank}; "
            "launch with torchrun, which sets it"
        )
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this build of torch has no torch.distributed")
    if dev.type == "cuda":
        if dev.index is not None and dev.index != local_rank:
            raise ValueError(
                f"device {str(dev)!r} in a distributed run: give device='cuda', each process "
                f"then uses cuda:LOCAL_RANK (this one: cuda:{local_rank})"
            )
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(
                f"LOCAL_RANK={local_rank} needs GPU cuda:{local_rank}, but {count} GPU(s) are "
                "visible; start at most that many processes per node"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(
            f"a distributed run needs device 'cpu' (gloo) or 'cuda' (nccl), got {str(dev)!r}"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size
        )
    else:
        backend = str(dist.get_backend())
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise ValueError(
                "the initialized process group disagrees with WORLD_SIZE/RANK: "
                f"{dist.get_world_size()}/{dist.get_rank()} vs {world_size}/{rank}"
            )
    return DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=dev,
        backend=backend,
        owns_group=owns,
    )


class _AllGather(torch.autograd.Function):
    """Concatenate ``x`` over ranks along dim 0; backward: sum the gradients, keep own slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.contiguous()
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = grad.contiguous().clone()
        dist.all_reduce(total)  # every rank's loss may depend on every slice
        return total.narrow(0, ctx.rank * ctx.rows, ctx.rows)


def all_gather_differentiable(x: torch.Tensor) -> torch.Tensor:
    r"""Concatenate ``x`` over all ranks along dimension 0, with gradients.

    Rank ``r``'s tensor becomes rows ``r*B : (r+1)*B`` of the result, on every rank. The
    backward all-reduces (sums) the incoming gradients over ranks and returns this rank's
    slice: a loss :math:`G` computed on every rank from the gathered tensor gives rank ``r``
    :math:`\sum_k \partial G_k / \partial x_r`, i.e. ``K`` times the gradient of ``G`` when all
    ranks compute the same ``G`` - which DistributedDataParallel's averaging over ``K`` ranks
    cancels. Every rank must call it with a tensor of the same shape and dtype, in the same
    order (it is a collective). Without a distributed run it returns ``x`` itself.

    Args:
        x: a tensor ``(B, *)``, the same shape on every rank.

    Returns:
        ``(K * B, *)``.

    Example:
        >>> import torch
        >>> from risloss.distributed import all_gather_differentiable
        >>> x = torch.randn(4, 3)
        >>> all_gather_differentiable(x) is x  # a single process
        True
    """
    if not is_distributed():
        return x
    out: torch.Tensor = _AllGather.apply(x)
    return out


def all_reduce_moments(
    means: Sequence[torch.Tensor], variances: Sequence[torch.Tensor], count: float
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    r"""Combine per-rank batch means and biased variances into those of the global batch.

    Rank ``k`` holds, for every entry ``l``, a mean :math:`m_{k,l}` and a biased variance
    :math:`v_{k,l}` over :math:`n_k` samples (``count``). With :math:`w_k = n_k / \sum_j n_j`,
    the moments of the global batch are (the law of total variance, numerically stable)

    .. math::

        m_l = \sum_k w_k m_{k,l}, \qquad
        v_l = \sum_k w_k \left(v_{k,l} + (m_{k,l} - m_l)^2\right).

    Only the ratios of the counts matter, so for BatchNorm inputs of different spatial sizes the
    number of samples serves every layer. One differentiable all-gather carries every entry;
    gradients reach each rank's local moments (see :func:`all_gather_differentiable`). Without
    a distributed run the inputs come back unchanged.

    Args:
        means: per-entry local means (e.g. one ``(C_l,)`` per BatchNorm layer).
        variances: per-entry local biased variances, shaped as ``means``.
        count: this rank's number of samples (``> 0``).

    Returns:
        ``(global_means, global_variances, total_count)``.

    Raises:
        ValueError: ``means`` and ``variances`` of different lengths or shapes, or
            ``count <= 0``.

    Example:
        >>> import torch
        >>> from risloss.distributed import all_reduce_moments
        >>> m, v = [torch.tensor([1.0, 2.0])], [torch.tensor([0.5, 0.5])]
        >>> means, variances, total = all_reduce_moments(m, v, count=8)
        >>> means[0].tolist(), variances[0].tolist(), total
        ([1.0, 2.0], [0.5, 0.5], 8.0)
    """
    if len(means) != len(variances):
        raise ValueError(
            f"means and variances must have the same length, got {len(means)} and {len(variances)}"
        )
    for i, (m, v) in enumerate(zip(means, variances, strict=True)):
        if m.shape != v.shape:
            raise ValueError(
                f"means[{i}] and variances[{i}] must have the same shape, got "
                f"{tuple(m.shape)} and {tuple(v.shape)}"
            )
    if not count > 0:
        raise ValueError(f"count must be > 0, got {count}")
    if not is_distributed() or not means:
        return list(means), list(variances), float(count)
    sizes = [m.numel() for m in means]
    ref = means[0]
    flat = torch.cat(
        [
            torch.full((1,), float(count), dtype=ref.dtype, device=ref.device),
            *(m.reshape(-1) for m in means),
            *(v.reshape(-1) for v in variances),
        ]
    )
    gathered = all_gather_differentiable(flat.unsqueeze(0))  # (K, 1 + 2S)
    counts = gathered[:, 0].detach()
    total = counts.sum()
    weights = (counts / total).unsqueeze(1)
    s = sum(sizes)
    rank_means, rank_vars = gathered[:, 1 : 1 + s], gathered[:, 1 + s :]
    mean = (weights * rank_means).sum(0)
    var = (weights * (rank_vars + (rank_means - mean).square())).sum(0)
    out_means = [t.reshape(m.shape) for t, m in zip(mean.split(sizes), means, strict=True)]
    out_vars = [t.reshape(v.shape) for t, v in zip(var.split(sizes), variances, strict=True)]
    return out_means, out_vars, float(total)


class GlobalBatchNorm(_BatchNorm):
    r"""BatchNorm whose training statistics are those of the global batch over all ranks.

    In training mode (or without running statistics) each rank computes the per-channel mean
    and biased variance of its input ``(N, C, *)``, :func:`all_reduce_moments` combines them,
    and the input is normalized with the result,
    :math:`y = (x - \mu) / \sqrt{\sigma^2 + \epsilon} \cdot \gamma + \beta`; the running
    statistics are updated as :class:`torch.nn.BatchNorm2d` would on the concatenated batch
    (unbiased variance over the global element count). The forward is then the same function of
    the global batch as a single process computes, and gradients flow across ranks. In eval
    mode, in a single process, or inside :func:`local_batch_statistics`, it is plain BatchNorm.

    It accepts inputs of any rank ``>= 2`` and works with every backend (``gloo`` included),
    where :class:`torch.nn.SyncBatchNorm` needs GPUs. Build it with :func:`convert_batchnorm`;
    its parameters, buffers and ``state_dict`` keys are those of the layer it replaces.

    Attributes:
        synchronize: combine statistics over ranks in training mode (plain Python flag).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.distributed import convert_batchnorm
        >>> model = convert_batchnorm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
        >>> type(model[1]).__name__
        'GlobalBatchNorm'
        >>> model(torch.randn(8, 1, 6, 6)).shape
        torch.Size([8, 4, 4, 4])
    """

    synchronize: bool = True

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input (N, C, *) of 2 or more dims, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not (batch_stats and self.synchronize and is_distributed()):
            out: torch.Tensor = super().forward(input)
            return out
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        local_var, local_mean = torch.var_mean(input, dim=dims, correction=0)
        count = input.numel() // max(c, 1)
        (mean,), (var,), total = all_reduce_moments([local_mean], [local_var], count)
        if total <= 1:
            raise ValueError(
                f"expected more than 1 value per channel when training, got {int(total)}"
            )
        if self.training and self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            with torch.no_grad():
                unbiased = var.detach() * (total / (total - 1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        shape = (1, c) + (1,) * (input.dim() - 2)
        out = (input - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a :class:`GlobalBatchNorm`, in place.

    The new layers share the old ones' parameters and buffers (same tensors, same
    ``state_dict`` keys), and keep their training mode and hyper-parameters. Like
    :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`, but for every backend.

    Args:
        module: any module; a bare BatchNorm layer is converted and returned.

    Returns:
        ``module`` (or its replacement when ``module`` is itself a BatchNorm layer).

    Example:
        >>> from torch import nn
        >>> from risloss.distributed import GlobalBatchNorm, convert_batchnorm
        >>> net = convert_batchnorm(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
        >>> isinstance(net[1], GlobalBatchNorm), list(net.state_dict())[2]
        (True, '1.weight')
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device="meta",
        )
        # Share the very tensors, so optimizers and references stay valid.
        new._parameters = module._parameters
        new._buffers = module._buffers
        new._non_persistent_buffers_set = module._non_persistent_buffers_set
        new.train(module.training)
        return new
    for name, child in module.named_children():
        replacement = convert_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


@contextmanager
def local_batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Let every :class:`GlobalBatchNorm` of ``model`` use this rank's batch only, inside the block.

    For forwards that only one rank runs, or that every rank runs on the same (already
    gathered) batch; the flags are restored on exit, also when the block raises.

    Args:
        model: any module.

    Yields:
        ``model``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.distributed import convert_batchnorm, local_batch_statistics
        >>> net = convert_batchnorm(nn.Sequential(nn.BatchNorm1d(2)))
        >>> with local_batch_statistics(net):
        ...     net[0].synchronize
        False
        >>> net[0].synchronize
        True
    """
    layers = [m for m in model.modules() if isinstance(m, GlobalBatchNorm)]
    saved = [m.synchronize for m in layers]
    try:
        for m in layers:
            m.synchronize = False
        yield model
    finally:
        for m, flag in zip(layers, saved, strict=True):
            m.synchronize = flag
