"""Solver overhead of `odenets.odeint` against a hand-written scan and diffrax.

    python experiments/benchmarks/solver_overhead.py [--repeats N] [--quick]

Part 1 times jit(value_and_grad(loss)) for one fixed-step RK4 solve of an MLP vector field,
loss = mean(x(t1) ** 2), differentiated with respect to the parameters and x0, computed four
ways in the same process:

    odenets            on.odeint(..., integrator=on.RK4(), gradient=on.Backprop())
    hand-written scan  lax.scan over classic RK4 stages, plain JAX autodiff
    diffrax default    classic RK4 tableau, dt0 = 1/steps, default adjoint and max_steps
    diffrax tuned      StepTo on the same grid, RecursiveCheckpointAdjoint(checkpoints=steps),
                       max_steps=steps

Each is compiled, called twice more, then timed `--repeats` times (round robin across the
four, so slow drifts of the machine hit all of them alike); the minimum is reported. The four
losses and gradients are compared as a check that the same thing is being timed.

Part 2 reports XLA's temporary buffer size (`memory_analysis().temp_size_in_bytes`) of the
compiled value_and_grad for every gradient strategy at a short and a long solve: Adjoint and
Reversible should not grow with the step count.

EQX_ON_ERROR=nan is set (unless already set) before equinox is imported, for the whole
process: runtime error checks (diffrax's, and odenets' non-finite x0 check) then write NaN
instead of calling back to the host. It changes no results of a successful solve.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import rel_discrepancy, temp_bytes, time_all  # noqa: E402  (sets EQX_ON_ERROR first)

import odenets as on  # noqa: E402

FULL = dict(steps=50, batch=256, width=64, hidden=256, repeats=20)
QUICK = dict(steps=4, batch=8, width=4, hidden=8, repeats=2)
MEMORY_STEPS = (16, 1024)
QUICK_MEMORY_STEPS = (4, 64)
FLAT_LIMIT = 1.2
TARGET_SCAN = 1.10  # odenets / hand-written scan must not exceed this
TARGET_TUNED = 1.00  # tuned diffrax / odenets must be at least this
TOLERANCE = 1e-4


# -- the problem ------------------------------------------------------------------------------
def field(t, x, p):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def make_problem(batch, width, hidden, seed=0):
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(seed), 5)
    params = {
        "W1": jax.random.normal(k1, (width, hidden), jnp.float32) / np.sqrt(width),
        "b1": 0.1 * jax.random.normal(k2, (hidden,), jnp.float32),
        "W2": jax.random.normal(k3, (hidden, width), jnp.float32) / np.sqrt(hidden),
        "b2": 0.1 * jax.random.normal(k4, (width,), jnp.float32),
    }
    x0 = jax.random.normal(k5, (batch, width), jnp.float32)
    return params, x0


# -- the four solvers: (params, x0) -> x(t1) ----------------------------------------------------
def odenets_solve(steps, integrator=None, gradient=None):
    integrator = integrator or on.RK4()
    gradient = gradient or on.Backprop()

    def solve(params, x0):
        return on.odeint(field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient,
                         args=params, save="final").x

    return solve


def scan_solve(steps):
    def solve(params, x0):
        h = 1.0 / steps

        def body(x, t):
            k1 = field(t, x, params)
            k2 = field(t + h / 2, x + (h / 2) * k1, params)
            k3 = field(t + h / 2, x + (h / 2) * k2, params)
            k4 = field(t + h, x + h * k3, params)
            return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), None

        ts = h * jnp.arange(steps, dtype=x0.dtype)
        x, _ = jax.lax.scan(body, x0, ts)
        return x

    return solve


class ClassicRK4(diffrax.AbstractERK):
    """Classic RK4 (1/6, 1/3, 1/3, 1/6) for diffrax; no embedded error estimate (fixed steps)."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        c=np.array([0.5, 0.5, 1.0]),
    )

    @staticmethod
    def interpolation_cls(t0, t1, y0, y1, k):
        # linear dense output between step ends (only SaveAt(t1=True) is used here); the
        # stage values k that Runge-Kutta solvers pass along are not needed for it
        del k
        return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)

    def order(self, terms):
        del terms
        return 4


def diffrax_default_solve(steps, solver=None):
    """diffrax with its default settings; `solver` defaults to the classic RK4 tableau above."""
    solver = solver or ClassicRK4()

    def solve(params, x0):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), solver, 0.0, 1.0, 1.0 / steps, x0,
                                  args=params, saveat=diffrax.SaveAt(t1=True))
        return sol.ys[0]

    return solve


def diffrax_tuned_solve(steps, solver=None):
    """diffrax tuned for fixed steps: StepTo, one checkpoint per step (EQX_ON_ERROR=nan is process-wide)."""
    solver = solver or ClassicRK4()

    def solve(params, x0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, 1.0, None, x0, args=params,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.StepTo(ts=jnp.linspace(0.0, 1.0, steps + 1)),
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=steps),
            max_steps=steps,
        )
        return sol.ys[0]

    return solve


def value_and_grad(solve):
    """jit(value_and_grad) of loss = mean(x(t1)^2) with respect to (params, x0)."""

    def loss(params, x0):
        return jnp.mean(solve(params, x0) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


# -- part 1: timing -----------------------------------------------------------------------------




def run_timing(cfg, repeats):
    steps = cfg["steps"]
    params, x0 = make_problem(cfg["batch"], cfg["width"], cfg["hidden"])
    fns = {
        "odenets": value_and_grad(odenets_solve(steps)),
        "hand-written scan": value_and_grad(scan_solve(steps)),
        "diffrax default": value_and_grad(diffrax_default_solve(steps)),
        "diffrax tuned": value_and_grad(diffrax_tuned_solve(steps)),
    }
    print(f"== timing: RK4, {steps} steps, t in [0, 1], batch {cfg['batch']}, width {cfg['width']}, "
          f"hidden {cfg['hidden']}, float32; jit(value_and_grad) w.r.t. (params, x0)")
    print(f"   compile + 2 warm-up calls, then min over {repeats} round-robin repeats")
    best, compile_s, outs = time_all(fns, (params, x0), repeats)

    ref = best["odenets"]
    print(f"{'solver':<20} {'min (ms)':>10} {'vs odenets':>11} {'compile (s)':>12}")
    for name in fns:
        print(f"{name:<20} {1e3 * best[name]:>10.2f} {best[name] / ref:>10.2f}x {compile_s[name]:>12.2f}")

    r_scan = best["odenets"] / best["hand-written scan"]
    r_tuned = best["diffrax tuned"] / best["odenets"]
    r_default = best["diffrax default"] / best["odenets"]
    ok_scan, ok_tuned = r_scan <= TARGET_SCAN, r_tuned >= TARGET_TUNED
    print(f"odenets / hand-written scan = {r_scan:.2f}x (target <= {TARGET_SCAN:.2f}) "
          f"{'PASS' if ok_scan else 'FAIL'}")
    print(f"tuned diffrax / odenets = {r_tuned:.2f}x (target >= {TARGET_TUNED:.2f}) "
          f"{'PASS' if ok_tuned else 'FAIL'}")
    print(f"default diffrax / odenets = {r_default:.2f}x (no target)")

    disc = {name: rel_discrepancy(outs[name], outs["odenets"]) for name in fns if name != "odenets"}
    worst = max(disc.values())
    ok_num = worst <= TOLERANCE
    print("agreement with odenets (max over loss and gradient leaves of max|diff| / max|odenets|):")
    for name, d in disc.items():
        print(f"   {name:<20} {d:.2e}")
    print(f"max discrepancy = {worst:.2e} (tolerance {TOLERANCE:.0e}) {'PASS' if ok_num else 'FAIL'}")
    loss = float(outs["odenets"][0])
    print(f"loss = {loss:.6f}")
    return {"times": best, "compile": compile_s, "odenets/scan": r_scan, "tuned/odenets": r_tuned,
            "default/odenets": r_default, "discrepancy": worst,
            "pass": {"scan": ok_scan, "tuned": ok_tuned, "numerics": ok_num}}


# -- part 2: memory -----------------------------------------------------------------------------
MEMORY_CASES = (
    ("Backprop", "RK4", on.Backprop, on.RK4, False),
    ("Checkpoint", "RK4", on.Checkpoint, on.RK4, False),
    ("Adjoint", "RK4", on.Adjoint, on.RK4, True),
    ("Reversible", "ReversibleHeun", on.Reversible, on.ReversibleHeun, True),
    ("Backprop", "ReversibleHeun", on.Backprop, on.ReversibleHeun, False),
)




def run_memory(cfg, memory_steps):
    params, x0 = make_problem(cfg["batch"], cfg["width"], cfg["hidden"])
    lo, hi = memory_steps
    print(f"== memory: temp_size_in_bytes of compiled jit(value_and_grad), batch {cfg['batch']}, "
          f"width {cfg['width']}, hidden {cfg['hidden']}, float32")
    print(f"{'gradient':<12} {'integrator':<16} {f'{lo} steps':>14} {f'{hi} steps':>14} "
          f"{f'{hi}/{lo}':>9}  flat?")
    results, all_ok = {}, True
    for grad_name, integ_name, grad_cls, integ_cls, must_be_flat in MEMORY_CASES:
        sizes = [temp_bytes(value_and_grad(odenets_solve(n, integ_cls(), grad_cls())), params, x0)
                 for n in (lo, hi)]
        ratio = sizes[1] / max(sizes[0], 1)
        verdict = "-"
        if must_be_flat:
            ok = ratio <= FLAT_LIMIT
            all_ok &= ok
            verdict = f"{'PASS' if ok else 'FAIL'} (<= {FLAT_LIMIT})"
        results[(grad_name, integ_name)] = (sizes[0], sizes[1], ratio)
        print(f"{grad_name:<12} {integ_name:<16} {sizes[0]:>14,d} {sizes[1]:>14,d} {ratio:>8.2f}x  {verdict}")
    return {"sizes": results, "pass": all_ok}


# -- entry point --------------------------------------------------------------------------------
def header():
    devices = jax.devices()
    print("== solver overhead benchmark")
    print(f"python {platform.python_version()}, jax {jax.__version__}, jaxlib "
          f"{jax.lib.__version__ if hasattr(jax.lib, '__version__') else '?'}, diffrax "
          f"{diffrax.__version__}, equinox {eqx.__version__}")
    print(f"platform {platform.platform()}, {platform.machine()}; os.cpu_count() = {os.cpu_count()}, "
          f"usable CPUs = {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")
    print(f"jax backend {jax.default_backend()}, devices {[str(d) for d in devices]}")
    print(f"EQX_ON_ERROR={os.environ.get('EQX_ON_ERROR')} for this whole process (set before equinox "
          f"is imported; only changes how runtime error checks fail)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per solver (default 20)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--skip-memory", action="store_true", help="only the timing part")
    opts = parser.parse_args(argv)

    cfg = dict(QUICK if opts.quick else FULL)
    repeats = opts.repeats if opts.repeats is not None else cfg["repeats"]
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    header()
    start = time.perf_counter()
    timing = run_timing(cfg, repeats)
    print()
    memory = None
    if not opts.skip_memory:
        memory = run_memory(cfg, QUICK_MEMORY_STEPS if opts.quick else MEMORY_STEPS)
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")
    sys.stdout.flush()
    return {"timing": timing, "memory": memory}


if __name__ == "__main__":
    main()
