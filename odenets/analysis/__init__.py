"""Analysis of solves and models: pure functions on integrators, fields, models and solutions.

    stability_function(integrator)(z)       R(z), from the method's own step
    amplification_matrix(integrator, z)      the step's linear map of the carried state
    stable, fraction_inside, plot_regions    stability regions and eigenvalues in them
    jacobian_spectrum(f, x, ...)             eigenvalues of h dF/dx at a state
    step_spectra(model, x, ...)              ... at every step of a model's forward trajectory
    observe(f, x0, ...), observe_model(...)  states, residuals F(x_k), gradients dL/dx_k per step
"""

from odenets.analysis.stability import (
    amplification_matrix,
    carried_size,
    fraction_inside,
    stability_function,
    stable,
)

__all__ = ["amplification_matrix", "carried_size", "fraction_inside", "stability_function", "stable"]
