"""Time conditioning: append t as one more feature / channel (Chen et al.'s ConcatConv)."""

from __future__ import annotations

import jax.numpy as jnp


def concat_time(t, x):
    """[x, t] along the last (feature or channel) axis, t broadcast over every other axis."""
    tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1] + (1,))
    return jnp.concatenate([x, tt], axis=-1)
