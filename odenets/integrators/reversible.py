"""Reversible Heun (Kidger et al. 2021): an algebraically invertible second-order method.

The state is (y, z, f(t, z), q(t, z)). One step:

    z_next = 2 y - z + h f(t, z)
    y_next = y + h/2 [f(t, z) + f(t + h, z_next)]

and its exact inverse, used by the `Reversible` gradient to reconstruct states backwards:

    z = 2 y_next - z_next - h f(t + h, z_next)
    y = y_next - h/2 [f(t, z) + f(t + h, z_next)]

f(t + h, z_next) is cached in the state, so a solve costs one evaluation per step (plus one
at t0); with PerStep arguments the cache is refreshed at every step with that step's slice.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from odenets.integrators.base import Integrator, combine, register


@register("reversible_heun")
@dataclasses.dataclass(frozen=True)
class ReversibleHeun(Integrator):
    """Reversible Heun: order 2, one evaluation per step, exactly invertible in exact arithmetic."""

    name: ClassVar[str] = "reversible_heun"
    order: ClassVar[int] = 2
    reversible: ClassVar[bool] = True
    nfe_init: ClassVar[int] = 1
    nfe_begin: ClassVar[int] = 1
    nfe_step: ClassVar[int] = 1
    nfe_inverse: ClassVar[int] = 2

    def init(self, fq, t0, y0, args):
        fz, qz = fq(t0, y0, args)
        return (y0, y0, fz, qz)

    def begin_step(self, fq, t, state, args):
        y, z, _, _ = state
        fz, qz = fq(t, z, args)
        return (y, z, fz, qz)

    def value(self, state):
        return state[0]

    def advance(self, fq, t, h, state, args):
        y, z, fz, qz = state
        z1 = jax.tree.map(lambda yi, zi, fi: 2 * yi - zi + h * fi, y, z, fz)
        f1, q1 = fq(t + h, z1, args)
        y1 = combine(y, h, [0.5, 0.5], [fz, f1])
        return (y1, z1, f1, q1), combine(None, h, [0.5, 0.5], [qz, q1])

    def inverse(self, fq, t, h, state, args):
        y1, z1, _, _ = state
        f1, _ = fq(t + h, z1, args)
        z0 = jax.tree.map(lambda yi, zi, fi: 2 * yi - zi - h * fi, y1, z1, f1)
        f0, q0 = fq(t, z0, args)
        y0 = combine(y1, -h, [0.5, 0.5], [f0, f1])
        return (y0, z0, f0, q0)
