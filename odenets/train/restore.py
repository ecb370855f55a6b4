"""A trained model back from a run directory: `load_run(run_dir)` for notebooks and studies.

The model is rebuilt from the run's resolved `config.yaml` and loaded with the parameters and model
state of its newest checkpoint that restores, so what a notebook analyses is exactly what `fit`
(`odenets run`) saved; its dataset is loaded as the run loaded it (same options and seed).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from flax import nnx

from odenets import data as datasets
from odenets._abstract import final
from odenets.train.checkpoints import Checkpoints
from odenets.train.config import RunConfig, build_model


@final
@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory's trained model, its dataset, its config (the dict of config.yaml), its
    summary (summary.json; None for a run that wrote none yet), the step of the checkpoint loaded
    and the directory."""

    model: nnx.Module
    data: Any
    config: dict
    summary: dict | None
    step: int
    run_dir: Path


def load_run(run_dir: str | Path) -> Run:
    """The model of `run_dir`'s newest checkpoint (an older one if the newest is damaged), rebuilt
    from its config.yaml, with the run's dataset. A directory without config.yaml or without a
    checkpoint is a FileNotFoundError naming what is missing."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"load_run: {config_file} not found: {run_dir} is not an odenets run directory "
                                "(odenets run writes config.yaml, metrics.jsonl, checkpoints/ ... there)")
    cfg = yaml.safe_load(config_file.read_text())
    run = RunConfig.parse(cfg)
    data = datasets.load(run.data, seed=run.seed)
    # the state's structure without initialising it (nnx.eval_shape): the checkpoint fills in the values;
    # the optimiser state's structure does not depend on the schedule's length
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: build_model(run, data.input_shape, data.output_dim)),
                                       nnx.Param, ...)
    opt_state = jax.eval_shape(run.optim.transform(1).init, params)
    like = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), (params, rest, opt_state))
    ckpt = Checkpoints(run_dir / "checkpoints")
    try:
        restored = ckpt.restore_latest(like) if ckpt.latest_step() is not None else None
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"load_run: {run_dir / 'checkpoints'} holds no checkpoint that restores "
                                "(a run writes one at the end of every epoch)")
    (params, rest, _), meta = restored
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    return Run(nnx.merge(graphdef, params, rest), data, cfg, summary, int(meta["step"]), run_dir)
