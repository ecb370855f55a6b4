"""Models trained by odenets' own training (`odenets.train.loop.fit`), handed back to a study.

A study that needs a trained model composes the config as `odenets run` would
(`odenets.cli.compose([...overrides])`), trains it with `fit` into a run directory of its own
(`report.subdir(name)`: config.yaml, metrics, checkpoints, report.md, as any training run), and
gets back the model restored from the run's last checkpoint together with its data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from odenets import cli
from odenets import data as datasets
from odenets._abstract import final
from odenets.train.checkpoints import Checkpoints
from odenets.train.config import RunConfig, build_model
from odenets.train.loop import fit


@final
@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained classifier, its dataset, `fit`'s summary and the run directory it was written to."""

    model: nnx.Module
    data: Any
    summary: dict
    run_dir: Path


def train(overrides: list[str], run_dir: Path) -> Trained:
    """Train `odenets run <overrides>` into `run_dir` (a fresh directory) and restore the result.

    The model is rebuilt from the config and loaded with the newest checkpoint's parameters,
    so what the study analyses is exactly what `fit` saved.
    """
    cfg = cli.compose(["train.progress=false", *overrides])
    summary = fit(cfg, run_dir)
    run = RunConfig.parse(cfg)
    data = datasets.load(run.data, seed=run.seed)
    # the state's structure without initialising it (nnx.eval_shape): the checkpoint fills in the values
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: build_model(run, data.input_shape, data.output_dim)),
                                       nnx.Param, ...)
    opt_state = jax.eval_shape(run.optim.transform(max(1, summary["steps"])).init, params)
    like = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), (params, rest, opt_state))
    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    try:
        restored = ckpt.restore_latest(like)
    finally:
        ckpt.close()
    if restored is None:
        raise RuntimeError(f"training into {run_dir} wrote no checkpoint (status {summary['status']!r})")
    (params, rest, _), _ = restored
    return Trained(nnx.merge(graphdef, params, rest), data, summary, Path(run_dir))
