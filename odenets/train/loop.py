"""Training: one jitted train step, evaluation, metrics, checkpoints, resume, data parallelism.

`fit(cfg, run_dir)` trains the model a config describes and writes everything into run_dir:

    config.yaml       the resolved config          metrics.jsonl   one record per log / eval
    tensorboard/      event files                  checkpoints/    orbax, one per epoch (2 kept)
    figures/*.png     training curves              summary.json    final numbers
    report.md         the run at a glance

The config is a plain dict with the groups seed, data, model, integrator, gradient, optim,
train (see configs/). Everything is validated before any training. Data parallelism: the
batch is sharded over all local devices (jax.sharding, axis "data"), parameters replicated;
with `train.distributed: true` jax.distributed.initialize() first joins the other hosts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import odenets as on
from odenets import data as datasets
from odenets import models
from odenets import validate
from odenets.train.checkpoints import Checkpoints
from odenets.train.metrics import MetricsLog, read_metrics
from odenets.train.optim import check_optim, make_optimizer

TRAIN_DEFAULTS = {"log_every": 50, "eval_every": 1, "stop_after_epochs": None, "distributed": False,
                  "progress": True, "eval_batch_size": 500}
TRAIN_KEYS = tuple(TRAIN_DEFAULTS)
TOP_KEYS = ("seed", "data", "model", "integrator", "gradient", "optim", "train", "name")
LOSSES = {
    "classification": lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y),
    "regression": lambda pred, y: jnp.sum((pred - y.reshape(pred.shape)) ** 2, axis=-1),
}


class Diverged(RuntimeError):
    """The loss became NaN or Inf at training step `step`; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class Setup:
    """Everything built from a config before the first step."""

    cfg: dict
    data: datasets.Dataset
    graphdef: nnx.GraphDef
    state: tuple  # (params, rest, opt_state)
    tx: optax.GradientTransformation
    mesh: Mesh
    steps_per_epoch: int
    total_steps: int
    n_params: int


def _options(group: dict, key: str = "name") -> tuple[str, dict]:
    group = dict(group)
    return group.pop(key), group


def _check_keys(cfg: dict, valid, where: str):
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; valid keys: {', '.join(valid)}")


def setup(cfg: dict) -> Setup:
    """Validate the config and build data, model, optimiser and device mesh (no training)."""
    _check_keys(cfg, TOP_KEYS, "top-level config")
    train = {**TRAIN_DEFAULTS, **cfg.get("train", {})}
    _check_keys(train, TRAIN_KEYS, "train")
    for key in ("log_every", "eval_every", "eval_batch_size"):
        validate.integer(f"train.{key}", train[key], 1)
    if train["stop_after_epochs"] is not None:
        validate.integer("train.stop_after_epochs", train["stop_after_epochs"], 1)
    cfg = {**cfg, "train": train}
    check_optim(cfg["optim"])
    integ_name, integ_opts = _options(cfg["integrator"])
    grad_name, grad_opts = _options(cfg["gradient"])
    integrator = on.integrator(integ_name, **integ_opts)
    gradient = on.gradient(grad_name, **grad_opts)
    data_name, data_opts = _options(cfg["data"])
    builder = datasets.dataset(data_name, **data_opts)
    if builder.task not in LOSSES:  # before any data is generated or read
        raise ValueError(f"`odenets run` trains on tasks {', '.join(LOSSES)}; dataset {data_name!r} is a "
                         f"{builder.task!r} task")
    data = datasets.load(builder, seed=cfg.get("seed", 0))
    if train["distributed"]:
        jax.distributed.initialize()
    devices = jax.devices()
    batch = cfg["optim"]["batch_size"]
    if batch % len(devices):
        raise ValueError(f"optim.batch_size={batch} must be divisible by the {len(devices)} devices")
    if batch > len(data.x_train):
        raise ValueError(f"optim.batch_size={batch} exceeds the {len(data.x_train)} training examples")
    family, model_opts = _options(cfg["model"], "family")
    takes = models.family(family).options  # families that are not ODEs take no integrator
    solver = {k: v for k, v in (("integrator", integrator), ("gradient", gradient)) if k in takes}
    try:
        model = models.build(family, input_shape=tuple(data.input_shape), num_classes=data.output_dim,
                             rngs=nnx.Rngs(cfg.get("seed", 0)), **solver, **model_opts)
    except (ValueError, TypeError) as err:  # say which config group the bad key lives in
        raise type(err)(f"model config (model.*): {err}") from None
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    steps_per_epoch = len(data.x_train) // batch
    total = steps_per_epoch * cfg["optim"]["epochs"]
    tx = make_optimizer(cfg["optim"], total)
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    state = jax.device_put((params, rest, tx.init(params)), replicated)
    return Setup(cfg, data, graphdef, state, tx, mesh, steps_per_epoch, total, models.param_count(model))


def make_steps(s: Setup):
    """(train_step, eval_step), both jitted; the batch arrives sharded over the "data" axis."""
    loss_of = LOSSES[s.data.task]
    classify = s.data.task == "classification"

    @jax.jit
    def train_step(state, x, y):
        params, rest, opt_state = state
        model = nnx.merge(s.graphdef, params, rest)

        def loss_fn(m):
            out = m(x)
            return jnp.mean(loss_of(out, y)), out

        # nnx.value_and_grad: gradients w.r.t. the nnx.Param leaves; the solver statistics the
        # forward pass records come back as updated model state
        (loss, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        updates, opt_state = s.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if classify:
            metrics["accuracy"] = jnp.mean(jnp.argmax(out, -1) == y)
        return (params, new_rest, opt_state), metrics

    @jax.jit
    def eval_step(state, x, y, mask):
        params, rest, _ = state
        out = nnx.merge(s.graphdef, params, rest)(x)
        sums = {"loss": jnp.sum(loss_of(out, y) * mask)}
        if classify:
            sums["correct"] = jnp.sum((jnp.argmax(out, -1) == y) * mask)
        return sums

    return train_step, eval_step


def _shard(s: Setup, *arrays):
    sharding = NamedSharding(s.mesh, P("data"))
    return [jax.device_put(a, sharding) for a in arrays]


def evaluate(s: Setup, eval_step, state) -> dict:
    x, y = s.data.x_test, s.data.y_test
    n, size, devices = len(x), s.cfg["train"]["eval_batch_size"], len(s.mesh.devices.flat)
    size = max(devices, size - size % devices)
    totals: dict[str, float] = {}
    for start in range(0, n, size):
        xb, yb = x[start : start + size], y[start : start + size]
        pad = (-len(xb)) % devices
        mask = np.concatenate([np.ones(len(xb), np.float32), np.zeros(pad, np.float32)])
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, 0)])
            yb = np.concatenate([yb, np.repeat(yb[-1:], pad, 0)])
        for k, v in eval_step(state, *_shard(s, xb, yb, mask)).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    out = {"loss": totals["loss"] / n}
    if "correct" in totals:
        out["accuracy"] = totals["correct"] / n
    return out


def _solver_stats(s: Setup, state) -> dict:
    params, rest, _ = state
    stats = models.solver_stats(nnx.merge(s.graphdef, params, rest))
    return {"nfe_forward": stats["nfe"], "nfe_backward": stats["nfe_backward"]}


def _temp_bytes(train_step, state, x, y) -> int | None:
    try:
        memory = train_step.lower(state, x, y).compile().memory_analysis()
        return int(memory.temp_size_in_bytes)
    except Exception:  # backends without memory analysis
        return None


def fit(cfg: dict, run_dir: str | Path, *, resume: bool = False) -> dict:
    """Train as `cfg` says, writing the run directory; returns the summary (also summary.json)."""
    run_dir = Path(run_dir)
    s = setup(cfg)  # every error about the config comes from here, before anything is written
    from odenets.train.rundir import prepare, release, write_outputs

    prepare(run_dir, s.cfg, resume=resume)
    train_step, eval_step = make_steps(s)
    ckpt = Checkpoints(run_dir / "checkpoints")
    state, epoch0, step, wall = s.state, 0, 0, 0.0
    restored = ckpt.restore_latest(state) if resume else None
    if restored is not None:
        state, meta = restored
        state = jax.device_put(state, NamedSharding(s.mesh, P()))
        epoch0, step, wall = meta["epoch"], meta["step"], meta["wall_time_s"]
    log = MetricsLog(run_dir, resume_step=step if resume else None)
    tcfg, ocfg, seed = s.cfg["train"], s.cfg["optim"], s.cfg.get("seed", 0)
    x, y = s.data.x_train, s.data.y_train
    batch = ocfg["batch_size"]
    temp = _temp_bytes(train_step, state, *_shard(s, x[:batch], y[:batch]))
    bar = _progress(tcfg["progress"], s.total_steps, step)
    status, last_finite = "completed", None
    stop = tcfg["stop_after_epochs"]

    def diverged(loss: float, step: int, epoch: int) -> Diverged:
        log.write({"split": "train", "step": step, "epoch": epoch + 1, "loss": loss})
        kept = (f"The last good checkpoint is kept in {run_dir / 'checkpoints'}." if ckpt.latest_step() is not None
                else "No checkpoint had been written yet.")
        return Diverged(
            f"loss became {loss} at step {step} (epoch {epoch + 1}); last finite loss {last_finite}. {kept} Try a "
            f"smaller step size h (more steps) or learning rate, or an implicit (backward_euler, trapezoid) or "
            f"adaptive (dopri5, kvaerno5) integrator.", step)

    def flush(window: list, step: int, epoch: int) -> None:
        """The window's mean as one train record: one device-to-host copy per log window."""
        log.write(_train_record(jax.device_get(window), step, epoch + 1))  # counted from 1, as test records

    try:
        for epoch in range(epoch0, ocfg["epochs"]):
            if stop is not None and epoch - epoch0 >= stop:
                status = "stopped"
                break
            start, window = time.perf_counter(), []
            for idx in datasets.batches(len(x), batch, seed=seed, epoch=epoch):
                state, metrics = train_step(state, *_shard(s, x[idx], y[idx]))
                # the loss is read every step: a step after a divergence would run the solver on
                # non-finite states (odeint's x0 check fails there), so it must not be dispatched
                loss = float(metrics["loss"])
                step += 1
                if not math.isfinite(loss):
                    raise diverged(loss, step, epoch)
                last_finite = loss
                window.append(metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch, refresh=False)
                if step % tcfg["log_every"] == 0:
                    flush(window, step, epoch)
                    window = []
            if window:
                flush(window, step, epoch)
            seconds = time.perf_counter() - start
            wall += seconds
            if (epoch + 1) % tcfg["eval_every"] == 0 or epoch + 1 == ocfg["epochs"]:
                record = {"split": "test", "step": step, "epoch": epoch + 1, **evaluate(s, eval_step, state),
                          **_solver_stats(s, state), "epoch_time_s": seconds,
                          "step_time_ms": 1e3 * seconds / s.steps_per_epoch,
                          "examples_per_s": s.steps_per_epoch * batch / seconds}
                log.write(record)
            ckpt.save(step, state, {"epoch": epoch + 1, "step": step, "wall_time_s": wall})
    except Diverged as err:
        status, step = "diverged", err.step
        raise
    except BaseException:
        status = "interrupted"
        raise
    finally:
        bar.close()
        log.close()
        ckpt.close()
        summary = _summary(s, run_dir, status, step, wall, temp)
        write_outputs(run_dir, s.cfg, summary)
        release(run_dir)
    return summary


def _train_record(window: list[dict], step: int, epoch: int) -> dict:
    mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    return {"split": "train", "step": step, "epoch": epoch, **mean}


def _summary(s: Setup, run_dir: Path, status: str, step: int, wall: float, temp) -> dict:
    records = read_metrics(run_dir)
    test = [r for r in records if r["split"] == "test"]
    last = test[-1] if test else {}
    return {
        "name": s.cfg.get("name"),
        "status": status,
        "test_accuracy": last.get("accuracy"),
        "test_loss": last.get("loss"),
        "params": s.n_params,
        "wall_time_s": wall,
        "epochs": last.get("epoch", 0),
        "steps": step,
        "nfe_forward": last.get("nfe_forward"),
        "nfe_backward": last.get("nfe_backward"),
        "examples_per_s": last.get("examples_per_s"),
        "train_step_temp_bytes": temp,
        "devices": len(s.mesh.devices.flat),
        "model": s.cfg["model"].get("family"),
        "integrator": s.cfg["integrator"]["name"],
        "gradient": s.cfg["gradient"]["name"],
        "data": s.cfg["data"]["name"],
    }


def _progress(enabled: bool, total: int, initial: int):
    from tqdm.auto import tqdm

    # disable=None: no bar when the output is not a terminal (logs, CI); True: never
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False,
                disable=None if enabled else True, mininterval=0.5)
