"""RNODE regularisation (odenets.rnode): values against direct quadratures, gradients against finite
differences for every gradient strategy, the ODE block's penalty, the config's weights, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
from conftest import ADAPTIVE, FIXED, GRADIENTS, allowed
from flax import nnx

import odenets as on
from odenets import models
from odenets.fields.mlp import MLPField
from odenets.rnode import RNODE, rnode_odeint
from odenets.train.config import RunConfig

A = np.array([[-0.5, 1.0], [-1.0, -0.3]])
X0 = np.array([[1.0, 0.5], [0.2, -1.0]])
EPS = np.array([[1.0, -2.0], [0.5, 0.3]])


def linear(t, x, a):
    return x @ a.T  # dx_b/dt = A x_b for every example b


def tanh_field(t, x, w):
    return jnp.tanh(x @ w.T + 0.3 * t)


W = np.array([[0.4, -1.1, 0.3], [0.9, 0.2, -0.5], [-0.3, 0.7, 0.1]])
XW = np.array([[0.5, -0.4, 1.0], [-0.8, 0.3, 0.2]])
EW = np.array([[0.7, -1.2, 0.4], [1.5, 0.1, -0.6]])


def test_kinetic_and_jacobian_terms_match_direct_quadrature_on_a_linear_field():
    """K_b = int_0^1 |A expm(A t) x_b|^2 dt by scipy's quad; for f = A x the probe term is exactly
    |A^T eps_b|^2 at every t, so J_b = |A^T eps_b|^2 (t1 - t0)."""
    quad = [scipy.integrate.quad(lambda t, b=b: np.sum((A @ scipy.linalg.expm(A * t) @ X0[b]) ** 2), 0, 1,
                                 epsabs=1e-14, epsrel=1e-13)[0] for b in range(2)]
    sol, kinetic, jacobian = rnode_odeint(linear, X0, EPS, 0.0, 1.0, 64, args=jnp.asarray(A), integrator="rk4")
    np.testing.assert_allclose(kinetic, quad, rtol=1e-9)
    np.testing.assert_allclose(jacobian, np.sum((EPS @ A) ** 2, -1), rtol=1e-13)
    np.testing.assert_allclose(sol.x, X0 @ scipy.linalg.expm(A).T, rtol=1e-8)
    # an adaptive integrator's quadrature: within its tolerance
    _, kinetic, _ = rnode_odeint(linear, X0, EPS, 0.0, 1.0, args=jnp.asarray(A),
                                 integrator=on.Dopri5(rtol=1e-10, atol=1e-12))
    np.testing.assert_allclose(kinetic, quad, rtol=1e-8)


def test_hutchinson_average_is_the_exact_frobenius_integral_on_a_nonlinear_field():
    """Averaged over n probes (n copies of one initial state), the J term tends to the exact
    int |df/dx|_F^2 dt, computed here from the Jacobian at the states of a fine solve (Simpson)."""
    steps, n = 256, 20000
    w, x0 = jnp.asarray(W), jnp.asarray(XW[:1])
    xs = on.odeint(tanh_field, x0, 0.0, 1.0, steps, args=w, save="all").xs[:, 0]
    ts = np.linspace(0.0, 1.0, steps + 1)
    jac = jax.vmap(jax.jacfwd(lambda t, x: tanh_field(t, x, w), argnums=1))(jnp.asarray(ts), xs)
    frob = np.sum(np.asarray(jac) ** 2, axis=(1, 2))
    exact = scipy.integrate.simpson(frob, x=ts)
    eps = jax.random.normal(jax.random.key(0), (n, 3), jnp.float64)
    _, kinetic, jacobian = rnode_odeint(tanh_field, jnp.repeat(x0, n, 0), eps, 0.0, 1.0, 64, args=w)
    spread = float(np.std(jacobian)) / np.sqrt(n)
    assert abs(float(np.mean(jacobian)) - exact) < 4 * spread, (float(np.mean(jacobian)), exact, spread)
    np.testing.assert_allclose(kinetic, kinetic[0], rtol=1e-12)  # no probe in K
    # without a probe: no J term, the same K
    _, k0, j0 = rnode_odeint(tanh_field, x0, None, 0.0, 1.0, 64, args=w)
    np.testing.assert_allclose(k0, kinetic[:1], rtol=1e-12)
    assert float(j0[0]) == 0.0


def _pairs():
    """Per gradient strategy: its most accurate fixed-step integrator and its first adaptive one
    (the registries' pairing checks decide what is allowed)."""
    out = []
    for gradient in GRADIENTS:
        fixed = [i for i in FIXED if allowed(i, gradient)]
        out.append((max(fixed, key=lambda i: on.integrator(i).order), gradient))
        # adaptive Backprop and Checkpoint differentiate diffrax's own loop (5-6 s each): with the slow tests
        slow = gradient in ("backprop", "checkpoint")
        out += [pytest.param(i, gradient, marks=pytest.mark.slow) if slow else (i, gradient)
                for i in [i for i in ADAPTIVE if allowed(i, gradient)][:1]]
    return out


@pytest.mark.parametrize("integrator,gradient", _pairs())
def test_regulariser_gradient_matches_finite_differences(integrator, gradient):
    """d/dtheta of R = mean K + mean J (lambda = 1) along a random direction, and d/dx0, against
    central differences of the same solve."""
    integ = on.integrator(integrator) if not on.integrator.get(integrator).adaptive else \
        on.integrator.get(integrator)(rtol=1e-10, atol=1e-10)
    rule = RNODE(lambda_K=1.0, lambda_J=1.0)

    @jax.jit
    def reg(w, x0):
        _, kinetic, jacobian = rnode_odeint(tanh_field, x0, jnp.asarray(EW), 0.0, 1.0, 40, args=w,
                                            integrator=integ, gradient=gradient)
        return rule.penalty(kinetic, jacobian)

    w, x0 = jnp.asarray(W), jnp.asarray(XW)
    gw, gx = jax.grad(reg, argnums=(0, 1))(w, x0)
    dw, dx = (jax.random.normal(jax.random.key(k), s, jnp.float64) for k, s in ((1, W.shape), (2, XW.shape)))
    h = 1e-5
    fd_w = (reg(w + h * dw, x0) - reg(w - h * dw, x0)) / (2 * h)
    fd_x = (reg(w, x0 + h * dx) - reg(w, x0 - h * dx)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(gw, dw), fd_w, rtol=1e-6)
    np.testing.assert_allclose(jnp.vdot(gx, dx), fd_x, rtol=1e-6)


def _block(params="shared", **weights):
    return models.ODEBlock(lambda r: MLPField(3, 4, layers=2, rngs=r), params=params, steps=8,
                              integrator="rk4", rnode=RNODE(**weights), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("params", ["shared", pytest.param("per_step", marks=pytest.mark.slow)])
def test_the_ode_block_records_its_penalty_and_draws_fresh_probes(params):
    x = jnp.asarray(XW)
    block = _block(params, lambda_K=0.5, lambda_J=0.25)
    plain = _block(params)
    np.testing.assert_array_equal(block(x), plain(x))  # the state is untouched by the augmentation
    first = float(block.penalty[...])
    block(x)
    second = float(models.regularisation(block))
    assert first > 0 and second > 0 and first != second  # a new probe per call
    assert models.regularisation(plain) is None
    # the penalty is lambda_K mean K + lambda_J mean J of the block's own solve, with the probe it drew
    probe = _block(params, lambda_K=0.5, lambda_J=0.25)
    eps = probe._probe(x)
    f = on.PerStep(probe.field) if params == "per_step" else probe.field
    _, kinetic, jacobian = rnode_odeint(f, x, eps, 0.0, 1.0, 8, integrator="rk4")
    fresh = _block(params, lambda_K=0.5, lambda_J=0.25)
    fresh(x)
    np.testing.assert_allclose(fresh.penalty[...], 0.5 * jnp.mean(kinetic) + 0.25 * jnp.mean(jacobian),
                               rtol=1e-12)
    # parameters are those of the unregularised block (the probes take no draw from rngs)
    same = jax.tree.map(jnp.array_equal, nnx.state(fresh.field, nnx.Param), nnx.state(plain.field, nnx.Param))
    assert all(jax.tree.leaves(same))


def test_penalty_gradient_through_the_block():
    """nnx.grad of the block's penalty (as the train step takes it) reaches every parameter."""
    block, x = _block(lambda_K=1.0, lambda_J=1.0), jnp.asarray(XW)

    def penalty(m):
        m(x)
        return models.regularisation(m)

    grads = nnx.grad(penalty)(block)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("key,value", [("lambda_K", -0.5), ("lambda_J", float("nan")), ("lambda_K", "0.01"),
                                       ("lambda_J", True)])
def test_a_bad_weight_is_refused_naming_the_value(key, value):
    with pytest.raises(ValueError, match=rf"{key} must be a finite number in \[0.0, inf\), got {key}="):
        RNODE(**{key: value})
    with pytest.raises(ValueError, match=rf"{key}={value!r}"):
        models.family("node", **{key: value})
    cfg = {"data": {"name": "moons"}, "model": {"family": "resnet", key: value}}
    with pytest.raises(ValueError, match=rf"model config .*{key}={value!r}"):
        RunConfig.parse(cfg)


def test_weights_are_model_options_of_every_family_that_solves_odes():
    for name in models.family.names():
        cls = models.family.get(name)
        assert ("lambda_K" in cls.options) == issubclass(cls, models.Solved), name
    with pytest.raises(ValueError, match="unknown model family 'plain' key"):
        RunConfig.parse({"model": {"family": "plain", "lambda_K": 0.01}})
    with pytest.raises(ValueError, match="lambda_K=0.01, lambda_J=0.0: the RNODE regulariser"):
        models.trajectory("node", dim=2, ts=np.linspace(0, 1, 5), lambda_K=0.01)


@pytest.mark.slow  # a whole fit (7 s); the penalty's value and gradient are tested above
def test_training_adds_the_penalty_and_logs_it(tmp_path):
    from test_train import tiny

    from odenets.train.loop import fit
    from odenets.train.metrics import read_metrics

    fit(tiny(**{"optim.epochs": 1, "model.lambda_K": 0.01, "model.lambda_J": 0.01}), tmp_path / "on")
    fit(tiny(**{"optim.epochs": 1}), tmp_path / "off")
    on_, off = ([r for r in read_metrics(tmp_path / d) if r["split"] == "train"] for d in ("on", "off"))
    assert all(r["rnode"] > 0 for r in on_) and all("rnode" not in r for r in off)
    # the same initial parameters (the first window's data loss differs only by the regularised updates)
    assert abs(on_[0]["loss"] - off[0]["loss"]) < 0.05
