"""Trajectories of known ODEs, solved accurately with scipy: targets for fitting a vector field.

Each set is task="trajectory": x is the initial state (N, D), ts the T observation times
(ts[0] = 0 is the time of x), and y (N, T, D) the exact states at ts, y[:, 0] == x. Initial
states are drawn from `default_rng([seed, 0])` (train) and `default_rng([seed, 1])` (test).

Solving: `scipy.integrate.solve_ivp` with rtol = 1e-8, DOP853 for the non-stiff systems and
LSODA with the exact (banded) Jacobian for the stiff ones. Trajectories are solved in chunks
of `CHUNK` as one stacked system. solve_ivp's error norm is an RMS over the whole state, so
both tolerances are divided by sqrt(state size): every component of every trajectory then
meets the same per-component tolerance as a solve of that trajectory alone. The initial
states are rounded to float32 *before* solving, so y is the exact path from the stored x.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, cast

import numpy as np

from odenets._abstract import final
from odenets.data.base import Builder, Dataset, register
from odenets.validate import integer, number

RTOL = 1e-8
CHUNK = 64


def banded(blocks: np.ndarray) -> np.ndarray:
    """A block-diagonal Jacobian (n blocks of D x D) in LSODA's packed banded format.

    With lband = uband = D - 1, entry J[i, j] goes to packed[uband + i - j, j].
    """
    n, d, _ = blocks.shape
    p, q = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    rows = np.broadcast_to(d - 1 + p - q, blocks.shape)
    cols = np.arange(n)[:, None, None] * d + q
    packed = np.zeros((2 * d - 1, n * d))
    packed[rows, cols] = blocks
    return packed


@dataclasses.dataclass(frozen=True)
class ODETrajectories(Builder):
    """A known autonomous ODE y' = field(y): subclasses give the field, y0 distribution and times.

    Options shared by all: n_train, n_test (trajectories), num_times (T) and t_end.
    """

    n_train: int = 256
    n_test: int = 64
    num_times: int = 50
    t_end: float = 10.0
    task: ClassVar[str] = "trajectory"
    dim: ClassVar[int]
    atol: ClassVar[tuple[float, ...] | float] = 1e-10
    min_times: ClassVar[int] = 2

    def __post_init__(self):
        self._check(integer, "n_train", 1)
        self._check(integer, "n_test", 1)
        self._check(integer, "num_times", self.min_times)
        self._check(number, "t_end", low=0.0)

    @property
    def stiff(self) -> bool:
        """Solve with LSODA (and the exact Jacobian, where `jacobian` gives one) rather than DOP853."""
        return False

    @abc.abstractmethod
    def field(self, y: np.ndarray) -> np.ndarray:
        """dy/dt for a batch of states y (n, D)."""

    def jacobian(self, y: np.ndarray) -> np.ndarray | None:
        """d field / dy for a batch of states, (n, D, D), used when `stiff`; None: LSODA estimates
        it by finite differences."""
        return None

    @abc.abstractmethod
    def initial_states(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n initial states (n, D) drawn from `rng`."""

    def times(self) -> np.ndarray:
        """The observation times, starting at 0: uniform on [0, t_end] unless overridden."""
        return np.linspace(0.0, self.t_end, self.num_times)

    def solve(self, y0: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The states at ts (T,) from each y0 (n, D): (n, T, D), float64."""
        from scipy.integrate import solve_ivp  # deferred: scipy.integrate is slow to import

        out = []
        for start in range(0, len(y0), CHUNK):
            chunk = y0[start : start + CHUNK]
            n, d = chunk.shape
            scale = np.sqrt(n * d)
            atol = np.tile(np.broadcast_to(self.atol, (d,)), n) / scale
            kwargs: dict[str, Any] = {"method": "DOP853"}
            if self.stiff:
                kwargs = {"method": "LSODA", "lband": d - 1, "uband": d - 1}
                if self.jacobian(chunk) is not None:
                    kwargs["jac"] = lambda t, y: banded(cast(np.ndarray, self.jacobian(y.reshape(n, d))))
            sol = solve_ivp(
                lambda t, y: self.field(y.reshape(n, d)).ravel(),
                (ts[0], ts[-1]),
                chunk.ravel(),
                t_eval=ts,
                rtol=RTOL / scale,
                atol=atol,
                **kwargs,
            )
            if sol.status != 0:
                raise RuntimeError(f"dataset {self.name!r}: solve_ivp failed: {sol.message}")
            ys = sol.y.reshape(n, d, len(ts)).transpose(0, 2, 1)
            ys[:, 0] = chunk  # the exact initial state, not an interpolant's value
            out.append(ys)
        return np.concatenate(out)

    def build(self, seed: int) -> Dataset:
        ts = self.times().astype(np.float32)
        splits = []
        for stream, n in ((0, self.n_train), (1, self.n_test)):
            x = self.initial_states(np.random.default_rng([seed, stream]), n).astype(np.float32)
            splits += [x, self.solve(x.astype(np.float64), ts.astype(np.float64)).astype(np.float32)]
        return Dataset(self.name, *splits, task="trajectory", ts=ts)


@register("spiral_ode")
@final
@dataclasses.dataclass(frozen=True)
class SpiralODE(ODETrajectories):
    """The latent-ODE toy of Chen et al. (2018): y' = y**3 @ A, A = [[-0.1, 2], [-2, -0.1]].

    A decaying cubic spiral in 2-D on t in [0, 25]; y0 = [2, 0] + N(0, spread^2 I).
    """

    t_end: float = 25.0
    spread: float = 0.2
    dim: ClassVar[int] = 2
    A: ClassVar[np.ndarray] = np.array([[-0.1, 2.0], [-2.0, -0.1]])

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "spread", low=0.0, open_low=False)

    def field(self, y):
        return y**3 @ self.A

    def initial_states(self, rng, n):
        return np.array([2.0, 0.0]) + self.spread * rng.standard_normal((n, 2))


@register("lotka_volterra")
@final
@dataclasses.dataclass(frozen=True)
class LotkaVolterra(ODETrajectories):
    """Predator-prey: x' = alpha x - beta x y, y' = delta x y - gamma y, on t in [0, 10].

    Closed orbits around (gamma / delta, alpha / beta) = (3, 1.5) by default; y0 uniform in
    [1, 5] x [0.5, 3].
    """

    alpha: float = 1.5
    beta: float = 1.0
    gamma: float = 3.0
    delta: float = 1.0
    dim: ClassVar[int] = 2

    def __post_init__(self):
        super().__post_init__()
        for field in ("alpha", "beta", "gamma", "delta"):
            self._check(number, field, low=0.0)

    def field(self, y):
        prey, predator = y[:, 0], y[:, 1]
        return np.stack(
            [
                self.alpha * prey - self.beta * prey * predator,
                self.delta * prey * predator - self.gamma * predator,
            ],
            axis=1,
        )

    def initial_states(self, rng, n):
        return rng.uniform([1.0, 0.5], [5.0, 3.0], size=(n, 2))


@register("van_der_pol")
@final
@dataclasses.dataclass(frozen=True)
class VanDerPol(ODETrajectories):
    """Van der Pol oscillator: x' = v, v' = mu (1 - x^2) v - x, on t in [0, 20].

    Every orbit approaches one limit cycle (amplitude about 2); y0 uniform in [-3, 3]^2.
    Stiff for large mu: above mu = 10 it is solved with LSODA and the exact Jacobian.
    """

    t_end: float = 20.0
    mu: float = 1.0
    dim: ClassVar[int] = 2

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "mu", low=0.0, open_low=False)

    @property
    def stiff(self) -> bool:
        return self.mu > 10

    def field(self, y):
        x, v = y[:, 0], y[:, 1]
        return np.stack([v, self.mu * (1 - x**2) * v - x], axis=1)

    def jacobian(self, y):
        x, v = y[:, 0], y[:, 1]
        zero, one = np.zeros_like(x), np.ones_like(x)
        return np.stack(
            [np.stack([zero, one], axis=1), np.stack([-2 * self.mu * x * v - 1, self.mu * (1 - x**2)], axis=1)],
            axis=1,
        )

    def initial_states(self, rng, n):
        return rng.uniform(-3.0, 3.0, size=(n, 2))


@register("robertson")
@final
@dataclasses.dataclass(frozen=True)
class Robertson(ODETrajectories):
    """Robertson's stiff chemical kinetics (Hairer & Wanner's ROBER):

        y1' = -k1 y1 + k3 y2 y3,   y2' = k1 y1 - k3 y2 y3 - k2 y2^2,   y3' = k2 y2^2

    with k1 = 0.04, k2 = 3e7, k3 = 1e4; rates span 11 orders of magnitude and y2 stays
    below about 4e-5. The total y1 + y2 + y3 is conserved. y0 = (1 - c, 0, c) with
    c ~ Uniform(0, spread) (spread = 0 gives the classic y0 = (1, 0, 0)). Times are 0 then
    num_times - 1 log-spaced points from 1e-5 to t_end = 1e5.
    """

    t_end: float = 1e5
    spread: float = 0.1
    k1: float = 0.04
    k2: float = 3e7
    k3: float = 1e4
    dim: ClassVar[int] = 3
    atol: ClassVar[tuple[float, ...]] = (1e-10, 1e-13, 1e-10)  # y2 <= 4e-5: float32-accurate at every t
    min_times: ClassVar[int] = 3
    t_first: ClassVar[float] = 1e-5

    def __post_init__(self):
        super().__post_init__()
        self._check(number, "t_end", low=self.t_first)
        self._check(number, "spread", low=0.0, high=1.0, open_low=False, open_high=False)
        for field in ("k1", "k2", "k3"):
            self._check(number, field, low=0.0)

    @property
    def stiff(self) -> bool:
        return True

    def times(self):
        return np.concatenate([[0.0], np.geomspace(self.t_first, self.t_end, self.num_times - 1)])

    def field(self, y):
        a, b, c = y[:, 0], y[:, 1], y[:, 2]
        fast, slow = self.k3 * b * c, self.k2 * b**2
        return np.stack([-self.k1 * a + fast, self.k1 * a - fast - slow, slow], axis=1)

    def jacobian(self, y):
        a, b, c = y[:, 0], y[:, 1], y[:, 2]
        k1, k2, k3 = (np.full_like(a, k) for k in (self.k1, self.k2, self.k3))
        zero = np.zeros_like(a)
        return np.stack(
            [
                np.stack([-k1, k3 * c, k3 * b], axis=1),
                np.stack([k1, -k3 * c - 2 * k2 * b, -k3 * b], axis=1),
                np.stack([zero, 2 * k2 * b, zero], axis=1),
            ],
            axis=1,
        )

    def initial_states(self, rng, n):
        c = self.spread * rng.uniform(size=n)
        return np.stack([1 - c, np.zeros(n), c], axis=1)
