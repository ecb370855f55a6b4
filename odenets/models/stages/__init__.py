"""Stages that are not a plain `odeint` of a field: other step rules over per-step stacks.

plain (no skip), momentum (Sander et al. 2021), Hamiltonian leapfrog (Haber & Ruthotto 2017)
and dense concatenation (Huang et al. 2017) are their own scans / loops; ANODE's augmentation
wraps an `ODEBlock`. Every stage records `SolverStats` like an ODEBlock.
"""

from odenets.models.stages.augmented import AugmentedBlock
from odenets.models.stages.dense import DenseBlock
from odenets.models.stages.hamiltonian import HamiltonianBlock
from odenets.models.stages.momentum import MomentumBlock, MomentumStep, momentum_solver
from odenets.models.stages.plain import PlainBlock
from odenets.models.stages.scan import ScanStage, scan_layers

__all__ = ["AugmentedBlock", "DenseBlock", "HamiltonianBlock", "MomentumBlock", "MomentumStep", "PlainBlock",
           "ScanStage", "momentum_solver", "scan_layers"]
