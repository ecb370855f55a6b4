"""The benchmarks' MLP problem and its four fixed-step solvers: (params, x0) -> x(t1).

    field(t, x, p) = tanh(x W1 + b1) W2 + b2, float32, t in [0, 1]; loss = mean(x(1) ** 2)

    odenets            on.odeint(..., integrator, gradient) (RK4 and Backprop by default)
    hand-written scan  lax.scan over classic RK4 stages, plain JAX autodiff (the limit)
    diffrax default    classic RK4 tableau (or `solver`), dt0 = 1/steps, diffrax's defaults
    diffrax tuned      StepTo on the same grid, RecursiveCheckpointAdjoint(checkpoints=steps),
                       max_steps=steps

Used by sizes.py (cases 1 and 5) and memory.py (case 3); `value_and_grad(solve)` is what they time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402, F401  (sets EQX_ON_ERROR before equinox is imported)
import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import odenets as on  # noqa: E402


# -- the problem ------------------------------------------------------------------------------
def field(t, x, p):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def make_problem(batch, width, hidden, seed=0):
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(seed), 5)
    params = {
        "W1": jax.random.normal(k1, (width, hidden), jnp.float32) / np.sqrt(width),
        "b1": 0.1 * jax.random.normal(k2, (hidden,), jnp.float32),
        "W2": jax.random.normal(k3, (hidden, width), jnp.float32) / np.sqrt(hidden),
        "b2": 0.1 * jax.random.normal(k4, (width,), jnp.float32),
    }
    x0 = jax.random.normal(k5, (batch, width), jnp.float32)
    return params, x0


# -- the four solvers: (params, x0) -> x(t1) ----------------------------------------------------
def odenets_solve(steps, integrator=None, gradient=None):
    integrator = integrator or on.RK4()
    gradient = gradient or on.Backprop()

    def solve(params, x0):
        return on.odeint(field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient,
                         args=params, save="final").x

    return solve


def scan_solve(steps):
    def solve(params, x0):
        h = 1.0 / steps

        def body(x, t):
            k1 = field(t, x, params)
            k2 = field(t + h / 2, x + (h / 2) * k1, params)
            k3 = field(t + h / 2, x + (h / 2) * k2, params)
            k4 = field(t + h, x + h * k3, params)
            return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), None

        ts = h * jnp.arange(steps, dtype=x0.dtype)
        x, _ = jax.lax.scan(body, x0, ts)
        return x

    return solve


class ClassicRK4(diffrax.AbstractERK):
    """Classic RK4 (1/6, 1/3, 1/3, 1/6) for diffrax; no embedded error estimate (fixed steps)."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        c=np.array([0.5, 0.5, 1.0]),
    )

    @staticmethod
    def interpolation_cls(t0, t1, y0, y1, k):
        # linear dense output between step ends (only SaveAt(t1=True) is used here); the
        # stage values k that Runge-Kutta solvers pass along are not needed for it
        del k
        return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)

    def order(self, terms):
        del terms
        return 4


def diffrax_default_solve(steps, solver=None, *, adjoint=None, max_steps=4096):
    """diffrax with dt0 = 1/steps and its default settings (adjoint RecursiveCheckpointAdjoint(),
    max_steps 4096) unless given; `solver` defaults to the classic RK4 tableau above."""
    solver = solver or ClassicRK4()
    adjoint = adjoint or diffrax.RecursiveCheckpointAdjoint()

    def solve(params, x0):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), solver, 0.0, 1.0, 1.0 / steps, x0,
                                  args=params, saveat=diffrax.SaveAt(t1=True), adjoint=adjoint,
                                  max_steps=max_steps)
        return sol.ys[0]

    return solve


def diffrax_tuned_solve(steps, solver=None):
    """diffrax tuned for fixed steps: StepTo, one checkpoint per step (EQX_ON_ERROR=nan is process-wide)."""
    solver = solver or ClassicRK4()

    def solve(params, x0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, 1.0, None, x0, args=params,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.StepTo(ts=jnp.linspace(0.0, 1.0, steps + 1)),
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=steps),
            max_steps=steps,
        )
        return sol.ys[0]

    return solve


def value_and_grad(solve):
    """jit(value_and_grad) of loss = mean(x(t1)^2) with respect to (params, x0)."""

    def loss(params, x0):
        return jnp.mean(solve(params, x0) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
