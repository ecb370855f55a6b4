"""Per-step stacks of a field: one parameter set per step, built with `nnx.vmap`."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx


def stack(make: Callable[[nnx.Rngs], nnx.Module], steps: int, rngs: nnx.Rngs) -> nnx.Module:
    """A module whose every parameter has a leading axis of length `steps`.

    `make(rngs)` builds one field; each step gets its own independently initialised copy.
    Pass the result as `odeint(PerStep(stacked), ...)`: step k evaluates the field with
    slice k (a discrete ResNet). `field_at(stacked, k)` returns step k's field on its own.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")

    @nnx.split_rngs(splits=steps)
    @nnx.vmap(axis_size=steps)
    def create(rngs: nnx.Rngs):
        return make(rngs)

    return create(rngs)


def field_at(stacked: nnx.Module, k: int) -> nnx.Module:
    """Step k's field of a per-step stack, as a standalone module (for spectra, lesions...)."""
    graphdef, state = nnx.split(stacked)
    return nnx.merge(graphdef, jax.tree.map(lambda v: v[k], state))
