"""Combinations of input perturbations: a random choice among several, or a series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast, get_args

import attrs
import torch
from torch import Tensor, nn

from risloss._validators import check, non_negative, one_of
from risloss.perturb._base import InputPerturbation, check_batch, check_images, sample_device
from risloss.perturb._input import (
    Brightness,
    Contrast,
    Cutout,
    GaussianNoise,
    RandomAffine,
    RandomHorizontalFlip,
    RandomResizedCrop,
)

__all__ = [
    "INPUT_POOLS",
    "ChoiceParams",
    "InputPool",
    "Compose",
    "ComposeParams",
    "RandomChoice",
    "Standardized",
    "default_input_perturbation",
]


def _check_ops(name: str, ops: Sequence[InputPerturbation[Any]]) -> list[InputPerturbation[Any]]:
    ops = list(ops)
    if not ops:
        raise ValueError(f"{name} must hold at least one InputPerturbation, got none")
    for i, op in enumerate(ops):
        if not isinstance(op, InputPerturbation):
            raise TypeError(f"{name}[{i}] must be an InputPerturbation, got {type(op).__name__}")
    return ops


def _members(ops: nn.ModuleList) -> list[InputPerturbation[Any]]:
    return [cast(InputPerturbation[Any], op) for op in ops]


@attrs.frozen(eq=False)
class ChoiceParams:
    """Parameters of :class:`RandomChoice`.

    Attributes:
        index: the operator chosen for each sample, integer ``(B,)`` (all equal unless
            ``per_sample``).
        params: for each operator of the pool, its parameters for the whole batch if it was
            chosen for some sample, else ``None``.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise, RandomChoice, RandomHorizontalFlip
        >>> op = RandomChoice([GaussianNoise(0.1), RandomHorizontalFlip(1.0)], p=[0.0, 1.0])
        >>> params = op.sample(torch.randn(2, 1, 4, 4), torch.Generator().manual_seed(0))
        >>> params.index.tolist(), params.params[0] is None
        ([1, 1], True)
    """

    index: Tensor
    params: tuple[Any, ...]


class RandomChoice(InputPerturbation[ChoiceParams]):
    """Apply one operator drawn at random from a pool.

    With ``per_sample=False`` (the default, "a random choice per draw") one operator ``k ~ p`` is
    drawn for the whole batch and only its parameters are sampled and applied. With
    ``per_sample=True`` every sample draws its own operator; each operator that was drawn at
    least once is sampled and applied to the whole batch and the outputs are merged per sample
    (so the cost grows with the number of distinct operators drawn).

    Args:
        ops: the pool, at least one :class:`InputPerturbation`.
        p: selection probabilities (non-negative, positive sum; normalized), one per operator;
            ``None`` for uniform.
        per_sample: draw the operator per sample instead of per batch.

    Raises:
        ValueError: an empty pool, or ``p`` of the wrong length, negative, or summing to 0.
        TypeError: a pool member that is not an :class:`InputPerturbation`.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise, RandomChoice, RandomHorizontalFlip
        >>> op = RandomChoice([GaussianNoise(0.1), RandomHorizontalFlip(1.0)])
        >>> x = torch.randn(4, 3, 8, 8)
        >>> params = op.sample(x, torch.Generator().manual_seed(0))
        >>> len(set(params.index.tolist()))
        1
        >>> op.transform(x, params).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        ops: Sequence[InputPerturbation[Any]],
        p: Sequence[float] | None = None,
        per_sample: bool = False,
    ) -> None:
        super().__init__()
        checked = _check_ops("ops", ops)
        if p is None:
            probs = tuple(1.0 / len(checked) for _ in checked)
        else:
            values = tuple(float(v) for v in p)
            if len(values) != len(checked):
                raise ValueError(
                    f"p must have one probability per operator ({len(checked)}), got {len(values)}"
                )
            if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
                raise ValueError(
                    f"p must be finite, non-negative and have a positive sum, got {tuple(p)!r}"
                )
            total = sum(values)
            probs = tuple(v / total for v in values)
        self.ops = nn.ModuleList(checked)
        self.p = probs
        self.per_sample = bool(per_sample)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> ChoiceParams:
        check_images(x)
        b = x.shape[0]
        probs = torch.tensor(self.p, dtype=torch.float64, device=sample_device(x, generator))
        if self.per_sample:
            index = torch.multinomial(probs, b, replacement=True, generator=generator)
        else:
            index = torch.multinomial(probs, 1, generator=generator).expand(b)
        chosen = set(index.tolist())
        params = tuple(
            op.sample(x, generator) if k in chosen else None
            for k, op in enumerate(_members(self.ops))
        )
        return ChoiceParams(index=index.to(x.device), params=params)

    def transform(self, x: Tensor, params: ChoiceParams) -> Tensor:
        check_batch(x, "index", params.index)
        if len(params.params) != len(self.ops):
            raise ValueError(
                f"params.params must have one entry per operator ({len(self.ops)}), "
                f"got {len(params.params)}"
            )
        out = x
        for k, (op, op_params) in enumerate(zip(_members(self.ops), params.params, strict=True)):
            if op_params is None:
                continue
            selected = params.index == k
            y = op.transform(x, op_params)
            if bool(selected.all()):
                return y
            out = torch.where(selected.view(-1, 1, 1, 1), y, out)
        return out

    def extra_repr(self) -> str:
        return f"p={tuple(round(v, 4) for v in self.p)}, per_sample={self.per_sample}"


@attrs.frozen(eq=False)
class ComposeParams:
    """Parameters of :class:`Compose`.

    Attributes:
        params: the parameters of each operator, in order.

    Example:
        >>> import torch
        >>> from risloss.perturb import Brightness, Compose, GaussianNoise
        >>> op = Compose([GaussianNoise(0.1), Brightness(0.2)])
        >>> params = op.sample(torch.randn(2, 1, 4, 4), torch.Generator().manual_seed(0))
        >>> [type(p).__name__ for p in params.params]
        ['NoiseParams', 'BrightnessParams']
    """

    params: tuple[Any, ...]


class Compose(InputPerturbation[ComposeParams]):
    """Apply several operators in series: ``T = T_n o ... o T_1``.

    All parameters are drawn up front from ``x``'s shape (every operator preserves it), in the
    order of ``ops``.

    Args:
        ops: the operators, at least one, applied first to last.

    Raises:
        ValueError: no operator.
        TypeError: a member that is not an :class:`InputPerturbation`.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Brightness, Compose, Contrast
        >>> op = Compose([Brightness(0.2), Contrast(0.2)])
        >>> op(torch.randn(2, 3, 8, 8), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, ops: Sequence[InputPerturbation[Any]]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(_check_ops("ops", ops))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> ComposeParams:
        check_images(x)
        return ComposeParams(params=tuple(op.sample(x, generator) for op in _members(self.ops)))

    def transform(self, x: Tensor, params: ComposeParams) -> Tensor:
        check_images(x)
        if len(params.params) != len(self.ops):
            raise ValueError(
                f"params.params must have one entry per operator ({len(self.ops)}), "
                f"got {len(params.params)}"
            )
        for op, op_params in zip(_members(self.ops), params.params, strict=True):
            x = op.transform(x, op_params)
        return x


InputPool = Literal["all", "noise", "geometric", "photometric"]
"""Names of the operator pools of :func:`default_input_perturbation`."""
INPUT_POOLS: tuple[str, ...] = get_args(InputPool)
"""The allowed values of ``default_input_perturbation(pool=...)``."""


def default_input_perturbation(
    per_sample: bool = False, noise_std: float = 0.1, pool: InputPool = "all"
) -> RandomChoice:
    """The default pool of the RIS input perturbation, drawn uniformly.

    The pool, with moderate magnitudes for images normalized to zero mean and unit variance:

    - ``GaussianNoise(std=noise_std)`` (0.1 by default);
    - ``RandomResizedCrop(scale=(0.5, 1.0), ratio=(3/4, 4/3))``;
    - ``RandomHorizontalFlip(p=1.0)``: in the pool every chosen operator perturbs every sample,
      so a draw is never the identity;
    - ``RandomAffine(degrees=15, translate=0.1)``;
    - ``Cutout(size=0.25, p=1.0, fill=0.0)``;
    - ``Brightness(magnitude=0.2)``;
    - ``Contrast(magnitude=0.2)``.

    Args:
        per_sample: draw the operator per sample instead of once per batch.
        noise_std: standard deviation of the additive Gaussian noise in the pool.
        pool: ``"all"`` (the seven operators above), ``"noise"`` (Gaussian noise only),
            ``"geometric"`` (crop, flip, affine, cutout) or ``"photometric"`` (noise,
            brightness, contrast): subsets measured in the benchmark's ablation.

    Returns:
        A :class:`RandomChoice` over the pool.

    Raises:
        ValueError: ``pool`` not one of the names above, or ``noise_std`` negative.

    Example:
        >>> import torch
        >>> from risloss.perturb import default_input_perturbation
        >>> op = default_input_perturbation()
        >>> len(op.ops)
        7
        >>> op(torch.randn(2, 3, 16, 16), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 16, 16])
    """
    check(one_of(INPUT_POOLS), "pool", pool)
    check(non_negative, "noise_std", noise_std)
    noise: list[InputPerturbation[Any]] = [GaussianNoise(std=noise_std)]
    geometric: list[InputPerturbation[Any]] = [
        RandomResizedCrop(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)),
        RandomHorizontalFlip(p=1.0),
        RandomAffine(degrees=15.0, translate=0.1),
        Cutout(size=0.25, p=1.0, fill=0.0),
    ]
    photometric: list[InputPerturbation[Any]] = [Brightness(magnitude=0.2), Contrast(magnitude=0.2)]
    ops = {
        "all": noise + geometric + photometric,
        "noise": noise,
        "geometric": geometric,
        "photometric": noise + photometric,
    }[pool]
    return RandomChoice(ops, per_sample=per_sample)


class Standardized(InputPerturbation[Any]):
    """Another perturbation applied to standardized images: ``T(x) = s * P((x - m) / s) + m``.

    For a model that takes images in its own range (``[0, 1]`` pixels that it normalizes
    itself), this makes a perturbation of fixed magnitudes (noise of standard deviation 0.1, a
    brightness shift) act as it would on standardized images: the same perturbation of the same
    picture, whatever the model's input convention. ``scale`` and ``shift`` are where the
    standardized images lie in the model's input space (its inputs' standard deviation and mean
    per channel, as :func:`~risloss.objective.fit_input_statistics` estimates them).

    Args:
        inner: the perturbation of standardized images.
        scale: ``s``, one positive value per channel (or one for all).
        shift: ``m``, one value per channel (or one for all).

    Raises:
        ValueError: a scale that is not positive, or ``scale`` and ``shift`` of other lengths.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise, Standardized
        >>> op = Standardized(GaussianNoise(std=0.1), scale=[0.25], shift=[0.5])
        >>> x = torch.full((1, 1, 64, 64), 0.5)
        >>> round(float((op(x, torch.Generator().manual_seed(0)) - x).std()), 3)  # 0.1 * 0.25
        0.025
    """

    scale: Tensor
    shift: Tensor

    def __init__(
        self,
        inner: InputPerturbation[Any],
        scale: Sequence[float] | Tensor,
        shift: Sequence[float] | Tensor,
    ) -> None:
        super().__init__()
        if not isinstance(inner, InputPerturbation):
            raise TypeError(f"inner must be an InputPerturbation, got {type(inner).__name__}")
        s = torch.as_tensor(scale, dtype=torch.float32).flatten()
        m = torch.as_tensor(shift, dtype=torch.float32).flatten()
        if s.numel() != m.numel() or s.numel() == 0:
            raise ValueError(
                f"scale and shift must have one value per channel each, got {s.numel()} and "
                f"{m.numel()}"
            )
        if not bool((s > 0).all()) or not bool(torch.isfinite(s).all() & torch.isfinite(m).all()):
            raise ValueError(
                f"scale must be positive and shift finite, got {s.tolist()} and {m.tolist()}"
            )
        self.inner = inner
        self.register_buffer("scale", s.view(1, -1, 1, 1))
        self.register_buffer("shift", m.view(1, -1, 1, 1))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Any:
        return self.inner.sample(x, generator)

    def transform(self, x: Tensor, params: Any) -> Tensor:
        scale, shift = self.scale.to(x), self.shift.to(x)
        return self.inner.transform((x - shift) / scale, params) * scale + shift

    def extra_repr(self) -> str:
        return (
            f"scale={[round(v, 4) for v in self.scale.flatten().tolist()]}, "
            f"shift={[round(v, 4) for v in self.shift.flatten().tolist()]}"
        )
