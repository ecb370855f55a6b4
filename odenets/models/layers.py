"""The non-ODE parts of a classifier: transitions between stages, heads, norm-act-weight units.

Channels-last everywhere; `ndim` is the number of spatial axes (0 for flat features, where a
"convolution" is a Linear layer). Normalisation is GroupNorm, never BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.conv import conv_layer
from odenets.fields.norm import GroupNorm

KIND_NDIM = {"mlp": 0, "conv1d": 1, "conv2d": 2}


def weight(cin: int, cout: int, ndim: int, *, kernel: int = 1, stride: int = 1,
           padding: str | Sequence[tuple[int, int]] = "SAME", rngs, **kw):
    """A Linear layer (ndim = 0) or a `kernel`-wide convolution over `ndim` spatial axes."""
    if ndim == 0:
        return nnx.Linear(cin, cout, rngs=rngs, **kw)
    return conv_layer(cin, cout, (kernel,) * ndim, strides=stride, padding=padding, rngs=rngs, **kw)


def norm(channels: int, groups: int, rngs: nnx.Rngs) -> GroupNorm:
    """GroupNorm (`odenets.fields.norm`) with gcd(channels, groups) groups (always a divisor of channels)."""
    return GroupNorm(channels, num_groups=math.gcd(channels, groups), rngs=rngs)


@final
class Unit(nnx.Module):
    """One weight layer with its GroupNorm and ReLU: GN-ReLU-W (preact) or W-GN-ReLU."""

    def __init__(self, cin, cout, ndim, *, kernel=3, preact=False, groups, rngs):
        self.preact = preact
        self.norm = norm(cin if preact else cout, groups, rngs)
        self.weight = weight(cin, cout, ndim, kernel=kernel, rngs=rngs)

    def __call__(self, x):
        if self.preact:
            return self.weight(jax.nn.relu(self.norm(x)))
        return jax.nn.relu(self.norm(self.weight(x)))


@final
class Projection(nnx.Module):
    """A transition between stages: the projection shortcut of He et al., W 1x1 (stride 2 when
    downsampling) then GroupNorm. Changes width and/or resolution, which no ODE step can."""

    def __init__(self, cin, cout, ndim, *, stride=1, groups, rngs):
        self.weight = weight(cin, cout, ndim, stride=stride, rngs=rngs)
        self.norm = norm(cout, groups, rngs)

    def __call__(self, x):
        return self.norm(self.weight(x))


@final
class Head(nnx.Module):
    """GN -> ReLU -> global average pool over the spatial axes -> Linear to the logits."""

    def __init__(self, channels, num_classes, ndim, *, groups, rngs):
        self.ndim = ndim
        self.norm = norm(channels, groups, rngs)
        self.linear = nnx.Linear(channels, num_classes, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.norm(x))
        if self.ndim:
            x = jnp.mean(x, axis=tuple(range(1, 1 + self.ndim)))
        return self.linear(x)
