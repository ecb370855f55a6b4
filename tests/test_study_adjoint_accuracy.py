"""The pieces of the gradient studies (adjoint_accuracy, memory_depth) that their smoke runs do not pin down:
the pairs they sweep come from odenets' own checks, the drift they tabulate is the one odenets' warning
reports, and the exponent they fit is a least-squares log-log slope. No compilation: milliseconds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import odenets as on
from experiments.studies import adjoint_accuracy, memory_depth
from experiments.studies._xla import loglog_slope, rel
from odenets.gradients import adjoint
from odenets.integrators import REGISTRY as INTEGRATORS


def test_swept_pairs_are_those_odenets_accepts():
    fixed = [n for n in INTEGRATORS.names() if not INTEGRATORS.get(n).adaptive]
    ok, refused = adjoint_accuracy._pairs(fixed, on.gradient.names())
    for i, g in ok:
        assert g != "reversible" or INTEGRATORS.get(i).reversible
    irreversible = [i for i in fixed if not INTEGRATORS.get(i).reversible]
    assert {(i, g) for i, g, _ in refused} == {(i, "reversible") for i in irreversible}
    assert all("reversible" in why for _, _, why in refused)


@pytest.mark.parametrize("gradient", on.gradient.names())
def test_memory_depth_pairs_each_gradient_with_an_integrator_it_accepts(gradient):
    integ = memory_depth._integrator_for(gradient, "euler")
    assert integ == "euler" or (gradient == "reversible" and INTEGRATORS.get(integ).reversible)


@pytest.mark.parametrize("relative", [0.0137, 2.5e9, float("nan")])
def test_drift_is_read_from_odenets_reconstruction_warning(relative):
    size = 7.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adjoint._warn([np.float32((relative * size) ** 2)], [np.float32(size**2)])
    message = str(caught[0].message)
    assert issubclass(caught[0].category, adjoint.ReconstructionWarning)
    got = float(adjoint_accuracy.DRIFT.search(message)[1])
    assert np.isnan(got) if np.isnan(relative) else got == pytest.approx(relative, rel=1e-2)


def test_loglog_slope_and_rel():
    L = np.array([16, 64, 256, 1024])
    for p in (1.0, 0.5, 0.0):
        assert loglog_slope(L, 3.0 * L**p) == pytest.approx(p, abs=1e-12)
    assert np.isnan(loglog_slope([16], [1.0]))
    assert rel({"a": np.array([3.0, 4.0])}, {"a": np.array([0.0, 0.0]) + [3.0, 0.0]}) == pytest.approx(4 / 3)
    assert rel(np.array([np.inf]), np.array([1.0])) == np.inf
