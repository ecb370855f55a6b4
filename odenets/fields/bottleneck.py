"""Bottleneck vector field: 1x1 reduce -> k x k -> 1x1 expand (He et al. 2016), either ordering."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.conv import conv_layer
from odenets.fields.norm import GroupNorm
from odenets.fields.time import concat_time


@final
class BottleneckField(nnx.Module):
    """F(t, x) for `channels` channels through `hidden` (default channels // 4) channels.

    preact=False (conv-norm-act, He et al. 2016a):
        conv1x1 -> GN -> ReLU -> conv k -> GN -> ReLU -> conv1x1 -> GN
    preact=True (norm-act-conv, He et al. 2016b), with the trailing GN of Chen et al.'s ODE
    field (as in `ConvField`):
        GN -> ReLU -> conv1x1 -> GN -> ReLU -> conv k -> GN -> ReLU -> conv1x1 -> GN

    GroupNorm groups: `groups` (default min(32, channels)) for the full width, and
    gcd(hidden, groups) for the reduced width. `time=True` appends t as an input channel of
    every convolution (ConcatConv). Channels-last, `ndim` spatial axes, SAME padding.
    """

    def __init__(
        self,
        channels: int,
        *,
        ndim: int = 2,
        hidden: int | None = None,
        kernel_size: int = 3,
        preact: bool = False,
        time: bool = True,
        groups: int | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if ndim not in (1, 2, 3):
            raise ValueError(f"BottleneckField ndim must be 1, 2 or 3 spatial axes, got {ndim}")
        hidden = hidden or max(1, channels // 4)
        groups = groups or min(32, channels)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.time, self.preact = time, preact
        t = int(time)

        def conv(cin, cout, k):
            return conv_layer(cin + t, cout, (k,) * ndim, padding="SAME", param_dtype=param_dtype, rngs=rngs)

        def norm(c):
            return GroupNorm(c, num_groups=math.gcd(c, groups), param_dtype=param_dtype, rngs=rngs)

        self.convs = nnx.List(
            [conv(channels, hidden, 1), conv(hidden, hidden, kernel_size), conv(hidden, channels, 1)]
        )
        widths = [channels, hidden, hidden, channels] if preact else [hidden, hidden, channels]
        self.norms = nnx.List([norm(c) for c in widths])

    def _conv(self, conv, t, x):
        return conv(concat_time(t, x) if self.time else x)

    def __call__(self, t, x):
        if self.preact:
            for norm, conv in zip(self.norms, self.convs):
                x = self._conv(conv, t, jax.nn.relu(norm(x)))
            return self.norms[-1](x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(self._conv(conv, t, x))
            if i < len(self.convs) - 1:
                x = jax.nn.relu(x)
        return x
