"""Convolutional basic-block vector field for 1-D signals (B, L, C) and 2-D images (B, H, W, C)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.time import concat_time


@final
class ConvField(nnx.Module):
    """F(t, x) = GN(conv2(t, relu(GN(conv1(t, relu(GN(x))))))): the ODE-Net block of Chen et al.

    GroupNorm (never train-mode BatchNorm: a solver traces F many times per step) with
    min(32, channels) groups, ReLU, and `kernel_size` convolutions with SAME padding that
    keep the shape. `time=True` makes each convolution a ConcatConv: t enters as one extra
    constant input channel. `ndim` is the number of spatial axes (1 for signals, 2 for
    images); inputs are channels-last with a leading batch axis. `preact=False` gives the
    post-activation ordering of He et al. (2016a), F = GN(conv2(t, relu(GN(conv1(t, x))))):
    the ReLU after the addition of the original block is not part of the branch F.
    """

    def __init__(
        self,
        channels: int,
        *,
        ndim: int = 2,
        kernel_size: int = 3,
        time: bool = True,
        groups: int | None = None,
        preact: bool = True,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if ndim not in (1, 2, 3):
            raise ValueError(f"{type(self).__name__} ndim must be 1, 2 or 3 spatial axes, got {ndim}")
        groups = groups or min(32, channels)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.time, self.preact = time, preact
        k, cin = (kernel_size,) * ndim, channels + int(time)
        norm = lambda: nnx.GroupNorm(channels, num_groups=groups, param_dtype=param_dtype, rngs=rngs)
        conv = lambda: nnx.Conv(cin, channels, k, padding="SAME", param_dtype=param_dtype, rngs=rngs)
        if preact:  # GN-ReLU-conv-GN-ReLU-conv-GN
            self.norm1, self.conv1, self.norm2, self.conv2, self.norm3 = norm(), conv(), norm(), conv(), norm()
        else:  # conv-GN-ReLU-conv-GN
            self.conv1, self.norm1, self.conv2, self.norm2 = conv(), norm(), conv(), norm()

    def _conv(self, conv, t, x):
        return conv(concat_time(t, x) if self.time else x)

    def __call__(self, t, x):
        if not self.preact:
            out = jax.nn.relu(self.norm1(self._conv(self.conv1, t, x)))
            return self.norm2(self._conv(self.conv2, t, out))
        out = jax.nn.relu(self.norm1(x))
        out = self._conv(self.conv1, t, out)
        out = jax.nn.relu(self.norm2(out))
        out = self._conv(self.conv2, t, out)
        return self.norm3(out)
