"""Model families, by name: what a stage of `depth` blocks is (`odenets.models.family`).

A family is a small immutable class: `options` (the config keys it takes beyond the common
ones, with its defaults), `check` (its own validation, before any parameter exists) and
`stage` (one stage at a given width: returns the module and its output channels). Adding a
family is one class and one registry line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from flax import nnx

from odenets._registry import Registry
from odenets.fields import ConvField, MLPField
from odenets.fields.bottleneck import BottleneckField
from odenets.fields.stable import AntisymmetricField, HamiltonianField
from odenets.models.block import ODEBlock, resolve_solver
from odenets.models.config import ModelConfig, integer, number
from odenets.models.stages import (
    AugmentedBlock,
    DenseBlock,
    HamiltonianBlock,
    HighwayField,
    MomentumBlock,
    PlainBlock,
)

FieldMaker = Callable[[nnx.Rngs], nnx.Module]
FIELD = {"field": "basic", "preact": False, "time": False}
UNROLL = {"unroll": 1}  # families whose steps run in a scan (odeint's or their own)


def make_field(cfg: ModelConfig, channels: int) -> FieldMaker:
    """The residual branch F at `channels` channels that cfg.field / preact / time / kind choose.

    basic:      mlp: MLPField(hidden=channels); conv: ConvField (preact, Chen et al.'s block)
                or with preact=False (conv-GN-ReLU-conv-GN).
    bottleneck: mlp: MLPField(hidden=channels // 4); conv: BottleneckField(preact).
    """
    ndim, groups, time = cfg.ndim, cfg.norm_groups(channels), cfg.time
    if ndim == 0:
        hidden = channels if cfg.field == "basic" else max(1, channels // 4)
        return lambda r: MLPField(channels, hidden, time=time, rngs=r)
    if cfg.field == "bottleneck":
        return lambda r: BottleneckField(channels, ndim=ndim, preact=cfg.preact, time=time, groups=groups, rngs=r)
    return lambda r: ConvField(channels, ndim=ndim, preact=cfg.preact, time=time, groups=groups, rngs=r)


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: how one stage of `depth` blocks is built."""

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}

    def check(self, cfg: ModelConfig) -> ModelConfig:
        """Family-specific validation and derived defaults; raises ValueError, allocates nothing."""
        return cfg

    def stage(self, cfg: ModelConfig, channels: int, rngs: nnx.Rngs) -> tuple[nnx.Module, int]:
        raise NotImplementedError


REGISTRY: Registry[Family] = Registry("model family", Family)
register = REGISTRY.register


def _solver(cfg: ModelConfig, *, per_step: bool) -> ModelConfig:
    integ, grad = resolve_solver(cfg.integrator, cfg.gradient, per_step=per_step, unroll=cfg.unroll)
    return dataclasses.replace(cfg, integrator=integ, gradient=grad)


@register("resnet")
@dataclasses.dataclass(frozen=True)
class ResNet(Family):
    """x_{k+1} = x_k + h F_k(t_k, x_k): per-step fields through `odeint`, Euler and h = 1 by
    default (step_size="one"); step_size="t_over_n" gives h = t1 / depth. Any fixed-step
    integrator and any gradient strategy."""

    name: ClassVar[str] = "resnet"
    options: ClassVar[dict[str, Any]] = {
        **FIELD, **UNROLL, "integrator": "euler", "gradient": "backprop", "step_size": "one", "t1": None,
    }

    def check(self, cfg):
        return _solver(cfg, per_step=True)

    def stage(self, cfg, channels, rngs):
        block = ODEBlock(
            make_field(cfg, channels), depth="per_step", steps=cfg.depth, integrator=cfg.integrator,
            gradient=cfg.gradient, t1=cfg.t1, unroll=cfg.unroll, rngs=rngs,
        )
        return block, channels


@register("plain")
@dataclasses.dataclass(frozen=True)
class Plain(Family):
    """x_{k+1} = F_k(t_k, x_k): the resnet's fields with the skip removed (not an ODE)."""

    name: ClassVar[str] = "plain"
    options: ClassVar[dict[str, Any]] = {**FIELD, **UNROLL}

    def stage(self, cfg, channels, rngs):
        return PlainBlock(make_field(cfg, channels), steps=cfg.depth, unroll=cfg.unroll, rngs=rngs), channels


@register("node")
@dataclasses.dataclass(frozen=True)
class NeuralODE(Family):
    """One shared field per stage from t = 0 to t1 (Chen et al. 2018): `depth` steps of a
    fixed-step integrator (adaptive integrators choose their own). RK4 and backprop by default."""

    name: ClassVar[str] = "node"
    options: ClassVar[dict[str, Any]] = {
        **FIELD, **UNROLL, "integrator": "rk4", "gradient": "backprop", "t1": 1.0,
    }

    def check(self, cfg):
        return _solver(cfg, per_step=False)

    def block(self, cfg, channels, rngs):
        return ODEBlock(
            make_field(cfg, channels), depth="shared", steps=cfg.depth, integrator=cfg.integrator,
            gradient=cfg.gradient, t1=cfg.t1, unroll=cfg.unroll, rngs=rngs,
        )

    def stage(self, cfg, channels, rngs):
        return self.block(cfg, channels, rngs), channels


@register("anode")
@dataclasses.dataclass(frozen=True)
class AugmentedNeuralODE(NeuralODE):
    """A Neural ODE on the state with `augment` zero channels appended (Dupont et al. 2019);
    the extra channels are kept, so the stage adds `augment` channels."""

    name: ClassVar[str] = "anode"
    options: ClassVar[dict[str, Any]] = {**NeuralODE.options, "augment": None}

    def check(self, cfg):
        augment = integer("augment", cfg.augment if cfg.augment is not None else max(1, cfg.width // 4), 1)
        return super().check(dataclasses.replace(cfg, augment=augment))

    def stage(self, cfg, channels, rngs):
        return AugmentedBlock(cfg.augment, self.block(cfg, channels + cfg.augment, rngs)), channels + cfg.augment


@register("highway")
@dataclasses.dataclass(frozen=True)
class Highway(Family):
    """x_{k+1} = g F_k(x_k) + (1 - g) x_k, g = sigmoid(gate_k(x_k)) (Srivastava et al. 2015):
    one Euler step (h = 1) of the field g (F - x) per layer, through `odeint`."""

    name: ClassVar[str] = "highway"
    options: ClassVar[dict[str, Any]] = {**FIELD, **UNROLL, "gradient": "backprop"}

    def check(self, cfg):
        cfg = dataclasses.replace(cfg, integrator="euler")
        return _solver(cfg, per_step=True)

    def stage(self, cfg, channels, rngs):
        inner = make_field(cfg, channels)
        make = lambda r: HighwayField(inner(r), channels, cfg.ndim, rngs=r)
        block = ODEBlock(
            make, depth="per_step", steps=cfg.depth, integrator=cfg.integrator, gradient=cfg.gradient,
            t1=float(cfg.depth), unroll=cfg.unroll, rngs=rngs,
        )
        return block, channels


@register("densenet")
@dataclasses.dataclass(frozen=True)
class DenseNet(Family):
    """x_{k+1} = concat(x_k, H_k(x_k)) with `growth` new channels per layer, then a transition
    back to the stage width (Huang et al. 2017); field="bottleneck" is DenseNet-B."""

    name: ClassVar[str] = "densenet"
    options: ClassVar[dict[str, Any]] = {"field": "basic", "preact": False, "growth": None}

    def check(self, cfg):
        growth = integer("growth", cfg.growth if cfg.growth is not None else max(1, cfg.width // 2), 1)
        return dataclasses.replace(cfg, growth=growth)

    def stage(self, cfg, channels, rngs):
        block = DenseBlock(
            channels, depth=cfg.depth, growth=cfg.growth, ndim=cfg.ndim, bottleneck=cfg.field == "bottleneck",
            preact=cfg.preact, groups=cfg.groups, rngs=rngs,
        )
        return block, channels


@register("momentum")
@dataclasses.dataclass(frozen=True)
class Momentum(Family):
    """Momentum ResNet (Sander et al. 2021): v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k),
    x_{k+1} = x_k + v_{k+1}, v_0 = 0; invertible. gamma in (0, 1), default 0.9."""

    name: ClassVar[str] = "momentum"
    options: ClassVar[dict[str, Any]] = {**FIELD, **UNROLL, "gamma": 0.9}

    def check(self, cfg):
        return dataclasses.replace(cfg, gamma=number("gamma", cfg.gamma, low=0.0, high=1.0))

    def stage(self, cfg, channels, rngs):
        block = MomentumBlock(make_field(cfg, channels), steps=cfg.depth, gamma=cfg.gamma, unroll=cfg.unroll,
                              rngs=rngs)
        return block, channels


@register("antisymmetric")
@dataclasses.dataclass(frozen=True)
class Antisymmetric(Family):
    """Haber & Ruthotto's antisymmetric network: per-step AntisymmetricFields
    F_k(x) = tanh((K_k - K_k^T - gamma I) x + b_k) through `odeint`; Euler with h = t1 / depth
    (t1 = 1) by default. Conv kinds use 3-wide convolutions K and their exact adjoints."""

    name: ClassVar[str] = "antisymmetric"
    options: ClassVar[dict[str, Any]] = {
        **UNROLL, "integrator": "euler", "gradient": "backprop", "step_size": "t_over_n", "t1": None,
        "gamma": 0.01,
    }

    def check(self, cfg):
        cfg = dataclasses.replace(cfg, gamma=number("gamma", cfg.gamma, low=0.0, open_low=False))
        return _solver(cfg, per_step=True)

    def stage(self, cfg, channels, rngs):
        make = lambda r: AntisymmetricField(channels, ndim=cfg.ndim, gamma=cfg.gamma, rngs=r)
        block = ODEBlock(
            make, depth="per_step", steps=cfg.depth, integrator=cfg.integrator, gradient=cfg.gradient,
            t1=cfg.t1, unroll=cfg.unroll, rngs=rngs,
        )
        return block, channels


@register("hamiltonian")
@dataclasses.dataclass(frozen=True)
class Hamiltonian(Family):
    """Haber & Ruthotto's Hamiltonian network: the stage input split channel-wise into (y, z),
    a leapfrog scan over per-step HamiltonianFields with h = t1 / depth (t1 = 1 by default),
    output concat(y, z). Needs an even width. Conv kinds use convolutions and their adjoints."""

    name: ClassVar[str] = "hamiltonian"
    options: ClassVar[dict[str, Any]] = {**UNROLL, "step_size": "t_over_n", "t1": None}

    def check(self, cfg):
        if cfg.width % 2:
            raise ValueError(
                f"width={cfg.width} must be even for family 'hamiltonian' (the state splits into y, z)"
            )
        return cfg

    def stage(self, cfg, channels, rngs):
        half = channels // 2
        make = lambda r: HamiltonianField(half, ndim=cfg.ndim, rngs=r)
        block = HamiltonianBlock(make, steps=cfg.depth, h=cfg.t1 / cfg.depth, unroll=cfg.unroll, rngs=rngs)
        return block, channels
