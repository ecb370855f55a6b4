"""A vector field given as a function f(t, x, args), an NNX module or `PerStep(module)`, as one
function of (t, x, args) that jit can key on (so every step of a stack reuses one compilation)."""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from odenets.perstep import PerStep


@dataclasses.dataclass(frozen=True)
class Merged:
    """field(t, x, state) = nnx.merge(graphdef, state)(t, x): hashable by its graph."""

    graphdef: Any

    def __call__(self, t, x, state):
        return nnx.merge(self.graphdef, state)(t, x)


def as_field(f, args=None):
    """(field(t, x, args), args): an NNX module (or `PerStep(module)`) is split into its graph
    and parameters (`PerStep(parameters)` for a stack); a function is passed through."""
    per_step = isinstance(f, PerStep)
    module = f.tree if per_step else f
    if isinstance(module, nnx.Module):
        if args is not None:
            raise ValueError("an NNX module `f` carries its own parameters: pass args=None")
        graphdef, state = nnx.split(module)
        return Merged(graphdef), (PerStep(state) if per_step else state)
    if per_step or not callable(f):
        raise TypeError(f"f must be a function f(t, x, args), an NNX module or PerStep(stacked module), got "
                        f"{type(module).__name__}")
    return f, args
