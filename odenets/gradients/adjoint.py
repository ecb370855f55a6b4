"""Adjoint: the continuous adjoint method (Chen et al. 2018), solved backwards in time.

With a(t) = dL/dx(t), the backward pass integrates from t1 to t0, with the *same*
integrator and step count as the forward solve,

    dx/dt = f(t, x, theta),   da/dt = -a^T df/dx,   dg/dt = -a^T df/dtheta,

from x(t1) (the saved output), a(t1) = dL/dx(t1), g(t1) = 0, giving dL/dx0 = a(t0) and
dL/dtheta = g(t0). g is integrated as a quadrature along the step (see
`integrators.base`); with PerStep arguments each step's integral is that step's gradient.
Nothing per step is stored, so memory does not grow with steps. The gradient is that of the
ODE, not of the discrete solve: it approaches Backprop as the step shrinks, and x(t) is
recomputed backwards, which is unstable for strongly contracting dynamics.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from odenets.gradients.base import Gradient, register
from odenets.gradients.loop import split_args, tree_add, zero_cotangent


def _augmented(f, nondiff):
    """fq of the adjoint system on the state (x, a), with the parameter integrand as q."""

    def fq(t, xa, dargs):
        x, a = xa
        fx, vjp = jax.vjp(lambda x_, d_: f(t, x_, eqx.combine(d_, nondiff)), x, dargs)
        ax, ad = vjp(a)
        neg = lambda tree: jax.tree.map(lambda v: -v, tree)  # noqa: E731
        return (fx, neg(ax)), neg(ad)

    return fq


def _solve(stepper, t0, h, y0, dargs, nargs):
    @jax.custom_vjp
    def run(t0, h, y0, dargs, nargs):
        return stepper.run(t0, h, y0, eqx.combine(dargs, nargs))

    def fwd(t0, h, y0, dargs, nargs):
        state, ys = run(t0, h, y0, dargs, nargs)
        return (state, ys), (t0, h, stepper.integrator.value(state), dargs, nargs)

    def bwd(res, cts):
        t0, h, y1, dargs, nargs = res
        state_ct, ys_ct = cts
        integ, per = stepper.integrator, stepper.per_step
        at = lambda tree, k: jax.tree.map(lambda v: v[k], tree)  # noqa: E731
        a1 = integ.value(state_ct)
        if stepper.save_all:
            a1 = tree_add(a1, at(ys_ct, -1))
        nd_last = at(nargs, -1) if per else nargs
        fq = _augmented(stepper.f, nd_last) if per else _augmented(stepper.f, nargs)
        d_last = at(dargs, -1) if per else dargs
        inject = None
        if stepper.save_all:  # cotangent of x_k arrives at boundary k (k = 1 .. N-1; x_N above)
            inject = jax.tree.map(lambda v: jnp.concatenate([jnp.zeros_like(v[:1]), v[:-1]]), ys_ct)

        def body(carry, x):
            k, state, g = carry
            d_k, n_k, inj = x
            t = stepper.time(t0, h, k)
            d_k = d_k if per else dargs
            fq_k = _augmented(stepper.f, n_k if per else nargs)
            if per:
                state = integ.begin_step(fq_k, t + h, state, d_k)
            state, quad = integ.advance(fq_k, t + h, -h, state, d_k)
            if inj is not None:
                xk, ak = integ.value(state)
                state = integ.init(fq_k, t, (xk, tree_add(ak, inj)), d_k)
            if per:
                return (k - 1, state, g), quad
            return (k - 1, state, tree_add(g, quad)), None

        state = integ.init(fq, t0 + stepper.steps * h, (y1, a1), d_last)
        carry = (jnp.asarray(stepper.steps - 1, jnp.int32), state, zero_cotangent(dargs))
        xs = (dargs if per else None, nargs if per else None, inject)
        (_, state, g), g_steps = lax.scan(body, carry, xs, length=stepper.steps, reverse=True,
                                                     unroll=stepper.unroll)
        _, a0 = integ.value(state)
        grads = g_steps if per else g
        return (zero_cotangent(t0), zero_cotangent(h), a0, grads, zero_cotangent(nargs))

    run.defvjp(fwd, bwd)
    return run(t0, h, y0, dargs, nargs)


@register("adjoint")
@dataclasses.dataclass(frozen=True)
class Adjoint(Gradient):
    """Continuous adjoint (backsolve): memory independent of steps, gradient of the ODE.

    For adaptive integrators: diffrax's BacksolveAdjoint.
    """

    name: ClassVar[str] = "adjoint"

    def solve(self, stepper, t0, h, y0, args):
        dargs, nargs = split_args(args)
        return _solve(stepper, t0, h, y0, dargs, nargs)

    def nfe_backward(self, stepper):
        if stepper.integrator.dynamic_nfe:
            return None
        i, n = stepper.integrator, stepper.steps
        per_inject = i.nfe_init if stepper.save_all else 0
        return i.nfe_init + n * (i.nfe_step + (i.nfe_begin if stepper.per_step else 0) + per_inject)

    def diffrax_adjoint(self, integrator):
        return diffrax.BacksolveAdjoint()
