"""Run directories: nothing overwritten silently; config, summary, figures and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO, cast

import yaml

from odenets.train.metrics import METRICS_FILE, read_metrics

OUTPUTS = (METRICS_FILE, "summary.json", "checkpoints", "results.json")


_HELD: dict[Path, TextIO] = {}  # run directory -> its open lock file, held until the process exits


class RunDirBusy(FileExistsError):
    """The run directory is held by another live run."""


def lock(run_dir: Path) -> None:
    """Hold an exclusive lock on run_dir/.lock for the rest of this process (the OS releases it on exit,
    a SIGKILL included), so two live runs never write one directory."""
    import fcntl
    import os

    run_dir = run_dir.absolute()
    if run_dir in _HELD:
        return
    handle = (run_dir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise RunDirBusy(f"{run_dir} is in use by a live run (pid {owner}); wait for it to finish, or choose "
                         f"another directory (hydra.run.dir=...)") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[run_dir] = handle


def release(run_dir: Path) -> None:
    """Give up the lock taken by `lock` (the end of a run; a no-op if this process does not hold it)."""
    handle = _HELD.pop(Path(run_dir).absolute(), None)
    if handle is not None:
        handle.close()


def prepare(run_dir: Path, cfg: dict, *, resume: bool, write: bool = True) -> None:
    """Create and lock run_dir for a new run, or check it holds a compatible run for a resume.

    A resume may change how long or how verbosely to run (train.stop_after_epochs, train.progress),
    how many processes run it (train.distributed and the keys joining them) and may extend training
    (a larger optim.epochs) when the learning-rate schedule does not depend on the run's length
    (schedule constant); any other difference is refused, naming the keys. write=False: the checks
    only (the processes of a multi-process run other than process 0, which writes)."""
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock(run_dir)
    existing = [name for name in OUTPUTS if (run_dir / name).exists()]
    config = run_dir / "config.yaml"
    if resume:
        if not existing:
            raise FileNotFoundError(f"resume: {run_dir} holds no run to resume (no {', '.join(OUTPUTS)})")
        saved = yaml.safe_load(config.read_text()) if config.exists() else None
        if saved is not None:
            check_resumable(saved, cfg, config)
    elif existing:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); nothing is overwritten. Resume it with "
            f"--resume, or choose another directory (hydra.run.dir=...)"
        )
    if write:  # whole or not at all: the other processes of a multi-process run may be reading it
        partial = config.with_name(f".{config.name}.partial")
        partial.write_text(yaml.safe_dump(cfg, sort_keys=False))
        partial.replace(config)


FREE_ON_RESUME = ("train.stop_after_epochs", "train.progress", "train.distributed", "train.coordinator_address",
                  "train.num_processes", "train.process_id")
_MISSING = object()


def differing(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configs (a key missing on one side differs)."""
    keys = []
    for key in sorted(set(a) | set(b), key=str):
        u, v = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(u, dict) and isinstance(v, dict):
            keys += differing(u, v, f"{prefix}{key}.")
        elif u != v:
            keys.append(f"{prefix}{key}")
    return keys


def check_resumable(saved: dict, cfg: dict, where: Path) -> None:
    keys = [k for k in differing(saved, cfg) if k not in FREE_ON_RESUME]
    optim, before = cfg.get("optim", {}), saved.get("optim", {})
    longer = optim.get("epochs", 0) >= before.get("epochs", 0)
    if "optim.epochs" in keys and optim.get("schedule") == "constant" and longer:
        keys.remove("optim.epochs")  # extending a constant-schedule run is exactly training on
    if keys:
        show = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(cfg, k)!r})" for k in keys)
        hint = (" optim.epochs can grow on resume only with schedule constant (the other schedules depend on "
                "the number of steps)." if "optim.epochs" in keys else "")
        raise ValueError(f"resume: the config differs from the one saved in {where} in {show}.{hint} Resume with "
                         f"the same overrides, or start a new run in another directory")


def _get(cfg: dict | None, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part, None) if isinstance(cfg, dict) else None
    return cfg


def write_outputs(run_dir: Path, cfg: dict, summary: dict, trajectories: dict | None = None) -> None:
    """summary.json, figures/curves.png and report.md; with `trajectories` ({"ts", "y", "pred"}, a
    trajectory run's test paths) also figures/trajectories.png and the fit error in the report."""
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = plot_curves([run_dir], run_dir / "figures" / "curves.png")
    lines = [f"# Run {summary.get('name') or run_dir.name}", "", f"status: **{summary['status']}**", ""]
    lines += table([summary]) + ["", f"![training curves]({figure.relative_to(run_dir)})", ""]
    if summary.get("test_mse") is not None:
        lines += ["## Fit", "", f"Test fit error at the observation times: MSE {summary['test_mse']:.4g}, "
                  f"relative L2 error ||pred - y|| / ||y|| = {summary['test_rel_error']:.4g}.", ""]
    if trajectories is not None:
        paths = plot_trajectories(trajectories, run_dir / "figures" / "trajectories.png")
        lines += [f"![fitted test trajectories against the data]({paths.relative_to(run_dir)})", ""]
    lines += ["## Config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))


COLUMNS = [
    ("run", lambda s: s.get("label") or s.get("name") or "-"),
    ("model", lambda s: s.get("model")),
    ("integrator", lambda s: s.get("integrator")),
    ("gradient", lambda s: s.get("gradient")),
    ("test acc", lambda s: None if s.get("test_accuracy") is None else f"{100 * s['test_accuracy']:.2f}%"),
    ("test loss", lambda s: None if s.get("test_loss") is None else f"{s['test_loss']:.4f}"),
    ("test rel. error", lambda s: None if s.get("test_rel_error") is None else f"{s['test_rel_error']:.4f}"),
    ("params", lambda s: f"{s['params']:,}"),
    ("NFE fwd", lambda s: s.get("nfe_forward")),
    ("NFE bwd", lambda s: s.get("nfe_backward")),
    ("time (s)", lambda s: f"{s['wall_time_s']:.1f}"),
    ("examples/s", lambda s: None if s.get("examples_per_s") is None else f"{s['examples_per_s']:.0f}"),
    ("step temp MB", lambda s: None if s.get("train_step_temp_bytes") is None
     else f"{s['train_step_temp_bytes'] / 2**20:.1f}"),
    ("status", lambda s: s.get("status")),
]


def table(summaries: list[dict]) -> list[str]:
    """A markdown table, one row per run."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join("-" if (v := get(s)) is None else str(v) for _, get in COLUMNS) + " |"
            for s in summaries]
    return [head, rule, *rows]


def plot_curves(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Training loss and test accuracy against epochs, one line per run, as a PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for run_dir, label in zip(run_dirs, labels or [_label(d) for d in run_dirs], strict=True):
        records = read_metrics(run_dir)
        train = [r for r in records if r["split"] == "train"]
        test = [r for r in records if r["split"] == "test"]
        if train:
            ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
        if test and "accuracy" in test[0]:
            ax_acc.plot([r["epoch"] for r in test], [100 * r["accuracy"] for r in test], marker="o", label=label)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _figure(figsize):
    """A figure outside pyplot: drawn and saved without a GUI, and without touching the backend or
    the figures of the process that trains (a notebook's inline plots keep working)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def plot_trajectories(trajectories: dict, out: Path) -> Path:
    """Observed test trajectories as dots and the model's fit as lines, one colour per trajectory:
    the phase plane of the first two components when D >= 2, else the component against time."""
    ts, y, pred = trajectories["ts"], trajectories["y"], trajectories["pred"]
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(figsize=(5.5, 5))
    ax = fig.subplots()
    phase = y.shape[-1] >= 2
    for i in range(len(y)):
        colour = f"C{i % 10}"
        data, fit = (y[i, :, 0], y[i, :, 1]), (pred[i, :, 0], pred[i, :, 1])
        if not phase:
            data, fit = (ts, y[i, :, 0]), (ts, pred[i, :, 0])
        ax.plot(*data, "o", color=colour, markersize=3, label=f"data {i}")
        ax.plot(*fit, "-", color=colour, linewidth=1.5, label=f"fit {i}")
    if phase:
        ax.set(xlabel="$x_1$", ylabel="$x_2$", title="test trajectories: phase plane")
    else:
        ax.set(xlabel="t", ylabel="$x_1$", title="test trajectories")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _label(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    if summary.exists():
        name = json.loads(summary.read_text()).get("name")
        if name:
            return name
    return run_dir.name


IGNORED_IN_LABELS = ("name", "resume", *FREE_ON_RESUME)


def labels_by_difference(run_dirs: list[Path]) -> list[str]:
    """One label per run: its name where the names tell the runs apart; otherwise (a sweep) the config
    keys whose values differ between the runs ("optim.lr=0.1, seed=1")."""
    configs = [yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").exists() else None
               for d in run_dirs]
    names = [_label(d) for d in run_dirs]
    if len(run_dirs) < 2 or any(c is None for c in configs) or len(set(names)) == len(names):
        return names
    loaded = cast(list[dict], configs)  # none is None here
    keys = sorted({k for c in loaded[1:] for k in differing(loaded[0], c)} - set(IGNORED_IN_LABELS))
    if not keys:
        return names
    return [", ".join(f"{k}={_get(c, k)}" for k in keys) for c in loaded]


def report(run_dirs: list[Path], out_dir: Path) -> tuple[Path, list[dict]]:
    """Side-by-side report of finished runs: report.md with a table and overlaid curves.

    Returns the report's path and the runs' summaries."""
    missing = [str(d) for d in run_dirs if not (d / "summary.json").exists()]
    if missing:
        raise FileNotFoundError(f"not a finished run directory (no summary.json): {', '.join(missing)}")
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    labels = labels_by_difference(run_dirs)
    summaries = [{**s, "label": label} for s, label in zip(summaries, labels, strict=True)]
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_curves(run_dirs, out_dir / "comparison.png", labels)
    lines = ["# odenets report", "", *table(summaries), "", f"![curves]({figure.name})", "",
             "Runs: " + ", ".join(str(d) for d in run_dirs), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path, summaries
