"""Small models trained in memory by odenets' own train step (`odenets.train.loop.make_steps`) on an
in-memory `Dataset`: shared by the anode_concentric and spiral studies.

The model is any NNX module the train step can differentiate (a flow with a linear head, a `Trajectory`
model); the dataset's task picks the loss as `odenets run` would: for task "regression" the squared error
summed over the output, sum_j (pred_j - y_j)^2 (the mean squared error for one output), for task
"trajectory" the mean squared error over the T observed states, mean_{t, d} (path - y)^2. Every step's
loss and its forward and backward NFE (`odenets.models.stage_totals`) are kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

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


ZERO_STATE = ("adam", "adamw", "sgd")  # optimisers whose optax state starts as zeros


def initialise(make: Callable[[], nnx.Module], seed: int) -> nnx.Module:
    """The module `make()` builds, with its parameters drawn by numpy rather than by its initialisers
    (compiling those takes seconds per model on a CPU; `nnx.eval_shape` only traces `make`): every kernel of
    a Linear layer, (..., fan_in, fan_out) (a leading step axis for per-step stacks), LeCun normal as flax's
    default and MLPField's (a normal truncated at two standard deviations, variance 1 / fan_in), every other
    float leaf (biases, probes) 0, integer leaves (NFE counters) -1. Only for models of Linear layers."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng([seed, 11])

    def draw(path, leaf):
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        names = [n for n in names if n != "value"]
        if not np.issubdtype(leaf.dtype, np.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        if names[-1] != "kernel":
            return jnp.asarray(np.zeros(leaf.shape, leaf.dtype))
        z = rng.standard_normal(leaf.shape)
        while np.any(bad := np.abs(z) > 2):
            z[bad] = rng.standard_normal(int(bad.sum()))
        return jnp.asarray((z * np.sqrt(1.0 / leaf.shape[-2]) / 0.87962566103423978).astype(leaf.dtype))

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


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
    # the optimisers' states start as zeros (moments, step counts): built from their shapes, not by tx.init,
    # whose eager ops compile one small program per leaf
    zeros = jax.tree.map(lambda a: jnp.asarray(np.zeros(a.shape, a.dtype)), jax.eval_shape(tx.init, params))
    opt_state = zeros if optim in ZERO_STATE else jax.jit(tx.init)(params)
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
    x, y = data.x_train, data.y_train
    state, start = s.state, time.perf_counter()
    records, measured, epoch_losses = [], [], []
    for epoch in range(epochs):
        batch = []
        for idx in datasets.batches(len(x), s.run.optim.batch_size, seed=seed, epoch=epoch):
            state, metrics = train_step(state, x[idx], y[idx])
            batch.append({k: metrics[k] for k in ("loss", "nfe", "nfe_backward")})
        batch = jax.device_get(batch)
        records += batch
        epoch_losses.append(float(np.mean([r["loss"] for r in batch])))
        last = epoch == epochs - 1
        if measure is not None and (last or (every and (epoch + 1) % every == 0)):
            measured.append((epoch + 1, measure(model_of(s, state))))
    column = lambda key, dtype: np.asarray([r[key] for r in records], dtype)
    return Fit(model_of(s, state), column("loss", np.float64), column("nfe", np.int64),
               column("nfe_backward", np.int64), np.asarray(epoch_losses), tuple(measured),
               time.perf_counter() - start)


def model_of(s: loop.Setup, state) -> nnx.Module:
    """The model of a train state (params, rest, optimiser state) of setup s."""
    params, rest, _ = state
    return nnx.merge(s.graphdef, params, rest)


def epoch_mean(values: np.ndarray, epochs: int) -> np.ndarray:
    """A per-step record (steps,) as the mean of each epoch (epochs,) (steps = epochs * steps per epoch)."""
    return np.asarray(values, np.float64).reshape(epochs, -1).mean(axis=1)
