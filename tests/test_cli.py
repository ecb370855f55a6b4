"""The `odenets` command line: configs composed from the Python defaults, refusals before any run
directory exists, Ctrl-C, the benchmarks hand-off, and the installed wheel outside the checkout."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import odenets as on
from odenets import cli as odenets_cli
from odenets import models
from odenets.data import dataset
from odenets.train.config import Defaults, RunConfig, TrainConfig, family_options
from odenets.train.groups import GROUPS
from odenets.train.metrics import read_metrics
from odenets.train.optim import optimizer

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "figures/curves.png", "summary.json", "report.md",
             "tensorboard")
REGISTRIES = {"data": dataset, "integrator": on.integrator, "gradient": on.gradient, "optim": optimizer,
              "model": models.family}


def cli(*args, env=None, check=True, cwd=ROOT):
    done = subprocess.run([sys.executable, "-m", "odenets.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def in_process(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    """`odenets *argv` in this process (it sees the test suite's registered extensions)."""
    monkeypatch.setattr(sys, "argv", ["odenets", *argv])
    try:
        odenets_cli.main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- every shipped config is the Python defaults plus its own overrides --------------------------


def python_node(group: str, option: str | None):
    """A config group option read straight from its dataclass (no YAML, no Hydra)."""
    if option is None:
        return None
    if group == "model" and option in models.PRESETS:
        spec = models.preset(option)
        arch = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()
                if k not in ("family", "input_shape", "num_classes", "integrator", "gradient")}
        return {"family": spec["family"], **family_options(spec["family"]), **arch}
    if group == "model":
        return {"family": option, **family_options(option)}
    cls = REGISTRIES[group].get(option)
    return {"name": option, **{f.name: f.default for f in dataclasses.fields(cls) if f.init}}


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def python_config(choices: dict, values: dict) -> dict:
    defaults = Defaults()
    groups = {**{g: getattr(defaults, g) for g in GROUPS}, **choices}
    integrator = groups["integrator"]
    if integrator is None and groups["model"] in models.family.names():  # the family's own, if it takes one
        family = models.family.get(groups["model"])
        integrator = {f.name: f.default for f in dataclasses.fields(family)}.get("integrator")
    name = "-".join(c for c in (groups["model"], integrator, groups["data"]) if c is not None)
    cfg = {g: python_node(g, o) for g, o in groups.items()}
    cfg |= {"name": name, "seed": defaults.seed, "train": dataclasses.asdict(TrainConfig())}
    return merged(cfg, values)


def test_configs_holds_only_experiment_overrides():
    files = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file())
    launchers = ["hydra/launcher/slurm.yaml"]  # cluster recipes: Hydra's own group, no odenets default in them
    assert files == [f"experiment/{name}.yaml" for name in EXPERIMENTS] + launchers and EXPERIMENTS


def test_the_default_config_is_the_python_defaults():
    assert odenets_cli.compose() == python_config({}, {})
    assert odenets_cli.compose()["name"] == "resnet-euler-mnist1d"  # the family's own integrator
    assert odenets_cli.compose(["model=plain"])["name"] == "plain-mnist1d"  # a family without one


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_to_the_python_defaults_plus_its_overrides(name):
    text = yaml.safe_load((CONFIGS / "experiment" / f"{name}.yaml").read_text())
    choices = {}
    for entry in text.pop("defaults", []):
        ((key, option),) = entry.items()
        choices[key.removeprefix("override /")] = option
    cfg = odenets_cli.compose([f"experiment={name}"])
    assert cfg == python_config(choices, text)
    RunConfig.parse(cfg)  # every key it sets is a real option


@pytest.mark.parametrize("group", GROUPS)
def test_every_registered_class_is_an_option_of_its_group(group):
    """Registries drive the groups: the suite's own extensions (ralston, xor, ...) included."""
    names = REGISTRIES[group].names() + (list(models.PRESETS) if group == "model" else [])
    for option in names:
        assert odenets_cli.compose([f"{group}={option}"])[group] == python_node(group, option), option


def test_mnist1d_experiments_train_what_the_published_results_used():
    """Euler, backprop, unrolled Chen presets, AdamW 3e-3 cosine with 62 warm-up steps, 40 epochs."""
    for name, family in (("mnist1d_resnet", "resnet"), ("mnist1d_odenet", "node")):
        run = RunConfig.parse(odenets_cli.compose([f"experiment={name}"]))
        assert (run.integrator, run.gradient) == (on.Euler(), on.Backprop())
        assert run.model["family"] == family and run.model["unroll"] is True and run.model["width"] == 64
        assert run.optim == optimizer("adamw", lr=3e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=62,
                                      clip_norm=1.0, batch_size=128, epochs=40)


def test_defaults_that_depend_on_the_data_follow_it():
    """No default fixes the input's rank: a family's kind follows the data it is given."""
    from odenets.train.loop import setup

    for data in ("spheres", "digits"):
        s = setup(odenets_cli.compose(["model=anode", f"data={data}", "optim.batch_size=50"]))
        assert s.cfg["model"]["kind"] is None and s.n_params > 0


def test_a_sweep_whose_data_need_different_models_is_refused_before_any_job(tmp_path, monkeypatch, capsys):
    """Trajectory data default to the Neural ODE, classification data to the ResNet; Hydra takes one model
    for a whole sweep, so a sweep over both would train the wrong family in one job: refused up front."""
    sweep = tmp_path / "sweep"
    code, _, err = in_process(monkeypatch, capsys, "run", "-m", "data=spiral_ode,moons", "optim.epochs=1",
                              f"hydra.sweep.dir={sweep}")
    assert code != 0 and "need different models for their data (node, the composed default)" in err, err
    assert "model=" in err and not sweep.exists()


@pytest.mark.slow  # 8 s a run; the default suite runs ralston through every registry-parametrised test
@pytest.mark.parametrize("extension", [["integrator=ralston"], ["model=scaled_resnet", "data=xor"]])
def test_classes_registered_in_one_class_each_run_from_the_command_line(tmp_path, extension):
    """A user's module registers Ralston's method, a ReZero family and an XOR dataset
    (tests/extensions.py); `odenets run` takes them with no other edit."""
    assert "ralston" in on.integrator.names()
    entry = "import sys, extensions; from odenets.cli import main; main(sys.argv[1:])"
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", entry, "run", "experiment=toy", *extension,
                           "optim.epochs=1", "train.progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path},
                          timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    if "integrator=ralston" in extension:  # two stages a step, four steps
        assert (summary["integrator"], summary["nfe_forward"]) == ("ralston", 2 * 4)
    else:
        assert (summary["model"], summary["data"]) == ("scaled_resnet", "xor") and summary["test_accuracy"] > 0.6


# ---- refusals: before any run directory --------------------------------------------------------------


def test_a_solver_the_family_does_not_take_is_refused_before_any_run_directory(tmp_path, monkeypatch, capsys):
    from odenets.train.config import takes

    monkeypatch.chdir(tmp_path)  # where Hydra's default run directory (runs/...) would go
    code, _, err = in_process(monkeypatch, capsys, "run", "model=plain", "integrator=rk4")
    assert code == 2 and not (tmp_path / "runs").exists()
    those = [f for f in models.family.names() if takes(f, "integrator")]
    assert f"model family 'plain' takes no integrator (got integrator=rk4); families that take one: " \
           f"{', '.join(those)}" in err
    assert "resnet" in those and "node" in those and "plain" not in those
    code, _, err = in_process(monkeypatch, capsys, "run", "model=plain", "gradient=adjoint")
    assert code == 2 and "model family 'plain' takes no gradient (got gradient=adjoint)" in err
    # a sweep is checked job by job before the first starts
    code, _, err = in_process(monkeypatch, capsys, "run", "-m", "model=node,plain", "integrator=rk4")
    assert code == 2 and "takes no integrator" in err and "(job model=plain integrator=rk4)" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=abc", "optim.lr must be a finite number in (0.0, inf), got optim.lr='abc'"),
        ("optim.epochs=1.5", "optim.epochs must be an int >= 1, got optim.epochs=1.5"),
        ("train.log_every=often", "train.log_every must be an int >= 1, got train.log_every='often'"),
        ("optim.schedule=linear", "unknown schedule (optim.schedule) 'linear'; valid choices: constant, cosine"),
        ("optim=adamx", "Could not find 'optim/adamx'"),
    ],
)
def test_a_bad_value_names_its_key_and_what_is_valid(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = in_process(monkeypatch, capsys, "run", override)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# ---- runs -----------------------------------------------------------------------------------------------------


def test_cli_runs_end_to_end_and_refuses(tmp_path, monkeypatch, capsys):
    base = ["experiment=toy", "optim.epochs=2", "train.progress=false"]
    out = cli("run", *base, f"hydra.run.dir={tmp_path / 'a'}").stdout
    assert "| toy | node | rk4 | backprop |" in out and "figure:" in out
    for name in RUN_FILES:
        assert (tmp_path / "a" / name).exists(), name
    code, out, _ = in_process(monkeypatch, capsys, "report", str(tmp_path / "a"), "--out", str(tmp_path / "cmp"))
    assert code == 0 and out.count("| completed |") == 1 and (tmp_path / "cmp" / "comparison.png").exists()
    # an existing run is never overwritten; unknown keys and names are Hydra / odenets errors (these two in
    # this process: the same main, without two more interpreter starts)
    again = cli("run", *base, f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert again.returncode != 0 and "nothing is overwritten" in again.stderr
    elsewhere = f"hydra.run.dir={tmp_path / 'c'}"
    code, _, err = in_process(monkeypatch, capsys, "run", *base, "model.widht=3", elsewhere)
    assert code != 0 and "widht" in err
    code, _, err = in_process(monkeypatch, capsys, "run", *base, "integrator=rk5", elsewhere)
    assert code != 0 and "rk4" in err  # the available options are listed
    assert not (tmp_path / "c").exists()


@pytest.mark.slow  # a run, a sweep of two runs and a report: four interpreter starts
def test_cli_sweeps_and_reports(tmp_path):
    base = ["experiment=toy", "optim.epochs=2", "train.progress=false"]
    cli("run", *base, f"hydra.run.dir={tmp_path / 'a'}")
    # a sweep (Hydra multirun) over one axis, with another axis swapped
    sweep = tmp_path / "sweep"
    cli("run", "-m", *base, "integrator=heun", "gradient=adjoint,checkpoint", f"hydra.sweep.dir={sweep}")
    runs = [json.loads((tmp_path / "sweep" / str(k) / "summary.json").read_text()) for k in (0, 1)]
    assert [(r["integrator"], r["gradient"], r["nfe_forward"]) for r in runs] == [
        ("heun", "adjoint", 8), ("heun", "checkpoint", 8)]
    report = cli("report", str(tmp_path / "a"), str(sweep / "0"), "--out", str(tmp_path / "cmp")).stdout
    # rows are labelled by the config keys that differ between the runs, with each run's status
    assert "gradient.name=backprop, integrator.name=rk4" in report and "gradient.name=adjoint" in report
    assert report.count("| completed |") == 2
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "comparison.png").exists()


@pytest.mark.slow  # a whole command line (10 s); the plain family itself is tested in test_models.py
def test_a_family_without_an_integrator_records_none(tmp_path):
    cli("run", "experiment=toy", "model=plain", "~integrator", "~gradient", "optim.epochs=1",
        "train.progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["model"], summary["integrator"], summary["gradient"]) == ("plain", None, None)


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_resume_command_it_prints_works(tmp_path):
    run = tmp_path / "run"
    args = ["experiment=toy", "optim.epochs=1000", "train.progress=false", f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-m", "odenets.cli", "run", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    metrics = run / "metrics.jsonl"
    saved = lambda: any(p.name.isdigit() for p in (run / "checkpoints").glob("*"))
    while not (metrics.exists() and '"test"' in metrics.read_text() and saved()) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("odenets: interrupted at step ") and lines[0].endswith(" --resume"), lines[0]
    assert "; a resume continues from the checkpoint of step " in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    command = shlex.split(lines[0][lines[0].index("odenets run"):])
    assert command[:2] == ["odenets", "run"] and f"hydra.run.dir={run}" in command
    resumed = cli(*command[1:], "train.stop_after_epochs=1")
    assert "| toy | node |" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"


@pytest.mark.slow
def test_four_devices_match_one(tmp_path):
    """Data parallel over 4 forced host devices: the same losses as one device."""
    base = ["experiment=toy", "optim.epochs=2", "train.progress=false", "train.log_every=1"]
    cli("run", *base, f"hydra.run.dir={tmp_path / 'one'}")
    cli("run", *base, f"hydra.run.dir={tmp_path / 'four'}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    one, four = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "four"))
    assert (one["devices"], four["devices"]) == (1, 4)
    loss = lambda d: [r["loss"] for r in read_metrics(tmp_path / d) if r["split"] == "train"]
    np.testing.assert_allclose(loss("four"), loss("one"), rtol=1e-5)
    assert abs(one["test_accuracy"] - four["test_accuracy"]) <= 1 / 500


# ---- benchmarks and the installed package ------------------------------------------------------------


def test_bench_runs_the_benchmarks_package_from_the_checkout(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, cwd: calls.append((args, cwd)) or 0)
    with pytest.raises(SystemExit) as exit_:
        odenets_cli.main(["bench", "--quick"])
    assert exit_.value.code == 0 and calls == [([sys.executable, "-m", "experiments.benchmarks", "--quick"], ROOT)]


def test_bench_says_in_one_line_that_it_needs_the_source_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(odenets_cli, "CHECKOUT", tmp_path)
    code, _, err = in_process(monkeypatch, capsys, "bench")
    assert code == 2 and err.count("\n") == 1 and "needs the source checkout" in err


@pytest.mark.slow
def test_the_wheel_runs_an_experiment_from_any_directory(tmp_path):
    """`pip install .` (not editable): the configs ship in the wheel and `odenets run` finds them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(ROOT)], check=True, env=env, cwd=tmp_path, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("odenets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"odenets/configs/experiment/{n}.yaml" for n in EXPERIMENTS} <= set(names)
    assert "odenets/train/loop.py" in names and not any(n.startswith(("tests/", "experiments/")) for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_ = venv / "bin"
    subprocess.run([bin_ / "pip", "install", "--no-deps", "-q", str(wheel)], check=True, env=env, timeout=600)
    # the dependencies: this interpreter's (a path entry, not a site directory, so an editable
    # install of odenets there stays invisible)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([bin_ / "python", "-c", "import odenets; print(odenets.__file__)"], env=env,
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    done = subprocess.run([bin_ / "odenets", "run", "experiment=toy", "optim.epochs=1", "train.progress=false"],
                          env=env, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (summary,) = (elsewhere / "runs" / "toy").glob("*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    bench = subprocess.run([bin_ / "odenets", "bench"], env=env, cwd=elsewhere, capture_output=True, text=True)
    assert bench.returncode == 2 and "needs the source checkout" in bench.stderr


def test_the_default_model_follows_the_datas_task():
    """`odenets run data=spiral_ode` trains a Neural ODE; a model chosen on the command line or by an
    experiment stands (and a classifier family given trajectories is refused by the run)."""
    assert odenets_cli.compose(["data=spiral_ode"])["model"]["family"] == "node"
    assert odenets_cli.compose(["data=spiral_ode", "model.depth=3"])["model"] == {
        **odenets_cli.compose(["model=node"])["model"], "depth": 3}
    assert odenets_cli.compose(["data=spiral_ode", "model=anode"])["model"]["family"] == "anode"
    assert odenets_cli.compose(["data=spiral_ode", "model=resnet"])["model"]["family"] == "resnet"
    assert odenets_cli.compose(["data=moons"])["model"]["family"] == "resnet"
