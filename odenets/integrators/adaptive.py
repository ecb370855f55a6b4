"""Adaptive-step integrators, solved by diffrax with a PID step-size controller.

These choose their own steps (the `steps` argument of `odeint` only sets the grid of
`save="all"`). Gradient strategies map onto diffrax adjoints (see `odenets.gradients`).

NFE is derived from diffrax's step counts: Dopri5 and Tsit5 are FSAL methods with 6 new
evaluations per attempted step (accepted or rejected) plus 1 at t0; the test suite checks
this against a count of actual calls. Kvaerno5 is implicit (ESDIRK): the Newton iterations
inside its stages are not reported by diffrax, so its "nfe" is None (unknown), never a guess.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from odenets.integrators.base import Integrator, register


@dataclasses.dataclass(frozen=True)
class AdaptiveIntegrator(Integrator):
    """Base of diffrax-backed adaptive solvers: tolerances and a step budget."""

    adaptive: ClassVar[bool] = True
    nfe_per_attempt: ClassVar[int | None]
    nfe_start: ClassVar[int] = 1  # f(t0, y0), reused by the initial step-size selection
    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 4096

    def __post_init__(self):
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={self.rtol}, atol={self.atol}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an int >= 1, got {self.max_steps!r}")

    def diffrax_solver(self) -> diffrax.AbstractSolver:
        raise NotImplementedError

    def controller(self) -> diffrax.PIDController:
        return diffrax.PIDController(rtol=self.rtol, atol=self.atol)

    def nfe(self, num_steps):
        if self.nfe_per_attempt is None:
            return None
        return self.nfe_start + self.nfe_per_attempt * num_steps


@register("dopri5")
@dataclasses.dataclass(frozen=True)
class Dopri5(AdaptiveIntegrator):
    """Dormand-Prince 5(4), FSAL; the usual Neural ODE default."""

    name: ClassVar[str] = "dopri5"
    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[int] = 6

    def diffrax_solver(self):
        return diffrax.Dopri5()


@register("tsit5")
@dataclasses.dataclass(frozen=True)
class Tsit5(AdaptiveIntegrator):
    """Tsitouras 5(4), FSAL."""

    name: ClassVar[str] = "tsit5"
    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[int] = 6

    def diffrax_solver(self):
        return diffrax.Tsit5()


@register("kvaerno5")
@dataclasses.dataclass(frozen=True)
class Kvaerno5(AdaptiveIntegrator):
    """Kvaerno 5(4), an L-stable ESDIRK method for stiff problems."""

    name: ClassVar[str] = "kvaerno5"
    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[int | None] = None

    def diffrax_solver(self):
        return diffrax.Kvaerno5()


def solve_adaptive(integ: AdaptiveIntegrator, f, t0, t1, y0, args, adjoint, save_ts=None):
    """Solve with diffrax; returns (final y, ys at `save_ts` or None, stats dict)."""
    saveat = diffrax.SaveAt(ts=save_ts) if save_ts is not None else diffrax.SaveAt(t1=True)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        integ.diffrax_solver(),
        t0,
        t1,
        dt0=None,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=integ.controller(),
        adjoint=adjoint,
        max_steps=integ.max_steps,
        throw=False,  # failures are raised below with odenets' own message
    )
    ys = _raise_on_failure(integ, sol.result, sol.ys)
    final = jax.tree.map(lambda y: y[-1], ys)
    stats = {
        "nfe": integ.nfe(sol.stats["num_steps"]),
        "steps": sol.stats["num_accepted_steps"],
        "rejected": sol.stats["num_rejected_steps"],
    }
    return final, (ys if save_ts is not None else None), stats


def _raise_on_failure(integ: AdaptiveIntegrator, result, ys):
    """An unsuccessful adaptive solve is an error at run time (under jit too), never a wrong answer."""
    hint = "loosen rtol/atol, or use an implicit integrator (kvaerno5) if the problem is stiff"
    failed = result != diffrax.RESULTS.successful
    exhausted = result == diffrax.RESULTS.max_steps_reached
    messages = [
        f"odeint: adaptive integrator {integ.name!r} took max_steps={integ.max_steps} steps without "
        f"reaching t1; raise max_steps (e.g. {type(integ).__name__}(max_steps={4 * integ.max_steps})) "
        f"or {hint}",
        f"odeint: adaptive integrator {integ.name!r} failed (step size underflow, non-finite values or a "
        f"failed Newton solve); check the vector field for NaN/Inf, {hint}",
    ]
    leaf = jax.tree.leaves(ys)[0]
    leaf = eqx.branched_error_if(leaf, failed, jnp.where(exhausted, 0, 1), messages)
    leaves, tree = jax.tree.flatten(ys)
    return tree.unflatten([leaf, *leaves[1:]])
