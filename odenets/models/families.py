"""Model families, by name (`odenets.models.family`): what a stage of `depth` blocks is.

Each family is one frozen dataclass whose fields are its options (see `odenets.models.base`
for the option groups), registered by name; `stage(channels, rngs)` builds one stage of a
resolved family. Adding a family is one registered class.

Renamed options: antisymmetric's `gamma` is `damping` (momentum's `gamma` keeps its meaning).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, cast

from flax import nnx

from odenets._abstract import final
from odenets.fields import AntisymmetricField, FieldMaker, HamiltonianField, HighwayField
from odenets.fields.mlp import MLPField
from odenets.models.base import REGISTRY, Fields, Integrated, Layered, Scanned, Solved, Stepped
from odenets.models.stages import (
    AugmentedBlock,
    DenseBlock,
    HamiltonianBlock,
    MomentumBlock,
    PlainBlock,
    momentum_solver,
)
from odenets.models.trajectory import Trajectory
from odenets.validate import integer, is_int, number

register = REGISTRY.register


@dataclasses.dataclass(frozen=True, kw_only=True)
class Residual(Stepped, Fields, Integrated):
    """x_{k+1} = x_k + h G_k(t_k, x_k): per-step fields G_k = `residual(F_k)` through `odeint`,
    Euler and h = 1 by default (step_size="one"); step_size="t_over_n" gives h = t1 / depth.
    Any fixed-step integrator and any gradient strategy."""

    per_step = True

    @abc.abstractmethod
    def residual(self, make_field: FieldMaker, channels: int) -> FieldMaker:
        """The step's field G from the layer's field F (`make_field`), at `channels` channels."""

    def stage(self, channels, rngs):
        return self.ode_block(self.residual(self.make_field(channels), channels), rngs), channels


@register("resnet")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class ResNet(Residual):
    """The discrete ResNet, x_{k+1} = x_k + h F_k(t_k, x_k)."""

    def residual(self, make_field, channels):
        return make_field


@register("plain")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Plain(Fields, Scanned):
    """x_{k+1} = F_k(t_k, x_k): the resnet's fields with the skip removed (not an ODE)."""

    def stage(self, channels, rngs):
        return PlainBlock(self.make_field(channels), steps=self.depth, unroll=self.unroll, rngs=rngs), channels


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharedODE(Fields, Integrated):
    """One shared field per stage from t = 0 to t1 (Chen et al. 2018): `depth` steps of a
    fixed-step integrator (adaptive integrators choose their own). RK4, backprop and a
    time-conditioned field by default.

    t1  the end time (1.0)

    On trajectory data (`trajectory`) the family is a `Trajectory` model instead: no stem, no
    head, one field F = MLPField(D + augment, hidden=width, layers=2) on the observed state
    itself (t as an input if time), integrated over the observation times with `depth` steps
    per observation interval (t1 and the stem, stage and field-type options do not apply)."""

    time: bool = True
    integrator: Any = "rk4"
    t1: float = 1.0

    per_step = False
    takes_trajectories = True
    trajectory_layers: ClassVar[int] = 2

    def __post_init__(self):
        super().__post_init__()
        number("t1", self.t1, low=0.0)

    def extra_channels(self) -> int:
        """Zero channels appended to the state (ANODE's augment; 0 for the Neural ODE)."""
        return 0

    def trajectory(self, dim, ts, *, rngs=0):
        spec = self.resolve((integer("dim", dim, 1),))
        if spec.kind != "mlp" or spec.stages != 1:
            raise ValueError(
                f"trajectory data gives states of shape (D,) = ({dim},): model family {self.name!r} needs "
                f"kind='mlp' and stages=1 for it, got kind={spec.kind!r}, stages={spec.stages}"
            )
        if spec.rnode.active:
            raise ValueError(
                f"lambda_K={spec.lambda_K!r}, lambda_J={spec.lambda_J!r}: the RNODE regulariser applies to the "
                f"ODE blocks of a classifier; trajectory data fits a Trajectory model, which it does not "
                f"regularise (valid choice here: lambda_K=0, lambda_J=0)"
            )
        channels, width, time = dim + spec.extra_channels(), spec.width, spec.time
        make = lambda r: MLPField(channels, width, layers=self.trajectory_layers, time=time, rngs=r)
        if is_int(rngs):
            rngs = nnx.Rngs(int(cast(int, rngs)))
        return Trajectory(make, dim, ts, steps_per_interval=spec.depth, integrator=spec.integrator,
                          gradient=spec.gradient, augment=spec.extra_channels(), unroll=spec.unroll,
                          rngs=cast(nnx.Rngs, rngs))

    @property
    def end_time(self) -> float:
        return float(self.t1)


@register("node")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class NeuralODE(SharedODE):
    """The Neural ODE: one ODE block per stage."""

    def stage(self, channels, rngs):
        return self.ode_block(self.make_field(channels), rngs), channels


@register("anode")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentedNeuralODE(SharedODE):
    """A Neural ODE on the state with `augment` zero channels appended (Dupont et al. 2019);
    the extra channels are kept, so the stage adds `augment` channels.

    augment  extra zero channels (None: max(1, width // 4))"""

    augment: int | None = None
    width_fractions: ClassVar[dict[str, int]] = {"augment": 4}

    def extra_channels(self) -> int:
        return cast(int, self.augment)  # set by resolve

    def stage(self, channels, rngs):
        wide = channels + self.extra_channels()
        return AugmentedBlock(self.extra_channels(), self.ode_block(self.make_field(wide), rngs)), wide


@register("highway")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Highway(Fields, Solved):
    """x_{k+1} = g F_k(x_k) + (1 - g) x_k, g = sigmoid(gate_k(x_k)) (Srivastava et al. 2015):
    one Euler step (h = 1) of the field g (F - x) per layer, through `odeint`. The step rule is
    part of the family, so it takes a gradient but no integrator.

    gate_bias  the gates' initial bias b (-1.0): g starts near sigmoid(b), negative b carries x through
               (Srivastava et al. start at -1 to -3), large positive b closes the carry path (g -> 1:
               x_{k+1} -> F_k(x_k), a plain net)"""

    gate_bias: float = -1.0

    per_step = True

    def __post_init__(self):
        super().__post_init__()
        number("gate_bias", self.gate_bias)

    def solver_integrator(self):
        return "euler"

    @property
    def end_time(self) -> float:
        return float(self.depth)

    def stage(self, channels, rngs):
        inner, ndim, bias = self.make_field(channels), self.ndim, self.gate_bias
        make = lambda r: HighwayField(inner(r), channels, ndim, gate_bias=bias, rngs=r)
        return self.ode_block(make, rngs), channels


DENSE_LAYERS = ("basic", "bottleneck")


@register("densenet")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class DenseNet(Layered):
    """x_{k+1} = concat(x_k, H_k(x_k)) with `growth` new channels per layer, then a transition
    back to the stage width (Huang et al. 2017); field="bottleneck" is DenseNet-B.

    growth  channels each layer adds (None: max(1, width // 2))"""

    growth: int | None = None
    width_fractions: ClassVar[dict[str, int]] = {"growth": 2}

    def field_choices(self):
        return DENSE_LAYERS


    def stage(self, channels, rngs):
        block = DenseBlock(
            channels, depth=self.depth, growth=self.growth, ndim=self.ndim, bottleneck=self.field == "bottleneck",
            preact=self.preact, groups=self.groups, rngs=rngs,
        )
        return block, channels


@register("momentum")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Momentum(Fields, Scanned):
    """Momentum ResNet (Sander et al. 2021): v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k),
    x_{k+1} = x_k + v_{k+1}, v_0 = 0; invertible.

    gamma     the momentum coefficient, in (0, 1)
    gradient  a name or Gradient that gives the gradient of the recursion: backprop, checkpoint, or
              reversible (the backward pass by exact inversion: memory independent of depth)"""

    gamma: float = 0.9
    gradient: Any = "backprop"

    takes_gradient: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        number("gamma", self.gamma, low=0.0, high=1.0)
        momentum_solver(self.gamma, self.gradient, self.unroll)

    def stage(self, channels, rngs):
        block = MomentumBlock(
            self.make_field(channels), steps=self.depth, gamma=self.gamma, gradient=self.gradient,
            unroll=self.unroll, rngs=rngs,
        )
        return block, channels


@register("antisymmetric")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Antisymmetric(Stepped, Integrated):
    """Haber & Ruthotto's antisymmetric network: per-step AntisymmetricFields
    F_k(x) = tanh((K_k - K_k^T - damping I) x + b_k) through `odeint`; Euler with h = t1 / depth
    (t1 = 1) by default. Conv kinds use 3-wide convolutions K and their exact adjoints.

    damping  >= 0, the real part -damping of every eigenvalue of the linear part"""

    step_size: str = "t_over_n"
    damping: float = 0.01

    per_step = True

    def __post_init__(self):
        super().__post_init__()
        number("damping", self.damping, low=0.0, open_low=False)

    def stage(self, channels, rngs):
        ndim, damping = self.ndim, self.damping
        make = lambda r: AntisymmetricField(channels, ndim=ndim, damping=damping, rngs=r)
        return self.ode_block(make, rngs), channels


@register("hamiltonian")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Hamiltonian(Stepped, Scanned):
    """Haber & Ruthotto's Hamiltonian network: the stage input split channel-wise into (y, z),
    a leapfrog scan over per-step HamiltonianFields with h = t1 / depth (t1 = 1 by default),
    output concat(y, z). Needs an even width. Conv kinds use convolutions and their adjoints."""

    step_size: str = "t_over_n"

    def __post_init__(self):
        super().__post_init__()
        if self.width % 2:
            raise ValueError(
                f"width={self.width} must be even for family 'hamiltonian' (the state splits into y, z)"
            )

    def stage(self, channels, rngs):
        half, ndim = channels // 2, self.ndim
        block = HamiltonianBlock(
            lambda r: HamiltonianField(half, ndim=ndim, rngs=r), steps=self.depth, h=self.end_time / self.depth,
            unroll=self.unroll, rngs=rngs,
        )
        return block, channels
