"""Implicit one-step methods of theta type, A-stable for theta >= 1/2.

    y_next = y + h * [(1 - theta) f(t, y) + theta f(t + h, y_next)]

theta = 1 is backward Euler (order 1, L-stable), theta = 1/2 the trapezoidal rule (order 2).
The stage equation is solved by Newton's method (optimistix), and differentiated by the
implicit function theorem (optimistix.ImplicitAdjoint), never by unrolling the iterations.
Newton sees complex states as (real, imaginary) pairs.

With a quadrature integrand q (see `fixed`), Newton runs over y alone and the integral of q
over the step is the same theta rule, h [(1 - theta) q(t, y) + theta q(t + h, y_next)]:
exactly the theta method on the augmented system, without putting Q into Newton.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from odenets import validate
from odenets._abstract import final
from odenets.integrators.base import combine, real_view, register
from odenets.integrators.fixed import FixedStepIntegrator


def _default_tol(y) -> float:
    eps = max(float(jnp.finfo(leaf.dtype).eps) for leaf in jax.tree.leaves(y))
    return eps**0.7  # ~1e-11 in float64, ~1.4e-5 in float32


@dataclasses.dataclass(frozen=True)
class ThetaMethod(FixedStepIntegrator):
    """A theta method. `rtol`/`atol` are Newton's tolerances (None: set from the dtype).

    The state is (y, evaluations made by Newton so far); `extra_nfe` reads the counter. A step
    whose Newton solve fails (no convergence in `max_iters`, a non-finite f) gives a NaN state,
    which `odeint` reports with the step where it happened (and which a training loop sees as
    divergence), never optimistix's internal error.
    """

    dynamic_nfe: ClassVar[bool] = True
    rtol: float | None = None
    atol: float | None = None
    max_iters: int = 50

    @property
    @abc.abstractmethod
    def theta(self) -> float:
        """The implicit weight in [1/2, 1] (a class attribute on concrete methods)."""

    def __post_init__(self):
        for key in ("rtol", "atol"):
            object.__setattr__(self, key, validate.optional(validate.number, key, getattr(self, key), low=0.0))
        object.__setattr__(self, "max_iters", validate.integer("max_iters", self.max_iters, low=1))

    def init(self, fq, t0, y0, args):
        return (y0, jnp.zeros((), jnp.int32))

    def value(self, state):
        return state[0]

    def extra_nfe(self, state):
        return state[1]

    def advance(self, fq, t, h, state, args):
        y, count = state
        theta = self.theta
        t1 = t + h
        explicit = 1.0 - theta
        if explicit:
            f0, q0 = fq(t, y, args)
            rhs = combine(y, h, [explicit], [f0])
            count = count + 1
        else:
            rhs = y
        to_real, from_real = real_view(y)

        def residual(z, p):
            rhs_, t1_, h_, a_ = p
            z = from_real(z)
            fz, _ = fq(t1_, z, a_)
            return to_real(jax.tree.map(lambda zi, ri, fi: zi - ri - fi * (h_ * theta).astype(fi.dtype),
                                        z, rhs_, fz))

        tol = _default_tol(y)
        solver = optx.Newton(rtol=self.rtol or tol, atol=self.atol or tol)
        sol = optx.root_find(residual, solver, to_real(y), args=(rhs, t1, h, args), max_steps=self.max_iters,
                             throw=False)
        ok = sol.result == optx.RESULTS.successful
        y1 = jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), from_real(sol.value))
        count = count + sol.stats["num_steps"].astype(jnp.int32)
        q_shape = eqx.filter_eval_shape(fq, t1, y1, args)[1]
        if not jax.tree.leaves(q_shape):  # no quadrature: its empty structure, as fq returns it
            return (y1, count), q_shape
        _, q1 = fq(t1, y1, args)
        quad = combine(None, h, [explicit, theta], [q0, q1]) if explicit else combine(None, h, [theta], [q1])
        return (y1, count), quad


@final
@register("backward_euler")
@dataclasses.dataclass(frozen=True)
class BackwardEuler(ThetaMethod):
    """Backward Euler, y_next = y + h f(t + h, y_next): order 1, L-stable."""

    order: ClassVar[int] = 1
    theta: ClassVar[float] = 1.0


@final
@register("trapezoid")
@dataclasses.dataclass(frozen=True)
class Trapezoid(ThetaMethod):
    """Trapezoidal rule (Crank-Nicolson), y_next = y + h (f(t, y) + f(t + h, y_next)) / 2: order 2, A-stable."""

    order: ClassVar[int] = 2
    theta: ClassVar[float] = 0.5
