"""The spiral study's data (windows of one noisy trajectory) and the chord whose bias it measures."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from odenets import study as studies

studies.load()  # puts the checkout's experiments/studies on the path
sp = importlib.import_module("experiments.studies.spiral")


def test_windows_cut_one_noisy_trajectory():
    o = dataclasses.replace(sp.Spiral.sizes["smoke"], num_times=12, window=4, noise=0.1)
    ts, clean, noisy = sp.observed(o, seed=0)
    assert clean.shape == noisy.shape == (12, 2) and np.allclose(clean[0], [2.0, 0.0])
    assert 0.03 < np.std(noisy - clean) < 0.2  # sigma = 0.1 on 24 numbers
    data = sp.windows(ts, clean, noisy, o.window)
    assert data.x_train.shape == (9, 2) and data.y_train.shape == (9, 4, 2)
    np.testing.assert_allclose(data.y_train[3], noisy[3:7], rtol=1e-6)
    np.testing.assert_allclose(data.y_test[3], clean[3:7], rtol=1e-6)
    np.testing.assert_allclose(data.ts, ts[:4] - ts[0], rtol=1e-6)


def test_the_chord_is_first_order_away_from_the_field():
    """c = (x(t + h) - x(t)) / h differs from f(x(t)) by h/2 x''(t) + O(h^2): halving h halves the gap."""
    gaps = []
    for num_times in (51, 101, 201):
        o = dataclasses.replace(sp.Spiral.sizes["full"], num_times=num_times, t_end=2.0)
        ts, clean, _ = sp.observed(o, seed=0)
        gaps.append(sp.relative(sp.chord(ts, clean), sp.true_field(clean[:-1])))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    assert np.all((1.8 < ratios) & (ratios < 2.2)), (gaps, ratios)
