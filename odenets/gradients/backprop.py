"""Backprop: differentiate straight through the scan, storing every step."""

from __future__ import annotations

import dataclasses

from odenets._abstract import final
from odenets.gradients.base import Gradient, register


@final
@register("backprop")
@dataclasses.dataclass(frozen=True)
class Backprop(Gradient):
    """Reverse-mode autodiff through every step: exact gradient of the discrete solve (times
    included). Memory grows linearly with the number of steps (every stage is kept for the
    backward pass). For adaptive integrators: diffrax's RecursiveCheckpointAdjoint with one
    checkpoint per step (`max_steps` of them), i.e. nothing recomputed.
    """

    def solve(self, stepper, t0, h, y0, args):
        return stepper.run(t0, h, y0, args)

    def nfe_backward(self, stepper):
        """0: nothing is evaluated again, except through the linear solves of the implicit
        function theorem in Newton-based steps, whose count is only known at run time (None)."""
        return None if stepper.integrator.dynamic_nfe else 0
