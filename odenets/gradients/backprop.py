"""Backprop: differentiate straight through the scan, storing every step."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import diffrax

from odenets.gradients.base import Gradient, register


@register("backprop")
@dataclasses.dataclass(frozen=True)
class Backprop(Gradient):
    """Reverse-mode autodiff through every step: exact gradient of the discrete solve.

    Memory grows linearly with the number of steps (every stage is kept for the backward
    pass). For adaptive integrators: diffrax's RecursiveCheckpointAdjoint with one
    checkpoint per step (`max_steps` of them), i.e. nothing recomputed.
    """

    name: ClassVar[str] = "backprop"
    adaptive_nfe_backward: ClassVar[int] = 0  # nothing is evaluated again

    def solve(self, stepper, t0, h, y0, args):
        return stepper.run(t0, h, y0, args)

    def diffrax_adjoint(self, integrator):
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=integrator.max_steps)
