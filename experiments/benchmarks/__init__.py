"""odenets against a hand-written scan, diffrax and torchdiffeq: one module per case.

    python -m experiments.benchmarks [--quick] [--cases sizes,...] [--out DIR] [--torch-python PY|none]
                                     [--render-only]

Each case module has `FULL` and `QUICK` configs, `measure(cfg, torch_python) -> dict` (plain JSON
data, written to results/<case>.json), `goals(data)`, `fields(data)` (the placeholders of
templates/<case>.md) and `figures(data, fig_dir)`. RESULTS.md is rendered from the JSON alone,
so `--render-only` rebuilds it (and the figures) without measuring. torch peers run in
`torch_worker.py` under another interpreter; it imports no JAX, hence nothing heavy here.
"""

import os

os.environ.setdefault("EQX_ON_ERROR", "nan")  # equinox reads it at import: error checks become lax.cond

CASES = {"sizes": "1, 5", "adaptive": "2", "memory": "3", "compile": "4", "throughput": "6"}
