"""Jacobian spectra of h dF_k/dx at every step k along a forward trajectory.

For a solve x_{k+1} = step(x_k) of dx/dt = F_k(t, x) (F_k the field of step k: slice k of a
per-step stack, or the one shared field), the linearised step at x_k is governed by the
eigenvalues z = h lambda of h dF_k/dx(t_k, x_k). The states x_k come from `odeint`'s
save="all" (a model's ODE block solves with its own `solve`): no second forward pass.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from odenets.analysis._field import as_field
from odenets.analysis.spectra import jacobian_spectrum
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.integrators import Integrator
from odenets.models import Classifier, ODEBlock
from odenets.models.stages import AugmentedBlock
from odenets.perstep import PerStep
from odenets.solve import odeint


class StepSpectrum(NamedTuple):
    """Spectra along one solve of N steps.

    eigenvalues: (N, B, m) with batched inputs, else (N, m): z = h lambda of h dF_k/dx(t_k, x_k),
                 each row by decreasing modulus (m = n exact, k matrix-free).
    times:       (N,) t_k = t0 + k h.
    h:           the step (t1 - t0) / N (adaptive solves: the spacing of the save grid).
    states:      (N + 1, ...) the states x_0 .. x_N of the solve (save="all").
    integrator:  the solve's integrator (compare with its region: `fraction_inside`).
    """

    eigenvalues: np.ndarray
    times: np.ndarray
    h: float
    states: Any
    integrator: Integrator


def _spectra(f, sol, t0, t1, steps, integrator, args, **options) -> StepSpectrum:
    field, args = as_field(f, args)
    h = (float(t1) - float(t0)) / steps
    times = float(t0) + h * np.arange(steps)
    per_step = isinstance(args, PerStep)
    eigs = []
    for k in range(steps):
        a_k = jax.tree.map(lambda v, k=k: v[k], args.tree) if per_step else args
        eigs.append(jacobian_spectrum(field, sol.xs[k], times[k], a_k, h=h, **options))
    return StepSpectrum(np.stack(eigs), times, h, sol.xs, integrator)


@functools.singledispatch
def _ode_block(stage) -> tuple[ODEBlock, Any] | None:
    """(the ODE block inside a model stage, a function from the stage's input to the block's), or
    None for stages that are not ODE solves (plain, momentum, Hamiltonian and dense scans)."""
    return None


@_ode_block.register
def _(stage: ODEBlock):
    return stage, lambda x: x


@_ode_block.register
def _(stage: AugmentedBlock):
    return stage.block, lambda x: jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (stage.augment,), x.dtype)], -1)


def block_spectra(block: ODEBlock, x, **options) -> StepSpectrum:
    """`StepSpectrum` of one ODE block on input x (B, ...), along `block.solve(x, save="all")`."""
    f = PerStep(block.field) if block.params == "per_step" else block.field
    sol = block.solve(x, save="all")
    return _spectra(f, sol, block.t0, block.t1, block.steps, block.integrator, None, **options)


def ode_stages(model: Classifier, x):
    """(s, block, the block's input) for every ODE stage s of a classifier on input x (B, *input_shape),
    running the stages in between (and none after the last ODE stage). A model without ODE stages
    is refused before any compute."""
    found = [_ode_block(stage) for stage in model.stages]
    last = max((s for s, f in enumerate(found) if f is not None), default=None)
    if last is None:
        stages = ", ".join(type(stage).__name__ for stage in model.stages)
        raise ValueError(f"model family {model.family!r} has no ODE stages (ODEBlock); its stages: {stages}")
    if model.config.ndim == 0:
        x = x.reshape(x.shape[0], -1)
    x = model.stem(x)
    for s, stage in enumerate(model.stages[: last + 1]):
        if s:
            x = model.transitions[s - 1](x)
        if (pair := found[s]) is not None:
            block, prepare = pair
            yield s, block, prepare(x)
        if s < last:
            x = stage(x)


def step_spectra(
    model,
    x,
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    integrator: Integrator | str | None = None,
    args=None,
    method: str = "exact",
    k: int = 6,
    batched: bool = True,
    iters: int = 500,
    seed: int = 0,
) -> StepSpectrum | list[StepSpectrum]:
    """Eigenvalues of h dF_k/dx at every step k of a forward solve, at the states it passes through.

    model:  a `Classifier` -> a list with one `StepSpectrum` per ODE stage (stages that are
            scans of another step rule are skipped; the input x is the model's), or an
            `ODEBlock` -> its `StepSpectrum`, or a field as `odeint` takes it (a function with
            `args`, an NNX module, or `PerStep(stack)`) with t0, t1, steps and integrator given.
    x:      the input, (B, ...) (batched=True: per-sample Jacobians, the models' case).
    method, k, iters, seed: as `jacobian_spectrum` ("exact", "arnoldi", "power").
    """
    options = dict(method=method, k=k, batched=batched, iters=iters, seed=seed)
    if isinstance(model, Classifier):
        return [block_spectra(block, x_in, **options) for _, block, x_in in ode_stages(model, jnp.asarray(x))]
    if isinstance(model, ODEBlock):
        return block_spectra(model, x, **options)
    if t1 is None or steps is None or integrator is None:
        raise ValueError("step_spectra of a field needs t1, steps and integrator (as odeint takes them)")
    sol = odeint(model, x, t0, t1, steps, integrator=integrator, args=args, save="all")
    return _spectra(model, sol, t0, t1, steps, INTEGRATORS(integrator), args, **options)
