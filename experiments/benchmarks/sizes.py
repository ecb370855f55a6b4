"""odenets against a hand-written scan, diffrax and torchdiffeq, from the overhead floor to compute-bound.

    python experiments/benchmarks/sizes.py [--quick] [--out RESULTS.md] [--torch-python PY]

For each size (width, batch, hidden, steps) and each fixed-step integrator (RK4, Euler) times
jit(value_and_grad(loss)) with loss = mean(x(1) ** 2), the MLP field of solver_overhead.py
(tanh, float32, t in [0, 1]), differentiated with respect to the parameters and x0:

    odenets            on.odeint(..., integrator=RK4()/Euler(), gradient=Backprop())
    hand-written scan  lax.scan over the same stages, plain JAX autodiff (the limit)
    diffrax default    custom classic RK4 tableau / diffrax.Euler, dt0 = 1/steps, defaults
    diffrax tuned      StepTo on the same grid, RecursiveCheckpointAdjoint(checkpoints=steps),
                       max_steps=steps
    torchdiffeq        odeint(method=classic rk4 / euler) on the same grid, backward through
                       the solver, in a subprocess (torch_peer.py) with torch.set_num_threads
                       and OMP_NUM_THREADS equal to this process' usable CPUs

The JAX peers come from solver_overhead.py (same process, round robin, compile + 2 warm-up
calls, minimum of repeats, block_until_ready). The torch peer takes the minimum of its repeats
after 2 warm-up calls. Losses (and gradients) of every method are compared with odenets'.

torchdiffeq runs under `--torch-python` (default $ODENETS_TORCH_PYTHON, else this interpreter);
when torch / torchdiffeq cannot be imported there it says so and the rest carries on.
"""

from __future__ import annotations

import os

os.environ.setdefault("EQX_ON_ERROR", "nan")  # must precede the import of equinox

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import solver_overhead as so  # noqa: E402

import odenets as on  # noqa: E402

# (label, width, batch, hidden, steps, repeats); the first two are "small", the last compute-bound
FULL = (
    ("floor", 4, 1, 16, 1000, 20),
    ("mid", 64, 256, 256, 50, 10),
    ("compute", 512, 1024, 512, 20, 3),
)
QUICK = (  # two sizes only, so that the smoke test stays under 30 s (compiles dominate)
    ("floor", 2, 1, 4, 20, 2),
    ("compute", 8, 8, 16, 3, 2),
)
SMALL = ("floor", "mid")
STAGES = {"rk4": 4, "euler": 1}
METHODS = ("odenets", "hand-written scan", "diffrax default", "diffrax tuned", "torchdiffeq")
TOLERANCE = 1e-4
GOAL_SCAN = 1.10  # odenets / scan <= this at every size
GOAL_TUNED_SMALL, GOAL_TUNED_COMPUTE = 1.5, 1.3  # diffrax tuned / odenets >= these
GOAL_TORCH_SMALL, GOAL_TORCH_COMPUTE = 10.0, 1.0  # torchdiffeq / odenets >= these
NOT_INSTALLED = "torchdiffeq: not installed (pip install -e .[bench])"


# -- the Euler scan peer (the RK4 and diffrax builders are solver_overhead's) --------------------
def scan_euler_solve(steps):
    def solve(params, x0):
        h = 1.0 / steps

        def body(x, t):
            return x + h * so.field(t, x, params), None

        x, _ = jax.lax.scan(body, x0, h * jnp.arange(steps, dtype=x0.dtype))
        return x

    return solve


def jax_peers(integrator, steps):
    if integrator == "rk4":
        solves = {"odenets": so.odenets_solve(steps, on.RK4()),
                  "hand-written scan": so.scan_solve(steps),
                  "diffrax default": so.diffrax_default_solve(steps),
                  "diffrax tuned": so.diffrax_tuned_solve(steps)}
    else:
        solves = {"odenets": so.odenets_solve(steps, on.Euler()),
                  "hand-written scan": scan_euler_solve(steps),
                  "diffrax default": so.diffrax_default_solve(steps, diffrax.Euler()),
                  "diffrax tuned": so.diffrax_tuned_solve(steps, diffrax.Euler())}
    return {name: so.value_and_grad(s) for name, s in solves.items()}


# -- machine ----------------------------------------------------------------------------------
def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def sgemm_gflops(n=1024, repeats=20):
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    for _ in range(3):
        jax.block_until_ready(mm(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops(integrator, width, batch, hidden, steps):
    """2 * batch * (width*hidden*2) per f evaluation (the two matmuls), x stages x steps, x3 (fwd + bwd)."""
    return 3 * STAGES[integrator] * steps * 2 * batch * (width * hidden * 2)


# -- torch peer -------------------------------------------------------------------------------
def run_torch(python, params, x0, steps, repeats, threads, tmp):
    problem = Path(tmp) / f"problem_{steps}_{x0.shape[0]}_{x0.shape[1]}.npz"
    out = problem.with_name(problem.stem + "_out.npz")
    np.savez(problem, x0=np.asarray(x0), **{k: np.asarray(v) for k, v in params.items()})
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [python, str(HERE / "torch_peer.py"), "--problem", str(problem), "--steps", str(steps),
           "--methods", "rk4,euler", "--repeats", str(repeats), "--threads", str(threads), "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"torchdiffeq: failed to run ({exc})")
        return None
    if proc.returncode == 3:  # torch or torchdiffeq not importable under `python`
        return NOT_INSTALLED
    if proc.returncode != 0:
        print(f"torchdiffeq: peer failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
        return None
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    arrays = np.load(out)
    for method in info["methods"]:
        grads = ({k: arrays[f"{method}/{k}"] for k in params}, arrays[f"{method}/x0"])
        info["methods"][method]["out"] = (arrays[f"{method}/loss"], grads)
    return info


# -- main -------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (smoke test)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown results file")
    parser.add_argument("--torch-python", default=os.environ.get("ODENETS_TORCH_PYTHON", sys.executable),
                        help="interpreter with torch + torchdiffeq for the torch peer")
    opts = parser.parse_args(argv)
    sizes = QUICK if opts.quick else FULL
    threads = usable_cpus()
    wall = time.perf_counter()

    have_torch = True  # until the peer says otherwise (it exits 3 when torch / torchdiffeq are missing)
    gemm = sgemm_gflops()
    print(f"SGEMM 1024x1024 float32 (jax): {gemm:.1f} GFLOP/s; usable CPUs {threads}")

    rows, torch_info, worst = [], None, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, batch, hidden, steps, repeats in sizes:
            params, x0 = so.make_problem(batch, width, hidden)
            tinfo = run_torch(opts.torch_python, params, x0, steps, repeats, threads, tmp) if have_torch else None
            if tinfo == NOT_INSTALLED:
                print(NOT_INSTALLED)
                have_torch, tinfo = False, None
            if tinfo is not None:
                torch_info = tinfo
            for integ in ("rk4", "euler"):
                fns = jax_peers(integ, steps)
                best, _, outs = so.time_all(fns, (params, x0), repeats)
                if tinfo is not None:
                    best["torchdiffeq"] = tinfo["methods"][integ]["seconds"]
                    outs["torchdiffeq"] = tinfo["methods"][integ]["out"]
                ref, ref_loss = best["odenets"], float(outs["odenets"][0])
                fl = flops(integ, width, batch, hidden, steps)
                print(f"== {label}: {integ}, width {width}, batch {batch}, hidden {hidden}, steps {steps}, "
                      f"min of {repeats}")
                for name in METHODS:
                    if name not in best:
                        continue
                    loss = float(outs[name][0])
                    rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
                    grad_rel = so.rel_discrepancy(outs[name], outs["odenets"])
                    worst[(label, integ, name)] = rel
                    row = dict(size=label, integ=integ, method=name, width=width, batch=batch, hidden=hidden,
                               steps=steps, ms=1e3 * best[name], ratio=best[name] / ref,
                               us_step=1e6 * best[name] / steps, gflops=fl / best[name] / 1e9,
                               loss=loss, rel=rel, grad_rel=grad_rel)
                    rows.append(row)
                    print(f"   {name:<18} {row['ms']:>10.3f} ms {row['ratio']:>7.2f}x  "
                          f"{row['us_step']:>9.2f} us/step {row['gflops']:>8.2f} GFLOP/s  loss {loss:.7f} "
                          f"rel {rel:.1e} grad rel {grad_rel:.1e}")
    agreement = max(worst.values())
    ok_agree = agreement <= TOLERANCE
    print(f"max relative loss discrepancy vs odenets = {agreement:.2e} (tolerance {TOLERANCE:.0e}) "
          f"{'PASS' if ok_agree else 'FAIL'}")
    goals = evaluate_goals(rows, have_torch and torch_info is not None)
    for g in goals:
        print(f"goal: {g[0]}: {g[1]}")
    text = markdown(rows, goals, sizes, gemm, threads, torch_info, have_torch, agreement, ok_agree,
                    opts.quick, time.perf_counter() - wall)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(text)
    print(f"wrote {opts.out} ({time.perf_counter() - wall:.1f} s)")
    return 0 if ok_agree else 1


def ratio_of(rows, size, integ, method):
    for r in rows:
        if (r["size"], r["integ"], r["method"]) == (size, integ, method):
            return r["ratio"]
    return None


def evaluate_goals(rows, have_torch):
    """[(goal, verdict)]: each goal checked at every (size, integrator); misses say by how much."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    goals = []

    def check(desc, method, target, cmp, size_filter, invert=False):
        misses, seen = [], []
        for s in sizes:
            if not size_filter(s):
                continue
            for integ in ("rk4", "euler"):
                r = ratio_of(rows, s, integ, method)
                if r is None:
                    continue
                val = 1.0 / r if invert else r
                seen.append(f"{s}/{integ} {val:.2f}x")
                if not cmp(val, target):
                    gap = abs(val - target) / target
                    misses.append(f"{s}/{integ} {val:.2f}x (goal {target:.2f}x, {100 * gap:.0f}% "
                                  f"{'above' if invert else 'below'} it)")
        if not seen:
            return goals.append((desc, "NOT MEASURED"))
        verdict = "MET" if not misses else "MISSED at " + "; ".join(misses)
        goals.append((desc, f"{verdict} [measured: {', '.join(seen)}]"))

    check(f"odenets <= {GOAL_SCAN:.2f}x hand-written scan at every size (odenets / scan)",
          "hand-written scan", GOAL_SCAN, lambda v, t: v <= t, lambda s: True, invert=True)
    check(f"diffrax tuned >= {GOAL_TUNED_SMALL:.1f}x odenets at small sizes ({', '.join(SMALL)})",
          "diffrax tuned", GOAL_TUNED_SMALL, lambda v, t: v >= t, lambda s: s in SMALL)
    check(f"diffrax tuned >= {GOAL_TUNED_COMPUTE:.1f}x odenets at compute-bound",
          "diffrax tuned", GOAL_TUNED_COMPUTE, lambda v, t: v >= t, lambda s: s not in SMALL)
    if have_torch:
        check(f"torchdiffeq >= {GOAL_TORCH_SMALL:.0f}x odenets at small sizes ({', '.join(SMALL)})",
              "torchdiffeq", GOAL_TORCH_SMALL, lambda v, t: v >= t, lambda s: s in SMALL)
        check(f"torchdiffeq >= {GOAL_TORCH_COMPUTE:.1f}x odenets (parity) at compute-bound",
              "torchdiffeq", GOAL_TORCH_COMPUTE, lambda v, t: v >= t, lambda s: s not in SMALL)
    else:
        goals.append(("torchdiffeq goals", "NOT MEASURED (" + NOT_INSTALLED + ")"))
    return goals


def markdown(rows, goals, sizes, gemm, threads, torch_info, have_torch, agreement, ok_agree, quick, wall):
    try:
        from importlib.metadata import version
        odenets_version = version("odenets")
    except Exception:  # noqa: BLE001
        odenets_version = "?"
    lines = [
        "# odenets vs scan, diffrax and torchdiffeq across sizes" + (" (--quick: smoke sizes)" if quick else ""),
        "",
        "Generated by `python experiments/benchmarks/sizes.py" + (" --quick" if quick else "") + "`.",
        "",
        f"- machine: {cpu_model()}, {platform.machine()}, {platform.platform()}; os.cpu_count() = "
        f"{os.cpu_count()}, usable CPUs = {threads}",
        f"- python {platform.python_version()}, jax {jax.__version__}, diffrax {diffrax.__version__}, "
        f"equinox {eqx.__version__}, numpy {np.__version__}, odenets {odenets_version}",
        "- torch: " + (f"{torch_info['torch']}, torchdiffeq {torch_info['torchdiffeq']}, "
                       f"torch.set_num_threads({torch_info['threads']}), OMP_NUM_THREADS="
                       f"{torch_info['omp_num_threads']}, RK4 rule: {torch_info['rk4_rule']}"
                       if torch_info else NOT_INSTALLED),
        f"- JAX backend {jax.default_backend()}; EQX_ON_ERROR={os.environ.get('EQX_ON_ERROR')}",
        f"- measured SGEMM rate (jit(jnp.matmul) 1024x1024 float32, min of 20): **{gemm:.1f} GFLOP/s**",
        f"- total wall time {wall:.0f} s",
        "",
        "Problem: dx/dt = tanh(x W1 + b1) W2 + b2, float32, t in [0, 1], fixed steps, "
        "loss = mean(x(1)^2), jit(value_and_grad) w.r.t. (params, x0) (torch: loss.backward() through "
        "odeint). Time = minimum over repeats after compile + 2 warm-up calls (JAX: block_until_ready, "
        "round robin; torch: its own subprocess). Ratio = time / odenets time (> 1: slower than odenets).",
        "",
        "FLOP count: 2 * batch * (width * hidden * 2) per f evaluation (the two matmuls; tanh, biases and "
        "the RK combinations not counted), x stages (RK4 4, Euler 1) x steps, x3 for forward + backward. "
        "GFLOP/s = that count / time; % SGEMM = against the measured SGEMM rate above.",
        "",
        "| size | integrator | method | width | batch | hidden | steps | ms | vs odenets | us/step | GFLOP/s "
        "| % SGEMM | loss | rel. loss diff | rel. grad diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['integ']} | {r['method']} | {r['width']} | {r['batch']} | {r['hidden']} | "
            f"{r['steps']} | {r['ms']:.3f} | {r['ratio']:.2f}x | {r['us_step']:.2f} | {r['gflops']:.2f} | "
            f"{100 * r['gflops'] / gemm:.1f}% | {r['loss']:.7f} | {r['rel']:.1e} | {r['grad_rel']:.1e} |")
    floor = [r for r in rows if r["size"] == sizes[0][0]]
    lines += ["", f"Overhead floor ({sizes[0][0]}: width {sizes[0][1]}, batch {sizes[0][2]}, hidden "
              f"{sizes[0][3]}, {sizes[0][4]} steps), microseconds per step (forward + backward):", "",
              "| method | rk4 us/step | euler us/step |", "|---|---|---|"]
    for m in METHODS:
        vals = {r["integ"]: r["us_step"] for r in floor if r["method"] == m}
        if vals:
            lines.append(f"| {m} | {vals.get('rk4', float('nan')):.2f} | {vals.get('euler', float('nan')):.2f} |")
    lines += ["", f"Agreement: max relative loss difference vs odenets over all rows = {agreement:.2e} "
              f"(tolerance {TOLERANCE:.0e}): {'PASS' if ok_agree else 'FAIL'}.", "",
              "## Goals", "", "| goal | verdict |", "|---|---|"]
    for desc, verdict in goals:
        lines.append(f"| {desc} | {verdict} |")
    if not have_torch:
        lines += ["", NOT_INSTALLED]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
