"""Per-step observation: states x_k, residuals F_k(t_k, x_k) and gradients dL/dx_k at every step.

The states are `odeint`'s save="all" (no second forward implementation). The gradients run
backwards through the method's own step map Phi_k (one `odeint` step from t_k to t_{k+1}
with step k's arguments):

    g_N = dL/dx_N,    g_k = (dPhi_k/dx (x_k))^T g_{k+1}        (a VJP per step)

so g_k is exactly the gradient of the discrete solve's loss with respect to the state
entering step k (for forward Euler on x' = A x: g_k = ((I + h A)^T)^(N-k) g_N). This needs a
step map of x_k alone: integrators that carry more state from step to step (reversible
Heun carries a second copy z) are refused.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from odenets.analysis._field import as_field
from odenets.analysis.stability import carried_size, fixed_step
from odenets.analysis.steps import ode_stages
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.integrators import Integrator
from odenets.models import Classifier, ODEBlock
from odenets.perstep import PerStep
from odenets.solve import check_grid, odeint


class Observation(NamedTuple):
    """One solve of N steps, observed at every step.

    times:     (N + 1,) t_k = t0 + k h.
    states:    (N + 1, ...) x_k (odeint's save="all").
    residuals: (N, ...) F_k(t_k, x_k), the residual branch's output at the state entering step k
               (h F_k is forward Euler's update; other methods evaluate F_k at more points).
    grads:     (N + 1, ...) dL/dx_k (complex states: JAX's convention for a real L, the conjugate
               of dL/dRe x_k + i dL/dIm x_k).
    loss:      L(x_N).
    """

    times: Any
    states: Any
    residuals: Any
    grads: Any
    loss: Any


def _single_state(integrator) -> Integrator:
    integ = fixed_step(integrator)
    if carried_size(integ) != 1:
        valid = [n for n in INTEGRATORS.names() if not INTEGRATORS.get(n).adaptive and carried_size(n) == 1]
        raise ValueError(
            f"per-step gradients dL/dx_k need a step map of x_k alone; integrator {integ.name!r} carries "
            f"{carried_size(integ)} numbers per state entry from step to step; valid choices: {', '.join(valid)}"
        )
    return integ


def observe(
    f,
    x0,
    t0,
    t1,
    steps: int,
    integrator: Integrator | str,
    loss: Callable[[Any], Any],
    args=None,
    *,
    loss_args=None,
) -> Observation:
    """Solve dx/dt = f(t, x, args) from t0 to t1 in `steps` fixed steps and observe every step.

    f:    a function f(t, x, args), an NNX module, or `PerStep(stack)` (or args=PerStep(...)):
          step k's field F_k is then slice k.
    loss: L(x_N) -> a real scalar; `grads` holds dL/dx_k for k = 0..N. With `loss_args`, L is
          loss(x_N, loss_args) (arrays passed in rather than closed over: a loss function
          used again is compiled once).
    Integrators must take fixed steps and carry x alone (see the module docstring).
    """
    integ = _single_state(integrator)
    steps = check_grid(steps, t0, t1)
    field, args = as_field(f, args)
    xs = odeint(field, x0, t0, t1, steps, integrator=integ, args=args, save="all").xs
    real = jnp.finfo(xs.dtype).dtype
    h = (jnp.asarray(t1, real) - jnp.asarray(t0, real)) / steps
    times = jnp.asarray(t0, real) + h * jnp.arange(steps + 1, dtype=real)
    residuals, grads, value = _backward(field, integ, loss, xs, times, h, args, loss_args)
    return Observation(times, xs, residuals, grads, value)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _backward(field, integ, loss, xs, times, h, args, loss_args=None):
    """(residuals F_k(t_k, x_k), gradients dL/dx_k, L) from the saved states, in one compiled program.
    L is loss(x_N), or loss(x_N, loss_args) when loss_args is given (a loss that jit can key on)."""
    per_step = isinstance(args, PerStep)
    stacked = args.tree if per_step else None
    shared = None if per_step else args
    pick = lambda a: shared if a is None else a
    residuals = jax.vmap(lambda t, x, a: field(t, x, pick(a)))(times[:-1], xs[:-1], stacked)

    def back(g, inputs):
        x, t, a = inputs
        _, vjp = jax.vjp(lambda y: odeint(field, y, t, t + h, 1, integrator=integ, args=pick(a)).x, x)
        (g,) = vjp(g)
        return g, g

    value, g_last = jax.value_and_grad(lambda x: loss(x) if loss_args is None else loss(x, loss_args))(xs[-1])
    _, grads = lax.scan(back, g_last, (xs[:-1], times[:-1], stacked), reverse=True)
    return residuals, jnp.concatenate([grads, g_last[None]]), value


def _block_f(block: ODEBlock):
    return PerStep(block.field) if block.params == "per_step" else block.field


def observe_block(block: ODEBlock, x, loss: Callable[..., Any], *, loss_args=None) -> Observation:
    """`observe` of an ODE block (its field, times, steps and integrator) on input x."""
    return observe(_block_f(block), x, block.t0, block.t1, block.steps, block.integrator, loss,
                   loss_args=loss_args)


@dataclasses.dataclass(frozen=True)
class Downstream:
    """The mean cross-entropy of a classifier's logits from the output of stage s: the later
    transitions and stages, then the head. Called as L(x, (model state, labels))."""

    graphdef: Any
    stage: int

    def __call__(self, x, state_and_labels):
        state, y = state_and_labels
        m = nnx.merge(self.graphdef, state, copy=True)  # fresh variables: the stages record stats
        for j in range(self.stage + 1, len(m.stages)):
            x = m.stages[j](m.transitions[j - 1](x))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m.head(x), y))


def observe_model(model: Classifier | ODEBlock, x, y=None, *, loss: Callable | None = None):
    """Observe every ODE stage of a model on input x.

    Classifier: y are integer labels; L is the mean softmax cross-entropy of the logits, and
    each ODE stage's gradients are those of L through everything after it (later stages, the
    head). Returns a list with one `Observation` per ODE stage (its input is that stage's input).
    ODEBlock: `loss` is a function of the block's output; returns one `Observation`.
    """
    if isinstance(model, ODEBlock):
        if loss is None:
            raise ValueError("observe_model of an ODEBlock needs loss=L(block output)")
        return observe_block(model, x, loss)
    if not isinstance(model, Classifier):
        raise TypeError(f"observe_model takes a Classifier or an ODEBlock, got {type(model).__name__}")
    if y is None:
        raise ValueError("observe_model of a Classifier needs the labels y (the loss is cross-entropy)")
    y = jnp.asarray(y)
    graphdef, state = nnx.split(model)
    return [observe_block(block, x_in, Downstream(graphdef, s), loss_args=(state, y))
            for s, block, x_in in ode_stages(model, jnp.asarray(x))]

