"""odenets against a hand-written scan, diffrax and torchdiffeq (`python -m experiments.benchmarks`).

A case module has FULL and QUICK configs, `measure(cfg, torch_python)` (JSON data: results/<case>.json),
`goals(data)`, `fields(data)` (the placeholders of templates/<case>.md) and `figures(data, fig_dir)`:
RESULTS.md is rendered from the JSON alone. torch_worker.py runs under another interpreter and imports
no JAX, hence nothing heavy here."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("EQX_ON_ERROR", "nan")  # equinox reads it at import: error checks become lax.cond

CASES = {"sizes": "1, 5", "adaptive": "2", "memory": "3", "compile": "4", "throughput": "6", "scaleout": "8"}
