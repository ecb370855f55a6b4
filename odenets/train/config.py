"""A run's config, typed: the one place its defaults and its checks live.

A run config is a dict (what `odenets run` composes, what config.yaml records) with the
groups data, model, integrator, gradient, optim, train and the keys seed and name:

    {"data": {"name": "moons", "noise": 0.2}, "model": {"family": "node", "kind": "mlp"},
     "integrator": {"name": "rk4"}, "optim": {"name": "adam", "lr": 1e-2}, "seed": 0}

Every default is a dataclass field, never YAML: `TrainConfig` below, the optimisers'
dataclasses (odenets.train.optim), the datasets', the integrators' and gradients', and the model
families' options. `Defaults` says which option of each group a run takes when none is
chosen. integrator / gradient None means the model family's own; a family that takes no
integrator (or gradient) refuses one, naming the families that do take it.

`RunConfig.parse(cfg)` fills the defaults and checks everything that needs no data (keys,
types, names, pairings) before anything is built or written; the model's shape checks follow
once the data's shape is known (`build_model`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

import odenets as on
from odenets import data as datasets
from odenets import models, validate
from odenets._abstract import final
from odenets.study import StudyConfig
from odenets.train.optim import Optimizer, optimizer

TOP_KEYS = ("seed", "name", "data", "model", "integrator", "gradient", "optim", "train", "study")
SOLVERS = {"integrator": on.integrator, "gradient": on.gradient}
NOT_OPTIONS = ("input_shape", "num_classes", *SOLVERS)  # given by the data and the solver groups


@final
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a run trains and reports (the `train` group); the optimiser's options are in `optim`."""

    log_every: int = 50  # steps between training-metric records
    eval_every: int = 1  # epochs between test evaluations (and always after the last)
    stop_after_epochs: int | None = None  # stop early; the run stays resumable with --resume
    distributed: bool = False  # jax.distributed.initialize() first: one process of a multi-process run
    # with distributed: the keys of jax.distributed.initialize; None: what JAX detects (Slurm, Open MPI,
    # Cloud TPU, $JAX_COORDINATOR_ADDRESS)
    coordinator_address: str | None = None  # "host:port" of process 0's coordinator
    num_processes: int | None = None
    process_id: int | None = None  # 0 .. num_processes - 1; process 0 writes the run directory
    progress: bool = True  # a progress bar when the output is a terminal
    eval_batch_size: int = 500

    def __post_init__(self):
        for key in ("log_every", "eval_every", "eval_batch_size"):
            validate.integer(f"train.{key}", getattr(self, key), 1)
        validate.optional(validate.integer, "train.stop_after_epochs", self.stop_after_epochs, 1)
        validate.boolean("train.distributed", self.distributed)
        validate.boolean("train.progress", self.progress)
        _check_address("train.coordinator_address", self.coordinator_address)
        validate.optional(validate.integer, "train.num_processes", self.num_processes, 1)
        high = None if self.num_processes is None else self.num_processes - 1
        validate.optional(validate.integer, "train.process_id", self.process_id, 0, high)
        given = [f"train.{k}={v!r}" for k in ("coordinator_address", "num_processes", "process_id")
                 if (v := getattr(self, k)) is not None]
        if given and not self.distributed:
            raise ValueError(f"{', '.join(given)} joins a multi-process run only with train.distributed=true; "
                             f"set it, or leave those keys unset")


def _check_address(key: str, value) -> None:
    """None, or "host:port" with a non-empty host and a port in 1..65535 (IPv6 hosts in brackets)."""
    if value is None:
        return
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not (host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f'{key} must be "host:port" with a port in 1..65535 (e.g. "localhost:12345", '
                         f'"node001:7777"), or null to let JAX detect it, got {key}={value!r}')


@final
@dataclasses.dataclass(frozen=True)
class Defaults:
    """The option of each config group a run takes when none is chosen, and the seed.

    integrator / gradient None: the model family's own (a ResNet's Euler, a Neural ODE's RK4).
    `model_for_task`: the model a run takes when none is chosen and the data's task is not
    classification (a trajectory set trains a Neural ODE: `odenets run data=spiral_ode`).
    """

    data: str = "mnist1d"
    model: str = "resnet"
    model_for_task: tuple[tuple[str, str], ...] = (("trajectory", "node"),)
    integrator: str | None = None
    gradient: str | None = None
    optim: str = "adam"
    seed: int = 0


def field_defaults(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass' options and their defaults (lists for tuples, as a config holds them)."""
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "???"  # required: Hydra's mandatory value
        out[f.name] = _plain(value)
    return out


def _plain(value):
    """A value as a config holds it: lists for tuples."""
    return list(value) if isinstance(value, tuple) else value


# ---- what the model group needs from odenets.models: each family is its own options dataclass ------


def family_options(family: str) -> dict[str, Any]:
    """The options of a model family with their defaults, its solver aside (the integrator
    and gradient groups choose that)."""
    return field_defaults(models.family.get(family), NOT_OPTIONS)


def preset_options(preset: str) -> dict[str, Any]:
    """A preset's architecture as a model group option: family, options; its solver aside."""
    spec = models.preset(preset)
    family = spec["family"]
    given = {k: _plain(v) for k, v in spec.items() if k not in ("family", *NOT_OPTIONS)}
    return {"family": family, **family_options(family), **given}


def takes(family: str, key: str) -> bool:
    """Whether a model family takes an integrator (key="integrator") or a gradient strategy."""
    return bool(getattr(models.family.get(family), f"takes_{key}"))


def own_solver(family: str, key: str):
    """The family's default integrator or gradient, as an object."""
    default = {f.name: f.default for f in dataclasses.fields(models.family.get(family))}[key]
    return SOLVERS[key](default)


def build_model(cfg: RunConfig, input_shape: tuple[int, ...], num_classes: int) -> nnx.Module:
    """The model cfg.model describes, for data of this shape; errors name the model group."""
    solver = {k: getattr(cfg, k) for k in SOLVERS if getattr(cfg, k) is not None}
    return _in_group("model", lambda: models.build(
        cfg.model["family"], input_shape=tuple(input_shape), num_classes=num_classes, rngs=nnx.Rngs(cfg.seed),
        **solver, **_options(cfg.model)))


def build_trajectory_model(cfg: RunConfig, dim: int, ts) -> nnx.Module:
    """The model cfg.model describes for trajectory data: initial states (B, dim) -> their states at ts."""
    solver = {k: getattr(cfg, k) for k in SOLVERS if getattr(cfg, k) is not None}
    return _in_group("model", lambda: models.trajectory(
        cfg.model["family"], dim=dim, ts=ts, rngs=nnx.Rngs(cfg.seed), **solver, **_options(cfg.model)))


# ---- parsing ------------------------------------------------------------------------------------------


def _options(model: dict[str, Any]) -> dict[str, Any]:
    """A model group's options as the family takes them (tuples where a config holds lists)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in model.items() if k != "family"}


def _group(cfg: dict, group: str, default: str | None, key: str = "name") -> tuple[str, dict]:
    """(option, its values) of a group; an absent group is its default option."""
    spec = cfg.get(group, {key: default})
    if not isinstance(spec, dict) or key not in spec:
        raise ValueError(f"config group {group!r} must be a mapping with a {key!r} key, got {group}={spec!r}")
    options = dict(spec)
    return options.pop(key), options


def _in_group(group: str, make):
    """make(), with any error it raises prefixed by the group it came from."""
    try:
        return make()
    except (ValueError, TypeError) as err:
        message = str(err)
        raise type(err)(message if message.startswith(f"{group}.") else f"{group} config ({group}.*): {message}") \
            from None


def _solver(cfg: dict, family: str, key: str):
    """The integrator or gradient of a run: the group's choice, or the family's own when None."""
    if cfg.get(key) is None:
        return own_solver(family, key) if takes(family, key) else None
    name, options = _group(cfg, key, None)
    if not takes(family, key):
        those = [f for f in models.family.names() if takes(f, key)]
        raise ValueError(
            f"model family {family!r} takes no {key} (got {key}={name}); families that take one: "
            f"{', '.join(those)}. Leave {key} unset for {family!r} (~{key} on the command line), or choose one of "
            f"those families"
        )
    return _in_group(key, lambda: SOLVERS[key](name, **options))


@final
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A parsed run config: every group built and checked, every default filled in.

    integrator / gradient are None only for a family that takes none; `model` holds the
    family's name and options (checked against the data's shape when the model is built).
    """

    data: datasets.Builder
    model: dict[str, Any]
    integrator: on.Integrator | None
    gradient: on.Gradient | None
    optim: Optimizer
    train: TrainConfig
    seed: int = 0
    name: str | None = None
    study: StudyConfig | None = None  # a study (odenets.study) runs instead of training

    @classmethod
    def parse(cls, cfg: dict) -> RunConfig:
        """Check a config dict and fill its defaults; builds nothing large, reads no data."""
        if not isinstance(cfg, dict):
            raise ValueError(f"a run config is a mapping of the groups {', '.join(TOP_KEYS)}, got {cfg!r}")
        validate.known_keys("top-level config", cfg, TOP_KEYS)
        defaults = Defaults()
        seed = validate.integer("seed", cfg.get("seed", defaults.seed), 0)
        name = cfg.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a string or null, got name={name!r}")
        train = cfg.get("train") or {}
        validate.known_keys("train", train, [f.name for f in dataclasses.fields(TrainConfig)])
        train = TrainConfig(**train)
        optim_name, optim_options = _group(cfg, "optim", defaults.optim)
        optim = optimizer(optim_name, **optim_options)
        data_name, data_options = _group(cfg, "data", defaults.data)
        data = _in_group("data", lambda: datasets.dataset(data_name, **data_options))
        family, given = _group(cfg, "model", defaults.model, "family")
        options = _in_group("model", lambda: family_options(family))
        _in_group("model", lambda: validate.known_keys(f"model family {family!r}", given, options))
        model = {"family": family, **options, **given}
        integrator = _solver(cfg, family, "integrator")
        gradient = _solver(cfg, family, "gradient")
        solver = {k: v for k, v in (("integrator", integrator), ("gradient", gradient)) if v is not None}
        _in_group("model", lambda: models.family(family, **_options(model), **solver))  # checks needing no data
        study = None if cfg.get("study") is None else StudyConfig.parse(cfg["study"])
        return cls(data, model, integrator, gradient, optim, train, seed, name, study)

    def to_dict(self) -> dict[str, Any]:
        """The config with every default filled in (what config.yaml records)."""
        group = lambda obj: None if obj is None else {"name": obj.name, **_values(obj)}
        study = {} if self.study is None else {"study": self.study.to_dict()}
        return {
            "name": self.name, "seed": self.seed, "data": group(self.data), "model": dict(self.model),
            "integrator": group(self.integrator), "gradient": group(self.gradient), "optim": group(self.optim),
            "train": dataclasses.asdict(self.train), **study,
        }


def _values(obj) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
