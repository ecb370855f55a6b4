"""`Family`: a model family's options as one typed dataclass, and the option groups families share.

A family's dataclass fields are exactly the options it takes, with their defaults: the one place
a default lives. Options are checked when the family is constructed (`family("resnet", width=8)`,
before any data or parameter exists); defaults that depend on the data (the kind, from the input's
rank; GroupNorm groups; the stem) are filled in by `resolve(input_shape)`, and `build(input_shape,
num_classes)` makes the classifier. An option given as None counts as not given.

    Family            width, depth, kind, stages, groups, downsample, stem   (every family)
    Layered           field, preact          basic / bottleneck layers
    Fields(Layered)   time                   layers that are vector fields F(t, x)
    Scanned           unroll                 steps run in a scan
    Solved(Scanned)   gradient, lambda_K,    stages that are `odeint` solves (ODEBlock), with
                      lambda_J               RNODE weights (odenets.rnode)
    Integrated        integrator             ... whose integrator is an option
    Stepped           step_size, t1          h = 1 (t1 = depth) or h = t1 / depth
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from flax import nnx

from odenets._registry import Registry
from odenets.fields import FieldMaker, field_type
from odenets.integrators import integrator as integrators
from odenets.models.block import ODEBlock
from odenets.models.classifier import Classifier
from odenets.models.layers import KIND_NDIM
from odenets.models.stems import REGISTRY as STEMS
from odenets.models.stems import default_stem
from odenets.rnode import RNODE
from odenets.solve import check_unroll, resolve_solver
from odenets.validate import boolean, choice, integer, is_int, number, optional

if TYPE_CHECKING:
    from odenets.models.trajectory import Trajectory

RANK_KIND = {1: "mlp", 2: "conv1d", 3: "conv2d"}  # the kind inferred from the input's rank
RANK = {
    "mlp": "at least 1 (flattened)", "conv1d": "2: (length, channels)", "conv2d": "3: (height, width, channels)",
}


class _OptionNames:
    """`Family.options`: the names of a family's options (its dataclass fields), on the class or an instance."""

    def __get__(self, obj, cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family(abc.ABC):
    """What every family takes.

    width       channels of the first stage (stage s has width * 2**s)
    depth       blocks (steps) per stage
    kind        "mlp" (input flattened) | "conv1d" (B, L, C) | "conv2d" (B, H, W, C); None: from
                the input's rank (1: mlp, 2: conv1d, 3: conv2d)
    stages      stages of `depth` blocks; between stages a projection (1x1 / linear, stride 2 if
                downsample) + GroupNorm. 0: no stage, stem -> head (with kind mlp and the linear stem,
                the one-hidden-layer MLP logits = W2 ReLU(GN(W1 x + b1)) + b2 of `width` hidden units)
    groups      GroupNorm groups for `width`; None: min(32, width) for conv kinds, 1 for mlp;
                other channel counts use gcd(channels, groups)
    downsample  stride-2 transitions between stages (conv kinds)
    stem        a name in `odenets.models.stem`; None: the first that applies to the kind
                (linear for mlp, conv for conv kinds); "chen": Chen et al.'s downsampling
    """

    width: int = 32
    depth: int = 6
    kind: str | None = None
    stages: int = 1
    groups: int | None = None
    downsample: bool = True
    stem: str | None = None

    name: ClassVar[str]
    options: ClassVar[_OptionNames] = _OptionNames()  # a tuple[str, ...] on the class or an instance
    takes_integrator: ClassVar[bool] = False
    takes_gradient: ClassVar[bool] = False
    takes_trajectories: ClassVar[bool] = False  # builds a `Trajectory` model for time-series data
    # options whose unset (None) value follows the width: name -> d, resolved to max(1, width // d)
    width_fractions: ClassVar[dict[str, int]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):  # None means not given
            if getattr(self, f.name) is None and f.default is not None and f.default is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default)
        for key in ("width", "depth"):
            integer(key, getattr(self, key), 1)
        integer("stages", self.stages, 0)
        optional(choice, "kind", self.kind, KIND_NDIM)
        optional(integer, "groups", self.groups, 1)
        boolean("downsample", self.downsample)
        optional(choice, "stem", self.stem, STEMS.names())
        for key in self.width_fractions:
            optional(integer, key, getattr(self, key), 1)

    @property
    def ndim(self) -> int:
        """Spatial axes of the state: 0 (mlp), 1 (conv1d), 2 (conv2d); needs a resolved kind."""
        return KIND_NDIM[cast(str, self.kind)]

    def stage_width(self, s: int) -> int:
        return self.width * 2**s

    def norm_groups(self, channels: int) -> int:
        return math.gcd(channels, cast(int, self.groups))  # set by resolve

    def resolve(self, input_shape: tuple[int, ...]) -> Self:
        """This family with every data-dependent default filled in and checked against
        `input_shape` (no batch axis). Families extend it for their own defaults."""
        rank = len(input_shape)
        kind = self.kind
        if kind is None:
            if rank not in RANK_KIND:
                raise ValueError(f"input_shape={input_shape} has rank {rank}: give kind='mlp' to flatten it")
            kind = RANK_KIND[rank]
        ndim = KIND_NDIM[kind]
        if (ndim == 0 and rank < 1) or (ndim and rank != ndim + 1):
            raise ValueError(
                f"input_shape={input_shape} has rank {rank}; kind {kind!r} needs rank {RANK[kind]}: leave kind "
                f"unset to follow the data (kind={RANK_KIND.get(rank, 'mlp')!r} here)"
            )
        groups = self.groups if self.groups is not None else (min(32, self.width) if ndim else 1)
        if self.width % groups:
            raise ValueError(
                f"width={self.width} is not divisible by groups={groups} (GroupNorm groups; the default is "
                f"min(32, width) for conv kinds): choose a width that is a multiple of {groups} or pass groups"
            )
        stem = self.stem if self.stem is not None else default_stem(kind)
        if kind not in STEMS.get(stem).kinds:
            valid = [s for s in STEMS.names() if kind in STEMS.get(s).kinds]
            raise ValueError(f"stem {stem!r} does not apply to kind {kind!r}; valid choices: {', '.join(valid)}")
        if ndim and min(sizes := STEMS.get(stem).spatial(input_shape[:-1])) < 1:
            raise ValueError(
                f"input_shape={input_shape} is too small for stem {stem!r} (spatial sizes {sizes} after it)"
            )
        fractions = {k: getattr(self, k) or max(1, self.width // d) for k, d in self.width_fractions.items()}
        return dataclasses.replace(self, kind=kind, groups=groups, stem=stem, **fractions)

    @abc.abstractmethod
    def stage(self, channels: int, rngs: nnx.Rngs) -> tuple[nnx.Module, int]:
        """One stage at `channels` channels (on a resolved family): the module and its output channels."""

    def build(self, input_shape: Sequence[int], num_classes: int, *, rngs: nnx.Rngs | int = 0) -> Classifier:
        """The classifier for inputs (B, *input_shape): every check first, parameters after."""
        is_seq = isinstance(input_shape, Sequence) and not isinstance(input_shape, str)
        if not (is_seq and input_shape and all(is_int(n) and n >= 1 for n in input_shape)):
            raise ValueError(
                f"input_shape must be a tuple of ints >= 1 (no batch axis), got input_shape={input_shape!r}"
            )
        input_shape = tuple(int(n) for n in input_shape)
        num_classes = integer("num_classes", num_classes, 2)
        resolved = self.resolve(input_shape)
        if is_int(rngs):
            rngs = nnx.Rngs(int(cast(int, rngs)))
        if not isinstance(rngs, nnx.Rngs):
            raise ValueError(f"rngs must be an nnx.Rngs or an int seed, got rngs={rngs!r}")
        return Classifier(resolved, input_shape, num_classes, rngs=rngs)


    def trajectory(self, dim: int, ts, *, rngs: nnx.Rngs | int = 0) -> Trajectory:
        """The model for trajectory data (initial states (B, dim) -> states at ts); only the
        families with `takes_trajectories` build one, the others refuse with the families that do."""
        check_trajectories(getattr(self, "name", type(self).__name__))
        raise NotImplementedError  # a family with takes_trajectories overrides this method


REGISTRY: Registry[Family] = Registry("model family", Family)


def check_trajectories(family: str, dataset: str | None = None) -> None:
    """Refuse trajectory data for a family that maps inputs to class logits, naming those that fit it."""
    if REGISTRY.get(family).takes_trajectories:
        return
    those = " or ".join(f"model={n}" for n in REGISTRY.names() if REGISTRY.get(n).takes_trajectories)
    data = f" (dataset {dataset!r})" if dataset else ""
    raise ValueError(
        f"model family {family!r} maps an input to class scores through a stem and a head; trajectory "
        f"data{data} needs a Neural ODE family: {those}, which integrates a field on the observed state "
        f"and fits its states at the observation times"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layered(Family):
    """field   the layer type, a name in `odenets.fields.field_type` (basic | bottleneck | multibranch;
            multibranch only for conv kinds)
    preact  False: conv-norm-act ordering; True: norm-act-conv (conv kinds only)"""

    field: str = "basic"
    preact: bool = False

    def field_choices(self) -> tuple[str, ...]:
        return tuple(field_type.names())

    def __post_init__(self):
        super().__post_init__()
        choice("field", self.field, self.field_choices())
        boolean("preact", self.preact)

    def resolve(self, input_shape):
        spec = super().resolve(input_shape)
        if spec.ndim == 0 and spec.field in field_type.names() and not field_type(spec.field).flat:
            valid = ", ".join(n for n in self.field_choices() if field_type(n).flat)
            raise ValueError(f"field {spec.field!r} needs a conv kind (kind='conv1d' or 'conv2d'); valid choices "
                             f"for kind 'mlp': {valid}")
        if spec.preact and spec.ndim == 0:
            raise ValueError(
                "preact=True needs a conv kind (the mlp kind's fields are MLPFields, without norms); "
                "valid choices for kind 'mlp': preact=False"
            )
        return spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fields(Layered):
    """time  t enters each field as one more channel (ConcatConv / an extra feature)"""

    time: bool = False

    def __post_init__(self):
        super().__post_init__()
        boolean("time", self.time)

    def make_field(self, channels: int) -> FieldMaker:
        """The residual branch F at `channels` channels that field / preact / time / kind choose."""
        return field_type(self.field).make(
            channels, ndim=self.ndim, preact=self.preact, time=self.time, groups=self.norm_groups(channels)
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scanned(Family):
    """unroll  steps per iteration of the stage's scan (True: straight-line code)"""

    unroll: int | bool = 1

    def __post_init__(self):
        super().__post_init__()
        check_unroll(self.unroll)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solved(Scanned):
    """Stages that are `odeint` solves (ODEBlocks).

    gradient  a name or Gradient
    lambda_K  RNODE weight of the kinetic energy int |f|^2 dt in the training loss (0: off; 0.01 in
              Finlay et al. 2020); see `odenets.rnode`
    lambda_J  RNODE weight of the Jacobian Frobenius norm int |df/dx|_F^2 dt (Hutchinson estimate, one
              N(0, I) probe per solve, per step for per-step fields; 0: off)

    `per_step` says whether the blocks have one parameter set per step (then the integrator must
    take fixed steps); `solver_integrator()` and `end_time` give the solve's integrator and t1."""

    gradient: Any = "backprop"
    lambda_K: float = RNODE.lambda_K
    lambda_J: float = RNODE.lambda_J

    takes_gradient: ClassVar[bool] = True
    per_step: ClassVar[bool]

    @abc.abstractmethod
    def solver_integrator(self) -> Any: ...

    @property
    @abc.abstractmethod
    def end_time(self) -> float: ...

    def __post_init__(self):
        super().__post_init__()
        self.rnode  # noqa: B018 (checks lambda_K and lambda_J now, before any parameter exists)
        try:
            resolve_solver(self.solver_integrator(), self.gradient, per_step=self.per_step, unroll=self.unroll)
        except ValueError as error:
            raise ValueError(f"{error}{self._pairing_hint()}") from None

    def _pairing_hint(self) -> str:
        try:
            adaptive = integrators(self.solver_integrator()).adaptive
        except (ValueError, TypeError):
            return ""
        if not (self.per_step and adaptive):
            return ""
        shared = [n for n in REGISTRY.names()
                  if REGISTRY.get(n).takes_integrator and not cast(type[Solved], REGISTRY.get(n)).per_step]
        name = getattr(self, "name", type(self).__name__)
        return (
            f"; model family {name!r} has one parameter set per step, so its "
            f"steps are fixed: for an adaptive integrator use a family with one shared field "
            f"({', '.join(f'model={n}' for n in shared)})"
        )

    @property
    def rnode(self) -> RNODE:
        """The RNODE weights of this family's ODE blocks (checked by `RNODE`)."""
        return RNODE(lambda_K=self.lambda_K, lambda_J=self.lambda_J)

    def ode_block(self, make_field: FieldMaker, rngs: nnx.Rngs) -> ODEBlock:
        """The stage's ODEBlock: `depth` steps from 0 to `end_time` with this family's solver."""
        return ODEBlock(
            make_field, params="per_step" if self.per_step else "shared", steps=self.depth,
            integrator=self.solver_integrator(), gradient=self.gradient, t1=self.end_time, unroll=self.unroll,
            rnode=self.rnode, rngs=rngs,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Integrated(Solved):
    """integrator  a name or Integrator"""

    integrator: Any = "euler"

    takes_integrator: ClassVar[bool] = True

    def solver_integrator(self):
        return self.integrator


STEP_SIZES = ("one", "t_over_n")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stepped(Family):
    """step_size  "one": h = 1, t1 = depth; "t_over_n": h = t1 / depth
    t1         the end time with step_size="t_over_n" (None: 1.0)"""

    step_size: str = "one"
    t1: float | None = None

    def __post_init__(self):
        super().__post_init__()
        choice("step_size", self.step_size, STEP_SIZES)
        optional(number, "t1", self.t1, low=0.0)
        if self.step_size == "one" and self.t1 is not None and self.t1 != self.depth:
            raise ValueError(
                f"t1={self.t1!r} conflicts with step_size='one' (h = 1, so t1 = depth); "
                "use step_size='t_over_n' to choose t1"
            )

    def resolve(self, input_shape):
        spec = super().resolve(input_shape)
        t1 = float(spec.depth) if spec.step_size == "one" else (1.0 if spec.t1 is None else float(spec.t1))
        return dataclasses.replace(spec, t1=t1)

    @property
    def end_time(self) -> float:
        return cast(float, self.t1)  # set by resolve
