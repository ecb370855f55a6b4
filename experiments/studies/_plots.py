"""Plot helpers shared by the schrodinger and stiff studies (not a study: the leading underscore)."""

from __future__ import annotations


def log_ticks(ax, axis: str = "y", numticks: int = 6) -> None:
    """At most `numticks` plain-text decades on a log axis, no minor ticks.

    Quantities here span up to 300 decades; matplotlib's default mathtext label per decade
    would dominate a study's run time.
    """
    from matplotlib import ticker

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(ticker.LogLocator(numticks=numticks))
    target.set_minor_locator(ticker.NullLocator())
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.0e}"))
