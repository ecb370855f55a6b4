"""ANODE's augmentation (Dupont et al. 2019) around an ODE block."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from odenets._abstract import final
from odenets.models.block import ODEBlock


@final
class AugmentedBlock(nnx.Module):
    """Append `augment` zero channels, then the ODE block on channels + augment channels. The
    extra channels are kept (the rest of the net sees them)."""

    def __init__(self, augment: int, block: ODEBlock):
        self.augment, self.block = augment, block

    def __call__(self, x):
        zeros = jnp.zeros(x.shape[:-1] + (self.augment,), x.dtype)
        return self.block(jnp.concatenate([x, zeros], axis=-1))
