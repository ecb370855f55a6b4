"""What the torch workers share. Imports neither torch at module load nor JAX ever.

A worker calls `import_torch()` first and exits TORCH_MISSING when it returns None (the case
then carries on without its torch peer), and puts `versions(torch, torchdiffeq)` into the JSON
line it prints last.
"""

from __future__ import annotations

import os
import sys

TORCH_MISSING = 3  # exit status of a worker that cannot import torch / torchdiffeq


def import_torch():
    """(numpy, torch, torchdiffeq), or None after printing "not installed: ..."."""
    try:
        import numpy
        import torch
        import torchdiffeq
    except ImportError as exc:
        print(f"not installed: {exc}")
        return None
    return numpy, torch, torchdiffeq


def versions(torch, torchdiffeq) -> dict:
    """The peer's versions and threads, as RESULTS.md reports them."""
    return {"torch": torch.__version__, "torchdiffeq": getattr(torchdiffeq, "__version__", "?"),
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def classic_rk4():
    """Register a fixed-grid classic RK4 (1/6, 1/3, 1/3, 1/6) with torchdiffeq, whose own "rk4" is
    the 3/8 rule, from its `rk_common.rk4_step_func`; returns (method name, rule). Falls back to
    the 3/8 rule, and says so, where those internals are missing."""
    import importlib

    try:
        odeint_mod = importlib.import_module("torchdiffeq._impl.odeint")  # the module, not the function
        from torchdiffeq._impl.rk_common import rk4_step_func
        from torchdiffeq._impl.solvers import FixedGridODESolver
    except (ImportError, AttributeError) as exc:
        print(f"classic RK4 unavailable ({exc!r}); using torchdiffeq's 3/8 rule", file=sys.stderr)
        return "rk4", "3/8 (torchdiffeq rk4)"

    class ClassicRK4(FixedGridODESolver):
        order = 4

        def _step_func(self, func, t0, dt, t1, y0):
            f0 = func(t0, y0)
            return rk4_step_func(func, t0, dt, t1, y0, f0=f0), f0

    odeint_mod.SOLVERS["rk4_classic"] = ClassicRK4
    return "rk4_classic", "classic (torchdiffeq rk4_step_func)"
