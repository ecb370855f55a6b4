"""Case 3: memory against step count for every gradient strategy, odenets, diffrax and torchdiffeq.

    python experiments/benchmarks/memory.py [--quick] [--md SECTION.md] [--json GOALS.json]
                                            [--fig-dir DIR] [--torch-python PY|none]

The MLP problem of problem.py (dx/dt = tanh(x W1 + b1) W2 + b2, float32, t in [0, 1],
fixed steps, loss = mean(x(1) ** 2)), jit(value_and_grad) with respect to (params, x0), at
16, 64, 256, 1024 and 4096 steps, computed by

    odenets    Backprop, Checkpoint, Adjoint with RK4; Backprop and Reversible with ReversibleHeun
    diffrax    RecursiveCheckpointAdjoint (default checkpoints) and BacksolveAdjoint, classic RK4
               tableau, dt0 = 1 / steps, max_steps = steps
    torch      torchdiffeq odeint (autograd through the solver) and odeint_adjoint, classic RK4
               on the same grid, one fresh process per (method, steps) (torch_memory.py)

Memory: for JAX, XLA's temporary buffer size of the compiled gradient (common.temp_bytes); for
torch, the worker's peak resident set after its first call minus its peak after setup. The two differ in kind
(compiled scratch buffers vs process pages) and are shown apart. From each series: the least-
squares slope in bytes per step and the ratio of the largest to the smallest step count.
Time: compile + 2 warm-up calls + minimum of repeats (round robin, block_until_ready) at the
timed step counts, as a ratio to odenets Backprop with the same integrator. Every result (loss
and gradients) is checked against odenets Backprop; the script exits 1 if any disagrees.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (first: sets EQX_ON_ERROR before equinox is imported)
import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import problem as so  # noqa: E402
from jax.ad_checkpoint import print_saved_residuals  # noqa: E402

import odenets as on  # noqa: E402

CASE = "memory"
FULL = dict(batch=64, width=32, hidden=64, steps=(16, 64, 256, 1024, 4096), timed=(256, 4096), torch_timed=(256,),
            diffrax_steps=(16, 64, 256, 1024, 4096), repeats=2, torch_repeats=1)
# diffrax compiles take ~3 s each whatever the size: the smoke test compiles them at one step count
QUICK = dict(batch=4, width=4, hidden=8, steps=(4, 16), timed=(16,), torch_timed=(16,), diffrax_steps=(16,),
             repeats=2, torch_repeats=1)
EXACT_TOL = 1e-4  # gradients of the discrete solve: float32 rounding only
ADJOINT_TOL = 1e-3  # continuous adjoints: plus the discretisation error of the backward solve
FLAT = 1.2  # Adjoint / Reversible: temp bytes at the most steps / at the fewest
SQRT_SLACK = 1.5  # Checkpoint: ratio <= this * sqrt(steps ratio)
RESIDUAL_STEPS = 7  # a step count equal to no array dimension, to find the per-step residuals

BACKPROP, BACKPROP_RH = "odenets Backprop, RK4", "odenets Backprop, ReversibleHeun"
CHECKPOINT, ADJOINT = "odenets Checkpoint, RK4", "odenets Adjoint, RK4"
REVERSIBLE = "odenets Reversible, ReversibleHeun"
RCP, BACKSOLVE = "diffrax RecursiveCheckpointAdjoint, RK4", "diffrax BacksolveAdjoint, RK4"
ODEINT, ODEINT_ADJOINT = "torchdiffeq odeint, RK4", "torchdiffeq odeint_adjoint, RK4"


@dataclass(frozen=True)
class Method:
    """A way to compute the gradient; it must agree with `reference` to `tolerance`."""

    label: str
    reference: str | None
    tolerance: float
    build: Callable[[int], Callable] | None = None  # steps -> solve(params, x0) -> x(1); None for torch
    torch_name: str | None = None


def diffrax_solve(steps, adjoint):
    return so.diffrax_default_solve(steps, adjoint=adjoint, max_steps=steps)


METHODS = (
    Method(BACKPROP, None, 0.0, lambda n: so.odenets_solve(n, on.RK4(), on.Backprop())),
    Method(CHECKPOINT, BACKPROP, EXACT_TOL, lambda n: so.odenets_solve(n, on.RK4(), on.Checkpoint())),
    Method(ADJOINT, BACKPROP, ADJOINT_TOL, lambda n: so.odenets_solve(n, on.RK4(), on.Adjoint())),
    Method(BACKPROP_RH, None, 0.0, lambda n: so.odenets_solve(n, on.ReversibleHeun(), on.Backprop())),
    Method(REVERSIBLE, BACKPROP_RH, EXACT_TOL,
           lambda n: so.odenets_solve(n, on.ReversibleHeun(), on.Reversible())),
    Method(RCP, BACKPROP, EXACT_TOL, lambda n: diffrax_solve(n, diffrax.RecursiveCheckpointAdjoint())),
    Method(BACKSOLVE, BACKPROP, ADJOINT_TOL, lambda n: diffrax_solve(n, diffrax.BacksolveAdjoint())),
    Method(ODEINT, BACKPROP, EXACT_TOL, torch_name="odeint"),
    Method(ODEINT_ADJOINT, BACKPROP, ADJOINT_TOL, torch_name="odeint_adjoint"),
)
JAX_METHODS = [m for m in METHODS if m.build is not None]
TORCH_METHODS = [m for m in METHODS if m.torch_name is not None]
TIME_REFERENCE = {REVERSIBLE: BACKPROP_RH, BACKPROP_RH: BACKPROP_RH}  # others: BACKPROP


# -- measurements -------------------------------------------------------------------------------
def measure_jax(cfg, params, x0):
    """Temp bytes (and compile seconds) at every step count; time and outputs where timed."""
    temp, compile_s, seconds, outs = {}, {}, {}, {}
    for steps in cfg["steps"]:
        fns = {m.label: so.value_and_grad(m.build(steps)) for m in JAX_METHODS
               if not m.label.startswith("diffrax") or steps in cfg["diffrax_steps"]}
        for label, fn in fns.items():
            start = time.perf_counter()
            temp[label, steps] = common.temp_bytes(fn, params, x0)  # compiles; fn(...) reuses it
            compile_s[label, steps] = time.perf_counter() - start
        if steps in cfg["timed"]:
            best, _, out = common.time_all(fns, (params, x0), cfg["repeats"])
            seconds.update({(label, steps): s for label, s in best.items()})
        else:
            out = {label: jax.block_until_ready(fn(params, x0)) for label, fn in fns.items()}
        outs.update({(label, steps): o for label, o in out.items()})
        print(f"-- {steps} steps: " + ", ".join(f"{label} {fmt_bytes(temp[label, steps])}"
                                                 for label in fns), flush=True)
    return temp, compile_s, seconds, outs


def measure_torch(python, cfg, params, x0):
    """RSS delta, time and outputs of each torch method at each step count, and its time with one thread
    at the torch-timed step counts; None if torch is missing."""
    rss, seconds, one_thread, outs, workers = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "problem.npz"
        np.savez(problem, x0=np.asarray(x0), **{k: np.asarray(v) for k, v in params.items()})

        def worker(m, steps, threads, repeats):
            out = Path(tmp) / f"{m.torch_name}_{steps}_{threads}.npz"
            argv = ["--problem", str(problem), "--method", m.torch_name, "--steps", str(steps),
                    "--repeats", str(repeats), "--threads", str(threads), "--out", str(out)]
            res = common.run_torch(python, "torch_memory.py", argv, threads=threads)
            return res, (np.load(out) if isinstance(res, dict) else None)

        for steps in cfg["steps"]:
            for m in TORCH_METHODS:
                repeats = cfg["torch_repeats"] if steps in cfg["torch_timed"] else 0
                res, arrays = worker(m, steps, common.usable_cpus(), repeats)
                if res == common.NOT_INSTALLED:
                    print(common.NOT_INSTALLED)
                    return None
                workers[m.label, steps], rss[m.label, steps] = res, res["rss_delta_bytes"]
                outs[m.label, steps] = (arrays["loss"], ({k: arrays[k] for k in params}, arrays["x0"]))
                print(f"-- torch {m.torch_name} {steps} steps: RSS delta {fmt_bytes(res['rss_delta_bytes'])}",
                      flush=True)
                if repeats:
                    seconds[m.label, steps] = res["seconds"]
                    single, _ = worker(m, steps, 1, repeats)
                    if isinstance(single, dict):
                        one_thread[m.label, steps] = single["seconds"]
                        print(f"   {1e3 * res['seconds']:.1f} ms; {1e3 * single['seconds']:.1f} ms with 1 thread")
    info = next(iter(workers.values()), None)
    return {"rss": rss, "seconds": seconds, "one_thread": one_thread, "outs": outs, "info": info,
            "workers": workers}


def residual_bytes_per_step(solve, params, x0):
    """Bytes reverse-mode autodiff keeps per step, and their shapes: the residuals listed by
    jax.ad_checkpoint.print_saved_residuals whose leading axis is the step count (solve built
    for RESIDUAL_STEPS steps)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(lambda p, x: jnp.mean(solve(p, x) ** 2), params, x0)
    total, shapes = 0, Counter()
    for kind, bits, dims in re.findall(r"\b([a-z]+)(\d+)\[([\d,]+)\]", buf.getvalue()):
        shape = [int(d) for d in dims.split(",")]
        if shape[0] == RESIDUAL_STEPS:
            total += math.prod(shape[1:]) * int(bits) // 8
            shapes[f"{kind}{bits}{shape[1:]}"] += 1
    return total, ", ".join(f"{count} x {shape}" for shape, count in shapes.items())




# -- analysis -----------------------------------------------------------------------------------
def series(values, label, steps):
    return [values.get((label, n)) for n in steps]


def slope_and_ratio(ys, steps):
    """Least-squares bytes per step over the measured points, and bytes(most) / bytes(fewest)."""
    pts = [(n, y) for n, y in zip(steps, ys) if y is not None]
    if len(pts) < 2 or pts[0][0] != steps[0] or pts[-1][0] != steps[-1]:
        return None, None
    ns, vs = map(np.asarray, zip(*pts))
    return float(np.polyfit(ns, vs, 1)[0]), float(vs[-1] / max(vs[0], 1))


def agreement(outs):
    """{(label, steps): discrepancy against the method's reference at the same steps}."""
    disc = {}
    for m in METHODS:
        if m.reference is None:
            continue
        for (label, steps), out in outs.items():
            if label == m.label and (m.reference, steps) in outs:
                disc[label, steps] = common.rel_discrepancy(out, outs[m.reference, steps])
    return disc


def make_goals(temp, steps):
    """The goals, each with the method it is about."""
    lo, hi = steps[0], steps[-1]
    ratio = lambda label: slope_and_ratio(series(temp, label, steps), steps)[1]
    worst = max((n for n in steps if (RCP, n) in temp), key=lambda n: temp[CHECKPOINT, n] / temp[RCP, n])
    flat = lambda label, name: common.Goal(CASE, f"{name} temp bytes flat: bytes({hi}) / bytes({lo})",
                                           ratio(label), FLAT, False)
    return [
        (ADJOINT, flat(ADJOINT, "Adjoint")),
        (REVERSIBLE, flat(REVERSIBLE, "Reversible")),
        (CHECKPOINT, common.Goal(CASE, f"Checkpoint temp bytes grow like sqrt(steps): bytes({hi}) / bytes({lo}) "
                                       f"<= {SQRT_SLACK} * sqrt({hi}/{lo})", ratio(CHECKPOINT),
                                 SQRT_SLACK * math.sqrt(hi / lo), False)),
        (CHECKPOINT, common.Goal(CASE, "odenets Checkpoint (sqrt(N) segments) / diffrax "
                                       "RecursiveCheckpointAdjoint (recursive) temp bytes, worst step count",
                                 temp[CHECKPOINT, worst] / temp[RCP, worst], 1.0, False, where=f"{worst} steps",
                                 info=True)),
    ]


# -- output -------------------------------------------------------------------------------------
def fmt_bytes(b) -> str:
    if b is None:
        return "-"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(b) >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def memory_rows(temp, rss, steps):
    rows, fits = [], {}
    for m in METHODS:
        values, kind = (rss, "peak RSS delta") if m.torch_name else (temp, "XLA temp")
        ys = series(values, m.label, steps)
        if all(y is None for y in ys):
            continue
        slope, ratio = slope_and_ratio(ys, steps)
        fits[m.label] = (slope, ratio)
        rows.append([m.label, kind, *(fmt_bytes(y) for y in ys),
                     "-" if slope is None else f"{slope:,.0f}", "-" if ratio is None else f"{ratio:.2f}x"])
    return rows, fits


def time_rows(seconds, compile_s, timed, hi):
    rows = []
    for m in METHODS:
        ref = TIME_REFERENCE.get(m.label, BACKPROP)
        cells = []
        for n in timed:
            s, r = seconds.get((m.label, n)), seconds.get((ref, n))
            cells += ["-", "-"] if s is None else [f"{1e3 * s:.1f}", f"{s / r:.2f}x" if r else "-"]
        if all(c == "-" for c in cells):
            continue
        comp = compile_s.get((m.label, hi))
        rows.append([m.label, ref.removeprefix("odenets "), *cells, "-" if comp is None else f"{comp:.1f}"])
    return rows


def draw_memory(temp, rss, steps):
    def draw(fig):
        ax = fig.add_subplot(111)
        for m in METHODS:
            values = rss if m.torch_name else temp
            pts = [(n, values[m.label, n]) for n in steps if values.get((m.label, n), 0) > 0]
            if not pts:
                continue
            style = dict(ls="--", marker="s", mfc="none") if m.torch_name else dict(ls="-", marker="o")
            ax.loglog(*zip(*pts), label=m.label + (" (peak RSS delta)" if m.torch_name else ""), **style)
        ax.set_xlabel("steps")
        ax.set_ylabel("bytes (JAX: XLA temp; torch: peak RSS delta)", fontsize=8)
        ax.set_title("Gradient memory vs steps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))

    return draw


def draw_time(seconds, timed):
    def draw(fig):
        ax = fig.add_subplot(111)
        labels = [m.label for m in METHODS if any((m.label, n) in seconds for n in timed)]
        width = 0.8 / len(timed)
        for i, n in enumerate(timed):
            ref = lambda label: seconds[TIME_REFERENCE.get(label, BACKPROP), n]
            vals = [seconds[label, n] / ref(label) if (label, n) in seconds else np.nan for label in labels]
            ax.barh(np.arange(len(labels)) + i * width, vals, height=width, label=f"{n} steps")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(np.arange(len(labels)) + width * (len(timed) - 1) / 2, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("time / odenets Backprop (same integrator)")
        ax.set_title("Gradient time relative to Backprop")
        ax.legend(fontsize=7)

    return draw


def explain(labelled_goals, temp, steps):
    """One sentence per missed goal, from the measurements."""
    return [f"- {g.goal}: {g.value:.2f}x against {g.target:.2f}x; fitted slope "
            f"{slope_and_ratio(series(temp, label, steps), steps)[0]:,.0f} B/step."
            for label, g in labelled_goals if g.met is False]


def checkpoint_model(temp, steps, state_bytes, per_step):
    """Predicted temp bytes of odenets Checkpoint: N/s saved states + one segment of s steps under Backprop."""
    hi = steps[-1]
    s = on.Checkpoint().segment_length(hi)
    predicted = math.ceil(hi / s) * state_bytes + s * per_step
    return (f"odenets Checkpoint at {hi} steps: {fmt_bytes(temp[CHECKPOINT, hi])} measured against "
            f"{hi // s} saved states x {fmt_bytes(state_bytes)} + one segment of s = {s} steps x "
            f"{fmt_bytes(per_step)} recomputed under Backprop = {fmt_bytes(predicted)} predicted; diffrax's "
            f"RecursiveCheckpointAdjoint recomputes one step at a time ({fmt_bytes(temp[RCP, hi])}, "
            f"{temp[CHECKPOINT, hi] / temp[RCP, hi]:.1f}x less than Checkpoint).")


def compile_line(compile_s):
    by_lib = {}
    for (label, _), sec in compile_s.items():
        by_lib.setdefault(label.split()[0], []).append(sec)
    return ("Compile (lower + compile of the gradient), range over all methods and step counts: "
            + ", ".join(f"{lib} {min(v):.1f} to {max(v):.1f} s" for lib, v in by_lib.items()) + ".")


def torch_rows(tr, steps):
    rows = []
    for n in steps:
        if (ODEINT, n) not in tr["rss"] or (ODEINT_ADJOINT, n) not in tr["rss"]:
            continue
        m0, m1 = tr["rss"][ODEINT, n], tr["rss"][ODEINT_ADJOINT, n]
        s0, s1 = tr["seconds"].get((ODEINT, n)), tr["seconds"].get((ODEINT_ADJOINT, n))
        times = ["-"] * 3
        if s0 is not None and s1 is not None:
            times = [f"{1e3 * s0:.1f}", f"{1e3 * s1:.1f}", f"{s1 / s0:.2f}x"]
        rows.append([n, fmt_bytes(m0), fmt_bytes(m1), f"{m1 / m0:.2f}x" if m0 > 0 else "-", *times])
    return rows


def torch_notes(tr, steps):
    """odeint_adjoint's fixed cost, and why VmHWM rather than ru_maxrss."""
    lo, hi = steps[0], steps[-1]
    lines = []
    ys = series(tr["rss"], ODEINT_ADJOINT, steps)
    slope = slope_and_ratio(ys, steps)[0]
    adj, plain = tr["workers"].get((ODEINT_ADJOINT, lo)), tr["workers"].get((ODEINT, lo))
    if slope is not None and adj and plain:
        lines.append(f"- odeint_adjoint's RSS delta is {fmt_bytes(ys[0])} at {lo} steps and {fmt_bytes(ys[-1])} "
                     f"at {hi} ({slope:,.0f} B/step): a fixed cost, not storage per step. Its calls import "
                     f"{adj['modules_imported']} Python modules (sympy: {adj['sympy_imported']}) against odeint's "
                     f"{plain['modules_imported']}; those pages count in its peak.")
    worker = tr["workers"].get((ODEINT, lo))
    if worker:
        maxrss, hwm = (fmt_bytes(1024 * worker[k]) for k in ("ru_maxrss_kib", "rss_peak_kib"))
        lines.append(f"- getrusage's ru_maxrss in the worker at {lo} steps reads {maxrss} against its own VmHWM "
                     f"of {hwm}: on Linux ru_maxrss survives execve and carries the spawning process' peak, so "
                     "VmHWM is used.")
    return lines


def agreement_rows(disc):
    rows, ok = [], True
    for m in METHODS:
        found = {n: d for (label, n), d in disc.items() if label == m.label}
        if m.reference is None or not found:
            continue
        n = max(found, key=found.get)
        passed = found[n] <= m.tolerance
        ok &= passed
        rows.append([m.label, m.reference, f"{m.tolerance:.0e}", f"{found[n]:.1e} ({n} steps)",
                     "PASS" if passed else "FAIL"])
    return rows, ok


def one_thread_line(tr, info):
    """The torch times again with torch.set_num_threads(1), for scale."""
    if not tr["one_thread"]:
        return []
    cells = [f"{label.split(',')[0].split()[1]} {1e3 * s1:.1f} ms at {n} steps against "
             f"{1e3 * tr['seconds'][label, n]:.1f} ms" for (label, n), s1 in tr["one_thread"].items()]
    return ["", f"The same torch calls with torch.set_num_threads(1) (instead of {info['threads']}): "
                + "; ".join(cells) + "."]


def torch_verdict(tr, steps):
    """Whether 'the adjoint is slower than backprop without the promised memory saving' holds here."""
    hi = steps[-1]
    if (ODEINT, hi) not in tr["rss"] or (ODEINT_ADJOINT, hi) not in tr["rss"]:
        return f"Not measured at {hi} steps."
    m0, m1 = tr["rss"][ODEINT, hi], tr["rss"][ODEINT_ADJOINT, hi]
    slopes = [slope_and_ratio(series(tr["rss"], label, steps), steps)[0] for label in (ODEINT, ODEINT_ADJOINT)]
    timed = [n for n in steps if (ODEINT, n) in tr["seconds"] and (ODEINT_ADJOINT, n) in tr["seconds"]]
    text = (f"At {hi} steps odeint_adjoint {'saves' if m1 < m0 else 'saves no'} memory ({fmt_bytes(m1)} against "
            f"{fmt_bytes(m0)}; slopes {slopes[1]:,.0f} vs {slopes[0]:,.0f} B/step)")
    if not timed:
        return text + "."
    n = timed[-1]
    s0, s1 = tr["seconds"][ODEINT, n], tr["seconds"][ODEINT_ADJOINT, n]
    return text + f"; at {n} steps it takes {s1 / s0:.2f}x odeint's time ({'slower' if s1 > s0 else 'faster'})."


def nested(values):
    """{(label, steps): v} -> {label: {steps: v}} for JSON."""
    out = {}
    for (label, n), v in values.items():
        out.setdefault(label, {})[str(n)] = v
    return out


def main(argv=None) -> int:
    opts = common.case_parser(__doc__).parse_args(argv)
    cfg = QUICK if opts.quick else FULL
    steps, timed = list(cfg["steps"]), list(cfg["timed"])
    wall = time.perf_counter()
    params, x0 = so.make_problem(cfg["batch"], cfg["width"], cfg["hidden"])
    state_bytes = x0.size * x0.dtype.itemsize
    print(f"== case 3: memory vs steps {steps}; batch {cfg['batch']}, width {cfg['width']}, "
          f"hidden {cfg['hidden']}, float32; timed at {timed}", flush=True)
    temp, compile_s, seconds, outs = measure_jax(cfg, params, x0)
    residual = residual_bytes_per_step(so.odenets_solve(RESIDUAL_STEPS), params, x0)
    tr = measure_torch(common.torch_python(opts), cfg, params, x0)
    rss, info = ({}, None) if tr is None else (tr["rss"], tr["info"])
    if tr is not None:
        seconds.update(tr["seconds"])
        outs.update(tr["outs"])
    disc = agreement(outs)
    agree, ok = agreement_rows(disc)
    labelled_goals = make_goals(temp, steps)
    goals = [g for _, g in labelled_goals]
    mem, fits = memory_rows(temp, rss, steps)
    lo, hi = steps[0], steps[-1]

    lines = [
        "## Case 3: Memory vs steps",
        "",
        f"The MLP problem of problem.py (dx/dt = tanh(x W1 + b1) W2 + b2, batch {cfg['batch']}, width "
        f"{cfg['width']}, hidden {cfg['hidden']}, float32, t in [0, 1], fixed steps, loss = mean(x(1)^2)), "
        f"jit(value_and_grad) with respect to (params, x0) at {', '.join(map(str, steps))} steps. odenets: "
        "Backprop, Checkpoint, Adjoint with RK4, Backprop and Reversible with ReversibleHeun; diffrax "
        f"{diffrax.__version__}: RecursiveCheckpointAdjoint (default checkpoints) and BacksolveAdjoint, classic "
        "RK4 tableau, dt0 = 1/steps, max_steps = steps; torchdiffeq: odeint and odeint_adjoint with classic "
        "RK4 on the same grid, one fresh process per (method, steps). JAX memory is XLA's temporary buffer "
        "size of the compiled gradient (`memory_analysis().temp_size_in_bytes`); torch memory is the worker's "
        "peak resident set (VmHWM) after its first forward + backward minus its peak after setup (imports and "
        "tensors, before the first solve). The two differ in kind (compiled scratch buffers vs process pages, "
        "which include the allocator's, the autograd graph's and lazily imported modules' overheads) and are "
        "not comparable byte for byte. Time: "
        f"compile + 2 warm-ups + min of {cfg['repeats']} round-robin repeats (JAX, at "
        f"{', '.join(map(str, timed))} steps) or 2 warm-ups + min of {cfg['torch_repeats']} (torch, at "
        f"{', '.join(map(str, cfg['torch_timed']))} steps; elsewhere the torch worker makes one untimed call, "
        "for memory: a 4096-step torch call takes seconds), as a ratio to odenets Backprop with the same "
        "integrator.",
        "",
        common.torch_line(info) + ("" if not info else f", OMP_WAIT_POLICY={info.get('omp_wait_policy')}"),
        "",
        "### Memory",
        "",
        *common.md_table(["method", "measure", *map(str, steps), "slope (B/step)", f"{hi}/{lo}"], mem),
        "",
        f"- One state is {fmt_bytes(state_bytes)}; odenets Backprop keeps {fmt_bytes(residual[0])} per step "
        f"({residual[0] / state_bytes:.0f} states: the residuals of the four RK4 stages, {residual[1]}, "
        "from jax's print_saved_residuals).",
        "- " + checkpoint_model(temp, steps, state_bytes, residual[0]),
    ]
    if tr is not None:
        lines += torch_notes(tr, steps)
    lines += ["", "### Time", "",
              *common.md_table(["method", "vs", *[c for n in timed for c in (f"{n} steps (ms)", f"{n}: ratio")],
                                f"compile at {hi} (s)"], time_rows(seconds, compile_s, timed, hi)), "",
              compile_line(compile_s), ""]
    if tr is not None:
        lines += ["### torchdiffeq: odeint_adjoint against odeint", "",
                  *common.md_table(["steps", "odeint RSS delta", "adjoint RSS delta", "adjoint / odeint",
                                    "odeint (ms)", "adjoint (ms)", "adjoint / odeint"], torch_rows(tr, steps)),
                  "", torch_verdict(tr, steps), *one_thread_line(tr, info), ""]
    lines += ["### Agreement", "",
              f"Loss and gradients against the reference at every step count (max over leaves of max|diff| / "
              f"max|ref|); continuous adjoints add the backward solve's discretisation error, hence "
              f"{ADJOINT_TOL:.0e} for them, {EXACT_TOL:.0e} for the rest.", "",
              *common.md_table(["method", "reference", "tolerance", "worst", "verdict"], agree), ""]
    figs = [common.figure(opts.fig_dir, "memory_vs_steps", draw_memory(temp, rss, steps)),
            common.figure(opts.fig_dir, "memory_time_ratio", draw_time(seconds, timed))]
    lines += [f for f in figs if f] + [""] + common.goals_table(goals) + [""]
    lines += explain(labelled_goals, temp, steps)
    extra = {"steps": steps, "timed": timed, "size": {k: cfg[k] for k in ("batch", "width", "hidden")},
             "temp_bytes": nested(temp), "rss_delta_bytes": nested(rss), "seconds": nested(seconds),
             "compile_seconds": nested(compile_s), "fits": fits, "agreement": nested(disc), "agree": ok,
             "torch": info, "wall_seconds": time.perf_counter() - wall}
    common.write_outputs(opts, lines, goals, extra)
    print(f"agreement {'PASS' if ok else 'FAIL'}; wall {time.perf_counter() - wall:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
