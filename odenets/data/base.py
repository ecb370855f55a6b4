"""The Dataset record, the builder interface, and the dataset registry.

A dataset is *built* from a name and options: `load("spheres", seed=0, dim=3)` looks up the
builder registered as "spheres" (a frozen dataclass whose fields are the options), checks
the options before any work is done, and calls `build(seed)`. Arrays are numpy, not jax: a
dataset is host data, moved to the device one batch at a time.

What `seed` means is the builder's business and its docstring says so: toy sets and ODE
trajectories are *generated* from it; canonical datasets (MNIST-1D, digits, user files) do
not change with it, so that runs that differ only in their seed see the same test set.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from odenets._registry import Registry

TASKS = ("classification", "regression", "trajectory")
DATA_DIR_ENV = "ODENETS_DATA_DIR"


def data_dir() -> Path:
    """Where generated data is cached: `$ODENETS_DATA_DIR` if set, else `~/.cache/odenets`.

    Read at every call (not at import), so tests and jobs can point it elsewhere.
    """
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "odenets"


def is_int(value) -> bool:
    """A true integer (numpy integers included); bools are not integers here."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value) -> bool:
    """A finite real number (int or float); bools are not numbers here."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays for one task, channels-last, immutable (read-only arrays).

    Shapes: x is (N, D) for vectors, (N, L, C) for 1-D signals, (N, H, W, C) for images;
    x is float32. For task="classification", y is (N,) int32 in [0, num_classes). For
    task="regression", y is float32 of any shape (N, ...). For task="trajectory", x is the
    initial state (N, D), `ts` holds the T observation times (ts[0] is the time of x) and
    y is (N, T, D) float32 with y[:, 0] == x: the first observation *is* the input.

    The arrays given are converted to those dtypes (labels must be integral) and checked;
    a wrong shape or label raises ValueError naming the array and what was expected.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None = None
    ts: np.ndarray | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(
                f"dataset {self.name!r}: unknown task {self.task!r}; valid choices: {', '.join(TASKS)}"
            )
        set_ = lambda field, value: object.__setattr__(self, field, _readonly(value))
        for field in ("x_train", "x_test"):
            x = np.asarray(getattr(self, field))
            if x.ndim < 2:
                raise ValueError(f"dataset {self.name!r}: {field} must have shape (N, ...features), got {x.shape}")
            set_(field, x.astype(np.float32, copy=False))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"dataset {self.name!r}: x_train samples have shape {self.x_train.shape[1:]} "
                f"but x_test samples have shape {self.x_test.shape[1:]}"
            )
        if len(self.x_train) == 0:
            raise ValueError(f"dataset {self.name!r}: x_train is empty")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), np.asarray(getattr(self, f"y_{split}"))
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} has {len(x)} samples but y_{split} has shape {y.shape}"
                )
            set_(
                f"y_{split}",
                self._labels(f"y_{split}", y)
                if self.task == "classification"
                else y.astype(np.float32, copy=False),
            )
        if self.task == "classification":
            if not is_int(self.num_classes) or self.num_classes < 1:
                raise ValueError(
                    f"dataset {self.name!r}: classification needs num_classes, an int >= 1, "
                    f"got {self.num_classes!r}"
                )
            object.__setattr__(self, "num_classes", int(self.num_classes))
        elif self.num_classes is not None:
            raise ValueError(
                f"dataset {self.name!r}: num_classes is for classification only, task is {self.task!r}"
            )
        if self.task == "trajectory":
            self._check_trajectory()
        elif self.ts is not None:
            raise ValueError(f"dataset {self.name!r}: ts is for task='trajectory' only, task is {self.task!r}")

    def _labels(self, field: str, y: np.ndarray) -> np.ndarray:
        if y.ndim != 1:
            raise ValueError(f"dataset {self.name!r}: {field} must be class labels of shape (N,), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.array_equal(y, np.round(y)):
                raise ValueError(f"dataset {self.name!r}: {field} must hold integer class labels, got {y.dtype}")
        k = self.num_classes
        if y.size and is_int(k) and (y.min() < 0 or y.max() >= k):
            raise ValueError(
                f"dataset {self.name!r}: {field} labels must be in [0, {k}), got range [{y.min()}, {y.max()}]"
            )
        return y.astype(np.int32)

    def _check_trajectory(self):
        if self.ts is None:
            raise ValueError(f"dataset {self.name!r}: task='trajectory' needs ts, the observation times")
        ts = np.asarray(self.ts, dtype=np.float32)
        if ts.ndim != 1 or len(ts) < 2 or not np.all(np.diff(ts) > 0):
            raise ValueError(f"dataset {self.name!r}: ts must be a strictly increasing 1-D array of >= 2 times")
        object.__setattr__(self, "ts", _readonly(ts))
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            want = (len(x), len(ts), *x.shape[1:])
            if x.ndim != 2 or y.shape != want:
                raise ValueError(
                    f"dataset {self.name!r}: trajectories need x_{split} of shape (N, D) and y_{split} of shape "
                    f"(N, T, D) = {want}, got x {x.shape} and y {y.shape}"
                )
            if not np.array_equal(y[:, 0], x):
                raise ValueError(
                    f"dataset {self.name!r}: y_{split}[:, 0] must equal x_{split} (the initial state)"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, x_train.shape[1:]."""
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        """num_classes for classification, else the size of one target, prod(y_train.shape[1:]).

        For trajectories that is T * D (the whole observed path), not D.
        """
        if self.task == "classification":
            return self.num_classes
        return math.prod(self.y_train.shape[1:])

    def __repr__(self) -> str:
        extra = f"{self.num_classes} classes" if self.task == "classification" else f"y {self.y_train.shape[1:]}"
        if self.ts is not None:
            extra += f", T={len(self.ts)}"
        return (
            f"Dataset({self.name!r}, {self.task}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, {extra})"
        )


@dataclasses.dataclass(frozen=True)
class Builder:
    """How to make one dataset. Subclasses are frozen dataclasses whose fields are the options.

    `__post_init__` checks every option (so a bad value fails at construction, before any
    work); `build(seed)` does the work. `name` is set by `register`.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "classification"  # known before building (npz makes it an option)

    def build(self, seed: int) -> Dataset:
        raise NotImplementedError

    def _require(self, field: str, ok: Callable[[object], bool], want: str):
        value = getattr(self, field)
        if not ok(value):
            raise ValueError(f"dataset {self.name!r}: {field} must be {want}, got {value!r}")

    def _int(self, field: str, low: int, high: int | None = None):
        want = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        self._require(field, lambda v: is_int(v) and v >= low and (high is None or v <= high), want)

    def _number(self, field: str, low: float, high: float | None = None, *, above: bool = False):
        if high is None:
            want = f"a number {'>' if above else '>='} {low}"
        else:
            want = f"a number in {'(' if above else '['}{low}, {high}]"
        ok = lambda v: is_number(v) and (v > low if above else v >= low) and (high is None or v <= high)
        self._require(field, ok, want)

    def _bool(self, field: str):
        self._require(field, lambda v: isinstance(v, bool | np.bool_), "True or False")

    def _choice(self, field: str, choices: tuple[str, ...]):
        self._require(field, lambda v: v in choices, f"one of {', '.join(map(repr, choices))}")


REGISTRY: Registry[Builder] = Registry("dataset", Builder)


register = REGISTRY.register


def load(name: str | Builder, *, seed: int = 0, **options) -> Dataset:
    """Build the dataset registered as `name` with `options`.

    `name` may also be an already configured builder, `dataset("moons", noise=0.2)`. An
    unknown name, an unknown option or a bad option value raises ValueError naming the bad
    value and the valid choices, before any data is generated or read.
    """
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    builder = REGISTRY(name, **options)
    data = builder.build(int(seed))
    if data.task != builder.task:
        raise AssertionError(f"dataset {builder.name!r} declares task {builder.task!r} but built {data.task!r}")
    return data
