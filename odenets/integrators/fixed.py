"""Fixed-step integrators: a step rule on an integrator state, run `steps` times by a `Stepper`.

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

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from odenets.integrators.base import Integrator, all_finite, blowup_message, concrete, count_backward
from odenets.perstep import PerStep
from odenets.stepper import Stepper

FieldQ = Callable[[Any, Any, Any], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class FixedStepIntegrator(Integrator):
    """A step rule of fixed size h = (t1 - t0) / steps; the gradient strategy drives the loop."""

    adaptive: ClassVar[bool] = False
    # vector-field evaluations made by init / begin_step / advance / inverse
    nfe_init: ClassVar[int] = 0
    nfe_begin: ClassVar[int] = 0
    nfe_step: ClassVar[int] = 0
    nfe_inverse: ClassVar[int] = 0
    # True when a step's cost is only known at run time (Newton): counts of backward passes
    # are then None rather than a number that leaves the iterations out
    dynamic_nfe: ClassVar[bool] = False

    def init(self, fq: FieldQ, t0, y0, args):
        """The integrator state at t0."""
        return y0

    def begin_step(self, fq: FieldQ, t, state, args):
        """Called at the start of a step whose arguments differ from the last step's (PerStep).

        Methods that cache f across steps must re-evaluate it with the new arguments here.
        """
        return state

    @abc.abstractmethod
    def advance(self, fq: FieldQ, t, h, state, args) -> tuple[Any, Any]:
        """One step from t to t + h: returns (new state, integral of q over the step)."""

    def value(self, state):
        """y, read off the integrator state."""
        return state

    def extra_nfe(self, state):
        """Evaluations counted at run time (Newton iterations); 0 for explicit methods."""
        return 0

    def solve(self, field, t0, t1, x0, args, gradient, *, steps, save_all, unroll, probe=None):
        per_step = isinstance(args, PerStep)
        traced = any(isinstance(t, jax.core.Tracer) for t in (t0, t1))
        stepper = Stepper(self, field, steps, per_step, save_all, unroll, traced_times=traced)
        state, ys = gradient.solve(stepper, t0, (t1 - t0) / steps, x0, args.tree if per_step else args)
        xs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, ys) if save_all else None
        if concrete(self.value(state)) and not all_finite(self.value(state)):
            self._blowup(field, t0, t1, x0, args, steps, xs)
        stats = {
            "nfe": stepper.nfe_forward() + self.extra_nfe(state),
            "nfe_backward": gradient.nfe_backward(stepper),
            "steps": steps,
            "rejected": 0,
        }
        x, xs = count_backward((self.value(state), xs), probe, stats["nfe_backward"])
        return x, xs, stats

    def _blowup(self, field, t0, t1, x0, args, steps, xs):
        """Raise the blow-up error naming the first step whose end state is non-finite (found
        from the saved states, or by solving again with them: only on this failure path)."""
        if xs is None:
            stepper = Stepper(self, field, steps, isinstance(args, PerStep), True)
            h = (t1 - t0) / steps
            _, ys = stepper.run(t0, h, x0, args.tree if isinstance(args, PerStep) else args)
            xs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, ys)
        bad = np.zeros(steps + 1, bool)
        for v in jax.tree.leaves(xs):
            bad |= ~np.isfinite(np.asarray(v)).reshape(steps + 1, -1).all(axis=1)
        k = int(np.argmax(bad)) if bad.any() else steps
        t = lambda j: float(t0 + (t1 - t0) * j / steps)
        raise ValueError(blowup_message(self.name, f"in step {k} of {steps}, between t={t(k - 1):.6g} and "
                                                   f"t={t(k):.6g}"))
