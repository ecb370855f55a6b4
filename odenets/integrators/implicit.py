"""Implicit one-step methods of theta type, A-stable for theta >= 1/2.

    y_next = y + h * [(1 - theta) f(t, y) + theta f(t + h, y_next)]

theta = 1 is backward Euler (order 1, L-stable), theta = 1/2 the trapezoidal rule (order 2).
The stage equation is solved by Newton's method (optimistix), and differentiated by the
implicit function theorem (optimistix.ImplicitAdjoint), never by unrolling the iterations.

With a quadrature integrand q (see `base`), Newton runs over y alone and the integral of q
over the step is the same theta rule, h [(1 - theta) q(t, y) + theta q(t + h, y_next)]:
exactly the theta method on the augmented system, without putting Q into Newton.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optimistix as optx

from odenets.integrators.base import Integrator, combine, register


def _default_tol(y) -> float:
    dtype = jnp.result_type(*jax.tree.leaves(y))
    return float(jnp.finfo(dtype).eps) ** 0.7  # ~1e-11 in float64, ~1.4e-5 in float32


@dataclasses.dataclass(frozen=True)
class ThetaMethod(Integrator):
    """Base of theta methods. `rtol`/`atol` are Newton's tolerances (None: set from the dtype).

    The state is (y, evaluations made by Newton so far); `extra_nfe` reads the counter.
    """

    theta: ClassVar[float]
    dynamic_nfe: ClassVar[bool] = True
    rtol: float | None = None
    atol: float | None = None
    max_iters: int = 50

    def __post_init__(self):
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {self.max_iters}")

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

        def residual(z, p):
            rhs_, t1_, h_, a_ = p
            fz, _ = fq(t1_, z, a_)
            return jax.tree.map(lambda zi, ri, fi: zi - ri - (h_ * theta) * fi, z, rhs_, fz)

        tol = _default_tol(y)
        solver = optx.Newton(rtol=self.rtol or tol, atol=self.atol or tol)
        sol = optx.root_find(residual, solver, y, args=(rhs, t1, h, args), max_steps=self.max_iters)
        y1 = sol.value
        count = count + sol.stats["num_steps"].astype(jnp.int32)
        if not jax.tree.leaves(jax.eval_shape(fq, t1, y1, args)[1]):  # no quadrature
            return (y1, count), ()
        _, q1 = fq(t1, y1, args)
        quad = combine(None, h, [explicit, theta], [q0, q1]) if explicit else combine(None, h, [theta], [q1])
        return (y1, count), quad


@register("backward_euler")
@dataclasses.dataclass(frozen=True)
class BackwardEuler(ThetaMethod):
    """Backward Euler, y_next = y + h f(t + h, y_next): order 1, L-stable."""

    name: ClassVar[str] = "backward_euler"
    order: ClassVar[int] = 1
    theta: ClassVar[float] = 1.0


@register("trapezoid")
@dataclasses.dataclass(frozen=True)
class Trapezoid(ThetaMethod):
    """Trapezoidal rule (Crank-Nicolson), y_next = y + h (f(t, y) + f(t + h, y_next)) / 2: order 2, A-stable."""

    name: ClassVar[str] = "trapezoid"
    order: ClassVar[int] = 2
    theta: ClassVar[float] = 0.5
