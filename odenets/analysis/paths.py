"""The unrolled view of a residual stage: a sum over 2^n paths (Veit et al. 2016).

n blocks x_{l+1} = x_l + B_l(x_l) (B_l the residual branch: h F_l for forward Euler, the step
map minus the identity for any one-state step rule) have the input-output Jacobian

    dx_n/dx_0 = (I + J_{n-1}) ... (I + J_0),     J_l = dB_l/dx (x_l),

a sum over the 2^n subsets S of blocks of the ordered products prod_{l in S} J_l: one path per
subset, of length |S|. There are C(n, k) paths of length k, so lengths are Binomial(n, 1/2)
(`path_length_distribution`). The gradient dL/dx_0 splits the same way into the parts carried
by paths of each length,

    G_k = sum_{|S| = k} (prod_{l in S} J_l)^T g,    g = dL/dx_n,    sum_k G_k = dL/dx_0,

computed exactly by one backward sweep over the blocks carrying all n + 1 parts at once
(`path_gradients`: G <- G + shift(J_l^T G), n VJPs of n + 1 vectors), linearised at the actual
forward states (so nonlinear nets too). Veit et al. estimate it by sampling paths:
`sample_path_gradients` draws subsets of size k uniformly and back-propagates only through the
branches of the drawn blocks (the skip elsewhere); C(n, k) times the mean is an unbiased
estimate of G_k, and C(n, k) times the mean norm is their "total gradient magnitude" of length k.
The one thing a reader may get wrong: |G_k| is the norm of the summed gradient of length k, not
the sum of the paths' norms (paths of one length partly cancel).

    path_counts(n), path_length_distribution(n)     C(n, k) and C(n, k) / 2^n
    path_gradients(branch, xs, g, args)             exact G_0 .. G_n
    sample_path_gradients(branch, xs, g, args, k, samples, key)   single-path gradients
    stage_paths(model, x, y, samples=...)           both, for every ODE stage of a Classifier
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from scipy.special import comb, gammaln

from odenets import validate
from odenets.analysis._field import as_field
from odenets.analysis.observe import Downstream, _single_state
from odenets.analysis.steps import ode_stages
from odenets.models import Classifier
from odenets.perstep import PerStep
from odenets.solve import odeint


def path_counts(n: int) -> np.ndarray:
    """C(n, k) for k = 0..n: the number of paths of length k through n residual blocks (float)."""
    n = validate.integer("n", n, 0)
    return cast(np.ndarray, comb(n, np.arange(n + 1), exact=False))


def path_length_distribution(n: int) -> np.ndarray:
    """The fraction of the 2^n paths that have length k, k = 0..n: Binomial(n, 1/2)."""
    n = validate.integer("n", n, 0)
    k = np.arange(n + 1)
    return np.exp(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) - n * np.log(2.0))


@functools.partial(jax.jit, static_argnums=0)
def path_gradients(branch: Callable, xs, g, args=None):
    """(n + 1, *g.shape): G_k, the part of dL/dx_0 carried by the paths of length k, k = 0..n.

    branch(x, a): block l's residual branch B_l at state x with a = slice l of `args` (a pytree
    whose leaves have leading axis n; None: no arguments). xs: (n, ...) the states x_l entering
    block l on the forward pass. g: dL/dx_n. sum_k G_k equals dL/dx_0 (module docstring).
    """
    n = xs.shape[0]
    parts = jnp.zeros((n + 1, *g.shape), g.dtype).at[0].set(g)

    def back(parts, inputs):
        x, a = inputs
        _, vjp = jax.vjp(lambda y: branch(y, a), x)
        through = jax.vmap(lambda v: vjp(v)[0])(parts[:-1])
        return parts.at[1:].add(through), None

    parts, _ = lax.scan(back, parts, (xs, args), reverse=True)
    return parts


@functools.partial(jax.jit, static_argnums=(0, 5))
def sample_path_gradients(branch: Callable, xs, g, args, length, samples: int, key):
    """(samples, *g.shape): gradients dL/dx_0 carried by single paths of `length` blocks, each
    path a subset of the n blocks drawn uniformly (all C(n, length) equally likely); at a drawn
    block the gradient goes through the branch (J_l^T), elsewhere through the skip only.
    C(n, length) * mean over samples is an unbiased estimate of `path_gradients(...)[length]`."""
    n = xs.shape[0]

    def one(k):
        ranks = jnp.argsort(jax.random.uniform(k, (n,)))
        chosen = ranks < length

        def back(v, inputs):
            x, a, on = inputs
            _, vjp = jax.vjp(lambda y: branch(y, a), x)
            return jnp.where(on, vjp(v)[0], v), None

        v, _ = lax.scan(back, g, (xs, args, chosen), reverse=True)
        return v

    return jax.vmap(one)(jax.random.split(key, samples))


class Paths(NamedTuple):
    """The path view of one stage of n blocks on a batch.

    counts:        (n + 1,) C(n, k).
    exact_norm:    (n + 1,) |G_k| (the norm over the whole batch of the exact length-k part).
    sampled_norm:  (n + 1,) mean |single-path gradient| over the sampled paths of length k
                   (Veit et al.'s gradient magnitude per path; nan when samples=0).
    sampled_total: (n + 1,) C(n, k) * sampled_norm (their total gradient magnitude of length k).
    gradient_norm: |dL/dx_0| of the stage (equal to |sum_k G_k|).
    """

    counts: np.ndarray
    exact_norm: np.ndarray
    sampled_norm: np.ndarray
    sampled_total: np.ndarray
    gradient_norm: float


class _Branch(NamedTuple):
    """B(x) = Phi(x) - x: one `odeint` step of the block's field from t to t + h, minus x."""

    field: Any
    integrator: Any
    h: float

    def __call__(self, x, a):
        t, args = a
        return odeint(self.field, x, t, t + self.h, 1, integrator=self.integrator, args=args).x - x


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _stage(field, integrator, t0: float, t1: float, steps: int, downstream, x, args, loss_args):
    """(states entering each step, dL/dx_N, the branches' arguments, exact parts G_k) of one ODE stage."""
    h = (t1 - t0) / steps
    xs = odeint(field, x, t0, t1, steps, integrator=integrator, args=args, save="all").xs
    g = jax.grad(lambda v: downstream(v, loss_args))(xs[-1])
    times = t0 + h * jnp.arange(steps, dtype=xs.dtype)
    stacked = args.tree if isinstance(args, PerStep) else jax.tree.map(lambda v: jnp.stack([v] * steps), args)
    pargs = (times, stacked)
    return xs[:-1], g, pargs, path_gradients(_Branch(field, integrator, h), xs[:-1], g, pargs)


def stage_paths(model: Classifier, x, y, *, samples: int = 0, seed: int = 0) -> list[Paths]:
    """`Paths` of every ODE stage of a classifier on inputs x with labels y (L the mean
    cross-entropy of the logits, through everything after the stage, as `observe_model`): the
    branches are the stage's steps minus the identity, linearised along the forward trajectory.
    samples > 0 also samples that many paths of every length (Veit et al.'s estimate)."""
    if not isinstance(model, Classifier):
        raise TypeError(f"stage_paths takes a Classifier, got {type(model).__name__}")
    samples = validate.integer("samples", samples, 0)
    graphdef, state = nnx.split(model)
    y = jnp.asarray(y)
    out = []
    key = jax.random.key(seed)
    for s, block, x_in in ode_stages(model, jnp.asarray(x)):
        integ = _single_state(block.integrator)
        field, args = as_field(PerStep(block.field) if block.params == "per_step" else block.field)
        n = block.steps
        xs, g, pargs, parts = _stage(field, integ, block.t0, block.t1, n, Downstream(graphdef, s), x_in, args,
                                     (state, y))
        norms = lambda a, m: np.asarray(jax.vmap(jnp.linalg.norm)(a.reshape(m, -1)), np.float64)
        counts = path_counts(n)
        mean = np.full(n + 1, np.nan)
        if samples:
            branch = _Branch(field, integ, (block.t1 - block.t0) / n)
            for k in range(n + 1):
                key, sub = jax.random.split(key)
                single = sample_path_gradients(branch, xs, g, pargs, k, samples, sub)
                mean[k] = float(np.mean(norms(single, samples)))
        out.append(Paths(counts, norms(parts, n + 1), mean, counts * mean, float(jnp.linalg.norm(parts.sum(0)))))
    return out
