"""Training, run directories, resume, data parallelism and the `odenets` CLI, on tiny configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odenets.train.loop import Diverged, fit
from odenets.train.metrics import read_metrics
from odenets.train.optim import SCHEDULES, make_optimizer

ROOT = Path(__file__).resolve().parent.parent
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "figures/curves.png", "summary.json", "report.md",
             "tensorboard")


def tiny(**changes):
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "moons", "n_train": 256, "n_test": 128, "noise": 0.1},
        "model": {"family": "node", "kind": "mlp", "width": 8, "depth": 3},
        "integrator": {"name": "rk4"},
        "gradient": {"name": "backprop"},
        "optim": {"name": "adam", "lr": 1e-2, "schedule": "constant", "batch_size": 32, "epochs": 3,
                  "clip_norm": 1.0},
        "train": {"log_every": 4, "progress": False},
    }
    for key, value in changes.items():
        group, _, leaf = key.partition(".")
        if leaf:
            cfg[group] = {**cfg[group], leaf: value}
        else:
            cfg[group] = value
    return cfg


def cli(*args, env=None, check=True):
    done = subprocess.run([sys.executable, "-m", "odenets.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_fit_learns_and_writes_the_run_directory(tmp_path):
    summary = fit(tiny(), tmp_path / "run")
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).exists(), name
    records = read_metrics(tmp_path / "run")
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]  # it learns
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.8
    assert summary["nfe_forward"] == 4 * 3  # rk4, 3 steps
    assert summary["steps"] == 3 * (256 // 32)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_nothing_is_overwritten(tmp_path):
    fit(tiny(**{"optim.epochs": 1}), tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run .* nothing is overwritten"):
        fit(tiny(**{"optim.epochs": 1}), tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run(tmp_path):
    full = fit(tiny(), tmp_path / "full")
    stopped = fit(tiny(**{"train.stop_after_epochs": 1}), tmp_path / "resumed")
    assert stopped["status"] == "stopped" and stopped["epochs"] == 1
    resumed = fit(tiny(), tmp_path / "resumed", resume=True)
    drop = ("epoch_time_s", "step_time_ms", "examples_per_s")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "resumed")) == strip(read_metrics(tmp_path / "full"))
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["test_loss"] == full["test_loss"]


def test_divergence_stops_with_the_step_and_a_hint(tmp_path):
    cfg = tiny(**{"optim.name": "sgd", "optim.lr": 1e30, "optim.clip_norm": None})
    hint = (r"loss became (nan|inf) at step 2 \(epoch 1\); last finite loss [0-9.]+\. No checkpoint had been "
            r"written yet\. Try a smaller step size")
    with pytest.raises(Diverged, match=hint):  # the step within the log window (log_every 4), exactly
        fit(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 2
    last = read_metrics(tmp_path / "run")[-1]
    assert last["step"] == 2 and not np.isfinite(last["loss"])


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"integrator": {"name": "rk5"}}, r"unknown integrator 'rk5'; valid choices: euler"),
        ({"data": {"name": "mnist2d"}}, r"unknown dataset 'mnist2d'; valid choices: mnist1d"),
        ({"model.family": "resnet2"}, r"unknown model family 'resnet2'; valid choices: resnet"),
        ({"model.kind": "conv2d"}, r"input_shape"),  # 2-D moons points cannot feed a conv2d stem
        ({"optim.name": "adamx"}, r"unknown optimizer \(optim.name\) 'adamx'; valid choices: adam"),
        ({"optim.batch_size": 0}, r"optim.batch_size must be > 0, got 0"),
        ({"optim.batch_size": 1000}, r"optim.batch_size=1000 exceeds the 256 training examples"),
        ({"train.log_evry": 3}, r"unknown train key\(s\) \['log_evry'\]; valid keys"),
        ({"train.log_every": 0}, r"train.log_every must be an int >= 1, got train.log_every=0"),
        ({"train.stop_after_epochs": 0}, r"train.stop_after_epochs must be an int >= 1"),
        ({"resume": True}, r"unknown top-level config key\(s\) \['resume'\]"),
    ],
)
def test_bad_configs_fail_before_anything_is_written(tmp_path, changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fit(tiny(**changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_trajectory_dataset_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from odenets.data.trajectories import Robertson

    def never(self, seed):
        raise AssertionError("the dataset was built before the task was checked")

    monkeypatch.setattr(Robertson, "build", never)
    with pytest.raises(ValueError, match=r"trains on tasks classification, regression; dataset 'robertson' "
                                         r"is a 'trajectory' task"):
        fit(tiny(data={"name": "robertson"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_optimizer_schedules_and_clipping():
    import jax.numpy as jnp

    tx = make_optimizer({"name": "sgd", "lr": 0.1, "schedule": "cosine", "batch_size": 1, "epochs": 1,
                         "clip_norm": 1.0, "warmup_steps": 0}, total_steps=10)
    params = {"w": jnp.zeros(3)}
    updates, _ = tx.update({"w": jnp.array([30.0, 40.0, 0.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.06, -0.08, 0.0], rtol=1e-6)  # clipped to norm 1, lr 0.1
    # the schedules' learning rates along the run: warm-up ramps, cosine decay to 0, one-cycle peak at 30%
    cosine, constant = SCHEDULES["cosine"](0.1, 10, 2), SCHEDULES["constant"](0.1, 10, 4)
    np.testing.assert_allclose([float(cosine(i)) for i in (0, 1, 2, 6, 10)], [0, 0.05, 0.1, 0.05, 0], atol=1e-7)
    np.testing.assert_allclose([float(constant(i)) for i in (0, 2, 4, 9)], [0.0, 0.05, 0.1, 0.1], atol=1e-7)
    onecycle = SCHEDULES["onecycle"](0.1, 10, 0)
    assert max(range(11), key=lambda i: float(onecycle(i))) == 3 and float(onecycle(3)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"optim.warmup_steps=5 is not used by schedule 'onecycle'"):
        make_optimizer({"name": "sgd", "lr": 0.1, "schedule": "onecycle", "warmup_steps": 5, "batch_size": 1,
                        "epochs": 1}, total_steps=10)


def test_cli_runs_end_to_end_and_reports(tmp_path):
    base = ["experiment=toy", "optim.epochs=2", "train.progress=false"]
    out = cli("run", *base, f"hydra.run.dir={tmp_path / 'a'}").stdout
    assert "| toy | node | rk4 | backprop |" in out and "figure:" in out
    # a sweep (Hydra multirun) over one axis, with another axis swapped
    sweep = tmp_path / "sweep"
    cli("run", "-m", *base, "integrator=heun", "gradient=adjoint,checkpoint", f"hydra.sweep.dir={sweep}")
    for name in RUN_FILES:
        assert (tmp_path / "a" / name).exists(), name
    runs = [json.loads((tmp_path / "sweep" / str(k) / "summary.json").read_text()) for k in (0, 1)]
    assert [(r["integrator"], r["gradient"], r["nfe_forward"]) for r in runs] == [
        ("heun", "adjoint", 8), ("heun", "checkpoint", 8)]
    report = cli("report", str(tmp_path / "a"), str(sweep / "0"), "--out", str(tmp_path / "cmp")).stdout
    # rows are labelled by the config keys that differ between the runs, with each run's status
    assert "gradient.name=backprop, integrator.name=rk4" in report and "gradient.name=adjoint" in report
    assert report.count("| completed |") == 2
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "comparison.png").exists()
    # an existing run is never overwritten; unknown keys and names are Hydra / odenets errors
    again = cli("run", *base, f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert again.returncode != 0 and "nothing is overwritten" in again.stderr
    bad = cli("run", *base, "model.widht=3", f"hydra.run.dir={tmp_path / 'c'}", check=False)
    assert bad.returncode != 0 and "widht" in bad.stderr
    bad = cli("run", *base, "integrator=rk5", f"hydra.run.dir={tmp_path / 'c'}", check=False)
    assert bad.returncode != 0 and "rk4" in bad.stderr  # Hydra lists the available options


def test_four_devices_match_one(tmp_path):
    """Data parallel over 4 forced host devices: the same losses as one device."""
    base = ["experiment=toy", "optim.epochs=2", "train.progress=false", "train.log_every=1"]
    cli("run", *base, f"hydra.run.dir={tmp_path / 'one'}")
    cli("run", *base, f"hydra.run.dir={tmp_path / 'four'}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    one, four = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "four"))
    assert (one["devices"], four["devices"]) == (1, 4)
    loss = lambda d: [r["loss"] for r in read_metrics(tmp_path / d) if r["split"] == "train"]  # noqa: E731
    np.testing.assert_allclose(loss("four"), loss("one"), rtol=1e-5)
    assert abs(one["test_accuracy"] - four["test_accuracy"]) <= 1 / 500
