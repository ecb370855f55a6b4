"""Multi-branch (Inception-like) vector field: parallel convolutions of several kernel sizes, concatenated."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.conv import conv_layer
from odenets.fields.time import concat_time


def branch_widths(channels: int, branches: int) -> list[int]:
    """`channels` split over `branches` as evenly as possible, the remainder to the first ones."""
    return [channels // branches + (b < channels % branches) for b in range(branches)]


@final
class MultiBranchField(nnx.Module):
    """F(t, x) for `channels` channels through parallel branches (Szegedy et al. 2015's Inception module,
    without its pooling branch), one per kernel size k_b in `kernel_sizes`, each a k_b-wide SAME
    convolution to c_b channels (`branch_widths`: the c_b sum to `channels`), then a 1x1 convolution
    mixing them:

        preact=False:  F = GN(W_mix * relu(GN(concat_b(K_b * x))))
        preact=True:   F = GN(W_mix * relu(GN(concat_b(K_b * relu(GN(x))))))   (the trailing GN as ConvField)

    `*` a channels-last convolution with SAME padding (the kernel centred, the extra tap of an even
    kernel on the right). With kernel_sizes=(3,) it has ConvField's shape of computation with its
    second 3-wide convolution replaced by a 1x1 one. GroupNorm with `groups` (default min(32, channels))
    groups. `time=True` appends t as an input channel of every convolution (ConcatConv). Only for
    states with spatial axes (ndim 1, 2 or 3): a kernel size means nothing on flat features.
    """

    def __init__(
        self,
        channels: int,
        *,
        ndim: int = 1,
        kernel_sizes: tuple[int, ...] = (1, 3, 5),
        time: bool = True,
        groups: int | None = None,
        preact: bool = False,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if ndim not in (1, 2, 3):
            raise ValueError(f"MultiBranchField ndim must be 1, 2 or 3 spatial axes (its branches are "
                             f"convolutions of several kernel sizes), got ndim={ndim}")
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes or len(kernel_sizes) > channels or not all(
                isinstance(k, int) and k >= 1 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be 1 to channels={channels} ints >= 1, got {kernel_sizes!r}")
        groups = groups or min(32, channels)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.time, self.preact, self.kernel_sizes = time, preact, kernel_sizes
        cin = channels + int(time)

        def conv(cout, k):
            return conv_layer(cin, cout, (k,) * ndim, padding="SAME", param_dtype=param_dtype, rngs=rngs)

        def norm():
            return nnx.GroupNorm(channels, num_groups=math.gcd(channels, groups), param_dtype=param_dtype,
                                 rngs=rngs)

        self.branches = nnx.List([conv(c, k) for c, k in zip(branch_widths(channels, len(kernel_sizes)),
                                                             kernel_sizes)])
        self.mix = conv(channels, 1)
        self.norms = nnx.List([norm() for _ in range(3 if preact else 2)])

    def _conv(self, conv, t, x):
        return conv(concat_time(t, x) if self.time else x)

    def __call__(self, t, x):
        norms = list(self.norms)
        if self.preact:
            x = jax.nn.relu(norms.pop(0)(x))
        out = jnp.concatenate([self._conv(branch, t, x) for branch in self.branches], axis=-1)
        out = jax.nn.relu(norms[0](out))
        return norms[1](self._conv(self.mix, t, out))
