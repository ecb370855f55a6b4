"""`odeint`: one solve along every axis (integrator x gradient x depth parameterisation).

`odeint` checks everything, prepares the field and the dtypes, and hands the solve to the
integrator (`Integrator.solve`), which runs it with the gradient strategy. The rules that
pair an integrator with a gradient live in their own `check` methods; `resolve_solver`
calls them, for `odeint` and for the models alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from odenets import validate
from odenets.gradients import REGISTRY as GRADIENTS
from odenets.gradients import Backprop, Gradient
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.integrators import RK4, Integrator
from odenets.perstep import PerStep

SAVE_CHOICES = ("final", "all")


class Solution(NamedTuple):
    """Result of `odeint`.

    x:     the state at t1.
    xs:    with save="all", the states at the steps + 1 step boundaries t0, t0 + h, ..., t1
           (leading axis steps + 1; adaptive integrators report their dense solution at
           that grid); None with save="final".
    stats: {"nfe": forward vector-field evaluations, "nfe_backward": evaluations the
           backward pass makes again (0 for Backprop through explicit steps; a VJP of f counts
           as one), "steps": accepted steps, "rejected": rejected steps}. Ints, int arrays
           where they are only known at run time (Newton iterations, adaptive steps), or None
           where they are not known (never a guess).
    """

    x: Any
    xs: Any
    stats: dict


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_grid(steps, t0, t1) -> int:
    """`steps` as an int >= 1, and t0, t1 real, finite and distinct (where they are concrete).

    The one check of a solve's grid, for `odeint` and the models.
    """
    steps = validate.integer("steps", steps, low=1)
    concrete = {}
    for key, t in (("t0", t0), ("t1", t1)):
        if _is_tracer(t):
            continue
        value = np.asarray(t)
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            raise ValueError(f"{key} must be a real scalar, got {key}={t!r}")
        concrete[key] = float(value)
    if not all(map(math.isfinite, concrete.values())):
        raise ValueError(f"t0 and t1 must be finite, got t0={t0!r}, t1={t1!r}")
    if len(concrete) == 2 and concrete["t0"] == concrete["t1"]:
        raise ValueError(f"t1 must differ from t0, got t0 = t1 = {t0}")
    return steps


def check_unroll(unroll) -> int | bool:
    """unroll as True, False or an int >= 1 (what suits the integrator is its own check)."""
    if isinstance(unroll, bool):
        return unroll
    if not (validate.is_int(unroll) and unroll >= 1):
        raise ValueError(f"unroll must be True, False or an integer >= 1, got {unroll!r}")
    return int(unroll)


def resolve_solver(
    integrator, gradient, *, per_step: bool, unroll: int | bool = 1
) -> tuple[Integrator, Gradient]:
    """Integrator and gradient objects from names or instances, with every pairing rule checked
    now: the registries' errors for unknown names, then the integrator's own check (per-step
    arguments, unroll, gradients it supports) and the gradient's (integrators it needs)."""
    integ = INTEGRATORS(integrator)
    grad = GRADIENTS(gradient)
    unroll = check_unroll(unroll)
    integ.check(grad, per_step=per_step, unroll=unroll)
    grad.check(integ)
    return integ, grad


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
        _check_stateless(module)
        graphdef, state = nnx.split(module)

        def field(t, x, s):
            return nnx.merge(graphdef, s)(t, x)

        return field, (PerStep(state) if per_step else state)
    if not callable(f):
        raise TypeError(f"f must be a function f(t, x, args) or an NNX module, got {type(f).__name__}")
    return f, args


def _check_stateless(module):
    """Refuse layers that update state on every call (Dropout's rng counter, BatchNorm's batch
    statistics in training mode): a solve traces f inside loops, where such updates cannot escape."""
    for path, node in nnx.iter_graph(module):
        where = ".".join(map(str, path)) or type(module).__name__
        if isinstance(node, nnx.Dropout) and not node.deterministic and node.rate > 0:
            raise ValueError(
                f"f contains nnx.Dropout at {where!r} in training mode (rate={node.rate}, deterministic=False): "
                f"its random mask cannot be drawn inside an ODE solve. Use Dropout outside the vector field, "
                f"nnx.Dropout(..., deterministic=True) or rate=0, or call .eval() on the model first")
        if isinstance(node, nnx.BatchNorm) and not node.use_running_average:
            raise ValueError(
                f"f contains nnx.BatchNorm at {where!r} in training mode (use_running_average=False): its batch "
                f"statistics cannot be updated inside an ODE solve. Use nnx.GroupNorm or nnx.LayerNorm in the "
                f"vector field, nnx.BatchNorm(..., use_running_average=True), or call .eval() on the model first")


def _check_per_step(args, steps):
    if isinstance(args, PerStep) and args.length() != {steps}:
        raise ValueError(
            f"PerStep arguments must have a leading axis of length steps={steps} on every leaf, "
            f"got leading lengths {sorted(args.length())}"
        )


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


def _real(x0):
    """The real dtype of the state's precision (the widest of its leaves)."""
    return max((jnp.finfo(jnp.result_type(v)).dtype for v in jax.tree.leaves(x0)), key=lambda d: d.itemsize)


def _complex_of(dtype):
    return jnp.dtype(jnp.complex128 if jnp.finfo(dtype).bits == 64 else jnp.complex64)


def _state_dtypes(field, x0, args):
    """x0 promoted to the field's kind: a complex dx/dt makes the state complex (same precision),
    never the other way round, so no imaginary part is dropped.

    The field is traced once (no compute) to read its output; a structure or shapes unlike
    x0's is refused here rather than deep inside a solver.
    """
    x0 = jax.tree.map(jnp.asarray, x0)

    def dxdt(t, x, a):  # with PerStep arguments, step 0's slice (taken inside the trace: no copy)
        return field(t, x, jax.tree.map(lambda v: v[0], a.tree) if isinstance(a, PerStep) else a)

    out = eqx.filter_eval_shape(dxdt, jnp.zeros((), _real(x0)), x0, args)
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)
    leaf_shapes = lambda tree: [jnp.shape(v) for v in jax.tree.leaves(tree)]
    if jax.tree.structure(out) != jax.tree.structure(x0) or leaf_shapes(out) != leaf_shapes(x0):
        raise ValueError(f"f(t, x, args) must return dx/dt shaped like x0 {shapes(x0)}, got {shapes(out)}")
    complex_of_real = lambda v, o: jnp.iscomplexobj(o) and not jnp.iscomplexobj(v)
    return jax.tree.map(lambda v, o: v.astype(_complex_of(v.dtype)) if complex_of_real(v, o) else v, x0, out)


def _in_precision(args, x0):
    """Floating-point arguments cast to the state's precision, each keeping its kind (real or
    complex): the whole solve runs in x0's precision (the cast is differentiable, so gradients
    come back in the arguments' own dtype)."""
    real = _real(x0)

    def cast(v):
        if not eqx.is_inexact_array(v):
            return v
        return v.astype(_complex_of(real) if jnp.iscomplexobj(v) else real)

    return jax.tree.map(cast, args)


def _in_state_dtype(f):
    """dx/dt in the dtypes of x: the state keeps x0's precision whatever the parameters' is."""

    def field(t, x, args):
        return jax.tree.map(lambda d, v: d.astype(jnp.result_type(v)), f(t, x, args), x)

    return field


def _times(t0, t1, x0):
    """t0 and t1 as real scalars in the state's precision (real even for complex states);
    concrete times stay concrete (numpy), traced ones are checked for finiteness at run time."""
    real = _real(x0)
    if not any(map(_is_tracer, (t0, t1))):
        return np.asarray(t0, real), np.asarray(t1, real)
    t0, t1 = jnp.asarray(t0, real), jnp.asarray(t1, real)
    finite = jnp.isfinite(t0) & jnp.isfinite(t1)
    return eqx.error_if(t0, ~finite, "odeint: t0 and t1 must be finite"), t1


def odeint(
    f: Callable[..., Any] | nnx.Module | PerStep,
    x0,
    t0: ArrayLike = 0.0,
    t1: ArrayLike = 1.0,
    steps: int = 20,
    *,
    integrator: Integrator | str = RK4(),
    gradient: Gradient | str = Backprop(),
    args=None,
    save: str = "final",
    unroll: int | bool = 1,
    probe: ArrayLike | None = None,
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
    probe:      None, or a real scalar (a zero) whose gradient, when the loss is differentiated
                with respect to it too, is the number of vector-field evaluations the backward
                pass made: stats["nfe_backward"] where that is known before the backward pass
                runs, the count of the adjoint's backward solves for adaptive integrators, -1
                where unknown. Several solves sharing a probe add up.

    The state takes x0's precision, complex if x0 or dx/dt is; t0 and t1 stay real. Gradients
    with respect to t0 and t1 are exact for Backprop, Checkpoint and Reversible (the discrete
    solve's) and those of the ODE for Adjoint and adaptive integrators.

    Everything is checked before any compute; jit, vmap and grad all apply. Forward mode (jvp,
    jacfwd, hessian) works with gradient "backprop" or "checkpoint" and a fixed-step integrator;
    other pairs refuse it with a TypeError that says so. Second-order reverse mode (grad of
    grad, jacrev of jacrev) works through every fixed-step pair (Newton stages by the implicit
    function theorem); adaptive solves refuse it with a TypeError naming what works.
    A state that becomes non-finite in a solve with concrete values is an error naming the
    step (or time) where it happened; under jit or grad the NaN is returned (a training loop
    sees it as divergence), with no cost in the loop.
    """
    per_step = isinstance(f, PerStep) or isinstance(args, PerStep)
    integ, grad = resolve_solver(integrator, gradient, per_step=per_step, unroll=unroll)
    unroll = check_unroll(unroll)
    save = validate.choice("save", save, SAVE_CHOICES)
    steps = check_grid(steps, t0, t1)
    field, args = _as_field(f, args)
    _check_per_step(args, steps)
    x0 = _check_x0(x0)
    args = _in_precision(args, x0)
    x0 = _state_dtypes(field, x0, args)
    t0, t1 = _times(t0, t1, x0)
    probe = _check_probe(probe)
    if grad.args_only and not per_step:
        _check_closure(_in_state_dtype(field), t0, x0, args, grad)
    try:
        x, xs, stats = integ.solve(_in_state_dtype(field), t0, t1, x0, args, grad, steps=steps,
                                   save_all=save == "all", unroll=unroll, probe=probe)
    except TypeError as err:  # JAX's words for a custom VJP met by jvp: say which pairs do support it
        if "forward-mode" not in str(err):
            raise
        raise TypeError(forward_mode_message(integ, grad)) from None
    return Solution(x, xs, stats)


def _check_probe(probe):
    """None, or a real floating-point scalar (its cotangent carries a count)."""
    if probe is None:
        return None
    dtype = jnp.result_type(probe)
    if jnp.shape(probe) != () or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"probe must be None or a real floating-point scalar, got shape {jnp.shape(probe)} and "
                         f"dtype {dtype}")
    return jnp.asarray(probe)


def _check_closure(field, t0, x0, args, grad: Gradient) -> None:
    """A custom-VJP strategy differentiates x0 and args only: a value the field closes over that is
    being differentiated would get no gradient (JAX's own error is an unexpected tracer), so it is
    refused here, before the solve."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    closed = lambda t, x, d: field(t, x, eqx.combine(d, static))
    try:
        _, hoisted = jax.closure_convert(closed, t0, x0, dynamic)
    except Exception:  # a field this probe cannot trace alone: the solve reports its own errors
        return
    if hoisted:
        shapes = ", ".join(f"{jnp.shape(h)}" for h in hoisted[:4])
        raise TypeError(
            f"gradient {grad.name!r} differentiates x0 and args only, but the vector field closes over "
            f"{len(hoisted)} value(s) being differentiated (shapes {shapes}): pass them through args, "
            f"f(t, x, args) (an NNX module as f passes its parameters itself), or use gradient 'backprop' or "
            f"'checkpoint'")


def forward_mode_message(integ: Integrator, grad: Gradient) -> str:
    """Forward mode (jax.jvp, jax.jacfwd, jax.hessian) runs through the steps themselves, so it
    needs a fixed-step integrator differentiated by Backprop or Checkpoint; Adjoint, Reversible
    and every adaptive solve define reverse mode only (a custom VJP)."""
    fixed = [n for n in INTEGRATORS.names() if not INTEGRATORS.get(n).adaptive]
    return (f"forward-mode differentiation (jax.jvp, jax.jacfwd, jax.hessian) through odeint with integrator "
            f"{integ.name!r} and gradient {grad.name!r} is not supported: that pair defines reverse mode only. "
            f"Use gradient 'backprop' or 'checkpoint' with a fixed-step integrator ({', '.join(fixed)}), or "
            f"reverse mode (jax.grad, jax.jacrev)")
