"""Stems by name (`odenets.models.stem`): (B, *input) -> (B, *spatial, width), before the first stage.

A stem declares the kinds it applies to and how it changes the spatial sizes, so a model config
is checked (and its default stem chosen: the first registered one that applies to the kind)
before any parameter exists.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import jax
from flax import nnx

from odenets._abstract import final
from odenets._registry import Registry
from odenets.models.layers import norm, weight


class Stem(nnx.Module):
    """The first layer(s) of a classifier, built as `Stem(cin, width, ndim, groups=, rngs=)`: `cin`
    input channels (features, for mlp) to `width` channels."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    if TYPE_CHECKING:  # the constructor every stem has

        def __init__(self, cin: int, width: int, ndim: int, *, groups: int, rngs: nnx.Rngs) -> None: ...

    @staticmethod
    def spatial(sizes: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial sizes after the stem (kept, unless a stem says otherwise)."""
        return sizes

    @abc.abstractmethod
    def __call__(self, x: jax.Array) -> jax.Array: ...


REGISTRY: Registry[Stem] = Registry("stem", Stem)


def default_stem(kind: str) -> str:
    """The first registered stem that applies to `kind` (linear for mlp, conv for conv kinds)."""
    return next(name for name in REGISTRY.names() if kind in REGISTRY.get(name).kinds)


@REGISTRY.register("linear")
@final
class LinearStem(Stem):
    """Linear from the flattened input (the mlp kind)."""

    kinds = ("mlp",)

    def __init__(self, cin, width, ndim, *, groups, rngs):
        self.linear = nnx.Linear(cin, width, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


@REGISTRY.register("conv")
@final
class ConvStem(Stem):
    """One 3-wide SAME convolution to `width` channels (resolution kept)."""

    kinds = ("conv1d", "conv2d")

    def __init__(self, cin, width, ndim, *, groups, rngs):
        self.conv = weight(cin, width, ndim, kernel=3, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


@REGISTRY.register("chen")
@final
class ChenStem(Stem):
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
