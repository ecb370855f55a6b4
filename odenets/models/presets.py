"""Presets (named build configs) and parameter counting.

chen_resnet_*: Chen et al.'s (2018) MNIST ResNet, from torchdiffeq's examples/odenet_mnist.py:
    conv downsampling stem (conv3 -> GN-ReLU-conv4/2 -> GN-ReLU-conv4/2), 6 pre-activation
    residual blocks at 64 channels (here ConvField without time: GN-ReLU-conv-GN-ReLU-conv-GN,
    with biases; Chen's ResBlock has no conv biases and no trailing norm), GN-ReLU-pool-linear head.
chen_odenet_*: the same with ONE ODE block instead: a shared ConvField with ConcatConv time
    channels, `depth`=6 steps of the family's fixed-step integrator (node: RK4) on [0, 1].
    Chen's own solver is adaptive, Dopri5 with rtol = atol = 1e-3 (his --tol) and backprop
    through the solver: `preset("chen_odenet_1d", **CHEN_DOPRI5)`.
Both unroll their 6 steps into straight-line code (unroll=True). Their fields' convolutions
(`odenets.fields.conv.conv_general_dilated`) keep the backward convolutions canonical inside loops,
so unroll=1 (and an adaptive solve's while loop) costs about the same per step (benchmark case 6).
*_1d: MNIST-1D, input (40, 1); *_2d: MNIST, input (28, 28, 1). 10 classes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx

from odenets.integrators import Dopri5

_CHEN = {"width": 64, "depth": 6, "stem": "chen", "field": "basic", "preact": True, "unroll": True}
_SHAPES = {"1d": ("conv1d", (40, 1)), "2d": ("conv2d", (28, 28, 1))}
_NETS = {
    "resnet": {"family": "resnet", "time": False, "step_size": "one"},
    "odenet": {"family": "node", "time": True},
}
PRESETS: dict[str, dict[str, Any]] = {
    f"chen_{net}_{dim}": {**_NETS[net], "kind": kind, **_CHEN, "input_shape": shape, "num_classes": 10}
    for net in _NETS
    for dim, (kind, shape) in _SHAPES.items()
}
CHEN_DOPRI5: dict[str, Any] = {"integrator": Dopri5(rtol=1e-3, atol=1e-3), "gradient": "backprop", "unroll": 1}


def preset(name: str, **overrides) -> dict[str, Any]:
    """The build kwargs of a preset (family, its options, input_shape, num_classes), with
    `overrides` applied: `odenets.models.build(**preset("chen_odenet_1d", width=32))`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid choices: {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def param_count(model: nnx.Module) -> int:
    """The number of scalar parameters (nnx.Param leaves); works on `nnx.eval_shape` models too."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
