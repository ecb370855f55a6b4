"""A field scaled by one learned scalar (ReZero, Bachlechner et al. 2021)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final


@final
class ScaledField(nnx.Module):
    """G(t, x) = alpha F(t, x) with a learned scalar alpha, initialised at `init` (0: ReZero).

    With alpha_0 = 0 a per-step stack of these starts as the identity map, x_{k+1} = x_k, and
    each step's residual branch is switched on by training.
    """

    def __init__(self, field: nnx.Module, *, init: float = 0.0, param_dtype=jnp.float32):
        self.field = field
        self.alpha = nnx.Param(jnp.asarray(init, param_dtype))

    def __call__(self, t, x):
        return self.alpha[...].astype(x.dtype) * self.field(t, x)
