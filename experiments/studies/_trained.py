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
from odenets.train.checkpoints import Checkpoints
from odenets.train.loop import fit, setup


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
    s = setup(cfg)
    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    try:
        restored = ckpt.restore_latest(s.state)
    finally:
        ckpt.close()
    if restored is None:
        raise RuntimeError(f"training into {run_dir} wrote no checkpoint (status {summary['status']!r})")
    (params, rest, _), _ = restored
    return Trained(nnx.merge(s.graphdef, params, rest), s.data, summary, Path(run_dir))
