"""Float64 for numerical checks (float32 tests ask for float32 arrays explicitly)."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)

import odenets as on  # noqa: E402
import extensions  # noqa: E402, F401  (registers the test suite's own integrator, family and dataset)

FIXED = [n for n in on.integrator.names() if not on.integrator(n).adaptive]
ADAPTIVE = [n for n in on.integrator.names() if on.integrator(n).adaptive]
GRADIENTS = on.gradient.names()


def allowed(integrator: str, gradient: str) -> bool:
    try:
        on.gradient(gradient).check(on.integrator(integrator))
    except ValueError:
        return False
    return not (on.integrator(integrator).adaptive and gradient == "reversible")


PAIRS = [(i, g) for i in FIXED for g in GRADIENTS if allowed(i, g)]


@pytest.fixture(params=FIXED)
def fixed_integrator(request):
    return request.param
