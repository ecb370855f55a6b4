"""Every registered study at one size, each into runs/<name>/, and an index of their findings.

    odenets run experiment=all_studies                                   every study, full size
    odenets run experiment=all_studies study.size=smoke '+study.only=[lesion,spiral]'

The index (report.md) has one row per study: its verdict (findings held of findings), wall time,
report and headline figure (the first figure it drew). A study that raises is reported as failed,
with its error in the index and its traceback in runs/<name>/error.txt, and the others still run.
"""

from __future__ import annotations

import dataclasses
import traceback

from odenets import study as studies
from odenets._abstract import final


@final
@dataclasses.dataclass(frozen=True)
class Options:
    only: tuple[str, ...] = ()  # run just these studies, in this order (all when empty)


@final
@studies.study.register("all_studies")
class AllStudies(studies.Study):
    title = "All studies"
    claim = "Every study of odenets, run at one size: the index of what reproduces and what does not."
    sizes = {"smoke": Options(), "full": Options()}  # every study runs at the size chosen
    aggregate = True

    def run(self, options: Options, report: studies.Report) -> None:
        names = [n for n in studies.load().names() if not studies.study.get(n).aggregate]
        chosen = tuple(options.only)
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise ValueError(f"study.only: unknown studies {unknown}; valid choices: {', '.join(names)}")
        size, rows, counts = report.config.size, [], []
        for name in chosen or names:
            out = report.subdir(name)
            try:
                results = studies.run({"name": name, "size": size}, out, report.seed)
            except Exception as err:  # a failing study is reported; the others still run
                (out / "error.txt").write_text(traceback.format_exc())
                message = f"{type(err).__name__}: {err}".replace("\n", " ").replace("|", "/")
                report.finding(f"{name}.ran", False, "the study runs to its end", message)
                rows.append([name, studies.study.get(name).title, f"failed ({message[:200]})", None,
                             f"[error](runs/{name}/error.txt)", "-"])
                counts.append((name, 0, 0, True))
                continue
            held, total = results["findings_held"], results["findings_total"]
            headline = results.get("figures", [])[:1]
            figure = f"![{name}](runs/{name}/{headline[0]})" if headline else "-"
            rows.append([name, studies.study.get(name).title, f"{held} of {total} hold", results["wall_time_s"],
                         f"[report](runs/{name}/report.md)", figure])
            counts.append((name, held, total, False))
            for key, finding in results["findings"].items():
                report.finding(f"{name}.{key}", **finding)
        report.setup(f"Each study runs at size `{size}` into runs/<name>/ of this directory"
                     + (f"; chosen: {', '.join(chosen)}." if chosen else "."))
        report.table("index", ["study", "title", "verdict", "wall time (s)", "report", "headline figure"], rows)
        failed = [name for name, *_, bad in counts if bad]
        report.value("failed", failed)
        if failed:
            report.note(f"{len(failed)} of {len(counts)} studies failed: {', '.join(failed)} "
                        "(tracebacks in runs/<name>/error.txt).")
        report.figure("verdicts", _verdicts(counts), "Findings that hold (green), do not (orange), failed (red)")


def _verdicts(counts):
    """Horizontal bars per study: findings held, findings not held, and failed studies."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.3 * len(counts) + 1.2))
    ys = range(len(counts))
    held = [h for _, h, _, _ in counts]
    ax.barh(ys, held, color="tab:green", label="holds")
    ax.barh(ys, [t - h for _, h, t, _ in counts], left=held, color="tab:orange", label="does not hold")
    ax.barh(ys, [1 if bad else 0 for *_, bad in counts], color="tab:red", label="study failed")
    ax.set_yticks(list(ys), [name for name, *_ in counts])
    ax.invert_yaxis()
    ax.set_xlabel("findings")
    ax.legend(loc="lower right", fontsize=8)
    return fig
