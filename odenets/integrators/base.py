"""The interface every step rule implements, and the integrator registry.

A fixed-step integrator advances an *integrator state* by one step of size h. For most
methods the state is just y; methods that carry more (reversible Heun carries a second copy
z and the cached f(z); Newton-based methods carry an iteration counter) say so in `init`,
and `value(state)` returns y.

Every method takes `fq(t, y, args) -> (dy/dt, q)`: the vector field plus an optional
*quadrature integrand* q (an empty tuple when there is none). `advance` returns the new
state and the integral of q over the step, computed with the method's own stages, i.e. the
method applied to the augmented system (y, Q)' = (f, q). The continuous adjoint uses this to
integrate parameter gradients; regularisers integrated along the state can use it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax

from odenets._registry import Registry

FieldQ = Callable[[Any, Any, Any], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class Integrator:
    """A step rule. Subclasses are immutable (frozen dataclasses) and hashable."""

    name: ClassVar[str]
    order: ClassVar[int]
    adaptive: ClassVar[bool] = False
    reversible: ClassVar[bool] = False
    # vector-field evaluations made by init / begin_step / advance / inverse
    nfe_init: ClassVar[int] = 0
    nfe_begin: ClassVar[int] = 0
    nfe_step: ClassVar[int] = 0
    nfe_inverse: ClassVar[int] = 0
    # True when a step's cost is only known at run time (Newton): backward re-solves then
    # report nfe_backward = None rather than a number that leaves the iterations out
    dynamic_nfe: ClassVar[bool] = False

    def init(self, fq: FieldQ, t0, y0, args):
        """The integrator state at t0."""
        return y0

    def begin_step(self, fq: FieldQ, t, state, args):
        """Called at the start of a step whose arguments differ from the last step's (PerStep).

        Methods that cache f across steps must re-evaluate it with the new arguments here.
        """
        return state

    def advance(self, fq: FieldQ, t, h, state, args):
        """One step from t to t + h: returns (new state, integral of q over the step)."""
        raise NotImplementedError

    def inverse(self, fq: FieldQ, t, h, state, args):
        """The state at t from the state at t + h (reversible integrators only)."""
        raise NotImplementedError(f"{type(self).__name__} is not algebraically reversible")

    def value(self, state):
        """y, read off the integrator state."""
        return state

    def extra_nfe(self, state):
        """Evaluations counted at run time (Newton iterations); 0 for explicit methods."""
        return 0

    def step(self, f, t, h, y, args=None):
        """One step of y' = f(t, y, args) from a plain y: init, advance, value.

        A convenience for notebooks (e.g. one residual block); `odeint` never calls it.
        """
        fq = without_quadrature(f)
        state = self.init(fq, t, y, args)
        state, _ = self.advance(fq, t, h, state, args)
        return self.value(state)


def without_quadrature(f) -> FieldQ:
    """Lift f(t, y, args) to the fq form with no quadrature integrand."""
    return lambda t, y, args: (f(t, y, args), ())


def combine(base, h, coeffs, terms):
    """base + h * sum_j coeffs[j] * terms[j] over pytrees, skipping zero coefficients.

    `base=None` means zero. With every coefficient zero the base is returned untouched, so
    Euler's first stage is evaluated exactly at y.
    """
    used = [(c, k) for c, k in zip(coeffs, terms) if c != 0]
    if not used:
        return base

    def leaf(b, *ks):
        acc = None
        for (c, _), k in zip(used, ks):
            term = k if c == 1 else c * k
            acc = term if acc is None else acc + term
        inc = h * acc
        return inc if b is None else b + inc

    ks = [k for _, k in used]
    if base is None:
        return jax.tree.map(lambda *ks_: leaf(None, *ks_), *ks)
    return jax.tree.map(leaf, base, *ks)


REGISTRY: Registry[Integrator] = Registry("integrator", Integrator)
register = REGISTRY.register
