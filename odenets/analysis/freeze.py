"""Freezing blocks while training: stagewise (boosting-like) training of per-step stages.

A mask m is a pytree of 0/1 arrays shaped like the parameters (`nnx.split(model, nnx.Param, ...)`),
1 where an entry may move. `block_mask(model, train)` opens the slices of the per-step blocks
`train` = [(stage, step)] (slice `step` of the leading step axis of a per-step stack, as
`lesion.blocks` counts them) and, whole, the parameters outside the per-step stacks whose
top-level name is in `also` (stem, transitions, head). `frozen(tx, m)` is tx with the mask
enforced:

    g <- m * g            (clipping and Adam's moments see only the trainable entries)
    u, s <- tx(g, s)
    u <- m * u            (a frozen entry's update is exactly 0: theta + u = theta)

The mask lives in the optimiser state (`prune.MaskedState.masks`), not in the compiled step:
`with_mask(state, m)` opens other blocks without compiling the train step again. Stagewise
training as in boosting (block l trained with blocks 0..l-1 frozen) is then one train step and
a new mask per stage. The one thing a reader may get wrong: masking the gradient alone is not
enough, Adam's moments (or weight decay) would still move an entry whose gradient is 0; the
last masking is what holds a frozen entry fixed.

    block_mask(model, train, also=())     the 0/1 pytree
    frozen(tx, mask)                      the optax wrapper
    with_mask(opt_state, mask)            the same optimiser state with another mask
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from odenets.analysis.lesion import _holder, _stack_of, blocks
from odenets.analysis.prune import MaskedState, masked
from odenets.models import Classifier


def _keys(path) -> tuple:
    keys = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]
    return tuple(k for k in keys if k != "value")


def block_mask(model: Classifier, train: Iterable[tuple[int, int]], also: Iterable[str] = ()):
    """0/1 arrays shaped like the model's parameters (`nnx.split(model, nnx.Param, ...)[1]`): 1 on
    the slices of the per-step blocks `train` = [(stage, step), ...] (see `lesion.blocks`), and on
    every parameter outside the per-step stacks whose top-level name (stem, stages, transitions,
    head) is in `also`; 0 elsewhere."""
    where = blocks(model)
    train = {(int(s), int(k)) for s, k in train}
    unknown = train - set(where)
    if unknown:
        raise ValueError(f"blocks {sorted(unknown)} are not in blocks(model) (stage, step): {where}")
    also = set(also)
    names = {"stem", "stages", "transitions", "head"}
    if also - names:
        raise ValueError(f"also={sorted(also - names)}: valid choices: {', '.join(sorted(names))}")
    stacks = {}
    for s, stage in enumerate(model.stages):
        holder = _holder(stage)
        if holder is not None:
            stacks[id(_stack_of(holder))] = s
    prefixes = {tuple(path): stacks[id(node)] for path, node in nnx.iter_graph(model) if id(node) in stacks}
    params = nnx.split(model, nnx.Param, ...)[1]

    def mask(path, leaf):
        keys = _keys(path)
        stage = next((s for p, s in prefixes.items() if keys[:len(p)] == p), None)
        if stage is None:
            return jnp.full(jnp.shape(leaf), float(keys[0] in also), jnp.asarray(leaf).dtype)
        on = np.zeros(jnp.shape(leaf)[0])
        on[[k for s, k in train if s == stage]] = 1.0
        return jnp.asarray(on.reshape(-1, *[1] * (jnp.ndim(leaf) - 1)) * np.ones(jnp.shape(leaf)),
                           jnp.asarray(leaf).dtype)

    return jax.tree_util.tree_map_with_path(mask, params)


def frozen(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """tx with the entries where `mask` is 0 frozen: their gradient is zeroed before tx and their
    update after it, so they never move (module docstring): `prune.masked` holding masked entries
    instead of zeroing them. `mask` is the initial mask; the one in the state is the one applied
    (`with_mask` swaps it)."""
    return masked(tx, mask, pruned=False)


def with_mask(opt_state: MaskedState, mask) -> MaskedState:
    """The optimiser state of `frozen(tx, ...)` with `mask` applied from the next update on."""
    if not isinstance(opt_state, MaskedState):
        raise TypeError(f"with_mask takes the state of frozen(tx, mask), got {type(opt_state).__name__}")
    if jax.tree.structure(mask) != jax.tree.structure(opt_state.masks):
        raise ValueError("the new mask must have the structure of the parameters (block_mask of the same model)")
    return opt_state._replace(masks=mask)
