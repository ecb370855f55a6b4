"""Gradients of every (integrator, strategy) pair: finite differences, exactness, convergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GRADIENTS, PAIRS
from problems import mlp_field, mlp_params

import odenets as on
from odenets._abstract import is_final

pytestmark = pytest.mark.usefixtures("strict_promotion")

STEPS = 16
SLOW = pytest.mark.slow


def make_loss(integrator, gradient, steps=STEPS, per_step=False, save="final"):
    def loss(x0, params):
        args = on.PerStep(params) if per_step else params
        sol = on.odeint(mlp_field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient,
                        args=args, save=save)
        out = sol.xs if save == "all" else sol.x
        return jnp.sum(jnp.sin(out) * jnp.linspace(0.5, 1.5, out.size, dtype=out.dtype).reshape(out.shape))

    return jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1)))


def inputs(per_step, steps=STEPS):
    params = mlp_params(jax.random.key(0), leading=(steps,) if per_step else ())
    x0 = jnp.array([[0.3, -0.2, 0.5], [1.0, 0.1, -0.7]])
    return x0, params


def directional_fd(loss, x0, params, key, eps=1e-6):
    """Central differences along two random directions in (x0, params) space."""
    out = []
    for k in jax.random.split(key, 2):
        kx, kp = jax.random.split(k)
        vx = jax.random.normal(kx, x0.shape)
        leaves, tree = jax.tree.flatten(params)
        vp = tree.unflatten([jax.random.normal(jax.random.fold_in(kp, i), p.shape) for i, p in enumerate(leaves)])
        plus = loss(x0 + eps * vx, jax.tree.map(lambda p, v: p + eps * v, params, vp))
        minus = loss(x0 - eps * vx, jax.tree.map(lambda p, v: p - eps * v, params, vp))
        out.append(((vx, vp), float(plus - minus) / (2 * eps)))
    return out


def directional(grads, direction):
    (gx, gp), (vx, vp) = grads, direction
    return float(jnp.vdot(gx, vx) + sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(vp))))


def scale(grads, direction):
    """||g|| ||v||: the size a directional derivative is measured against (Cauchy-Schwarz)."""
    norm = lambda t: float(jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(t))))
    return norm(grads) * norm(direction)


@pytest.mark.parametrize("per_step", [False, True], ids=["shared", "perstep"])
@pytest.mark.parametrize("integrator,gradient", PAIRS)
def test_gradient_matches_finite_differences(integrator, gradient, per_step):
    integ = on.integrator(integrator)
    loss, grad = make_loss(integ, gradient, per_step=per_step)
    x0, params = inputs(per_step)
    grads = grad(x0, params)
    for direction, fd in directional_fd(loss, x0, params, jax.random.key(7)):
        ours = directional(grads, direction)
        if gradient == "adjoint":
            # the continuous adjoint is the gradient of the ODE, the differences are of the
            # discrete solve: they agree to the discretisation error, O(h^order)
            tol = 0.5 * (1.0 / STEPS) ** integ.order * scale(grads, direction)
        else:
            tol = 1e-8 * scale(grads, direction)
        assert abs(ours - fd) < tol, (ours, fd, tol)


@pytest.mark.parametrize("save", ["final", "all"])
@pytest.mark.parametrize("per_step", [False, True], ids=["shared", "perstep"])
def test_reversible_equals_backprop(per_step, save):
    x0, params = inputs(per_step, steps=40)
    _, g_bp = make_loss(on.ReversibleHeun(), "backprop", 40, per_step, save)
    _, g_rev = make_loss(on.ReversibleHeun(), "reversible", 40, per_step, save)
    for a, b in zip(jax.tree.leaves(g_bp(x0, params)), jax.tree.leaves(g_rev(x0, params))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("segment", [None, 1, 7])
@pytest.mark.parametrize("save", ["final", "all"])
def test_checkpoint_equals_backprop(segment, save):
    x0, params = inputs(True, steps=40)
    _, g_bp = make_loss(on.RK4(), "backprop", 40, True, save)
    _, g_ck = make_loss(on.RK4(), on.Checkpoint(segment=segment), 40, True, save)
    for a, b in zip(jax.tree.leaves(g_bp(x0, params)), jax.tree.leaves(g_ck(x0, params))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("integrator,per_step", [
    ("euler", False), ("heun", False), ("rk4", False), ("reversible_heun", False),
    pytest.param("trapezoid", False, marks=SLOW),  # implicit, 7 s; backward_euler's case is slow too
    pytest.param("euler", True, marks=SLOW), pytest.param("rk4", True, marks=SLOW),
    pytest.param("reversible_heun", True, marks=SLOW),
    pytest.param("backward_euler", False, marks=SLOW), pytest.param("heun", True, marks=SLOW),
    pytest.param("backward_euler", True, marks=SLOW), pytest.param("trapezoid", True, marks=SLOW),
])
def test_adjoint_approaches_backprop(integrator, per_step):
    """|adjoint - backprop| shrinks like h^order as steps grow."""
    integ = on.integrator(integrator)
    steps = [8, 16, 32]
    errs = []
    for n in steps:
        params = mlp_params(jax.random.key(0), leading=(n,) if per_step else ())
        if per_step:  # the same smooth theta(t) sampled at every resolution
            params = mlp_params(jax.random.key(0))
            params = jax.tree.map(lambda p: p * (1 + 0.5 * jnp.sin(jnp.linspace(0, 3, n))).reshape(
                (n,) + (1,) * p.ndim), params)
        x0 = inputs(False)[0]
        _, g_bp = make_loss(integ, "backprop", n, per_step)
        _, g_adj = make_loss(integ, "adjoint", n, per_step)
        a, b = g_bp(x0, params), g_adj(x0, params)
        # compare the x0-gradient (same shape at every n) and the summed parameter gradient
        da = [a[0]] + [jnp.sum(p, axis=0) if per_step else p for p in a[1]]
        db = [b[0]] + [jnp.sum(p, axis=0) if per_step else p for p in b[1]]
        errs.append(max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(da, db)))
    slope = np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(errs), 1)[0]
    assert errs[-1] < errs[0] and slope > integ.order - 0.5, (errs, slope)


@pytest.mark.parametrize("integrator,gradient", PAIRS)
def test_save_all_gradients(integrator, gradient):
    """A loss on every saved state: each strategy agrees with Backprop (Adjoint to O(h^p))."""
    integ = on.integrator(integrator)
    x0, params = inputs(False)
    _, g_ref = make_loss(integ, "backprop", save="all")
    _, g = make_loss(integ, gradient, save="all")
    # Adjoint: |g - g_backprop| / max|g_backprop| measured 2.3 h for Euler and Backward Euler at
    # 16, 64 and 256 steps (first order, as expected), far less for the higher orders
    tol = 4 * (1.0 / STEPS) ** integ.order if gradient == "adjoint" else 1e-10
    for a, b in zip(jax.tree.leaves(g_ref(x0, params)), jax.tree.leaves(g(x0, params))):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(1.0, float(jnp.max(jnp.abs(a)))))


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
@pytest.mark.parametrize("integrator", ["dopri5", "tsit5", pytest.param("kvaerno5", marks=SLOW)])
def test_adaptive_gradients_match_finite_differences(integrator, gradient):
    integ = on.integrator(integrator, rtol=1e-10, atol=1e-10)
    loss, grad = make_loss(integ, gradient)
    x0, params = inputs(False)
    grads = grad(x0, params)
    for direction, fd in directional_fd(loss, x0, params, jax.random.key(3)):
        assert abs(directional(grads, direction) - fd) < 1e-7 * scale(grads, direction)


# Checkpoint's recomputation is also run by the finite-difference test above (16 and 20 steps, 8 stored)
@pytest.mark.parametrize("gradient", ["backprop", pytest.param("checkpoint", marks=SLOW)])
def test_adaptive_gradient_past_the_stored_states_is_that_of_every_step_stored(gradient, monkeypatch):
    """A Dopri5 solve of more steps than Backprop and Checkpoint store (adaptive.BACKPROP_CHECKPOINTS,
    CHECKPOINT_CHECKPOINTS): the recomputed steps give the gradient of the loop that stores every step
    (diffrax's RecursiveCheckpointAdjoint(checkpoints=max_steps), Backprop's former default)."""
    import diffrax

    from odenets.integrators import adaptive

    integ = on.Dopri5(rtol=1e-10, atol=1e-10, max_steps=64)
    x0, params = inputs(False)

    def grad():  # (the gradient, the steps attempted)
        def loss(x0, p):
            sol = on.odeint(mlp_field, x0, 0.0, 6.0, integrator=integ, gradient=gradient, args=p)
            return jnp.sum(jnp.sin(sol.x)), sol.stats["steps"] + sol.stats["rejected"]

        return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(x0, params)

    got, attempted = grad()
    assert int(attempted) > adaptive.BACKPROP_CHECKPOINTS > adaptive.CHECKPOINT_CHECKPOINTS
    monkeypatch.setitem(adaptive.ADJOINTS, gradient,
                        lambda i: diffrax.RecursiveCheckpointAdjoint(checkpoints=i.max_steps))
    for a, b in zip(jax.tree.leaves(grad()[0]), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("integrator,gradient", [
    pytest.param(i, g, marks=() if i in ("rk4", "reversible_heun") else SLOW) for i, g in PAIRS])
def test_vmap_over_initial_states(integrator, gradient):
    x0, params = inputs(False)
    _, grad = make_loss(on.integrator(integrator), gradient)
    batched = jax.vmap(lambda x: grad(x[None], params))(x0)
    for i in range(x0.shape[0]):
        single = grad(x0[i : i + 1], params)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(jax.tree.map(lambda v: v[i], batched))):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("state,param", [("float64", "float32"), ("float32", "float64")])
@pytest.mark.parametrize("integrator,gradient", [("rk4", g) for g in GRADIENTS if g != "reversible"]
                         + [("reversible_heun", "reversible"), pytest.param("dopri5", "adjoint", marks=SLOW)])
def test_mixed_precision(integrator, gradient, state, param):
    """The state keeps x0's dtype, gradients take the parameters' dtype, and agree with Backprop."""
    x0, params = inputs(False)
    x0 = x0.astype(state)
    params = jax.tree.map(lambda p: p.astype(param), params)
    integ = on.integrator(integrator, **({"rtol": 1e-8, "atol": 1e-8} if integrator == "dopri5" else {}))
    loss, g_ref = make_loss(integ, "backprop")
    _, g = make_loss(integ, gradient)
    sol = on.odeint(mlp_field, x0, integrator=integ, gradient=gradient, args=params, save="all")
    assert sol.x.dtype == state and sol.xs.dtype == state
    tol = 0.5 * (1.0 / STEPS) ** 4 if gradient == "adjoint" else (1e-5 if state == "float64" else 1e-4)
    ref, got = g_ref(x0, params), g(x0, params)
    assert got[0].dtype == state and all(leaf.dtype == param for leaf in jax.tree.leaves(got[1]))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(jnp.max(jnp.abs(a))))


@pytest.mark.parametrize("unroll", [True, 3])
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_unroll_changes_nothing_but_the_program(gradient, unroll):
    """unroll=True / 3 (16 steps: a remainder too) give the loss and gradient of unroll=1."""
    integ = on.ReversibleHeun() if gradient == "reversible" else on.RK4()
    x0, params = inputs(True)

    def grad(u):
        def loss(x0, p):
            sol = on.odeint(mlp_field, x0, 0.0, 1.0, STEPS, integrator=integ, gradient=gradient,
                            args=on.PerStep(p), save="all", unroll=u)
            return jnp.sum(jnp.sin(sol.xs))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x0, params)

    for a, b in zip(jax.tree.leaves(grad(1)), jax.tree.leaves(grad(unroll)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_adaptive_nfe_backward_is_unknown(gradient):
    """diffrax counts no backward evaluations (Backprop through Dopri5 does make some): None, not a guess."""
    x0, params = inputs(False)
    sol = on.odeint(mlp_field, x0, 0.0, 1.0, integrator="dopri5", gradient=gradient, args=params)
    assert sol.stats["nfe_backward"] is None


@pytest.mark.parametrize("name", GRADIENTS)
def test_every_gradient_is_final_and_named_by_the_registry(name):
    cls = on.gradient.get(name)
    assert is_final(cls) and cls.name == name
    with pytest.raises(TypeError, match="final"):
        type("Sub", (cls,), {})
    with pytest.raises(TypeError, match="abstract"):
        on.Gradient()


def test_numpy_ints_are_ints():
    assert on.Checkpoint(segment=np.int64(4)).segment == 4 and type(on.Checkpoint(np.int64(4)).segment) is int
    x0, params = inputs(False)
    a = on.odeint(mlp_field, x0, steps=np.int64(4), gradient=on.Checkpoint(segment=np.int32(3)), args=params).x
    np.testing.assert_array_equal(a, on.odeint(mlp_field, x0, steps=4, args=params).x)
