"""Vector fields F(t, x) as Flax NNX modules, and per-step stacks of them."""

from odenets.fields.bottleneck import BottleneckField
from odenets.fields.conv import ConvField
from odenets.fields.mlp import MLPField
from odenets.fields.stable import AntisymmetricField, HamiltonianField
from odenets.fields.stack import field_at, stack
from odenets.fields.time import concat_time

__all__ = [
    "AntisymmetricField", "BottleneckField", "ConvField", "HamiltonianField", "MLPField",
    "concat_time", "field_at", "stack",
]
