"""Analysis of solves and models: pure functions on integrators, fields, models and solutions.

    stability_function(integrator)(z)        R(z), read off the method's own step
    amplification_matrix(integrator, z)      the step's linear map of the state it carries
    stable, fraction_inside, plot_regions    stability regions, and eigenvalues inside them
    jacobian_spectrum(f, x, ...)             eigenvalues of h dF/dx at a state
    step_spectra(model, x, ...)              ... at every step of a forward trajectory
    observe(f, x0, ...), observe_model(...)  states, residuals F(x_k), gradients dL/dx_k per step
    gradient_flow(model, x, y)               |dL/dx_l| and std F_l(x_l) at every layer of any model
    jacobian_product, path_expansion         prod (I + J_l) and its 2^L paths; layer_jacobians J_l
"""

from odenets.analysis.gradflow import (
    GradFlow,
    PathExpansion,
    gradient_flow,
    jacobian_product,
    layer_jacobians,
    path_expansion,
)
from odenets.analysis.observe import Observation, observe, observe_block, observe_model
from odenets.analysis.regions import plot_regions, region_grid
from odenets.analysis.spectra import jacobian_spectrum
from odenets.analysis.stability import (
    amplification_matrix,
    carried_size,
    fixed_step,
    fraction_inside,
    reach,
    stability_function,
    stable,
)
from odenets.analysis.steps import StepSpectrum, block_spectra, step_spectra

__all__ = [
    "Observation", "StepSpectrum", "amplification_matrix", "block_spectra", "carried_size", "fixed_step",
    "fraction_inside",
    "reach", "jacobian_spectrum", "observe", "observe_block", "observe_model", "plot_regions",
    "region_grid", "stability_function", "stable", "step_spectra",
    "GradFlow", "PathExpansion", "gradient_flow", "jacobian_product", "layer_jacobians", "path_expansion",
]
