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

import abc
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, cast

import numpy as np

from odenets._abstract import final
from odenets._registry import Registry
from odenets.validate import integer, is_int

TASKS = ("classification", "regression", "trajectory")
DATA_DIR_ENV = "ODENETS_DATA_DIR"


def data_dir() -> Path:
    """Where generated data is cached: `$ODENETS_DATA_DIR` if set, else `~/.cache/odenets`.

    Read at every call (not at import), so tests and jobs can point it elsewhere.
    """
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "odenets"


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@final
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays for one task, channels-last, immutable (read-only arrays).

    Shapes: x is (N, D) for vectors, (N, L, C) for 1-D signals, (N, H, W, C) for images;
    x is float32. For task="classification", y is (N,) int32 in [0, num_classes). For
    task="regression", y is float32 of any shape (N, ...). For task="trajectory", x is the
    initial state (N, D), `ts` holds the T observation times (ts[0] is the time of x) and
    y is (N, T, D) float32 with y[:, 0] == x: the first observation *is* the input.

    The arrays given are converted to those dtypes (labels must be integral) and checked;
    a wrong shape or label, or a NaN / Inf anywhere, raises ValueError naming the array and
    what was expected (for non-finite values: the index of the first one).
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
            with np.errstate(over="ignore"):  # an overflow to Inf is reported by _finite
                set_(field, self._finite(field, x.astype(np.float32, copy=False)))
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
            if self.task == "classification":
                set_(f"y_{split}", self._labels(f"y_{split}", self._finite(f"y_{split}", y)))
            else:
                with np.errstate(over="ignore"):
                    set_(f"y_{split}", self._finite(f"y_{split}", y.astype(np.float32, copy=False)))
        if self.task == "classification":
            if not is_int(self.num_classes) or cast(int, self.num_classes) < 1:
                raise ValueError(
                    f"dataset {self.name!r}: classification needs num_classes, an int >= 1, "
                    f"got {self.num_classes!r}"
                )
            object.__setattr__(self, "num_classes", int(cast(int, self.num_classes)))
        elif self.num_classes is not None:
            raise ValueError(
                f"dataset {self.name!r}: num_classes is for classification only, task is {self.task!r}"
            )
        if self.task == "trajectory":
            self._check_trajectory()
        elif self.ts is not None:
            raise ValueError(f"dataset {self.name!r}: ts is for task='trajectory' only, task is {self.task!r}")

    def _finite(self, field: str, a: np.ndarray) -> np.ndarray:
        """`a` unchanged if every entry is finite; else a ValueError naming the first bad index."""
        if not np.issubdtype(a.dtype, np.inexact):
            return a
        bad = ~np.isfinite(a)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"dataset {self.name!r}: {field} has a non-finite value ({a[index]}) at index {index} "
                f"({int(bad.sum())} of its {a.size} entries are NaN or Inf); fix or drop those samples"
            )
        return a

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
        ts = self._finite("ts", np.asarray(self.ts, dtype=np.float32))
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
            return cast(int, self.num_classes)  # checked at construction for classification
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
class Builder(abc.ABC):
    """How to make one dataset: a frozen dataclass whose fields are the options.

    `__post_init__` checks every option (so a bad value fails at construction, before any
    work); `build(seed)` does the work. `name` is set by `register`.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "classification"  # known before building (npz makes it an option)

    @abc.abstractmethod
    def build(self, seed: int) -> Dataset: ...

    def _check(self, check: Callable, field: str, *args, **kwargs) -> None:
        """`check(field, value, ...)` from `odenets.validate` on the option `field`, its message
        prefixed with the dataset's name."""
        try:
            check(field, getattr(self, field), *args, **kwargs)
        except ValueError as error:
            raise ValueError(f"dataset {self.name!r}: {error}") from None

    def _require(self, field: str, ok: Callable[[object], bool], want: str) -> None:
        value = getattr(self, field)
        if not ok(value):
            raise ValueError(f"dataset {self.name!r}: {field} must be {want}, got {field}={value!r}")


REGISTRY: Registry[Builder] = Registry("dataset", Builder)


register = REGISTRY.register


def load(name: str | Builder, *, seed: int = 0, **options) -> Dataset:
    """Build the dataset registered as `name` with `options`.

    `name` may also be an already configured builder, `dataset("moons", noise=0.2)`. An
    unknown name, an unknown option or a bad option value raises ValueError naming the bad
    value and the valid choices, before any data is generated or read.
    """
    integer("seed", seed, 0)
    builder = REGISTRY(name, **options)
    data = builder.build(int(seed))
    if data.task != builder.task:
        raise AssertionError(f"dataset {builder.name!r} declares task {builder.task!r} but built {data.task!r}")
    return data
