"""The one set of input checks every public entry point uses (odeint, models, data, training).

Each check takes the user-facing name of the value (``"steps"``, ``"optim.lr"``), the value,
and its bounds, and either returns the value in canonical Python form or raises
``ValueError`` naming the key, the bad value and what is valid. The rules are the same
everywhere:

- an int is a Python or numpy integer, never a bool (``np.int64(4)`` is an int, ``True`` is not);
- a number is a finite int or float (Python or numpy), never a bool, never NaN or Inf;
- a choice is one of a fixed set of strings, and the message lists them all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["boolean", "choice", "integer", "is_int", "is_number", "known_keys", "number", "optional"]


def is_int(value) -> bool:
    """A true integer (numpy integers included); bools are not integers here."""
    return isinstance(value, numbers.Integral | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value) -> bool:
    """A finite real number, int or float, Python or numpy; bools are not numbers here."""
    return (
        isinstance(value, numbers.Real | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def integer(key: str, value, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (either bound may be None)."""
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = " and ".join(b for b in (low is not None and f">= {low}", high is not None and f"<= {high}") if b)
        raise ValueError(f"{key} must be an int{' ' + bounds if bounds else ''}, got {key}={value!r}")
    return int(value)


def number(
    key: str, value, *, low: float = -math.inf, high: float = math.inf, open_low: bool = True,
    open_high: bool = True,
) -> float:
    """`value` as a finite float in the interval (low, high); `open_*=False` closes an end."""
    ok = is_number(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{key} must be a finite number in {lo}{low}, {high}{hi}, got {key}={value!r}")
    return float(value)


def boolean(key: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{key} must be True or False, got {key}={value!r}")
    return bool(value)


def choice(key: str, value, valid: Iterable[str]) -> str:
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {key} {value!r}; valid choices: {', '.join(valid)}")
    return value


def known_keys(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse keys outside `valid`, naming them and every valid key."""
    valid = tuple(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; valid keys: {', '.join(valid)}")


def optional(check, key: str, value, *args, **kwargs) -> Any:
    """`check(key, value, ...)` unless value is None (which passes through)."""
    return None if value is None else check(key, value, *args, **kwargs)
