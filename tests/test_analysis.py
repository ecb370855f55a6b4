"""odenets.analysis against closed forms: stability functions, Jacobian spectra, per-step observation."""

import math

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
import scipy.linalg
from conftest import ADAPTIVE, FIXED, PAIRS
from flax import nnx

import odenets as on
from odenets import analysis

matplotlib.use("Agg")

RNG = np.random.default_rng(0)
Z = np.concatenate([RNG.normal(size=12) * 1.5 + 1j * RNG.normal(size=12) * 1.5, [0.0, -2.0, 1.5j, -2.5 + 0.5j]])
SINGLE = [n for n in FIXED if analysis.carried_size(n) == 1]
CARRYING = [n for n in FIXED if analysis.carried_size(n) > 1]
TAYLOR2 = lambda z: 1 + z + z**2 / 2
HERMITIAN = np.array([[1.0, 0.5], [0.5, -1.0]])
ENERGIES, MODES = np.linalg.eigh(HERMITIAN)


# -- stability functions ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,closed_form", [
    ("euler", lambda z: 1 + z),
    ("midpoint", TAYLOR2),
    ("heun", TAYLOR2),
    ("rk4", lambda z: 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24),
    ("backward_euler", lambda z: 1 / (1 - z)),
    ("trapezoid", lambda z: (1 + z / 2) / (1 - z / 2)),
])
def test_stability_function_closed_forms(name, closed_form):
    np.testing.assert_allclose(analysis.stability_function(name)(Z), closed_form(Z), rtol=1e-10, atol=1e-12)


def test_a_registered_method_gets_its_stability_function():
    """Ralston's method (registered by the test suite, one class) is order 2 with 2 stages: R = 1 + z + z^2/2."""
    np.testing.assert_allclose(analysis.stability_function("ralston")(Z), TAYLOR2(Z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FIXED)
def test_stability_function_matches_exp_to_the_order(name):
    """|R(z) - exp(z)| = C |z|^(order + 1) for small z (its principal root for methods carrying more state)."""
    order = on.integrator(name).order
    R = analysis.stability_function(name, root="principal")
    directions = np.exp(1j * np.array([0.3, 1.2, 2.0, 2.9, -1.0]))
    errors = [np.abs(R(r * directions) - np.exp(r * directions)) for r in (0.02, 0.01)]
    slopes = np.log2(errors[0] / errors[1])
    assert np.all(slopes > order + 0.7), (name, slopes)
    assert np.all(errors[1] < 1.0 * 0.01 ** (order + 1)), (name, errors[1])


@pytest.mark.parametrize("name", CARRYING)
def test_a_carried_state_gives_the_amplification_matrix_roots(name):
    """Reversible Heun on (y, z, f(z)): M has eigenvalues z +- sqrt(z^2 + 1) and 0; the dominant
    one has modulus 1 on the imaginary segment [-i, i] and more off it (real negative z included)."""
    z = np.array([0.3 + 0.1j, -0.5, 2.0j, -1.0 + 1.0j])
    mu = np.sort_complex(np.linalg.eigvals(analysis.amplification_matrix(name, z)))
    roots = np.stack([z + np.sqrt(z**2 + 1), z - np.sqrt(z**2 + 1), 0 * z], axis=-1)
    np.testing.assert_allclose(mu, np.sort_complex(roots), atol=1e-12)
    R = analysis.stability_function(name)
    np.testing.assert_allclose(np.abs(R(1j * np.linspace(-0.99, 0.99, 7))), 1.0, atol=1e-12)
    assert np.all(np.abs(R(np.array([-0.1, -1.0, 1.1j, 0.05 + 0.5j]))) > 1.0 + 1e-3)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_integrators_are_refused(name):
    with pytest.raises(ValueError, match=rf"adaptive integrator '{name}'.*valid choices: euler"):
        analysis.stability_function(name)


def test_stable_and_fraction_inside():
    """Forward Euler's region is the disc |1 + z| <= 1; NaN eigenvalues are left out."""
    z = np.array([[-1.0, -3.0], [0.5j, np.nan]])
    np.testing.assert_array_equal(analysis.stable("euler", np.nan_to_num(z)), [[True, False], [False, True]])
    assert analysis.fraction_inside("euler", z) == pytest.approx(1 / 3)
    np.testing.assert_allclose(analysis.fraction_inside("euler", z, axis=1), [0.5, 0.0])
    assert analysis.fraction_inside("backward_euler", z) == 1.0  # A-stable: the whole left half-plane
    assert analysis.fraction_inside("rk4", [-2.7, -2.9]) == 0.5  # RK4's real interval ends near -2.785


def test_plot_regions_labels_and_legend():
    ax = analysis.plot_regions(["euler", "rk4", "reversible_heun"], eigenvalues={"trained": Z[:5]}, resolution=60)
    assert ax.get_xlabel() == r"Re$(h\lambda)$" and ax.get_ylabel() == r"Im$(h\lambda)$"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["euler", "rk4", "reversible_heun", "trained"]
    segment = [line for line in ax.get_lines() if line.get_linewidth() == 4]  # reversible Heun: no interior
    assert len(segment) == 1 and np.nanmax(np.abs(segment[0].get_ydata())) == pytest.approx(1.0, abs=0.14)
    with pytest.raises(ValueError, match="valid choices"):
        analysis.plot_regions(["dopri5"])
    matplotlib.pyplot.close("all")


# -- Jacobian spectra --------------------------------------------------------------------------------
def _matched(approx, exact, k):
    """Relative distance of each approximate eigenvalue to the nearest of the exact top k + 2."""
    top = exact[: k + 2]
    return np.array([np.min(np.abs(mu - top)) for mu in approx]) / np.abs(exact[0])


def test_spectrum_of_a_linear_field_is_that_of_h_A():
    A = RNG.normal(size=(5, 5))
    mu = analysis.jacobian_spectrum(lambda t, x, a: a @ x, jnp.ones(5), args=jnp.asarray(A), h=0.1)
    np.testing.assert_allclose(np.sort_complex(mu), np.sort_complex(np.linalg.eigvals(0.1 * A)), atol=1e-12)
    assert np.all(np.diff(np.abs(mu)) <= 1e-12)  # by decreasing modulus
    batch = analysis.jacobian_spectrum(lambda t, x, a: x @ a.T, jnp.ones((3, 5)), args=jnp.asarray(A), h=0.1,
                                       batched=True)
    assert batch.shape == (3, 5)
    np.testing.assert_allclose(batch, np.broadcast_to(mu, (3, 5)), atol=1e-12)


def test_spectrum_of_a_tanh_layer_matches_the_hand_formula():
    """An MLPField F(x) = W2 tanh(W1 x + b1) + b2 has dF/dx = W2 diag(1 - tanh^2(W1 x + b1)) W1."""
    field = on.fields.MLPField(4, 6, time=False, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    x = jnp.asarray(RNG.normal(size=(2, 4)))
    mu = analysis.jacobian_spectrum(field, x, h=0.5, batched=True)
    w1, b1 = np.asarray(field.hidden[0].kernel[...]).T, np.asarray(field.hidden[0].bias[...])
    w2 = np.asarray(field.out.kernel[...]).T
    for i in range(2):
        jac = w2 @ np.diag(1 - np.tanh(w1 @ np.asarray(x[i]) + b1) ** 2) @ w1
        expected = np.sort_complex(np.linalg.eigvals(0.5 * jac))
        np.testing.assert_allclose(np.sort_complex(mu[i]), expected, atol=1e-12)


def test_matrix_free_spectra_match_exact_on_a_200_wide_field():
    """Arnoldi's top 6 by modulus and power iteration's spectral radius against LAPACK, 1e-6 relative."""
    W = jnp.asarray(RNG.normal(size=(200, 200)) / np.sqrt(200))
    f = lambda t, x, w: jnp.tanh(w @ x)
    x = jnp.asarray(RNG.normal(size=200) * 0.3)
    exact = analysis.jacobian_spectrum(f, x, args=W, h=0.5)
    arnoldi = analysis.jacobian_spectrum(f, x, args=W, h=0.5, method="arnoldi", k=6)
    np.testing.assert_allclose(np.abs(arnoldi), np.abs(exact[:6]), rtol=1e-6)
    assert np.all(_matched(arnoldi, exact, 6) < 1e-6)
    power = analysis.jacobian_spectrum(f, x, args=W, h=0.5, method="power", k=1, iters=1000)
    assert abs(abs(power[0]) - abs(exact[0])) < 1e-6 * abs(exact[0])
    assert _matched(power, exact, 1)[0] < 1e-6


def test_complex_field_spectrum():
    """x' = -i H x (H Hermitian): eigenvalues -i h e_j, on the imaginary axis."""
    H = RNG.normal(size=(4, 4)) + 1j * RNG.normal(size=(4, 4))
    H = (H + H.conj().T) / 2
    f = lambda t, x, a: -1j * (a @ x)
    mu = analysis.jacobian_spectrum(f, jnp.ones(4, jnp.complex128), args=jnp.asarray(H), h=0.1)
    np.testing.assert_allclose(np.sort(mu.imag), np.sort(-0.1 * np.linalg.eigvalsh(H)), atol=1e-12)
    np.testing.assert_allclose(mu.real, 0.0, atol=1e-12)


def test_bad_spectrum_arguments_are_refused():
    f = lambda t, x, a: x
    with pytest.raises(ValueError, match="method"):
        analysis.jacobian_spectrum(f, jnp.ones(3), method="lanczos2")
    with pytest.raises(ValueError, match="k < n - 1"):
        analysis.jacobian_spectrum(f, jnp.ones(3), method="arnoldi", k=2)


def test_step_spectra_of_a_per_step_linear_stack():
    """Step k of F_k(x) = A_k x: the eigenvalues of h A_k, whatever the states."""
    stack = jnp.asarray(RNG.normal(size=(3, 4, 4)))
    x = jnp.asarray(RNG.normal(size=(2, 4)))
    sp = analysis.step_spectra(lambda t, x, a: x @ a.T, x, t0=0.0, t1=0.6, steps=3, integrator="rk4",
                               args=on.PerStep(stack))
    assert sp.eigenvalues.shape == (3, 2, 4) and sp.h == pytest.approx(0.2) and sp.integrator.name == "rk4"
    for k in range(3):
        expected = np.sort_complex(np.linalg.eigvals(0.2 * np.asarray(stack[k])))
        np.testing.assert_allclose(np.sort_complex(sp.eigenvalues[k, 1]), expected, atol=1e-12)
    np.testing.assert_allclose(sp.times, [0.0, 0.2, 0.4])
    assert sp.states.shape == (4, 2, 4)


def test_step_spectra_of_a_model_follow_its_trajectory():
    """A resnet classifier: step k's spectrum is that of its own field, field_at(stack, k), at the
    state x_k of the block's own solve (h = 1)."""
    model = on.models.build("resnet", input_shape=(3,), num_classes=2, width=4, depth=3, rngs=2)
    x = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    (sp,) = analysis.step_spectra(model, x)
    block = model.stages[0]
    states = block.solve(model.stem(x), save="all").xs
    np.testing.assert_allclose(sp.states, states)
    assert sp.eigenvalues.shape == (3, 5, 4) and sp.h == 1.0
    for k in range(3):
        own = analysis.jacobian_spectrum(on.fields.field_at(block.field, k), states[k], float(k), batched=True)
        np.testing.assert_allclose(sp.eigenvalues[k], own, rtol=1e-5, atol=1e-6)
    assert 0.0 <= analysis.fraction_inside("euler", sp.eigenvalues) <= 1.0


def test_augmented_stages_are_seen_with_their_zero_channels():
    """ANODE: the block's state is (features, augment zeros), so its Jacobian is (width + augment) wide;
    observe_model's loss is the model's."""
    model = on.models.build("anode", input_shape=(3,), num_classes=2, width=2, depth=2, augment=2,
                            integrator="rk4")
    x, y = jnp.asarray(RNG.normal(size=(4, 3))), jnp.array([0, 1, 0, 1])
    (sp,) = analysis.step_spectra(model, x)
    assert sp.eigenvalues.shape == (2, 4, 4) and float(jnp.max(jnp.abs(sp.states[0][..., 2:]))) == 0.0
    (obs,) = analysis.observe_model(model, x, y)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model(x), y))
    assert float(obs.loss) == pytest.approx(float(ce), rel=1e-10)


def test_models_without_ode_stages_are_refused():
    model = on.models.build("plain", input_shape=(3,), num_classes=2, width=2, depth=1)
    with pytest.raises(ValueError, match="no ODE stages.*PlainBlock"):
        analysis.step_spectra(model, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="no ODE stages"):
        analysis.observe_model(model, jnp.ones((2, 3)), jnp.array([0, 1]))


# -- per-step observation ----------------------------------------------------------------------------
A = jnp.array([[-1.0, 2.0], [-0.5, -0.3]])
X0 = jnp.array([1.0, -0.5])
linear = lambda t, x, a: a @ x
square = lambda x: jnp.sum(x**2)


def test_observe_euler_on_a_linear_field_closed_form():
    """Euler on x' = A x, N = 10, h = 0.1: x_k = (I + hA)^k x0, F(x_k) = A x_k and
    dL/dx_k = ((I + hA)^T)^(N-k) dL/dx_N, L = |x_N|^2."""
    obs = analysis.observe(linear, X0, 0.0, 1.0, 10, "euler", square, args=A)
    M = np.eye(2) + 0.1 * np.asarray(A)
    power = np.linalg.matrix_power
    np.testing.assert_allclose(obs.states, [power(M, k) @ X0 for k in range(11)], rtol=1e-12)
    np.testing.assert_allclose(obs.residuals, np.asarray(obs.states[:-1]) @ np.asarray(A).T, rtol=1e-12)
    g_n = 2 * np.asarray(obs.states[-1])
    np.testing.assert_allclose(obs.grads, [power(M.T, 10 - k) @ g_n for k in range(11)], rtol=1e-12)
    np.testing.assert_allclose(obs.times, np.linspace(0, 1, 11), atol=1e-15)
    assert float(obs.loss) == pytest.approx(float(square(obs.states[-1])))


@pytest.mark.parametrize("name", [
    # Newton-based methods compile for many seconds inside the VJP chain: with the slow tests
    pytest.param(n, marks=pytest.mark.slow) if on.integrator(n).dynamic_nfe else n for n in SINGLE
])
def test_observe_gradients_match_finite_differences(name):
    """dL/dx_k of a nonlinear per-step field against central differences of the solve restarted at x_k."""
    W = jnp.asarray(RNG.normal(size=(4, 2, 2)))
    f = lambda t, x, w: jnp.tanh(w @ x) - 0.5 * x
    loss = lambda x: jnp.sum(jnp.sin(x)) + x[0] * x[1]
    obs = analysis.observe(f, X0, 0.0, 2.0, 4, name, loss, args=on.PerStep(W))
    np.testing.assert_allclose(obs.residuals[2], f(1.0, obs.states[2], W[2]), rtol=1e-12)
    eps = 1e-6
    for k in (0, 2):
        def rest(x, k=k):
            return loss(on.odeint(f, x, 0.5 * k, 2.0, 4 - k, integrator=name, args=on.PerStep(W[k:])).x)
        moved = obs.states[k] + eps * jnp.concatenate([jnp.eye(2), -jnp.eye(2)])
        ends = jax.vmap(rest)(moved)
        fd = (ends[:2] - ends[2:]) / (2 * eps)
        np.testing.assert_allclose(obs.grads[k], fd, rtol=1e-6, atol=1e-8)


def test_observe_complex_states_agree_with_jax_grad_through_the_solve():
    """x' = -i H x, L = |x_N,0|^2: dL/dx_0 of the VJP chain is jax.grad of L(odeint(x0)) (same convention)."""
    H = jnp.asarray(HERMITIAN, jnp.complex128)
    f = lambda t, x, a: -1j * (a @ x)
    loss = lambda x: jnp.abs(x[0]) ** 2
    x0 = jnp.array([0.6 + 0.2j, -0.3j])
    obs = analysis.observe(f, x0, 0.0, 1.0, 4, "rk4", loss, args=H)
    direct = jax.grad(lambda x: loss(on.odeint(f, x, 0.0, 1.0, 4, integrator="rk4", args=H).x))(x0)
    np.testing.assert_allclose(obs.grads[0], direct, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", CARRYING + ADAPTIVE[:1])
def test_observe_refuses_integrators_without_a_step_map_of_x(name):
    with pytest.raises(ValueError, match="valid choices: euler"):
        analysis.observe(linear, X0, 0.0, 1.0, 4, name, square, args=A)


def test_observe_model_gradients_are_those_of_the_classifier_loss():
    """observe_model's loss is the classifier's cross-entropy, dL/dx_N that of the head, and dL/dx_0 the
    gradient of the whole model's loss with respect to the ODE stage's input (central differences)."""
    model = on.models.build("resnet", input_shape=(3,), num_classes=3, width=4, depth=3, rngs=1)
    x = jnp.asarray(RNG.normal(size=(6, 3)))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    (obs,) = analysis.observe_model(model, x, y)
    assert obs.states.shape == (4, 6, 4) and obs.residuals.shape == (3, 6, 4) and obs.grads.dtype == jnp.float64
    ce = lambda logits: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    assert float(obs.loss) == pytest.approx(float(ce(model(x))), rel=1e-10)
    np.testing.assert_allclose(obs.grads[-1], jax.grad(lambda h: ce(model.head(h)))(obs.states[-1]), rtol=1e-10)
    d = jnp.asarray(RNG.normal(size=(6, 4)))
    eps = 1e-6
    loss_from = lambda h0: ce(model.head(model.stages[0](h0)))
    fd = (loss_from(obs.states[0] + eps * d) - loss_from(obs.states[0] - eps * d)) / (2 * eps)
    assert float(jnp.sum(obs.grads[0] * d)) == pytest.approx(float(fd), rel=1e-6)


# -- complex states through odeint ---------------------------------------------------------------------
# test_reliability solves x' = -i H x for every (integrator, gradient) pair against exp(-iHt) and checks
# jax.grad with respect to H; here: the discrete solution in closed form, and gradients through x0.


def _schrodinger(s, integrator, gradient="backprop", steps=8):
    """x_N of x' = -i H x, t in [0, 1], from x0(s) = cos(s) v1 + i sin(s) v2 (v_j eigenvectors of H)."""
    x0 = jnp.cos(s) * MODES[:, 0] + 1j * jnp.sin(s) * MODES[:, 1]
    return on.odeint(lambda t, x, a: -1j * (a @ x), x0.astype(jnp.complex128), 0.0, 1.0, steps,
                     integrator=integrator, gradient=gradient, args=jnp.asarray(HERMITIAN, jnp.complex128)).x


@pytest.mark.parametrize("integrator", SINGLE)
def test_complex_solve_is_the_stability_function_per_mode(integrator):
    """Each eigenmode of H is multiplied per step by R(-i h e_j): x_N = sum_j c_j R(-i h e_j)^N v_j,
    close to the exact exp(-i H) x0 for these 8 steps."""
    s, steps = 0.4, 8
    growth = analysis.stability_function(integrator)(-1j * ENERGIES / steps) ** steps
    closed = math.cos(s) * growth[0] * MODES[:, 0] + 1j * math.sin(s) * growth[1] * MODES[:, 1]
    x = np.asarray(_schrodinger(s, integrator, steps=steps))
    np.testing.assert_allclose(x, closed, rtol=1e-9, atol=1e-10)
    exact = scipy.linalg.expm(-1j * HERMITIAN) @ (math.cos(s) * MODES[:, 0] + 1j * math.sin(s) * MODES[:, 1])
    assert np.max(np.abs(x - exact)) < 0.1


def _first_integrator(gradient):
    return next(i for i, g in PAIRS if g == gradient)


@pytest.mark.filterwarnings("ignore::odenets.gradients.adjoint.ReconstructionWarning")  # euler, 8 steps
@pytest.mark.parametrize("gradient", on.gradient.names())
def test_complex_initial_state_gradients_match_finite_differences(gradient):
    """jax.grad of a real loss |x_N,0|^2 through a complex x0(s), for every gradient strategy."""
    integrator = _first_integrator(gradient)
    loss = lambda s: jnp.abs(_schrodinger(s, integrator, gradient)[0]) ** 2
    fd = (loss(0.4 + 1e-6) - loss(0.4 - 1e-6)) / 2e-6
    np.testing.assert_allclose(jax.grad(loss)(0.4), fd, rtol=1e-6, atol=1e-8)


def test_reach_along_rays_matches_closed_forms():
    """Euler's disc reaches 2 cos(pi - theta) along theta; RK4 2.7853 on the negative real axis (root of
    |1 + z + z^2/2 + z^3/6 + z^4/24| = 1) and 2 sqrt 2 on the imaginary one; A-stable methods never leave
    the left half-plane; Euler starts outside on the imaginary axis."""
    theta = np.array([np.pi, 0.8 * np.pi, 0.6 * np.pi])
    np.testing.assert_allclose(analysis.reach("euler", theta), -2 * np.cos(theta), rtol=1e-8)
    np.testing.assert_allclose(analysis.reach("rk4", [np.pi, np.pi / 2]), [2.785293563, 2 * np.sqrt(2)], rtol=1e-7)
    for a_stable in ("backward_euler", "trapezoid"):
        assert np.isinf(analysis.reach(a_stable, theta)).all()
    assert analysis.reach("euler", np.pi / 2) == 0.0
