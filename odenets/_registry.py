"""Name -> class registries, so that every axis is chosen by name without if/elif chains."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """A table of named classes for one axis (integrators, gradients, families, datasets, ...).

    `registry("rk4")` builds a default instance; keyword options go to the constructor, and
    for dataclasses an option that is not a field is refused with the list of valid ones;
    `registry(obj)` passes an instance of the axis' base class through unchanged, so public
    functions accept either form. `register(name)` is the one place a class gets its name:
    it sets `cls.name`, so a class never spells its own name a second time.
    """

    def __init__(self, axis: str, base: type[T]):
        self.axis = axis
        self.base = base
        self._table: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[C], C]:
        def decorator(cls: C) -> C:
            if name in self._table:
                raise ValueError(f"{self.axis} {name!r} is registered twice")
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{self.axis} {name!r}: {cls!r} is not a subclass of {self.base.__name__}")
            named: Any = cls  # a subclass of the axis' base, which declares `name`
            named.name = name
            self._table[name] = named
            return named

        return decorator

    def names(self) -> list[str]:
        return list(self._table)

    def get(self, name: str) -> type[T]:
        """The registered class (not an instance); the same error as `__call__` for unknown names."""
        if isinstance(name, str) and name in self._table:
            return self._table[name]
        raise ValueError(self._unknown(name))

    def _unknown(self, spec) -> str:
        return (
            f"unknown {self.axis} {spec!r}; valid choices: {', '.join(self._table)} "
            f"(or an instance of {self.base.__module__.split('.')[0]}.{self.base.__name__})"
        )

    def __call__(self, spec: str | T, **kwargs) -> T:
        if isinstance(spec, self.base):
            if kwargs:
                raise TypeError(f"options {sorted(kwargs)} given with an already built {self.axis}")
            return spec
        cls = self.get(cast(str, spec))  # get refuses anything but a registered name
        if dataclasses.is_dataclass(cls):
            valid = [f.name for f in dataclasses.fields(cls) if f.init]
            unknown = [key for key in kwargs if key not in valid]
            if unknown:
                raise ValueError(
                    f"unknown option {unknown[0]!r} for {self.axis} {spec!r}; valid options: "
                    f"{', '.join(valid) or '(none)'}"
                )
        return cls(**kwargs)
