"""`Classifier` (stem -> stages -> head) and `build(family, **config)`."""

from __future__ import annotations

import math

import jax
from flax import nnx

from odenets.models.config import ModelConfig, resolve
from odenets.models.families import REGISTRY as FAMILIES
from odenets.models.families import Family
from odenets.models.layers import STEMS, Head, Projection


class Classifier(nnx.Module):
    """stem -> stage_0 -> projection -> stage_1 -> ... -> head, channels-last.

    Stage s works at width * 2**s channels (plus ANODE's augmented channels); each
    projection between stages is a 1x1 convolution (stride 2 if cfg.downsample, conv kinds)
    or a linear map, then GroupNorm. The head is GN -> ReLU -> global average pool -> Linear.
    Input (B, *cfg.input_shape); the mlp kind flattens it. `config` is the resolved config.
    """

    def __init__(self, family: Family, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.family = family.name
        ndim, shape = cfg.ndim, cfg.input_shape
        cin = math.prod(shape) if ndim == 0 else shape[-1]
        self.stem = STEMS[cfg.stem](cin, cfg.width, ndim, groups=cfg.groups, rngs=rngs)
        stages, transitions, channels = [], [], cfg.width
        for s in range(cfg.stages):
            width = cfg.stage_width(s)
            if s:
                stride = 2 if (cfg.downsample and ndim) else 1
                transitions.append(Projection(channels, width, ndim, stride=stride, groups=cfg.groups, rngs=rngs))
            stage, channels = family.stage(cfg, width, rngs)
            stages.append(stage)
        self.stages = nnx.List(stages)
        self.transitions = nnx.List(transitions)
        self.head = Head(channels, cfg.num_classes, ndim, groups=cfg.groups, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The state entering the head (after the last stage)."""
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match (batch, *input_shape) with "
                f"input_shape={self.config.input_shape}"
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


def build(family: str | Family, *, rngs: nnx.Rngs | int = 0, **config) -> Classifier:
    """A classifier of the named family (see `odenets.models.family.names()`).

    Every key is checked first (unknown family / key / choice, keys the family does not take,
    input_shape rank, GroupNorm divisibility, ...) with a ValueError that names the key, the
    bad value and the valid choices; parameters are allocated only after that. Config keys and
    defaults: `odenets.models.config`. `rngs`: an nnx.Rngs or an int seed.
    """
    fam = FAMILIES(family)
    cfg = fam.check(resolve(fam.name, fam.options, config))
    if isinstance(rngs, int) and not isinstance(rngs, bool):
        rngs = nnx.Rngs(rngs)
    if not isinstance(rngs, nnx.Rngs):
        raise ValueError(f"rngs must be an nnx.Rngs or an int seed, got rngs={rngs!r}")
    return Classifier(fam, cfg, rngs=rngs)
