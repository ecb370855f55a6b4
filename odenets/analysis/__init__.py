"""Analysis of solves and models: pure functions on integrators, fields, models and solutions.

    stability_function(integrator)(z)        R(z), read off the method's own step
    amplification_matrix(integrator, z)      the step's linear map of the state it carries
    stable, fraction_inside, plot_regions    stability regions, and eigenvalues inside them
    jacobian_spectrum(f, x, ...)             eigenvalues of h dF/dx at a state
    step_spectra(model, x, ...)              ... at every step of a forward trajectory
    observe(f, x0, ...), observe_model(...)  states, residuals F(x_k), gradients dL/dx_k per step
    gradient_flow(model, x, y)               |dL/dx_l| and std F_l(x_l) at every layer of any model
    highway_gates(model, x)                  a highway net's transform gates g_l per layer (gates)
    layer_graph, shortest_paths              the layer graph; shortest gradient paths per layer (topology)
    jacobian_product, path_expansion         prod (I + J_l) and its 2^L paths; layer_jacobians J_l
    restack, delete, accuracy, ...           lesions and reorderings of per-step blocks (lesion)
    interpolate_depth(model, M)              per-step weights interpolated in depth (depth)
    smooth_depth(model, K), roughness        a smooth-in-depth initialisation; |theta_{k+1} - theta_k|^2 (depth)
    path_gradients, stage_paths, ...         the unrolled view: gradient per path length (paths)
    spectral_norm, block_lipschitz           power-iteration Lipschitz estimates (lipschitz)
    fgsm, pgd, attack_accuracy               L_inf attacks (attacks)
    magnitude_masks, masked, ...             lottery-ticket pruning masks (prune)
    block_mask, frozen, with_mask            blocks frozen while others train: stagewise training (freeze)
"""

from odenets.analysis.attacks import attack_accuracy, fgsm, pgd
from odenets.analysis.depth import (
    depth_weights,
    interpolate_depth,
    interpolate_stack,
    per_step_params,
    roughness,
    smooth_depth,
    smooth_stack,
)
from odenets.analysis.freeze import block_mask, frozen, with_mask
from odenets.analysis.gates import Gates, highway_gates
from odenets.analysis.gradflow import (
    GradFlow,
    PathExpansion,
    gradient_flow,
    jacobian_product,
    layer_jacobians,
    path_expansion,
)
from odenets.analysis.lesion import accuracy as lesion_accuracy
from odenets.analysis.lesion import blocks, delete_blocks, keep_orders, random_deletion, random_swaps, restack
from odenets.analysis.lipschitz import Lipschitz, block_lipschitz, spectral_norm
from odenets.analysis.observe import Observation, observe, observe_block, observe_model
from odenets.analysis.paths import (
    Paths,
    path_counts,
    path_gradients,
    path_length_distribution,
    sample_path_gradients,
    stage_paths,
)
from odenets.analysis.prune import (
    MaskedState,
    apply_masks,
    kept_fraction,
    magnitude_masks,
    masked,
    ones_like,
    random_masks,
    rewind,
    transfer_masks,
    weights_only,
)
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
from odenets.analysis.topology import LayerGraph, ShortestPaths, layer_graph, shortest_paths

__all__ = [
    "Observation", "StepSpectrum", "amplification_matrix", "block_spectra", "carried_size", "fixed_step",
    "fraction_inside",
    "reach", "jacobian_spectrum", "observe", "observe_block", "observe_model", "plot_regions",
    "region_grid", "stability_function", "stable", "step_spectra",
    "Gates", "GradFlow", "PathExpansion", "gradient_flow", "highway_gates", "jacobian_product",
    "layer_jacobians", "path_expansion", "LayerGraph", "ShortestPaths", "layer_graph", "shortest_paths",
    "Lipschitz", "MaskedState", "Paths", "apply_masks", "attack_accuracy", "block_lipschitz", "blocks",
    "delete_blocks", "depth_weights", "per_step_params", "roughness", "smooth_depth", "smooth_stack",
    "fgsm", "interpolate_depth", "interpolate_stack", "keep_orders", "kept_fraction", "lesion_accuracy",
    "magnitude_masks", "masked", "ones_like", "path_counts", "path_gradients", "path_length_distribution", "pgd",
    "random_deletion", "random_masks", "random_swaps", "restack", "rewind", "sample_path_gradients",
    "spectral_norm", "stage_paths", "transfer_masks", "weights_only", "block_mask", "frozen", "with_mask",
]
