"""Explicit Runge-Kutta methods: a Butcher tableau and an order, one shared stage loop.

For y' = f(t, y) and step h, stage i is

    k_i = f(t + c_i h,  y + h * sum_{j<i} a_ij k_j),      y_next = y + h * sum_i b_i k_i.

Classic RK4 here is the 1/6, 1/3, 1/3, 1/6 method with stages at t, t+h/2, t+h/2, t+h
(torchdiffeq's "rk4" is Kutta's 3/8 rule, a different fourth-order method).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import ClassVar

from odenets.integrators.base import Integrator, combine, register


@dataclasses.dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit RK method; `a[i]` holds the i entries a_i0 .. a_i,i-1."""

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]

    def __post_init__(self):
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"inconsistent Butcher tableau shapes: {self}")
        if abs(sum(self.b) - 1) > 1e-14:
            raise ValueError(f"tableau weights b must sum to 1, got {sum(self.b)}")
        for i, row in enumerate(self.a):
            if abs(sum(row) - self.c[i]) > 1e-14:
                raise ValueError(f"row {i}: c_i must equal sum_j a_ij")

    @property
    def stages(self) -> int:
        return len(self.b)


def _tableau(a, b, c) -> ButcherTableau:
    f = lambda x: float(Fraction(x))  # noqa: E731  (exact fractions -> nearest float)
    return ButcherTableau(tuple(tuple(map(f, r)) for r in a), tuple(map(f, b)), tuple(map(f, c)))


@dataclasses.dataclass(frozen=True)
class ExplicitRK(Integrator):
    """Base of tableau-driven explicit methods; a subclass sets `tableau` and `order`."""

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "tableau" in cls.__dict__:
            cls.nfe_step = cls.tableau.stages

    def advance(self, fq, t, h, y, args):
        tab = self.tableau
        ks, qs = [], []
        for ci, row in zip(tab.c, tab.a):
            yi = combine(y, h, row, ks)
            ki, qi = fq(t if ci == 0 else t + ci * h, yi, args)
            ks.append(ki)
            qs.append(qi)
        return combine(y, h, tab.b, ks), combine(None, h, tab.b, qs)


@register("euler")
@dataclasses.dataclass(frozen=True)
class Euler(ExplicitRK):
    """Forward Euler, y_next = y + h f(t, y). With h = 1 and PerStep args: a ResNet."""

    name: ClassVar[str] = "euler"
    order: ClassVar[int] = 1
    tableau: ClassVar[ButcherTableau] = _tableau(a=[[]], b=[1], c=[0])


@register("midpoint")
@dataclasses.dataclass(frozen=True)
class Midpoint(ExplicitRK):
    """Explicit midpoint: k2 = f(t + h/2, y + h/2 k1), y_next = y + h k2."""

    name: ClassVar[str] = "midpoint"
    order: ClassVar[int] = 2
    tableau: ClassVar[ButcherTableau] = _tableau(a=[[], ["1/2"]], b=[0, 1], c=[0, "1/2"])


@register("heun")
@dataclasses.dataclass(frozen=True)
class Heun(ExplicitRK):
    """Heun (explicit trapezoid): k2 = f(t + h, y + h k1), y_next = y + h (k1 + k2) / 2."""

    name: ClassVar[str] = "heun"
    order: ClassVar[int] = 2
    tableau: ClassVar[ButcherTableau] = _tableau(a=[[], [1]], b=["1/2", "1/2"], c=[0, 1])


@register("rk4")
@dataclasses.dataclass(frozen=True)
class RK4(ExplicitRK):
    """Classic fourth-order Runge-Kutta (weights 1/6, 1/3, 1/3, 1/6; stages at t, t+h/2, t+h/2, t+h)."""

    name: ClassVar[str] = "rk4"
    order: ClassVar[int] = 4
    tableau: ClassVar[ButcherTableau] = _tableau(
        a=[[], ["1/2"], [0, "1/2"], [0, 0, 1]],
        b=["1/6", "1/3", "1/3", "1/6"],
        c=[0, "1/2", "1/2", 1],
    )
