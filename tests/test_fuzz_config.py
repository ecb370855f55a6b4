"""Property-based fuzzing of `odenets run`'s overrides: every command line is accepted or refused
with a message that names the key at fault, before anything is built or written.

Each case composes the overrides exactly as `odenets run` does (`cli.compose`), parses them
(`RunConfig.parse`, the check every job passes before a run directory exists) and, when that
accepts, builds the run (`setup`: data, model, optimiser) without training. A refusal must be
ValueError / TypeError / KeyError or Hydra's own override error, naming the key or the bad
value; anything else (an internal traceback from JAX, optax, numpy) fails the case.
"""

import math

import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

import odenets as on
from odenets import cli
from odenets.train.config import RunConfig
from odenets.train.loop import setup

TRIED = {"cases": 0, "refused": 0, "built": 0}
KEYS = ["optim.lr", "optim.batch_size", "optim.epochs", "optim.weight_decay", "optim.clip_norm", "model.width",
        "model.depth", "model.steps", "train.log_every", "train.eval_every", "seed", "data.n_train",
        "data.noise", "model.widht", "optim.lrr", "train.speed"]
VALUES = ["0", "-1", "1", "3", "0.5", "nan", "inf", "-inf", "1e30", "abc", "true", "null", "[1,2]", "3.5",
          "100000000"]
GROUPS = {
    "integrator": [*on.integrator.names(), "rk5"],
    "gradient": [*on.gradient.names(), "magic"],
    "model": ["resnet", "plain", "node", "anode", "momentum", "highway", "hamiltonian", "nonet"],
    "data": ["spheres", "moons", "peaks", "xor", "mnist2d"],
    "optim": ["adam", "sgd", "adamw", "lion9"],
}


@st.composite
def command_lines(draw):
    overrides = ["experiment=toy", "optim.epochs=1", "optim.batch_size=32", "data.n_train=64", "data.n_test=32"]
    for group, choices in GROUPS.items():
        if draw(st.booleans()):
            overrides.append(f"{group}={draw(st.sampled_from(choices))}")
    for _ in range(draw(st.integers(0, 3))):
        overrides.append(f"{draw(st.sampled_from(KEYS))}={draw(st.sampled_from(VALUES))}")
    return overrides


def names_the_fault(message: str, overrides: list[str]) -> bool:
    parts = [o.split("=", 1)[0].split(".")[-1] for o in overrides] + [o.split("=", 1)[1] for o in overrides]
    return any(p and p in message for p in parts) or "valid" in message


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=command_lines())
def fuzz_overrides(overrides):
    TRIED["cases"] += 1
    try:
        parsed = RunConfig.parse(cli.compose(overrides))
        s = setup(parsed)
    except (ValueError, TypeError, KeyError, HydraException, OmegaConfBaseException) as err:
        TRIED["refused"] += 1
        assert names_the_fault(str(err), overrides), f"{overrides}: {type(err).__name__}: {err}"
        return
    TRIED["built"] += 1
    cfg = s.cfg if isinstance(s.cfg, dict) else parsed.to_dict()
    lr = cfg["optim"]["lr"]
    assert math.isfinite(lr) and lr > 0, f"{overrides} was accepted with optim.lr={lr}"


@pytest.mark.slow
def test_overrides_are_accepted_or_refused_by_name():
    """The fuzz search (`fuzz_overrides`, every case checked as it runs), then how many command lines were
    tried: one test, so the counts are those of this search whichever worker runs it."""
    for key in TRIED:
        TRIED[key] = 0
    fuzz_overrides()
    print(f"fuzzed command lines: {TRIED['cases']} ({TRIED['refused']} refused, {TRIED['built']} built)")
    assert TRIED["cases"] >= 150 and TRIED["refused"] > 0 and TRIED["built"] > 0
