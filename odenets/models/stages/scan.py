"""Per-step stacks run by a step rule of their own: `scan_layers` and the `ScanStage` base."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from odenets.fields import stack
from odenets.models.block import Counted
from odenets.solve import check_unroll


def scan_layers(stacked: nnx.Module, step: Callable, carry, *, reverse: bool = False, unroll: int | bool = 1):
    """carry <- step(layer_k, k, carry) for k = 0..N-1 (N-1..0 with reverse), by `lax.scan`
    over the split per-step state: compile time does not grow with depth (unroll as odeint's)."""
    graphdef, state = nnx.split(stacked)
    n = jax.tree.leaves(state)[0].shape[0]

    def body(c, xs):
        k, s = xs
        return step(nnx.merge(graphdef, s), k, c), None

    carry, _ = lax.scan(body, carry, (jnp.arange(n), state), reverse=reverse, unroll=unroll)
    return carry


def step_time(k, x):
    """The time t_k = k of step k, in the state's dtype."""
    return k.astype(x.dtype)


class ScanStage(Counted):
    """Per-step fields `stack(make_field, steps)` run by a step rule of its own (`_scan`);
    a forward pass records one evaluation per step."""

    def __init__(self, make_field, *, steps: int, unroll: int | bool = 1, rngs: nnx.Rngs):
        check_unroll(unroll)
        self.steps, self.unroll = steps, unroll
        self.fields = stack(make_field, steps, rngs)
        self._init_stats()

    def _scan(self, step: Callable, carry, *, reverse: bool = False):
        carry = scan_layers(self.fields, step, carry, reverse=reverse, unroll=self.unroll)
        if not reverse:
            self._record(self.steps, 0)
        return carry
