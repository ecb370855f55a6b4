"""Models: ODE blocks, classifiers (stem -> stages -> head) and model families by name.

    build("resnet", input_shape=(40, 1), num_classes=10, width=32, depth=6)   # kind from the rank
    family("node", width=16).build((2,), num_classes=2)
    build(**preset("chen_odenet_1d"))

`family` is the registry of families (resnet, plain, node, anode, highway, densenet,
momentum, antisymmetric, hamiltonian): each a dataclass whose fields are its options
(`family.get(name).options`; `.takes_integrator` / `.takes_gradient` say whether the integrator
and gradient axes apply). `stem` is the registry of stems. `solver_stats(model)` sums the NFE
counts that every stage records on its last call; `regularisation(model)` sums the RNODE
penalties of its ODE blocks (families' lambda_K, lambda_J; `odenets.rnode`).
"""

# ruff: noqa: I001 (base before families: importing families registers them, in this order)
from __future__ import annotations

from typing import TYPE_CHECKING

from odenets.models.base import REGISTRY
from odenets.models.base import REGISTRY as family
from odenets.models.base import Family, Fields, Integrated, Layered, Scanned, Solved, Stepped
from odenets.models.families import Residual, SharedODE
from odenets.models.block import NoiseKey, ODEBlock, Penalty, SolverStats, regularisation, solver_stats
from odenets.models.block import BackwardProbe, record_backward, stage_totals
from odenets.models.classifier import Classifier
from odenets.models.trajectory import Trajectory, trajectory
from odenets.models.base import check_trajectories
from odenets.models.presets import CHEN_DOPRI5, PRESETS, param_count, preset
from odenets.models.stems import REGISTRY as stem
from odenets.models.stems import Stem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flax import nnx


def build(family: str | Family, *, input_shape: Sequence[int], num_classes: int, rngs: nnx.Rngs | int = 0,
          **options) -> Classifier:
    """A classifier of the named family (or a `Family` instance) for inputs (B, *input_shape).

    Every option is checked first (unknown family / option / choice, options the family does not
    take, input_shape rank, GroupNorm divisibility, ...) with a ValueError that names the key, the
    bad value and the valid choices; parameters are allocated only after that. An option given
    as None counts as not given. `rngs`: an nnx.Rngs or an int seed.
    """
    options = {key: value for key, value in options.items() if value is not None}
    return REGISTRY(family, **options).build(input_shape, num_classes, rngs=rngs)


__all__ = [
    "BackwardProbe", "CHEN_DOPRI5", "PRESETS", "Classifier", "Family", "Fields", "Integrated", "Layered",
    "NoiseKey", "ODEBlock",
    "Penalty", "Residual", "Scanned", "SharedODE", "SolverStats", "Solved", "Stem", "Stepped", "Trajectory",
    "build", "check_trajectories", "family", "param_count", "preset", "record_backward", "regularisation",
    "solver_stats", "stage_totals", "stem", "trajectory",
]
