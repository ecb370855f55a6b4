"""The model config every family takes, and its validation (all of it before any parameter exists).

Common keys (every family):
    kind          "mlp" (input flattened) | "conv1d" (B, L, C) | "conv2d" (B, H, W, C)   required
    input_shape   the input's shape without the batch axis                              required
    num_classes   int >= 2                                                              required
    width         channels of the first stage (stage s has width * 2**s)                required
    depth         blocks (or steps) per stage, int >= 1                                 required
    stages        1; between stages a projection (1x1 / linear, stride 2 if downsample) + GN
    groups        GroupNorm groups for `width`: min(32, width) for conv kinds, 1 for mlp;
                  other channel counts use gcd(channels, groups)
    downsample    True: stride-2 transitions between stages (conv kinds)
    stem          "linear" for mlp, "conv" for conv kinds (default); "chen" (conv kinds):
                  Chen et al.'s conv3 -> 2 stride-2 conv4 downsampling

Family keys (each family takes the subset its `options` lists, with its own defaults):
    field         "basic" | "bottleneck"
    preact        False: conv-norm-act ordering; True: norm-act-conv (conv kinds only)
    time          False; True: t enters each field as one more channel (ConcatConv)
    integrator    a name or Integrator (resnet/antisymmetric: fixed-step only)
    gradient      a name or Gradient ("backprop")
    step_size     "one": h = 1, t1 = depth; "t_over_n": h = t1 / depth
    t1            the end time (node: 1.0; with step_size="t_over_n": 1.0)
    augment       ANODE's extra zero channels (default max(1, width // 4))
    gamma         momentum's gamma (0.9) / antisymmetric damping (0.01)
    growth        DenseNet growth rate (default max(1, width // 2))
    unroll        steps per iteration of the stage's scan (1; True: straight-line code; every
                  family but densenet, whose layers are a Python loop)

A key given as None counts as not given. Every error names the key, the bad value and the
valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

from odenets.models.layers import KIND_NDIM, STEMS
from odenets.solve import check_unroll

REQUIRED = object()
COMMON: dict[str, Any] = {
    "kind": REQUIRED,
    "input_shape": REQUIRED,
    "num_classes": REQUIRED,
    "width": REQUIRED,
    "depth": REQUIRED,
    "stages": 1,
    "groups": None,
    "downsample": True,
    "stem": None,
}
FIELD_CHOICES = ("basic", "bottleneck")
STEP_SIZES = ("one", "t_over_n")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A resolved, validated config: every default filled in; keys a family does not take are None."""

    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    width: int
    depth: int
    stages: int
    groups: int
    downsample: bool
    stem: str
    field: str | None = None
    preact: bool | None = None
    time: bool | None = None
    integrator: Any = None
    gradient: Any = None
    step_size: str | None = None
    t1: float | None = None
    augment: int | None = None
    gamma: float | None = None
    growth: int | None = None
    unroll: int | bool | None = None

    @property
    def ndim(self) -> int:
        return KIND_NDIM[self.kind]

    def stage_width(self, s: int) -> int:
        return self.width * 2**s

    def norm_groups(self, channels: int) -> int:
        return math.gcd(channels, self.groups)


FAMILY_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in COMMON)


def choices(key: str, value, valid) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {key} {value!r}; valid choices: {', '.join(valid)}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(key: str, value, low: int) -> int:
    if not _is_int(value) or value < low:
        raise ValueError(f"{key} must be an int >= {low}, got {key}={value!r}")
    return int(value)


def boolean(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be True or False, got {key}={value!r}")
    return value


def number(key: str, value, *, low: float, high: float = math.inf, open_low: bool = True, open_high=True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{key} must be a finite number in {lo}{low}, {high}{hi}, got {key}={value!r}")
    return float(value)


def resolve(name: str, options: dict[str, Any], config: dict[str, Any]) -> ModelConfig:
    """Fill defaults and check the common keys; `options` are the family's keys and defaults."""
    config = {k: v for k, v in config.items() if v is not None}
    taken = {**COMMON, **options}
    for key, value in config.items():
        if key not in COMMON and key not in FAMILY_KEYS:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join([*COMMON, *FAMILY_KEYS])}")
        if key not in taken:
            raise ValueError(
                f"model family {name!r} does not take {key!r} (got {key}={value!r}); "
                f"keys it takes: {', '.join(taken)}"
            )
    missing = [k for k, v in COMMON.items() if v is REQUIRED and k not in config]
    if missing:
        raise ValueError(f"missing config key(s) {', '.join(map(repr, missing))} for model family {name!r}")
    cfg = {**taken, **config}

    choices("kind", cfg["kind"], tuple(KIND_NDIM))
    ndim = KIND_NDIM[cfg["kind"]]
    shape = cfg["input_shape"]
    is_seq = isinstance(shape, Sequence) and not isinstance(shape, str)
    if not (is_seq and shape and all(_is_int(n) and n >= 1 for n in shape)):
        raise ValueError(f"input_shape must be a tuple of ints >= 1 (no batch axis), got input_shape={shape!r}")
    shape = tuple(int(n) for n in shape)
    rank = {0: "at least 1 (flattened)", 1: "2: (length, channels)", 2: "3: (height, width, channels)"}[ndim]
    if (ndim == 0 and len(shape) < 1) or (ndim and len(shape) != ndim + 1):
        raise ValueError(f"input_shape={shape} has rank {len(shape)}; kind {cfg['kind']!r} needs rank {rank}")
    cfg["input_shape"] = shape
    for key, low in (("num_classes", 2), ("width", 1), ("depth", 1), ("stages", 1)):
        cfg[key] = integer(key, cfg[key], low)
    width = cfg["width"]
    boolean("downsample", cfg["downsample"])

    groups = cfg["groups"] if cfg["groups"] is not None else (min(32, width) if ndim else 1)
    groups = integer("groups", groups, 1)
    if width % groups:
        raise ValueError(
            f"width={width} is not divisible by groups={groups} (GroupNorm groups; the default is "
            f"min(32, width) for conv kinds): choose a width that is a multiple of {groups} or pass groups"
        )
    cfg["groups"] = groups

    stem = cfg["stem"] if cfg["stem"] is not None else ("linear" if ndim == 0 else "conv")
    choices("stem", stem, tuple(STEMS))
    if cfg["kind"] not in STEMS[stem].kinds:
        valid = [s for s, cls in STEMS.items() if cfg["kind"] in cls.kinds]
        raise ValueError(
            f"stem {stem!r} does not apply to kind {cfg['kind']!r}; valid choices: {', '.join(valid)}"
        )
    cfg["stem"] = stem
    if ndim:
        sizes = STEMS[stem].spatial(shape[:-1])
        if min(sizes) < 1:
            raise ValueError(
                f"input_shape={shape} is too small for stem {stem!r} (spatial sizes {sizes} after it)"
            )

    if "field" in taken:
        choices("field", cfg["field"], FIELD_CHOICES)
        boolean("preact", cfg["preact"])
        if cfg["preact"] and ndim == 0:
            raise ValueError(
                "preact=True needs a conv kind (the mlp kind's fields are MLPFields, without norms); "
                "valid choices for kind 'mlp': preact=False"
            )
    if "time" in taken:
        boolean("time", cfg["time"])
    if "unroll" in taken:
        check_unroll(cfg["unroll"])
    if "step_size" in taken:
        choices("step_size", cfg["step_size"], STEP_SIZES)
        if cfg["step_size"] == "one" and config.get("t1") is not None:
            raise ValueError(
                f"t1={config['t1']!r} conflicts with step_size='one' (h = 1, so t1 = depth); "
                "use step_size='t_over_n' to choose t1"
            )
        cfg["t1"] = float(cfg["depth"]) if cfg["step_size"] == "one" else cfg["t1"]
    if "t1" in taken:
        cfg["t1"] = number("t1", 1.0 if cfg["t1"] is None else cfg["t1"], low=0.0)
    return ModelConfig(**cfg)
