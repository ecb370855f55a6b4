"""Checkpoint: store the state every `segment` steps and recompute inside segments."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from odenets import validate
from odenets._abstract import final
from odenets.gradients.base import Gradient, register


@final
@register("checkpoint")
@dataclasses.dataclass(frozen=True)
class Checkpoint(Gradient):
    """Exact gradient of the discrete solve (times included) with O(sqrt(steps)) memory.

    The N steps are split into segments of length s (default ceil(sqrt(N))). The forward
    pass keeps only the state at segment boundaries; the backward pass recomputes one
    segment at a time (`jax.checkpoint` around an inner scan), so memory is
    O(N/s + s) = O(sqrt(N)) at the price of one extra forward solve.

    For adaptive integrators (whose step count is known only at run time): diffrax's
    RecursiveCheckpointAdjoint with `integrators.adaptive.CHECKPOINT_CHECKPOINTS` = 8 stored
    solver states whatever the steps and max_steps; equinox's online (Stumm-Walther) checkpointing
    recomputes the others, with treeverse's optimal schedule up to (8 + 1)(8 + 2)/2 = 45 steps
    (each step run at most once more), of the same order past them (`segment` does not apply).
    Measured on a 2-core CPU: MLP
    Neural ODE (batch 256, width 64, hidden 256, Dopri5 rtol = atol = 1e-5, 4 steps) solve +
    gradient 26 ms and 3.3 MB temporary memory (formerly 90 stored states: 37 ms, 17.8 MB);
    MNIST-1D ODE-Net training through Dopri5 (43 NFE): 1.04x the Euler ODE-Net's cost per forward
    NFE, 0.83x its temporary memory.
    """

    segment: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "segment", validate.optional(validate.integer, "segment", self.segment, low=1))

    def segment_length(self, steps: int) -> int:
        return min(steps, self.segment or math.isqrt(steps - 1) + 1)

    def solve(self, stepper, t0, h, y0, args):
        n, s = stepper.steps, self.segment_length(stepper.steps)
        outer, tail = divmod(n, s)
        body = stepper.body(t0, h, args)

        def segment(length):
            scan = lambda carry, xs: lax.scan(body, carry, xs, length=length, unroll=stepper.unroll)
            return jax.checkpoint(scan)

        xs = stepper.xs(args)
        head = jax.tree.map(lambda x: x[: outer * s].reshape(outer, s, *x.shape[1:]), xs)
        carry, ys = lax.scan(segment(s), stepper.start(t0, y0, args), head, length=outer)
        if stepper.save_all:
            ys = jax.tree.map(lambda y: y.reshape(outer * s, *y.shape[2:]), ys)
        if tail:
            rest = jax.tree.map(lambda x: x[outer * s :], xs)
            carry, ys_tail = segment(tail)(carry, rest)
            if stepper.save_all:
                ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
        return carry[1], ys

    def nfe_backward(self, stepper):
        """One forward solve again, segment by segment (None with Newton-based steps)."""
        if stepper.integrator.dynamic_nfe:
            return None
        return stepper.nfe_forward() - stepper.integrator.nfe_init
