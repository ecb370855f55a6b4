"""Models: ODE blocks, classifiers (stem -> stages -> head) and model families by name.

    build("resnet", kind="conv1d", input_shape=(40, 1), num_classes=10, width=32, depth=6)
    build(**preset("chen_odenet_1d"))

`family` is the registry of families (resnet, plain, node, anode, highway, densenet,
momentum, antisymmetric, hamiltonian); `solver_stats(model)` sums the NFE counts that every
stage records on its last call.
"""

from odenets.models.block import ODEBlock, SolverStats, solver_stats
from odenets.models.classifier import Classifier, build
from odenets.models.config import ModelConfig
from odenets.models.families import REGISTRY as family
from odenets.models.families import Family
from odenets.models.presets import PRESETS, param_count, preset

__all__ = [
    "PRESETS", "Classifier", "Family", "ModelConfig", "ODEBlock", "SolverStats", "build", "family",
    "param_count", "preset", "solver_stats",
]
