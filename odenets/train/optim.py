"""Optimisers and learning-rate schedules from config, by name (optax underneath).

    optim: {name: adam, lr: 1e-3, weight_decay: 0.0, schedule: cosine, warmup_steps: 0,
            clip_norm: 1.0, batch_size: 128, epochs: 10}

The update is clip_by_global_norm(clip_norm) -> optimiser(schedule), so gradient clipping
applies to the raw gradient as in most ResNet / Neural ODE training recipes.
"""

from __future__ import annotations

from collections.abc import Callable

import optax

SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    # constant: lr (after an optional linear warm-up; linear_schedule holds lr once it is reached)
    "constant": lambda lr, total, warmup: optax.linear_schedule(0.0, lr, warmup) if warmup
    else optax.constant_schedule(lr),
    # cosine: warm-up to lr, then cosine decay to 0 at the last step
    "cosine": lambda lr, total, warmup: optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, warmup, max(total, warmup + 1), end_value=0.0
    ),
    # onecycle: the one-cycle policy (Smith), peak lr at 30% of training (its own warm-up)
    "onecycle": lambda lr, total, warmup: optax.cosine_onecycle_schedule(max(total, 2), lr),
}

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": lambda schedule, weight_decay, momentum: optax.adam(schedule)
    if not weight_decay
    else optax.adamw(schedule, weight_decay=weight_decay),
    "adamw": lambda schedule, weight_decay, momentum: optax.adamw(schedule, weight_decay=weight_decay),
    "sgd": lambda schedule, weight_decay, momentum: optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(schedule, momentum=momentum or None, nesterov=bool(momentum)),
    ),
}

OPTIM_KEYS = (
    "name", "lr", "weight_decay", "momentum", "schedule", "warmup_steps", "clip_norm", "batch_size", "epochs",
)


def _choice(kind: str, value, table: dict):
    if value not in table:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(table)}")
    return table[value]


def check_optim(cfg: dict) -> None:
    """Validate an optim config before anything is built."""
    unknown = sorted(set(cfg) - set(OPTIM_KEYS))
    if unknown:
        raise ValueError(f"unknown optim key(s) {unknown}; valid keys: {', '.join(OPTIM_KEYS)}")
    _choice("optimizer (optim.name)", cfg.get("name", "adam"), OPTIMIZERS)
    _choice("schedule (optim.schedule)", cfg.get("schedule", "constant"), SCHEDULES)
    for key in ("lr", "batch_size", "epochs"):
        value = cfg.get(key)
        if value is None or isinstance(value, bool) or not value > 0:
            raise ValueError(f"optim.{key} must be > 0, got {value!r}")
    for key in ("batch_size", "epochs", "warmup_steps"):
        value = cfg.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"optim.{key} must be an int, got {value!r}")
    if cfg.get("schedule") == "onecycle" and cfg.get("warmup_steps", 0):
        raise ValueError(f"optim.warmup_steps={cfg['warmup_steps']} is not used by schedule 'onecycle' (it "
                         f"warms up over 30% of the steps); set warmup_steps: 0, or choose constant or cosine")
    clip = cfg.get("clip_norm")
    if clip is not None and not clip > 0:
        raise ValueError(f"optim.clip_norm must be > 0 or null (no clipping), got {clip!r}")


def make_optimizer(cfg: dict, total_steps: int) -> optax.GradientTransformation:
    """clip -> optimiser(schedule) from an optim config (see the module docstring)."""
    check_optim(cfg)
    schedule = SCHEDULES[cfg.get("schedule", "constant")](cfg["lr"], total_steps, cfg.get("warmup_steps", 0))
    opt = OPTIMIZERS[cfg.get("name", "adam")](schedule, cfg.get("weight_decay", 0.0), cfg.get("momentum", 0.0))
    clip = cfg.get("clip_norm")
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt
