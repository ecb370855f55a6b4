"""Multi-process training, run for real on this machine: P processes of `odenets run experiment=toy`, one CPU
device each, joined through a coordinator on localhost (train.distributed=true), train as one data-parallel run
over the P-device mesh. The loss of a batch is the mean over the global batch however it is split, so the
P-process run must equal the one-process run up to summation order (1e-5 on every logged loss, gradient norm
and accuracy and on every leaf of the final state), and a P-process run stopped after some epochs
(train.stop_after_epochs) and resumed from its checkpoint (by as many processes, or fewer) must end where the
uninterrupted run ends.

The slow tests start real processes (the coordinator, gloo collectives between them); the fast ones check the
train.* keys that join a run before anything starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odenets.train import distributed
from odenets.train.config import RunConfig, TrainConfig
from odenets.train.rundir import check_resumable

ROOT = Path(__file__).resolve().parents[1]
RUN = ["experiment=toy", "optim.epochs=4", "train.log_every=1", "train.progress=false"]  # 5 steps an epoch
STOP = 2  # epochs before the stop; the resume trains the other two
TOL = 1e-5
COMPARED = ("loss", "grad_norm", "accuracy")
LAUNCH_TIMEOUT = 600  # seconds for all processes of one launch (two shared cores: compiles run side by side)


# ---- the train.* keys (fast) ------------------------------------------------------------------------------


def test_defaults_leave_the_processes_to_jax():
    train = TrainConfig()
    assert (train.distributed, train.coordinator_address, train.num_processes, train.process_id) == \
        (False, None, None, None)
    assert TrainConfig(distributed=True).num_processes is None  # JAX detects Slurm / Open MPI / TPU
    full = TrainConfig(distributed=True, coordinator_address="node001:7777", num_processes=4, process_id=3)
    assert full.process_id == 3


@pytest.mark.parametrize("train, named", [
    ({"coordinator_address": "localhost"}, "train.coordinator_address='localhost'"),
    ({"coordinator_address": "localhost:0"}, "train.coordinator_address='localhost:0'"),
    ({"coordinator_address": ":1234"}, "train.coordinator_address=':1234'"),
    ({"coordinator_address": 1234}, "train.coordinator_address=1234"),
    ({"num_processes": 0}, "train.num_processes=0"),
    ({"num_processes": 2, "process_id": 2}, "train.process_id=2"),
    ({"process_id": -1}, "train.process_id=-1"),
    ({"num_processes": True}, "train.num_processes=True"),
])
def test_bad_keys_are_refused_by_name(train, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        RunConfig.parse({"train": {"distributed": True, **train}})


def test_joining_keys_need_distributed():
    named = r"train.num_processes=2, train.process_id=0 joins .* only with train.distributed=true"
    with pytest.raises(ValueError, match=named):
        RunConfig.parse({"train": {"num_processes": 2, "process_id": 0}})


def test_a_resume_may_change_the_processes():
    saved = RunConfig.parse({}).to_dict()
    joined = {**saved, "train": {**saved["train"], "distributed": True, "coordinator_address": "localhost:1234",
                                 "num_processes": 4, "process_id": 1}}
    check_resumable(saved, joined, Path("config.yaml"))  # nothing refused
    with pytest.raises(ValueError, match="seed"):
        check_resumable(saved, {**joined, "seed": 1}, Path("config.yaml"))


# ---- the per-shard gradient against a hand computation (one process, several CPU devices) ---------------------

DEVICES, B, D, H = 4, 8, 3, 0.5  # B rows over DEVICES devices; one Euler step of size H


def per_shard_gradient() -> dict:
    """`distributed.value_and_grad` over a DEVICES-device mesh (shard by shard, and as one XLA-partitioned program)
    for the model x -> x1 = x + H x A^T (one Euler step of dx/dt = A x through `odeint`) and the loss
    L = (1/B) sum_i ||x1_i - y_i||^2, whose gradient is dL/dA = (2H/B) R^T X with R = X1 - Y. Run in its own
    process (`python tests/test_distributed.py`): the devices must be asked for before JAX starts."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import Mesh

    import odenets as on
    from odenets.train import distributed

    jax.config.update("jax_enable_x64", True)

    class Linear(nnx.Module):
        def __init__(self, a):
            self.a = nnx.Param(jnp.asarray(a))

        def __call__(self, t, x):
            return x @ self.a[...].T

    class Model(nnx.Module):
        def __init__(self, a):
            self.field = Linear(a)

        def __call__(self, x):
            return on.odeint(self.field, x, 0.0, H, steps=1, integrator="euler").x

    def loss_fn(m, x, y):
        out = m(x)
        return jnp.mean(jnp.sum((out - y) ** 2, -1)), out

    rng = np.random.default_rng(0)
    a, x, y = rng.normal(size=(D, D)), rng.normal(size=(B, D)), rng.normal(size=(B, D))
    x1 = x + H * x @ a.T
    loss, grad = np.mean(np.sum((x1 - y) ** 2, -1)), 2 * H / B * (x1 - y).T @ x  # by hand
    graphdef, params, rest = nnx.split(Model(a), nnx.Param, ...)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    state, batch = distributed.replicate(mesh, (params, rest)), distributed.global_batch(mesh, x, y)
    errors = {}
    for name, m in (("per_shard", mesh), ("global", None)):
        step = jax.jit(lambda p, r, x, y, m=m: distributed.value_and_grad(loss_fn, graphdef, p, r, x, y, m))
        (got_loss, out), grads, _ = step(*state, *batch)
        got_grad = np.asarray(grads["field"]["a"][...])
        errors[name] = [abs(float(got_loss) - loss), float(np.max(np.abs(got_grad - grad))),
                        float(np.max(np.abs(np.asarray(out) - x1)))]
    return {"devices": mesh.devices.size, "per_shard": distributed.per_shard(mesh, None), "errors": errors,
            "grad_scale": float(np.max(np.abs(grad)))}


def test_the_per_shard_gradient_is_the_global_batch_gradient():
    """Each device's gradient of its shard's mean loss, averaged once, equals the global batch's gradient by hand
    (loss, dL/dA and the gathered outputs to rounding), as does the one program XLA partitions over the batch."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
    done = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (got["devices"], got["per_shard"]) == (DEVICES, True) and got["grad_scale"] > 0.1
    for name, errors in got["errors"].items():
        assert max(errors) < 1e-12, (name, errors)


# ---- real processes (slow) ---------------------------------------------------------------------------------


def launch(run_dir: Path, processes: int, *extra: str) -> None:
    """`odenets run` in `processes` processes (one CPU device each) as one run in run_dir."""

    def argv(p: int, port: int) -> list[str]:
        join = [] if processes == 1 else ["train.distributed=true", f"train.num_processes={processes}",
                                          f"train.coordinator_address=localhost:{port}", f"train.process_id={p}"]
        return ["-m", "odenets.cli", "run", *RUN, f"hydra.run.dir={run_dir}", *join, *extra]

    distributed.run_local(argv, processes, timeout=LAUNCH_TIMEOUT, cwd=ROOT)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
    """Every leaf (parameters, optimiser moments, counters) of the newest checkpoint."""
    import orbax.checkpoint as ocp

    newest = max((d for d in (run_dir / "checkpoints").iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    return {k: np.asarray(v) for k, v in ocp.StandardCheckpointer().restore(newest / "state").items()}


def max_abs_diff(a: Path, b: Path) -> tuple[float, float]:
    """(max |difference| over the logged metrics, over the final state's leaves) of two run directories."""
    ra, rb = records(a), records(b)
    assert [(r["split"], r["step"]) for r in ra] == [(r["split"], r["step"]) for r in rb]
    logged = max(abs(x[k] - y[k]) for x, y in zip(ra, rb) for k in COMPARED if k in x)
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    return logged, max(float(np.max(np.abs(sa[k] - sb[k]))) for k in sa)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The uninterrupted one-process run with these overrides (made once per overrides)."""
    runs = {}

    def run(*solver: str) -> Path:
        if solver not in runs:
            runs[solver] = tmp_path_factory.mktemp("one") / "run"
            launch(runs[solver], 1, *solver)
        return runs[solver]

    return run


# the toy's RK4 takes the gradient shard by shard (one mean per step); Dopri5's steps follow the whole batch,
# so it runs as one program over the global batch (odenets.train.distributed.per_shard)
SOLVERS = {"rk4": (), "dopri5": ("integrator=dopri5", "gradient=adjoint")}


@pytest.mark.slow  # about 2, 3 and 2 min on two shared cores (the compiles of P processes run side by side)
@pytest.mark.parametrize("processes, resumed_by, solver", [(2, 2, "rk4"), (4, 2, "rk4"), (2, 2, "dopri5")])
def test_processes_train_as_one_run_and_resume(one_process, processes, resumed_by, solver, tmp_path):
    run_dir, overrides = tmp_path / "run", SOLVERS[solver]
    reference = one_process(*overrides)
    launch(run_dir, processes, f"train.stop_after_epochs={STOP}", *overrides)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs"], summary["devices"]) == ("stopped", STOP, processes)
    before = [r["epoch_time_s"] for r in records(run_dir) if r["split"] == "test"]
    launch(run_dir, resumed_by, "--resume", *overrides)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs"], summary["devices"]) == ("completed", 4, resumed_by)
    kept = [r["epoch_time_s"] for r in records(run_dir) if r["split"] == "test"][:STOP]
    assert kept == before  # resumed from the checkpoint: the first epochs' records are the first launch's
    logged, state = max_abs_diff(run_dir, reference)
    print(f"{solver}: {processes} processes, stopped, resumed by {resumed_by}, against one process: max |diff| "
          f"logged {logged:.2e}, final state {state:.2e}")
    assert logged <= TOL and state <= TOL
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("summary")) == ["summary.json"]


def test_the_slurm_recipe_composes():
    """configs/hydra/launcher/slurm.yaml extends the submitit launcher's Slurm config (with the cluster extra)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from odenets.train.groups import PRIMARY, store

    store()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(PRIMARY, overrides=["hydra/launcher=slurm", "experiment=toy", "train.distributed=true",
                                          "hydra.launcher.nodes=4"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and (launcher.nodes, launcher.tasks_per_node) == (4, 1)
    assert cfg.train.distributed and cfg.train.num_processes is None  # JAX reads them from Slurm


def test_outside_a_cluster_the_unset_keys_are_named():
    """train.distributed=true with nothing JAX can detect: refused with the train.* keys to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
    code = ("from odenets.train.config import TrainConfig; from odenets.train.distributed import initialize; "
            "initialize(TrainConfig(distributed=True, num_processes=2))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "set train.coordinator_address, train.process_id" in done.stderr, done.stderr[-2000:]


if __name__ == "__main__":  # test_the_per_shard_gradient_is_the_global_batch_gradient's own process
    print(json.dumps(per_shard_gradient()))
