"""Gradient strategies: Backprop, Checkpoint, Adjoint, Reversible."""

# ruff: noqa: I001 (import order is registry order: cheapest in time first)
from odenets.gradients.base import REGISTRY, Gradient
from odenets.gradients.backprop import Backprop
from odenets.gradients.checkpoint import Checkpoint
from odenets.gradients.adjoint import Adjoint
from odenets.gradients.reversible import Reversible

gradient = REGISTRY

__all__ = ["Adjoint", "Backprop", "Checkpoint", "Gradient", "Reversible", "gradient"]
