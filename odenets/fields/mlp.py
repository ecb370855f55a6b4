"""MLP vector field F(t, x) for flat states (..., features)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.fields.time import concat_time


@final
class MLPField(nnx.Module):
    """F(t, x) = W_L s(... s(W_1 [x, t] + b_1) ...) + b_L, the residual branch of an MLP ResNet.

    `time=True` appends t as an extra input feature (a time-conditioned field, as in
    Chen et al.); `time=False` gives an autonomous field F(x). The output layer is
    initialised with `out_scale` times the usual variance, so a deep stack starts near the
    identity map when out_scale is small.
    """

    def __init__(
        self,
        features: int,
        hidden: int = 64,
        *,
        layers: int = 1,
        activation: Callable = jnp.tanh,
        time: bool = True,
        out_scale: float = 1.0,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if layers < 1:
            raise ValueError(f"MLPField needs layers >= 1 hidden layers, got {layers}")
        self.time = time
        self.activation = activation
        widths = [features + int(time)] + [hidden] * layers
        self.hidden = nnx.List(
            [nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        init = jax.nn.initializers.variance_scaling(out_scale, "fan_in", "truncated_normal")
        self.out = nnx.Linear(hidden, features, kernel_init=init, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, t, x):
        h = concat_time(t, x) if self.time else x
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h)
