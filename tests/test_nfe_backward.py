"""Backward NFE at run time: odeint's probe, the adaptive adjoint's count, and its train records."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odenets as on

W = 2 * np.array([[0.4, -1.1, 0.3], [0.9, 0.2, -0.5], [-0.3, 0.7, 0.1]])
X0 = np.array([[0.5, -0.4, 1.0], [-0.8, 0.3, 0.2]])
CALLS = [0]


def _bump(_):
    CALLS[0] += 1


def counted_field(t, x, w):
    """tanh(W x + 0.3 t), counting its real evaluations on the host (a VJP of it evaluates it once)."""
    jax.debug.callback(_bump, t)
    return jnp.tanh(x @ w.T + 0.3 * t)


def _calls(fn, *args):
    CALLS[0] = 0
    out = fn(*args)
    jax.effects_barrier()
    return out, CALLS[0]


CASES = [
    (on.Dopri5(rtol=1e-6, atol=1e-8), "adjoint", "final"),
    (on.Dopri5(rtol=1e-6, atol=1e-8), "adjoint", "all"),  # one backward solve per saved interval
    pytest.param(on.Tsit5(), "adjoint", "final", marks=pytest.mark.slow),  # the same count rule as Dopri5's
    (on.RK4(), "adjoint", "final"),  # known before the backward pass: the stats' count
    (on.RK4(), "backprop", "final"),
]


@pytest.mark.parametrize("integrator,gradient,save", CASES, ids=lambda v: getattr(v, "name", v))
def test_probe_gradient_counts_the_backward_evaluations(integrator, gradient, save):
    """d loss / d probe = the evaluations the backward pass really made (those of a gradient call
    minus those of the forward solve it repeats)."""
    options = dict(args=jnp.asarray(W), integrator=integrator, gradient=gradient, save=save)

    def loss(w, probe):
        sol = on.odeint(counted_field, jnp.asarray(X0), 0.0, 1.0, 5, probe=probe, **{**options, "args": w})
        return jnp.sum((sol.x if save == "final" else sol.xs) ** 2)

    sol, forward = _calls(lambda: on.odeint(counted_field, jnp.asarray(X0), 0.0, 1.0, 5, **options))
    (_, count), total = _calls(jax.grad(loss, argnums=(0, 1)), jnp.asarray(W), 0.0)
    assert int(count) == total - forward and (int(count) > 0) == (gradient == "adjoint")
    if sol.stats["nfe_backward"] is not None:
        assert int(count) == sol.stats["nfe_backward"]


def test_adjoint_count_is_that_of_diffrax_backward_solve():
    """The probe's count is 1 + 6 x the attempted steps diffrax takes on the adjoint system
    (x, a, g) from t1 back to t0 at the forward's tolerances."""
    integ = on.Dopri5(rtol=1e-6, atol=1e-8)
    field = lambda t, x, w: jnp.tanh(x @ w.T + 0.3 * t)
    w, x0 = jnp.asarray(W), jnp.asarray(X0)
    loss = lambda w, p: jnp.sum(on.odeint(field, x0, 0.0, 1.0, args=w, integrator=integ, gradient="adjoint",
                                          probe=p).x ** 2)
    count = int(jax.grad(loss, argnums=1)(w, 0.0))
    x1 = on.odeint(field, x0, 0.0, 1.0, args=w, integrator=integ).x

    def adjoint(t, s, w):
        x, a, _ = s
        fx, vjp = jax.vjp(lambda x_, w_: field(t, x_, w_), x, w)
        ax, aw = vjp(a)
        return fx, -ax, -aw

    back = diffrax.diffeqsolve(diffrax.ODETerm(adjoint), diffrax.Dopri5(), 1.0, 0.0, None, (x1, 2 * x1, 0 * w), w,
                               stepsize_controller=integ.controller(), max_steps=integ.max_steps)
    assert count == 1 + 6 * int(back.stats["num_steps"])


def test_unknown_counts_are_minus_one_and_a_bad_probe_is_refused():
    loss = lambda p: jnp.sum(on.odeint(counted_field, jnp.asarray(X0), args=jnp.asarray(W), integrator="dopri5",
                                       gradient="backprop", probe=p).x)
    assert float(jax.grad(loss)(0.0)) == -1.0  # diffrax differentiates its own loop: not counted
    with pytest.raises(ValueError, match=r"probe must be None or a real floating-point scalar, got shape \(2,\)"):
        on.odeint(counted_field, jnp.asarray(X0), args=jnp.asarray(W), probe=jnp.zeros(2))


def test_training_logs_the_backward_nfe_of_an_adaptive_adjoint(tmp_path):
    from test_train import tiny

    from odenets.train.loop import fit
    from odenets.train.metrics import read_metrics

    summary = fit(tiny(**{"optim.epochs": 1, "integrator": {"name": "dopri5"}, "gradient": {"name": "adjoint"},
                          "train.log_every": 1}), tmp_path / "run")
    train = [r for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
    # one block, one backward solve per step: 1 + 6 x its attempted steps
    assert all(r["nfe_backward"] > 1 and (r["nfe_backward"] - 1) % 6 == 0 for r in train)
    assert summary["nfe_backward"] == train[-1]["nfe_backward"]
