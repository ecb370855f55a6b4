"""Studies: a claim from the literature, measured with one command.

    odenets run experiment=<name>                  the full size (minutes on two CPU cores)
    odenets run experiment=<name> study.size=smoke seconds: what the test suite runs

A study is one module, experiments/studies/<name>.py, holding one final `Study` subclass
registered with `@study.register("<name>")`, and one config, configs/experiment/<name>.yaml
(`study: {name: <name>, size: full}`); nothing else changes. Its `run(options, report)`
measures, and fills a `Report` that writes into the run directory:

    report.md      the claim, the setup, the tables, the figures, the findings (each: what the
                   literature expects, what we measured, whether it holds), the wall time
    figures/*.png  labelled axes and legends
    results.json   every number in the tables, the findings, the figures (the first is the
                   study's headline figure), the options and the wall time

A finding that does not hold is reported as such, with its numbers: it is a result, and a
study is never tuned until it agrees. `smoke_expect` names the findings whose direction the
smoke size must show; the test suite runs every registered study at that size and asserts them.

Options: each study has a frozen dataclass of options and `sizes` {"smoke": ..., "full": ...};
`study.size` picks one and `+study.<option>=value` changes one option of it.
Studies call odenets.analysis, odeint and the models; they never re-implement a solve.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import json
import os
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from odenets import validate
from odenets._abstract import final
from odenets._registry import Registry

CHECKOUT = Path(__file__).resolve().parent.parent  # where experiments/studies lives in a source checkout
PACKAGE = "experiments.studies"
SIZES = ("smoke", "full")  # every study has at least these


class Study(abc.ABC):
    """A claim from the literature and the measurement that tests it.

    Subclasses set `title`, `claim` (what the literature says, with its reference), `sizes`
    ({"smoke": options, "full": options}, instances of one frozen dataclass) and `smoke_expect`
    (the findings the smoke size must show), and implement `run`.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    claim: ClassVar[str]
    sizes: ClassVar[dict[str, Any]]
    smoke_expect: ClassVar[tuple[str, ...]] = ()
    aggregate: ClassVar[bool] = False  # runs other studies (all_studies): the per-study smoke test skips it

    @abc.abstractmethod
    def run(self, options: Any, report: Report) -> None:
        """Measure, and put every table, figure and finding into `report`."""


study: Registry[Study] = Registry("study", Study)


def load() -> Registry[Study]:
    """The study registry with every module of experiments/studies imported (source checkout only)."""
    folder = CHECKOUT / "experiments" / "studies"
    if folder.is_dir() and str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))
    try:
        package = importlib.import_module(PACKAGE)
    except ModuleNotFoundError:
        raise ValueError(f"studies run from a source checkout of odenets (no {folder}): clone the repository, "
                         f"pip install -e it, and run the study there") from None
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{PACKAGE}.{module.name}")
    return study


@final
@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A parsed `study` group: which study, at which size, with which options."""

    name: str
    size: str
    options: Any

    @classmethod
    def parse(cls, spec: dict) -> StudyConfig:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"study must be a mapping with a 'name' key, got study={spec!r}")
        given = dict(spec)
        name = given.pop("name")
        cls_ = load().get(name)
        size = given.pop("size", "full")
        validate.choice("study.size", size, list(cls_.sizes))
        base = cls_.sizes[size]
        validate.known_keys(f"study {name!r}", given, [f.name for f in dataclasses.fields(base)])
        try:
            options = dataclasses.replace(base, **given)
        except (TypeError, ValueError) as err:
            raise ValueError(f"study {name!r}: {err}") from None
        return cls(name, size, options)

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.options).items()}
        return {"name": self.name, "size": self.size, **values}


@final
class Report:
    """What a study measured, written as report.md, figures/*.png and results.json into `out`.

    `seed` is the run's seed; `subdir(name)` is a fresh folder for a run the study starts itself.
    """

    def __init__(self, out: Path, config: StudyConfig, seed: int = 0):
        self.out, self.config, self.seed = Path(out), config, seed
        self.cls = study.get(config.name)
        self._setup: list[str] = []
        self._sections: list[str] = []
        self._notes: list[str] = []
        self.results: dict[str, Any] = {"study": config.name, "size": config.size, "seed": seed,
                                        "options": config.to_dict(), "tables": {}, "values": {}, "findings": {},
                                        "figures": []}
        self._start = time.perf_counter()

    def subdir(self, name: str) -> Path:
        path = self.out / "runs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def setup(self, text: str) -> None:
        """A paragraph of the setup: data, model, integrators, what is varied."""
        self._setup.append(text)

    def note(self, text: str) -> None:
        """A paragraph under "What we measured": an observation the findings do not spell out."""
        self._notes.append(text)

    def value(self, key: str, value: Any) -> None:
        """A number (or list of numbers) for results.json that no table holds."""
        self.results["values"][key] = _plain(value)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], caption: str = "") -> None:
        """A table: in report.md (numbers formatted) and in results.json under tables[key] (exact)."""
        rows = [[_plain(v) for v in row] for row in rows]
        self.results["tables"][key] = {"columns": list(columns), "rows": rows}
        lines = [f"**{caption}**", ""] if caption else []
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        self._sections.append("\n".join(lines))

    def figure(self, key: str, fig, caption: str) -> Path:
        """Save a matplotlib figure as figures/<key>.png (and close it)."""
        import matplotlib.pyplot as plt

        path = self.out / "figures" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self._sections.append(f"![{caption}](figures/{key}.png)\n\n*{caption}*")
        self.results["figures"].append(f"figures/{key}.png")  # in order: the first is the study's headline
        return path

    def finding(self, key: str, holds: bool, expected: str, measured: str) -> bool:
        """One claim tested: what the literature (or theory) expects, what we measured, whether it holds."""
        self.results["findings"][key] = {"holds": bool(holds), "expected": expected, "measured": measured}
        return bool(holds)

    def write(self) -> dict[str, Any]:
        """report.md and results.json; returns the results."""
        import jax

        wall = time.perf_counter() - self._start
        findings = self.results["findings"]
        held = sum(f["holds"] for f in findings.values())
        machine = f"{os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.default_backend()}"
        self.results.update(wall_time_s=wall, machine=machine, findings_held=held, findings_total=len(findings))
        options = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in self.config.to_dict().items())
        lines = [f"# {self.cls.title}", "", f"**Claim.** {self.cls.claim}", "", "## Setup", "", *self._setup, "",
                 "| option | value |", "|---|---|", options, f"| seed | {self.seed} |", "",
                 "## Results", ""]
        for section in self._sections:
            lines += [section, ""]
        lines += ["## Findings", ""]
        for key, f in findings.items():
            mark = "reproduces" if f["holds"] else "**does not reproduce**"
            lines.append(f"- `{key}` {mark}. Expected: {f['expected']} Measured: {f['measured']}")
        lines += ["", f"{held} of {len(findings)} findings hold at size `{self.config.size}`.", ""]
        if self._notes:
            lines += ["## What we measured", "", *[f"{n}\n" for n in self._notes]]
        lines += [f"Wall time: {wall:.1f} s ({machine}).", ""]
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "report.md").write_text("\n".join(lines))
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=_plain) + "\n")
        return self.results


def run(config: StudyConfig | dict, out: Path, seed: int = 0) -> dict[str, Any]:
    """Run a study into the directory `out`; returns its results (what results.json holds).

    `config`: a StudyConfig, or the `study` mapping ({"name": ..., "size": ..., option: value}).
    """
    import matplotlib

    config = config if isinstance(config, StudyConfig) else StudyConfig.parse(config)
    report = Report(Path(out), config, seed)
    backend = matplotlib.get_backend()
    matplotlib.use("Agg")  # figures are drawn off-screen (a study imports matplotlib.pyplot as it is) ...
    try:
        study.get(config.name)().run(config.options, report)
    finally:
        matplotlib.use(backend)  # ... and the caller's backend (a notebook's inline plots) comes back
    return report.write()


def run_config(cfg: dict, run_dir: str | Path) -> dict[str, Any]:
    """`odenets run experiment=<study>`: the run directory made and locked as for training (nothing
    overwritten), config.yaml written, then the study run into it."""
    from odenets.train.config import RunConfig
    from odenets.train.rundir import prepare, release

    parsed = RunConfig.parse(cfg)
    if parsed.study is None:
        raise ValueError("this config names no study (study: {name: ..., size: ...}); valid choices: "
                         f"{', '.join(load().names())}")
    run_dir = Path(run_dir)
    prepare(run_dir, {"name": parsed.name, "seed": parsed.seed, "study": parsed.study.to_dict()}, resume=False)
    try:
        return run(parsed.study, run_dir, parsed.seed)
    finally:
        release(run_dir)


def _plain(value):
    """numpy / jax scalars and arrays as JSON-able Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)
