"""Lesions and reorderings of a trained residual model at test time (Veit et al. 2016).

A per-step stage runs blocks 0..N-1 in order. `restack(model, {s: order})` returns a copy of the
model whose stage s runs the blocks `order` (step indices, in that order) instead:

    delete block k      order = [0, .., k-1, k+1, .., N-1]   (the stage is one block shallower)
    reorder             order = a permutation of 0..N-1

For a residual stage, x_{j+1} = x_j + h F_{order[j]}(t_j, x_j): deleting block k is x_{k+1} = x_k,
the block replaced by its skip (Veit et al.'s lesion); the stage's step h is kept (t1 shrinks to
t0 + h M for M kept blocks). For a plain stage, x_{j+1} = F_{order[j]}(x_j): the layer is removed
and its input goes straight to the next layer. The one thing a reader may get wrong: a
time-conditioned field evaluates block order[j] at the time t_j of its new position j, not at its
old time (the model families' resnet and plain fields take no time by default).

Stages with one parameter set per step are lesioned: ODE blocks with params="per_step" (resnet,
highway, antisymmetric; ANODE's augmented wrapper around one), and the scans of plain, momentum
and Hamiltonian stages. Shared-field (Neural ODE) and dense stages have no per-step blocks.

    blocks(model)                          [(stage, step)] of every block, in forward order
    restack(model, {s: order})             the copy running those blocks
    delete_blocks(model, drop)             the copy without the blocks drop = [(stage, step)]
    keep_orders(model, keep)               {stage: order} from a keep-mask over blocks(model)
    random_deletion(model, k, seed)        k blocks drawn at random, each stage keeping one
    random_swaps(model, k, seed)           {stage: order} after k swaps of two blocks of a stage
    accuracy(model, x, y, order=None)      test accuracy of the restacked model (compiled once
                                           per shape of the orders: every single deletion of a
                                           stage shares one compilation)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets.analysis.steps import _ode_block
from odenets.models import Classifier, ODEBlock
from odenets.models.stages import ScanStage

Order = Mapping[int, Sequence[int] | np.ndarray | jax.Array]


@functools.singledispatch
def _holder(stage) -> ODEBlock | ScanStage | None:
    """The module holding a stage's per-step stack (an ODEBlock with per-step params, itself or inside
    ANODE's wrapper as `steps._ode_block` finds it, or a ScanStage), or None when the stage has no
    per-step blocks."""
    found = _ode_block(stage)
    return found[0] if found is not None and found[0].params == "per_step" else None


@_holder.register
def _(stage: ScanStage):
    return stage


def _stack_of(holder):
    return holder.field if isinstance(holder, ODEBlock) else holder.fields


def _gather(stacked: nnx.Module, index) -> nnx.Module:
    """The per-step stack whose step j is step index[j] of `stacked` (index may be traced)."""
    graphdef, state = nnx.split(stacked)
    return nnx.merge(graphdef, jax.tree.map(lambda v: v[index], state))


def _set_stack(holder, index) -> None:
    steps = int(index.shape[0])
    new = _gather(_stack_of(holder), index)
    if isinstance(holder, ODEBlock):
        h = (holder.t1 - holder.t0) / holder.steps
        holder.field, holder.t1 = new, holder.t0 + h * steps
    else:
        holder.fields = new
    holder.steps = steps


def _check_model(model) -> None:
    if not isinstance(model, Classifier):
        raise TypeError(f"lesions act on a Classifier (odenets.models.build), got {type(model).__name__}")


def blocks(model: Classifier) -> list[tuple[int, int]]:
    """(stage, step) of every per-step block of the model, in forward order (stages without
    per-step blocks contribute none)."""
    _check_model(model)
    out = []
    for s, stage in enumerate(model.stages):
        holder = _holder(stage)
        if holder is not None:
            out += [(s, k) for k in range(holder.steps)]
    return out


def _checked(model: Classifier, order: Order) -> dict[int, np.ndarray]:
    _check_model(model)
    valid = sorted({s for s, _ in blocks(model)})
    out = {}
    for s, idx in order.items():
        if s not in valid:
            raise ValueError(f"stage {s!r} has no per-step blocks to restack; valid choices: "
                             f"{', '.join(map(str, valid)) or 'none (family ' + repr(model.family) + ')'}")
        idx = np.asarray(idx)
        n = cast(ODEBlock | ScanStage, _holder(model.stages[s])).steps  # s is a stage with per-step blocks
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 \
                or idx.max() >= n:
            raise ValueError(f"stage {s}: the order must be a non-empty sequence of step indices in [0, {n}), "
                             f"got {idx.tolist()} (a stage with every block deleted is not a model that runs)")
        out[int(s)] = idx.astype(np.int32)
    return out


def _restacked(model: Classifier, order: Mapping[int, jax.Array]) -> Classifier:
    for s, idx in order.items():
        _set_stack(_holder(model.stages[s]), idx)
    return model


def restack(model: Classifier, order: Order) -> Classifier:
    """A copy of `model` whose stage s runs its blocks order[s] (step indices, in that order);
    stages not in `order` are unchanged. See the module docstring for what that means per stage."""
    checked = _checked(model, order)
    return _restacked(nnx.clone(model), {s: jnp.asarray(i) for s, i in checked.items()})


def keep_orders(model: Classifier, keep) -> dict[int, np.ndarray]:
    """{stage: kept step indices} from a boolean keep-mask over `blocks(model)` (True: kept)."""
    where = blocks(model)
    keep = np.asarray(keep, bool)
    if keep.shape != (len(where),):
        raise ValueError(f"keep must be a boolean mask of shape ({len(where)},) (one entry per block of "
                         f"blocks(model)), got shape {keep.shape}")
    out: dict[int, list[int]] = {}
    for (s, k), kept in zip(where, keep):
        out.setdefault(s, [])
        if kept:
            out[s].append(k)
    return {s: np.asarray(v, np.int32) for s, v in out.items()}


def delete_blocks(model: Classifier, drop: Iterable[tuple[int, int]]) -> Classifier:
    """A copy of `model` without the blocks drop = [(stage, step), ...]: each is replaced by the
    identity (residual: its skip) and the stage becomes shallower."""
    where = blocks(model)
    drop = {(int(s), int(k)) for s, k in drop}
    unknown = drop - set(where)
    if unknown:
        raise ValueError(f"blocks {sorted(unknown)} are not in blocks(model) (stage, step): {where}")
    return restack(model, keep_orders(model, [b not in drop for b in where]))


def random_deletion(model: Classifier, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """k distinct blocks of `blocks(model)`, uniform over the k-subsets that leave every stage at
    least one block (drawn without replacement, redrawn while a stage would be emptied)."""
    where = blocks(model)
    stages = sorted({s for s, _ in where})
    if not 0 <= k <= len(where) - len(stages):
        raise ValueError(f"k={k!r} blocks to delete: valid choices are 0..{len(where) - len(stages)} (every "
                         f"stage keeps one of its blocks)")
    rng = np.random.default_rng(seed)
    while True:
        pick = sorted(rng.choice(len(where), size=k, replace=False))
        left = {s for i, (s, _) in enumerate(where) if i not in set(pick)}
        if len(left) == len(stages):
            return [where[i] for i in pick]


def random_swaps(model: Classifier, k: int, seed: int = 0) -> dict[int, np.ndarray]:
    """{stage: order} after k swaps, each of two distinct blocks of one stage drawn at random
    (Veit et al.'s reordering; blocks of different stages have different widths)."""
    where = blocks(model)
    order = {s: np.arange(cast(ODEBlock | ScanStage, _holder(model.stages[s])).steps)
             for s in sorted({s for s, _ in where})}
    rng = np.random.default_rng(seed)
    stages = [s for s, o in order.items() if len(o) > 1]
    if k and not stages:
        raise ValueError("random_swaps needs a stage with at least two blocks")
    for _ in range(k):
        s = stages[rng.integers(len(stages))]
        i, j = rng.choice(len(order[s]), size=2, replace=False)
        order[s][[i, j]] = order[s][[j, i]]
    return {s: o.astype(np.int32) for s, o in order.items()}


@functools.partial(jax.jit, static_argnums=0)
def _correct(graphdef, state, x, y, order):
    model = _restacked(nnx.merge(graphdef, state, copy=True), order)
    return jnp.sum(jnp.argmax(model(x), -1) == y)


def accuracy(model: Classifier, x, y, order: Order | None = None, *, batch: int = 1000) -> float:
    """The fraction of inputs x (B, *input_shape) whose argmax logit is the label y, for the model
    restacked by `order` (None: the model itself). Orders are traced arrays: one compilation
    serves every order of the same shapes (all single deletions, all permutations)."""
    checked = _checked(model, order or {})
    graphdef, state = nnx.split(model)
    x, y = np.asarray(x), np.asarray(y)
    traced = {s: jnp.asarray(i) for s, i in checked.items()}
    correct = sum(int(_correct(graphdef, state, x[i:i + batch], y[i:i + batch], traced))
                  for i in range(0, len(x), batch))
    return correct / len(x)
