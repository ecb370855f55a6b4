"""The trajectory task: a Neural ODE fitted to observed time series by `fit` / `odenets run`."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from scipy.linalg import expm

import odenets.models as models
from odenets.train.loop import fit

SPIRAL = {"name": "spiral_ode", "n_train": 32, "n_test": 16, "num_times": 20, "t_end": 1.0}
LINEAR = np.array([[-0.1, -1.0], [1.0, -0.1]])  # a damped rotation: eigenvalues -0.1 +- i


def config(data, *, epochs=15, lr=3e-2, batch_size=8, **model):
    return {
        "data": data,
        "model": {"family": "node", "width": 32, "depth": 2, "time": False, **model},
        "optim": {"name": "adam", "lr": lr, "batch_size": batch_size, "epochs": epochs},
        "train": {"progress": False, "log_every": 1000},
    }


def evaluations(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "test"]


def linear_npz(path, ts, *, n_train=64, n_test=16, seed=0):
    """Trajectories of y' = LINEAR y at ts: y(t) = expm(LINEAR t) y0."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.standard_normal((n, 2))
        arrays[f"x_{split}"] = x.astype(np.float32)
        arrays[f"y_{split}"] = np.stack([x @ expm(LINEAR * t).T for t in ts], axis=1).astype(np.float32)
    np.savez(path, ts=ts, **arrays)
    return path


def test_spiral_fit_improves_and_beats_the_constant_path(tmp_path):
    from odenets import data

    summary = fit(config(SPIRAL), tmp_path / "run")
    records = evaluations(tmp_path / "run")
    first, last = records[0]["loss"], records[-1]["loss"]
    assert last < 0.6 * first  # the test MSE falls by a clear margin
    ds = data.load(**SPIRAL)
    constant = float(np.mean((ds.y_test - ds.x_test[:, None]) ** 2))  # predicting x(t) = x(0)
    assert last < 0.3 * constant
    assert summary["test_mse"] == pytest.approx(last)
    assert 0 < summary["test_rel_error"] < 1
    assert all("rel_error" in r for r in records)
    assert (tmp_path / "run" / "figures" / "trajectories.png").stat().st_size > 10_000
    report = (tmp_path / "run" / "report.md").read_text()
    assert "figures/trajectories.png" in report and "relative L2 error" in report


@pytest.mark.slow  # 9 s: a trajectory fit through the CLI on a user npz
def test_a_linear_system_from_a_user_npz_is_recovered(tmp_path):
    """Non-uniform observation times (one solve per interval): the learned field F approaches
    A x, so the fitted paths and F itself are close to the truth."""
    rng = np.random.default_rng(1)
    ts = np.concatenate([[0.0], np.sort(rng.uniform(0.05, 3.0, 11))])
    path = linear_npz(tmp_path / "linear.npz", ts)
    cfg = config({"name": "npz", "path": str(path), "task": "trajectory"}, epochs=60, lr=2e-2, batch_size=16)
    summary = fit(cfg, tmp_path / "run")
    assert summary["test_rel_error"] < 0.15
    # the field itself on the region the data covers
    from flax import nnx

    from odenets.train.checkpoints import Checkpoints
    from odenets.train.loop import setup

    s = setup(cfg)
    state, _ = Checkpoints(tmp_path / "run" / "checkpoints").restore_latest(s.state)
    model = nnx.merge(s.graphdef, state[0], state[1])
    x = jnp.asarray(np.random.default_rng(2).standard_normal((256, 2)) * 0.7, jnp.float32)
    error = np.linalg.norm(model.field(0.0, x) - x @ LINEAR.T) / np.linalg.norm(x @ LINEAR.T)
    assert error < 0.1


def test_uniform_and_interval_solves_agree():
    """One save="all" solve over a uniform grid equals the interval-by-interval solve of the same
    field (the path taken for non-uniform times) at the observation times."""
    ts = np.linspace(0.0, 2.0, 6)
    uniform = models.trajectory("node", dim=2, ts=ts, width=8, depth=3)
    intervals = models.trajectory("node", dim=2, ts=ts, width=8, depth=3)  # same seed: same parameters
    intervals.uniform = False
    assert not models.trajectory("node", dim=2, ts=ts**1.1, width=8, depth=3).uniform
    x = jnp.array([[1.0, 0.5], [-0.3, 0.2]])
    a = uniform(x)
    assert a.shape == (2, 6, 2) and np.array_equal(a[:, 0], x)
    np.testing.assert_allclose(intervals(x), a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", [n for n in models.family.names() if models.family.get(n).takes_trajectories])
def test_every_trajectory_family_starts_at_the_data_and_observes_the_state(family):
    ts = np.array([0.0, 0.3, 0.5, 1.5])
    model = models.trajectory(family, dim=3, ts=ts, width=8, depth=2)
    x = jnp.arange(6.0).reshape(2, 3) / 6
    path = model(x)
    assert path.shape == (2, 4, 3) and np.array_equal(path[:, 0], x)
    assert models.solver_stats(model)["nfe"] == 3 * 2 * 4  # intervals x steps x RK4 stages
    with pytest.raises(ValueError, match=r"takes initial states \(B, 3\), got shape \(2, 2\)"):
        model(x[:, :2])


def test_a_classifier_family_is_refused_before_the_data_is_built(tmp_path, monkeypatch):
    from odenets.data.trajectories import Robertson

    def never(self, seed):
        raise AssertionError("the dataset was built before the model family was checked")

    monkeypatch.setattr(Robertson, "build", never)
    cfg = config({"name": "robertson"})
    cfg["model"] = {"family": "resnet"}
    with pytest.raises(ValueError, match=r"trajectory data \(dataset 'robertson'\) needs a Neural ODE family: "
                                         r"model=node or model=anode"):
        fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: {**a, "ts": a["ts"][:-1]},
         r"linear.npz: 7 observation times 'ts' \(7,\), so 'y_train' must have shape \(N, T, D\) with T = 7 .*"
         r"got 'x_train' \(8, 2\) and 'y_train' \(8, 8, 2\)"),
        (lambda a: {**a, "ts": a["ts"][[0, 2, 1, 3, 4, 5, 6, 7]]},
         r"linear.npz: the observation times 'ts' \(shape \(8,\)\) must be strictly increasing, but ts\[2\] = "
         r"0.2 follows ts\[1\] = 0.4"),
        (lambda a: {**a, "ts": a["ts"][:, None]}, r"linear.npz: the observation times 'ts' must be a 1-D array"),
    ],
)
def test_a_bad_trajectory_npz_is_refused_naming_the_file(tmp_path, change, match):
    path = linear_npz(tmp_path / "good.npz", np.linspace(0.0, 1.4, 8), n_train=8, n_test=4)
    with np.load(path) as archive:
        arrays = change(dict(archive))
    np.savez(tmp_path / "linear.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        fit(config({"name": "npz", "path": str(tmp_path / "linear.npz"), "task": "trajectory"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a Dopri5 + Adjoint fit (11 s); test_nfe_backward trains one in the default suite
def test_dopri5_with_the_adjoint_trains(tmp_path):
    cfg = config({**SPIRAL, "n_train": 16, "n_test": 8}, epochs=3)
    cfg |= {"integrator": {"name": "dopri5"}, "gradient": {"name": "adjoint"}}
    summary = fit(cfg, tmp_path / "run")
    records = evaluations(tmp_path / "run")
    assert summary["status"] == "completed" and np.isfinite(summary["test_mse"])
    assert summary["nfe_forward"] > 0 and records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = config({**SPIRAL, "n_train": 16, "n_test": 8}, epochs=4)
    whole = fit(cfg, tmp_path / "whole")
    cfg["train"]["stop_after_epochs"] = 2
    assert fit(cfg, tmp_path / "part")["status"] == "stopped"
    cfg["train"]["stop_after_epochs"] = None
    resumed = fit(cfg, tmp_path / "part", resume=True)
    assert resumed["test_mse"] == pytest.approx(whole["test_mse"], rel=1e-6)


@pytest.mark.slow
def test_odenets_run_data_spiral_ode_trains_a_neural_ode(tmp_path):
    """The bare command of the README: no model chosen, trajectory data -> node; its report shows the fit."""
    from odenets import cli

    cli.main(["run", "data=spiral_ode", "data.n_train=32", "data.n_test=8", "optim.epochs=1",
              "optim.batch_size=16",
              f"hydra.run.dir={tmp_path}"])
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["family"] == "node"
    assert (tmp_path / "figures" / "trajectories.png").exists()
    assert "trajectories.png" in (tmp_path / "report.md").read_text()
