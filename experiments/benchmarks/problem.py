"""The benchmarks' problems and the peers that solve them, (params, x0) -> x(t1). MLP problem (cases 1, 3, 5;
a field per layer in case 4): f(t, x; p) = tanh(x W1 + b1) W2 + b2, float32, t in [0, 1], loss = mean(x(1)^2),
solved by odenets, a hand-written lax.scan (the limit) and diffrax. Adaptive problem (case 2), diffrax's
small_neural_ode benchmark: f(t, x) = tanh(softplus(x W1 + b1) W2 + b2), eqx.nn.MLP(4 -> 32 -> 4), PRNGKey(0)."""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import odenets as on


def field(t, x, p):
    """The MLP vector field tanh(x W1 + b1) W2 + b2."""
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def make_problem(batch: int, width: int, hidden: int, seed: int = 0, depth: int | None = None):
    """(params, x0); with `depth`, params stacked along a leading layer axis (one field per layer)."""
    keys, lead = jax.random.split(jax.random.key(seed), 5), () if depth is None else (depth,)
    normal = lambda i, *shape: jax.random.normal(keys[i], (*lead, *shape), jnp.float32)
    params = {"W1": normal(0, width, hidden) / np.sqrt(width), "b1": 0.1 * normal(1, hidden),
              "W2": normal(2, hidden, width) / np.sqrt(hidden), "b2": 0.1 * normal(3, width)}
    return params, jax.random.normal(keys[4], (batch, width), jnp.float32)


def odenets_solve(steps: int, integrator=None, gradient=None):
    integrator, gradient = integrator or on.RK4(), gradient or on.Backprop()

    def solve(params, x0):
        return on.odeint(field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient, args=params).x

    return solve


def scan_solve(steps: int, integrator: str = "rk4"):
    """Classic RK4 or Euler as a hand-written lax.scan."""
    h = 1.0 / steps

    def solve(params, x0):
        def body(x, t):
            k1 = field(t, x, params)
            if integrator == "euler":
                return x + h * k1, None
            k2 = field(t + h / 2, x + (h / 2) * k1, params)
            k3 = field(t + h / 2, x + (h / 2) * k2, params)
            k4 = field(t + h, x + h * k3, params)
            return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), None

        return jax.lax.scan(body, x0, h * jnp.arange(steps, dtype=x0.dtype))[0]

    return solve


class ClassicRK4(diffrax.AbstractERK):
    """Classic RK4 (1/6, 1/3, 1/3, 1/6) for diffrax, with no embedded error estimate (fixed steps)."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]), b_error=np.zeros(4), c=np.array([0.5, 0.5, 1.0]))

    @staticmethod
    def interpolation_cls(t0, t1, y0, y1, k):
        del k  # linear dense output between step ends: only SaveAt(t1=True) is used
        return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)

    def order(self, terms):
        return 4


def diffrax_solve(steps: int, integrator: str = "rk4", *, tuned=False, adjoint=None, max_steps: int = 4096):
    """diffrax: dt0 = 1/steps and defaults, or tuned: StepTo on the grid, one checkpoint per step."""
    solver = ClassicRK4() if integrator == "rk4" else diffrax.Euler()
    opts = dict(stepsize_controller=diffrax.StepTo(ts=jnp.linspace(0.0, 1.0, steps + 1)), max_steps=steps,
                adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=steps)) if tuned else dict(
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(), max_steps=max_steps)
    return lambda params, x0: diffrax.diffeqsolve(diffrax.ODETerm(field), solver, 0.0, 1.0,
                                                  None if tuned else 1 / steps,
                                                  x0, args=params, saveat=diffrax.SaveAt(t1=True), **opts).ys[0]


def value_and_grad(solve):
    """jit(value_and_grad) of loss = mean(x(t1)^2) with respect to (params, x0)."""
    return jax.jit(jax.value_and_grad(lambda p, x0: jnp.mean(solve(p, x0) ** 2), argnums=(0, 1)))


def adaptive_problem(batch: int):
    """diffrax's benchmark MLP (key 0) as x @ W + b parameters, and x0 = normal(key 1, (batch, 4))."""
    mlp = eqx.nn.MLP(in_size=4, out_size=4, width_size=32, depth=1, activation=jax.nn.softplus,
                     final_activation=jnp.tanh, key=jax.random.PRNGKey(0))
    first, last = mlp.layers
    params = {"W1": first.weight.T, "b1": first.bias, "W2": last.weight.T, "b2": last.bias}
    return params, jax.random.normal(jax.random.PRNGKey(1), (batch, 4), jnp.float32)


def adaptive_field(t, x, p):
    return jnp.tanh(jax.nn.softplus(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])


def save_npz(path, params, x0, **extra) -> None:
    """The problem for a torch worker: W1, b1, W2, b2 (x @ W + b layout), x0, float32."""
    np.savez(path, x0=np.asarray(x0), **{k: np.asarray(v) for k, v in params.items()}, **extra)
