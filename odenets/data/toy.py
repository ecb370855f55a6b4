"""Low-dimensional classification sets generated in code: the ResNet-as-ODE literature's toys.

Every set is a deterministic function of `load`'s seed: the training set is drawn from
`default_rng([seed, 0])` and the test set from `default_rng([seed, 1])`, so the test set does
not change when n_train does. Classes are exactly balanced (counts differ by at most one),
in random order.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, cast

import numpy as np

from odenets._abstract import final
from odenets.data.base import Builder, Dataset, register
from odenets.validate import integer, number

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def class_counts(n: int, k: int) -> np.ndarray:
    """n samples over k classes as evenly as possible: the first n % k classes get one more."""
    counts = np.full(k, n // k)
    counts[: n % k] += 1
    return counts


def shuffled(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(y))
    return x[order], y[order]


def balanced(rng: np.random.Generator, n: int, k: int, draw: Sampler) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `class_counts(n, k)` samples of a labelled distribution, by rejection.

    `draw(rng, m)` returns m labelled samples; each class keeps its first samples until it
    has its share. The labelling rule stays a fixed function of x (no per-sample relabelling),
    and the result is the class-conditional distributions mixed in equal parts.
    """
    need = class_counts(n, k)
    xs: list[list[np.ndarray]] = [[] for _ in range(k)]
    while need.any():
        x, y = draw(rng, max(2 * int(need.sum()) * k, 64))
        for c in np.flatnonzero(need):
            take = x[y == c][: need[c]]
            xs[c].append(take)
            need[c] -= len(take)
    x = np.concatenate([part for parts in xs for part in parts])  # grouped by class
    y = np.repeat(np.arange(k), class_counts(n, k))
    return shuffled(rng, x, y)


@dataclasses.dataclass(frozen=True)
class Toy(Builder):
    """A generated classification set: `sample(rng, n)` draws n labelled points."""

    n_train: int = 1000
    n_test: int = 500
    num_classes: ClassVar[int] = 2

    def __post_init__(self):
        self._check(integer, "n_train", 1)
        self._check(integer, "n_test", 1)

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n labelled points (x (n, D), y (n,)) drawn from `rng`."""

    def build(self, seed: int) -> Dataset:
        x_train, y_train = self.sample(np.random.default_rng([seed, 0]), self.n_train)
        x_test, y_test = self.sample(np.random.default_rng([seed, 1]), self.n_test)
        return Dataset(self.name, x_train, y_train, x_test, y_test, "classification", self.num_classes)


@register("spheres")
@final
@dataclasses.dataclass(frozen=True)
class Spheres(Toy):
    """Concentric spheres in `dim` dimensions (Dupont et al. 2019, "Augmented Neural ODEs").

    Class 0 fills the ball of radius 0.5, class 1 the shell 1 <= |x| <= 1.5. A point is
    r * u with u uniform on the unit sphere and, as in the paper's code,
    r = r_min + (r_max - r_min) * U^(1/dim), U ~ Uniform(0, 1): uniform in volume inside the
    ball, and inside [1, 1.5] for the shell (not volume-uniform there).

    The point of the set: no homeomorphism of R^dim separates the classes by a hyperplane,
    so a Neural ODE (a flow, hence a homeomorphism) cannot fit it without augmentation.
    """

    dim: int = 2
    radii: ClassVar[tuple[tuple[float, float], ...]] = ((0.0, 0.5), (1.0, 1.5))

    def __post_init__(self):
        super().__post_init__()
        self._check(integer, "dim", 1)

    def sample(self, rng, n):
        xs = []
        for (r_min, r_max), m in zip(self.radii, class_counts(n, 2)):
            r = r_min + (r_max - r_min) * rng.uniform(size=m) ** (1.0 / self.dim)
            u = rng.standard_normal((m, self.dim))
            xs.append(r[:, None] * u / np.linalg.norm(u, axis=1, keepdims=True))
        return shuffled(rng, np.concatenate(xs), np.repeat([0, 1], class_counts(n, 2)))


@register("spirals")
@final
@dataclasses.dataclass(frozen=True)
class Spirals(Toy):
    """Two interleaved 2-D spirals of 1.5 turns each, radius growing from 0 to 1.

    Class 0 is r(t) (cos t, sin t) with t = 3 pi sqrt(U) and r = t / (3 pi); class 1 is the
    same curve rotated by pi. Gaussian noise of std `noise` is added to both coordinates.
    """

    noise: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "noise", low=0.0, open_low=False)

    def sample(self, rng, n):
        counts = class_counts(n, 2)
        t = 3 * np.pi * np.sqrt(rng.uniform(size=n))
        curve = (t / (3 * np.pi))[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
        y = np.repeat([0, 1], counts)
        x = np.where((y == 1)[:, None], -curve, curve) + self.noise * rng.standard_normal((n, 2))
        return shuffled(rng, x, y)


@register("swiss_roll")
@final
@dataclasses.dataclass(frozen=True)
class SwissRoll(Toy):
    """sklearn's 3-D swiss roll, class = which half of the roll: t below or above its median.

    sklearn draws t = 1.5 pi (1 + 2 U), so the median is 3 pi exactly; the rule is that fixed
    threshold (not a per-sample median), and rejection keeps the classes balanced. x is
    standardised per coordinate with the training set's mean and std.
    """

    noise: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "noise", low=0.0, open_low=False)

    def sample(self, rng, n):
        from sklearn.datasets import make_swiss_roll  # deferred: sklearn is slow to import

        def draw(rng, m):
            x, t = make_swiss_roll(m, noise=self.noise, random_state=int(rng.integers(2**31)))
            return x, (t > 3 * np.pi).astype(np.int32)

        return balanced(rng, n, 2, draw)

    def build(self, seed: int) -> Dataset:
        ds = super().build(seed)
        mean, std = ds.x_train.mean(axis=0), ds.x_train.std(axis=0)
        return dataclasses.replace(ds, x_train=(ds.x_train - mean) / std, x_test=(ds.x_test - mean) / std)


def peaks(x, y):
    """MATLAB's peaks surface, the level function of Haber & Ruthotto's "peaks" problem."""
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


@functools.cache
def peaks_thresholds(k: int, grid: int = 1000) -> np.ndarray:
    """The k-1 levels that cut [-3, 3]^2 into k regions of equal area (midpoint-rule quantiles).

    Computed once from a fixed grid, so the labelling does not depend on any seed.
    """
    g = (np.arange(grid) + 0.5) * (6 / grid) - 3
    return np.quantile(peaks(*np.meshgrid(g, g)), np.arange(1, k) / k)


@register("peaks")
@final
@dataclasses.dataclass(frozen=True)
class Peaks(Toy):
    """Haber & Ruthotto's (2017) "peaks": x uniform in [-3, 3]^2, 5 classes by the level of peaks(x).

    Class c holds the points whose peaks value lies between the c-th and (c+1)-th quintile
    of peaks over the square, so each class covers one fifth of its area; the regions are
    curved and several are disconnected.
    """

    num_classes: ClassVar[int] = 5

    def sample(self, rng, n):
        levels = peaks_thresholds(self.num_classes)

        def draw(rng, m):
            x = rng.uniform(-3, 3, size=(m, 2))
            return x, np.searchsorted(levels, peaks(x[:, 0], x[:, 1]))

        return balanced(rng, n, self.num_classes, draw)


@register("moons")
@final
@dataclasses.dataclass(frozen=True)
class Moons(Toy):
    """sklearn's two interleaving half circles (`make_moons`) with Gaussian noise of std `noise`."""

    noise: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "noise", low=0.0, open_low=False)

    def sample(self, rng, n):
        from sklearn.datasets import make_moons  # deferred: sklearn is slow to import

        counts = class_counts(n, 2)
        sizes: Any = (int(counts[0]), int(counts[1]))  # (outer, inner): sklearn takes it, its annotation says int
        return cast(tuple[np.ndarray, np.ndarray], make_moons(
            sizes, noise=self.noise, random_state=int(rng.integers(2**31))
        ))
