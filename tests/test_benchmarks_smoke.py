"""Smoke test of experiments/benchmarks/sizes.py --quick: it runs, writes a row per method and size,
and every method's loss agrees with odenets' to 1e-4 relative."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "sizes.py"
JAX_METHODS = ("odenets", "hand-written scan", "diffrax default", "diffrax tuned")
SIZES = ("floor", "compute")  # sizes.QUICK
TOLERANCE = 1e-4


def test_sizes_quick(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--md", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "max relative loss discrepancy vs odenets" in proc.stdout
    text = out.read_text()
    assert "GFLOP/s" in text and "SGEMM" in text and "### Goals" in text and "### Why" in text

    methods = list(JAX_METHODS)
    if "torchdiffeq: not installed" not in proc.stdout:
        methods.append("torchdiffeq")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 15 and cells[0] in SIZES:
            rows[(cells[0], cells[1], cells[2])] = cells
    for size in SIZES:
        for integ in ("rk4", "euler"):
            odenets_loss = float(rows[(size, integ, "odenets")][12])
            for method in methods:
                cells = rows.get((size, integ, method))
                assert cells is not None, f"no row for {size} / {integ} / {method}"
                assert re.fullmatch(r"[0-9.]+x", cells[8]), cells
                loss = float(cells[12])
                rel = abs(loss - odenets_loss) / abs(odenets_loss)
                assert rel <= TOLERANCE, (size, integ, method, loss, odenets_loss)
                assert float(cells[13]) <= TOLERANCE
