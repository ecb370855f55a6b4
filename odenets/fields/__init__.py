"""Vector fields F(t, x) as Flax NNX modules, per-step stacks of them, and field types by name.

`field_type` is the registry of the field types model families build (`field="basic"`,
`"bottleneck"`, `"multibranch"`); `field_type(name).make(channels, ndim=, preact=, time=, groups=)` gives a
field constructor.
"""

from odenets.fields.bottleneck import BottleneckField
from odenets.fields.conv import ConvField
from odenets.fields.highway import HighwayField
from odenets.fields.mlp import MLPField
from odenets.fields.multibranch import MultiBranchField
from odenets.fields.scaled import ScaledField
from odenets.fields.stable import AntisymmetricField, HamiltonianField
from odenets.fields.stack import field_at, stack
from odenets.fields.time import concat_time
from odenets.fields.types import REGISTRY as field_type
from odenets.fields.types import FieldMaker, FieldType

__all__ = [
    "AntisymmetricField", "BottleneckField", "ConvField", "FieldMaker", "FieldType", "HamiltonianField",
    "HighwayField", "MLPField", "MultiBranchField", "ScaledField", "concat_time", "field_at", "field_type",
    "stack",
]
