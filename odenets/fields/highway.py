"""The highway gate as a vector field (Srivastava et al. 2015)."""

from __future__ import annotations

import jax
from flax import nnx

from odenets._abstract import final
from odenets.fields.conv import conv_layer


@final
class HighwayField(nnx.Module):
    """G(t, x) = g (F(t, x) - x), g = sigmoid(gate(x)): one Euler step with h = 1 is the highway
    layer x + G = g F + (1 - g) x. The gate is a 1x1 convolution over `ndim` spatial axes (a
    Linear map for ndim = 0) with bias `gate_bias` (negative: layers start close to carrying x
    through; the gate's mean is then about sigmoid(gate_bias)). `gate_bias` is kept on the module, so
    that a re-initialisation of its parameters can restore the gate's bias."""

    def __init__(self, field: nnx.Module, channels: int, ndim: int, *, gate_bias: float = -1.0, rngs: nnx.Rngs):
        self.field = field
        self.gate_bias = float(gate_bias)
        bias = nnx.initializers.constant(gate_bias)
        if ndim == 0:
            self.gate = nnx.Linear(channels, channels, bias_init=bias, rngs=rngs)
        else:
            self.gate = conv_layer(channels, channels, (1,) * ndim, bias_init=bias, rngs=rngs)

    def __call__(self, t, x):
        g = jax.nn.sigmoid(self.gate(x))
        return g * (self.field(t, x) - x)
