"""Pruning masks for lottery tickets (Frankle & Carbin 2019): global magnitude pruning, random
masks of the same sparsity, rewinding, and an optimiser that keeps pruned weights at zero.

A mask m is a pytree of 0/1 arrays shaped like the parameters (an `nnx.State` of the Params
from `nnx.split(model, nnx.Param, ...)`, or any pytree); the pruned net has weights m * theta.
Only `prunable` leaves are ever pruned: by default the weights (kernels), not biases, norm
scales or scalar gates (`weights_only`). One round of global magnitude pruning at rate p
removes, among the weights still alive in every prunable leaf together, the round(p * alive)
with the smallest |theta|; after r rounds about (1 - p)^r of them remain. Iterative magnitude
pruning with rewinding is then

    m = ones;  theta_0 = init;  theta_k = the weights after k training steps (the rewind point)
    repeat: train m * theta from rewind(theta_k, m); m = magnitude_masks(trained, p, m)

`masked(tx, m)` wraps an optax optimiser so that training honours the mask: the gradient is
masked before tx (clipping and Adam's moments see only live weights) and the update of a
pruned weight is -theta (so theta + update = 0 exactly, even for weights not zero at the start).
The one thing a reader may get wrong: weight decay or momentum alone would move a pruned weight
off zero; the wrapper's last step, not zero initial values, is what keeps it there. The masks
live in the optimiser state (`MaskedState.masks`), not in the compiled update: one jitted train
step trains every mask of a pruning run (`state._replace(masks=new)`), with no recompilation.

    weights_only(path, leaf)                 the default prunable predicate
    magnitude_masks(params, p, masks=None)   one round of global magnitude pruning
    random_masks(masks, seed)                the same number kept per leaf, at random positions
    apply_masks(params, masks), rewind(params_k, masks)
    kept_fraction(masks)                     fraction of prunable weights kept
    transfer_masks(masks, params)            a mask moved onto another net of the same leaf shapes
    masked(tx, masks)                        the optax wrapper
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from odenets import validate

NOT_WEIGHTS = ("scale", "alpha")  # besides every name starting with "bias"


def _name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    keys = [k for k in keys if isinstance(k, str) and k != "value"]
    return keys[-1] if keys else ""


def weights_only(path, leaf) -> bool:
    """True for weight tensors: leaves of 2 or more axes whose name is not a bias, a norm scale
    or a scalar gate (`alpha`)."""
    name = _name(path)
    return np.ndim(leaf) >= 2 and not name.startswith("bias") and name not in NOT_WEIGHTS


Prunable = Callable[[Any, Any], bool]


def _flags(tree, prunable: Prunable):
    return jax.tree_util.tree_map_with_path(lambda p, v: bool(prunable(p, v)), tree)


def ones_like(params):
    """The mask that keeps everything."""
    return jax.tree.map(lambda v: jnp.ones(jnp.shape(v), jnp.asarray(v).dtype), params)


def magnitude_masks(params, fraction: float, masks=None, *, prunable: Prunable = weights_only):
    """One round of global magnitude pruning: among the live (mask 1) prunable weights of all
    leaves together, set to 0 the round(fraction * live) with the smallest |theta| (ties broken
    by position). masks=None starts from keeping everything."""
    fraction = validate.number("fraction", fraction, low=0.0, high=1.0, open_low=False, open_high=False)
    masks = ones_like(params) if masks is None else masks
    flags = jax.tree.leaves(_flags(params, prunable))
    leaves, treedef = jax.tree.flatten(params)
    mleaves = jax.tree.leaves(masks)
    if len(mleaves) != len(leaves):
        raise ValueError(f"masks have {len(mleaves)} leaves, the parameters {len(leaves)}: build them from "
                         "the same parameters")
    scores, where = [], []
    for i, (v, m, f) in enumerate(zip(leaves, mleaves, flags)):
        if f:
            live = np.flatnonzero(np.asarray(m).ravel())
            scores.append(np.abs(np.asarray(v, np.float64).ravel()[live]))
            where += [(i, j) for j in live]
    out = [np.asarray(m).copy() for m in mleaves]
    if scores:
        scores = np.concatenate(scores)
        drop = np.argsort(scores, kind="stable")[: int(round(fraction * len(scores)))]
        for d in drop:
            i, j = where[d]
            out[i].reshape(-1)[j] = 0
    return jax.tree.unflatten(treedef, [jnp.asarray(m, jnp.asarray(v).dtype) for m, v in zip(out, leaves)])


def random_masks(masks, seed: int = 0, *, prunable: Prunable = weights_only):
    """Masks keeping as many weights of each prunable leaf as `masks` do, at positions drawn
    uniformly at random (the random-pruning baseline at the same layer-wise sparsity)."""
    rng = np.random.default_rng(seed)

    def shuffle(path, m):
        if not prunable(path, m):
            return m
        flat = np.asarray(m).ravel().copy()
        return jnp.asarray(rng.permutation(flat).reshape(np.shape(m)), jnp.asarray(m).dtype)

    return jax.tree_util.tree_map_with_path(shuffle, masks)


def apply_masks(params, masks):
    """m * theta, leaf by leaf (0/1 masks; where m = 0 the entry is 0 even if theta is not finite)."""
    return jax.tree.map(lambda v, m: jnp.where(m != 0, v, jnp.zeros_like(v)), params, masks)


def rewind(params_at_rewind, masks):
    """The ticket's starting point: the weights saved at the rewind iteration (theta_0 in the
    original lottery ticket, theta_k with late rewinding), masked."""
    return apply_masks(params_at_rewind, masks)


def kept_fraction(masks, *, prunable: Prunable = weights_only) -> float:
    """The fraction of prunable weights the masks keep."""
    flags = jax.tree.leaves(_flags(masks, prunable))
    kept = total = 0
    for m, f in zip(jax.tree.leaves(masks), flags):
        if f:
            kept += float(np.sum(np.asarray(m)))
            total += np.size(m)
    if not total:
        raise ValueError("the masks hold no prunable leaves (see weights_only)")
    return kept / total


def transfer_masks(masks, params):
    """`masks` (built on one net) as masks of another net with parameters `params`: leaf by leaf in
    flattening order, which must give the same shapes (a plain net and the residual net with the same
    layers: only the stage's module name differs). The mask values are unchanged; the tree is params'."""
    mleaves, (leaves, treedef) = jax.tree.leaves(masks), jax.tree.flatten(params)
    shapes = [np.shape(m) for m in mleaves], [np.shape(v) for v in leaves]
    if shapes[0] != shapes[1]:
        raise ValueError(f"masks of leaf shapes {shapes[0]} do not fit parameters of leaf shapes {shapes[1]}: "
                         "a mask transfers only between nets with the same layers in the same order")
    dtype = lambda v: v.dtype if hasattr(v, "dtype") else np.result_type(v)  # also shapes only (nnx.eval_shape)
    return jax.tree.unflatten(treedef, [jnp.asarray(m, dtype(v)) for m, v in zip(mleaves, leaves)])


class MaskedState(NamedTuple):
    """The inner optimiser's state and the masks it enforces (traced data: swap them freely)."""

    inner: Any
    masks: Any


def masked(tx: optax.GradientTransformation, masks, *, pruned: bool = True) -> optax.GradientTransformation:
    """tx with the mask enforced: gradients masked before tx (clipping and Adam's moments see only
    the live entries), then the update of every masked entry replaced: by -theta when `pruned`, so
    that theta + update is exactly 0 (needs params in update), by 0 otherwise, so that the entry
    holds its value (`freeze.frozen`: masking the gradient alone would let Adam's moments or weight
    decay move it). `masks` are the initial state's; the update reads the state's, so a new mask is
    `state._replace(masks=new)` (with a fresh `inner` to restart the optimiser)."""

    def init(params):
        return MaskedState(tx.init(params), masks)

    def update(updates, state, params=None):
        if pruned and params is None:
            raise ValueError("masked(tx, masks).update needs params (it sets pruned weights to exactly 0)")
        updates, inner = tx.update(apply_masks(updates, state.masks), state.inner, params)
        if pruned:
            updates = jax.tree.map(lambda u, p, m: jnp.where(m != 0, u, -p), updates, params, state.masks)
        else:
            updates = apply_masks(updates, state.masks)
        return updates, MaskedState(inner, state.masks)

    return optax.GradientTransformation(init, update)
