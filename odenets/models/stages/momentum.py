"""Momentum ResNet (Sander et al. 2021): an invertible second-order step rule, differentiated by any
gradient strategy that gives the gradient of the discrete recursion.

The recursion is `MomentumStep`, a reversible step rule on the pair y = (x, v) run by the gradient
strategies' step loop (`odenets.stepper.Stepper`), so the `gradient` axis applies as it does to
`odeint`:

    backprop    store every step's activations: memory O(depth)
    checkpoint  store every s-th pair, recompute inside segments: O(sqrt depth)
    reversible  store (x_N, v_N) only; the backward pass rebuilds (x_k, v_k) from (x_{k+1}, v_{k+1})
                with the exact inverse, then takes the VJP of that one step (the paper's
                memory-saving backward): memory independent of depth

The continuous adjoint (`adjoint`) is refused: it differentiates an ODE, not this recursion.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, cast

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.gradients.base import REGISTRY as GRADIENTS
from odenets.gradients.base import Gradient
from odenets.integrators.base import combine
from odenets.integrators.reversible import ReversibleIntegrator
from odenets.models.stages.scan import ScanStage, step_time
from odenets.solve import resolve_solver
from odenets.stepper import Stepper
from odenets.validate import number


@final
@dataclasses.dataclass(frozen=True)
class MomentumStep(ReversibleIntegrator):
    """One momentum step on the pair y = (x, v), with F(t, x) = fq(t, y, args)[0] (a field of x alone):

        v_{k+1} = gamma v_k + (1 - gamma) h F(t_k, x_k),    x_{k+1} = x_k + v_{k+1}

    and its exact inverse (one more evaluation of F, at the rebuilt x_k):

        x_k = x_{k+1} - v_{k+1},    v_k = (v_{k+1} - (1 - gamma) h F(t_k, x_k)) / gamma

    The inverse divides by gamma, so in floating point each step amplifies the rounding of v by up
    to 1 / gamma: over N steps up to gamma^-N (Sander et al. 2021), small for gamma near 1.
    The Momentum ResNet takes h = 1. A step rule of the momentum stage, not an ODE integrator of
    dy/dt = F (it is not in the integrator registry); the quadrature q is integrated as h q(t_k, y_k).
    """

    gamma: float

    order: ClassVar[int] = 1
    nfe_step: ClassVar[int] = 1
    nfe_inverse: ClassVar[int] = 1

    def __post_init__(self):
        number("gamma", self.gamma, low=0.0, high=1.0)

    def check(self, gradient: Gradient, *, per_step, unroll):
        if not gradient.discrete:
            valid = [n for n in GRADIENTS.names() if GRADIENTS.get(n).discrete]
            raise ValueError(
                f"gradient {gradient.name!r} is the gradient of an ODE (a continuous adjoint), not of the "
                f"momentum recursion v_(k+1) = gamma v_k + (1 - gamma) F_k(x_k), x_(k+1) = x_k + v_(k+1); "
                f"valid choices for the momentum step: {', '.join(valid)} ('reversible' inverts the "
                f"recursion: memory independent of depth)"
            )

    def advance(self, fq, t, h, state, args):
        x, v = state
        f, q = fq(t, state, args)
        v = self.gamma * v + ((1 - self.gamma) * h).astype(v.dtype) * f
        return (x + v, v), combine(None, h, [1], [q])

    def inverse(self, fq, t, h, state, args):
        x1, v1 = state
        x = x1 - v1
        f, _ = fq(t, (x, v1), args)
        return x, (v1 - ((1 - self.gamma) * h).astype(v1.dtype) * f) / self.gamma


def momentum_solver(gamma: float, gradient, unroll: int | bool = 1) -> tuple[MomentumStep, Gradient]:
    """The momentum step and the gradient strategy (a name or Gradient), every pairing rule checked now."""
    step, grad = resolve_solver(MomentumStep(gamma), gradient, per_step=True, unroll=unroll)
    return cast(MomentumStep, step), grad  # resolve_solver passes an Integrator instance through


@final
class MomentumBlock(ScanStage):
    """v_0 = 0 by default and, with per-step fields F_k and t_k = k,

        v_{k+1} = gamma v_k + (1 - gamma) F_k(t_k, x_k),    x_{k+1} = x_k + v_{k+1}

    (`MomentumStep` with h = 1). Invertible for 0 < gamma: `inverse` rebuilds (x_0, v_0) from
    (x_N, v_N). `gradient` (a name or Gradient: backprop, checkpoint or reversible) decides how the
    forward pass is differentiated; with "reversible" the backward pass stores no state per step
    (module docstring)."""

    def __init__(self, make_field, *, steps: int, gamma: float, gradient="backprop", unroll: int | bool = 1,
                 rngs: nnx.Rngs):
        self.rule, self.gradient = momentum_solver(gamma, gradient, unroll)
        self.gamma = self.rule.gamma
        super().__init__(make_field, steps=steps, unroll=unroll, rngs=rngs)

    def forward(self, x, v):
        """(x_N, v_N) from (x_0, v_0), differentiated by the block's gradient strategy."""
        graphdef, state = nnx.split(self.fields)

        def field(t, y, s):
            return nnx.merge(graphdef, s)(t, y[0]).astype(y[1].dtype)

        stepper = Stepper(self.rule, field, self.steps, per_step=True, save_all=False, unroll=self.unroll)
        t0, h = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
        out, _ = self.gradient.solve(stepper, t0, h, (x, v), state)
        self._record(stepper.nfe_forward(), self.gradient.nfe_backward(stepper))
        return out

    def inverse(self, x, v):
        """(x_0, v_0) from (x_N, v_N), recomputing every F_k once more (not differentiated specially)."""

        def step(f, k, c):
            fq = lambda t, y, _: (f(t, y[0]).astype(y[1].dtype), ())
            return self.rule.inverse(fq, step_time(k, c[0]), jnp.ones((), c[0].dtype), c, None)

        return self._scan(step, (x, v), reverse=True)

    def __call__(self, x):
        return self.forward(x, jnp.zeros_like(x))[0]

