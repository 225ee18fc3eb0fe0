"""Pruning for data-free compression: global magnitude pruning and L1 channel pruning.

Unstructured pruning goes through :mod:`torch.nn.utils.prune`, so the masks are kept during
fine-tuning (``weight = weight_orig * weight_mask``) and made permanent with
:func:`finalize_pruning`. Structured pruning really removes channels: inside residual blocks
(modules with ``conv1 -> bn1 -> conv2`` and, in bottlenecks, ``conv2 -> bn2 -> conv3``) the
output channels of the first convolution with the smallest L1 norms are dropped, together with
the matching BatchNorm entries and input channels of the next convolution. Block outputs, tied
together by the residual additions, are kept as they are.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["finalize_pruning", "model_stats", "prune_model", "sparsity"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CHAINS = (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3"))


def _check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {amount!r}")


def prune_model(
    model: nn.Module, *, sparsity: float, structured: bool = False, inplace: bool = False
) -> nn.Module:
    """Prune the conv and linear weights of ``model``.

    Args:
        model: the network (a copy is pruned unless ``inplace``).
        sparsity: fraction in ``[0, 1)``: of all conv/linear weights (global magnitude
            pruning) or, with ``structured``, of the prunable channels of each block.
        structured: channel pruning by L1 norm (really shrinks the layers) instead of
            unstructured masks.
        inplace: prune ``model`` itself.

    Returns:
        The pruned model.

    Raises:
        ValueError: ``sparsity`` outside ``[0, 1)``, a model without conv/linear layers, or
            ``structured`` on a model without ``conv1/bn1/conv2`` blocks.

    Example:
        >>> from risloss.models import resnet8
        >>> from risloss.pruning import prune_model, sparsity
        >>> pruned = prune_model(resnet8(), sparsity=0.5)
        >>> round(sparsity(pruned), 2)
        0.5
    """
    _check_amount(sparsity)
    net = model if inplace else copy.deepcopy(model)
    if structured:
        return _prune_channels(net, sparsity)
    targets = [(m, "weight") for m in net.modules() if isinstance(m, _PRUNABLE)]
    if not targets:
        raise ValueError("model has no Conv or Linear layer to prune")
    if sparsity > 0:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    return net


@torch.no_grad()
def _prune_channels(net: nn.Module, amount: float) -> nn.Module:
    pruned_any = False
    for block in list(net.modules()):
        for a_name, bn_name, b_name in _CHAINS:
            conv_a = getattr(block, a_name, None)
            bn = getattr(block, bn_name, None)
            conv_b = getattr(block, b_name, None)
            if not (
                isinstance(conv_a, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and isinstance(conv_b, nn.Conv2d)
                and conv_a.groups == 1
                and conv_b.groups == 1
                and conv_a.out_channels == bn.num_features == conv_b.in_channels
            ):
                continue
            pruned_any = True
            n = conv_a.out_channels
            keep_n = max(1, n - round(amount * n))
            norms = conv_a.weight.abs().flatten(1).sum(1)
            keep = norms.topk(keep_n).indices.sort().values
            conv_a.weight = nn.Parameter(conv_a.weight[keep].clone())
            if conv_a.bias is not None:
                conv_a.bias = nn.Parameter(conv_a.bias[keep].clone())
            conv_a.out_channels = keep_n
            bn.weight = nn.Parameter(bn.weight[keep].clone())
            bn.bias = nn.Parameter(bn.bias[keep].clone())
            if bn.running_mean is not None and bn.running_var is not None:
                bn.running_mean = bn.running_mean[keep].clone()
                bn.running_var = bn.running_var[keep].clone()
            bn.num_features = keep_n
            conv_b.weight = nn.Parameter(conv_b.weight[:, keep].clone())
            conv_b.in_channels = keep_n
    if not pruned_any:
        raise ValueError(
            "structured pruning found no conv1 -> bn1 -> conv2 block to shrink in this model; "
            "use unstructured pruning (structured=False)"
        )
    return net


def finalize_pruning(model: nn.Module) -> nn.Module:
    """Make the masks of :mod:`torch.nn.utils.prune` permanent: plain ``weight`` tensors again.

    Args:
        model: a network pruned by :func:`prune_model` (unpruned layers are left alone).

    Returns:
        ``model`` (modified in place), with plain ``weight`` parameters.

    Example:
        >>> from risloss.models import resnet8
        >>> from risloss.pruning import finalize_pruning, prune_model, sparsity
        >>> pruned = prune_model(resnet8(), sparsity=0.5)
        >>> "fc.weight_orig" in pruned.state_dict()
        True
        >>> final = finalize_pruning(pruned)
        >>> "fc.weight_orig" in final.state_dict(), round(sparsity(final), 2)
        (False, 0.5)
    """
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all conv and linear weights.

    Args:
        model: the network.

    Returns:
        A number in ``[0, 1]``.

    Raises:
        ValueError: ``model`` has no conv or linear layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.pruning import sparsity
        >>> layer = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
        >>> sparsity(layer)
        0.5
    """
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, _PRUNABLE):
            w = m.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    if total == 0:
        raise ValueError("model has no Conv or Linear layer")
    return zeros / total


@torch.no_grad()
def model_stats(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameter count and multiply-accumulates of one forward pass of a single input.

    ``macs`` counts every weight of conv and linear layers; ``effective_macs`` counts only
    non-zero weights (what a sparse kernel could skip to).

    Args:
        model: the network (evaluated in eval mode; its mode is restored).
        input_shape: ``(C, H, W)`` of one input.

    Returns:
        ``params`` (all parameters), ``nonzero_params``, ``macs``, ``effective_macs`` and
        ``sparsity`` (see :func:`sparsity`).

    Example:
        >>> from risloss.models import resnet8
        >>> from risloss.pruning import model_stats, prune_model
        >>> model = resnet8(in_channels=1)
        >>> dense = model_stats(model, (1, 28, 28))
        >>> slim = model_stats(prune_model(model, sparsity=0.5, structured=True), (1, 28, 28))
        >>> slim["params"] < dense["params"], slim["macs"] < dense["macs"]
        (True, True)
    """
    macs = 0.0
    effective = 0.0

    def hook(m: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs, effective
        w = m.weight
        assert isinstance(w, torch.Tensor)
        density = float((w != 0).sum()) / w.numel()
        if isinstance(m, nn.Linear):
            n = float(w.numel()) * (output.numel() / output.shape[-1])
        else:
            n = float(output[0].numel()) * (w.numel() / w.shape[0])
        macs += n
        effective += n * density

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _PRUNABLE)]
    was_training = model.training
    model.eval()
    try:
        first = next(iter(model.parameters()))
        model(torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())  # weight_orig stands for a pruned weight
    weights = [m.weight for m in model.modules() if isinstance(m, _PRUNABLE)]
    nonzero = sum(int((w != 0).sum()) for w in weights) + sum(
        p.numel() for m in model.modules() if not isinstance(m, _PRUNABLE)
        for p in m.parameters(recurse=False)
    )  # fmt: skip
    biases = sum(
        m.bias.numel() for m in model.modules() if isinstance(m, _PRUNABLE) and m.bias is not None
    )
    return {
        "params": int(params),
        "nonzero_params": int(nonzero + biases),
        "macs": macs,
        "effective_macs": effective,
        "sparsity": sparsity(model),
    }
