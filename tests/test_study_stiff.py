"""The stiff study's targets and its split of methods into explicit and implicit."""

from __future__ import annotations

import importlib

import numpy as np
from scipy.linalg import expm

from odenets import study as studies

studies.load()  # puts the checkout's experiments/studies on the path
stiff = importlib.import_module("experiments.studies.stiff")


def test_linear_targets_are_the_matrix_exponential():
    options = stiff.Options(trajectories=3, num_times=5)
    ts, x0, y = stiff.linear_data(options)
    a = np.asarray(stiff.linear_matrix(np.log(np.array(options.rates)), np.array(options.angle)), np.float64)
    assert np.allclose(np.linalg.eigvalsh(a), -np.array(options.rates)[::-1], rtol=1e-5)
    expected = np.stack([x0 @ expm(a * t).T for t in ts], axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-6)
    assert ts[0] == 0.0 and np.isclose(ts[1], options.t_first) and np.isclose(ts[-1], options.t_end)


def test_explicit_and_implicit_methods_are_told_apart_by_their_regions():
    assert [stiff.is_implicit(n) for n in ("euler", "rk4", "dopri5")] == [False] * 3
    assert [stiff.is_implicit(n) for n in ("backward_euler", "trapezoid", "kvaerno5")] == [True] * 3
    assert abs(stiff.real_edge("euler") - 2.0) < 2e-3 and abs(stiff.real_edge("rk4") - 2.785) < 2e-3
