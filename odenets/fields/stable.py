"""Haber & Ruthotto's stable vector fields: antisymmetric and Hamiltonian.

Both are built from one square linear operator K acting on channels-last states: a matrix
(`ndim=0`, states (..., C)) or a stride-1 convolution with an odd kernel and SAME zero padding
(`ndim` spatial axes). The transpose K^T of such a convolution is again a convolution, with the
kernel flipped in space and its input/output channels swapped, so K - K^T is exactly
antisymmetric as a linear map of the whole (zero-padded) signal, and the Hamiltonian field's
K^T is the true adjoint of K.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.conv import channels_last, conv_general_dilated, transpose_kernel


def _check(channels: int, ndim: int, kernel_size: int) -> None:
    if ndim not in (0, 1, 2, 3):
        raise ValueError(f"ndim must be 0 (a matrix), 1, 2 or 3 spatial axes, got {ndim}")
    if ndim and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (SAME padding symmetric, K^T exact), got {kernel_size}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")


def apply_operator(kernel, x, ndim: int):
    """K x: x @ kernel for ndim=0 (kernel (C, C)), else a SAME stride-1 convolution (kernel (k..., C, C))."""
    kernel = kernel.astype(jnp.result_type(x, kernel))
    x = x.astype(kernel.dtype)
    if ndim == 0:
        return x @ kernel
    return conv_general_dilated(x, kernel, (1,) * ndim, "SAME", dimension_numbers=channels_last(ndim))


def _kernel(channels, ndim, kernel_size, param_dtype, rngs):
    shape = (kernel_size,) * ndim + (channels, channels)
    return nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape, param_dtype))


class OperatorField(nnx.Module):
    """Abstract: a stable field built on one square operator K (`kernel`), see the module docstring."""

    def __init__(
        self,
        channels: int,
        *,
        ndim: int = 0,
        kernel_size: int = 3,
        activation: Callable = jnp.tanh,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check(channels, ndim, kernel_size)
        self.ndim, self.activation = ndim, activation
        self.kernel = _kernel(channels, ndim, kernel_size, param_dtype, rngs)

    @abc.abstractmethod
    def __call__(self, t, x) -> Any: ...


@final
class AntisymmetricField(OperatorField):
    """F(t, x) = sigma((K - K^T - damping I) x + b): Haber & Ruthotto's antisymmetric field.

    The linear part A = K - K^T - damping I has eigenvalues -damping + i w (K - K^T is
    antisymmetric, so its spectrum is imaginary): forward propagation neither explodes nor
    decays much when h |w| is small, for any parameters. F is autonomous (t is ignored).
    Options as `OperatorField` (ndim, kernel_size, activation, param_dtype) plus `damping`.
    """

    def __init__(self, channels: int, *, damping: float = 0.01, param_dtype=jnp.float32, rngs: nnx.Rngs,
                 **options):
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        super().__init__(channels, param_dtype=param_dtype, rngs=rngs, **options)
        self.damping = damping
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))

    def linear(self, x):
        """A x = (K - K^T - damping I) x, the pre-activation without the bias."""
        w = self.kernel[...]
        return apply_operator(w - transpose_kernel(w, self.ndim), x, self.ndim) - self.damping * x

    def __call__(self, t, x):
        return self.activation(self.linear(x) + self.bias[...].astype(x.dtype))


@final
class HamiltonianField(OperatorField):
    """The two halves of Haber & Ruthotto's Hamiltonian network, sharing one operator K:

        dy/dt = K sigma(K^T z + c),     dz/dt = -K^T sigma(K y + b)

    a (separable) Hamiltonian system in (y, z); `__call__(t, (y, z))` returns (dy/dt, dz/dt)
    for `odeint` on the pair, and the leapfrog (Verlet) step of the models uses `dy` and `dz`
    on their own. F is autonomous (t is ignored).
    """

    def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs, **options):
        super().__init__(channels, param_dtype=param_dtype, rngs=rngs, **options)
        self.bias_y = nnx.Param(jnp.zeros((channels,), param_dtype))
        self.bias_z = nnx.Param(jnp.zeros((channels,), param_dtype))

    def dy(self, z):
        """K sigma(K^T z + c)."""
        w = self.kernel[...]
        inner = apply_operator(transpose_kernel(w, self.ndim), z, self.ndim) + self.bias_y[...].astype(z.dtype)
        return apply_operator(w, self.activation(inner), self.ndim)

    def dz(self, y):
        """-K^T sigma(K y + b)."""
        w = self.kernel[...]
        inner = apply_operator(w, y, self.ndim) + self.bias_z[...].astype(y.dtype)
        return -apply_operator(transpose_kernel(w, self.ndim), self.activation(inner), self.ndim)

    def __call__(self, t, state):
        y, z = state
        return self.dy(z), self.dz(y)
