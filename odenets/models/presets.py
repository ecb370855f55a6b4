"""Presets (named build configs) and parameter counting.

chen_resnet_*: Chen et al.'s (2018) MNIST ResNet, from torchdiffeq's examples/odenet_mnist.py:
    conv downsampling stem (conv3 -> GN-ReLU-conv4/2 -> GN-ReLU-conv4/2), 6 pre-activation
    residual blocks at 64 channels (here ConvField without time: GN-ReLU-conv-GN-ReLU-conv-GN,
    with biases; Chen's ResBlock has no conv biases and no trailing norm), GN-ReLU-pool-linear head.
chen_odenet_*: the same with ONE ODE block instead: a shared ConvField with ConcatConv time
    channels, Dopri5 with rtol = atol = 1e-3 (Chen's --tol), backprop through the solver
    (Chen's default --adjoint False). depth=6 sets the step count if a fixed-step integrator is
    swapped in.
*_1d: MNIST-1D, input (40, 1); *_2d: MNIST, input (28, 28, 1). 10 classes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx

from odenets.integrators import Dopri5

_CHEN = {"width": 64, "depth": 6, "stem": "chen", "field": "basic", "preact": True, "num_classes": 10}
_SHAPES = {"1d": ("conv1d", (40, 1)), "2d": ("conv2d", (28, 28, 1))}
_NETS = {
    "resnet": {"family": "resnet", "time": False, "step_size": "one"},
    "odenet": {"family": "node", "time": True, "integrator": Dopri5(rtol=1e-3, atol=1e-3), "gradient": "backprop"},
}
PRESETS: dict[str, dict[str, Any]] = {
    f"chen_{net}_{dim}": {**_NETS[net], "kind": kind, "input_shape": shape, **_CHEN}
    for net in _NETS
    for dim, (kind, shape) in _SHAPES.items()
}


def preset(name: str, **overrides) -> dict[str, Any]:
    """The build kwargs of a preset (family included), with `overrides` applied:
    `odenets.models.build(**preset("chen_odenet_1d", width=32))`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid choices: {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def param_count(model: nnx.Module) -> int:
    """The number of scalar parameters (nnx.Param leaves); works on `nnx.eval_shape` models too."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
