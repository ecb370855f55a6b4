"""Field types by name (`odenets.fields.field_type`): which residual branch a model family builds.

A field type turns a state width into a field constructor, `make(channels, ndim=, preact=,
time=, groups=) -> make_field(rngs)`, the form `stack` and `ODEBlock` take. `ndim` is the
number of spatial axes (0: flat features). Adding a field type is one registered class.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

from flax import nnx

from odenets._abstract import final
from odenets._registry import Registry
from odenets.fields.bottleneck import BottleneckField
from odenets.fields.conv import ConvField
from odenets.fields.mlp import MLPField
from odenets.fields.multibranch import MultiBranchField

FieldMaker = Callable[[nnx.Rngs], nnx.Module]


class FieldType(abc.ABC):
    """A recipe for the residual branch F of a state with `channels` channels."""

    name: ClassVar[str]
    flat: ClassVar[bool] = True  # also for flat states (ndim 0, the mlp kind)

    @abc.abstractmethod
    def make(self, channels: int, *, ndim: int, preact: bool, time: bool, groups: int) -> FieldMaker:
        """`make_field(rngs)` for one field; `groups` divides `channels` (GroupNorm).
        A type with flat=False refuses ndim=0."""


REGISTRY: Registry[FieldType] = Registry("field", FieldType)


@REGISTRY.register("basic")
@final
class Basic(FieldType):
    """Flat states: MLPField(hidden=channels). Conv: ConvField, preact=True being Chen et al.'s
    GN-ReLU-conv-GN-ReLU-conv-GN and preact=False He et al.'s conv-GN-ReLU-conv-GN."""

    def make(self, channels, *, ndim, preact, time, groups):
        if ndim == 0:
            return lambda r: MLPField(channels, channels, time=time, rngs=r)
        return lambda r: ConvField(channels, ndim=ndim, preact=preact, time=time, groups=groups, rngs=r)


@REGISTRY.register("bottleneck")
@final
class Bottleneck(FieldType):
    """Flat states: MLPField(hidden=channels // 4). Conv: BottleneckField, 1x1 reduce to
    channels // 4 -> 3-wide -> 1x1 expand (He et al. 2016)."""

    def make(self, channels, *, ndim, preact, time, groups):
        if ndim == 0:
            return lambda r: MLPField(channels, max(1, channels // 4), time=time, rngs=r)
        return lambda r: BottleneckField(channels, ndim=ndim, preact=preact, time=time, groups=groups, rngs=r)


@REGISTRY.register("multibranch")
@final
class MultiBranch(FieldType):
    """Conv kinds only: MultiBranchField, parallel 1-, 3- and 5-wide convolutions to channels / 3
    channels each, concatenated, then a 1x1 mix (Inception-like)."""

    flat = False

    def make(self, channels, *, ndim, preact, time, groups):
        if ndim == 0:
            valid = ", ".join(n for n in REGISTRY.names() if REGISTRY.get(n).flat)
            raise ValueError(f"field 'multibranch' needs a conv kind (its branches are convolutions of several "
                             f"kernel sizes); valid choices for kind 'mlp': {valid}")
        return lambda r: MultiBranchField(channels, ndim=ndim, preact=preact, time=time, groups=groups, rngs=r)
