"""The anode_concentric study's measures (the monotone bound, crossing pairs) and the numpy initialiser of
experiments/studies/_fits.py against the library's own draw."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest
from flax import nnx

from odenets import study as studies

studies.load()  # puts the checkout's experiments/studies on the path
ac = importlib.import_module("experiments.studies.anode_concentric")
fits = importlib.import_module("experiments.studies._fits")


def test_monotone_bound_is_the_least_squared_error_of_a_monotone_fit():
    """2/3 for balanced classes split evenly between the shell's sides; on a sample, the least squared error of a
    monotone fit (constant on each block of equal labels, +1 | -1 | +1 along x: a grid over the block values),
    which no 1-D NODE with a linear head beats."""
    x = np.concatenate([np.linspace(-1.5, -1, 50), np.linspace(-0.5, 0.5, 100), np.linspace(1, 1.5, 50)])
    g = np.where(np.abs(x) <= 0.5, -1.0, 1.0)
    assert ac.monotone_bound(x, g) == pytest.approx(2 / 3)
    data = ac.labelled(1, ac.Options(n_train=301), seed=3)
    x, g = data.x_train[:, 0], data.y_train[:, 0]
    assert set(np.unique(g)) == {-1.0, 1.0} and np.all((np.abs(x) <= 0.5) == (g < 0))
    left, ball, right = (np.sum((x < 0) & (g > 0)), np.sum(g < 0), np.sum((x > 0) & (g > 0)))
    v = np.linspace(-1, 1, 801)
    a, b = np.meshgrid(v, v, indexing="ij")  # increasing: a (left shell) <= b (ball) <= 1 (right shell)
    error = lambda n_side: np.where(a <= b, n_side * (1 - a) ** 2 + ball * (1 + b) ** 2, np.inf).min() / len(g)
    assert ac.monotone_bound(x, g) == pytest.approx(min(error(left), error(right)), abs=1e-4)


def test_crossing_pairs_count_the_reversed_pairs():
    x0 = np.linspace(-1, 1, 20)
    assert ac.discordant(x0, x0**3 + 2) == 0.0  # an increasing map keeps the order
    assert ac.discordant(x0, -x0) == 1.0
    swapped = x0.copy()
    swapped[[4, 5]] = swapped[[5, 4]]
    assert ac.discordant(x0, swapped) == pytest.approx(1 / (20 * 19 / 2))


@pytest.mark.parametrize("kind", ["node", "anode", "resnet"])
def test_numpy_initialiser_draws_lecun_normal_kernels_and_zero_biases(kind):
    """`_fits.initialise` skips compiling the initialisers: the structure of the model `make()` builds (traced
    only), every kernel (..., fan_in, fan_out) a normal truncated at 2 std with variance 1 / fan_in (flax's and
    MLPField's LeCun normal), biases and the ODE block's probe 0, NFE counters -1."""
    options = ac.Options(hidden=256, augment=3, resnet_depth=3)
    model = fits.initialise(lambda: ac.build(kind, 2, options, 0), seed=0)
    ours = dict(nnx.to_flat_state(nnx.state(model)))
    assert ours.keys() == dict(nnx.to_flat_state(nnx.state(nnx.eval_shape(lambda: ac.build(kind, 2, options, 0))))
                               ).keys()
    kernels = 0
    for path, leaf in ours.items():
        a = np.asarray(leaf[...])
        if path[-1] != "kernel":
            assert np.all(a == (-1 if np.issubdtype(a.dtype, np.integer) else 0)), path
            continue
        kernels += 1
        sigma = 1 / np.sqrt(a.shape[-2])
        assert np.abs(a).max() <= 2 * sigma / 0.8796 + 1e-6, path
        if a.size >= 512:
            assert 0.9 < a.std() / sigma < 1.1, path
    assert kernels >= 4 and len(jax.tree.leaves(nnx.state(model, nnx.Param))) >= 8
