"""He et al.'s original (post-activation) basic block as a vector field: conv-norm-act ordering."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from odenets.fields.time import concat_time


class PostActConvField(nnx.Module):
    """F(t, x) = GN(conv2(t, relu(GN(conv1(t, x))))): the conv-norm-act ordering of He et al. (2016a).

    The ReLU that follows the addition in the original block is not part of the branch F (an
    ODE step adds F to x and nothing else), so F ends with a norm. `ConvField` is the other
    ordering (norm-act-conv, He et al. 2016b / Chen et al.). GroupNorm with min(32, channels)
    groups, SAME padding, channels-last, `ndim` spatial axes; `time=True` makes both convolutions
    ConcatConvs (t as one extra input channel).
    """

    def __init__(
        self,
        channels: int,
        *,
        ndim: int = 2,
        kernel_size: int = 3,
        time: bool = True,
        groups: int | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if ndim not in (1, 2, 3):
            raise ValueError(f"PostActConvField ndim must be 1, 2 or 3 spatial axes, got {ndim}")
        groups = groups or min(32, channels)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.time = time
        k, cin = (kernel_size,) * ndim, channels + int(time)
        self.conv1 = nnx.Conv(cin, channels, k, padding="SAME", param_dtype=param_dtype, rngs=rngs)
        self.norm1 = nnx.GroupNorm(channels, num_groups=groups, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = nnx.Conv(cin, channels, k, padding="SAME", param_dtype=param_dtype, rngs=rngs)
        self.norm2 = nnx.GroupNorm(channels, num_groups=groups, param_dtype=param_dtype, rngs=rngs)

    def _conv(self, conv, t, x):
        return conv(concat_time(t, x) if self.time else x)

    def __call__(self, t, x):
        out = jax.nn.relu(self.norm1(self._conv(self.conv1, t, x)))
        return self.norm2(self._conv(self.conv2, t, out))
