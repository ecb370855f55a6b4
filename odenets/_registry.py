"""Name -> class registries, so that every axis is chosen by name without if/elif chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named constructors for one axis (integrators, gradients, ...).

    `registry("rk4")` builds a default instance; `registry(obj)` passes an instance of the
    axis' base class through unchanged, so public functions accept either form.
    """

    def __init__(self, axis: str, base: type):
        self.axis = axis
        self.base = base
        self._table: dict[str, Callable[..., T]] = {}

    def register(self, name: str):
        def decorator(cls):
            if name in self._table:
                raise ValueError(f"{self.axis} {name!r} is registered twice")
            self._table[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        return list(self._table)

    def __call__(self, spec: str | T, **kwargs) -> T:
        if isinstance(spec, self.base):
            if kwargs:
                raise TypeError(f"options {sorted(kwargs)} given with an already built {self.axis}")
            return spec
        if isinstance(spec, str) and spec in self._table:
            return self._table[spec](**kwargs)
        raise ValueError(
            f"unknown {self.axis} {spec!r}; valid choices: {', '.join(self._table)} "
            f"(or an instance of {self.base.__module__.split('.')[0]}.{self.base.__name__})"
        )
