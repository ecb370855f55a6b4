"""The haber_ruthotto study's own pieces against closed forms (the smoke run is in test_studies.py)."""

from __future__ import annotations

import jax
import numpy as np

import odenets as on
from odenets import study as studies

studies.load()
from experiments.studies import haber_ruthotto as hr  # noqa: E402 (after the study package is on the path)


def test_example1_k0_grows_as_euler_on_imaginary_eigenvalues():
    """Near 0 the K0 net is y_{k+1} = (I + h K0) y_k, a rotation scaled by |1 + i h| = sqrt(1 + h^2)."""
    states, ratio, eig = hr.example1(10)["K0"]
    assert np.allclose(sorted(eig.imag), [-1.0, 1.0]) and np.allclose(eig.real, 0.0)
    assert abs(ratio[0] / 1.01**5 - 1) < 1e-3  # the small pair y1, -y1
    assert np.allclose(states[:, 1], -states[:, 0])  # tanh is odd: y2's trajectory is -y1's


def test_hamiltonian_spectra_walk_the_blocks_own_leapfrog():
    model = on.models.build("hamiltonian", input_shape=(2,), num_classes=2, width=4, depth=5, step_size="t_over_n",
                            t1=5.0)
    block = model.stages[0]
    x = jax.random.normal(jax.random.key(0), (3, 4))
    eig, x_n = hr.hamiltonian_spectra(block, x)
    assert eig.shape == (5, 3, 4)
    np.testing.assert_allclose(np.asarray(x_n), np.asarray(block(x)), atol=1e-6)
    assert np.abs(eig.real).max() < 1e-4 * np.abs(eig).max()  # [[0, K D1 K^T], [-K^T D2 K, 0]]: imaginary
