"""Float64 for numerical checks (float32 tests ask for float32 arrays explicitly)."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)

import extensions  # noqa: E402, F401  (registers the test suite's own integrator, family and dataset)

import odenets as on  # noqa: E402
from odenets.solve import resolve_solver  # noqa: E402

FIXED = [n for n in on.integrator.names() if not on.integrator.get(n).adaptive]
ADAPTIVE = [n for n in on.integrator.names() if on.integrator.get(n).adaptive]
GRADIENTS = on.gradient.names()


def allowed(integrator: str, gradient: str) -> bool:
    """Whether odenets accepts the pair (its own checks decide: nothing is restated here)."""
    try:
        resolve_solver(integrator, gradient, per_step=False)
    except ValueError:
        return False
    return True


PAIRS = [(i, g) for i in FIXED for g in GRADIENTS if allowed(i, g)]


@pytest.fixture
def strict_promotion():
    """No implicit dtype promotion inside the library (as diffrax's test suite runs): a core test
    file opts in with `pytestmark = pytest.mark.usefixtures("strict_promotion")`."""
    with jax.numpy_dtype_promotion("strict"):
        yield
