"""Training, run directories, resume, divergence and config checks, on tiny configs (the CLI: test_cli.py)."""

import json

import numpy as np
import pytest
import yaml

from odenets.train import load_run
from odenets.train.loop import Diverged, fit
from odenets.train.metrics import read_metrics
from odenets.train.optim import SCHEDULES, optimizer

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
    # the run directory gives the trained model back: its test accuracy, computed here, is the summary's
    run = load_run(tmp_path / "run")
    assert run.step == summary["steps"] and run.summary == summary and run.config["data"]["name"] == "moons"
    predicted = np.argmax(np.asarray(run.model(run.data.x_test)), -1)
    assert np.mean(predicted == run.data.y_test) == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_load_run_names_what_a_directory_lacks(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml not found: .* is not an odenets run directory"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny()))
    with pytest.raises(FileNotFoundError, match="holds no checkpoint that restores"):
        load_run(tmp_path)


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
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]
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


def _break_at(monkeypatch, step: int, how):
    """Make the train step of `fit` go wrong at training step `step` (1-based) in the way `how` says."""
    from odenets.train import loop

    make_steps = loop.make_steps

    def patched(s):
        train_step, eval_step = make_steps(s)
        calls = []

        def broken(state, x, y):
            calls.append(1)
            return how(train_step, state, x, y) if len(calls) == step else train_step(state, x, y)

        return broken, eval_step

    monkeypatch.setattr(loop, "make_steps", patched)


def test_a_non_finite_ode_state_is_a_divergence_not_a_traceback(tmp_path, monkeypatch):
    """odeint's runtime check of x0 (a JAX callback error) becomes the NaN stop, metrics kept."""
    import jax
    import jax.numpy as jnp

    import odenets as on

    def x0_check_fails(train_step, state, x, y):  # the real error: a solve from a non-finite state
        solve = jax.jit(lambda x0: on.odeint(lambda t, x, a: -x, x0, 0.0, 1.0, 2).x)
        solve(jnp.full(2, jnp.nan)).block_until_ready()

    _break_at(monkeypatch, 3, x0_check_fails)
    match = (r"a solve's initial state became non-finite \(odeint: x0 has non-finite entries\) at step 3 "
             r"\(epoch 1\); last finite loss [0-9.]+\. No checkpoint")
    with pytest.raises(Diverged, match=match):
        fit(tiny(), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 3] and np.isfinite(records[0]["loss"])  # the window is kept
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_non_finite_parameters_stop_before_the_next_step(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    def nan_update(train_step, state, x, y):
        (params, rest, opt), metrics = train_step(state, x, y)
        params = jax.tree.map(lambda p: p * jnp.nan, params)
        return (params, rest, opt), {**metrics, "finite": jnp.array(False)}

    _break_at(monkeypatch, 5, nan_update)
    with pytest.raises(Diverged, match=r"the parameters became non-finite in the update at step 5 \(epoch 1\); "
                                       r"last finite loss [0-9.]+"):
        fit(tiny(), tmp_path / "run")
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [4, 5]


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"integrator": {"name": "rk5"}}, r"unknown integrator 'rk5'; valid choices: euler"),
        ({"data": {"name": "mnist2d"}}, r"unknown dataset 'mnist2d'; valid choices: mnist1d"),
        ({"model.family": "resnet2"}, r"unknown model family 'resnet2'; valid choices: resnet"),
        ({"model.kind": "conv2d"}, r"input_shape"),  # 2-D moons points cannot feed a conv2d stem
        ({"optim.name": "adamx"}, r"unknown optimizer 'adamx'; valid choices: adam, adamw, sgd"),
        ({"optim.momentum": 0.9}, r"unknown option 'momentum' for optimizer 'adam'; valid options: lr, "),
        ({"optim.batch_size": 0}, r"optim.batch_size must be an int >= 1, got optim.batch_size=0"),
        ({"optim.lr": "abc"}, r"optim.lr must be a finite number in \(0.0, inf\), got optim.lr='abc'"),
        ({"optim.epochs": 2.5}, r"optim.epochs must be an int >= 1, got optim.epochs=2.5"),
        ({"seed": -1}, r"seed must be an int >= 0"),
        ({"model.integrator": "rk4"}, r"unknown model family 'node' key\(s\) \['integrator'\]; valid keys: width"),
        ({"model.family": "resnet", "integrator": {"name": "dopri5"}}, r"PerStep \(per-step\) arguments need a "
         r"fixed-step integrator.* use a family with one shared field \(model=node"),
        ({"model.family": "plain"}, r"model family 'plain' takes no integrator \(got integrator=rk4\); families "
                                    r"that take one: resnet, node"),
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


def test_optimizer_schedules_and_clipping():
    import jax.numpy as jnp

    tx = optimizer("sgd", lr=0.1, momentum=0.0, weight_decay=0.0, clip_norm=1.0).transform(total_steps=10)
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
        optimizer("sgd", schedule="onecycle", warmup_steps=5)


def test_adaptive_train_records_carry_nfe_and_step_time(tmp_path):
    # log_every=1: each train record is one step; the test record's nfe_forward is models.solver_stats of
    # the state after the epoch's last step, so the last train record must hold the same count
    cfg = tiny(**{"integrator": {"name": "dopri5", "rtol": 1e-4}, "optim.epochs": 1, "train.log_every": 1,
                  "data.n_train": 128})
    summary = fit(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 128 // 32
    assert train[-1]["nfe"] == summary["nfe_forward"] == records[-1]["nfe_forward"]
    for r in train:  # Dopri5: 1 evaluation at t0, then 6 per attempted step, summed over the model's stages
        assert r["nfe"] > 7 and r["nfe"] == int(r["nfe"]) and (r["nfe"] - 1) % 6 == 0
    assert "step_time_ms" not in train[0]  # the step that compiled
    assert all(r["step_time_ms"] > 0 for r in train[1:])


def test_ctrl_c_while_the_train_step_compiles_leaves_a_resumable_run(tmp_path, monkeypatch):
    """A Ctrl-C before the first step (in the compile) is an Interrupted like one between steps: the run
    directory gets its summary and report, its lock is released and a resume of it is accepted."""
    from odenets.train import loop, rundir
    from odenets.train.config import RunConfig

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_temp_bytes", ctrl_c)
    cfg, run = tiny(**{"optim.epochs": 1}), tmp_path / "run"
    with pytest.raises(loop.Interrupted, match="interrupted at step 0 of 8") as caught:
        fit(cfg, run)
    assert caught.value.checkpoint is None
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("interrupted", 0) and (run / "report.md").exists()
    assert run.absolute() not in rundir._HELD
    rundir.prepare(run, RunConfig.parse(cfg).to_dict(), resume=True)  # raises if the run cannot be resumed
    rundir.release(run)
