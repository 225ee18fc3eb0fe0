"""Forward hooks in context managers: capture features and BatchNorm statistics.

Every context manager here owns its hook handles and removes them on exit, also when the body
raises. Hooks fire in ordinary calls and in stateless calls (``torch.func.functional_call``),
where they see the substituted parameters and buffers.

Under ``torch.func.vmap`` a tensor captured by a hook and read outside the vmapped function
escapes its transform and fails; inside ``vmap``, return the features from the function instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from risloss._util import listing
from risloss.functional import BNStatistics, batch_moments

__all__ = [
    "PENULTIMATE",
    "BNStatisticsCollector",
    "FeatureKind",
    "FeatureStore",
    "LayerSpec",
    "capture_bn_statistics",
    "capture_features",
    "resolve_layers",
]

FeatureKind = Literal["output", "input"]
"""What is captured at a layer: its output, or its first positional input."""

LayerSpec = str | Sequence[str] | Mapping[str, FeatureKind]
"""A layer selection: a name or glob pattern, a sequence of them, or ``{name or pattern: kind}``."""

PENULTIMATE = "penultimate"
"""The special layer name for the input of the model's last ``nn.Linear`` (registration order)."""

_KINDS: tuple[str, ...] = ("output", "input")
_GLOB_CHARS = frozenset("*?[")


def _listing(names: Sequence[str]) -> str:
    return listing(names, limit=60, quote=True)


def _check_kind(kind: object, what: str) -> FeatureKind:
    if kind not in _KINDS:
        raise ValueError(f"{what} must be one of {_KINDS}, got {kind!r}")
    return "input" if kind == "input" else "output"


def _match(pattern: str, names: Sequence[str], model: nn.Module, what: str) -> list[str]:
    """Module names matched by an exact name or a glob pattern; ``ValueError`` if none."""
    if _GLOB_CHARS & set(pattern):
        found = [n for n in names if n and fnmatch.fnmatchcase(n, pattern)]
    else:
        found = [pattern] if pattern in names else []
    if not found:
        raise ValueError(
            f"{what} {pattern!r} matches no module of {type(model).__name__}; "
            f"its modules are: {_listing([n for n in names if n])}"
        )
    return found


def _penultimate(model: nn.Module) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"layer {PENULTIMATE!r} is the input of the last nn.Linear, but "
            f"{type(model).__name__} has no nn.Linear"
        )
    return linears[-1]


def resolve_layers(
    model: nn.Module, layers: LayerSpec, kind: FeatureKind = "output"
) -> tuple[tuple[str, FeatureKind], ...]:
    """Resolve a layer selection to ``(module name, kind)`` pairs.

    Names are those of ``model.named_modules()``. An entry is an exact module name, a glob
    pattern (``fnmatch``, case-sensitive, containing ``*``, ``?`` or ``[``; it never matches the
    model itself, whose name is ``""``), or ``"penultimate"``: the input of the model's last
    ``nn.Linear`` in registration order (always ``kind="input"``). With a mapping each entry
    carries its own kind. Pairs come in selection order, then module order within a pattern,
    without duplicates.

    Args:
        model: the model.
        layers: a name or pattern, a sequence of them, or ``{name or pattern: kind}``.
        kind: the kind of the entries of a name or sequence selection.

    Returns:
        ``((name, kind), ...)``.

    Raises:
        ValueError: an entry that matches no module (the message lists the modules), no
            entry at all, an unknown kind, ``"penultimate"`` with ``kind="output"`` in a
            mapping or a model without ``nn.Linear``, or a module selected both as input and
            output.

    Example:
        >>> from risloss.models import resnet8
        >>> resolve_layers(resnet8(), ["penultimate", "layer*.0.relu2"])[:2]
        (('fc', 'input'), ('layer1.0.relu2', 'output'))
    """
    default = _check_kind(kind, "kind")
    if isinstance(layers, str):
        requests: list[tuple[str, FeatureKind]] = [(layers, default)]
    elif isinstance(layers, Mapping):
        requests = [(str(k), _check_kind(v, f"kind of layer {k!r}")) for k, v in layers.items()]
    else:
        requests = [(str(name), default) for name in layers]
    if not requests:
        raise ValueError("layers must name at least one layer, got none")
    names = [n for n, _ in model.named_modules()]
    resolved: dict[str, FeatureKind] = {}
    for request, request_kind in requests:
        if request == PENULTIMATE:
            if isinstance(layers, Mapping) and request_kind != "input":
                raise ValueError(
                    f"layer {PENULTIMATE!r} is the input of the last nn.Linear; its kind must "
                    f"be 'input', got {request_kind!r}"
                )
            matched, request_kind = [_penultimate(model)], "input"
        else:
            matched = _match(request, names, model, "layer")
        for name in matched:
            previous = resolved.setdefault(name, request_kind)
            if previous != request_kind:
                raise ValueError(
                    f"module {name!r} is selected both as {previous!r} and as {request_kind!r}; "
                    "capture one kind per module"
                )
    return tuple(resolved.items())


class FeatureStore(Mapping[str, Tensor]):
    """Read-only mapping ``module name -> tensor`` filled by :func:`capture_features`.

    It holds, for each resolved layer, the tensor captured by the latest forward pass that
    ran the layer (a module called twice in one forward keeps its last call). Iteration yields
    the layers captured so far, in resolution order; ``store["penultimate"]`` is an alias of the
    last ``nn.Linear``'s name when ``"penultimate"`` was requested.

    Attributes:
        layers: the resolved ``(name, kind)`` pairs.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> model = resnet8().eval()
        >>> with capture_features(model, "penultimate") as features:
        ...     _ = model(torch.randn(2, 3, 32, 32))
        >>> features["penultimate"].shape, list(features)
        (torch.Size([2, 64]), ['fc'])
    """

    def __init__(
        self, layers: tuple[tuple[str, FeatureKind], ...], aliases: Mapping[str, str]
    ) -> None:
        self.layers = layers
        self._aliases = dict(aliases)
        self._data: dict[str, Tensor] = {}

    def __getitem__(self, name: str) -> Tensor:
        key = self._aliases.get(name, name)
        if key in self._data:
            return self._data[key]
        if any(key == n for n, _ in self.layers):
            raise KeyError(f"layer {name!r} has not run in a forward pass since capture began")
        raise KeyError(
            f"layer {name!r} is not captured; captured layers: "
            f"{_listing([n for n, _ in self.layers])}"
        )

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, _ in self.layers if n in self._data])

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Forget what was captured (the hooks stay in place)."""
        self._data.clear()

    def _record(self, name: str, value: Tensor) -> None:
        self._data[name] = value

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n!r}: {tuple(t.shape)}" for n, t in self.items())
        return f"FeatureStore({{{shapes}}})"


def _first_tensor(name: str, args: tuple[Any, ...]) -> Tensor:
    if not args or not isinstance(args[0], Tensor):
        raise TypeError(
            f"module {name!r} was called without a tensor as first positional argument; "
            "its input cannot be captured"
        )
    return args[0]


@contextmanager
def capture_features(
    model: nn.Module,
    layers: LayerSpec,
    *,
    kind: FeatureKind = "output",
    detach: bool = False,
) -> Iterator[FeatureStore]:
    """Capture the outputs (or inputs) of chosen layers during forward passes.

    Within the block, every forward pass of ``model`` (ordinary or stateless) records, for each
    layer, its output (``kind="output"``, a forward hook) or its first positional input
    (``kind="input"``, a forward pre-hook) into the yielded :class:`FeatureStore`, replacing the
    previous pass's tensor. The tensor is stored as is: it keeps its autograd graph unless
    ``detach``, and an in-place operation of the model on it later in the forward would show.
    All hooks are removed on exit, also when the block raises.

    Args:
        model: the model.
        layers: which layers, see :func:`resolve_layers` (names, glob patterns,
            ``"penultimate"``, or ``{name: kind}``); an empty list or mapping captures
            nothing (``RobustnessLoss(..., feature_weight=0).feature_layers`` is empty).
        kind: the kind of the entries of a name or sequence selection.
        detach: store detached tensors.

    Yields:
        The :class:`FeatureStore`.

    Raises:
        ValueError: an invalid selection (see :func:`resolve_layers`).
        TypeError: during a forward, a captured output that is not a tensor, or an input
            capture of a module called without a positional tensor.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with capture_features(model, {"0": "output", "2": "input"}) as feats:
        ...     _ = model(torch.randn(5, 4))
        >>> torch.equal(feats["2"], feats["0"].relu())
        True
    """
    # An empty selection is allowed here (nothing is captured), so that a caller can pass
    # ``rob.feature_layers`` whatever it holds.
    empty = not isinstance(layers, str) and len(layers) == 0
    resolved = () if empty else resolve_layers(model, layers, kind)
    aliases: dict[str, str] = {}
    if _mentions_penultimate(layers):
        aliases[PENULTIMATE] = _penultimate(model)
    store = FeatureStore(resolved, aliases)
    modules = dict(model.named_modules())
    handles: list[RemovableHandle] = []
    try:
        for name, layer_kind in resolved:
            module = modules[name]
            if layer_kind == "input":
                handles.append(module.register_forward_pre_hook(_input_hook(store, name, detach)))
            else:
                handles.append(module.register_forward_hook(_output_hook(store, name, detach)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _mentions_penultimate(layers: LayerSpec) -> bool:
    if isinstance(layers, str):
        return layers == PENULTIMATE
    return any(name == PENULTIMATE for name in layers)


def _input_hook(store: FeatureStore, name: str, detach: bool) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        value = _first_tensor(name, args)
        store._record(name, value.detach() if detach else value)

    return hook


def _output_hook(store: FeatureStore, name: str, detach: bool) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"module {name!r} returned a {type(output).__name__}, not a tensor; "
                "its output cannot be captured"
            )
        store._record(name, output.detach() if detach else output)

    return hook


class BNStatisticsCollector:
    """Batch and running statistics of BatchNorm layers, filled by :func:`capture_bn_statistics`.

    For each layer it holds the latest call's per-channel batch mean and biased variance of the
    layer's input (with their autograd graph) and a copy of the running statistics the layer
    held at that moment (under a stateless call: the substituted buffers).

    Attributes:
        names: the hooked BatchNorm modules, in module order.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> model = resnet8().eval()
        >>> with capture_bn_statistics(model) as collector:
        ...     _ = model(torch.randn(4, 3, 32, 32))
        >>> stats = collector.statistics()
        >>> len(stats), stats.names[0], stats.batch_means[0].shape
        (9, 'bn1', torch.Size([16]))
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._records: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def statistics(self) -> BNStatistics:
        """The statistics of every hooked layer, in the order the layers last ran.

        Returns:
            A :class:`risloss.functional.BNStatistics`.

        Raises:
            RuntimeError: a hooked layer has not run since the capture began (or since
                :meth:`clear`).
        """
        missing = [n for n in self.names if n not in self._records]
        if missing:
            raise RuntimeError(
                f"BatchNorm layers {_listing(missing)} have not run in a forward pass since "
                "the capture began"
            )
        names = tuple(self._records)
        records = [self._records[n] for n in names]
        return BNStatistics(
            names=names,
            batch_means=tuple(r[0] for r in records),
            batch_vars=tuple(r[1] for r in records),
            running_means=tuple(r[2] for r in records),
            running_vars=tuple(r[3] for r in records),
        )

    def clear(self) -> None:
        """Forget what was recorded (the hooks stay in place)."""
        self._records.clear()

    def _record(self, name: str, record: tuple[Tensor, Tensor, Tensor, Tensor]) -> None:
        self._records.pop(name, None)  # re-insert: keep the order of the latest run
        self._records[name] = record

    def __repr__(self) -> str:
        return f"BNStatisticsCollector(names={self.names!r}, recorded={len(self._records)})"


def _bn_hook(collector: BNStatisticsCollector, name: str) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = _first_tensor(name, args)
        mean, var = batch_moments(x)
        running_mean, running_var = module.running_mean, module.running_var
        if not isinstance(running_mean, Tensor) or not isinstance(running_var, Tensor):
            raise RuntimeError(f"BatchNorm layer {name!r} has no running statistics")
        # A copy: in train mode the layer updates its running statistics in place right after.
        collector._record(
            name, (mean, var, running_mean.detach().clone(), running_var.detach().clone())
        )

    return hook


@contextmanager
def capture_bn_statistics(
    model: nn.Module, layers: str | Sequence[str] | None = None
) -> Iterator[BNStatisticsCollector]:
    """Capture the batch statistics at the input of BatchNorm layers during forward passes.

    A forward pre-hook on each layer computes, at every call, the per-channel batch mean and
    biased variance of the layer's input ``x`` of shape ``(N, C, *)`` over every dimension but
    ``1``: ``mu_c = mean(x[:, c])``, ``var_c = mean((x[:, c] - mu_c)^2)``, and reads the
    layer's ``running_mean`` / ``running_var`` at call time (so a stateless call with
    substituted buffers is seen as such). Hooks are removed on exit, also when the block raises.

    Args:
        model: the model.
        layers: ``None`` for every BatchNorm module (``_BatchNorm`` subclasses) that tracks
            running statistics; else exact names of BatchNorm modules or glob patterns, which
            are matched against the BatchNorm modules only.

    Yields:
        A :class:`BNStatisticsCollector`; ``collector.statistics()`` gives the
        :class:`risloss.functional.BNStatistics` of the latest forward pass.

    Raises:
        ValueError: no BatchNorm layer (with running statistics) in ``model``; a name or
            pattern that matches no module (the message lists the BatchNorm modules); a
            selected module that is not BatchNorm or tracks no running statistics.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> x = torch.randn(4, 1, 6, 6)
        >>> with capture_bn_statistics(model) as collector:
        ...     _ = model(x)
        >>> stats = collector.statistics()
        >>> torch.allclose(stats.batch_means[0], model[0](x).mean(dim=(0, 2, 3)))
        True
    """
    all_names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    bn_names = [n for n, m in modules.items() if isinstance(m, _BatchNorm)]
    if layers is None:
        names = [n for n in bn_names if modules[n].track_running_stats]
        if not names:
            raise ValueError(
                f"{type(model).__name__} has no BatchNorm layer with running statistics; "
                f"its modules are: {_listing([n for n in all_names if n])}"
            )
    else:
        requests = [layers] if isinstance(layers, str) else list(layers)
        if not requests:
            raise ValueError("layers must name at least one BatchNorm layer, got none")
        names = []
        for request in requests:
            if _GLOB_CHARS & set(request):
                matched = [n for n in bn_names if fnmatch.fnmatchcase(n, request)]
                if not matched:
                    raise ValueError(
                        f"BatchNorm layer pattern {request!r} matches no BatchNorm module of "
                        f"{type(model).__name__}; its BatchNorm modules are: {_listing(bn_names)}"
                    )
            else:
                matched = _match(request, all_names, model, "BatchNorm layer")
            for name in matched:
                module = modules[name]
                if not isinstance(module, _BatchNorm):
                    raise ValueError(
                        f"module {name!r} is a {type(module).__name__}, not BatchNorm; the "
                        f"BatchNorm modules are: {_listing(bn_names)}"
                    )
                if not module.track_running_stats:
                    raise ValueError(
                        f"BatchNorm layer {name!r} tracks no running statistics "
                        "(track_running_stats=False)"
                    )
                if name not in names:
                    names.append(name)
    collector = BNStatisticsCollector(tuple(names))
    handles: list[RemovableHandle] = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_pre_hook(_bn_hook(collector, name)))
        yield collector
    finally:
        for handle in handles:
            handle.remove()
