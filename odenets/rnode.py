"""RNODE regularisation (Finlay et al. 2020, "How to train your neural ODE"), integrated along the state.

For a solve of dx/dt = f(t, x) from t0 to t1 the two regularisers of example b are

    K_b = int_t0^t1 |f(t, x_b(t))|^2 dt                          (kinetic energy)
    J_b = int_t0^t1 |df/dx(t, x_b(t))|_F^2 dt                    (Jacobian Frobenius norm)

with |df/dx|_F^2 = E_eps |eps^T df/dx|^2 for eps ~ N(0, I) (Hutchinson), so J_b is estimated by
int |eps^T df/dx|^2 dt, one vector-Jacobian product per evaluation of f. They are not computed
after the solve: the state is augmented to (x, k, j) with

    dk/dt = |f(t, x)|^2,    dj/dt = |eps^T df/dx(t, x)|^2,    k(t0) = j(t0) = 0,

so the integrator's own quadrature integrates them (K = k(t1), J = j(t1)), an adaptive integrator's
error control sees them, and every gradient strategy (Backprop, Checkpoint, Adjoint, Reversible)
differentiates them as it differentiates x. The leading axis of x is the batch axis: k and j hold
one value per example (norms over the other axes). The training loss adds

    R = lambda_K mean_b K_b + lambda_J mean_b J_b

for every ODE block (`odenets.models.regularisation`); lambda 0 switches a term off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

from odenets import validate
from odenets._abstract import final
from odenets.perstep import PerStep
from odenets.solve import Solution, odeint


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RNODE:
    """The weights of the two RNODE terms in the training loss, R = lambda_K mean K + lambda_J mean J
    (module docstring). 0 switches a term off (no Jacobian product is made for lambda_J = 0);
    Finlay et al. use 0.01 for both.

    lambda_K  weight of the kinetic energy int |f|^2 dt, >= 0
    lambda_J  weight of the Jacobian Frobenius norm int |df/dx|_F^2 dt (Hutchinson estimate), >= 0
    """

    lambda_K: float = 0.0
    lambda_J: float = 0.0

    def __post_init__(self):
        for key in ("lambda_K", "lambda_J"):
            object.__setattr__(self, key, validate.number(key, getattr(self, key), low=0.0, open_low=False))

    @property
    def active(self) -> bool:
        """Whether any term is weighted (a block without one solves x alone)."""
        return self.lambda_K > 0 or self.lambda_J > 0

    @property
    def jacobian(self) -> bool:
        """Whether the Jacobian term is weighted (the solve then draws eps and makes a VJP per evaluation)."""
        return self.lambda_J > 0

    def penalty(self, kinetic: jax.Array, jacobian: jax.Array) -> jax.Array:
        """lambda_K mean_b K_b + lambda_J mean_b J_b (a weight of 0 drops its term)."""
        total = jnp.zeros((), kinetic.dtype)
        if self.lambda_K > 0:
            total = total + self.lambda_K * jnp.mean(kinetic)
        if self.lambda_J > 0:
            total = total + self.lambda_J * jnp.mean(jacobian)
        return total


def _per_example(tree) -> jax.Array:
    """sum over every leaf and every axis but the leading (batch) one of |v|^2."""
    terms = (jnp.sum(jnp.abs(v) ** 2, axis=tuple(range(1, v.ndim))) for v in jax.tree.leaves(tree))
    return cast(jax.Array, sum(terms))


def integrands(fn, x, eps):
    """(f(x), |f(x)|^2, |eps^T df/dx|^2) per example for fn: x -> f(x); eps None: no VJP, the last 0."""
    if eps is None:
        fx = fn(x)
        return fx, _per_example(fx), jnp.zeros_like(_per_example(fx))
    fx, vjp = jax.vjp(fn, x)
    (v,) = vjp(eps)
    return fx, _per_example(fx), _per_example(v)


@final
class _Augmented(nnx.Module):
    """An NNX field F(t, x) as the field of the augmented state (x, k, j); eps rides along as a
    Variable (per-step eps has a leading axis of steps, like the stack it pairs with)."""

    def __init__(self, field: nnx.Module, eps):
        self.field = field
        self.eps = None if eps is None else nnx.Variable(eps)

    def __call__(self, t, s):
        eps = None if self.eps is None else self.eps[...]
        return integrands(lambda x: self.field(t, x), s[0], eps)


def rnode_odeint(f, x0, eps=None, t0=0.0, t1=1.0, steps: int = 20, *, args=None, **options) -> tuple[
        Solution, jax.Array, jax.Array]:
    """`odeint` of the augmented state (x, k, j) (module docstring): (solution of x, K, J), K and J of
    shape (B,) for x0 of shape (B, ...).

    f, x0, t0, t1, steps, args and the keyword options are `odeint`'s (an NNX module, `PerStep(stack)`
    or a function f(t, x, args)). eps: the Hutchinson probe, shaped like x0 (drawn once per solve) or,
    with per-step parameters, with a leading axis of `steps` (step k uses slice k); None: J = 0 and
    no VJP. The solution's xs (save="all") holds the states x only.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim < 1:
        raise ValueError(f"rnode_odeint needs a batch axis: x0 of shape (B, ...), got shape {x0.shape}")
    zero = jnp.zeros(x0.shape[:1], jnp.finfo(x0.dtype).dtype)
    s0 = (x0, zero, zero)
    per_step = isinstance(f, PerStep) or isinstance(args, PerStep)
    module = f.tree if isinstance(f, PerStep) else f
    if isinstance(module, nnx.Module):
        field: Any = _Augmented(module, eps)
        field = PerStep(field) if isinstance(f, PerStep) else field
        sol = odeint(field, s0, t0, t1, steps, args=args, **options)
    else:
        fn = cast(Callable, f)  # a function f(t, x, args): a module (PerStep or not) took the branch above
        inner = args.tree if isinstance(args, PerStep) else args
        pair = PerStep((inner, eps)) if per_step else (inner, eps)
        sol = odeint(lambda t, s, a: integrands(lambda x: fn(t, x, a[0]), s[0], a[1]), s0, t0, t1, steps,
                     args=pair, **options)
    x, k, j = sol.x
    return Solution(x, None if sol.xs is None else sol.xs[0], sol.stats), k, j
