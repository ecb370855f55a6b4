"""`Classifier`: stem -> stages -> head, built from a resolved model family."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import jax
from flax import nnx

from odenets._abstract import final
from odenets.models.layers import Head, Projection
from odenets.models.stems import REGISTRY as STEMS

if TYPE_CHECKING:
    from odenets.models.base import Family


@final
class Classifier(nnx.Module):
    """stem -> stage_0 -> projection -> stage_1 -> ... -> head, channels-last.

    Stage s works at width * 2**s channels (plus ANODE's augmented channels); each
    projection between stages is a 1x1 convolution (stride 2 if config.downsample, conv kinds)
    or a linear map, then GroupNorm. The head is GN -> ReLU -> global average pool -> Linear.
    With config.stages = 0 the stem feeds the head directly (kind mlp: a one-hidden-layer MLP).
    Input (B, *input_shape); the mlp kind flattens it. `config` is the resolved family (every
    data-dependent default filled in), `family` its name.
    """

    def __init__(self, config: Family, input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs):
        self.config, self.family = config, config.name
        self.input_shape, self.num_classes = input_shape, num_classes
        ndim, groups = config.ndim, cast(int, config.groups)  # config is resolved
        cin = math.prod(input_shape) if ndim == 0 else input_shape[-1]
        self.stem = STEMS.get(cast(str, config.stem))(cin, config.width, ndim, groups=groups, rngs=rngs)
        stages, transitions, channels = [], [], config.width
        for s in range(config.stages):
            width = config.stage_width(s)
            if s:
                stride = 2 if (config.downsample and ndim) else 1
                transitions.append(Projection(channels, width, ndim, stride=stride, groups=groups, rngs=rngs))
            stage, channels = config.stage(width, rngs)
            stages.append(stage)
        self.stages = nnx.List(stages)
        self.transitions = nnx.List(transitions)
        self.head = Head(channels, num_classes, ndim, groups=groups, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The state entering the head (after the last stage)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match (batch, *input_shape) with "
                f"input_shape={self.input_shape}"
            )
        if self.config.ndim == 0:
            x = x.reshape(x.shape[0], -1)
        x = self.stem(x)
        for s, stage in enumerate(self.stages):
            if s:
                x = self.transitions[s - 1](x)
            x = stage(x)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (B, num_classes)."""
        return self.head(self.features(x))
