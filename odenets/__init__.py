"""odenets: residual networks as discretisations of ODEs, in JAX and Flax NNX.

    x_{k+1} = x_k + h F(t_k, x_k; theta_k)    (a residual block: one Euler step)
    dx/dt   = F(t, x; theta(t))                (its continuous limit)
"""

from odenets import analysis, fields
from odenets.gradients import Adjoint, Backprop, Checkpoint, Gradient, Reversible, gradient
from odenets.integrators import (
    RK4,
    BackwardEuler,
    Dopri5,
    Euler,
    Heun,
    Integrator,
    Kvaerno5,
    Midpoint,
    ReversibleHeun,
    Trapezoid,
    Tsit5,
    integrator,
)
from odenets.perstep import PerStep
from odenets.rnode import RNODE, rnode_odeint
from odenets.solve import Solution, odeint

__all__ = [
    "RK4", "Adjoint", "BackwardEuler", "Backprop", "Checkpoint", "Dopri5", "Euler", "Gradient",
    "Heun", "Integrator", "Kvaerno5", "Midpoint", "PerStep", "RNODE", "Reversible", "ReversibleHeun",
    "Solution", "Trapezoid", "Tsit5", "analysis", "fields", "gradient", "integrator", "odeint", "rnode_odeint",
]
