"""Integrators: explicit (Butcher tableaux), implicit (theta methods + Newton), reversible, adaptive."""

# ruff: noqa: I001 (import order is registry order: fixed-step first, then adaptive)
from odenets.integrators.base import REGISTRY, Integrator
from odenets.integrators.fixed import FixedStepIntegrator
from odenets.integrators.explicit import RK4, ButcherTableau, Euler, ExplicitRK, Heun, Midpoint
from odenets.integrators.implicit import BackwardEuler, ThetaMethod, Trapezoid
from odenets.integrators.reversible import ReversibleHeun, ReversibleIntegrator
from odenets.integrators.adaptive import AdaptiveIntegrator, Dopri5, Kvaerno5, Tsit5

integrator = REGISTRY

__all__ = [
    "AdaptiveIntegrator", "BackwardEuler", "ButcherTableau", "Dopri5", "Euler", "ExplicitRK",
    "FixedStepIntegrator", "Heun", "Integrator", "Kvaerno5", "Midpoint", "RK4", "ReversibleHeun",
    "ReversibleIntegrator", "ThetaMethod", "Trapezoid", "Tsit5", "integrator",
]
