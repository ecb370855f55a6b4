"""No silent wrong answer: probes against closed forms and finite differences.

Each test here pins a result that was once wrong without any error: a zero time gradient, a
dropped imaginary part, a solve over a NaN interval, a backward evaluation count of 0 where
the backward pass does evaluate f. Every case must be right or refused with an odenets error;
never quietly wrong.
"""

import warnings

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import pytest
from conftest import ADAPTIVE, FIXED, GRADIENTS, allowed
from problems import X0, A, linear, riccati

import odenets as on
from odenets.gradients.adjoint import ReconstructionWarning

pytestmark = pytest.mark.usefixtures("strict_promotion")

T0, T1, STEPS = 0.2, 1.1, 64
HEAVY = [n for n in ADAPTIVE + FIXED if n in ADAPTIVE or on.integrator.get(n).dynamic_nfe]  # Newton or diffrax
ALL_PAIRS = [
    # every pair; with the slow tests (CI runs both): the adaptive ones beyond Dopri5 with Adjoint (Tsit5,
    # Kvaerno5; Dopri5's Backprop and Checkpoint are diffrax's one checkpointed loop, which the finite-difference
    # tests of test_gradients.py cover by default), and Checkpoint with Newton-based steps (Backprop covers them)
    pytest.param(i, g, marks=pytest.mark.slow)
    if (i in ADAPTIVE and (i, g) != ("dopri5", "adjoint")) or (g == "checkpoint" and i in HEAVY)
    else (i, g)
    for i in FIXED + ADAPTIVE for g in GRADIENTS if allowed(i, g)
]


def slow_too(pairs, *slow):
    """`pairs` with the pairs in `slow` marked slow as well (a 6-7 s compile each; CI's slow run has them)."""
    return [pytest.param(*p, marks=pytest.mark.slow) if isinstance(p, tuple) and p in slow else p for p in pairs]


def _integ(name):
    return on.integrator(name, rtol=1e-10, atol=1e-10) if name in ADAPTIVE else on.integrator(name)


def _tol(name, gradient):
    """How close a gradient must be to the exact ODE gradient: exact methods meet the discrete
    gradient, so the bound is the method's own error O(h^order) (adaptive: its tolerance)."""
    if name in ADAPTIVE:
        return 1e-6
    return 5.0 * ((T1 - T0) / STEPS) ** on.integrator(name).order + 1e-9


# -- 1. gradients with respect to t0 and t1 ------------------------------------------------------
def _time_grads(f, x0, args, integrator, gradient, save):
    def loss(t0, t1):
        sol = on.odeint(f, x0, t0, t1, STEPS, integrator=_integ(integrator), gradient=gradient, args=args,
                        save=save)
        states = sol.xs if save == "all" else sol.x[None]
        weights = jnp.linspace(0.5, 1.5, states.shape[0])[:, None]
        return jnp.sum(weights * states**2)

    return loss, jax.grad(loss, argnums=(0, 1))


def _linear_exact_time_grads(save):
    """L = sum_k w_k |x(t_k)|^2 with t_k = t0 + (k/N)(t1 - t0) and x(t) = expm(A (t - t0)) x0."""
    fracs = np.linspace(0.0, 1.0, STEPS + 1) if save == "all" else np.array([1.0])
    weights = np.linspace(0.5, 1.5, len(fracs))
    g0 = g1 = 0.0
    for w, s in zip(weights, fracs):
        x = np.asarray(jax.scipy.linalg.expm(A * s * (T1 - T0)) @ X0)
        dldx_dot_f = 2.0 * w * x @ (np.asarray(A) @ x)  # d/dtau |x(tau)|^2 at tau = s (t1 - t0)
        g1 += dldx_dot_f * s
        g0 -= dldx_dot_f * s
    return g0, g1


@pytest.mark.parametrize("save", ["final", "all"])
@pytest.mark.parametrize("integrator,gradient", ALL_PAIRS)
def test_time_gradients_match_the_closed_form(integrator, gradient, save):
    """dL/dt0 and dL/dt1 of x' = A x: never 0, never an internal error; right or refused."""
    _, grads = _time_grads(linear, X0, A, integrator, gradient, save)
    try:
        g0, g1 = grads(T0, T1)
    except (ValueError, TypeError, NotImplementedError) as err:  # a clear refusal is allowed
        assert "t0" in str(err) or "t1" in str(err), err
        assert "custom_vjp" not in str(err) and "Unexpected tangent" not in str(err), err
        return
    e0, e1 = _linear_exact_time_grads(save)
    tol = _tol(integrator, gradient)
    assert abs(float(g1) - e1) <= tol * max(1.0, abs(e1)), (float(g1), e1)
    assert abs(float(g0) - e0) <= tol * max(1.0, abs(e0)), (float(g0), e0)


@pytest.mark.parametrize("integrator,gradient", [(i, g) for i in FIXED for g in GRADIENTS if allowed(i, g)])
def test_time_gradients_of_a_time_dependent_field_match_finite_differences(integrator, gradient):
    """x' = -2 t x^2 (the field depends on t): exact strategies give the discrete solve's
    derivative to rounding; the adjoint gives the ODE's, within the method's error."""
    x0 = jnp.array([0.8])
    loss, grads = _time_grads(riccati, x0, None, integrator, gradient, "all")
    g0, g1 = grads(T0, T1)
    eps = 1e-6
    fd0 = (loss(T0 + eps, T1) - loss(T0 - eps, T1)) / (2 * eps)
    fd1 = (loss(T0, T1 + eps) - loss(T0, T1 - eps)) / (2 * eps)
    tol = 50 * _tol(integrator, gradient) if gradient == "adjoint" else 1e-7
    np.testing.assert_allclose([g0, g1], [fd0, fd1], rtol=tol, atol=tol)


# -- 2. complex states and fields -------------------------------------------------------------------
H = jnp.array([[1.0, 0.5], [0.5, -1.0]])


def schrodinger(t, x, h):
    """x' = -i H x, complex whatever x is (explicit casts: the tests run with strict promotion)."""
    return -1j * (h.astype(jnp.complex128) @ x.astype(jnp.complex128))


def schrodinger_exact(x0):
    return jax.scipy.linalg.expm(-1j * H.astype(jnp.complex128) * (T1 - T0)) @ x0.astype(jnp.complex128)


@pytest.mark.parametrize("integrator", FIXED + ADAPTIVE)
def test_a_complex_field_on_a_real_state_is_not_truncated(integrator):
    """x' = -i H x from a real x0: the imaginary part is kept (or the call is refused), never dropped."""
    x0 = jnp.array([1.0, 0.0])
    exact = schrodinger_exact(x0)
    try:
        sol = on.odeint(schrodinger, x0, T0, T1, STEPS, integrator=_integ(integrator), args=H)
    except (ValueError, TypeError) as err:
        assert "complex" in str(err), err
        return
    assert jnp.iscomplexobj(sol.x)
    np.testing.assert_allclose(sol.x, exact, atol=_tol(integrator, "backprop"))


@pytest.mark.parametrize("integrator,gradient", slow_too(ALL_PAIRS, ("dopri5", "adjoint")))
def test_complex_states_solve_and_differentiate(integrator, gradient):
    """A complex x0 (times stay real): closed form for the state, finite differences for the
    gradient of |x(t1)|^2 with respect to a real coupling s in H(s) = H + s sigma_x."""
    x0 = jnp.array([1.0 + 0.0j, 0.0j])
    sigma_x = jnp.array([[0.0, 1.0], [1.0, 0.0]])

    def loss(s):
        sol = on.odeint(schrodinger, x0, T0, T1, STEPS, integrator=_integ(integrator), gradient=gradient,
                        args=H + s * sigma_x)
        return jnp.sum(jnp.abs(sol.x[0]) ** 2)

    exact = schrodinger_exact(x0)
    sol = on.odeint(schrodinger, x0, T0, T1, STEPS, integrator=_integ(integrator), args=H)
    np.testing.assert_allclose(sol.x, exact, atol=_tol(integrator, "backprop"))
    eps = 1e-6
    fd = (loss(0.1 + eps) - loss(0.1 - eps)) / (2 * eps)
    tol = 50 * _tol(integrator, gradient) if gradient == "adjoint" else 1e-6
    np.testing.assert_allclose(jax.grad(loss)(0.1), fd, rtol=tol, atol=tol)


# -- 3. non-finite times ------------------------------------------------------------------------------
@pytest.mark.parametrize("t0,t1", [(0.0, np.nan), (np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0)])
@pytest.mark.parametrize("integrator", FIXED + ADAPTIVE)
def test_non_finite_times_are_refused(integrator, t0, t1):
    with pytest.raises(ValueError, match=r"t0 and t1 must be finite"):
        on.odeint(linear, X0, t0, t1, 4, integrator=integrator, args=A)


# -- 4. backward evaluation counts ------------------------------------------------------------------
def _counted(f):
    calls = [0]

    def counted(t, x, args):
        # the callback takes x: a callback without operands would be hoisted out of the loop
        jax.debug.callback(lambda _: calls.__setitem__(0, calls[0] + 1), x)
        return f(t, x, args)

    return counted, calls


@pytest.mark.parametrize("integrator,gradient", ALL_PAIRS)
def test_nfe_backward_is_right_or_unknown(integrator, gradient):
    """stats["nfe_backward"] equals the evaluations the backward pass really makes, or is None."""
    f, calls = _counted(linear)
    tolerances = {"rtol": 1e-6, "atol": 1e-6} if integrator in ADAPTIVE else {}
    integ = on.integrator(integrator, **tolerances)

    def solve(x0):
        return on.odeint(f, x0, T0, T1, 8, integrator=integ, gradient=gradient, args=A)

    sol = jax.jit(solve)(X0)
    jax.block_until_ready(sol.x)
    forward = calls[0]
    calls[0] = 0
    jax.block_until_ready(jax.jit(jax.grad(lambda x0: jnp.sum(solve(x0).x ** 2)))(X0))
    jax.effects_barrier()
    backward = calls[0] - forward
    claimed = sol.stats["nfe_backward"]
    if claimed is not None:
        assert int(claimed) == backward, (claimed, backward)


# -- 5. non-array leaves in args --------------------------------------------------------------------
def _with_static_args(t, x, args):
    return -args["scale"] * args["fn"](x) if args["name"] == "sine" else x


@pytest.mark.parametrize("integrator,gradient", slow_too(ALL_PAIRS, ("dopri5", "adjoint")))
def test_non_array_leaves_in_args_are_static(integrator, gradient):
    """A function and a string among the arguments: every pair treats them as static and gives
    the same gradient as the field written over the array alone."""

    def loss(w, static):
        f, args = (_with_static_args, {"fn": jnp.sin, "name": "sine", "scale": w}) if static else (
            lambda t, x, a: -a * jnp.sin(x), w)
        return jnp.sum(on.odeint(f, X0, T0, T1, 8, integrator=_integ(integrator), gradient=gradient, args=args).x)

    w = jnp.asarray(0.7)
    np.testing.assert_allclose(loss(w, True), loss(w, False), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(loss)(w, True), jax.grad(loss)(w, False), rtol=1e-12)


# -- 6. mixed-precision states ----------------------------------------------------------------------
@pytest.mark.parametrize("integrator,gradient", ALL_PAIRS)
def test_mixed_precision_states_keep_each_leaf_dtype(integrator, gradient):
    """A float32 leaf beside a float64 leaf: each keeps its dtype in the state and in the gradient."""
    x0 = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(3, jnp.float64)}
    decay = lambda t, x, a: jax.tree.map(lambda v: -v, x)
    solve = lambda x: on.odeint(decay, x, T0, T1, STEPS, integrator=_integ(integrator), gradient=gradient).x
    x1 = solve(x0)
    assert {k: v.dtype for k, v in x1.items()} == {"a": jnp.float32, "b": jnp.float64}
    for v in x1.values():
        np.testing.assert_allclose(v, np.exp(-(T1 - T0)), rtol=max(1e-4, _tol(integrator, gradient)))
    g = jax.grad(lambda x: sum(jnp.sum(v.astype(jnp.float64)) for v in solve(x).values()))(x0)
    assert {k: v.dtype for k, v in g.items()} == {"a": jnp.float32, "b": jnp.float64}


# -- 7. a solution that blows up ----------------------------------------------------------------------
BLOWUP = r"became non-finite \(NaN or Inf\) (in step \d+ of 40, between t=[\d.]+ and t=[\d.]+|near t=[\d.]+)"


@pytest.mark.parametrize("integrator", FIXED + ADAPTIVE)
def test_a_state_that_blows_up_is_reported_with_where_and_the_fix(integrator):
    """x' = x^2 from x0 = 1 blows up at t = 1: an error naming the step (or time) and the fix,
    never "raise max_steps", an internal callback error or a silent NaN."""
    with pytest.raises(ValueError, match=BLOWUP + r".*smaller step h \(more steps\), an implicit"):
        on.odeint(lambda t, x, a: x**2, jnp.ones(1), 0.0, 2.0, 40, integrator=integrator)


def test_under_jit_a_blow_up_reaches_the_caller_as_nan():
    """Under jit no check runs in the loop (no cost): the non-finite state is returned, which a
    training loop reports as divergence."""
    x1 = jax.jit(lambda x: on.odeint(lambda t, y, a: y**2, x, 0.0, 2.0, 40).x)(jnp.ones(1))
    assert not bool(jnp.isfinite(x1).all())


# -- 8. forward mode --------------------------------------------------------------------------------
@pytest.mark.parametrize("integrator,gradient", ALL_PAIRS)
def test_forward_mode_works_or_names_the_pairs_that_support_it(integrator, gradient):
    """jax.jvp through fixed-step Backprop/Checkpoint equals reverse mode; every other pair raises
    odenets' TypeError naming what works, not JAX's custom_vjp error."""
    fn = lambda x0: on.odeint(linear, x0, T0, T1, 8, integrator=_integ(integrator), gradient=gradient, args=A).x
    direction = jnp.array([1.0, 0.0])
    if integrator in FIXED and gradient in ("backprop", "checkpoint"):
        tangent = jax.jvp(fn, (X0,), (direction,))[1]
        np.testing.assert_allclose(tangent, jax.jacrev(fn)(X0) @ direction, rtol=1e-10)
        loss = lambda x: jnp.sum(fn(x) ** 2)
        np.testing.assert_allclose(jax.hessian(loss)(X0), jax.jacfwd(jax.jacfwd(loss))(X0), rtol=1e-8)
        return
    refusal = (rf"forward-mode differentiation .* integrator '{integrator}' and gradient '{gradient}' is not "
               rf"supported.*Use gradient 'backprop' or 'checkpoint'")
    with pytest.raises(TypeError, match=refusal):
        jax.jvp(fn, (X0,), (direction,))


# -- 9. the adjoint's reconstruction of x(t0) ----------------------------------------------------------
def _adjoint_grad(a, integrator):
    growth = lambda t, x, a_: a_ * x
    loss = lambda x0: jnp.sum(on.odeint(growth, x0, 0.0, 1.0, 100, integrator=integrator, gradient="adjoint",
                                        args=a).x)
    grad = jax.jit(jax.grad(loss))(jnp.ones(2))
    jax.block_until_ready(grad)
    jax.effects_barrier()
    return grad


DRIFT_INTEGRATORS = ["euler", "rk4"] + [
    # adaptive: diffrax's backward solve, written out so that its rebuilt x(t0) is seen (Kvaerno5 slow)
    pytest.param(i, marks=pytest.mark.slow) if i == "kvaerno5" else i for i in ADAPTIVE
]


@pytest.mark.parametrize("integrator", DRIFT_INTEGRATORS)
def test_the_adjoint_warns_when_its_reconstruction_drifts(integrator):
    """x' = 50 x over 100 steps (adaptive: at rtol 1e-2): the backward solve does not return to x0;
    the warning gives the drift."""
    with pytest.warns(ReconstructionWarning, match=r"\|x_rebuilt - x0\| = [\d.e+-]+, [\d.e+-]+ relative to "
                                                   r"\|x0\| = 1\.41 \(tolerance 0\.01\)"):
        _adjoint_grad(50.0, on.integrator(integrator, rtol=1e-2) if integrator in ADAPTIVE else integrator)


@pytest.mark.parametrize("integrator", ["rk4", *DRIFT_INTEGRATORS[2:]])
def test_the_adjoint_is_silent_when_its_reconstruction_holds(integrator):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReconstructionWarning)
        _adjoint_grad(-1.0, integrator)


@pytest.mark.parametrize("save", ["final", pytest.param("all", marks=pytest.mark.slow)])  # "all": 8 s
def test_the_adaptive_adjoint_matches_backprop(save):
    """The written-out backward solve gives diffrax's backprop gradient (x0 and parameters) to the
    tolerance, with cotangents on every saved state (save="all")."""

    def grads(gradient):
        def loss(x0, w):
            sol = on.odeint(_damped_sine, x0, T0, T1, 6, integrator=_integ("dopri5"), gradient=gradient, args=w,
                            save=save)
            return jnp.sum((sol.xs if save == "all" else sol.x) ** 2)

        return jax.grad(loss, argnums=(0, 1))(X0, 0.7)

    for got, want in zip(grads("adjoint"), grads("backprop")):
        np.testing.assert_allclose(got, want, rtol=1e-7)


# -- 10. second-order reverse mode ----------------------------------------------------------------------
def _damped_sine(t, x, a):
    return -a * jnp.sin(x) + 0.3 * x


# the default suite runs pairs of the explicit, reversible and adaptive kinds; CI's slow run all (implicit too)
SECOND_ORDER_FAST = {("rk4", "backprop"), ("euler", "adjoint"),  # the implicit pairs (9 s each): slow only
                     ("reversible_heun", "reversible"), ("dopri5", "backprop"), ("dopri5", "adjoint")}


@pytest.mark.parametrize("integrator,gradient", [
    (i, g) if (i, g) in SECOND_ORDER_FAST else pytest.param(i, g, marks=pytest.mark.slow)
    for i in FIXED + ADAPTIVE for g in GRADIENTS if allowed(i, g)])
def test_grad_of_grad_matches_finite_differences_or_is_refused_by_name(integrator, gradient):
    """d2L/dw2 and the reverse-over-reverse hessian in x0 equal central differences of the first
    derivative for every fixed-step pair (implicit ones included); the adaptive Adjoint raises
    odenets' TypeError naming what works; adaptive Backprop/Checkpoint leave the loop to diffrax,
    whose second derivative is JAX's while-loop error (documented in the README)."""

    def loss(w, x0):
        sol = on.odeint(_damped_sine, x0, T0, T1, 8, integrator=_integ(integrator), gradient=gradient, args=w)
        return jnp.sum(sol.x**2)

    d2w = jax.grad(jax.grad(loss))
    if integrator in ADAPTIVE and gradient == "adjoint":
        refusal = (rf"second-order reverse mode .* integrator '{integrator}' and gradient '{gradient}' is not "
                   rf"supported.*Use a fixed-step integrator")
        with pytest.raises(TypeError, match=refusal):
            d2w(0.7, X0)
        return
    if integrator in ADAPTIVE:
        with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for lax.while_loop"):
            d2w(0.7, X0)
        return
    eps = 1e-5
    dw = jax.grad(loss)
    np.testing.assert_allclose(d2w(0.7, X0), (dw(0.7 + eps, X0) - dw(0.7 - eps, X0)) / (2 * eps), rtol=1e-7)
    dx = jax.grad(loss, argnums=1)
    fd = np.stack([(dx(0.7, X0 + eps * e) - dx(0.7, X0 - eps * e)) / (2 * eps) for e in jnp.eye(2)])
    np.testing.assert_allclose(jax.jacrev(dx, argnums=1)(0.7, X0), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("integrator", [n for n in FIXED if on.integrator.get(n).dynamic_nfe])
def test_third_derivative_through_newton_steps_matches_finite_differences(integrator):
    """The stage solution's derivatives are exact beyond second order too (d3L/dw3)."""
    loss = lambda w: jnp.sum(on.odeint(_damped_sine, X0, T0, T1, 4, integrator=integrator, args=w).x ** 2)
    d2 = jax.grad(jax.grad(loss))
    eps = 1e-4
    np.testing.assert_allclose(jax.grad(d2)(0.7), (d2(0.7 + eps) - d2(0.7 - eps)) / (2 * eps), rtol=1e-6)


# -- solves inside lax.scan with traced times; fields that close over what is differentiated -------------
@pytest.mark.parametrize("integrator,gradient", [
    (i, g) if (i, g) == ("dopri5", "adjoint") else pytest.param(i, g, marks=pytest.mark.slow)
    for i in ADAPTIVE for g in GRADIENTS if allowed(i, g)])
def test_adaptive_gradients_inside_a_scan_with_traced_times(integrator, gradient):
    """One solve per interval in a lax.scan (the trajectory model's uneven times): the gradient
    equals central differences (a closed-over time must not leak out of the custom VJP)."""
    a0 = jnp.array([[-1.0, 0.5], [0.0, -2.0]])
    spans = jnp.array([[0.0, 0.5], [0.5, 1.0]])

    def loss(a):
        def body(y, span):
            x = on.odeint(lambda t, x_, m: m @ x_, y, span[0], span[1], integrator=_integ(integrator),
                          gradient=gradient, args=a).x
            return x, x

        return jnp.sum(jax.lax.scan(body, X0, spans)[1] ** 2)

    e = jnp.zeros_like(a0).at[0, 1].set(1e-5)
    fd = (loss(a0 + e) - loss(a0 - e)) / 2e-5
    np.testing.assert_allclose(jax.grad(loss)(a0)[0, 1], fd, rtol=1e-5)


CLOSURE_PAIRS = [("rk4", g) for g in on.gradient.names()] + [("dopri5", "backprop"), ("dopri5", "adjoint")]


@pytest.mark.parametrize("integrator,gradient", slow_too(CLOSURE_PAIRS, ("dopri5", "backprop")))
def test_a_field_closing_over_what_is_differentiated(integrator, gradient):
    """Backprop and Checkpoint differentiate a closed-over parameter (central differences); Adjoint and
    Reversible, which differentiate x0 and args only, refuse it by name before the solve."""
    if not allowed(integrator, gradient):
        integrator = "reversible_heun"

    def loss(w):
        f = lambda t, x, _: jnp.tanh(w * x)
        return jnp.sum(on.odeint(f, X0, T0, T1, 8, integrator=_integ(integrator), gradient=gradient).x ** 2)

    if on.gradient.get(gradient).args_only:
        with pytest.raises(TypeError, match=rf"gradient '{gradient}' differentiates x0 and args only.*pass them "
                                            r"through args"):
            jax.grad(loss)(-0.7)
        return
    np.testing.assert_allclose(jax.grad(loss)(-0.7), (loss(-0.7 + 1e-5) - loss(-0.7 - 1e-5)) / 2e-5, rtol=1e-6)
