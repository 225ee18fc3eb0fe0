"""The one helper through which every stateless call of a model goes, and state snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from risloss._util import listing

__all__ = ["ModuleState", "module_state_snapshot", "stateless_call"]


def stateless_call(
    model: nn.Module,
    params: Mapping[str, Tensor] | None,
    args: tuple[Any, ...] | Tensor,
    *,
    buffers: Mapping[str, Tensor] | None = None,
) -> Any:
    """Call ``model`` with some of its parameters and buffers replaced, without modifying it.

    The full state is ``model``'s own parameters and buffers, overridden by ``params`` and
    ``buffers``; the call is ``torch.func.functional_call(model, state, args, strict=True)``.
    Forward hooks fire during the call and see the substituted tensors.

    BatchNorm in train mode updates the running statistics it is given in place: the buffers
    passed here, or the model's own when none are passed. Teachers are therefore called in eval
    mode (``model.eval()``), where BatchNorm reads its running statistics and updates nothing.

    Args:
        model: the module to call; its parameters, buffers and ``training`` flags are left as
            they are (in eval mode; see above).
        params: ``{name: tensor}`` overriding some of ``dict(model.named_parameters())``;
            ``None`` for none.
        args: the positional arguments of ``model.forward``, a tuple, or a single tensor.
        buffers: ``{name: tensor}`` overriding some of ``dict(model.named_buffers())``.

    Returns:
        Whatever ``model.forward`` returns.

    Raises:
        ValueError: a name in ``params`` that is not a parameter of ``model`` or a name in
            ``buffers`` that is not a buffer (the message lists the valid names).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(2, 1, bias=False)
        >>> stateless_call(model, {"weight": torch.ones(1, 2)}, (torch.tensor([[1.0, 2.0]]),))
        tensor([[3.]])
        >>> model.weight.shape  # the model keeps its own weight
        torch.Size([1, 2])
    """
    state = _replaced(model, dict(model.named_parameters()), params, "params", "parameters")
    state.update(_replaced(model, dict(model.named_buffers()), buffers, "buffers", "buffers"))
    call_args = (args,) if isinstance(args, Tensor) else tuple(args)
    return torch.func.functional_call(model, state, call_args, strict=True)


@attrs.frozen(eq=False)
class ModuleState:
    """A copy of a module's parameters, buffers and ``training`` flags at one moment.

    Attributes:
        parameters: ``{name: clone}`` of ``named_parameters()``.
        buffers: ``{name: clone}`` of ``named_buffers()``.
        training: ``{module name: training flag}`` of ``named_modules()``.
    """

    parameters: dict[str, Tensor]
    buffers: dict[str, Tensor]
    training: dict[str, bool]

    def differences(self, other: ModuleState) -> list[str]:
        """What differs between two snapshots, bitwise (empty when they are identical).

        Args:
            other: another snapshot.

        Returns:
            One line per difference: a missing or extra name, a changed tensor (shape, dtype,
            device or any value; ``NaN`` equals ``NaN``), or a changed ``training`` flag.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> model = nn.BatchNorm1d(2)
            >>> before = module_state_snapshot(model)
            >>> _ = model(torch.randn(4, 2))  # train mode: running statistics change
            >>> "buffer running_mean changed" in module_state_snapshot(model).differences(before)
            True
        """
        lines: list[str] = []
        for kind, mine, theirs in (
            ("parameter", self.parameters, other.parameters),
            ("buffer", self.buffers, other.buffers),
        ):
            for name in mine.keys() - theirs.keys():
                lines.append(f"{kind} {name} only in the first snapshot")
            for name in theirs.keys() - mine.keys():
                lines.append(f"{kind} {name} only in the second snapshot")
            for name in mine.keys() & theirs.keys():
                a, b = mine[name], theirs[name]
                same = (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device) and (
                    torch.equal(a, b)
                    or (
                        a.is_floating_point()
                        and torch.equal(a.isnan(), b.isnan())
                        and torch.equal(a.nan_to_num(), b.nan_to_num())
                    )
                )
                if not same:
                    lines.append(f"{kind} {name} changed")
        for name in sorted(self.training.keys() | other.training.keys()):
            if self.training.get(name) != other.training.get(name):
                lines.append(
                    f"training flag of module {name!r}: {self.training.get(name)} != "
                    f"{other.training.get(name)}"
                )
        return sorted(lines)


def module_state_snapshot(model: nn.Module) -> ModuleState:
    """Snapshot ``model``'s parameters, buffers (cloned, detached) and ``training`` flags.

    Args:
        model: the module.

    Returns:
        A :class:`ModuleState`; compare two with :meth:`ModuleState.differences`.

    Example:
        >>> from torch import nn
        >>> model = nn.Linear(2, 2)
        >>> before = module_state_snapshot(model)
        >>> _ = model.eval()
        >>> module_state_snapshot(model).differences(before)
        ["training flag of module '': False != True"]
    """
    with torch.no_grad():
        return ModuleState(
            parameters={n: p.detach().clone() for n, p in model.named_parameters()},
            buffers={n: b.detach().clone() for n, b in model.named_buffers()},
            training={n: m.training for n, m in model.named_modules()},
        )


def _replaced(
    model: nn.Module,
    own: dict[str, Tensor],
    given: Mapping[str, Tensor] | None,
    argument: str,
    what: str,
) -> dict[str, Tensor]:
    """``own`` with the tensors of ``given`` in place of its own (a ``ValueError`` naming
    ``argument`` and ``model``'s names for any name that is not one of ``own``)."""
    if given:
        unknown = [name for name in given if name not in own]
        if unknown:
            raise ValueError(
                f"{argument} has names that are not {what} of {type(model).__name__}: "
                f"{unknown}; its {what} are: {listing(list(own), limit=40)}"
            )
        own.update(given)
    return own
