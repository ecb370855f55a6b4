"""The interface of gradient strategies, and their registry.

A strategy decides how d(loss)/d(x0, args) flows back through a fixed-step solve:
`solve(stepper, t0, h, y0, args)` returns (final integrator state, values at steps 1..N or
None) and may attach any custom backward pass. For adaptive integrators a strategy names the
diffrax adjoint that plays its role.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import diffrax

from odenets._registry import Registry
from odenets.gradients.loop import Stepper
from odenets.integrators.base import Integrator


@dataclasses.dataclass(frozen=True)
class Gradient:
    name: ClassVar[str]
    # nfe_backward of adaptive solves: diffrax does not count the evaluations of a backward solve
    adaptive_nfe_backward: ClassVar[int | None] = None

    def check(self, integrator: Integrator) -> None:
        """Raise ValueError, naming the valid choices, if this pairing is not supported."""

    def solve(self, stepper: Stepper, t0, h, y0, args):
        raise NotImplementedError

    def nfe_backward(self, stepper: Stepper) -> int | None:
        """Vector-field evaluations the backward pass makes again (a VJP of f counts as one).

        None where the backward pass re-runs Newton solves whose cost is only known at run time.
        """
        return 0

    def diffrax_adjoint(self, integrator) -> diffrax.AbstractAdjoint:
        raise NotImplementedError


REGISTRY: Registry[Gradient] = Registry("gradient", Gradient)
register = REGISTRY.register
