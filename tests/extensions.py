"""Extensions registered from the test suite, the way a user would add them: one class each.

Importing this module (conftest.py does, before collection) registers them, so every test
parametrised from the registries, the CLI's config groups included, picks them up with no
other edit. That is the test that adding an integrator, a model family or a dataset is one
class and nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

import odenets as on
from odenets._abstract import final
from odenets.data import register as register_dataset
from odenets.data.toy import Toy
from odenets.integrators import ButcherTableau, ExplicitRK
from odenets.integrators.base import register as register_integrator


@final
@register_integrator("ralston")
@dataclasses.dataclass(frozen=True)
class Ralston(ExplicitRK):
    """Ralston's second-order method: k2 = f(t + 2h/3, y + 2h/3 k1), y_next = y + h (k1/4 + 3 k2/4)."""

    order: ClassVar[int] = 2
    tableau: ClassVar[ButcherTableau] = ButcherTableau(a=((), ("2/3",)), b=("1/4", "3/4"), c=(0, "2/3"))


@register_dataset("xor")
@dataclasses.dataclass(frozen=True)
class Xor(Toy):
    """Points uniform on [-1, 1]^2 labelled by the sign of x0 * x1 (the XOR of two half-planes)."""

    def sample(self, rng, n):
        x = rng.uniform(-1.0, 1.0, (n, 2))
        return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


assert {"ralston"} <= set(on.integrator.names()) and {"xor"} <= set(on.data.dataset.names())


from odenets._abstract import final  # noqa: E402
from odenets.fields import ScaledField  # noqa: E402
from odenets.models import Residual, family  # noqa: E402


@family.register("scaled_resnet")
@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaledResNet(Residual):
    """ReZero (Bachlechner et al. 2021): x_{k+1} = x_k + alpha_k F_k(t_k, x_k), alpha_k learned from 0."""

    def residual(self, make_field, channels):
        return lambda rngs: ScaledField(make_field(rngs))


assert "scaled_resnet" in family.names()
