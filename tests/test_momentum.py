"""The Momentum ResNet's gradient strategies: the backward pass by exact inversion ("reversible") against
backprop, finite differences, jit / vmap, its memory against depth, and the inverse's rounding (1 / gamma)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odenets as on
from odenets.models import family
from odenets.models.stages import MomentumBlock, momentum_solver

WIDTH, HIDDEN, BATCH = 3, 5, 4


def accepted(gradient: str) -> bool:
    """Whether the momentum step takes this gradient strategy (odenets decides: nothing restated here)."""
    try:
        momentum_solver(0.5, gradient)
    except ValueError:
        return False
    return True


ACCEPTED = [g for g in on.gradient.names() if accepted(g)]
REFUSED = [g for g in on.gradient.names() if not accepted(g)]


@functools.cache
def _block(depth, gamma, time, dtype, gradient, seed=0):
    """A MomentumBlock of MLPFields whose parameters (a pytree: two Linear layers per step) are drawn by
    numpy from `seed` (structure from nnx.eval_shape: no initialiser compiled), the same for every gradient."""
    make = lambda r: on.fields.MLPField(WIDTH, HIDDEN, time=time, param_dtype=dtype, rngs=r)
    abstract = nnx.eval_shape(lambda: MomentumBlock(make, steps=depth, gamma=gamma, gradient=gradient,
                                                    rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        scale = 1 / np.sqrt(leaf.shape[-2]) if leaf.ndim == 3 else 0.3
        return jnp.asarray(rng.standard_normal(leaf.shape) * scale, leaf.dtype)

    return graphdef, jax.tree.map(draw, state)


def block(depth, gamma, time=False, dtype=jnp.float64, gradient="backprop"):
    return nnx.merge(*_block(depth, gamma, time, dtype, gradient))


def inputs(dtype, seed=1, shape=(BATCH, WIDTH)):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(shape), dtype) for _ in range(4))  # x0, v0, weights of x_N, v_N


def loss(m, x0, v0, a, b):
    """L = sum(a tanh(x_N)) + sum(b v_N): cotangents on both halves of the final state."""
    xn, vn = m.forward(x0, v0)
    return jnp.sum(a * jnp.tanh(xn)) + jnp.sum(b * vn)


@functools.partial(jax.jit, static_argnums=0)
def _grads(graphdef, state, *args):
    return nnx.grad(loss, argnums=(0, 1, 2))(nnx.merge(graphdef, state), *args)


def grads(m, x0, v0, a, b):
    """jit(grad) of the loss with respect to the parameters, x0 and v0 (one compile per net structure)."""
    graphdef, state = nnx.split(m)
    return _grads(graphdef, state, x0, v0, a, b)


@functools.cache
def _backprop_grads(depth, gamma, time, dtype):
    return grads(block(depth, gamma, time, dtype), *inputs(dtype))


def rel(a, b) -> float:
    a = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_momentum_takes_backprop_and_exact_inversion():
    assert {"backprop", "reversible"} <= set(ACCEPTED) and "adjoint" in REFUSED


@pytest.mark.parametrize("gradient", REFUSED)
def test_refused_gradient_names_the_valid_choices_before_compute(gradient):
    for build in (lambda: family("momentum", gradient=gradient),
                  lambda: MomentumBlock(lambda r: None, steps=2, gamma=0.5, gradient=gradient, rngs=nnx.Rngs(0))):
        with pytest.raises(ValueError, match=f"gradient {gradient!r}") as error:
            build()
        assert all(name in str(error.value) for name in ACCEPTED)


@pytest.mark.parametrize("gamma, time", [(0.5, True), (0.9, False)])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-10)])
def test_exact_inversion_gradient_equals_backprop(gamma, time, dtype, tol):
    """d/d(params, x0, v0) of a loss on (x_N, v_N), 6 steps: the backward pass by exact inversion gives
    backprop's gradient up to the rounding of the rebuilt states."""
    want = _backprop_grads(6, gamma, time, dtype)
    got = grads(block(6, gamma, time, dtype, "reversible"), *inputs(dtype))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(got, want):
        assert rel(g, w) < tol


@pytest.mark.parametrize("gradient", [g for g in ACCEPTED if g not in ("backprop", "reversible")])
def test_other_accepted_gradients_equal_backprop(gradient):
    """Every other strategy the momentum step takes gives backprop's gradient (float64, gamma 0.9)."""
    want = _backprop_grads(6, 0.9, False, jnp.float64)
    got = grads(block(6, 0.9, False, jnp.float64, gradient), *inputs(jnp.float64))
    assert rel(got, want) < 1e-10


def test_exact_inversion_gradient_agrees_with_finite_differences():
    """<grad L, d> against the central difference (L(p + e d) - L(p - e d)) / 2e along a random direction
    d of (params, x0, v0), float64, time-dependent fields, gamma 0.5."""
    m = block(4, 0.5, True, jnp.float64, "reversible")
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    x0, v0, a, b = inputs(jnp.float64)
    point = (params, x0, v0)
    value = jax.jit(lambda p, rest: loss(nnx.merge(graphdef, p[0], rest), p[1], p[2], a, b))
    rng = np.random.default_rng(7)
    d = jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape)), point)
    g = grads(m, x0, v0, a, b)
    assert jax.tree.structure(g) == jax.tree.structure(d)
    directional = sum(float(jnp.vdot(u, w)) for u, w in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    e = 1e-6
    shift = lambda s: jax.tree.map(lambda p, q: p + s * e * q, point, d)
    fd = (float(value(shift(1), rest)) - float(value(shift(-1), rest))) / (2 * e)
    assert directional == pytest.approx(fd, rel=1e-7)


def test_exact_inversion_under_vmap_gives_the_per_example_gradients():
    """vmap over single examples of the exact-inversion gradient: the loss is a sum over examples, so the
    per-example x0 gradients are the rows of backprop's batch gradient and the parameter gradients sum to it."""
    x0, v0, a, b = inputs(jnp.float64)
    graphdef, state = nnx.split(block(6, 0.9, False, jnp.float64, "reversible"))

    def one(state, x, v, a_, b_):
        m = nnx.merge(graphdef, state)
        return nnx.grad(loss, argnums=(0, 1))(m, x[None], v[None], a_[None], b_[None])

    params, x_grads = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))(state, x0, v0, a, b)
    want = _backprop_grads(6, 0.9, False, jnp.float64)
    np.testing.assert_allclose(x_grads[:, 0], want[1], rtol=1e-10, atol=1e-12)
    assert rel(jax.tree.map(lambda g: g.sum(0), params), want[0]) < 1e-10


def test_family_builds_the_exact_inversion_block():
    """family("momentum", gradient="reversible"): the classifier's gradient equals the backprop model's
    (same parameters), and the stage records 2 evaluations per step for its backward pass."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((BATCH, 5)), jnp.float32)
    out, state = {}, None

    def grad(graphdef, state):
        m = nnx.merge(graphdef, state)
        return nnx.grad(lambda m_: jnp.sum(m_(x) ** 2))(m), m.stages[0].nfe_backward[...]

    for gradient in ("backprop", "reversible"):
        spec = family("momentum", width=4, depth=3, gamma=0.9, gradient=gradient)
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda s=spec: s.build((5,), 3, rngs=0)))
        rng = np.random.default_rng(0)
        state = state or jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape) * 0.5, v.dtype), abstract)
        out[gradient], nfe_backward = jax.jit(grad, static_argnums=0)(graphdef, state)
        assert int(nfe_backward) == (6 if gradient == "reversible" else 0)
    assert rel(out["reversible"], out["backprop"]) < 1e-5


def _temp_bytes(depth, gradient):
    make = lambda r: on.fields.MLPField(16, 32, time=False, rngs=r)
    m = nnx.eval_shape(lambda: MomentumBlock(make, steps=depth, gamma=0.9, gradient=gradient, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(m)
    x = jax.ShapeDtypeStruct((64, 16), jnp.float32)

    def grad(state, x):
        return nnx.grad(lambda m_, x_: jnp.sum(m_(x_) ** 2), argnums=(0, 1))(nnx.merge(graphdef, state), x)

    compiled = jax.jit(grad).lower(state, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_exact_inversion_memory_is_flat_in_depth_and_backprops_grows():
    """XLA temporary bytes of the gradient at depth 64 over depth 8: < 1.5 by exact inversion, > 4 for backprop."""
    ratio = {g: _temp_bytes(64, g) / _temp_bytes(8, g) for g in ("backprop", "reversible")}
    assert ratio["reversible"] < 1.5 and ratio["backprop"] > 4, ratio


def reconstruction_error(gamma, depth=20):
    """|x0' - x0| / |x0| after inverse(forward(x0, 0)), float32."""
    graphdef, state = _block(depth, gamma, False, jnp.float32, "backprop")
    x0 = inputs(jnp.float32)[0]

    @jax.jit
    def there_and_back(state, x):
        m = nnx.merge(graphdef, state)
        return m.inverse(*m.forward(x, jnp.zeros_like(x)))[0]

    err = np.asarray(there_and_back(state, x0), np.float64) - np.asarray(x0, np.float64)
    return float(np.linalg.norm(err) / np.linalg.norm(np.asarray(x0, np.float64)))


def test_inverse_rounding_grows_like_one_over_gamma():
    """Depth 20, float32: gamma 0.9 rebuilds x0 to 1e-4; gamma 0.1 amplifies the rounding by up to 10^20
    (Sander et al. 2021): far larger, or not finite."""
    small, large = reconstruction_error(0.9), reconstruction_error(0.1)
    assert small < 1e-4
    assert not large < 1e3 * max(small, 1e-8), (small, large)
