"""Explicit Runge-Kutta methods: a Butcher tableau and an order, one shared stage loop.

For y' = f(t, y) and step h, stage i is

    k_i = f(t + c_i h,  y + h * sum_{j<i} a_ij k_j),      y_next = y + h * sum_i b_i k_i.

Classic RK4 here is the 1/6, 1/3, 1/3, 1/6 method with stages at t, t+h/2, t+h/2, t+h
(torchdiffeq's "rk4" is Kutta's 3/8 rule, a different fourth-order method). A new method is
one final class with a `tableau` and an `order` (the test suite registers Ralston's this way).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

from odenets._abstract import final
from odenets.integrators.base import combine, register
from odenets.integrators.fixed import FixedStepIntegrator

# a tableau entry as given: an exact fraction ("1/6", Fraction(1, 6)) or a number
Entry = float | str | Fraction


@dataclasses.dataclass(frozen=True, init=False)
class ButcherTableau:
    """Coefficients of an explicit RK method; `a[i]` holds the i entries a_i0 .. a_i,i-1.

    Entries may be given as exact fractions ("1/6", Fraction(1, 6)) or floats; they are
    stored as the nearest floats.
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]

    def __init__(self, a: Sequence[Sequence[Entry]], b: Sequence[Entry], c: Sequence[Entry]):
        exact = lambda row: tuple(float(Fraction(x)) for x in row)
        object.__setattr__(self, "a", tuple(exact(row) for row in a))
        object.__setattr__(self, "b", exact(b))
        object.__setattr__(self, "c", exact(c))
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


@dataclasses.dataclass(frozen=True)
class ExplicitRK(FixedStepIntegrator):
    """A tableau-driven explicit method: a concrete subclass sets `tableau` and `order` only."""

    if TYPE_CHECKING:  # a class attribute on concrete methods; the abstract property keeps this class abstract
        tableau: ClassVar[ButcherTableau]
    else:

        @property
        @abc.abstractmethod
        def tableau(self) -> ButcherTableau:
            """The method's Butcher tableau (a class attribute on concrete methods)."""

    @property
    def nfe_step(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride] (an int on instances, as the base's)
        return self.tableau.stages

    def advance(self, fq, t, h, state, args):
        tab = self.tableau
        ks, qs = [], []
        for ci, row in zip(tab.c, tab.a):
            yi = combine(state, h, row, ks)
            ki, qi = fq(t if ci == 0 else t + ci * h, yi, args)
            ks.append(ki)
            qs.append(qi)
        return combine(state, h, tab.b, ks), combine(None, h, tab.b, qs)


@final
@register("euler")
@dataclasses.dataclass(frozen=True)
class Euler(ExplicitRK):
    """Forward Euler, y_next = y + h f(t, y). With h = 1 and PerStep args: a ResNet."""

    order: ClassVar[int] = 1
    tableau: ClassVar[ButcherTableau] = ButcherTableau(a=((),), b=(1,), c=(0,))


@final
@register("midpoint")
@dataclasses.dataclass(frozen=True)
class Midpoint(ExplicitRK):
    """Explicit midpoint: k2 = f(t + h/2, y + h/2 k1), y_next = y + h k2."""

    order: ClassVar[int] = 2
    tableau: ClassVar[ButcherTableau] = ButcherTableau(a=((), ("1/2",)), b=(0, 1), c=(0, "1/2"))


@final
@register("heun")
@dataclasses.dataclass(frozen=True)
class Heun(ExplicitRK):
    """Heun (explicit trapezoid): k2 = f(t + h, y + h k1), y_next = y + h (k1 + k2) / 2."""

    order: ClassVar[int] = 2
    tableau: ClassVar[ButcherTableau] = ButcherTableau(a=((), (1,)), b=("1/2", "1/2"), c=(0, 1))


@final
@register("rk4")
@dataclasses.dataclass(frozen=True)
class RK4(ExplicitRK):
    """Classic fourth-order Runge-Kutta (weights 1/6, 1/3, 1/3, 1/6; stages at t, t+h/2, t+h/2, t+h)."""

    order: ClassVar[int] = 4
    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        a=((), ("1/2",), (0, "1/2"), (0, 0, 1)),
        b=("1/6", "1/3", "1/3", "1/6"),
        c=(0, "1/2", "1/2", 1),
    )
