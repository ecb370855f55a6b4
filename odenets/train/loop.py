"""Training: one jitted train step, evaluation, metrics, checkpoints, resume, data parallelism.

`fit(cfg, run_dir)` trains the model a config describes and writes everything into run_dir:

    config.yaml       the resolved config          metrics.jsonl   one record per log / eval
    tensorboard/      event files                  checkpoints/    orbax, one per epoch (2 kept)
    figures/*.png     training curves              summary.json    final numbers
    report.md         the run at a glance

The config is a dict with the groups data, model, integrator, gradient, optim, train and the
keys seed, name (odenets.train.config holds its defaults and checks), or a parsed RunConfig.
Everything is validated before any training. Data parallelism: the batch is sharded over all
devices (jax.sharding, axis "data"), parameters replicated; with `train.distributed: true` the
process first joins the others (odenets.train.distributed): the mesh then spans every process'
devices, each process places its rows of the global batch, and process 0 writes the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from odenets import data as datasets
from odenets import models
from odenets._abstract import final
from odenets.train import distributed
from odenets.train.checkpoints import Checkpoints
from odenets.train.config import RunConfig, build_model, build_trajectory_model
from odenets.train.metrics import MetricsLog, read_metrics

LOSSES = {
    "classification": lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y),
    "regression": lambda pred, y: jnp.sum((pred - y.reshape(pred.shape)) ** 2, axis=-1),
    # the mean squared error over the T observed states (B, T, D) of each trajectory
    "trajectory": lambda path, y: jnp.mean((path - y) ** 2, axis=(1, 2)),
}
PLOTTED_TRAJECTORIES = 4  # test trajectories drawn in figures/trajectories.png


X0_CHECK = "x0 has non-finite entries"  # odeint's runtime check, raised through a JAX callback


@final
class _QuietX0Check(logging.Filter):
    """Drops JAX's log of a failed callback when the failure is odeint's x0 check: `fit` reports
    it as a divergence instead (any other callback failure is logged as before)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and X0_CHECK in str(record.exc_info[1]))


@final
class _CtrlC:
    """Ctrl-C during training is acted on between steps, never inside one: the first SIGINT is
    noted and `check()` raises KeyboardInterrupt after the step (and its checkpoint) in flight, so
    an interrupt never lands inside XLA, orbax's asynchronous save or the metrics writer. A second
    Ctrl-C stops at once. Off the main thread (where Python allows no handler) it does nothing."""

    def __init__(self):
        self.requested, self._previous = False, None

    def install(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@final
class Diverged(RuntimeError):
    """The loss, the parameters or an ODE state became NaN or Inf at training step `step`; the
    metrics so far and the last good checkpoint are kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@final
class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, after `step` of `total` steps; `checkpoint` is the step of the last
    checkpoint (None: none yet), where a resume starts."""

    def __init__(self, step: int, epoch: int, total: int, checkpoint: int | None):
        super().__init__(f"interrupted at step {step} of {total} (epoch {epoch})")
        self.step, self.epoch, self.total, self.checkpoint = step, epoch, total, checkpoint


@final
@dataclasses.dataclass
class Setup:
    """Everything built from a config before the first step."""

    cfg: dict  # run.to_dict(): what config.yaml records
    run: RunConfig
    data: datasets.Dataset
    graphdef: nnx.GraphDef
    state: tuple  # (params, rest, opt_state)
    tx: optax.GradientTransformation
    mesh: Mesh
    steps_per_epoch: int
    total_steps: int
    n_params: int


def setup(cfg: dict | RunConfig) -> Setup:
    """Validate the config and build data, model, optimiser and device mesh (no training)."""
    run = cfg if isinstance(cfg, RunConfig) else RunConfig.parse(cfg)
    if run.data.task not in LOSSES:  # before any data is generated or read
        raise ValueError(f"`odenets run` trains on tasks {', '.join(LOSSES)}; dataset {run.data.name!r} is a "
                         f"{run.data.task!r} task")
    trajectory = run.data.task == "trajectory"
    if trajectory:  # a classifier family on time series: refused before the data is generated or read
        models.check_trajectories(run.model["family"], run.data.name)
    if run.train.distributed:  # before any JAX computation (loading data may run some)
        distributed.initialize(run.train)
    data = datasets.load(run.data, seed=run.seed)
    devices = jax.devices()  # every process' devices
    batch = run.optim.batch_size
    if batch % len(devices):
        raise ValueError(f"optim.batch_size={batch} must be divisible by the {len(devices)} devices")
    if batch > len(data.x_train):
        raise ValueError(f"optim.batch_size={batch} exceeds the {len(data.x_train)} training examples")
    if trajectory:
        model = build_trajectory_model(run, data.input_shape[0], data.ts)
    else:
        model = build_model(run, data.input_shape, data.output_dim)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    steps_per_epoch = len(data.x_train) // batch
    total = steps_per_epoch * run.optim.epochs
    tx = run.optim.transform(total)
    mesh = Mesh(np.array(devices), ("data",))
    state = distributed.replicate(mesh, (params, rest, tx.init(params)))
    return Setup(run.to_dict(), run, data, graphdef, state, tx, mesh, steps_per_epoch, total,
                 models.param_count(model))


def make_steps(s: Setup):
    """(train_step, eval_step), both jitted; the batch arrives sharded over the "data" axis."""
    loss_of = LOSSES[s.data.task]
    classify = s.data.task == "classification"
    trajectory = s.data.task == "trajectory"

    per_shard = distributed.per_shard(s.mesh, s.run.integrator)
    regularised = models.regularisation(nnx.merge(s.graphdef, *s.state[:2])) is not None

    @jax.jit
    def train_step(state, x, y):
        params, rest, opt_state = state

        def loss_fn(m, x, y):
            out = m(x)
            losses = loss_of(out, y)
            penalty = models.regularisation(m)  # the RNODE terms of the ODE blocks (None: not weighted)
            total = jnp.mean(losses) if penalty is None else jnp.mean(losses) + penalty
            return total, (out, losses)

        # gradients w.r.t. the nnx.Param leaves; the solver statistics the forward pass records come
        # back as updated model state (new_rest); per_shard: each device's shard, then one mean
        (total, (out, losses)), grads, new_rest = distributed.value_and_grad(
            loss_fn, s.graphdef, params, rest, x, y, s.mesh if per_shard else None,
            wrt=nnx.Any(nnx.Param, models.BackwardProbe))
        # the probes' gradients: adaptive blocks' backward evaluation counts, into their nfe_backward
        grads, counts = nnx.split_state(grads, nnx.Param, models.BackwardProbe)
        loss = jnp.mean(losses)  # the data loss (the test records' loss); total - loss: the RNODE penalty
        updates, opt_state = s.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
        stepped = nnx.merge(s.graphdef, params, new_rest)
        models.record_backward(stepped, counts)
        new_rest = nnx.split(stepped, nnx.Param, ...)[2]
        totals = models.stage_totals(stepped)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite, "nfe": totals["nfe"],
                   "nfe_backward": totals["nfe_backward"]}
        if regularised:
            metrics["rnode"] = total - loss
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
        if trajectory:  # for the relative L2 error ||path - y|| / ||y|| over the test set
            sums["squared_error"] = jnp.sum(jnp.sum((out - y) ** 2, axis=(1, 2)) * mask)
            sums["squared_norm"] = jnp.sum(jnp.sum(y**2, axis=(1, 2)) * mask)
        return sums

    return train_step, eval_step


def _shard(s: Setup, *arrays):
    return distributed.global_batch(s.mesh, *arrays)


def evaluate(s: Setup, eval_step, state) -> dict:
    x, y = s.data.x_test, s.data.y_test
    n, size, devices = len(x), s.run.train.eval_batch_size, len(s.mesh.devices.flat)
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
    if "squared_error" in totals:
        out["rel_error"] = math.sqrt(totals["squared_error"] / totals["squared_norm"])
    return out


def predict_trajectories(s: Setup, state, n: int = PLOTTED_TRAJECTORIES) -> dict:
    """{"ts": (T,), "y": (n, T, D), "pred": (n, T, D)} for the first n test trajectories."""
    # the replica on this process' first device (a multi-process state spans devices of other processes,
    # which an eager call cannot mix with this process' x); no copy through the host
    params, rest = jax.tree.map(lambda a: a.addressable_data(0), state[:2])
    x = s.data.x_test[:n]
    pred = nnx.merge(s.graphdef, params, rest)(jnp.asarray(x))
    return {"ts": np.asarray(s.data.ts), "y": np.asarray(s.data.y_test[:n]), "pred": np.asarray(pred)}


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


def fit(cfg: dict | RunConfig, run_dir: str | Path, *, resume: bool = False) -> dict:
    """Train as `cfg` says, writing the run directory; returns the summary (also summary.json).

    Raises Diverged when the loss, the parameters or an ODE state become non-finite, and
    Interrupted on Ctrl-C; both leave the run directory complete and resumable.
    """
    run_dir = Path(run_dir)
    s = setup(cfg)  # every error about the config comes from here, before anything is written
    from odenets.train.rundir import prepare, release, write_outputs

    primary = distributed.is_primary()  # process 0 writes the run directory; every process checks it
    prepare(run_dir, s.cfg, resume=resume, write=primary)
    distributed.sync("prepared")
    train_step, eval_step = make_steps(s)
    ckpt = Checkpoints(run_dir / "checkpoints")
    state, epoch0, step, wall = s.state, 0, 0, 0.0
    restored = ckpt.restore_latest(state) if resume else None
    if restored is not None:
        state, meta = restored
        state = distributed.replicate(s.mesh, state)
        epoch0, step, wall = meta["epoch"], meta["step"], meta["wall_time_s"]
    log = MetricsLog(run_dir, resume_step=step if resume else None) if primary else distributed.NoLog()
    tcfg, ocfg = s.run.train, s.run.optim
    x, y = s.data.x_train, s.data.y_train
    batch = ocfg.batch_size
    bar = _progress(tcfg.progress and primary, s.total_steps, step)
    status, last_finite, window, epoch, temp = "completed", None, [], epoch0, None
    stop = tcfg.stop_after_epochs
    adaptive = s.run.integrator is not None and s.run.integrator.adaptive
    timed = False  # the first step of this call fills jit's caches (~10x a step): its time is not a step time
    quiet, callback_log = _QuietX0Check(), logging.getLogger("jax._src.callback")
    callback_log.addFilter(quiet)

    def flush(window: list, step: int, epoch: int) -> None:
        """The window's mean as one train record: one device-to-host copy per log window."""
        if window:
            log.write(_train_record(jax.device_get(window), step, epoch + 1))  # counted from 1, as test records

    def diverged(what: str, loss: float, step: int, epoch: int) -> Diverged:
        flush(window, step - 1, epoch)
        log.write({"split": "train", "step": step, "epoch": epoch + 1, "loss": loss})
        kept = (f"The last good checkpoint is kept in {run_dir / 'checkpoints'}." if ckpt.latest_step() is not None
                else "No checkpoint had been written yet.")
        return Diverged(
            f"{what} at step {step} (epoch {epoch + 1}); last finite loss {last_finite}. {kept} Try a smaller "
            f"step size h (more steps) or learning rate, or an implicit (backward_euler, trapezoid) or adaptive "
            f"(dopri5, kvaerno5) integrator.", step)

    ctrl_c = _CtrlC().install()
    try:
        # compiles the train step: a Ctrl-C in the compile (the longest wait of a short run) is an Interrupted too
        temp = _temp_bytes(train_step, state, *_shard(s, x[:batch], y[:batch]))
        for epoch in range(epoch0, ocfg.epochs):
            if stop is not None and epoch - epoch0 >= stop:
                status = "stopped"
                break
            start, window = time.perf_counter(), []
            for idx in datasets.batches(len(x), batch, seed=s.run.seed, epoch=epoch):
                # read every step: a step after a divergence would run the solver on non-finite
                # states, so it must not be dispatched
                try:
                    began = time.perf_counter()
                    state, metrics = train_step(state, *_shard(s, x[idx], y[idx]))
                    metrics = dict(metrics)
                    finite = bool(metrics.pop("finite"))
                    loss = float(metrics["loss"])  # waits for the step: the time below is the step's
                    metrics["step_time_ms"] = 1e3 * (time.perf_counter() - began) if timed else None
                    timed = True
                except jax.errors.JaxRuntimeError as err:  # odeint's check of a solve's initial state
                    if X0_CHECK not in str(err):
                        raise
                    raise diverged("a solve's initial state became non-finite (odeint: x0 has non-finite entries)",
                                   math.nan, step + 1, epoch) from None
                step += 1
                if not math.isfinite(loss):
                    raise diverged(f"loss became {loss}", loss, step, epoch)
                last_finite = loss
                if not finite:
                    raise diverged("the parameters became non-finite in the update", loss, step, epoch)
                window.append(metrics)
                bar.update(1)
                shown: dict[str, Any] = (dict(nfe=int(metrics["nfe"]), ms=_fmt_ms(metrics["step_time_ms"]))
                                         if adaptive else {})
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch, **shown, refresh=False)
                if step % tcfg.log_every == 0:
                    flush(window, step, epoch)
                    window = []
                ctrl_c.check()
            flush(window, step, epoch)
            window = []
            seconds = time.perf_counter() - start
            wall += seconds
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == ocfg.epochs:
                record = {"split": "test", "step": step, "epoch": epoch + 1, **evaluate(s, eval_step, state),
                          **_solver_stats(s, state), "epoch_time_s": seconds,
                          "step_time_ms": 1e3 * seconds / s.steps_per_epoch,
                          "examples_per_s": s.steps_per_epoch * batch / seconds}
                log.write(record)
            ckpt.save(step, state, {"epoch": epoch + 1, "step": step, "wall_time_s": wall})
            ctrl_c.check()
    except Diverged as err:
        status, step = "diverged", err.step
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise Interrupted(step, epoch + 1, s.total_steps, ckpt.latest_step()) from None
    except BaseException:
        status = "interrupted"
        raise
    finally:
        try:
            callback_log.removeFilter(quiet)
            bar.close()
            log.close()
            ckpt.close()
            summary = _summary(s, run_dir, status, step, wall, temp)
            paths = None
            if primary and s.data.task == "trajectory" and status in ("completed", "stopped"):
                paths = predict_trajectories(s, state)
            if primary:
                write_outputs(run_dir, s.cfg, summary, trajectories=paths)
                release(run_dir)
        finally:
            ctrl_c.restore()
    return summary


def _train_record(window: list[dict], step: int, epoch: int) -> dict:
    """The window's means: loss (the data loss), grad_norm (accuracy), nfe and nfe_backward (forward
    and backward evaluations per step, as `models.stage_totals` sums them; -1 when unknown), rnode
    (with RNODE weights: the penalty the minimised loss adds) and step_time_ms (wall time of a
    train step, compilation excluded; absent when the window holds only the step that compiled)."""
    mean = {k: float(np.mean(v)) for k in window[0] if (v := [w[k] for w in window if w[k] is not None])}
    return {"split": "train", "step": step, "epoch": epoch, **mean}


def _fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f}"


def _summary(s: Setup, run_dir: Path, status: str, step: int, wall: float, temp) -> dict:
    records = read_metrics(run_dir)
    test = [r for r in records if r["split"] == "test"]
    last = test[-1] if test else {}
    fit_error = {}
    if s.data.task == "trajectory":  # the final test fit: MSE over the observed states, ||path - y|| / ||y||
        fit_error = {"test_mse": last.get("loss"), "test_rel_error": last.get("rel_error")}
    return {
        "name": s.run.name,
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
        "model": s.cfg["model"]["family"],
        "integrator": None if s.run.integrator is None else s.run.integrator.name,
        "gradient": None if s.run.gradient is None else s.run.gradient.name,
        "data": s.run.data.name,
        **fit_error,
    }


def _progress(enabled: bool, total: int, initial: int):
    from tqdm.std import tqdm  # a text bar (tqdm.auto would want ipywidgets in a notebook, and warn without)

    # disable=None: no bar when the output is not a terminal (logs, CI); True: never
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False,
                disable=None if enabled else True, mininterval=0.5)
