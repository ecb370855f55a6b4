"""GroupNorm with the statistics summed channel by channel first, which XLA:CPU runs 4-9x faster than Flax's.

`nnx.GroupNorm` reshapes (B, ..., C) to (B, ..., G, C/G) and reduces the spatial axes and the
channels of a group in one reduction. XLA:CPU runs that reduction, whose innermost reduced axis is
the short group axis (2 channels per group at 64 channels and 32 groups), far from its bandwidth:
3.4 ms for a (32, 30, 30, 64) batch single-threaded, against 0.5 ms for the sums over the spatial axes
alone (B, C); reverse mode repeats the pattern in the backward pass. `GroupNorm` below sums each
channel over the spatial axes first, then the C/G channels of each group: the same parameters, the
same formula (E[x^2] - E[x]^2, clipped at 0, as Flax's fast variance), values equal to Flax's up to
float32 rounding.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx
from jax import lax

from odenets._abstract import final


@final
class GroupNorm(nnx.GroupNorm):
    """`nnx.GroupNorm` (same constructor, parameters and values) with fast statistics on CPU: per-channel
    sums over the spatial axes, then per-group sums. Masks, explicit reduction axes, named axes and
    inputs without spatial axes use Flax's own computation."""

    def __call__(self, x, *, mask=None):
        if mask is not None or self.reduction_axes is not None or self.axis_name is not None or x.ndim < 3:
            return super().__call__(x, mask=mask)
        scale = self.scale[...] if self.scale else None
        bias = self.bias[...] if self.bias else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        stats = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        xs, spatial = jnp.asarray(x, stats), tuple(range(1, x.ndim - 1))
        count = math.prod(x.shape[1:-1]) * self.group_size

        def group_mean(v):  # (B, ..., C) -> (B, G): spatial sums per channel, then per group
            sums = v.sum(spatial) if spatial else v
            return sums.reshape(x.shape[0], self.num_groups, self.group_size).sum(-1) / count

        mean, mean2 = group_mean(xs), group_mean(lax.square(xs))
        var = jnp.maximum(0.0, mean2 - lax.square(mean))
        shape = (x.shape[0],) + (1,) * len(spatial) + (x.shape[-1],)
        per_channel = lambda v: jnp.repeat(v, self.group_size, axis=1).reshape(shape)
        mul = lax.rsqrt(per_channel(var) + self.epsilon)
        if scale is not None:
            mul = mul * scale.reshape((1,) * (x.ndim - 1) + (-1,))
        y = (x - per_channel(mean)) * mul
        if bias is not None:
            y = y + bias.reshape((1,) * (x.ndim - 1) + (-1,))
        args = [a for a in (x, scale, bias) if a is not None]
        return jnp.asarray(y, self.dtype or jnp.result_type(*args))
