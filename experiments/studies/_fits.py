"""Small models trained in memory by odenets' own train step (`odenets.train.loop.make_steps`) on an
in-memory `Dataset`: shared by the anode_concentric and spiral studies.

The model is any NNX module the train step can differentiate (a flow with a linear head, a `Trajectory`
model); the dataset's task picks the loss as `odenets run` would: for task "regression" the squared error
summed over the output, sum_j (pred_j - y_j)^2 (the mean squared error for one output), for task
"trajectory" the mean squared error over the T observed states, mean_{t, d} (path - y)^2. Every step's
loss and its forward and backward NFE (`odenets.models.stage_totals`) are kept (`_depthnets.run_steps`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from experiments.studies import _depthnets as nets
from odenets import data as datasets
from odenets import models
from odenets._abstract import final
from odenets.train import loop
from odenets.train.config import RunConfig


@final
@dataclasses.dataclass(frozen=True)
class Fit:
    """A trained model and its record: per step the training loss and the forward / backward NFE (-1 where
    unknown), the mean loss of each epoch, what `measure(model)` returned after every `every`-th epoch
    (with the epoch count), and the seconds the training took (the first step's compile included)."""

    model: nnx.Module
    losses: np.ndarray
    nfe: np.ndarray
    nfe_backward: np.ndarray
    epoch_losses: np.ndarray
    measured: tuple[tuple[int, Any], ...]
    seconds: float


def initialise(make: Callable[[], nnx.Module], seed: int) -> nnx.Module:
    """The module `make()` builds, with its parameters drawn by numpy rather than by its initialisers
    (compiling those takes seconds per model on a CPU; `nnx.eval_shape` only traces `make`): the studies'
    one numpy statement of the initialisers, `_depthnets.initialise` (nets), on this module's own random stream."""
    return nets.initialise(nnx.eval_shape(make), seed, stream=11)


def setup(model: nnx.Module, data: datasets.Dataset, *, lr: float, batch_size: int, epochs: int, seed: int,
          optim: str = "adam", clip_norm: float | None = 1.0, schedule: str = "cosine") -> loop.Setup:
    """`loop.setup` for a model built here and a dataset in memory: the optimiser `optim` (clip_norm ->
    rule(lr(step)), `odenets.train.optim`) over epochs * (n_train // batch_size) steps, on one device."""
    batch_size = min(batch_size, len(data.x_train))
    cfg = {"seed": seed, "optim": {"name": optim, "lr": lr, "batch_size": batch_size, "epochs": epochs,
                                   "clip_norm": clip_norm, "schedule": schedule},
           "train": {"progress": False}}
    run = RunConfig.parse(cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    steps_per_epoch = len(data.x_train) // batch_size
    total = steps_per_epoch * epochs
    tx = run.optim.transform(total)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    # zeros of the optimiser state's structure where it starts at zero (tx.init's eager ops compile one small
    # program per leaf)
    opt_state = nets._opt_init(tx, optim, params)
    return loop.Setup({}, run, data, graphdef, (params, rest, opt_state), tx, mesh, steps_per_epoch, total,
                      models.param_count(model))


def fit(model: nnx.Module, data: datasets.Dataset, *, lr: float, batch_size: int, epochs: int, seed: int,
        every: int = 0, measure: Callable[[nnx.Module], Any] | None = None,
        **optim) -> Fit:
    """Train `model` on `data` for `epochs` epochs of mini-batches (`odenets.data.batches`, an order fixed
    by (seed, epoch)) with the run's jitted train step; `measure(model)` after every `every`-th epoch and
    after the last (every=0: after the last only, when measure is given). `optim`: `setup`'s options."""
    s = setup(model, data, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed, **optim)
    train_step, _ = loop.make_steps(s)
    start, keys = time.perf_counter(), ("loss", "nfe", "nfe_backward")
    records, measured = {key: [] for key in keys}, []
    for epoch, state, record in nets.run_steps(s, s.state, train_step, range(epochs), seed=seed, keys=keys):
        for key in keys:
            records[key].append(record[key])
        if measure is not None and (epoch == epochs - 1 or (every and (epoch + 1) % every == 0)):
            measured.append((epoch + 1, measure(nets.model_of(s, state))))
    column = lambda key, dtype: np.concatenate(records[key]).astype(dtype)
    return Fit(nets.model_of(s, state), column("loss", np.float64), column("nfe", np.int64),
               column("nfe_backward", np.int64), np.asarray([np.mean(r) for r in records["loss"]]),
               tuple(measured), time.perf_counter() - start)


def epoch_mean(values: np.ndarray, epochs: int) -> np.ndarray:
    """A per-step record (steps,) as the mean of each epoch (epochs,) (steps = epochs * steps per epoch)."""
    return np.asarray(values, np.float64).reshape(epochs, -1).mean(axis=1)
