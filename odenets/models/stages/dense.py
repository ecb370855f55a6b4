"""Dense concatenation (Huang et al. 2017): a stage whose state grows, so not an ODE."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.models.block import Counted
from odenets.models.layers import Unit


@final
class DenseBlock(Counted):
    """x_{k+1} = concat(x_k, H_k(x_k)), H_k adding `growth` channels, then a transition unit (1x1)
    back to `channels`. H_k is a 3-wide unit, or with bottleneck=True (DenseNet-B) a 1x1 unit to
    4 * growth channels then a 3-wide unit. Layer widths differ, so the layers are a Python loop
    (compile time grows with depth here, unlike the scans)."""

    def __init__(self, channels, *, depth, growth, ndim, bottleneck, preact, groups, rngs):
        layers, c = [], channels
        for _ in range(depth):
            if bottleneck:
                layer = nnx.Sequential(
                    Unit(c, 4 * growth, ndim, kernel=1, preact=preact, groups=groups, rngs=rngs),
                    Unit(4 * growth, growth, ndim, kernel=3, preact=preact, groups=groups, rngs=rngs),
                )
            else:
                layer = Unit(c, growth, ndim, kernel=3, preact=preact, groups=groups, rngs=rngs)
            layers.append(layer)
            c += growth
        self.layers = nnx.List(layers)
        self.transition = Unit(c, channels, ndim, kernel=1, preact=preact, groups=groups, rngs=rngs)
        self._init_stats()

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.concatenate([x, layer(x)], axis=-1)
        self._record(len(self.layers), 0)
        return self.transition(x)
