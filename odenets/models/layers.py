"""The non-ODE parts of a classifier: stems, transitions between stages, heads, norm-act-weight units.

Channels-last everywhere; `ndim` is the number of spatial axes (0 for flat features, where a
"convolution" is a Linear layer). Normalisation is GroupNorm, never BatchNorm.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

KIND_NDIM = {"mlp": 0, "conv1d": 1, "conv2d": 2}


def weight(cin: int, cout: int, ndim: int, *, kernel: int = 1, stride: int = 1, padding="SAME", rngs, **kw):
    """A Linear layer (ndim = 0) or a `kernel`-wide convolution over `ndim` spatial axes."""
    if ndim == 0:
        return nnx.Linear(cin, cout, rngs=rngs, **kw)
    return nnx.Conv(cin, cout, (kernel,) * ndim, strides=stride, padding=padding, rngs=rngs, **kw)


def norm(channels: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """GroupNorm with gcd(channels, groups) groups (always a divisor of channels)."""
    return nnx.GroupNorm(channels, num_groups=math.gcd(channels, groups), rngs=rngs)


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


class Projection(nnx.Module):
    """A transition between stages: the projection shortcut of He et al., W 1x1 (stride 2 when
    downsampling) then GroupNorm. Changes width and/or resolution, which no ODE step can."""

    def __init__(self, cin, cout, ndim, *, stride=1, groups, rngs):
        self.weight = weight(cin, cout, ndim, stride=stride, rngs=rngs)
        self.norm = norm(cout, groups, rngs)

    def __call__(self, x):
        return self.norm(self.weight(x))


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


# -- stems: (B, *input) -> (B, *spatial, width) --------------------------------------------------


class LinearStem(nnx.Module):
    """Linear from the flattened input (the mlp kind)."""

    kinds = ("mlp",)

    def __init__(self, cin, width, ndim, *, groups, rngs):
        self.linear = nnx.Linear(cin, width, rngs=rngs)

    @staticmethod
    def spatial(sizes):
        return sizes

    def __call__(self, x):
        return self.linear(x)


class ConvStem(nnx.Module):
    """One 3-wide SAME convolution to `width` channels (resolution kept)."""

    kinds = ("conv1d", "conv2d")

    def __init__(self, cin, width, ndim, *, groups, rngs):
        self.conv = weight(cin, width, ndim, kernel=3, rngs=rngs)

    @staticmethod
    def spatial(sizes):
        return sizes

    def __call__(self, x):
        return self.conv(x)


class ChenStem(nnx.Module):
    """The downsampling of Chen et al.'s odenet_mnist.py ("conv" method): conv3 (VALID) ->
    GN-ReLU-conv4 stride 2 pad 1 -> GN-ReLU-conv4 stride 2 pad 1 (28 -> 6 for MNIST, 40 -> 9 for MNIST-1D)."""

    kinds = ("conv1d", "conv2d")

    def __init__(self, cin, width, ndim, *, groups, rngs):
        pad = ((1, 1),) * ndim
        self.conv0 = weight(cin, width, ndim, kernel=3, padding="VALID", rngs=rngs)
        self.norm1 = norm(width, groups, rngs)
        self.conv1 = weight(width, width, ndim, kernel=4, stride=2, padding=pad, rngs=rngs)
        self.norm2 = norm(width, groups, rngs)
        self.conv2 = weight(width, width, ndim, kernel=4, stride=2, padding=pad, rngs=rngs)

    @staticmethod
    def spatial(sizes):
        down = lambda n: (n + 2 - 4) // 2 + 1
        return tuple(down(down(n - 2)) if n >= 2 else 0 for n in sizes)

    def __call__(self, x):
        x = self.conv0(x)
        x = self.conv1(jax.nn.relu(self.norm1(x)))
        return self.conv2(jax.nn.relu(self.norm2(x)))


STEMS = {"linear": LinearStem, "conv": ConvStem, "chen": ChenStem}
