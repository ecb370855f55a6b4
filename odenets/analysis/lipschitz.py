"""Lipschitz estimates of residual blocks by power iteration on J^T J (matrix-free).

The spectral norm |J|_2 = sigma_max of J = df/dx(x) is the square root of the largest eigenvalue
of J^T J. Power iteration v <- J^T J v / |J^T J v| needs one JVP (J v) and one VJP (J^T u) per
iteration and never forms J; sigma = |J v| at the end. A block x -> x + h F(x) has
Lipschitz constant at most 1 + h Lip(F), and a stack of blocks at most the product of theirs:

    Lip(x_0 -> x_N) <= prod_k (1 + h Lip(F_k)).

The one thing a reader may get wrong: |J(x)| at sampled points is a *local* value, a lower bound
on Lip(F) = sup_x |J(x)|; the maximum over a batch of data points is what `block_lipschitz`
reports as Lip(F_k), so the bound built from it is an estimate, not a certificate.

    spectral_norm(f, x, batched=..., iters=...)   sigma_max of df/dx at x (per sample if batched)
    block_lipschitz(model, x)                     per step of every ODE stage: Lip(F_k), the bound
                                                  1 + h Lip(F_k), the step map's own local norm,
                                                  and the product of the bounds
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from odenets import validate
from odenets.analysis._field import as_field
from odenets.analysis.steps import ode_stages
from odenets.models import Classifier, ODEBlock
from odenets.perstep import PerStep
from odenets.solve import odeint


def _norms(v, batched: bool):
    flat = v.reshape(v.shape[0], -1) if batched else v.reshape(1, -1)
    return jnp.linalg.norm(flat, axis=1)


def _normalise(v, batched: bool):
    n = _norms(v, batched)
    n = n.reshape((-1,) + (1,) * (v.ndim - 1)) if batched else n[0]
    return v / jnp.maximum(n, jnp.finfo(v.dtype).tiny)


def _power(f, x, batched: bool, iters: int, key):
    v = _normalise(jax.random.normal(key, x.shape, x.dtype), batched)
    _, vjp = jax.vjp(f, x)
    jvp = lambda v: jax.jvp(f, (x,), (v,))[1]

    def body(_, v):
        return _normalise(vjp(jvp(v))[0], batched)

    v = lax.fori_loop(0, iters, body, v)
    sigma = _norms(jvp(v), batched)
    return sigma if batched else sigma[0]


def spectral_norm(f, x, *, batched: bool = False, iters: int = 100, seed: int = 0):
    """sigma_max(df/dx (x)) by `iters` power iterations on J^T J (JVP + VJP, no Jacobian formed).

    batched=True: x is (B, ...) and f acts on each sample alone (a model layer); returns (B,),
    the norm of each sample's own Jacobian. Otherwise a scalar for the whole map. The estimate
    approaches sigma_max from below; the gap to the next singular value sets the convergence.
    """
    iters = validate.integer("iters", iters, 1)
    x = jnp.asarray(x)
    return _power(f, x, batched, iters, jax.random.key(seed))


class Lipschitz(NamedTuple):
    """Lipschitz estimates along one ODE stage of N steps (step size h).

    field: (N,) max over the batch of |dF_k/dx (t_k, x_k)|_2: the estimate of Lip(F_k).
    bound: (N,) 1 + h field: the bound on the Lipschitz constant of step k.
    step:  (N,) max over the batch of the step map's own |dx_{k+1}/dx_k|_2 (<= bound for Euler).
    product: prod_k bound: the stage's bound.
    h: the step.
    """

    field: np.ndarray
    bound: np.ndarray
    step: np.ndarray
    product: float
    h: float


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _stage(field, integrator, iters: int, t0: float, t1: float, steps: int, x0, args, key):
    """(|dF_k/dx|, |dPhi_k/dx|) maxima over the batch for every step k, the states from one solve."""
    h = (t1 - t0) / steps
    xs = odeint(field, x0, t0, t1, steps, integrator=integrator, args=args, save="all").xs[:-1]
    times = t0 + h * jnp.arange(steps, dtype=xs.dtype)
    per_step = isinstance(args, PerStep)
    stacked = args.tree if per_step else None

    def one(t, x, a, key):
        a = a if per_step else args
        k1, k2 = jax.random.split(key)
        f = jnp.max(_power(lambda y: field(t, y, a), x, True, iters, k1))
        phi = lambda y: odeint(field, y, t, t + h, 1, integrator=integrator, args=a).x
        return f, jnp.max(_power(phi, x, True, iters, k2))

    return jax.vmap(one)(times, xs, stacked, jax.random.split(key, steps))


def _block(block: ODEBlock, x, iters: int, key) -> Lipschitz:
    if block.integrator.adaptive:
        raise ValueError(f"block_lipschitz needs fixed steps; the block's integrator {block.integrator.name!r} "
                         "is adaptive")
    field, args = as_field(PerStep(block.field) if block.params == "per_step" else block.field)
    f, step = _stage(field, block.integrator, iters, block.t0, block.t1, block.steps, x, args, key)
    f, step = np.asarray(f, np.float64), np.asarray(step, np.float64)
    h = (block.t1 - block.t0) / block.steps
    bound = 1.0 + h * f
    return Lipschitz(f, bound, step, float(np.prod(bound)), h)


def block_lipschitz(model: Classifier | ODEBlock, x, *, iters: int = 50, seed: int = 0) -> list[Lipschitz]:
    """`Lipschitz` of every ODE stage of a classifier on input x (B, *input_shape) (or of one
    ODEBlock on its input (B, ...): a list of one), at the states the forward pass goes through."""
    iters = validate.integer("iters", iters, 1)
    key = jax.random.key(seed)
    if isinstance(model, ODEBlock):
        return [_block(model, jnp.asarray(x), iters, key)]
    if not isinstance(model, Classifier):
        raise TypeError(f"block_lipschitz takes a Classifier or an ODEBlock, got {type(model).__name__}")
    out = []
    for _, block, x_in in ode_stages(model, jnp.asarray(x)):
        key, sub = jax.random.split(key)
        out.append(_block(block, x_in, iters, sub))
    return out
