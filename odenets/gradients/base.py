"""The interface of gradient strategies, their registry, and helpers for custom backward passes.

A strategy decides how d(loss)/d(t0, h, x0, args) flows back through a fixed-step solve:
`solve(stepper, t0, h, y0, args)` returns (final integrator state, values at steps 1..N or
None) and may attach any custom backward pass; `nfe_backward(stepper)` counts what that pass
evaluates. Adaptive integrators map a strategy (by name) onto a diffrax adjoint themselves.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from odenets._registry import Registry
from odenets.integrators.base import Integrator
from odenets.stepper import Stepper


@dataclasses.dataclass(frozen=True)
class Gradient(abc.ABC):
    """How a solve is differentiated. Concrete strategies are frozen, final dataclasses."""

    name: ClassVar[str]
    # differentiates x0 and args only (a custom VJP): a field that closes over a value being
    # differentiated is refused by odeint, naming the fix (pass it through args)
    args_only: ClassVar[bool] = False
    # the exact gradient of the discrete solve (every step differentiated as it was taken); False: the
    # gradient of the ODE that the steps approximate (the continuous adjoint)
    discrete: ClassVar[bool] = True

    def check(self, integrator: Integrator) -> None:
        """Raise ValueError, naming the valid choices, if this pairing is not supported."""

    @abc.abstractmethod
    def solve(self, stepper: Stepper, t0, h, y0, args) -> tuple[Any, Any]:
        """(final integrator state, values at steps 1..N or None), differentiable in every input."""

    @abc.abstractmethod
    def nfe_backward(self, stepper: Stepper) -> int | None:
        """Vector-field evaluations the backward pass makes again (a VJP of f counts as one).

        None where that is only known at run time (Newton solves inside the backward pass).
        """


def tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def zero_cotangent(v):
    """The zero cotangent of one leaf: zeros for inexact arrays, float0 for the rest."""
    return jnp.zeros_like(v) if eqx.is_inexact_array(v) else np.zeros(np.shape(v), jax.dtypes.float0)


def zeros_for_none(ct, like):
    """Cotangents with symbolic zeros (None) made explicit zeros shaped like `like`."""
    return jax.tree.map(lambda c, v: (zero_cotangent(v) if c is None else c) if v is not None else None,
                        ct, like, is_leaf=lambda c: c is None)


def saved_cotangents(ys_ct, y1, steps):
    """From the cotangents of the saved states x_1 .. x_N (None: symbolic zero), that of x_N and
    those of x_k indexed by the boundary k = 0 .. N-1 where a backward pass meets them (0 at k = 0)."""
    ys_ct = jax.tree.map(lambda c, v: jnp.zeros((steps, *v.shape), v.dtype) if c is None else c, ys_ct, y1,
                         is_leaf=lambda c: c is None)
    at_boundary = jax.tree.map(lambda v: jnp.concatenate([jnp.zeros_like(v[:1]), v[:-1]]), ys_ct)
    return jax.tree.map(lambda v: v[-1], ys_ct), at_boundary


def dot_field(f, t, x, args, ct):
    """Re <ct, f(t, x, args)>: how a loss with cotangent `ct` at x(t) changes as t moves."""
    return sum(jnp.sum(c * v).real for c, v in zip(jax.tree.leaves(ct), jax.tree.leaves(f(t, x, args))))


REGISTRY: Registry[Gradient] = Registry("gradient", Gradient)
register = REGISTRY.register


def layer(tree, k):
    """Slice k of every leaf of a per-step pytree (leading axis = steps)."""
    return jax.tree.map(lambda v: v[k], tree)


def custom_vjp_solve(stepper):
    """`stepper.run` as an equinox custom-VJP function of vjp_arg = (t0, h, y0, args): the
    strategy attaches its own forward (`def_fwd`: what it keeps) and backward (`def_bwd`)."""

    @eqx.filter_custom_vjp
    def run(vjp_arg):
        return stepper.run(*vjp_arg)

    return run
