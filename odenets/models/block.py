"""`ODEBlock`: the bridge from `odeint` to a layer, and the NFE counts every stage records."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets._abstract import final
from odenets.fields import stack
from odenets.gradients import Gradient
from odenets.integrators import Integrator
from odenets.perstep import PerStep
from odenets.rnode import RNODE, rnode_odeint
from odenets.solve import Solution, check_grid, odeint, resolve_solver
from odenets.validate import choice

PARAMS = ("shared", "per_step")


class SolverStats(nnx.Variable):
    """A vector-field evaluation count of a stage's last call: an int32 scalar, -1 where unknown.

    A Variable but not a Param, so optimisers leave it alone and a jitted step that returns the
    model's state (nnx.split / nnx.state, or nnx.jit) carries the updated counts out.
    """


class Penalty(nnx.Variable):
    """The RNODE penalty lambda_K mean K + lambda_J mean J of an ODE block's last call (`odenets.rnode`):
    a float scalar, differentiable inside the call that set it (the training loss adds it)."""


class BackwardProbe(nnx.Variable):
    """A zero scalar an adaptive ODE block hands `odeint` as its `probe`: differentiated with the loss
    (the train step does), its gradient is the block's backward evaluation count (`record_backward`)."""


class NoiseKey(nnx.Variable):
    """The raw key data (uint32) of an ODE block's Hutchinson probes; each call splits it once."""


PROBE_TAG = 0x524E4F44  # folded into the probes' key: it differs from every key the stream hands out


def _probe_seed(rngs: nnx.Rngs) -> jax.Array:
    """Raw key data for a block's Hutchinson probes that takes no draw from rngs (the parameters are
    those of the same model without RNODE): the default stream's next key, folded with PROBE_TAG."""
    stream = rngs.default
    key = jax.random.fold_in(jax.random.fold_in(stream.key[...], stream.count[...]), PROBE_TAG)
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _count(n) -> jax.Array:
    return jnp.asarray(-1 if n is None else n, jnp.int32)


class Counted(nnx.Module):
    """Base of every stage that evaluates vector fields: `nfe` and `nfe_backward` of its last call."""

    def _init_stats(self) -> None:
        self.nfe = SolverStats(jnp.array(-1, jnp.int32))
        self.nfe_backward = SolverStats(jnp.array(-1, jnp.int32))

    def _record(self, nfe, nfe_backward) -> None:
        self.nfe[...] = _count(nfe)
        self.nfe_backward[...] = _count(nfe_backward)

    @abc.abstractmethod
    def __call__(self, x: jax.Array) -> jax.Array: ...


def stage_totals(model: nnx.Module) -> dict[str, jax.Array]:
    """{"nfe": ..., "nfe_backward": ...} of the model's last call, summed over its stages, as arrays
    (traceable: a train step can log them): -1 where any stage's count is unknown, 0 for a model
    without stages. The one rule `solver_stats` reads out."""
    counts = {key: [getattr(node, key)[...] for _, node in nnx.iter_graph(model) if isinstance(node, Counted)]
              for key in ("nfe", "nfe_backward")}
    return {key: jnp.where(jnp.any(jnp.stack(c) < 0), -1, jnp.sum(jnp.stack(c))) if c else jnp.array(0, jnp.int32)
            for key, c in counts.items()}


def record_backward(model: nnx.Module, counts: nnx.State) -> None:
    """Write the gradients of the model's `BackwardProbe`s (`counts`, as nnx.grad returns them) into
    their blocks' `nfe_backward`: the backward evaluations of an adaptive solve, known only once the
    backward pass has run (-1 where unknown). Traceable; blocks without a probe keep their count."""
    flat = {path: leaf for path, leaf in nnx.to_flat_state(counts)}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, ODEBlock) and (key := (*path, "backward_probe")) in flat:
            leaf = flat[key]
            node.nfe_backward[...] = jnp.round(leaf[...] if isinstance(leaf, nnx.Variable) else leaf).astype(
                jnp.int32)


def regularisation(model: nnx.Module) -> jax.Array | None:
    """The sum of the RNODE penalties (`Penalty`) of the model's ODE blocks on its last call, traceable
    and differentiable when read inside the call's trace (as the train step does); None for a model
    without a weighted RNODE term (the loss is then the data loss alone)."""
    terms = [node.penalty[...] for _, node in nnx.iter_graph(model)
             if isinstance(node, ODEBlock) and node.rnode.active]
    return cast(jax.Array, sum(terms[1:], terms[0])) if terms else None


def solver_stats(model: nnx.Module) -> dict[str, int]:
    """{"nfe": ..., "nfe_backward": ...} of the model's last call, summed over its stages.

    Forward and backward vector-field evaluations as `odeint` counts them (`Solution.stats`),
    for ODE blocks; scan-based stages (plain, momentum, Hamiltonian, dense) count one per layer
    forward and 0 backward. An adaptive block's backward count is known only after its backward
    pass: the train step writes it (`record_backward`; a plain forward call leaves -1). -1 where
    any stage's count is unknown (Kvaerno5's Newton iterations; Backprop through implicit or
    adaptive steps, which differentiates the solver's own iterations) or the model has not been
    called yet; 0 for a model without stages. Reads concrete values: call it outside jit, on the
    model (or the state) a train step returned (`stage_totals` inside).
    """
    return {key: int(np.asarray(v)) for key, v in stage_totals(model).items()}


@final
class ODEBlock(Counted):
    """x(t1) of dx/dt = F(t, x), x(t0) = input: a stage of ODE steps as one layer.

    params="shared":   one field F = make_field(rngs) for all t (a Neural ODE).
    params="per_step": `odenets.fields.stack(make_field, steps, rngs)`, step k uses layer k
                       (a discrete ResNet: with Euler and t1 - t0 = steps, h = 1 and
                       x_{k+1} = x_k + F_k(t_k, x_k)).

    `steps` is the step count of fixed-step integrators (adaptive ones choose their own);
    `unroll` is odeint's (steps per loop iteration; True: a straight-line program).
    Names and pairings are checked here, at construction, with the registries' errors. Each
    call records `nfe` / `nfe_backward` (`SolverStats`) from the solve's stats; an adaptive
    block's backward count is known only after its backward pass, through its `BackwardProbe`.

    rnode: RNODE weights (`odenets.rnode`). With a weighted term each call solves the augmented
    state (x, k, j) and records its penalty lambda_K mean K + lambda_J mean J (`Penalty`, read by
    `regularisation`); with lambda_J > 0 it draws eps ~ N(0, I) from its `NoiseKey` (seeded from
    rngs), once per call for a shared field and once per step for per-step fields.
    """

    def __init__(
        self,
        make_field: Callable[[nnx.Rngs], nnx.Module],
        *,
        params: str,
        steps: int,
        integrator: Integrator | str = "rk4",
        gradient: Gradient | str = "backprop",
        t0: float = 0.0,
        t1: float = 1.0,
        unroll: int | bool = 1,
        rnode: RNODE | None = None,
        rngs: nnx.Rngs,
    ):
        choice("params", params, PARAMS)
        check_grid(steps, t0, t1)
        self.integrator, self.gradient = resolve_solver(integrator, gradient, per_step=params == "per_step",
                                                        unroll=unroll)
        self.params, self.steps, self.t0, self.t1, self.unroll = params, int(steps), float(t0), float(t1), unroll
        self.rnode = RNODE() if rnode is None else rnode
        if not isinstance(self.rnode, RNODE):
            raise ValueError(f"rnode must be an odenets.rnode.RNODE or None, got rnode={rnode!r}")
        self.field = make_field(rngs) if params == "shared" else stack(make_field, self.steps, rngs)
        self._init_stats()
        if self.integrator.adaptive:
            self.backward_probe = BackwardProbe(jnp.zeros((), jnp.float32))
        if self.rnode.active:
            self.penalty = Penalty(jnp.zeros((), jnp.float32))
        if self.rnode.jacobian:
            self.noise_key = NoiseKey(_probe_seed(rngs))

    def _probe(self, x):
        """eps ~ N(0, I) shaped like x (per-step: a leading axis of steps), or None without a J term."""
        if not self.rnode.jacobian:
            return None
        key, draw = jax.random.split(jax.random.wrap_key_data(self.noise_key[...]))
        self.noise_key.set_value(jax.random.key_data(key))
        shape = (self.steps, *x.shape) if self.params == "per_step" else x.shape
        return jax.random.normal(draw, shape, jnp.finfo(x.dtype).dtype)

    def solve(self, x, *, save: str = "final") -> Solution:
        """The full `odeint` solution (save="all" gives the state at every step boundary)."""
        f = PerStep(self.field) if self.params == "per_step" else self.field
        options: dict[str, Any] = dict(integrator=self.integrator, gradient=self.gradient, save=save,
                                       unroll=self.unroll)
        if self.integrator.adaptive:
            options["probe"] = self.backward_probe[...]
        if self.rnode.active:
            sol, kinetic, jacobian = rnode_odeint(f, x, self._probe(x), self.t0, self.t1, self.steps, **options)
            self.penalty.set_value(self.rnode.penalty(kinetic, jacobian))
        else:
            sol = odeint(f, x, self.t0, self.t1, self.steps, **options)
        self._record(sol.stats["nfe"], sol.stats["nfe_backward"])
        return sol

    def __call__(self, x):
        return self.solve(x).x
