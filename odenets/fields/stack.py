"""Per-step stacks of a field: one parameter set per step, built with `nnx.vmap`."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import jax
from flax import nnx

from odenets.validate import integer, is_int


def stack(make: Callable[[nnx.Rngs], nnx.Module], steps: int, rngs: nnx.Rngs) -> nnx.Module:
    """A module whose every parameter has a leading axis of length `steps`.

    `make(rngs)` builds one field; each step gets its own independently initialised copy.
    Pass the result as `odeint(PerStep(stacked), ...)`: step k evaluates the field with
    slice k (a discrete ResNet). `field_at(stacked, k)` returns step k's field on its own.
    """
    steps = integer("steps", steps, 1)

    @nnx.split_rngs(splits=steps)
    @nnx.vmap(axis_size=steps)
    def create(rngs: nnx.Rngs):
        return make(rngs)

    return create(rngs)


def field_at(stacked: nnx.Module, k: int) -> nnx.Module:
    """Step k's field of a per-step stack of N steps, as a standalone module (spectra, lesions...).

    k is an int in [-N, N) (negative k counts from the last step, as in Python); anything else
    raises ValueError rather than clamping to the first or last step as array indexing would.
    """
    graphdef, state = nnx.split(stacked)
    lengths = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(state)}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(
            "field_at needs a per-step stack (odenets.fields.stack): every leaf with one leading step axis, "
            f"got leading lengths {sorted(lengths, key=str)}"
        )
    (n,) = cast(set[int], lengths)
    if not (is_int(k) and -n <= k < n):
        raise ValueError(f"k must be an int in [{-n}, {n}) for a stack of {n} steps, got k={k!r}")
    return nnx.merge(graphdef, jax.tree.map(lambda v: v[int(k)], state))
