"""The interface every integrator implements, the integrator registry, and the stage arithmetic.

An integrator owns its whole solve: `solve(field, t0, t1, x0, args, gradient, ...)` returns
(x(t1), the states on the save grid or None, stats). Fixed-step integrators (`fixed.py`) run
the step loop that the gradient strategy differentiates; adaptive ones (`adaptive.py`) hand
the problem to diffrax with the adjoint that plays the strategy's role. `odeint` never asks
which kind it holds; `adaptive` stays readable for callers that do.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax import lax

from odenets._registry import Registry

if TYPE_CHECKING:
    from odenets.gradients.base import Gradient


@dataclasses.dataclass(frozen=True)
class Integrator(abc.ABC):
    """A solve rule for dx/dt = f(t, x, args). Concrete integrators are frozen, final dataclasses
    (hashable, usable as jit static arguments); the registry gives each its `name`."""

    name: ClassVar[str]
    adaptive: ClassVar[bool]
    reversible: ClassVar[bool] = False

    if TYPE_CHECKING:  # a class attribute on concrete integrators; the abstract property keeps this class abstract
        order: ClassVar[int]
    else:

        @property
        @abc.abstractmethod
        def order(self) -> int:
            """The order p of the global error, O(h^p) (a class attribute on concrete integrators)."""

    def check(self, gradient: Gradient, *, per_step: bool, unroll: int | bool) -> None:
        """Raise ValueError, naming the valid choices, for what this integrator cannot do."""

    @abc.abstractmethod
    def solve(self, field, t0, t1, x0, args, gradient: Gradient, *, steps: int, save_all: bool,
              unroll: int | bool, probe=None) -> tuple[Any, Any, dict]:
        """(x(t1), states at t0 + k (t1 - t0) / steps for k = 0..steps or None, stats).

        `field(t, x, args)` returns dx/dt in x's dtypes; t0 and t1 are real scalars in x's
        precision, checked by `odeint`; `args` may be a `PerStep`. probe: None, or a real scalar
        whose cotangent under reverse mode is the backward pass's evaluation count (`count_backward`)."""


def count_backward(out, probe, count):
    """`out` itself; under reverse mode the cotangent of the scalar `probe` is `count`, the number of
    vector-field evaluations the backward pass of the solve that produced `out` makes (-1 for None:
    unknown). A probe of 0 differentiated with the loss thus reads the count out of a backward pass
    (a count known only at run time included); probe None: `out` unchanged, nothing attached."""
    if probe is None:
        return out
    return _counted(out, probe, jnp.asarray(-1 if count is None else count).astype(jnp.result_type(probe)))


@jax.custom_vjp
def _counted(out, probe, count):
    return out


def _counted_fwd(out, probe, count):
    return out, count


def _counted_bwd(count, ct):
    return ct, count, jnp.zeros_like(count)


_counted.defvjp(_counted_fwd, _counted_bwd)


def combine(base, h, coeffs, terms):
    """base + h * sum_j coeffs[j] * terms[j] over pytrees, skipping zero coefficients.

    `base=None` means zero. With every coefficient zero the base is returned untouched, so
    Euler's first stage is evaluated exactly at y. h is real and cast to each leaf's dtype, so
    complex states take real steps without an implicit promotion.
    """
    used = [(c, k) for c, k in zip(coeffs, terms) if c != 0]
    if not used:
        return base

    def leaf(b, *ks):
        acc = None
        for (c, _), k in zip(used, ks):
            term = k if c == 1 else c * k
            acc = term if acc is None else acc + term
        assert acc is not None  # `used` is not empty
        inc = acc * jnp.asarray(h).astype(acc.dtype)
        return inc if b is None else b + inc

    ks = [k for _, k in used]
    if base is None:
        return jax.tree.map(lambda *ks_: leaf(None, *ks_), *ks)
    return jax.tree.map(leaf, base, *ks)


def real_view(like):
    """(to_real, from_real) for pytrees shaped like `like`: complex leaves become (re, im) pairs,
    and every real part is widened to the widest precision among the leaves.

    Solvers outside JAX's core (diffrax, optimistix's Newton) are exact on real numbers of one
    dtype only; they see the real view, and each leaf is rebuilt in its own dtype on the way out
    (z = re + i im for complex leaves, differentiably), so a float32 leaf beside a float64 leaf
    stays float32.
    """
    leaves, tree = jax.tree.flatten(like)
    dtypes = [jnp.result_type(v) for v in leaves]
    kinds = [jnp.iscomplexobj(v) for v in leaves]
    wide = max((jnp.finfo(d).dtype for d in dtypes), key=lambda d: d.itemsize)

    def to_real(x):
        up = lambda v: v.astype(wide)
        return [(up(v.real), up(v.imag)) if c else up(v) for v, c in zip(jax.tree.leaves(x), kinds)]

    def from_real(r):
        return tree.unflatten([(lax.complex(*v) if c else v).astype(d) for v, c, d in zip(r, kinds, dtypes)])

    return to_real, from_real


def concrete(tree) -> bool:
    """Whether every leaf holds a value now (no tracer): checks on results can run in Python."""
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(tree))


def all_finite(tree) -> bool:
    """Every entry of every (concrete) leaf finite: one numpy reduction per leaf (no JAX dispatch)."""
    return all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(tree))


def blowup_message(name: str, where: str) -> str:
    """The one message for a state that became non-finite during a solve (`where`: when)."""
    return (f"odeint: the state became non-finite (NaN or Inf) {where} with integrator {name!r}, from a finite "
            f"x0: the solution blows up or the steps are too large. Try a smaller step h (more steps), an "
            f"implicit (backward_euler, trapezoid) or adaptive (dopri5, kvaerno5) integrator, and check the "
            f"vector field f for values that grow without bound")


REGISTRY: Registry[Integrator] = Registry("integrator", Integrator)
register = REGISTRY.register
