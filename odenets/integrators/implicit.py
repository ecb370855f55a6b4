"""Implicit one-step methods of theta type, A-stable for theta >= 1/2.

    y_next = y + h * [(1 - theta) f(t, y) + theta f(t + h, y_next)]

theta = 1 is backward Euler (order 1, L-stable), theta = 1/2 the trapezoidal rule (order 2).
The stage equation R(z, p) = z - rhs - h theta f(t + h, z) = 0 is solved by Newton's method
(optimistix) and differentiated by the implicit function theorem, never by unrolling the
iterations: dz = -(dR/dz)^-1 (dR/dp) dp. The rule evaluates z by calling the solve itself, so
it is differentiable again (grad of grad, hessian), each order through the same theorem.
Newton sees complex states as (real, imaginary) pairs.

With a quadrature integrand q (see `fixed`), Newton runs over y alone and the integral of q
over the step is the same theta rule, h [(1 - theta) q(t, y) + theta q(t + h, y_next)]:
exactly the theta method on the augmented system, without putting Q into Newton.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, ClassVar

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import optimistix as optx
from jax import lax

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

    if TYPE_CHECKING:  # a class attribute on concrete methods; the abstract property keeps this class abstract
        theta: ClassVar[float]
    else:

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
        q0 = None  # q at the step's start: needed only when the explicit part is nonzero
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
        z, steps = _root(to_real(y), (rhs, t1, h, args), residual=residual, solver=solver,
                         max_steps=self.max_iters)
        y1 = from_real(z)
        count = count + steps
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


# chord corrections in the derivative rule: the derivatives of the stage solution are exact to order
# CORRECTIONS + 1 (grad of grad and reverse-over-reverse hessians need 2, hessians of a gradient 3)
CORRECTIONS = 2


@eqx.filter_custom_jvp
def _root(z0, p, *, residual, solver, max_steps):
    """(z with R(z, p) = 0 from the guess z0, Newton iterations made). A failed solve (no
    convergence, a non-finite f) gives z = NaN, which `odeint` and the training loop report."""
    # derivatives come from the rule below, never from the iterations (JAX may still trace this
    # body when it partially evaluates a differentiated loop: it then sees constants)
    z0, p = jax.tree.map(lambda v: lax.stop_gradient(v) if eqx.is_inexact_array(v) else v, (z0, p))
    sol = optx.root_find(residual, solver, z0, args=p, max_steps=max_steps, throw=False)
    ok = sol.result == optx.RESULTS.successful
    z = jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), sol.value)
    return z, sol.stats["num_steps"].astype(jnp.int32)


@_root.def_jvp
def _root_jvp(primals, tangents, *, residual, solver, max_steps):
    """The implicit function theorem, dz = -(dR/dz)^-1 (dR/dp) dp, written so that it can be
    differentiated again (grad of grad, hessian) without relying on this rule being seen again.

    With J = dR/dz at the root (a constant matrix M for differentiation) and z* the root, z is
    returned as z* - M^-1 R(z*, p) (chord steps: its value is z*, and each step makes one more
    derivative of z in p exact), and the tangent dz as the chord iterate of J dz = -R_p dp from
    dz = -M^-1 R_p dp (its value is the theorem's; each step makes one more derivative exact).
    Only z* comes from Newton's iterations, never differentiated. J is dense (Newton forms it too).
    """
    z0, p = primals
    _, dp = tangents
    z, steps = _root(z0, p, residual=residual, solver=solver, max_steps=max_steps)
    flat, unravel = jax.flatten_util.ravel_pytree(lax.stop_gradient(z))
    ravel = lambda tree: jax.flatten_util.ravel_pytree(tree)[0]
    r = lambda zf, p_: ravel(residual(unravel(zf), p_))
    jac = lax.stop_gradient(jax.jacfwd(lambda zf: r(zf, p))(flat))
    solve = lambda b: jnp.linalg.solve(jac, b)
    zc = flat
    for _ in range(CORRECTIONS):
        zc = zc - solve(r(zc, p))
    if dp is None or not jax.tree.leaves(dp):
        return (unravel(zc), steps), (None, None)
    # symbolic zeros (None) made explicit for every inexact array of p; None elsewhere (args=None, a function)
    zero = lambda v, t: t if t is not None else (jnp.zeros_like(v) if eqx.is_inexact_array(v) else None)
    dp = jax.tree.map(zero, p, dp, is_leaf=lambda v: v is None)
    # R_z dz + R_p dp at (zc, p): one jvp of R
    linear = lambda dz: eqx.filter_jvp(r, (zc, p), (dz, dp))[1]
    dz = -solve(linear(jnp.zeros_like(zc)))
    for _ in range(CORRECTIONS):
        dz = dz - solve(linear(dz))
    return (unravel(zc), steps), (unravel(dz), None)
