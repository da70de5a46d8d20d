"""Repair: move an infeasible sub-BERT to the budget boundary using only the cost model.

At a tight budget nearly every feasible sub-BERT is shallow; a sample that breaks the
budget by a little says nothing to a rank-based search if it is just ranked last, and
the search drifts onto the smallest sub-BERTs. Repair shrinks the sample one step at a
time (the most expensive layer's FFN, then its heads, then the depth) and stops at the
first feasible sub-BERT, so every sample lands just inside the budget. No evaluation is
spent: only the cheap cost model is asked.
"""

from __future__ import annotations

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.costs import layer_flops
from yoco_deploy.space import SearchSpace


def smaller(choices: tuple[int, ...], value: int) -> int | None:
    lower = [c for c in choices if c < value]
    return max(lower) if lower else None


def shrink_once(arch: Arch, space: SearchSpace, seq_len: int = 128) -> Arch | None:
    """One step down: the most expensive layer's FFN, else its heads, else one depth
    choice less (dropping the last layers). None at the min sub-BERT."""
    dims = space.dims
    order = sorted(
        range(arch.depth),
        key=lambda i: (layer_flops(dims, arch.heads[i], arch.ffn[i], seq_len, 1), i),
        reverse=True,
    )
    for i in order:
        layer = arch.layers[i]
        ffn = smaller(space.ffn_choices, layer.ffn)
        heads = smaller(space.head_choices, layer.heads)
        if ffn is not None:
            return _replace(arch, i, LayerSpec(layer.heads, ffn))
        if heads is not None:
            return _replace(arch, i, LayerSpec(heads, layer.ffn))
    depth = smaller(space.depth_choices, arch.depth)
    return Arch(arch.layers[:depth]) if depth is not None else None


def repair(arch: Arch, space: SearchSpace, feasible, seq_len: int = 128) -> Arch:
    """The first feasible sub-BERT on the way down from ``arch`` (``arch`` itself when it
    fits). Costs grow with every dimension, so the walk ends at the latest at the min
    sub-BERT; callers check that the min fits (``CostModel.check_achievable``)."""
    current: Arch | None = arch
    while current is not None and not feasible(current):
        last, current = current, shrink_once(current, space, seq_len)
    return current if current is not None else last


def _replace(arch: Arch, i: int, layer: LayerSpec) -> Arch:
    return Arch((*arch.layers[:i], layer, *arch.layers[i + 1 :]))
