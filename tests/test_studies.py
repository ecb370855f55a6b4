"""The study mechanism (odenets.study) and every registered study at its smoke size.

Each study's smoke run must write report.md, its figures and results.json, and show the
direction of its effect: every finding it names in `smoke_expect` holds.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from odenets import cli
from odenets import study as studies
from odenets._abstract import final

REGISTRY = studies.load()
STUDIES = [n for n in REGISTRY.names() if not REGISTRY.get(n).aggregate]


@pytest.mark.parametrize("name", STUDIES)
def test_study_smoke(name, tmp_path):
    results = studies.run_config(cli.compose([f"experiment={name}", "study.size=smoke"]), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert figures and all(f"figures/{f.name}" in report for f in figures)
    cls = REGISTRY.get(name)
    assert cls.smoke_expect, f"study {name} names no finding its smoke size must show"
    for key in cls.smoke_expect:
        finding = results["findings"][key]
        assert finding["holds"], f"{name}: {key}: expected {finding['expected']}, measured {finding['measured']}"
    assert results["tables"], f"{name} writes no table"


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_study_has_its_config_and_both_sizes(name):
    cfg = cli.compose([f"experiment={name}"])
    assert cfg["study"]["name"] == name and cfg["study"]["size"] == "full"
    assert set(studies.SIZES) <= set(REGISTRY.get(name).sizes)


@final
@dataclasses.dataclass(frozen=True)
class _Options:
    n: int = 3


@final
class _Toy(studies.Study):
    """A study whose one finding holds and one does not: both are reported, neither hidden."""

    title = "toy"
    claim = "squares grow"
    sizes = {"smoke": _Options(2), "full": _Options(5)}
    smoke_expect = ("grows",)

    def run(self, options, report):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        squares = [k * k for k in range(options.n)]
        report.table("squares", ["k", "k^2"], [[k, s] for k, s in enumerate(squares)])
        fig, ax = plt.subplots()
        ax.plot(squares, label="k^2")
        report.figure("squares", fig, "squares")
        report.finding("grows", squares[-1] > squares[0], "growth", f"{squares[0]} -> {squares[-1]}")
        report.finding("shrinks", squares[-1] < squares[0], "decay", f"{squares[0]} -> {squares[-1]}")


def test_report_keeps_findings_that_do_not_hold(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY._table, "_toy", _Toy)
    monkeypatch.setattr(_Toy, "name", "_toy", raising=False)
    results = studies.run({"name": "_toy", "size": "full", "n": 4}, tmp_path)
    assert results["tables"]["squares"]["rows"] == [[0, 0], [1, 1], [2, 4], [3, 9]]
    assert results["findings"]["grows"]["holds"] and not results["findings"]["shrinks"]["holds"]
    report = (tmp_path / "report.md").read_text()
    assert "`shrinks` **does not reproduce**" in report and "1 of 2 findings hold" in report
    with pytest.raises(ValueError, match="unknown study '_toy' key.*'m'.*valid keys: n"):
        studies.run({"name": "_toy", "m": 1}, tmp_path)
    with pytest.raises(ValueError, match="study.size.*'huge'.*smoke, full"):
        studies.run({"name": "_toy", "size": "huge"}, tmp_path)
    with pytest.raises(ValueError, match="unknown study 'nope'; valid choices: .*all_studies"):
        studies.run({"name": "nope"}, tmp_path)


@final
class _Broken(studies.Study):
    """A study that raises half way."""

    title = "broken"
    claim = "nothing"
    sizes = {"smoke": _Options(2), "full": _Options(5)}

    def run(self, options, report):
        raise FloatingPointError("the loss is nan at step 3")


def test_all_studies_writes_an_index_and_survives_a_failing_study(tmp_path, monkeypatch):
    for name, cls in (("_toy", _Toy), ("_broken", _Broken)):
        monkeypatch.setitem(REGISTRY._table, name, cls)
        monkeypatch.setattr(cls, "name", name, raising=False)
    cfg = cli.compose(["experiment=all_studies", "study.size=smoke", "+study.only=[_broken,_toy]"])
    results = studies.run_config(cfg, tmp_path)
    rows = {row[0]: row for row in results["tables"]["index"]["rows"]}
    assert list(rows) == ["_broken", "_toy"]  # the chosen list, in its order, and the toy ran after the failure
    assert rows["_broken"][2].startswith("failed (FloatingPointError: the loss is nan at step 3")
    assert "FloatingPointError" in (tmp_path / "runs" / "_broken" / "error.txt").read_text()
    assert rows["_toy"][2] == "1 of 2 hold" and rows["_toy"][5] == "![_toy](runs/_toy/figures/squares.png)"
    assert (tmp_path / "runs" / "_toy" / "figures" / "squares.png").exists()
    assert results["values"]["failed"] == ["_broken"]
    assert not results["findings"]["_broken.ran"]["holds"] and results["findings"]["_toy.grows"]["holds"]
    report = (tmp_path / "report.md").read_text()
    assert "1 of 2 studies failed: _broken" in report and "figures/verdicts.png" in report
    with pytest.raises(ValueError, match=r"study.only: unknown studies \['nope'\]; valid choices: .*_toy"):
        studies.run({"name": "all_studies", "size": "smoke", "only": ("nope",)}, tmp_path / "other")


def test_a_study_refuses_training_overrides_and_resume(tmp_path, capsys):
    for argv in (["experiment=all_studies", "integrator=rk4"], ["experiment=all_studies", "optim.lr=0.1"],
                 ["--resume", "experiment=all_studies"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["run", *argv, f"hydra.run.dir={tmp_path / 'x'}"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "is a study" in err and ("would be ignored" in err or "no --resume" in err)
    assert not (tmp_path / "x").exists()


def test_studies_and_run_figures_leave_the_callers_matplotlib_backend(tmp_path, monkeypatch):
    """A notebook's inline backend survives a study run and a training run's figures."""
    import matplotlib

    from odenets.train.rundir import plot_curves

    monkeypatch.setitem(REGISTRY._table, "_toy", _Toy)
    monkeypatch.setattr(_Toy, "name", "_toy", raising=False)
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        studies.run({"name": "_toy", "size": "smoke"}, tmp_path / "study")
        assert matplotlib.get_backend() == "svg"
        run = tmp_path / "run"
        run.mkdir()
        row = {"split": "train", "step": 1, "epoch": 1, "loss": 1.0}
        (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        assert plot_curves([run], tmp_path / "curves.png").stat().st_size > 0
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
