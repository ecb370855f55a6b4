"""Every registered study at one size, each into runs/<name>/, and an index of their findings."""

from __future__ import annotations

import dataclasses

from odenets import study as studies
from odenets._abstract import final


@final
@dataclasses.dataclass(frozen=True)
class Options:
    only: tuple[str, ...] = ()  # run just these studies (all when empty)


@final
@studies.study.register("all_studies")
class AllStudies(studies.Study):
    title = "All studies"
    claim = "Every study of odenets, run at one size: the index of what reproduces and what does not."
    sizes = {"smoke": Options(), "full": Options()}  # every study runs at the size chosen
    aggregate = True

    def run(self, options: Options, report: studies.Report) -> None:
        names = [n for n in studies.load().names() if not studies.study.get(n).aggregate]
        unknown = [n for n in options.only if n not in names]
        if unknown:
            raise ValueError(f"study.only: unknown studies {unknown}; valid choices: {', '.join(names)}")
        size, rows = report.config.size, []
        for name in options.only or names:
            results = studies.run({"name": name, "size": size}, report.subdir(name), report.seed)
            rows.append([name, studies.study.get(name).title, results["findings_held"], results["findings_total"],
                         results["wall_time_s"], f"runs/{name}/report.md"])
            for key, finding in results["findings"].items():
                report.finding(f"{name}.{key}", **finding)
        report.setup(f"Each study runs at size `{size}` into runs/<name>/ of this directory.")
        report.table("index", ["study", "title", "findings held", "findings", "wall time (s)", "report"], rows)
