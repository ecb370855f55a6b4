"""Depth transfer: per-step parameters trained at N steps, evaluated at M steps (Sander et al. 2022).

A per-step stage holds theta_0 .. theta_{N-1}. Read as samples of a function theta(s) of depth
s in [0, 1] at s_k = k / (N - 1), the parameters at M steps are its piecewise-linear interpolant
at s_j = j / (M - 1):

    theta'_j = (1 - w) theta_i + w theta_{i+1},   i = floor(s_j (N - 1)),  w = s_j (N - 1) - i

(`depth_weights(N, M)` is that (M, N) matrix W, theta' = W theta; N = 1 or M = 1 use s = 0).
The first and last parameter sets are kept, and M = N is the identity. The stage keeps its
interval [t0, t1], so its step becomes h' = (t1 - t0) / M = h N / M: a ResNet with h = 1 at
N steps runs with h = N / M, the same ODE dx/dt = F(t, x; theta(t)) at another resolution.
Whether the trained net is close to that ODE (a smooth theta(s)) decides whether this works.

    depth_weights(N, M)               the interpolation matrix W (M, N), rows summing to 1
    interpolate_stack(tree, M)        a pytree with leading axis N -> leading axis M
    interpolate_depth(model, M)       a copy of a Classifier / ODEBlock with every ODE stage at M
                                      steps (per-step: interpolated; shared: only the step count)

A smooth-in-depth initialisation (Sander et al.'s condition for the ODE limit) from N i.i.d.
draws theta_0 .. theta_{N-1}: keep K of them, the anchors a_i = theta_{k_i} at evenly spaced
steps k_i = round(i (N - 1) / (K - 1)), and interpolate them in depth, each step rescaled so that
it keeps the variance of one draw:

    theta'_k = sum_i V[k, i] a_i / |V[k, :]|_2,    V = depth_weights(K, N)

(a_i independent with variance s^2: Var theta'_k = s^2 for every k). K = 1 is constant in depth,
K = N the i.i.d. draws themselves; a leaf whose steps are all equal (biases 0, norm scales 1)
is left as it is. The increments |theta'_{k+1} - theta'_k| are O(K / N): smooth as N grows.

    smooth_stack(tree, K)             a per-step pytree (leading axis N) made smooth in depth
    smooth_depth(model, K)            a copy of a Classifier / ODEBlock with every per-step stage
                                      smoothed (shared fields unchanged)
    roughness(tree)                   sum_k |theta_{k+1} - theta_k|^2 / sum_k |theta_k|^2 over the
                                      leaves of a per-step pytree (0: constant in depth)
    per_step_params(model)            the per-step parameter stacks of a model's ODE stages
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets import validate
from odenets.analysis.steps import _ode_block
from odenets.models import Classifier, ODEBlock


def depth_weights(n: int, m: int) -> np.ndarray:
    """(m, n) matrix W of linear interpolation in depth from n samples at s_k = k / (n - 1) to m
    samples at s_j = j / (m - 1): theta'_j = sum_k W[j, k] theta_k."""
    n, m = validate.integer("n", n, 1), validate.integer("m", m, 1)
    w = np.zeros((m, n))
    if n == 1:
        w[:, 0] = 1.0
        return w
    s = np.linspace(0.0, 1.0, m) if m > 1 else np.zeros(1)
    pos = s * (n - 1)
    i = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = pos - i
    w[np.arange(m), i] = 1.0 - frac
    w[np.arange(m), i + 1] += frac
    return w


def _steps(tree, who: str) -> int:
    """N, the one leading (step) axis length of every leaf of a per-step pytree."""
    lengths = {leaf.shape[0] for leaf in jax.tree.leaves(tree)}
    if len(lengths) != 1:
        raise ValueError(f"{who} needs one leading (step) axis length, got {sorted(lengths)}")
    return lengths.pop()


def interpolate_stack(tree, m: int):
    """A pytree whose leaves have leading axis N, resampled to leading axis m (`depth_weights`)."""
    w = depth_weights(_steps(tree, "interpolate_stack"), m)
    return jax.tree.map(lambda v: jnp.tensordot(jnp.asarray(w, v.dtype), v, axes=1), tree)


def _blocks(stage) -> list[ODEBlock]:
    """The ODE block of a model stage (`steps._ode_block`: itself, or the one inside ANODE's wrapper), or []."""
    found = _ode_block(stage)
    return [] if found is None else [found[0]]


def _model_blocks(model, who: str) -> list[ODEBlock]:
    """The ODE blocks of an ODEBlock (itself) or of a Classifier's stages (`_blocks`); TypeError otherwise."""
    if isinstance(model, ODEBlock):
        return [model]
    if not isinstance(model, Classifier):
        raise TypeError(f"{who} takes a Classifier or an ODEBlock, got {type(model).__name__}")
    return [b for stage in model.stages for b in _blocks(stage)]


def _resample(block: ODEBlock, m: int) -> None:
    if block.params == "per_step":
        graphdef, state = nnx.split(block.field)
        block.field = nnx.merge(graphdef, interpolate_stack(state, m))
    block.steps = m


def interpolate_depth(model: Classifier | ODEBlock, steps: int) -> Classifier | ODEBlock:
    """A copy of `model` whose ODE stages take `steps` steps over their own [t0, t1]: per-step
    parameters interpolated linearly in depth (module docstring), shared fields unchanged.
    Stages that are not ODE solves (plain, momentum, Hamiltonian, dense scans) have no step
    size to rescale and are refused, as is a model without ODE stages."""
    steps = validate.integer("steps", steps, 1)
    _model_blocks(model, "interpolate_depth")  # the type check, before the copy
    if isinstance(model, Classifier) and not all(_blocks(stage) for stage in model.stages):
        kinds = ", ".join(type(stage).__name__ for stage in model.stages)
        raise ValueError(f"interpolate_depth needs ODE stages (ODEBlock: a step size to rescale); model family "
                         f"{model.family!r} has stages {kinds}")
    copy = nnx.clone(model)
    for block in _model_blocks(copy, "interpolate_depth"):
        _resample(block, steps)
    return copy


def smooth_stack(tree, anchors: int):
    """A pytree whose leaves have leading axis N (i.i.d. draws per step) made smooth in depth: K =
    `anchors` of its steps, evenly spaced, interpolated linearly over the N steps with each step
    rescaled to keep one draw's variance (module docstring). Leaves constant in depth are kept."""
    anchors = validate.integer("anchors", anchors, 1)
    n = _steps(tree, "smooth_stack")
    if anchors > n:
        raise ValueError(f"anchors must be at most the number of steps {n}, got {anchors}")
    picks = np.round(np.linspace(0, n - 1, anchors)).astype(int) if anchors > 1 else np.zeros(1, int)
    v = depth_weights(anchors, n)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)

    def smooth(leaf):
        values = np.asarray(leaf)
        if not np.issubdtype(values.dtype, np.floating) or np.all(values == values[:1]):
            return leaf
        return jnp.asarray(np.tensordot(v, values[picks], axes=1), leaf.dtype)

    return jax.tree.map(smooth, tree)


def _per_step(model, who: str) -> list[ODEBlock]:
    return [b for b in _model_blocks(model, who) if b.params == "per_step"]


def smooth_depth(model: Classifier | ODEBlock, anchors: int) -> Classifier | ODEBlock:
    """A copy of `model` whose per-step ODE stages hold `smooth_stack(params, anchors)`: a smooth-
    in-depth initialisation built from the model's own i.i.d. draws. A model with no per-step
    ODE stage is refused."""
    anchors = validate.integer("anchors", anchors, 1)
    copy = nnx.clone(model)
    blocks = _per_step(copy, "smooth_depth")
    if not blocks:
        raise ValueError(f"smooth_depth needs a per-step ODE stage (resnet family), got {type(model).__name__} "
                         "with none")
    for block in blocks:
        graphdef, params, rest = nnx.split(block.field, nnx.Param, ...)
        block.field = nnx.merge(graphdef, smooth_stack(params, anchors), rest)
    return copy


def per_step_params(model: Classifier | ODEBlock) -> list:
    """The nnx.Param state (leading axis: steps) of every per-step ODE stage of `model`."""
    return [nnx.state(b.field, nnx.Param) for b in _per_step(model, "per_step_params")]


def roughness(tree) -> float:
    """sum_k |theta_{k+1} - theta_k|^2 / sum_k |theta_k|^2 over every leaf of a per-step pytree
    (leading axis N >= 2): 0 for parameters constant in depth, about 2 for i.i.d. zero-mean draws,
    O(1 / N^2) for samples of a smooth function of depth."""
    leaves = [np.asarray(v, np.float64) for v in jax.tree.leaves(tree)]
    if not leaves or min(v.shape[0] for v in leaves) < 2:
        raise ValueError("roughness needs per-step leaves with at least 2 steps")
    diff = sum(float(np.sum(np.diff(v, axis=0) ** 2)) for v in leaves)
    total = sum(float(np.sum(v[:-1] ** 2)) for v in leaves)
    return diff / max(total, np.finfo(float).tiny)
