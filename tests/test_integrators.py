"""Accuracy of every integrator: convergence order, cross-checks with diffrax, stiffness, NFE."""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ADAPTIVE, FIXED
from problems import X0, A, linear, linear_exact, riccati, riccati_exact

import odenets as on
from odenets._abstract import is_final
from odenets.integrators import ExplicitRK, FixedStepIntegrator

pytestmark = pytest.mark.usefixtures("strict_promotion")


def fitted_order(errors, steps):
    slope, _ = np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(np.asarray(errors)), 1)
    return slope


@pytest.mark.parametrize("name", FIXED)
def test_convergence_order_linear(name):
    integ = on.integrator(name)
    steps = [8, 16, 32, 64]
    exact = linear_exact(2.0)
    errs = [float(jnp.max(jnp.abs(on.odeint(linear, X0, 0.0, 2.0, n, integrator=integ, args=A).x - exact)))
            for n in steps]
    assert abs(fitted_order(errs, steps) - integ.order) < 0.3, (name, errs)


@pytest.mark.parametrize("name", FIXED)
def test_convergence_order_nonlinear(name):
    # reversible Heun is not absolutely stable for real negative eigenvalues, so it needs
    # h |df/dx| well below 1 to be asymptotic: hence 32..256 steps and x0 <= 1 here
    integ = on.integrator(name)
    steps = [32, 64, 128, 256]
    x0 = jnp.array([0.5, 1.0])
    exact = riccati_exact(1.5, x0)
    errs = [float(jnp.max(jnp.abs(on.odeint(riccati, x0, 0.0, 1.5, n, integrator=integ).x - exact)))
            for n in steps]
    assert abs(fitted_order(errs, steps) - integ.order) < 0.3, (name, errs)


def test_rk4_is_the_classic_method():
    tab = on.RK4.tableau
    assert tab.b == (1 / 6, 1 / 3, 1 / 3, 1 / 6)
    assert tab.c == (0.0, 0.5, 0.5, 1.0)
    # one step of x' = 4 t^3 is Simpson's rule, exact for cubics: stages at wrong times fail
    x = on.odeint(lambda t, x, a: 4 * t**3 * jnp.ones_like(x), jnp.zeros(1), 0.0, 1.0, 1, integrator="rk4").x
    assert abs(float(x[0]) - 1.0) < 1e-14
    # and not Kutta's 3/8 rule (torchdiffeq's "rk4"): the two differ on x' = x at h = 1
    x = on.odeint(lambda t, x, a: x, jnp.ones(1), 0.0, 1.0, 1, integrator="rk4").x
    assert abs(float(x[0]) - (1 + 1 + 1 / 2 + 1 / 6 + 1 / 24)) < 1e-15


def _diffrax_solve(solver, f, x0, t1, steps, args):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), solver, 0.0, t1, t1 / steps, x0, args=args)
    return sol.ys[-1]


def diffrax_erk(integ: ExplicitRK) -> diffrax.AbstractERK:
    """The same method as a diffrax solver, built from our tableau (fixed steps: no error estimate).

    diffrax's tableaux have two stages or more; the one consistent one-stage method is Euler's."""
    tab = integ.tableau
    if tab.stages == 1:
        return diffrax.Euler()

    class FromTableau(diffrax.AbstractERK):
        tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
            c=np.asarray(tab.c[1:]), b_sol=np.asarray(tab.b), b_error=np.zeros(tab.stages),
            a_lower=tuple(np.asarray(row) for row in tab.a[1:]),
        )

        @staticmethod
        def interpolation_cls(t0, t1, y0, y1, k):
            return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)

        def order(self, terms):
            return integ.order

    return FromTableau()


EXPLICIT = [n for n in FIXED if issubclass(on.integrator.get(n), ExplicitRK)]


@pytest.mark.parametrize("name", EXPLICIT)
def test_explicit_rk_matches_diffrax(name):
    """Every registered tableau (the test suite's Ralston included) against diffrax's own RK loop."""
    x0 = jnp.array([0.5, 1.0, 2.0])
    ours = on.odeint(riccati, x0, 0.0, 1.5, 17, integrator=name).x
    theirs = _diffrax_solve(diffrax_erk(on.integrator(name)), riccati, x0, 1.5, 17, None)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name,solver", [("euler", diffrax.Euler()), ("midpoint", diffrax.Midpoint()),
                                         ("heun", diffrax.Heun()), ("reversible_heun", diffrax.ReversibleHeun())])
def test_fixed_step_matches_diffrax(name, solver):
    """The named methods against diffrax's hand-written ones (not only its tableau loop)."""
    x0 = jnp.array([0.5, 1.0, 2.0])
    ours = on.odeint(riccati, x0, 0.0, 1.5, 17, integrator=name).x
    theirs = _diffrax_solve(solver, riccati, x0, 1.5, 17, None)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["backward_euler", "trapezoid"])
def test_implicit_matches_diffrax(name):
    solver = {"backward_euler": diffrax.ImplicitEuler, "trapezoid": diffrax.Kvaerno3}[name]
    if name == "trapezoid":  # diffrax has no trapezoid rule: compare with the closed form
        ours = on.odeint(linear, X0, 0.0, 1.0, 10, integrator=name, args=A).x
        h, eye = 0.1, jnp.eye(2)
        step = jnp.linalg.solve(eye - h / 2 * A, eye + h / 2 * A)
        np.testing.assert_allclose(ours, jnp.linalg.matrix_power(step, 10) @ X0, rtol=1e-10)
        return
    import optimistix as optx

    x0 = jnp.array([0.5, 1.0, 2.0])
    ours = on.odeint(riccati, x0, 0.0, 1.5, 17, integrator=name).x
    tight = solver(root_finder=optx.Newton(rtol=1e-12, atol=1e-12))
    theirs = _diffrax_solve(tight, riccati, x0, 1.5, 17, None)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_matches_diffrax(name):
    """Each adaptive integrator at its defaults is diffrax's solve with diffrax's default (I) controller."""
    integ = on.integrator(name, rtol=1e-6, atol=1e-8)
    x0 = jnp.array([0.5, 1.0, 2.0])
    sol = on.odeint(riccati, x0, 0.0, 3.0, integrator=integ)
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(riccati), integ.diffrax_solver(), 0.0, 3.0, None, x0,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
    )
    np.testing.assert_allclose(sol.x, ref.ys[-1], rtol=1e-13)
    assert int(sol.stats["steps"]) == int(ref.stats["num_accepted_steps"])
    assert int(sol.stats["rejected"]) == int(ref.stats["num_rejected_steps"])
    np.testing.assert_allclose(sol.x, riccati_exact(3.0, x0), rtol=1e-5)


def _count_calls(f):
    calls = [0]

    def counted(t, x, args):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return f(t, x, args)

    return counted, calls


def test_nfe_rk4_20_steps_is_80():
    f, calls = _count_calls(linear)
    sol = jax.jit(lambda x: on.odeint(f, x, 0.0, 1.0, 20, integrator=on.RK4(), args=A))(X0)
    jax.block_until_ready(sol.x)
    assert sol.stats["nfe"] == 80 and calls[0] == 80
    assert sol.stats["steps"] == 20 and sol.stats["rejected"] == 0


@pytest.mark.parametrize("name", [n for n in FIXED if not on.integrator.get(n).dynamic_nfe])
@pytest.mark.parametrize("per_step", [False, True])
def test_nfe_fixed_matches_count(name, per_step):
    f, calls = _count_calls(linear)
    args = on.PerStep(jnp.stack([A] * 12)) if per_step else A
    sol = jax.jit(lambda x: on.odeint(f, x, 0.0, 1.0, 12, integrator=name, args=args))(X0)
    jax.block_until_ready(sol.x)
    assert int(sol.stats["nfe"]) == calls[0]


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
@pytest.mark.parametrize("rtol", [1e-3, 1e-7])
def test_nfe_adaptive_matches_count(name, rtol):
    def vdp(t, x, mu):
        return jnp.stack([x[1], mu * (1 - x[0] ** 2) * x[1] - x[0]])

    f, calls = _count_calls(vdp)
    integ = on.integrator(name, rtol=rtol, atol=rtol)
    sol = jax.jit(lambda x: on.odeint(f, x, 0.0, 10.0, integrator=integ, args=2.0))(jnp.array([2.0, 0.0]))
    jax.block_until_ready(sol.x)
    assert int(sol.stats["rejected"]) > 0  # the count covers rejected attempts too
    assert int(sol.stats["nfe"]) == calls[0]


def test_kvaerno5_nfe_is_reported_unknown():
    sol = on.odeint(riccati, jnp.array([1.0]), 0.0, 1.0, integrator="kvaerno5")
    assert sol.stats["nfe"] is None and int(sol.stats["steps"]) > 0


def test_stiffness_backward_euler_decays_euler_blows_up():
    """x' = -1000 x, h = 0.1: |1 - 1000 h| = 99 per Euler step, 1 / (1 + 1000 h) = 1/101 per BE step."""
    f = lambda t, x, a: -1000.0 * x
    x0 = jnp.ones(1)
    euler = float(on.odeint(f, x0, 0.0, 1.0, 10, integrator="euler").x[0])
    be = float(on.odeint(f, x0, 0.0, 1.0, 10, integrator="backward_euler").x[0])
    trap = float(on.odeint(f, x0, 0.0, 1.0, 10, integrator="trapezoid").x[0])
    assert abs(euler) == pytest.approx(99.0**10, rel=1e-12)  # ~9.0e19: unstable
    assert be == pytest.approx(101.0**-10, rel=1e-9)  # ~9.1e-21: decays
    assert abs(trap) == pytest.approx((49 / 51) ** 10, rel=1e-9)  # A-stable, |R| < 1


def test_reversible_heun_inverse_reconstructs():
    integ = on.ReversibleHeun()
    fq = lambda t, x, a: (riccati(t, x, a), ())
    state = integ.init(fq, 0.1, jnp.array([0.5, 1.0]), None)
    state = integ.advance(fq, 0.1, 0.05, state, None)[0]
    nxt, _ = integ.advance(fq, 0.15, 0.05, state, None)
    back = integ.inverse(fq, 0.15, 0.05, nxt, None)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_resnet_identity_float32():
    """PerStep + Euler + h = 1 is exactly the residual loop x_{k+1} = x_k + f(k, x_k, theta_k)."""
    from problems import mlp_field, mlp_params

    n = 12
    params = jax.tree.map(lambda p: p.astype(jnp.float32), mlp_params(jax.random.key(0), 8, 16, leading=(n,)))
    x0 = jax.random.normal(jax.random.key(1), (4, 8), jnp.float32)
    sol = on.odeint(mlp_field, x0, 0, n, n, integrator=on.Euler(), args=on.PerStep(params), save="all")
    x, xs = x0, [x0]
    for k in range(n):
        x = x + mlp_field(jnp.float32(k), x, jax.tree.map(lambda p: p[k], params))
        xs.append(x)
    assert sol.x.dtype == jnp.float32
    np.testing.assert_allclose(sol.x, x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sol.xs, jnp.stack(xs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FIXED + ADAPTIVE)
def test_save_all_grid(name):
    integ = on.integrator(name, rtol=1e-7, atol=1e-9) if name in ADAPTIVE else on.integrator(name)
    sol = on.odeint(linear, X0, 0.0, 1.0, 10, integrator=integ, args=A, save="all")
    assert sol.xs.shape == (11, 2)
    np.testing.assert_allclose(sol.xs[0], X0)
    np.testing.assert_allclose(sol.xs[-1], sol.x, rtol=1e-12)
    tol = 1e-5 if integ.adaptive else 0.1**integ.order  # ~ h^order: the global error scale
    for k in (3, 7):  # every saved state is the state at t_k = k h
        np.testing.assert_allclose(sol.xs[k], linear_exact(k / 10), atol=tol)


@pytest.mark.parametrize("name", FIXED + ADAPTIVE)
def test_every_integrator_is_final_and_named_by_the_registry(name):
    cls = on.integrator.get(name)
    assert is_final(cls) and cls.name == name
    assert cls.adaptive == (name in ADAPTIVE) and cls.adaptive != issubclass(cls, FixedStepIntegrator)
    with pytest.raises(TypeError, match="final"):
        type("Sub", (cls,), {})


def test_integrator_bases_are_abstract():
    for base in (on.Integrator, FixedStepIntegrator, ExplicitRK, on.integrators.ThetaMethod,
                 on.integrators.ReversibleIntegrator, on.integrators.AdaptiveIntegrator):
        with pytest.raises(TypeError, match="abstract"):
            base()
