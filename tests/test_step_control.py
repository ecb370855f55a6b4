"""Step-size control of the adaptive integrators: the PID controller's fields reach diffrax, every
method defaults to diffrax's I controller, Kvaerno5's opt-in PI controller does what
experiments/step_control.py measured, bad values are refused."""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ADAPTIVE
from problems import riccati

import odenets as on
from odenets import cli as odenets_cli
from odenets.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("strict_promotion")

KNOBS = dict(pcoeff=0.25, icoeff=0.5, dcoeff=0.05, dtmax=0.1, factormin=0.3, factormax=5.0, safety=0.8)
DIFFRAX_DEFAULTS = dict(pcoeff=0.0, icoeff=1.0, dcoeff=0.0)  # diffrax.PIDController's I controller


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if on.integrator.get(n).nfe_per_attempt
                                  is None else n for n in ADAPTIVE])  # implicit: compiles for seconds
def test_controller_fields_reach_diffrax(name):
    """Same steps and the same result as diffrax with the same PIDController (the explicit pairs
    take about 20 steps on this problem without dtmax)."""
    integ = on.integrator(name, rtol=1e-6, atol=1e-8, **KNOBS)
    x0 = jnp.array([0.5, 1.0, 2.0])
    sol = on.odeint(riccati, x0, 0.0, 3.0, integrator=integ)
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(riccati), integ.diffrax_solver(), 0.0, 3.0, None, x0,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8, **KNOBS),
    )
    np.testing.assert_allclose(sol.x, ref.ys[-1], rtol=1e-12, atol=0)
    assert int(sol.stats["steps"]) == int(ref.stats["num_accepted_steps"]) >= 30  # dtmax=0.1 over [0, 3]
    assert int(sol.stats["rejected"]) == int(ref.stats["num_rejected_steps"])


def test_dtmin_forced_and_refused():
    """force_dtmin=True accepts steps of size dtmin whatever their error (as diffrax does);
    force_dtmin=False turns a needed step below dtmin into an error naming dtmin, under jit too."""
    stiff = lambda t, x, a: -50.0 * (x - jnp.cos(t))
    exact = (2500 * np.cos(1.0) + 50 * np.sin(1.0) + np.exp(-50.0)) / 2501  # x(1), x(0) = 1
    forced = on.Dopri5(rtol=1e-8, atol=1e-8, dtmin=0.05)
    sol = on.odeint(stiff, jnp.ones(2), 0.0, 1.0, integrator=forced)
    # 20 steps of 0.05 (85 without dtmin), the first attempt's guess aside: 1e-8 is not met
    assert int(sol.stats["steps"]) == 20 and int(sol.stats["rejected"]) <= 1
    assert np.max(np.abs(sol.x - exact)) > 1e-6
    refused = dataclasses.replace(forced, force_dtmin=False)
    message = r"needed a step below dtmin=0\.05 to meet rtol=1e-08, atol=1e-08 \(force_dtmin=False"
    with pytest.raises(Exception, match=message):  # at run time (the eager path shares the message)
        jax.block_until_ready(jax.jit(lambda x: on.odeint(stiff, x, 0.0, 1.0, integrator=refused).x)(jnp.ones(2)))


def robertson(t, y, args):
    a, b, c = y[0], y[1], y[2]
    fast, slow = 1e4 * b * c, 3e7 * b**2
    return jnp.stack([-0.04 * a + fast, 0.04 * a - fast - slow, slow])


# Robertson at t = 1: Kvaerno5 at rtol = 1e-12, atol = 1e-14 (y1 + y2 + y3 = 1 to 1e-15)
ROBERTSON_1 = np.array([9.664597373330071e-01, 3.074626578544086e-05, 3.350951640120700e-02])


@pytest.mark.parametrize("name", ADAPTIVE)
def test_every_adaptive_integrator_defaults_to_diffrax_i_controller(name):
    """With only tolerances given, controller() is diffrax.PIDController's own default (the I
    controller pcoeff=0, icoeff=1, dcoeff=0, no dt bounds), for the forward and the adjoint solve."""
    ours, theirs = on.integrator(name, rtol=1e-4, atol=1e-8).controller(), diffrax.PIDController(rtol=1e-4,
                                                                                                atol=1e-8)
    fields = ("rtol", "atol", *DIFFRAX_DEFAULTS, "dtmin", "dtmax", "force_dtmin", "factormin", "factormax",
              "safety")
    assert {k: getattr(ours, k) for k in fields} == {k: getattr(theirs, k) for k in fields}


@pytest.mark.slow  # two Kvaerno5 compiles
def test_kvaerno5_pi_controller_rejects_fewer_steps_than_its_default_on_robertson():
    """Robertson on [0, 1], rtol=1e-4, atol=1e-8 (experiments/step_control.py): Kvaerno5's default,
    diffrax's I controller, rejects about half of its attempts (39 of 76); the opt-in PI controller
    (0.3, 0.3, 0) 11 of 48, at no loss of accuracy."""
    y0 = jnp.array([1.0, 0.0, 0.0])
    scale = lambda x: np.max(np.abs(np.asarray(x) - ROBERTSON_1) / (1e-8 + 1e-4 * ROBERTSON_1))
    runs = {}
    for label, integ in (("pi", on.Kvaerno5(rtol=1e-4, atol=1e-8, pcoeff=0.3, icoeff=0.3)),
                         ("default", on.Kvaerno5(rtol=1e-4, atol=1e-8))):
        sol = on.odeint(robertson, y0, 0.0, 1.0, integrator=integ)
        runs[label] = int(sol.stats["steps"]), int(sol.stats["rejected"]), scale(sol.x)
    (acc_i, rej_i, err_i), (acc, rej, err) = runs["default"], runs["pi"]
    assert rej_i >= 0.45 * (acc_i + rej_i) and rej <= 0.3 * (acc + rej), runs
    assert 3 * rej <= rej_i and acc + rej < acc_i + rej_i, runs
    assert err <= max(err_i, 1.0), runs  # within tolerance, and no worse than the I controller


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(pcoeff=float("nan")), r"pcoeff must be a finite number in \(-inf, inf\), got pcoeff=nan"),
        (dict(icoeff=0.0), r"icoeff must be a finite number in \(0\.0, inf\), got icoeff=0\.0"),
        (dict(dcoeff=True), r"dcoeff must be a finite number .*, got dcoeff=True"),
        (dict(dtmin=0.0), r"dtmin must be a finite number in \(0\.0, inf\), got dtmin=0\.0"),
        (dict(dtmax=-1), r"dtmax must be a finite number in \(0\.0, inf\), got dtmax=-1"),
        (dict(dtmin=0.5, dtmax=0.1), r"dtmin must be <= dtmax, got dtmin=0\.5 and dtmax=0\.1"),
        (dict(force_dtmin="yes"), r"force_dtmin must be True or False, got force_dtmin='yes'"),
        (dict(factormin=1.5), r"factormin must be a finite number in \(0\.0, 1\.0\], got factormin=1\.5"),
        (dict(factormax=0.5), r"factormax must be a finite number in \[1\.0, inf\), got factormax=0\.5"),
        (dict(safety=0.0), r"safety must be a finite number in \(0\.0, 1\.0\], got safety=0\.0"),
        (dict(safety="0.9"), r"safety must be a finite number in \(0\.0, 1\.0\], got safety='0\.9'"),
    ],
)
def test_bad_controller_values_are_refused(options, message):
    for name in ADAPTIVE:
        with pytest.raises(ValueError, match=message):
            on.integrator(name, **options)


def test_controller_fields_are_config_options():
    """`integrator.pcoeff=0.3` on the command line reaches the integrator; a bad one names its key."""
    cfg = odenets_cli.compose(["model=node", "integrator=kvaerno5", "integrator.pcoeff=0.3",
                               "integrator.icoeff=0.45", "integrator.dtmax=0.5"])
    integ = RunConfig.parse(cfg).integrator
    assert (integ.pcoeff, integ.icoeff, integ.dtmax, integ.dtmin) == (0.3, 0.45, 0.5, None)
    assert integ.controller().icoeff == 0.45
    cfg = odenets_cli.compose(["model=node", "integrator=dopri5", "integrator.icoeff=-1"])
    message = (r"integrator config \(integrator\.\*\): icoeff must be a finite number in \(0\.0, inf\), "
               r"got icoeff=-1$")
    with pytest.raises(ValueError, match=message):
        RunConfig.parse(cfg)
