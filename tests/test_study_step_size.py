"""The step_size study's prediction of the blow-up edge, h* = r(arg lambda) / |lambda|, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from odenets import study as studies

studies.load()
from experiments.studies import step_size  # noqa: E402 (after the registry has imported the studies)


@pytest.mark.parametrize("theta", [0.6 * np.pi, 0.75 * np.pi, np.pi, 1.3 * np.pi])
def test_euler_edge_is_the_disc(theta):
    # |1 + r e^{i theta}| = 1  <=>  r = -2 cos(theta): Euler's disc seen from the origin
    lam = 3.0 * np.exp(1j * theta)
    h = step_size._critical_h("euler", np.array([lam]))[0]
    assert h == pytest.approx(-2 * math.cos(theta) / 3.0, rel=0.03)


def test_rk4_reach_on_the_real_axis_and_implicit_never():
    # RK4's real stability interval is [-2.7853, 0]; BackwardEuler holds the whole left half-plane
    lam = np.array([-10.0, -0.5 + 4j])
    assert step_size._critical_h("rk4", lam[:1])[0] == pytest.approx(0.27853, rel=0.03)
    assert np.all(np.isinf(step_size._critical_h("backward_euler", lam)))
