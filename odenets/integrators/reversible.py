"""Algebraically reversible integrators, and reversible Heun (Kidger et al. 2021).

A reversible integrator has an exact inverse step, so the `Reversible` gradient can rebuild
every state backwards from the last one instead of storing them.

Reversible Heun's state is (y, z, f(t, z), q(t, z)). One step:

    z_next = 2 y - z + h f(t, z)
    y_next = y + h/2 [f(t, z) + f(t + h, z_next)]

and its exact inverse:

    z = 2 y_next - z_next - h f(t + h, z_next)
    y = y_next - h/2 [f(t, z) + f(t + h, z_next)]

f(t + h, z_next) is cached in the state, so a solve costs one evaluation per step (plus one
at t0); with PerStep arguments the cache is refreshed at every step with that step's slice.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax

from odenets._abstract import final
from odenets.integrators.base import combine, register
from odenets.integrators.fixed import FieldQ, FixedStepIntegrator


@dataclasses.dataclass(frozen=True)
class ReversibleIntegrator(FixedStepIntegrator):
    """A fixed-step method with an exact algebraic inverse of `advance`."""

    reversible: ClassVar[bool] = True

    @abc.abstractmethod
    def inverse(self, fq: FieldQ, t, h, state, args) -> Any:
        """The state at t from the state at t + h."""


@final
@register("reversible_heun")
@dataclasses.dataclass(frozen=True)
class ReversibleHeun(ReversibleIntegrator):
    """Reversible Heun: order 2, one evaluation per step, exactly invertible in exact arithmetic."""

    order: ClassVar[int] = 2
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
        z1 = combine(jax.tree.map(lambda yi, zi: 2 * yi - zi, y, z), h, [1], [fz])
        f1, q1 = fq(t + h, z1, args)
        y1 = combine(y, h, [0.5, 0.5], [fz, f1])
        return (y1, z1, f1, q1), combine(None, h, [0.5, 0.5], [qz, q1])

    def inverse(self, fq, t, h, state, args):
        y1, z1, _, _ = state
        f1, _ = fq(t + h, z1, args)
        z0 = combine(jax.tree.map(lambda yi, zi: 2 * yi - zi, y1, z1), -h, [1], [f1])
        f0, q0 = fq(t, z0, args)
        y0 = combine(y1, -h, [0.5, 0.5], [f0, f1])
        return (y0, z0, f0, q0)
