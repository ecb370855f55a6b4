"""Gradient flow through depth: per-layer gradients dL/dx_l, residual responses F_l(x_l), and the
Jacobian product prod_l (I + dF_l) with its expansion into 2^L paths.

A stage of L layers maps x_0 to x_L through x_{l+1} = Phi_l(x_l): Phi_l(x) = x + h F_l(t_l, x) for a
ResNet (one step of the block's own integrator, through `odeint`), Phi_l(x) = F_l(t_l, x) for a
plain net. By the chain rule

    dL/dx_l = (dPhi_l/dx)^T ... (dPhi_{L-1}/dx)^T dL/dx_L,     dx_L/dx_0 = prod_{l=L-1..0} dPhi_l/dx

and for a ResNet with Euler and h = 1, dPhi_l/dx = I + J_l (J_l = dF_l/dx at x_l). The product
of L factors (I + J_l) expands into the 2^L products over the subsets S of layers,

    prod_l (I + J_l) = sum_S prod_{l in S} J_l           (in layer order; S = {} gives I)

so the gradient that reaches x_0 always holds the identity term I (the path through no branch;
Veit et al. 2016), while a plain net's has only the one path prod_l J_l: if every layer scales
by 1/2, a plain stack of 3 passes 1/8 of the gradient to its input, a residual stack
(1 + 1/2)^3 = 1 + 3/2 + 3/4 + 1/8 of which 1 comes through the skips alone.

`gradient_flow(model, x, y)` measures dL/dx_l at every layer state of every stage, with one
forward pass and one backward pass: a zero probe e_l is added to each state, x_l <- x_l + e_l,
and dL/de_l = dL/dx_l. An ODE block's layer is one `odeint` step of its own integrator; plain and
momentum stages' one-line rules are restated here (x_{l+1} = F_l(t_l, x_l); v_{l+1} = gamma v_l +
(1 - gamma) F_l(t_l, x_l), x_{l+1} = x_l + v_{l+1}), and the tests check that the probed pass
reproduces model(x). A dense stage's layers (Huang et al. 2017) are x_{l+1} = concat(x_l, H_l(x_l)), its
state x_l the concatenation of the stage input and the l feature maps so far (its width grows with l,
so a Python loop, not a scan); dL/dx_l is the gradient of that whole state (its norm grows with its
width), the response H_l(x_l) the growth channels layer l adds, and the stage's transition follows x_L.
Stages without a per-layer decomposition here (Hamiltonian scans, adaptive or reversible solves)
count as one layer.

On a trained run: rebuild the classifier from its config.yaml and restore the checkpoint's
parameters (as experiments/studies/_trained.py does), then `gradient_flow(model, x, y)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from odenets.analysis._field import Merged
from odenets.analysis.stability import carried_size
from odenets.analysis.steps import _ode_block
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.models import Classifier
from odenets.models.block import ODEBlock
from odenets.models.stages import AugmentedBlock, DenseBlock, MomentumBlock, PlainBlock
from odenets.solve import odeint

MAX_PATH_LAYERS = 16  # path_expansion enumerates 2^L terms


class _Layers(NamedTuple):
    """A stage as L layers: carry = enter(x); carry <- step(k, params_k, carry) for k < L; leave(carry).
    `response(k, params_k, carry)` is F_k(t_k, x_k) (None: the stage has no residual branch here)."""

    n: int
    params: Any  # a pytree with leading axis n, or None
    enter: Callable
    step: Callable
    response: Callable | None
    leave: Callable
    whole: bool = False  # the stage itself as one layer (run outside any scan: it records its NFE)
    ragged: bool = False  # layers of changing width: a Python loop over k, states and responses `_Ragged`


class _Ragged(NamedTuple):
    """The per-layer states (or responses) of a stage whose width changes from layer to layer: one
    (B, ..., C_l) array per layer, where other stages stack theirs on a leading axis."""

    layers: tuple


def _identity(x):
    return x


def _carried(integ) -> int:
    """`carried_size`, evaluated eagerly (this runs while a model is traced)."""
    with jax.ensure_compile_time_eval():
        return carried_size(integ)


@functools.singledispatch
def _layers(stage) -> _Layers:
    """Any stage without a per-layer rule here: one layer, the stage itself."""
    return _whole(stage)


def _whole(stage) -> _Layers:
    return _Layers(1, None, _identity, lambda k, p, x: stage(x), None, _identity, whole=True)


@_layers.register
def _(stage: ODEBlock) -> _Layers:
    integ = INTEGRATORS(stage.integrator)
    if integ.adaptive or _carried(integ) != 1:  # no step map of x_l alone: the block is one layer
        return _whole(stage)
    graphdef, state = nnx.split(stage.field)
    field = Merged(graphdef)
    per_step = stage.params == "per_step"
    h = (stage.t1 - stage.t0) / stage.steps
    pick = (lambda p: p) if per_step else (lambda p: state)

    def time(k, x):
        return jnp.asarray(stage.t0, x.dtype) + jnp.asarray(h, x.dtype) * k.astype(x.dtype)

    def step(k, p, x):
        t = time(k, x)
        return odeint(field, x, t, t + jnp.asarray(h, x.dtype), 1, integrator=integ, args=pick(p)).x

    return _Layers(stage.steps, state if per_step else None, _identity, step,
                   lambda k, p, x: field(time(k, x), x, pick(p)), _identity)


@_layers.register
def _(stage: AugmentedBlock) -> _Layers:
    # the ODE block inside and the zero padding of its input (an AugmentedBlock always holds one)
    block, pad = cast(tuple[ODEBlock, Any], _ode_block(stage))
    inner = _layers(block)
    return inner._replace(enter=lambda x: inner.enter(pad(x)))


@_layers.register
def _(stage: PlainBlock) -> _Layers:
    graphdef, state = nnx.split(stage.fields)
    apply = lambda k, p, x: nnx.merge(graphdef, p)(k.astype(x.dtype), x).astype(x.dtype)
    return _Layers(stage.steps, state, _identity, apply, apply, _identity)


@_layers.register
def _(stage: MomentumBlock) -> _Layers:
    graphdef, state = nnx.split(stage.fields)
    g = stage.gamma
    branch = lambda k, p, c: nnx.merge(graphdef, p)(k.astype(c[0].dtype), c[0]).astype(c[1].dtype)

    def step(k, p, c):
        v = g * c[1] + (1 - g) * branch(k, p, c)
        return c[0] + v, v

    return _Layers(stage.steps, state, lambda x: (x, jnp.zeros_like(x)), step, branch, lambda c: c[0])


@_layers.register
def _(stage: DenseBlock) -> _Layers:
    layers = stage.layers

    def leave(x):
        stage._record(len(layers), 0)  # as DenseBlock.__call__ records
        return stage.transition(x)

    grow = lambda k, p, x: layers[k](x)
    return _Layers(len(layers), None, _identity, lambda k, p, x: jnp.concatenate([x, grow(k, p, x)], axis=-1),
                   grow, leave, ragged=True)


def _add(c, e):
    return c if e is None else jax.tree.map(jnp.add, c, e)


def _stage_pass(layers: _Layers, x, probes):
    """(the stage's output, its states (n + 1, ...) after the probes, responses (n, ...) or None)."""
    c = layers.enter(x)
    if layers.whole:
        first, last = (None, None) if probes is None else (probes[0], probes[1])
        c = _add(c, first)
        out = _add(layers.step(0, None, c), last)
        return layers.leave(out), jnp.stack([c, out]), None
    if layers.ragged:
        assert layers.response is not None  # a ragged stage (dense block) has its layers' maps
        states, responses = [], []
        for k in range(layers.n + 1):
            c = _add(c, None if probes is None else probes.layers[k])
            states.append(c)
            if k < layers.n:
                responses.append(layers.response(k, None, c))
                c = layers.step(k, None, c)
        return layers.leave(c), _Ragged(tuple(states)), _Ragged(tuple(responses))

    def body(c, inputs):
        k, p, e = inputs
        c = _add(c, e)
        r = None if layers.response is None else layers.response(k, p, c)
        return layers.step(k, p, c), (c, r)

    inner = None if probes is None else jax.tree.map(lambda e: e[:-1], probes)
    c, (states, responses) = lax.scan(body, c, (jnp.arange(layers.n), layers.params, inner))
    c = _add(c, None if probes is None else jax.tree.map(lambda e: e[-1], probes))
    states = jax.tree.map(lambda s, last: jnp.concatenate([s, last[None]]), states, c)
    return layers.leave(c), states, responses


def _stages(model) -> tuple[list, Callable, Callable]:
    """(stages, before(x), between(s, x)): a classifier's stem and transitions, or a lone stage."""
    if isinstance(model, Classifier):
        def before(x):
            if model.config.ndim == 0:
                x = x.reshape(x.shape[0], -1)
            return model.stem(x)

        return list(model.stages), before, lambda s, x: model.transitions[s - 1](x)
    return [model], _identity, lambda s, x: x


def _forward(model, x, probes):
    stages, before, between = _stages(model)
    x = before(x)
    states, responses = [], []
    for s, stage in enumerate(stages):
        if s:
            x = between(s, x)
        x, st, r = _stage_pass(_layers(stage), x, None if probes is None else probes[s])
        states.append(st)
        responses.append(r)
    return x, states, responses


def _cross_entropy(model, out, y):
    """Summed over the batch, so that each sample's gradient is its own loss's; the mean is reported."""
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(model.head(out), y))


def _sample_norms(tree) -> jax.Array:
    """|g| per layer and sample of a pytree of (n + 1, B, ...) leaves (or a `_Ragged` of n + 1 (B, ...)
    arrays): (n + 1, B)."""
    if isinstance(tree, _Ragged):
        return jnp.stack([jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, -1)) for g in tree.layers])
    return jnp.sqrt(sum(jnp.sum(leaf.reshape(leaf.shape[:2] + (-1,)) ** 2, -1) for leaf in jax.tree.leaves(tree)))


def _response_std(r) -> jax.Array:
    """(n,) std over batch and features of each layer's response (n, B, ...) or `_Ragged`."""
    if isinstance(r, _Ragged):
        return jnp.stack([jnp.std(layer) for layer in r.layers])
    return jnp.std(r.reshape(r.shape[0], -1), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _flow(graphdef, state, x, target, loss):
    def total(probes):
        model = nnx.merge(graphdef, state, copy=True)  # in this trace: stages may record their NFE
        out, states, responses = _forward(model, x, probes)
        value = _cross_entropy(model, out, target) if loss is None else loss(out)
        return value, responses

    shapes = jax.eval_shape(lambda: _forward(nnx.merge(graphdef, state, copy=True), x, None)[1])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (value, responses), grads = jax.value_and_grad(total, has_aux=True)(zeros)
    norms = [_sample_norms(g) for g in grads]
    stds = [None if r is None else _response_std(r) for r in responses]
    return value, norms, stds


class GradFlow(NamedTuple):
    """Gradients and residual responses at every layer state x_l of every stage (M states in all,
    M = sum_s (L_s + 1): the stage's input x_0 ... its output x_L).

    grad_norm:    (M, B) |dl_i/dx_l| per sample i (l_i its own loss; Momentum stages: the state (x, v);
                  dense stages: the concatenated state, of growing width).
    response_std: (M,) std over batch and features of F_l(x_l), the residual branch's output at
                  the state entering layer l (He et al. 2016, Fig. 7); NaN at x_L and for stages
                  counted as one layer.
    stage, layer: (M,) the stage s of each state and its index l in 0..L_s.
    loss:         the mean loss over the batch (classifiers: cross-entropy).
    """

    grad_norm: np.ndarray
    response_std: np.ndarray
    stage: np.ndarray
    layer: np.ndarray
    loss: float

    @property
    def mean_norm(self) -> np.ndarray:
        """(M,) the batch mean of |dl_i/dx_l|."""
        return self.grad_norm.mean(axis=1)


def gradient_flow(model, x, y=None, *, loss: Callable | None = None) -> GradFlow:
    """`GradFlow`: |dL/dx_l| and std F_l(x_l) at every layer of a model on a batch x (B, ...).

    model: a `Classifier` of any family (built, or restored from a run's checkpoint), with integer
           labels y: L = cross-entropy of the logits, each sample's gradient that of its own loss;
           or one stage (an ODEBlock, PlainBlock, MomentumBlock, AugmentedBlock, ...) with
           loss(stage output) -> a real scalar (per-sample gradients when it sums over the batch).
    Each layer's step is the stage's own rule, so the probed pass computes model(x) itself (see the
    module docstring). ODE blocks need a fixed-step integrator that carries x alone for a per-layer
    view; others (and Hamiltonian stages) count as one layer. Dense stages: one state per layer, each
    the concatenation so far.
    """
    x = jnp.asarray(x)
    if isinstance(model, Classifier):
        if y is None:
            raise ValueError("gradient_flow of a Classifier needs the labels y (the loss is cross-entropy)")
        if loss is not None:
            raise ValueError("gradient_flow of a Classifier uses cross-entropy: pass loss=None")
        target, batch = jnp.asarray(y), x.shape[0]
    else:
        if not isinstance(model, nnx.Module) or loss is None:
            raise ValueError("gradient_flow of a stage needs loss=L(stage output) (a Classifier takes labels y)")
        target, batch = None, 1
    graphdef, state = nnx.split(model)
    value, norms, stds = _flow(graphdef, state, x, target, loss)
    stages, layer, grad, std = [], [], [], []
    for s, (n, r) in enumerate(zip(norms, stds)):
        n = np.asarray(n)
        stages.append(np.full(n.shape[0], s))
        layer.append(np.arange(n.shape[0]))
        grad.append(n)
        r = np.full(n.shape[0] - 1, np.nan) if r is None else np.asarray(r, np.float64)
        std.append(np.concatenate([r, [np.nan]]))
    return GradFlow(np.concatenate(grad), np.concatenate(std), np.concatenate(stages), np.concatenate(layer),
                    float(value) / batch)


def layer_jacobians(stage, x) -> np.ndarray:
    """(L, n, n): J_l = dF_l/dx at the states x_l of one sample x (shape (1, n) or (n,)) passing
    through a stage whose state is x alone (an ODE block or a plain block) of a flat state; F_l is
    the residual branch (for an Euler ResNet with h = 1, dx_{l+1}/dx_l = I + J_l)."""
    layers = _layers(stage)
    x = jnp.asarray(x).reshape(1, -1)
    if layers.response is None or layers.ragged or isinstance(layers.enter(x), tuple):
        raise ValueError(f"layer_jacobians needs a stage of residual branches on the state x alone (ODE blocks "
                         f"of a fixed-step integrator, plain blocks), got {type(stage).__name__}")
    n = x.shape[-1]
    _, states, _ = _stage_pass(layers, x, None)
    response = layers.response
    one = lambda k, p, xk: jax.jacobian(lambda z: response(k, p, z).reshape(-1))(xk).reshape(n, n)
    return np.asarray(jax.vmap(one)(jnp.arange(layers.n), layers.params, states[:-1]))


def jacobian_product(jacobians, *, skip: bool = True) -> np.ndarray | float:
    """dx_L/dx_0 = prod_{l=L-1..0} (I + J_l) (skip=True, a ResNet with h = 1) or prod J_l (a plain
    net), from per-layer Jacobians J_l: (L, n, n), or (L,) scalars (returned as a float). On linear
    blocks F_l(x) = A_l x this is the closed form of the gradient's Jacobian; on others it is exact at
    the states where the J_l were taken (`layer_jacobians`). Float64."""
    jac = np.asarray(jacobians, np.float64)
    scalar = jac.ndim == 1
    jac = jac.reshape(jac.shape[0], 1, 1) if scalar else jac
    if jac.ndim != 3 or jac.shape[1] != jac.shape[2]:
        raise ValueError(f"jacobians must be (L, n, n) or (L,), got shape {np.shape(jacobians)}")
    eye = np.eye(jac.shape[1])
    out = eye
    for j in jac:
        out = ((eye + j) if skip else j) @ out
    return float(out[0, 0]) if scalar else out


class PathExpansion(NamedTuple):
    """prod_{l=L-1..0} (I + J_l) = sum over the 2^L subsets S of layers of prod_{l in S} J_l (layer order).

    subsets:   (2^L, L) bool, layer l's branch on the path.
    lengths:   (2^L,) |S|, the branches a path passes through (0: the identity path).
    terms:     (2^L, n, n) each path's product.
    by_length: (L + 1, n, n) the sum of the terms of each length k (C(L, k) terms);
               by_length.sum(0) is the product. Scalar input: (L + 1,) and terms (2^L,).
    """

    subsets: np.ndarray
    lengths: np.ndarray
    terms: np.ndarray
    by_length: np.ndarray


def path_expansion(jacobians) -> PathExpansion:
    """The 2^L paths of prod (I + J_l) from per-layer Jacobians (L, n, n) or scalars (L,), L <= 16."""
    jac = np.asarray(jacobians, np.float64)
    scalar = jac.ndim == 1
    jac = jac.reshape(jac.shape[0], 1, 1) if scalar else jac
    if jac.ndim != 3 or jac.shape[1] != jac.shape[2]:
        raise ValueError(f"jacobians must be (L, n, n) or (L,), got shape {np.shape(jacobians)}")
    depth, n = jac.shape[0], jac.shape[1]
    if depth > MAX_PATH_LAYERS:
        raise ValueError(f"path_expansion enumerates 2^L paths: L must be <= {MAX_PATH_LAYERS}, got L={depth}")
    # path i takes layer l's branch when bit l of i is set; layer by layer the paths double:
    # those without branch l, then the same ones with J_l applied last (a batched matmul per layer)
    subsets = (np.arange(2**depth)[:, None] >> np.arange(depth)) & 1 == 1
    terms = np.eye(n)[None]
    for j in jac:
        terms = np.concatenate([terms, j @ terms])
    lengths = subsets.sum(1)
    by_length = np.stack([terms[lengths == k].sum(0) for k in range(depth + 1)])
    if scalar:
        return PathExpansion(subsets, lengths, terms[:, 0, 0], by_length[:, 0, 0])
    return PathExpansion(subsets, lengths, terms, by_length)
