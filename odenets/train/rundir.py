"""Run directories: nothing overwritten silently; config, summary, figures and report.md."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from odenets.train.metrics import METRICS_FILE, read_metrics

OUTPUTS = (METRICS_FILE, "summary.json", "checkpoints")


def prepare(run_dir: Path, cfg: dict, *, resume: bool) -> None:
    """Create run_dir for a new run, or check it holds the same run for a resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = [name for name in OUTPUTS if (run_dir / name).exists()]
    config = run_dir / "config.yaml"
    if resume:
        if not existing:
            raise FileNotFoundError(f"resume: {run_dir} holds no run to resume (no {', '.join(OUTPUTS)})")
        saved = yaml.safe_load(config.read_text()) if config.exists() else None
        if saved is not None and _without(saved) != _without(cfg):
            raise ValueError(f"resume: the config differs from the one saved in {config}; resume with the same "
                             f"overrides, or start a new run in another directory")
    elif existing:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); nothing is overwritten. Resume it with "
            f"--resume, or choose another directory (hydra.run.dir=...)"
        )
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _without(cfg: dict) -> dict:
    """The parts of a config that must match on resume (not: how long or how verbosely to run)."""
    out = dict(cfg)
    out["train"] = {k: v for k, v in cfg.get("train", {}).items() if k not in ("stop_after_epochs", "progress")}
    return out


def write_outputs(run_dir: Path, cfg: dict, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = plot_curves([run_dir], run_dir / "figures" / "curves.png")
    lines = [f"# Run {summary.get('name') or run_dir.name}", "", f"status: **{summary['status']}**", ""]
    lines += table([summary]) + ["", f"![training curves]({figure.relative_to(run_dir)})", ""]
    lines += ["## Config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))


COLUMNS = [
    ("run", lambda s: s.get("name") or "-"),
    ("model", lambda s: s.get("model")),
    ("integrator", lambda s: s.get("integrator")),
    ("gradient", lambda s: s.get("gradient")),
    ("test acc", lambda s: None if s.get("test_accuracy") is None else f"{100 * s['test_accuracy']:.2f}%"),
    ("test loss", lambda s: None if s.get("test_loss") is None else f"{s['test_loss']:.4f}"),
    ("params", lambda s: f"{s['params']:,}"),
    ("NFE fwd", lambda s: s.get("nfe_forward")),
    ("NFE bwd", lambda s: s.get("nfe_backward")),
    ("time (s)", lambda s: f"{s['wall_time_s']:.1f}"),
    ("examples/s", lambda s: None if s.get("examples_per_s") is None else f"{s['examples_per_s']:.0f}"),
    ("step temp MB", lambda s: None if s.get("train_step_temp_bytes") is None
     else f"{s['train_step_temp_bytes'] / 2**20:.1f}"),
]


def table(summaries: list[dict]) -> list[str]:
    """A markdown table, one row per run."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join("-" if (v := get(s)) is None else str(v) for _, get in COLUMNS) + " |"
            for s in summaries]
    return [head, rule, *rows]


def plot_curves(run_dirs: list[Path], out: Path) -> Path:
    """Training loss and test accuracy against epochs, one line per run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        label = _label(run_dir)
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
    plt.close(fig)
    return out


def _label(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    if summary.exists():
        name = json.loads(summary.read_text()).get("name")
        if name:
            return name
    return run_dir.name


def report(run_dirs: list[Path], out_dir: Path) -> tuple[Path, list[dict]]:
    """Side-by-side report of finished runs: report.md with a table and overlaid curves.

    Returns the report's path and the runs' summaries."""
    missing = [str(d) for d in run_dirs if not (d / "summary.json").exists()]
    if missing:
        raise FileNotFoundError(f"not a finished run directory (no summary.json): {', '.join(missing)}")
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_curves(run_dirs, out_dir / "comparison.png")
    lines = ["# odenets report", "", *table(summaries), "", f"![curves]({figure.name})", "",
             "Runs: " + ", ".join(str(d) for d in run_dirs), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path, summaries
