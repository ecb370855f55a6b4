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

FieldMaker = Callable[[nnx.Rngs], nnx.Module]


class FieldType(abc.ABC):
    """A recipe for the residual branch F of a state with `channels` channels."""

    name: ClassVar[str]

    @abc.abstractmethod
    def make(self, channels: int, *, ndim: int, preact: bool, time: bool, groups: int) -> FieldMaker:
        """`make_field(rngs)` for one field; `groups` divides `channels` (GroupNorm)."""


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
