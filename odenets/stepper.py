"""The fixed-step loop that every gradient strategy drives.

`Stepper` is the static description of one fixed-step solve (integrator, field, step count,
depth parameterisation, what to save); times and arguments stay dynamic. Step k runs from
t_k = t0 + k h to t_{k+1} with arguments `args_k` (the shared arguments, or slice k of a
PerStep stack), and `lax.scan` runs the steps, so compile time does not grow with depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from jax import lax

if TYPE_CHECKING:
    from odenets.integrators.fixed import FixedStepIntegrator


@dataclasses.dataclass(frozen=True)
class Stepper:
    integrator: FixedStepIntegrator
    f: Callable[[Any, Any, Any], Any]
    steps: int
    per_step: bool
    save_all: bool
    unroll: int | bool = 1  # steps per iteration of every scan over the steps (lax.scan's unroll)
    traced_times: bool = False  # t0 or t1 traced: they may be differentiated

    def fq(self, t, y, args):
        """The field in the integrators' (dy/dt, quadrature) form, with no quadrature."""
        return self.f(t, y, args), ()

    # -- one step -------------------------------------------------------------------------
    def init(self, t0, y0, args0):
        return self.integrator.init(self.fq, t0, y0, args0)

    def step(self, t, h, state, args_k, fq=None):
        """begin_step (PerStep only) then advance: the map state_k -> state_{k+1}.

        Dtypes are stable because `odeint` runs the whole solve in x0's dtype (arguments
        cast, the field's output cast).
        """
        fq = fq or self.fq
        if self.per_step:
            state = self.integrator.begin_step(fq, t, state, args_k)
        state, _ = self.integrator.advance(fq, t, h, state, args_k)
        return state

    # -- the scan -------------------------------------------------------------------------
    def first_args(self, args):
        return jax.tree.map(lambda a: a[0], args) if self.per_step else args

    def xs(self, args):
        """Scan inputs: the stacked PerStep arguments, or None for shared ones."""
        return args if self.per_step else None

    @staticmethod
    def time(t0, h, k):
        """t_k = t0 + k h from a traced step counter k: no array of times is ever stored, so
        strategies with constant memory stay constant."""
        return t0 + h * k.astype(jnp.result_type(h))

    def body(self, t0, h, args):
        integ = self.integrator

        def body(carry, a_k):
            k, state = carry
            state = self.step(self.time(t0, h, k), h, state, a_k if self.per_step else args)
            return (k + 1, state), (integ.value(state) if self.save_all else None)

        return body

    def start(self, t0, y0, args):
        """The scan carry before step 0: (step counter, integrator state)."""
        return jnp.zeros((), jnp.int32), self.init(t0, y0, self.first_args(args))

    def run(self, t0, h, y0, args):
        """Plain forward solve: (final integrator state, values at steps 1..N or None)."""
        carry = self.start(t0, y0, args)
        (_, state), ys = lax.scan(self.body(t0, h, args), carry, self.xs(args), length=self.steps,
                                  unroll=self.unroll)
        return state, ys

    def nfe_forward(self) -> int:
        i = self.integrator
        return i.nfe_init + self.steps * (i.nfe_step + (i.nfe_begin if self.per_step else 0))
