"""The schrodinger study's prediction: per-eigencomponent amplitudes from R(z) and the amplification matrix."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np

import odenets as on
from odenets import study as studies

studies.load()  # puts the checkout's experiments/studies on the path
schrodinger = importlib.import_module("experiments.studies.schrodinger")


def test_predicted_amplitudes_equal_the_solve_for_one_and_three_carried_states():
    lam, h, steps = np.array([-2.0, 0.5, 3.0]), 0.1, 20  # h |lambda| = 0.3 inside reversible Heun's |y| <= 1
    z = -1j * h * lam
    with jax.enable_x64(True):
        for name in ("euler", "reversible_heun"):
            [(r, m)] = schrodinger.responses(name, [z])
            predicted = schrodinger.predicted_amplitudes(name, z, r, m, steps)
            xs = on.odeint(lambda t, y, a: -1j * a * y, jnp.ones(3, jnp.complex128), 0.0, h * steps, steps=steps,
                           integrator=name, args=jnp.asarray(lam), save="all").xs
            np.testing.assert_allclose(predicted, np.asarray(xs), rtol=1e-12, atol=1e-14)


def test_imaginary_axis_edges_are_the_closed_forms():
    y = schrodinger.EDGE_GRID
    with jax.enable_x64(True):
        edges = {n: schrodinger.imaginary_edge(y, schrodinger.responses(n, [1j * y])[0][0])
                 for n in ("euler", "rk4", "trapezoid", "reversible_heun")}
    assert edges["euler"] == 0.0 and edges["trapezoid"] == np.inf
    assert abs(edges["rk4"] - 2 * np.sqrt(2)) < 2e-3 and abs(edges["reversible_heun"] - 1.0) < 2e-3
