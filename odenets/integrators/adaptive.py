"""Adaptive-step integrators, solved by diffrax with a PID step-size controller.

These choose their own steps (the `steps` argument of `odeint` only sets the grid of
`save="all"`). Each gradient strategy maps onto the diffrax adjoint that plays its role
(`ADJOINTS`; Adjoint's backward solve is written out in `backsolve`, to check its drift);
diffrax sees complex states as (real, imaginary) pairs. Their gradients are of first order:
differentiating Adjoint's backward pass again is refused by name; Backprop and Checkpoint leave
the loop to diffrax, whose second derivative ends in JAX's while-loop error (documented).

NFE is derived from diffrax's step counts: Dopri5 and Tsit5 are FSAL methods with 6 new
evaluations per attempted step (accepted or rejected) plus 1 at t0; the test suite checks
this against a count of actual calls. Kvaerno5 is implicit (ESDIRK): the Newton iterations
inside its stages are not reported by diffrax, so its "nfe" is None (unknown), never a guess.
"nfe_backward" is None (the backward pass has not run when the forward one returns); the count
is read at run time through a probe (`count_backward`): gradient 'adjoint' counts 1 + 6 x attempted
steps of each backward solve (`backsolve`), the others differentiate diffrax's loop (-1: unknown).

Gradients with respect to t0 and t1 are those of the exact flow: diffrax solves between
fixed times, and `at_time` gives each end (and each saved state) its time derivative,
dx(t_k)/dt_k = f(t_k, x(t_k)) and dx(t)/dt0 = -(dx(t)/dx0) f(t0, x0).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from odenets import validate
from odenets._abstract import final
from odenets.integrators.base import (
    REGISTRY,
    Integrator,
    blowup_message,
    concrete,
    count_backward,
    real_view,
    register,
)

# Step states stored by reverse mode through the discrete steps (diffrax's RecursiveCheckpointAdjoint: equinox's
# checkpointed while loop, which stores the loop state at chosen steps and re-runs one step at a time under
# jax.vjp on the way back). XLA allocates every buffer at compile time, so the store is sized by this count, not
# by the steps a solve takes: checkpoints=max_steps (4096) preallocated 4096 solver states, 539 MB and 313 ms
# for a 4-step solve + gradient of the MLP Neural ODE (batch 256, width 64, hidden 256) where 16 take 4.4 MB and
# 29 ms, and 2.4 GB (80x the Euler ODE-Net's) when training the MNIST-1D ODE-Net. Neither a count of the steps
# made by a first, gradient-free pass (a lax.switch over stores of 16 ... 4096 states: XLA keeps the residuals of
# every branch, 717 MB) nor DirectAdjoint (92.6 MB, 334 ms) is smaller. README "Gradients through adaptive
# solves" has the measurements.
BACKPROP_CHECKPOINTS = 32  # nothing recomputed up to 32 steps; past them each step at most once more up to 561
CHECKPOINT_CHECKPOINTS = 8  # memory of 8 states whatever the step count; <= 1 recomputation per step up to 45

# gradient strategy name -> the diffrax adjoint that plays its role
ADJOINTS = {
    # reverse mode through the discrete steps, a stored state per step for the first BACKPROP_CHECKPOINTS steps
    "backprop": lambda integ: diffrax.RecursiveCheckpointAdjoint(
        checkpoints=min(integ.max_steps, BACKPROP_CHECKPOINTS)),
    # the same loop with fewer stored states: online (Stumm-Walther) checkpointing recomputes the rest
    "checkpoint": lambda integ: diffrax.RecursiveCheckpointAdjoint(
        checkpoints=min(integ.max_steps, CHECKPOINT_CHECKPOINTS)),
    # the continuous adjoint, solved backwards
    "adjoint": lambda integ: diffrax.BacksolveAdjoint(),
}


@dataclasses.dataclass(frozen=True)
class AdaptiveIntegrator(Integrator):
    """A diffrax-backed adaptive solver: tolerances, a step budget and a PID step-size controller.

    A step of size h_n is accepted when its local error estimate, in units of the tolerance,
    r_n = RMS_i(err_i / (atol + rtol max(|x_i(t_n)|, |x_i(t_n + h_n)|))), is below 1. Accepted or
    not, the next attempt has size (diffrax.PIDController, Soderlind's digital filter)

        h_(n+1) = h_n * clip(safety * r_n^-(pcoeff + icoeff + dcoeff)/k * r_(n-1)^((pcoeff + 2 dcoeff)/k)
                                    * r_(n-2)^(-dcoeff/k), lo, hi)

    with k the error order of the embedded pair (5 here), [lo, hi] = [1, factormax] after an
    accepted step and [factormin, safety] after a rejected one, then clipped to [dtmin, dtmax].
    icoeff is the integral gain (alone: the classic I controller, h ~ r_n^(-1/k)) and must be
    > 0 for the error to settle at the tolerance; pcoeff and dcoeff weigh the change in the error
    (Soderlind's filters use negative pcoeff). A PI controller (pcoeff 0.2-0.4, icoeff 0.3-0.4)
    grows steps less eagerly: fewer rejected steps where the error estimate is not smooth
    (stiff problems, Newton failures of implicit stages). dtmin/dtmax bound |h| (None: no bound);
    with force_dtmin=True (diffrax's default) a step at dtmin is accepted whatever its error, with
    False a needed step below dtmin is an error. Every method defaults to diffrax's I controller;
    its class says where a PI controller measured better (experiments/step_control.py). The same
    controller drives both solves of gradient 'adjoint': the forward one and the backward solve of
    the adjoint system (whose failures, max_steps or dtmin, are errors too).
    """

    adaptive: ClassVar[bool] = True
    nfe_start: ClassVar[int] = 1  # f(t0, y0), reused by the initial step-size selection
    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 4096
    # step-size control (diffrax.PIDController; see the class docstring): a subclass may set its own defaults
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    dtmin: float | None = None
    dtmax: float | None = None
    force_dtmin: bool = True
    factormin: float = 0.2
    factormax: float = 10.0
    safety: float = 0.9

    if TYPE_CHECKING:  # a class attribute on concrete integrators; the abstract property keeps this class abstract
        nfe_per_attempt: ClassVar[int | None]
    else:

        @property
        @abc.abstractmethod
        def nfe_per_attempt(self) -> int | None:
            """New evaluations per attempted step; None where diffrax does not report them."""

    @abc.abstractmethod
    def diffrax_solver(self) -> diffrax.AbstractSolver:
        """The diffrax solver this integrator runs."""

    def __post_init__(self):
        for key in ("rtol", "atol"):
            object.__setattr__(self, key, validate.number(key, getattr(self, key), low=0.0))
        object.__setattr__(self, "max_steps", validate.integer("max_steps", self.max_steps, low=1))
        self._check_controller()

    def _check_controller(self):
        """The step-size controller's fields, each refused by name outside its valid range."""
        checked = {
            "pcoeff": validate.number("pcoeff", self.pcoeff),
            "icoeff": validate.number("icoeff", self.icoeff, low=0.0),  # > 0: the error is driven to tolerance
            "dcoeff": validate.number("dcoeff", self.dcoeff),
            "dtmin": validate.optional(validate.number, "dtmin", self.dtmin, low=0.0),
            "dtmax": validate.optional(validate.number, "dtmax", self.dtmax, low=0.0),
            "force_dtmin": validate.boolean("force_dtmin", self.force_dtmin),
            "factormin": validate.number("factormin", self.factormin, low=0.0, high=1.0, open_high=False),
            "factormax": validate.number("factormax", self.factormax, low=1.0, open_low=False),
            "safety": validate.number("safety", self.safety, low=0.0, high=1.0, open_high=False),
        }
        if checked["dtmin"] is not None and checked["dtmax"] is not None and checked["dtmin"] > checked["dtmax"]:
            raise ValueError(f"dtmin must be <= dtmax, got dtmin={self.dtmin!r} and dtmax={self.dtmax!r}")
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def controller(self) -> diffrax.PIDController:
        """The diffrax step-size controller of this integrator's solves (forward and backward)."""
        return diffrax.PIDController(
            rtol=self.rtol, atol=self.atol, pcoeff=self.pcoeff, icoeff=self.icoeff, dcoeff=self.dcoeff,
            dtmin=self.dtmin, dtmax=self.dtmax, force_dtmin=self.force_dtmin, factormin=self.factormin,
            factormax=self.factormax, safety=self.safety)

    def check(self, gradient, *, per_step, unroll):
        fixed = [n for n in REGISTRY.names() if not REGISTRY.get(n).adaptive]
        if per_step:
            raise ValueError(f"PerStep (per-step) arguments need a fixed-step integrator, got integrator "
                             f"{self.name!r}; valid choices: {', '.join(fixed)}")
        if unroll is True or unroll not in (False, 1):
            raise ValueError(f"unroll={unroll!r} applies to fixed-step integrators only; adaptive integrator "
                             f"{self.name!r} takes its own steps (valid choice for it: unroll=1)")
        if gradient.name not in ADJOINTS:
            raise ValueError(f"gradient {gradient.name!r} is not available for adaptive integrator "
                             f"{self.name!r}; valid choices for it: {', '.join(ADJOINTS)}")

    def nfe(self, num_steps):
        if self.nfe_per_attempt is None:
            return None
        return self.nfe_start + self.nfe_per_attempt * num_steps

    def solve(self, field, t0, t1, x0, args, gradient, *, steps, save_all, unroll, probe=None):
        ts = jnp.linspace(t0, t1, steps + 1) if save_all else None
        y0 = at_time(t0, x0, args, field=field, sign=-1)
        to_real, from_real = real_view(x0)

        def diffeqsolve(saveat, adjoint=ADJOINTS[gradient.name](self), y0_args=(to_real(y0), args), span=(t0, t1)):
            return diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, a: to_real(field(t, from_real(y), a))),
                self.diffrax_solver(),
                lax.stop_gradient(span[0]),
                lax.stop_gradient(span[1]),
                dt0=None,
                y0=y0_args[0],
                args=y0_args[1],
                saveat=saveat,
                stepsize_controller=self.controller(),
                adjoint=adjoint,
                max_steps=self.max_steps,
                throw=False,  # failures are raised below with odenets' own message
            )

        saving = lambda grid: diffrax.SaveAt(ts=lax.stop_gradient(grid)) if save_all else diffrax.SaveAt(t1=True)
        if gradient.name == "adjoint":  # the times go in as arguments: a closed-over tracer would leak
            term = lambda t, y, a: to_real(field(t, from_real(y), a))
            times = lax.stop_gradient(ts if save_all else jnp.stack([t0, t1]))
            solve = lambda y0_args, grid: _outputs(
                diffeqsolve(saving(grid), y0_args=y0_args, span=(grid[0], grid[-1])))
            run = backsolve(solve, lambda y, a, ta, tb: self._backward(term, y, a, ta, tb),
                            second_order_message(self, gradient))
            zero = jnp.zeros((), jnp.finfo(_real_dtype(y0)).dtype) if probe is None else probe
            sol_ys, result, num = run((to_real(y0), args, zero), times)
        else:  # diffrax differentiates its own loop (closures over traced values included): no count
            sol_ys, result, num = count_backward(_outputs(diffeqsolve(saving(ts))), probe, None)
        if concrete(result):
            if result != diffrax.RESULTS.successful:
                self._failed(diffeqsolve(diffrax.SaveAt(steps=True), diffrax.RecursiveCheckpointAdjoint()), x0)
            ys = from_real(sol_ys)
        else:
            ys = from_real(_raise_on_failure(self, result, sol_ys))
        if save_all:
            xs = jax.vmap(lambda t, y: at_time(t, y, args, field=field, sign=1))(ts, ys)
            x = jax.tree.map(lambda v: v[-1], xs)
        else:
            xs, x = None, at_time(t1, jax.tree.map(lambda v: v[-1], ys), args, field=field, sign=1)
        stats = {
            "nfe": self.nfe(num["num_steps"]),
            "nfe_backward": None,
            "steps": num["num_accepted_steps"],
            "rejected": num["num_rejected_steps"],
        }
        return x, xs, stats

    def _backward(self, term, y_a_g, args, t_from, t_to):
        """The adjoint system dx/dt = f, da/dt = -a^T df/dx, dg/dt = -a^T df/dtheta (theta: the
        inexact arrays of args), solved by diffrax from t_from back to t_to with this solver and
        its step-size controller (`controller()`); nothing is differentiated. Returns the state at
        t_to and the solve's evaluations, `nfe(num_steps)` (each a VJP of f; -1 where unknown)."""
        dargs, nargs = eqx.partition(args, eqx.is_inexact_array)

        def adjoint_field(t, state, d):
            x, a, _ = state
            fx, vjp = jax.vjp(lambda x_, d_: term(t, x_, eqx.combine(d_, nargs)), x, d)
            ax, ad = vjp(a)
            return fx, jax.tree.map(jnp.negative, ax), jax.tree.map(jnp.negative, ad)

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(adjoint_field), self.diffrax_solver(), t_from, t_to, dt0=None, y0=y_a_g, args=dargs,
            stepsize_controller=self.controller(), max_steps=self.max_steps,
            adjoint=diffrax.RecursiveCheckpointAdjoint(), throw=False)
        # a backward solve that stops short returns the state where it stopped: an error, not a gradient
        count = self.nfe(sol.stats["num_steps"])
        count = jnp.asarray(-1 if count is None else count, jnp.int32)
        return _raise_on_failure(self, sol.result, jax.tree.map(lambda v: v[-1], sol.ys),
                                 _backward_messages(self)), count

    def _failed(self, sol, x0):
        """Raise for a failed solve whose values are concrete, naming the time it reached: a state
        that grew without bound there is a blow-up; otherwise the step budget or stiffness."""
        reached = np.asarray(sol.ts)
        last = int(np.sum(np.isfinite(reached))) - 1
        t = float(reached[last]) if last >= 0 else float(sol.t0)
        size = max(float(np.max(np.abs(np.asarray(v[last])), initial=0.0)) for v in jax.tree.leaves(sol.ys))
        scale = max(float(np.max(np.abs(np.asarray(v)), initial=0.0)) for v in jax.tree.leaves(x0))
        which = int(_failure(sol.result))
        if which == BELOW_DTMIN:
            raise ValueError(_messages(self)[BELOW_DTMIN] + f" (at t={t:.6g})")
        if which == EXHAUSTED and math.isfinite(size) and size <= 1e6 * (1.0 + scale):
            raise ValueError(_messages(self)[EXHAUSTED] + f" (it reached t={t:.6g})")
        raise ValueError(blowup_message(self.name, f"near t={t:.6g} (max |x| = {size:.3g} there)"))


def _real_dtype(y):
    """The (real) dtype of the real view's leaves."""
    return jnp.result_type(jax.tree.leaves(y)[0])


def _outputs(sol):
    """What odenets reads from a diffrax solution: (ys, result, step counts)."""
    counts = ("num_steps", "num_accepted_steps", "num_rejected_steps")
    return sol.ys, sol.result, {k: sol.stats[k] for k in counts}


def second_order_message(integ: Integrator, gradient) -> str:
    fixed = [n for n in REGISTRY.names() if not REGISTRY.get(n).adaptive]
    return (f"second-order reverse mode (jax.grad of jax.grad, jax.jacrev of jax.jacrev, jax.hessian of a "
            f"gradient) through odeint with adaptive integrator {integ.name!r} and gradient {gradient.name!r} is "
            f"not supported: diffrax differentiates its adaptive step loop once. Use a fixed-step integrator "
            f"({', '.join(fixed)}) with any gradient, or finite differences of the first derivative")


@eqx.filter_custom_jvp
def _first_order_only(tree, *, message):
    """The identity, whose derivative is an error: placed on what a backward pass uses, it turns
    the differentiation of that pass (second-order reverse mode) into odenets' TypeError."""
    return tree


@_first_order_only.def_jvp
def _first_order_only_jvp(primals, tangents, *, message):
    raise TypeError(message)


def backsolve(solve, backward, message):
    """solve(vjp_arg = (y0, args, probe), times) differentiated by the continuous adjoint (diffrax's
    BacksolveAdjoint, written out so that its reconstruction of the states is seen). The cotangent
    of the real scalar probe is the number of evaluations the backward solves made, the sum of the
    counts `backward` returns (-1 if any is unknown; `count_backward`).

    The backward pass solves the adjoint system from each save time t_k back to t_(k-1)
    (`backward`), restarting x at the saved state x(t_(k-1)) and adding that state's cotangent
    to a, as BacksolveAdjoint does. The x it rebuilds at each t_(k-1), and finally at t0, is
    compared with the forward pass's (ReconstructionWarning when they differ by more than 1%):
    the check costs no extra solve. Differentiating the backward pass again raises `message`.
    """
    from odenets.gradients.adjoint import warn_on_drift  # the gradients package imports the integrators

    @eqx.filter_custom_vjp
    def run(vjp_arg, times):
        return solve(vjp_arg, times)

    @run.def_fwd
    def fwd(perturbed, vjp_arg, times):
        out = solve(vjp_arg, times)
        return out, out[0]

    @run.def_bwd
    def bwd(ys, ct, perturbed, vjp_arg, times):
        dynamic, static = eqx.partition(vjp_arg, eqx.is_array)  # functions, strings: no derivative to refuse
        ys, ct, dynamic = _first_order_only((ys, ct[0], dynamic), message=message)
        y0, args, probe = eqx.combine(dynamic, static)
        ct = jax.tree.map(lambda c, v: jnp.zeros_like(v) if c is None else c, ct, ys, is_leaf=lambda c: c is None)
        if len(times) != len(jax.tree.leaves(ys)[0]):  # save="final": x(t1) alone; x(t0) = y0 (no cotangent)
            ys = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), y0, ys)
            ct = jax.tree.map(lambda c: jnp.concatenate([jnp.zeros_like(c), c]), ct)

        def segment(carry, k):  # from times[k + 1] back to times[k]
            a, g, n = carry
            x = jax.tree.map(lambda v: v[k + 1], ys)
            a = jax.tree.map(lambda a_, c: a_ + c[k + 1], a, ct)
            (x, a, g), m = backward((x, a, g), args, times[k + 1], times[k])
            return (a, g, jnp.where((n < 0) | (m < 0), -1, n + m)), x

        g = jax.tree.map(jnp.zeros_like, eqx.filter(args, eqx.is_inexact_array))
        carry = (jax.tree.map(jnp.zeros_like, y0), g, jnp.zeros((), jnp.int32))
        (a, g, n), rebuilt = lax.scan(segment, carry, jnp.arange(len(times) - 1), reverse=True)
        warn_on_drift(rebuilt, jax.tree.map(lambda v: v[:-1], ys))
        return jax.tree.map(lambda a_, c: a_ + c[0], a, ct), g, n.astype(jnp.result_type(probe))

    return run


@eqx.filter_custom_jvp
def at_time(t, x, args, *, field, sign):
    """x itself, as the state of the flow of `field` at time t: its derivative with respect to t
    is sign * f(t, x, args) (sign = 1 for a state reached at t, -1 for the initial state at t0).

    f is evaluated only when t is differentiated.
    """
    return x


@at_time.def_jvp
def _at_time_jvp(primals, tangents, *, field, sign):
    t, x, args = primals
    dt, dx, _ = tangents
    if dt is None:
        return x, dx
    moved = jax.tree.map(lambda f: f * (sign * dt).astype(f.dtype), field(t, x, args))
    return x, moved if dx is None else jax.tree.map(jnp.add, dx, moved)


@final
@register("dopri5")
@dataclasses.dataclass(frozen=True)
class Dopri5(AdaptiveIntegrator):
    """Dormand-Prince 5(4), FSAL; the usual Neural ODE default.

    Its controller is diffrax's (and torchdiffeq's) I controller, pcoeff=0, icoeff=1: on smooth
    problems a PI controller costs as many f calls at equal error (0.90-1.05x, experiments/
    step_control.py) and more at the same tolerance. For a mildly stiff problem solved explicitly,
    pcoeff=0.4, icoeff=0.3 rejects a fifth as many steps (0.83x the f calls on Robertson).
    """

    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[int] = 6

    def diffrax_solver(self):
        return diffrax.Dopri5()


@final
@register("tsit5")
@dataclasses.dataclass(frozen=True)
class Tsit5(AdaptiveIntegrator):
    """Tsitouras 5(4), FSAL; diffrax's I controller, as Dopri5 (see there)."""

    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[int] = 6

    def diffrax_solver(self):
        return diffrax.Tsit5()


@final
@register("kvaerno5")
@dataclasses.dataclass(frozen=True)
class Kvaerno5(AdaptiveIntegrator):
    """Kvaerno 5(4), an L-stable ESDIRK method for stiff problems.

    Its default controller is diffrax's I controller (pcoeff=0, icoeff=1). pcoeff=0.3, icoeff=0.3 is
    the measured better choice for solving (experiments/step_control.py, 6 problems: Robertson, Van der
    Pol with mu = 1 and 1000, a tanh MLP field at two tolerances): diffrax's I controller (pcoeff=0,
    icoeff=1) rejects about half of Kvaerno5's attempted steps on every one of them; this PI
    controller rejects 0.26x as many, in 0.60x the f calls (geometric mean) at the same tolerances,
    and needs 0.47-0.95x the f calls of the I controller at equal error. It is not the default
    because Backprop gradients through it disagree more with central finite differences
    (experiments/demo.py: 4.6e-6 relative against 2.6e-8 with the I controller) and the adjoint
    system solved backwards with it (gradient 'adjoint' uses the forward's controller) exhausted
    max_steps in a test: opt in with Kvaerno5(pcoeff=0.3, icoeff=0.3) where only the solution matters.
    """

    order: ClassVar[int] = 5
    nfe_per_attempt: ClassVar[None] = None

    def diffrax_solver(self):
        return diffrax.Kvaerno5()


# the index of each failure's message in _messages and _backward_messages
EXHAUSTED, NON_FINITE, BELOW_DTMIN = 0, 1, 2


def _failure(result):
    """The index of a failed diffrax result's message (EXHAUSTED, NON_FINITE or BELOW_DTMIN)."""
    return jnp.where(result == diffrax.RESULTS.max_steps_reached, EXHAUSTED,
                     jnp.where(result == diffrax.RESULTS.dt_min_reached, BELOW_DTMIN, NON_FINITE))


def _messages(integ: AdaptiveIntegrator) -> list[str]:
    """odeint's message for each failure of the forward solve, at its index (EXHAUSTED, ...)."""
    hint = "loosen rtol/atol, or use an implicit integrator (kvaerno5) if the problem is stiff"
    return [
        f"odeint: adaptive integrator {integ.name!r} took max_steps={integ.max_steps} steps without "
        f"reaching t1; raise max_steps (e.g. {type(integ).__name__}(max_steps={4 * integ.max_steps})) or "
        f"{hint}; if the state grows without bound instead, the solution blows up before t1: check the "
        f"vector field",
        f"odeint: adaptive integrator {integ.name!r} failed: the state or f became non-finite (NaN/Inf) "
        f"or the step size underflowed; check the vector field for values that grow without bound, or {hint}",
        f"odeint: adaptive integrator {integ.name!r} needed a step below dtmin={integ.dtmin!r} to meet "
        f"rtol={integ.rtol!r}, atol={integ.atol!r} (force_dtmin=False refuses such steps); lower dtmin, loosen "
        f"the tolerances, or set force_dtmin=True to accept steps of size dtmin whatever their error",
    ]


def _backward_messages(integ: AdaptiveIntegrator) -> list[str]:
    """_messages for the adjoint system solved backwards by gradient 'adjoint' (same indices)."""
    where = (f"odeint: the backward (adjoint) solve of gradient 'adjoint' with adaptive integrator "
             f"{integ.name!r}")
    other = "or use gradient 'backprop' or 'checkpoint', which differentiate the forward steps"
    return [
        f"{where} took max_steps={integ.max_steps} steps without reaching t0, so it has no gradient; raise "
        f"max_steps (e.g. {type(integ).__name__}(max_steps={4 * integ.max_steps})), loosen rtol/atol, {other}",
        f"{where} failed: the adjoint state became non-finite (NaN/Inf) or the step size underflowed; {other}",
        f"{where} needed a step below dtmin={integ.dtmin!r}; lower dtmin, set force_dtmin=True, {other}",
    ]


def _raise_on_failure(integ: AdaptiveIntegrator, result, ys, messages: list[str] | None = None):
    """An unsuccessful adaptive solve is an error at run time (under jit), never a wrong answer."""
    failed = result != diffrax.RESULTS.successful
    leaf = eqx.branched_error_if(jax.tree.leaves(ys)[0], failed, _failure(result), messages or _messages(integ))
    leaves, tree = jax.tree.flatten(ys)
    return tree.unflatten([leaf, *leaves[1:]])
