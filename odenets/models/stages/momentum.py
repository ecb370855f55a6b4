"""Momentum ResNet (Sander et al. 2021): an invertible second-order step rule."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.models.stages.scan import ScanStage, step_time
from odenets.validate import number


@final
class MomentumBlock(ScanStage):
    """v_0 = 0 by default and

        v_{k+1} = gamma v_k + (1 - gamma) F_k(t_k, x_k),    x_{k+1} = x_k + v_{k+1}

    Invertible for 0 < gamma: x_k = x_{k+1} - v_{k+1}, v_k = (v_{k+1} - (1 - gamma) F_k(t_k, x_k)) / gamma
    (`inverse`). Gradients here are plain backprop through the scan (the memory saving of
    the paper's custom backward pass is not implemented)."""

    def __init__(self, make_field, *, steps: int, gamma: float, unroll: int | bool = 1, rngs: nnx.Rngs):
        self.gamma = number("gamma", gamma, low=0.0, high=1.0)
        super().__init__(make_field, steps=steps, unroll=unroll, rngs=rngs)

    def forward(self, x, v):
        """(x_N, v_N) from (x_0, v_0)."""
        g = self.gamma

        def step(f, k, c):
            x, v = c
            v = g * v + (1 - g) * f(step_time(k, x), x).astype(v.dtype)
            return x + v, v

        return self._scan(step, (x, v))

    def inverse(self, x, v):
        """(x_0, v_0) from (x_N, v_N), recomputing every F_k once more."""
        g = self.gamma

        def step(f, k, c):
            x, v = c
            x = x - v
            return x, (v - (1 - g) * f(step_time(k, x), x).astype(v.dtype)) / g

        return self._scan(step, (x, v), reverse=True)

    def __call__(self, x):
        return self.forward(x, jnp.zeros_like(x))[0]
