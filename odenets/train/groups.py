"""The config groups of `odenets run`, generated from the registries into Hydra's ConfigStore.

    data/<name>         every registered dataset: {name, **its dataclass' fields}
    model/<name>        every registered family: {family, **its options}; every preset
                        (chen_resnet_1d, ...): its architecture (its solver comes from the groups below)
    integrator/<name>   every registered integrator: {name, **its fields}
    gradient/<name>     every registered gradient strategy: {name, **its fields}
    optim/<name>        every registered optimiser: {name, **its fields}
    odenets             the primary config: Defaults' choices, seed, name, resume, train (TrainConfig)

Nothing here holds a default of its own: every value is read from a dataclass. `store()` runs
when a config is composed, not at import, so a class registered before then (one integrator,
family or dataset) is an option at once: `odenets run integrator=ralston`. The YAML files
that ship (configs/experiment/<name>.yaml) hold only overrides of these groups.
"""

from __future__ import annotations

import dataclasses

import odenets as on
from odenets import data as datasets
from odenets import models
from odenets.train.config import (
    Defaults,
    TrainConfig,
    family_options,
    field_defaults,
    own_solver,
    preset_options,
    takes,
)
from odenets.train.optim import optimizer

PRIMARY = "odenets"
GROUPS = ("data", "model", "integrator", "gradient", "optim")
NAME_RESOLVER = "odenets_run_name"

HYDRA = {  # how Hydra runs a job: where its directory goes, what it logs
    "run": {"dir": "runs/${name}/${now:%Y-%m-%d_%H-%M-%S-%f}"},
    "sweep": {"dir": "runs/multirun/${now:%Y-%m-%d_%H-%M-%S-%f}", "subdir": "${hydra.job.num}"},
    "job": {"chdir": False},
    "job_logging": {"root": {"level": "WARNING"}},  # library INFO logs (XLA, checkpointing) off the terminal
}


def options(group: str) -> dict[str, dict]:
    """Every option of a config group, as the dict Hydra composes: {option: node}."""
    if group == "model":
        out = {name: {"family": name, **family_options(name)} for name in models.family.names()}
        return {**out, **{name: preset_options(name) for name in models.PRESETS}}
    registry = {"data": datasets.dataset, "integrator": on.integrator, "gradient": on.gradient,
                "optim": optimizer}[group]
    return {name: {"name": name, **field_defaults(registry.get(name))} for name in registry.names()}


def primary() -> dict:
    """The primary config: the defaults list (one option per group, then the experiment) and the
    keys outside any group."""
    defaults = Defaults()
    choices = [{group: getattr(defaults, group)} for group in GROUPS]
    name = ",".join(f"${{hydra:runtime.choices.{group}}}" for group in ("model", "integrator", "data"))
    return {
        "defaults": ["_self_", *choices, {"experiment": None}],  # the groups fill integrator: None
        "name": f"${{{NAME_RESOLVER}:{name}}}",
        **{group: None for group in GROUPS},
        "seed": defaults.seed,
        "resume": False,
        "study": None,  # experiment=<study> sets {name, size}: the run is that study (odenets.study)
        "train": dataclasses.asdict(TrainConfig()),
        "hydra": HYDRA,
    }


def run_name(model: str, integrator: str | None, data: str) -> str:
    """<model>-<integrator>-<data> from the group choices; an unset integrator is the family's own
    (and left out for a family that takes none)."""
    if integrator is None:
        family = models.preset(model)["family"] if model in models.PRESETS else model
        integrator = own_solver(family, "integrator").name if takes(family, "integrator") else None
    return "-".join(c for c in (model, integrator, data) if c is not None)


def store() -> None:
    """(Re)write every group and the primary config into Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for group in GROUPS:
        for name, node in options(group).items():
            cs.store(group=group, name=name, node=node)
    cs.store(name=PRIMARY, node=primary())
    OmegaConf.register_new_resolver(NAME_RESOLVER, run_name, replace=True)
