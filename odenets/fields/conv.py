"""Convolutional basic-block vector field for 1-D signals (B, L, C) and 2-D images (B, H, W, C), and the
convolution every field uses, which stays fast inside `lax.scan` and diffrax's while loop on CPU.

Why a convolution of its own: reverse mode differentiates y = conv(x, K) into two more
convolutions, dx = conv^T(dy, K) and dK = corr(x, dy). JAX writes both with non-canonical
dimension labels (dx: the kernel's input and output channels swapped, b0f_0oi->b0f; dK: batch and
feature axes exchanged, f0b_i0o->0bf) and relies on XLA's layout assignment to make them canonical.
In straight-line code it does; inside a while loop the loop-carried operands keep their layouts, the
labels stay non-canonical and XLA:CPU falls back to its generic loop-nest convolution, 5x (1-D) to
10x (2-D) slower than its Eigen kernels: the whole backward pass of a Chen ODE-Net ran 3x to 5x
slower with unroll=1 than unrolled. `conv_general_dilated` below computes the same values with
the same forward convolution, but differentiates into convolutions whose labels are canonical by
construction: the transposes are written out as explicit (cheap) array transposes, so no layout
choice is left to the loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.custom_derivatives import SymbolicZero

from odenets._abstract import final
from odenets.fields.norm import GroupNorm
from odenets.fields.time import concat_time

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def channels_last(ndim: int) -> tuple[str, str, str]:
    """The dimension numbers of a channels-last convolution over `ndim` spatial axes: (N..C, ..IO, N..C)."""
    s = _SPATIAL[ndim]
    return f"N{s}C", f"{s}IO", f"N{s}C"


def transpose_kernel(kernel, ndim: int):
    """The kernel of K^T: the matrix transpose (ndim = 0), or the convolution kernel flipped in space
    with input and output channels swapped (the adjoint of a stride-1 convolution, padded k - 1 - pad)."""
    if ndim:
        kernel = jnp.flip(kernel, axis=tuple(range(ndim)))
    return jnp.swapaxes(kernel, -1, -2)


def _correlate(x, kernel, pads, precision):
    """y[b, s, o] = sum_{j, i} xp[b, s + j, i] K[j, i, o], xp = x zero-padded by `pads`: canonical labels."""
    ndim = x.ndim - 2
    return lax.conv_general_dilated(x, kernel, (1,) * ndim, pads, dimension_numbers=channels_last(ndim),
                                    precision=precision)


def _input_transpose(kernel, g, pads, precision):
    """conv^T with respect to x: dx = corr(g, flip(K) with in/out channels swapped), padded k - 1 - pad."""
    ndim = g.ndim - 2
    back = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel.shape[:ndim], pads, strict=True)]
    return _correlate(g, transpose_kernel(kernel, ndim), back, precision)


def _kernel_transpose(x, g, pads, precision):
    """conv^T with respect to K: dK[j, i, o] = sum_{b, s} xp[b, s + j, i] g[b, s, o], as a canonical
    correlation of xp with channels as the batch axis and the batch as the contracted feature axis."""
    dk = _correlate(jnp.moveaxis(x, (0, -1), (-1, 0)), jnp.moveaxis(g, 0, -2), pads, precision)
    return jnp.moveaxis(dk, 0, -2)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv(x, kernel, pads, precision):
    return _correlate(x, kernel, pads, precision)


def _conv_jvp(pads, precision, primals, tangents):
    """d conv = conv(dx, K) + conv(x, dK), each written as the transpose of its canonical transpose, so
    that reverse mode (transposing the tangent map) runs `_input_transpose` and `_kernel_transpose`."""
    (x, kernel), (dx, dk) = primals, tangents
    y = _conv(x, kernel, pads, precision)
    out = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        out = out + jax.linear_transpose(lambda g: _input_transpose(kernel, g, pads, precision), y)(dx)[0]
    if not isinstance(dk, SymbolicZero):
        out = out + jax.linear_transpose(lambda g: _kernel_transpose(x, g, pads, precision), y)(dk)[0]
    return y, out


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` with loop-friendly derivatives (see the module docstring); a drop-in
    for `nnx.Conv(..., conv_general_dilated=conv_general_dilated)`. Channels-last stride-1 undilated
    ungrouped convolutions (every field's) take the custom path, with values identical to lax's;
    anything else (strided stems, grouped or dilated convolutions) is passed to lax unchanged."""
    ndim = lhs.ndim - 2
    ones = (1,) * ndim
    plain = (ndim in _SPATIAL and tuple(window_strides) == ones and tuple(lhs_dilation or ones) == ones
             and tuple(rhs_dilation or ones) == ones and feature_group_count == 1
             and not any(v is not None for v in kwargs.values())
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, channels_last(ndim)))
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], ones, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, pads, precision)


def conv_layer(cin: int, cout: int, kernel_size, **kwargs) -> nnx.Conv:
    """`nnx.Conv(cin, cout, kernel_size, **kwargs)` computing with `conv_general_dilated` above: the same
    parameters (names, shapes, initialisation) and values, fast derivatives inside loops."""
    return nnx.Conv(cin, cout, kernel_size, conv_general_dilated=conv_general_dilated, **kwargs)


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
        norm = lambda: GroupNorm(channels, num_groups=groups, param_dtype=param_dtype, rngs=rngs)
        conv = lambda: conv_layer(cin, channels, k, padding="SAME", param_dtype=param_dtype, rngs=rngs)
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
