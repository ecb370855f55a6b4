"""`Trajectory`: a Neural ODE fitted to time series, x(ts[0]) -> (x(ts[0]), x(ts[1]), ..., x(ts[T-1])).

No stem and no head: the learned field F acts on the observed state itself (plus ANODE's zero
channels), and the model's output is the solution of dx/dt = F(t, x) at the observation times.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets._abstract import final
from odenets.gradients import Gradient
from odenets.integrators import Integrator
from odenets.models.base import REGISTRY, Family
from odenets.models.block import Counted, _count
from odenets.solve import odeint, resolve_solver
from odenets.validate import integer

UNIFORM_RTOL = 1e-5  # observation gaps equal to this relative tolerance count as one uniform grid


def observation_times(ts, where: str = "ts") -> np.ndarray:
    """`ts` as a float64 array, checked: 1-D, at least 2 finite times, strictly increasing."""
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or len(ts) < 2 or not np.all(np.isfinite(ts)):
        raise ValueError(
            f"{where} must be a 1-D array of at least 2 finite observation times, got shape {ts.shape}"
        )
    gaps = np.diff(ts)
    if not np.all(gaps > 0):
        i = int(np.argmax(gaps <= 0))
        raise ValueError(
            f"{where} must be strictly increasing, but {where}[{i + 1}] = {ts[i + 1]:g} <= "
            f"{where}[{i}] = {ts[i]:g}"
        )
    return ts


def is_uniform(ts: np.ndarray) -> bool:
    """Whether the gaps of ts are equal (to UNIFORM_RTOL of the mean gap)."""
    gaps = np.diff(ts)
    return bool(np.all(np.abs(gaps - gaps.mean()) <= UNIFORM_RTOL * gaps.mean()))


@final
class Trajectory(Counted):
    """The states of dx/dt = F(t, x) at the observation times ts, from x(ts[0]) = the input.

    Input (B, D), output (B, T, D) with output[:, 0] = input. With `augment` > 0 the state is
    [x, 0] (D + augment channels, Dupont et al.'s ANODE) and the first D channels are observed.

    How the times are met, never by a second solver:
    - uniform ts: one `odeint` solve over [ts[0], ts[-1]] with (T - 1) * steps_per_interval steps
      and save="all"; the observations are every steps_per_interval-th state. Adaptive
      integrators choose their own steps and report their dense solution at that grid.
    - non-uniform ts: one `odeint` solve per interval [ts[i], ts[i+1]] (steps_per_interval steps
      each, h_i = (ts[i+1] - ts[i]) / steps_per_interval), run by `lax.scan` over the intervals,
      so compile time does not grow with T.
    Each call records its forward and backward NFE (summed over the intervals).
    """

    def __init__(
        self,
        make_field: Callable[[nnx.Rngs], nnx.Module],
        dim: int,
        ts,
        *,
        steps_per_interval: int,
        integrator: Integrator | str = "rk4",
        gradient: Gradient | str = "backprop",
        augment: int = 0,
        unroll: int | bool = 1,
        rngs: nnx.Rngs,
    ):
        ts = observation_times(ts)
        self.dim = integer("dim", dim, 1)
        self.augment = integer("augment", augment, 0)
        self.steps_per_interval = integer("steps_per_interval", steps_per_interval, 1)
        self.integrator, self.gradient = resolve_solver(integrator, gradient, per_step=False, unroll=unroll)
        self.unroll = unroll
        self.ts = tuple(float(t) for t in ts)  # static: a Python tuple is no model state
        self.uniform = is_uniform(ts)
        self.field = make_field(rngs)
        self._init_stats()

    def _odeint(self, f, x, t0, t1, steps, save, args=None):
        return odeint(f, x, t0, t1, steps, integrator=self.integrator, gradient=self.gradient, args=args,
                      save=save, unroll=self.unroll)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"a trajectory model takes initial states (B, {self.dim}), got shape {tuple(x.shape)}"
            )
        if self.augment:
            x = jnp.concatenate([x, jnp.zeros((x.shape[0], self.augment), x.dtype)], axis=-1)
        k, intervals = self.steps_per_interval, len(self.ts) - 1
        if self.uniform:
            sol = self._odeint(self.field, x, self.ts[0], self.ts[-1], k * intervals, "all")
            xs, nfe, nfe_backward = sol.xs[::k], sol.stats["nfe"], sol.stats["nfe_backward"]
        else:
            graphdef, state = nnx.split(self.field)
            field = lambda t, y, s: nnx.merge(graphdef, s)(t, y)
            ts = jnp.asarray(self.ts, x.dtype)

            def interval(y, bounds):
                sol = self._odeint(field, y, bounds[0], bounds[1], k, "final", args=state)
                return sol.x, (sol.x, _count(sol.stats["nfe"]), _count(sol.stats["nfe_backward"]))

            _, (later, nfes, nfes_backward) = jax.lax.scan(interval, x, jnp.stack([ts[:-1], ts[1:]], axis=1))
            xs = jnp.concatenate([x[None], later])
            total = lambda n: jnp.where(jnp.any(n < 0), -1, jnp.sum(n))
            nfe, nfe_backward = total(nfes), total(nfes_backward)
        self._record(nfe, nfe_backward)
        return jnp.moveaxis(xs, 0, 1)[..., : self.dim]


def trajectory(family: str | Family, *, dim: int, ts, rngs: nnx.Rngs | int = 0, **options) -> Trajectory:
    """A `Trajectory` model of the named family (node, anode: `family.get(n).takes_trajectories`)
    mapping initial states (B, dim) to their states at the observation times ts (B, T, dim).

    Options are checked as in `build`; a family that takes no trajectories is refused with the
    families that do."""
    options = {key: value for key, value in options.items() if value is not None}
    return REGISTRY(family, **options).trajectory(dim, ts, rngs=rngs)
