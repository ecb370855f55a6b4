"""Optimisers and learning-rate schedules, by name: one options dataclass per optimiser.

    optim: {name: adamw, lr: 3e-3, weight_decay: 1e-4, schedule: cosine, warmup_steps: 62,
            clip_norm: 1.0, batch_size: 128, epochs: 40}

`optimizer` is the registry (`optimizer("sgd", lr=0.1)` builds the options; the fields of each
class are exactly the keys of its `optim` config group, with their defaults). The update is

    clip_by_global_norm(clip_norm) -> rule(lr(step))

so clipping applies to the raw gradient, as in most ResNet / Neural ODE recipes, and lr(step)
is the schedule: a linear warm-up from 0 over `warmup_steps`, then constant or cosine decay to
0 at the last step; onecycle is Smith's one-cycle policy (its own warm-up, peak at 30%).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import optax

from odenets import validate
from odenets._abstract import final
from odenets._registry import Registry

SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
    # (lr, total steps, warm-up steps) -> step -> learning rate
    "constant": lambda lr, total, warmup: optax.linear_schedule(0.0, lr, warmup) if warmup
    else optax.constant_schedule(lr),
    "cosine": lambda lr, total, warmup: optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, warmup, max(total, warmup + 1), end_value=0.0
    ),
    "onecycle": lambda lr, total, warmup: optax.cosine_onecycle_schedule(max(total, 2), lr),
}


@dataclasses.dataclass(frozen=True)
class Optimizer(abc.ABC):
    """The options every optimiser takes; a subclass adds its own and its update `rule`.

    `batch_size` and `epochs` live here because they set the schedule's length
    (total steps = epochs * (n_train // batch_size)). Every field is checked on construction
    with the key it has in the config (`optim.lr`), so a bad value names where it came from.
    """

    name: ClassVar[str]
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    clip_norm: float | None = 1.0  # None: no clipping
    batch_size: int = 128
    epochs: int = 10

    def __post_init__(self):
        validate.number("optim.lr", self.lr, low=0.0)
        validate.number("optim.weight_decay", self.weight_decay, low=0.0, open_low=False)
        validate.choice("schedule (optim.schedule)", self.schedule, SCHEDULES)
        validate.integer("optim.warmup_steps", self.warmup_steps, 0)
        validate.optional(validate.number, "optim.clip_norm", self.clip_norm, low=0.0)
        validate.integer("optim.batch_size", self.batch_size, 1)
        validate.integer("optim.epochs", self.epochs, 1)
        if self.schedule == "onecycle" and self.warmup_steps:
            raise ValueError(
                f"optim.warmup_steps={self.warmup_steps} is not used by schedule 'onecycle' (it warms up over "
                f"30% of the steps); set warmup_steps: 0, or choose constant or cosine"
            )

    @abc.abstractmethod
    def rule(self, lr: optax.Schedule) -> optax.GradientTransformation:
        """The optimiser's update rule at learning rate lr(step)."""

    def transform(self, total_steps: int) -> optax.GradientTransformation:
        """clip -> rule(schedule) for a run of `total_steps` steps."""
        rule = self.rule(SCHEDULES[self.schedule](self.lr, total_steps, self.warmup_steps))
        return optax.chain(optax.clip_by_global_norm(self.clip_norm), rule) if self.clip_norm else rule


optimizer: Registry[Optimizer] = Registry("optimizer", Optimizer)


@optimizer.register("adam")
@final
@dataclasses.dataclass(frozen=True)
class Adam(Optimizer):
    """Adam; with weight_decay > 0 the decoupled decay of AdamW."""

    def rule(self, lr):
        return optax.adamw(lr, weight_decay=self.weight_decay) if self.weight_decay else optax.adam(lr)


@optimizer.register("adamw")
@final
@dataclasses.dataclass(frozen=True)
class AdamW(Optimizer):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, theta -= lr * wd * theta."""

    weight_decay: float = 1e-4

    def rule(self, lr):
        return optax.adamw(lr, weight_decay=self.weight_decay)


@optimizer.register("sgd")
@final
@dataclasses.dataclass(frozen=True)
class SGD(Optimizer):
    """SGD with L2 weight decay added to the gradient (g + wd * theta) and Nesterov momentum
    (plain SGD with momentum=0): the classic ResNet recipe's lr 0.1, momentum 0.9, wd 5e-4."""

    lr: float = 0.1
    weight_decay: float = 5e-4
    clip_norm: float | None = None
    momentum: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        validate.number("optim.momentum", self.momentum, low=0.0, high=1.0, open_low=False)

    def rule(self, lr):
        momentum = self.momentum or None
        return optax.chain(optax.add_decayed_weights(self.weight_decay),
                           optax.sgd(lr, momentum=momentum, nesterov=momentum is not None))
