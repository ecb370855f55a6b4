"""Haber & Ruthotto's Hamiltonian network as a leapfrog (Verlet) scan: symplectic, invertible."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.models.stages.scan import ScanStage


@final
class HamiltonianBlock(ScanStage):
    """A leapfrog scan over per-step `HamiltonianField`s, on the input split channel-wise into y
    and z (Chang et al. 2018):

        z_{k+1} = z_k - h K_k^T sigma(K_k y_k + b_k)
        y_{k+1} = y_k + h K_k sigma(K_k^T z_{k+1} + c_k)

    output concat(y_N, z_N). Symplectic and exactly invertible (`inverse`)."""

    def __init__(self, make_field, *, steps: int, h: float, unroll: int | bool = 1, rngs: nnx.Rngs):
        self.h = h
        super().__init__(make_field, steps=steps, unroll=unroll, rngs=rngs)

    def forward(self, y, z):
        h = self.h

        def step(f, k, c):
            y, z = c
            z = z + h * f.dz(y).astype(z.dtype)
            return y + h * f.dy(z).astype(y.dtype), z

        return self._scan(step, (y, z))

    def inverse(self, y, z):
        h = self.h

        def step(f, k, c):
            y, z = c
            y = y - h * f.dy(z).astype(y.dtype)
            return y, z - h * f.dz(y).astype(z.dtype)

        return self._scan(step, (y, z), reverse=True)

    def __call__(self, x):
        y, z = jnp.split(x, 2, axis=-1)
        return jnp.concatenate(self.forward(y, z), axis=-1)
