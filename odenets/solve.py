"""`odeint`: one solve along every axis (integrator x gradient x depth parameterisation)."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets.gradients import REGISTRY as GRADIENTS
from odenets.gradients import Backprop, Gradient, Stepper
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.integrators import RK4, Integrator
from odenets.integrators.adaptive import solve_adaptive
from odenets.perstep import PerStep

SAVE_CHOICES = ("final", "all")


class Solution(NamedTuple):
    """Result of `odeint`.

    x:     the state at t1.
    xs:    with save="all", the states at the steps + 1 step boundaries t0, t0 + h, ..., t1
           (leading axis steps + 1; adaptive integrators report their dense solution at
           that grid); None with save="final".
    stats: {"nfe": forward vector-field evaluations, "nfe_backward": evaluations the
           backward pass makes again (0 for Backprop; a VJP of f counts as one),
           "steps": accepted steps, "rejected": rejected steps}. Ints, or int arrays where
           they are only known at run time (Newton iterations, adaptive steps).
    """

    x: Any
    xs: Any
    stats: dict


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _as_field(f, args):
    """Return (f(t, x, args), args): NNX modules are split into graph and state here."""
    module, per_step = f, False
    if isinstance(f, PerStep):
        module, per_step = f.tree, True
        if not isinstance(module, nnx.Module):
            raise TypeError("PerStep(...) as `f` must wrap an NNX module built by odenets.fields.stack")
    if isinstance(module, nnx.Module):
        if args is not None:
            raise ValueError("an NNX module `f` carries its own parameters: pass args=None")
        graphdef, state = nnx.split(module)

        def field(t, x, s):
            return nnx.merge(graphdef, s)(t, x)

        return field, (PerStep(state) if per_step else state)
    if not callable(f):
        raise TypeError(f"f must be a function f(t, x, args) or an NNX module, got {type(f).__name__}")
    return f, args


def _in_dtype(args, dtype):
    """Floating-point arguments cast to the state's dtype: the whole solve runs in x0's
    precision (the cast is differentiable, so gradients come back in the arguments' own dtype)."""
    cast = lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v  # noqa: E731
    return jax.tree.map(cast, args)


def _in_state_dtype(f):
    """dx/dt in the dtypes of x: the state keeps x0's precision whatever the parameters' is."""

    def field(t, x, args):
        return jax.tree.map(lambda d, v: d.astype(jnp.result_type(v)), f(t, x, args), x)

    return field


def _check_x0(x0):
    leaves = jax.tree.leaves(x0)
    if not leaves:
        raise ValueError("x0 has no arrays")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise TypeError(f"x0 must be floating point, got dtype {jnp.result_type(leaf)}")
        if not _is_tracer(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError("x0 has non-finite entries (NaN or Inf); fix the input before solving")
    return jax.tree.map(
        lambda v: eqx.error_if(v, ~jnp.all(jnp.isfinite(v)), "odeint: x0 has non-finite entries")
        if _is_tracer(v)
        else v,
        x0,
    )


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return int(steps)


def _check_per_step(args, steps, integ: Integrator):
    if not isinstance(args, PerStep):
        return
    if integ.adaptive:
        fixed = [n for n in INTEGRATORS.names() if not INTEGRATORS(n).adaptive]
        raise ValueError(
            f"PerStep arguments need a fixed-step integrator, got {integ.name!r}; "
            f"valid choices: {', '.join(fixed)}"
        )
    lengths = args.length()
    if lengths != {steps}:
        raise ValueError(
            f"PerStep arguments must have a leading axis of length steps={steps} on every leaf, "
            f"got leading lengths {sorted(lengths)}"
        )


def check_unroll(unroll, integ: Integrator | None = None) -> None:
    """unroll is True, False or an int >= 1; with `integ`, also that it suits that integrator."""
    if not isinstance(unroll, bool) and not (isinstance(unroll, int | np.integer) and unroll >= 1):
        raise ValueError(f"unroll must be True, False or an integer >= 1, got {unroll!r}")
    if integ is not None and integ.adaptive and (unroll is True or unroll not in (False, 1)):
        raise ValueError(f"unroll={unroll!r} applies to fixed-step integrators only; adaptive integrator "
                         f"{integ.name!r} takes its own steps (valid choice for it: unroll=1)")


def resolve_solver(
    integrator, gradient, *, per_step: bool, unroll: int | bool = 1
) -> tuple[Integrator, Gradient]:
    """Integrator and gradient objects from names or instances, with every pairing rule of
    `odeint` checked now (the registries' errors for unknown names; per-step parameters need a
    fixed-step integrator; the gradient's own check of the integrator; unroll)."""
    integ = INTEGRATORS(integrator)
    grad = GRADIENTS(gradient)
    if per_step and integ.adaptive:
        fixed = [n for n in INTEGRATORS.names() if not INTEGRATORS(n).adaptive]
        raise ValueError(
            f"per-step parameters need a fixed-step integrator, got integrator {integ.name!r}; "
            f"valid choices: {', '.join(fixed)}"
        )
    if integ.adaptive and grad.name == "reversible":
        raise ValueError(
            f"gradient 'reversible' is not available for adaptive integrator {integ.name!r}; "
            f"valid choices for it: backprop, checkpoint, adjoint"
        )
    grad.check(integ)
    check_unroll(unroll, integ)
    return integ, grad


def odeint(
    f,
    x0,
    t0=0.0,
    t1=1.0,
    steps: int = 20,
    *,
    integrator: Integrator | str = RK4(),
    gradient: Gradient | str = Backprop(),
    args=None,
    save: str = "final",
    unroll: int | bool = 1,
) -> Solution:
    """Solve dx/dt = f(t, x, args) from t0 to t1.

    f:          a function f(t, x, args) -> dx/dt, or a Flax NNX module with __call__(t, x)
                (or `PerStep(module)` for a module stacked by `odenets.fields.stack`).
    steps:      the step count of fixed-step integrators, h = (t1 - t0) / steps.
    integrator: an Integrator or its name (see `odenets.integrator.names()`).
    gradient:   a Gradient strategy or its name (see `odenets.gradient.names()`).
    args:       shared arguments, or `PerStep(stack)` with leading axis `steps`: step k
                evaluates every stage with slice k (a discrete ResNet with Euler and h = 1).
    save:       "final" or "all" (the states at every step boundary, leading axis steps+1).
    unroll:     steps per iteration of the loop over steps (`lax.scan`'s unroll; fixed-step
                integrators only): 1 keeps one step in the compiled program whatever `steps`
                is; True unrolls them all, which compiles in time growing with `steps` but
                runs convolutional fields several times faster on CPU, where XLA leaves
                backward convolutions inside a loop in slow layouts.

    Everything is checked before any compute; jit, vmap and grad all apply.
    """
    integ = INTEGRATORS(integrator)
    grad = GRADIENTS(gradient)
    if save not in SAVE_CHOICES:
        raise ValueError(f"unknown save {save!r}; valid choices: {', '.join(SAVE_CHOICES)}")
    steps = _check_steps(steps)
    check_unroll(unroll, integ)
    if integ.adaptive and grad.name == "reversible":
        raise ValueError(
            f"gradient 'reversible' is not available for adaptive integrator {integ.name!r}; "
            f"valid choices for it: backprop, checkpoint, adjoint"
        )
    grad.check(integ)
    field, args = _as_field(f, args)
    field = _in_state_dtype(field)
    _check_per_step(args, steps, integ)
    if not any(map(_is_tracer, (t0, t1))) and float(t0) == float(t1):
        raise ValueError(f"t1 must differ from t0, got t0 = t1 = {t0}")
    x0 = _check_x0(x0)

    dtype = jnp.result_type(*jax.tree.leaves(x0))
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    args = _in_dtype(args, dtype)
    save_all = save == "all"

    if integ.adaptive:
        ts = jnp.linspace(t0, t1, steps + 1) if save_all else None
        x, xs, stats = solve_adaptive(integ, field, t0, t1, x0, args, grad.diffrax_adjoint(integ), ts)
        return Solution(x, xs, {**stats, "nfe_backward": grad.adaptive_nfe_backward})

    per_step = isinstance(args, PerStep)
    stepper = Stepper(integ, field, steps, per_step, save_all, unroll)
    h = (t1 - t0) / steps
    state, ys = grad.solve(stepper, t0, h, x0, args.tree if per_step else args)
    x = integ.value(state)
    xs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, ys) if save_all else None
    stats = {
        "nfe": stepper.nfe_forward() + integ.extra_nfe(state),
        "nfe_backward": grad.nfe_backward(stepper),
        "steps": steps,
        "rejected": 0,
    }
    return Solution(x, xs, stats)
