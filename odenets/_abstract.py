"""Abstract-or-final classes (equinox's rule): a class is either abstract or final, never both a
base and a thing you build.

    class Integrator(abc.ABC): ...          # abstract: has abc.abstractmethod members
    @final
    class RK4(ExplicitRK): ...              # final: concrete; subclassing it raises TypeError

Share behaviour between concrete classes by giving them a common abstract parent (or by
composition), never by subclassing a concrete class: a subclass of a concrete class silently
inherits defaults and checks that were written for the parent.
"""

from __future__ import annotations

import typing

__all__ = ["final", "is_final"]

C = typing.TypeVar("C", bound=type)


def final(cls: C) -> C:
    """Mark `cls` final: defining a subclass of it raises TypeError (checked at class creation)."""
    cls.__odenets_final__ = True
    original = cls.__dict__.get("__init_subclass__")

    @classmethod
    def __init_subclass__(sub, **kwargs):
        for base in sub.__mro__[1:]:
            if base.__dict__.get("__odenets_final__", False):
                raise TypeError(
                    f"{sub.__qualname__} subclasses {base.__qualname__}, which is final; subclass its "
                    f"abstract parent ({', '.join(b.__qualname__ for b in base.__bases__)}) instead"
                )
        if original is not None:
            original.__func__(sub, **kwargs)
        else:
            super(cls, sub).__init_subclass__(**kwargs)

    cls.__init_subclass__ = __init_subclass__
    return typing.final(cls)


def is_final(cls: type) -> bool:
    return bool(cls.__dict__.get("__odenets_final__", False))
