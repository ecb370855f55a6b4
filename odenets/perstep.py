"""`PerStep`: the depth parameterisation of a discrete ResNet (one parameter set per step)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PerStep:
    """Arguments that change from step to step: every leaf has a leading axis of length `steps`.

    Step k of a fixed-step solve evaluates *every* stage of the integrator with slice k,
    so `odeint(f, x0, 0, N, N, integrator=Euler(), args=PerStep(stack))` is exactly the
    residual network x_{k+1} = x_k + f(k, x_k, stack[k]).

    Wrap an NNX module built with `odenets.fields.stack` the same way and pass it as `f`.
    """

    tree: Any

    def length(self) -> set[int]:
        """The set of leading-axis lengths of the leaves (one element when consistent)."""
        return {leaf.shape[0] if getattr(leaf, "ndim", 0) else -1 for leaf in jax.tree.leaves(self.tree)}
