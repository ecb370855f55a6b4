"""Runs and their files: nothing lost after a kill, a damaged checkpoint, a second run, a resume.

The kill test runs the real command line in a subprocess and SIGKILLs it at random points
(start-up, training, evaluation, checkpoint writes), resumes until it completes, and compares
the result with an uninterrupted run bit for bit.
"""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml

from odenets.train import rundir
from odenets.train.loop import fit
from odenets.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("epoch_time_s", "step_time_ms", "examples_per_s")
RUN = ["experiment=toy", "optim.epochs=30", "train.progress=false", "train.log_every=2"]


def tiny(epochs=3, seed=0, schedule="constant"):
    return {
        "name": "tiny", "seed": seed,
        "data": {"name": "moons", "n_train": 128, "n_test": 64, "noise": 0.1},
        "model": {"family": "node", "kind": "mlp", "width": 8, "depth": 2},
        "integrator": {"name": "rk4"}, "gradient": {"name": "backprop"},
        "optim": {"name": "adam", "lr": 1e-2, "schedule": schedule, "batch_size": 32, "epochs": epochs},
        "train": {"log_every": 2, "progress": False},
    }


def untimed(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def final_params(run_dir: Path) -> list[np.ndarray]:
    """The leaves of the newest checkpoint, read with orbax alone (no odenets code involved)."""
    with ocp.CheckpointManager(run_dir / "checkpoints") as manager:
        step = manager.latest_step()
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return [np.asarray(out.state[k]) for k in sorted(out.state)]


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "odenets.cli", "run", *RUN, f"hydra.run.dir={run_dir}", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    began = time.monotonic()
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.communicate()[1]
    whole = time.monotonic() - began  # kill points are drawn over the span of one whole run
    rng = random.Random(0)
    run_dir, kills, points = tmp_path / "killed", [], []
    for _ in range(40):
        proc = start(run_dir, *(["--resume"] if (run_dir / "config.yaml").exists() else []))
        at = rng.uniform(0.1, 0.6) * whole  # a resumed run has less left to do than the whole run
        deadline = time.monotonic() + at
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and len(kills) < 6:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(round(at, 2))
            points.append(sorted(p.name for p in (run_dir / "checkpoints").glob("[0-9]*")))
            continue
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        break
    assert len(kills) >= 4, f"only {len(kills)} kills landed before the run finished ({kills})"
    assert untimed(run_dir) == untimed(tmp_path / "reference")
    for a, b in zip(final_params(run_dir), final_params(tmp_path / "reference"), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 30
    # a name like 150.orbax-checkpoint-tmp in `points` is a kill that landed during a checkpoint write
    print(f"killed at {kills} s (checkpoints present then: {points}); resumed to the same bits")


@pytest.mark.slow
def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    fit(tiny(epochs=3), tmp_path / "full")
    fit({**tiny(epochs=3), "train": {**tiny()["train"], "stop_after_epochs": 2}}, tmp_path / "run")
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    newest = tmp_path / "run" / "checkpoints" / str(steps[-1])
    for path in newest.rglob("*"):  # truncate every data file of the newest checkpoint
        if path.is_file() and path.name != "commit_success.txt":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    with pytest.warns(UserWarning, match=f"checkpoint {newest} is damaged"):
        fit(tiny(epochs=3), tmp_path / "run", resume=True)
    assert untimed(tmp_path / "run") == untimed(tmp_path / "full")


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    fit(tiny(seed=3), tmp_path / "a")
    fit(tiny(seed=3), tmp_path / "b")
    fit(tiny(seed=4), tmp_path / "c")
    assert untimed(tmp_path / "a") == untimed(tmp_path / "b")
    assert untimed(tmp_path / "a") != untimed(tmp_path / "c")


def test_a_live_run_holds_its_directory(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from odenets.train import rundir; rundir.lock(Path(sys.argv[1])); print('held', "
                               "flush=True); time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FileExistsError, match=f"in use by a live run \\(pid {holder.pid}\\)"):
            rundir.prepare(tmp_path, tiny(), resume=False)
        assert not (tmp_path / "config.yaml").exists(), "nothing written into a directory held by another run"
    finally:
        holder.kill()
        holder.wait()
    rundir.prepare(tmp_path, tiny(), resume=False)  # the lock died with its process
    rundir.release(tmp_path)


@pytest.mark.slow
def test_resume_may_extend_a_constant_schedule_and_names_what_differs(tmp_path):
    fit(tiny(epochs=4), tmp_path / "full")
    fit(tiny(epochs=2), tmp_path / "run")
    longer = fit(tiny(epochs=4), tmp_path / "run", resume=True)  # finished at 2 epochs, extended to 4
    assert longer["status"] == "completed" and longer["epochs"] == 4
    assert untimed(tmp_path / "run") == untimed(tmp_path / "full")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["epochs"] == 4
    fit(tiny(epochs=2, schedule="cosine"), tmp_path / "cos")
    with pytest.raises(ValueError, match=r"optim\.epochs \(2 -> 4\).*schedule constant"):
        fit(tiny(epochs=4, schedule="cosine"), tmp_path / "cos", resume=True)
    changed = {**tiny(epochs=2), "optim": {**tiny(epochs=2)["optim"], "lr": 0.5}}
    with pytest.raises(ValueError, match=r"optim\.lr \(0\.01 -> 0\.5\)"):
        fit(changed, tmp_path / "run", resume=True)


def test_report_labels_runs_by_what_differs_and_shows_status(tmp_path):
    fit(tiny(seed=1), tmp_path / "a")
    fit(tiny(seed=2), tmp_path / "b")
    path, summaries = rundir.report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert [s["label"] for s in summaries] == ["seed=1", "seed=2"]
    text = path.read_text()
    assert "| seed=1 |" in text and "| seed=2 |" in text and text.count("| completed |") == 2


def test_train_and_test_records_count_epochs_alike(tmp_path):
    fit(tiny(epochs=2), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    for test in (r for r in records if r["split"] == "test"):
        same_step = [r for r in records if r["split"] == "train" and r["step"] == test["step"]]
        assert same_step and all(r["epoch"] == test["epoch"] for r in same_step)
    assert min(r["epoch"] for r in records) == 1


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "odenets.cli", "run", "experiment=toy", "optim.epochs=1",
                               "train.progress=false"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    runs = sorted((tmp_path / "runs" / "toy").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_finishes_the_others_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "odenets.cli", "run", "-m", "experiment=toy", "optim.epochs=2",
                           "optim=sgd", "optim.clip_norm=null", "optim.lr=1e30,0.01", "train.progress=false",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "1 job(s) of the sweep failed (the others finished)" in done.stderr and "job 0" in done.stderr
    status = [json.loads((sweep / str(k) / "summary.json").read_text())["status"] for k in (0, 1)]
    assert status == ["diverged", "completed"]
