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

from flax import nnx

from odenets import cli
from odenets._abstract import final
from odenets.train.loop import fit
from odenets.train.restore import load_run


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

    The model is rebuilt from the config and loaded with the newest checkpoint's parameters
    (`odenets.train.load_run`), so what the study analyses is exactly what `fit` saved.
    """
    cfg = cli.compose(["train.progress=false", *overrides])
    summary = fit(cfg, run_dir)
    run = load_run(run_dir)
    return Trained(run.model, run.data, summary, Path(run_dir))
