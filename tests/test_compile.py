"""No Python loop over steps: the program size does not grow with steps; memory of each strategy."""

import jax
import jax.numpy as jnp
import pytest
from conftest import PAIRS
from problems import mlp_field, mlp_params

import odenets as on

pytestmark = pytest.mark.usefixtures("strict_promotion")


def value_and_grad(integrator, gradient, steps, per_step):
    def loss(x0, params):
        args = on.PerStep(params) if per_step else params
        return jnp.sum(on.odeint(mlp_field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient,
                                 args=args).x ** 2)

    params = mlp_params(jax.random.key(0), width=8, hidden=16, leading=(steps,) if per_step else ())
    x0 = jnp.ones((4, 8))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (x0, params)


def count_eqns(jaxpr) -> int:
    """Equations in a jaxpr, nested ones (scan bodies, custom_vjp rules, ...) included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += count_eqns(inner)
    return total


def program_size(integrator, gradient, steps, per_step):
    fn, (x0, params) = value_and_grad(integrator, gradient, steps, per_step)
    jaxpr = jax.make_jaxpr(fn)(x0, params)
    hlo = fn.lower(x0, params).as_text()
    return count_eqns(jaxpr.jaxpr), len(hlo.splitlines())


@pytest.mark.parametrize("per_step", [False, True], ids=["shared", "perstep"])
@pytest.mark.parametrize("integrator,gradient", PAIRS)
def test_program_size_does_not_grow_with_steps(integrator, gradient, per_step):
    eqns8, hlo8 = program_size(integrator, gradient, 8, per_step)
    eqns512, hlo512 = program_size(integrator, gradient, 512, per_step)
    assert eqns512 == eqns8, (eqns8, eqns512)
    # the HLO differs only in constants and shapes (and Checkpoint's segment length), never in size
    assert abs(hlo512 - hlo8) <= 0.05 * hlo8, (hlo8, hlo512)


def temp_bytes(integrator, gradient, steps):
    fn, (x0, params) = value_and_grad(integrator, gradient, steps, per_step=False)
    memory = fn.lower(x0, params).compile().memory_analysis()
    if memory is None or not hasattr(memory, "temp_size_in_bytes"):
        pytest.skip("this backend reports no memory analysis")
    return memory.temp_size_in_bytes


@pytest.mark.parametrize(
    "integrator,gradient,low,high",
    [
        ("rk4", "backprop", 20.0, None),  # stores every stage of every step: grows ~ steps
        ("rk4", "checkpoint", 1.5, 16.0),  # grows ~ sqrt(steps): 8x for 64x the steps
        ("rk4", "adjoint", None, 1.2),  # flat
        ("reversible_heun", "reversible", None, 1.2),  # flat
        ("backward_euler", "adjoint", None, 1.2),
    ],
)
def test_memory_growth_with_steps(integrator, gradient, low, high):
    ratio = temp_bytes(integrator, gradient, 1024) / temp_bytes(integrator, gradient, 16)
    assert low is None or ratio >= low, ratio
    assert high is None or ratio <= high, ratio
