"""Reversible: exact gradients in constant memory by reconstructing states backwards.

The forward pass keeps only the final integrator state. The backward pass walks the steps
in reverse: it rebuilds state_k from state_{k+1} with the integrator's algebraic inverse,
then takes the VJP of that one step. The result is the gradient of the discrete solve (equal
to Backprop up to the rounding of the reconstruction) with memory independent of steps, at
the cost of about one extra forward solve. Needs an integrator with an inverse
(`ReversibleHeun`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from odenets.gradients.base import Gradient, register
from odenets.gradients.loop import split_args, tree_add, zero_cotangent
from odenets.integrators.base import REGISTRY as INTEGRATORS


def _solve(stepper, t0, h, y0, dargs, nargs):
    integ, per, fq = stepper.integrator, stepper.per_step, stepper.fq

    @jax.custom_vjp
    def run(t0, h, y0, dargs, nargs):
        return stepper.run(t0, h, y0, eqx.combine(dargs, nargs))

    def fwd(t0, h, y0, dargs, nargs):
        state, ys = run(t0, h, y0, dargs, nargs)
        return (state, ys), (t0, h, y0, state, dargs, nargs)

    def bwd(res, cts):
        t0, h, y0, state1, dargs, nargs = res
        state_ct, ys_ct = cts
        at = lambda tree, k: jax.tree.map(lambda v: v[k], tree)  # noqa: E731
        args_k = lambda d, n: eqx.combine(d, n)  # noqa: E731

        def inject(state, ct, y_ct):
            _, vjp = jax.vjp(integ.value, state)
            return tree_add(ct, vjp(y_ct)[0])

        # the final state's cotangent: the cotangent of x_N arrives through ys as well
        if stepper.save_all:
            state_ct = inject(state1, state_ct, at(ys_ct, -1))
        y_cts = None
        if stepper.save_all:
            y_cts = jax.tree.map(lambda v: jnp.concatenate([jnp.zeros_like(v[:1]), v[:-1]]), ys_ct)

        def body(carry, x):
            k, state, ct, g = carry
            d_k, n_k, y_ct = x
            t = stepper.time(t0, h, k)
            d_k = d_k if per else dargs
            n_k = n_k if per else nargs
            prev = integ.inverse(fq, t, h, state, args_k(d_k, n_k))
            _, vjp = jax.vjp(lambda s, d: stepper.step(t, h, s, args_k(d, n_k)), prev, d_k)
            ct, d_ct = vjp(ct)
            if y_ct is not None:
                ct = inject(prev, ct, y_ct)
            if per:
                return (k - 1, prev, ct, g), d_ct
            return (k - 1, prev, ct, tree_add(g, d_ct)), None

        carry = (jnp.asarray(stepper.steps - 1, jnp.int32), state1, state_ct, zero_cotangent(dargs))
        xs = (dargs if per else None, nargs if per else None, y_cts)
        (_, _, ct0, g), g_steps = lax.scan(body, carry, xs, length=stepper.steps, reverse=True,
                                                 unroll=stepper.unroll)
        d0, n0 = (at(dargs, 0), at(nargs, 0)) if per else (dargs, nargs)
        _, vjp0 = jax.vjp(lambda y, d: stepper.init(t0, y, args_k(d, n0)), y0, d0)
        y0_ct, d0_ct = vjp0(ct0)
        if per:
            g_steps = jax.tree.map(lambda gs, g0: gs.at[0].add(g0), g_steps, d0_ct)
            grads = g_steps
        else:
            grads = tree_add(g, d0_ct)
        return (zero_cotangent(t0), zero_cotangent(h), y0_ct, grads, zero_cotangent(nargs))

    run.defvjp(fwd, bwd)
    return run(t0, h, y0, dargs, nargs)


@register("reversible")
@dataclasses.dataclass(frozen=True)
class Reversible(Gradient):
    """Exact gradient, memory independent of steps; needs a reversible integrator."""

    name: ClassVar[str] = "reversible"

    def check(self, integrator):
        if not integrator.reversible:
            valid = [n for n in INTEGRATORS.names() if INTEGRATORS(n).reversible]
            raise ValueError(
                f"gradient 'reversible' needs an algebraically reversible integrator, got "
                f"{integrator.name!r}; valid choices: {', '.join(valid)} "
                f"(or use gradient 'backprop', 'checkpoint' or 'adjoint')"
            )

    def solve(self, stepper, t0, h, y0, args):
        dargs, nargs = split_args(args)
        return _solve(stepper, t0, h, y0, dargs, nargs)

    def nfe_backward(self, stepper):
        if stepper.integrator.dynamic_nfe:
            return None
        i, n = stepper.integrator, stepper.steps
        return i.nfe_init + n * (i.nfe_inverse + i.nfe_step + (i.nfe_begin if stepper.per_step else 0))
