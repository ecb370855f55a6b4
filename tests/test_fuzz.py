"""Property-based fuzzing of `odeint`'s arguments: every input works or is refused by odenets.

A case passes when the solve returns a state of x0's structure that is finite whenever the
inputs are, or raises ValueError / TypeError from odenets' own code (the innermost frame of
the traceback is in the odenets package, not in JAX, diffrax or equinox) with a message that
names the argument at fault. What is never acceptable: an internal traceback, a silently
non-finite result from finite inputs, or a result for an input that should have been refused.
"""

import collections
import math
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odenets as on

PACKAGE = str(Path(on.__file__).resolve().parent)
TRIED = {"cases": 0, "refused": 0, "solved": 0}
REASONS = collections.Counter()  # the first words of each refusal
TIMES = [0.0, 1.0, -1.0, 0.25, 2.0, math.nan, math.inf, -math.inf]
DTYPES = ["float32", "float64", "complex64", "complex128", "int32", "bool"]
SHAPES = [(), (3,), (2, 3)]


def field(t, x, args):
    scale = args["w"] if isinstance(args, dict) and "w" in args else 1.0
    return jax.tree.map(lambda v: -0.5 * scale * v, x)


def names_the_argument(message: str) -> bool:
    words = ("x0", "t0", "t1", "steps", "args", "save", "integrator", "gradient", "dtype", "unknown", "f ")
    return any(w in message for w in words)


@st.composite
def states(draw):
    kind = draw(st.sampled_from(["array", "pytree", "mixed", "nonfinite", "list"]))
    shape = draw(st.sampled_from(SHAPES))
    if kind == "pytree":
        dtype = draw(st.sampled_from(DTYPES[:4]))
        return {"a": jnp.ones(shape, dtype), "b": (jnp.full((2,), 0.5, dtype),)}
    if kind == "mixed":
        return {"a": jnp.ones(shape, jnp.float32), "b": jnp.ones((2,), jnp.float64)}
    if kind == "nonfinite":
        return jnp.asarray([1.0, draw(st.sampled_from([math.nan, math.inf])), 0.0])
    if kind == "list":
        return [1.0, 2.0]
    return jnp.ones(shape, draw(st.sampled_from(DTYPES)))


ARGS = st.sampled_from([None, "array", "dict", "string", "function", "complex"])


def make_args(kind):
    return {None: None, "array": jnp.ones(3), "dict": {"w": jnp.asarray(0.7)}, "string": "hello",
            "function": jnp.sin, "complex": {"w": jnp.asarray(0.7 + 0.2j)}}[kind]


FAULTS = [None, None, None, "steps", "save", "t0", "t1", "gradient"]  # at most one argument made bad per case
BAD = {"steps": [0, -2, 2.0, None, True, "3"], "save": ["every", None, 3], "t0": TIMES[5:], "t1": TIMES[5:]}


def allowed_gradients(integrator: str) -> list[str]:
    from odenets.solve import resolve_solver

    ok = []
    for g in on.gradient.names():
        try:
            resolve_solver(integrator, g, per_step=False, unroll=1)
            ok.append(g)
        except ValueError:
            pass
    return ok


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def fuzz_odeint(data):
    draw = data.draw
    fault = draw(st.sampled_from(FAULTS), label="fault")
    integrator = draw(st.sampled_from(on.integrator.names()), label="integrator")
    fine = allowed_gradients(integrator)
    bad = [g for g in on.gradient.names() if g not in fine]
    gradient = draw(st.sampled_from(bad if fault == "gradient" and bad else fine), label="gradient")
    x0 = draw(states(), label="x0")
    t0, t1 = draw(st.sampled_from([(0.0, 1.0), (1.0, 0.0), (-1.0, 0.25), (0.0, 2.0), (0.25, 0.25)]), label="t")
    t0 = draw(st.sampled_from(BAD["t0"])) if fault == "t0" else t0
    t1 = draw(st.sampled_from(BAD["t1"])) if fault == "t1" else t1
    steps = draw(st.sampled_from(BAD["steps"] if fault == "steps" else [3, 1, np.int64(4)]), label="steps")
    save = draw(st.sampled_from(BAD["save"] if fault == "save" else ["final", "all"]), label="save")
    args = draw(ARGS, label="args")
    differentiate = draw(st.booleans(), label="differentiate")
    TRIED["cases"] += 1
    a = make_args(args)

    def solve(x):
        return on.odeint(field, x, t0=t0, t1=t1, steps=steps, integrator=integrator, gradient=gradient, args=a,
                         save=save)

    try:
        sol = solve(x0)
        if differentiate and all(jnp.issubdtype(jnp.result_type(v), jnp.floating) for v in jax.tree.leaves(x0)):
            jax.grad(lambda x: sum(jnp.sum(jnp.real(v)) for v in jax.tree.leaves(solve(x).x)))(x0)
    except (ValueError, TypeError) as err:
        TRIED["refused"] += 1
        REASONS[" ".join(str(err).split()[:4])] += 1
        frames = traceback.extract_tb(err.__traceback__)
        assert frames and frames[-1].filename.startswith(PACKAGE), (
            f"{type(err).__name__} raised outside odenets: {frames[-1].filename}: {err}")
        assert names_the_argument(str(err)), str(err)
        return
    TRIED["solved"] += 1
    assert jax.tree.structure(sol.x) == jax.tree.structure(jax.tree.map(jnp.asarray, x0))
    finite_in = all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(x0)) and math.isfinite(t0 + t1)
    assert finite_in, "a non-finite input was accepted"
    for v in jax.tree.leaves(sol.x):
        assert bool(jnp.isfinite(v).all()), "finite inputs gave a non-finite state"


@pytest.mark.slow
def test_odeint_works_or_refuses_with_an_odenets_error():
    """The fuzz search (`fuzz_odeint`, every case checked as it runs), then how many cases were tried:
    one test, so the counts are those of this search whichever worker runs it."""
    for key in TRIED:
        TRIED[key] = 0
    REASONS.clear()
    fuzz_odeint()
    print(f"fuzzed odeint calls: {TRIED['cases']} ({TRIED['solved']} solved, {TRIED['refused']} refused with an "
          f"odenets error)")
    print("refusals by kind:", dict(REASONS.most_common()))
    assert TRIED["cases"] >= 400 and TRIED["solved"] >= 80
