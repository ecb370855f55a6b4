"""Reversible: exact gradients in constant memory by reconstructing states backwards.

The forward pass keeps only the final integrator state. The backward pass walks the steps
in reverse: it rebuilds state_k from state_{k+1} with the integrator's algebraic inverse,
then takes the VJP of that one step, with respect to the state, the step's arguments and
its times (t_k = t0 + k h, so dL/dt0 = sum_k dL/dt_k and dL/dh = sum_k (k dL/dt_k + dL/dh_k)).
The result is the gradient of the discrete solve (equal to Backprop up to the rounding of
the reconstruction) with memory independent of steps, at the cost of about one extra forward
solve. Needs a reversible integrator (`ReversibleHeun`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from odenets._abstract import final
from odenets.gradients.base import (
    Gradient,
    custom_vjp_solve,
    layer,
    register,
    saved_cotangents,
    tree_add,
    zeros_for_none,
)
from odenets.integrators.base import REGISTRY as INTEGRATORS


def _solve(stepper, t0, h, y0, args):
    integ, per = stepper.integrator, stepper.per_step
    run = custom_vjp_solve(stepper)

    @run.def_fwd
    def fwd(perturbed, vjp_arg):
        state, ys = stepper.run(*vjp_arg)
        return (state, ys), state

    @run.def_bwd
    def bwd(state1, cts, perturbed, vjp_arg):
        t0, h, y0, args = vjp_arg
        dargs, nargs = eqx.partition(args, eqx.is_inexact_array)
        state_ct, ys_ct = zeros_for_none(cts[0], state1), cts[1]

        def inject(state, ct, y_ct):
            _, vjp = jax.vjp(integ.value, state)
            return tree_add(ct, vjp(y_ct)[0])

        y_cts = None
        if stepper.save_all:  # the cotangent of x_k arrives at boundary k (x_N: with the final state)
            last, y_cts = saved_cotangents(ys_ct, integ.value(state1), stepper.steps)
            state_ct = inject(state1, state_ct, last)

        def body(carry, x):
            k, state, ct, g, (dt0, dh) = carry
            d_k, n_k, y_ct = x
            t = stepper.time(t0, h, k)
            d_k = d_k if per else dargs
            n_k = n_k if per else nargs
            prev = integ.inverse(stepper.fq, t, h, state, eqx.combine(d_k, n_k))
            step = lambda s, d, t_, h_: stepper.step(t_, h_, s, eqx.combine(d, n_k))
            _, vjp = jax.vjp(step, prev, d_k, t, h)
            ct, d_ct, t_ct, h_ct = vjp(ct)
            if y_ct is not None:
                ct = inject(prev, ct, y_ct)
            times = (dt0 + t_ct, dh + k.astype(dh.dtype) * t_ct + h_ct)
            if per:
                return (k - 1, prev, ct, g, times), d_ct
            return (k - 1, prev, ct, tree_add(g, d_ct), times), None

        zero_t = jnp.zeros((), jnp.result_type(h))
        g0 = jax.tree.map(jnp.zeros_like, dargs)
        carry = (jnp.asarray(stepper.steps - 1, jnp.int32), state1, state_ct, g0, (zero_t, zero_t))
        xs = (dargs if per else None, nargs if per else None, y_cts)
        (_, _, ct0, g, (dt0, dh)), g_steps = lax.scan(body, carry, xs, length=stepper.steps, reverse=True,
                                                      unroll=stepper.unroll)
        d0, n0 = (layer(dargs, 0), layer(nargs, 0)) if per else (dargs, nargs)
        _, vjp0 = jax.vjp(lambda y, d, t_: stepper.init(t_, y, eqx.combine(d, n0)), y0, d0, t0)
        y0_ct, d0_ct, t0_ct = vjp0(ct0)
        if per:
            grads = jax.tree.map(lambda gs, g0_: gs.at[0].add(g0_), g_steps, d0_ct)
        else:
            grads = tree_add(g, d0_ct)
        return (dt0 + t0_ct, dh, y0_ct, grads)

    return run((t0, h, y0, args))


@final
@register("reversible")
@dataclasses.dataclass(frozen=True)
class Reversible(Gradient):
    """Exact gradient (times included), memory independent of steps; needs a reversible integrator."""

    args_only: ClassVar[bool] = True

    def check(self, integrator):
        if not integrator.reversible:
            valid = [n for n in INTEGRATORS.names() if INTEGRATORS.get(n).reversible]
            raise ValueError(
                f"gradient 'reversible' needs an algebraically reversible integrator, got "
                f"{integrator.name!r}; valid choices: {', '.join(valid)} "
                f"(or use gradient 'backprop', 'checkpoint' or 'adjoint')"
            )

    def solve(self, stepper, t0, h, y0, args):
        return _solve(stepper, t0, h, y0, args)

    def nfe_backward(self, stepper):
        """Per step: the inverse, then one step again under a VJP; None with Newton-based steps."""
        if stepper.integrator.dynamic_nfe:
            return None
        i, n = stepper.integrator, stepper.steps
        return i.nfe_init + n * (i.nfe_inverse + i.nfe_step + (i.nfe_begin if stepper.per_step else 0))
