"""Case 3: gradient memory against step count for every gradient strategy, odenets, diffrax and torchdiffeq
on the MLP problem: XLA's temporary buffers of the compiled gradient, the torch worker's peak RSS delta;
least-squares bytes per step, bytes(most) / bytes(fewest), times and agreement with the reference."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import diffrax
import numpy as np

import odenets as on

from . import common
from . import problem as pb

FULL = dict(batch=64, width=32, hidden=64, steps=(16, 64, 256, 1024, 4096), timed=(256, 4096), torch_timed=(256,),
            diffrax_steps=(16, 64, 256, 1024, 4096), repeats=2, torch_repeats=1)
QUICK = dict(batch=4, width=4, hidden=8, steps=(4, 16), timed=(16,), torch_timed=(16,), diffrax_steps=(16,),
             repeats=2, torch_repeats=1)
EXACT, ADJOINT_TOL = 1e-4, 1e-3  # discrete gradients: rounding only; continuous adjoints: + discretisation
FLAT, SQRT_SLACK = 1.2, 1.5  # Adjoint / Reversible: bytes(most) / bytes(fewest); Checkpoint: <= 1.5 sqrt(ratio)
BP, BP_RH = "odenets Backprop, RK4", "odenets Backprop, ReversibleHeun"
CHECKPOINT, ADJOINT = "odenets Checkpoint, RK4", "odenets Adjoint, RK4"
REVERSIBLE = "odenets Reversible, ReversibleHeun"
RCP, BACKSOLVE = "diffrax RecursiveCheckpointAdjoint, RK4", "diffrax BacksolveAdjoint, RK4"
ODEINT, ODEINT_ADJOINT = "torchdiffeq odeint, RK4", "torchdiffeq odeint_adjoint, RK4"
# label: (reference, tolerance, steps -> solve; None for the torch worker's)
METHODS = {
    BP: (None, 0.0, lambda n: pb.odenets_solve(n, on.RK4(), on.Backprop())),
    CHECKPOINT: (BP, EXACT, lambda n: pb.odenets_solve(n, on.RK4(), on.Checkpoint())),
    ADJOINT: (BP, ADJOINT_TOL, lambda n: pb.odenets_solve(n, on.RK4(), on.Adjoint())),
    BP_RH: (None, 0.0, lambda n: pb.odenets_solve(n, on.ReversibleHeun(), on.Backprop())),
    REVERSIBLE: (BP_RH, EXACT, lambda n: pb.odenets_solve(n, on.ReversibleHeun(), on.Reversible())),
    RCP: (BP, EXACT, lambda n: pb.diffrax_solve(n, max_steps=n)),
    BACKSOLVE: (BP, ADJOINT_TOL, lambda n: pb.diffrax_solve(n, adjoint=diffrax.BacksolveAdjoint(), max_steps=n)),
    ODEINT: (BP, EXACT, None),
    ODEINT_ADJOINT: (BP, ADJOINT_TOL, None),
}
TIME_REFERENCE = {REVERSIBLE: BP_RH, BP_RH: BP_RH}  # the rest: BP


def put(table: dict, label: str, steps: int, value) -> None:
    table.setdefault(label, {})[str(steps)] = value


def measure_torch(python, cfg, params, x0, out: dict, outs: dict) -> None:
    """Peak RSS delta per torch method and step count (a fresh process each), and the time where timed."""
    with tempfile.TemporaryDirectory() as tmp:
        pb.save_npz(Path(tmp) / "problem.npz", params, x0)
        for n, label in ((n, label) for n in cfg["steps"] for label in (ODEINT, ODEINT_ADJOINT)):
            res = common.run_torch(python, "fixed", dict(
                problem=str(Path(tmp) / "problem.npz"), methods=["rk4"], steps=n, out=str(Path(tmp) / "out.npz"),
                repeats=cfg["torch_repeats"] if n in cfg["torch_timed"] else 0, adjoint=label == ODEINT_ADJOINT))
            if res is None:
                return
            a = np.load(Path(tmp) / "out.npz")
            outs[label, n] = (a["rk4/loss"], ({k: a[f"rk4/{k}"] for k in params}, a["rk4/x0"]))
            put(out["rss"], label, n, res["rss_delta_bytes"])
            if n in cfg["torch_timed"]:
                put(out["seconds"], label, n, res["methods"]["rk4"]["seconds"])
            if n == cfg["steps"][0]:
                out["torch_modules"][label] = [res["modules_imported"], res["sympy_imported"]]
            out["torch"] = {k: res[k] for k in ("torch", "torchdiffeq", "threads", "omp_num_threads",
                                                "omp_wait_policy")}


def measure(cfg: dict, python: str | None) -> dict:
    params, x0 = pb.make_problem(cfg["batch"], cfg["width"], cfg["hidden"])
    out = {"config": cfg, "diffrax": diffrax.__version__, "temp": {}, "seconds": {}, "rss": {}, "compile": {},
           "torch": None, "torch_modules": {}, "state_bytes": x0.size * x0.dtype.itemsize, "agreement": {}}
    outs = {}
    for n in cfg["steps"]:
        fns = {label: pb.value_and_grad(m[2](n)) for label, m in METHODS.items()
               if m[2] and (not label.startswith("diffrax") or n in cfg["diffrax_steps"])}
        for label, fn in fns.items():
            start = time.perf_counter()
            put(out["temp"], label, n, common.temp_bytes(fn, params, x0))  # compiles; fn(...) reuses it
            put(out["compile"], label, n, time.perf_counter() - start)
        best, _, res = common.time_all(fns, (params, x0), cfg["repeats"] if n in cfg["timed"] else 0)
        outs.update({(label, n): o for label, o in res.items()})
        for label, s in best.items() if n in cfg["timed"] else ():
            put(out["seconds"], label, n, s)
        print(n, "steps:", {k: v[str(n)] for k, v in out["temp"].items() if str(n) in v}, flush=True)
    out["segment"] = on.Checkpoint().segment_length(cfg["steps"][-1])
    if python:
        measure_torch(python, cfg, params, x0, out, outs)
    for (label, n), o in outs.items():
        if (ref := METHODS[label][0]) and (ref, n) in outs:
            d = common.rel_discrepancy(o, outs[ref, n])
            out["agreement"][label] = max(out["agreement"].get(label, [0.0, n]), [d, n])
    return out


# -- what the numbers say -----------------------------------------------------------------------
def fit(series: dict, steps: list[int]):
    """Least-squares bytes per step and bytes(most) / bytes(fewest), over the measured points."""
    pts = [(n, series[str(n)]) for n in steps if str(n) in series]
    if len(pts) < 2 or pts[0][0] != steps[0] or pts[-1][0] != steps[-1]:
        return None, None
    ns, vs = map(np.asarray, zip(*pts))
    return float(np.polyfit(ns, vs, 1)[0]), float(vs[-1] / max(vs[0], 1))


def goals(data: dict) -> list[common.Goal]:
    steps, temp = data["config"]["steps"], data["temp"]
    lo, hi = steps[0], steps[-1]
    ratio = {label: fit(temp.get(label, {}), steps)[1] for label in (ADJOINT, REVERSIBLE, CHECKPOINT)}
    both = [n for n in temp[RCP] if n in temp[CHECKPOINT]]
    worst = max(both, key=lambda n: temp[CHECKPOINT][n] / temp[RCP][n])
    return [common.Goal(f"Adjoint temp bytes flat: bytes({hi}) / bytes({lo})", ratio[ADJOINT], FLAT, False),
            common.Goal(f"Reversible temp bytes flat: bytes({hi}) / bytes({lo})", ratio[REVERSIBLE], FLAT, False),
            common.Goal(f"Checkpoint temp bytes grow like sqrt(steps): bytes({hi}) / bytes({lo}) <= "
                        f"{SQRT_SLACK} * sqrt({hi}/{lo})", ratio[CHECKPOINT], SQRT_SLACK * math.sqrt(hi / lo),
                        False),
            common.Goal("odenets Checkpoint (sqrt(N) segments) / diffrax RecursiveCheckpointAdjoint (recursive) "
                        "temp bytes, worst step count", temp[CHECKPOINT][worst] / temp[RCP][worst], 1.0, False,
                        where=f"{worst} steps", info=True)]


def fields(data: dict) -> dict:
    cfg, blocks, fb, fmt = data["config"], common.template("memory"), common.fmt_bytes, common.fmt
    steps, timed, temp, rss, sec = cfg["steps"], cfg["timed"], data["temp"], data["rss"], data["seconds"]
    lo, hi, mem, times, ranges = steps[0], steps[-1], [], [], {}
    for label in METHODS:
        series, kind = (rss, "peak RSS delta") if label in rss else (temp, "XLA temp")
        if label in series:
            slope, ratio = fit(series[label], steps)
            mem.append([label, kind, *(fb(series[label].get(str(n))) for n in steps), fmt(slope, ",.0f"),
                        fmt(ratio, ".2f", "x")])
        ref, mine = TIME_REFERENCE.get(label, BP), sec.get(label, {})
        cells = [c for n in map(str, timed) for c in (fmt(mine.get(n) and 1e3 * mine[n], ".1f"),
                                                      fmt(mine.get(n) and mine[n] / sec[ref][n], ".2f", "x"))]
        if mine:
            compiled = data["compile"].get(label, {}).get(str(hi))
            times.append([label, ref.removeprefix("odenets "), *cells, fmt(compiled, ".1f")])
    for label, by_steps in data["compile"].items():
        ranges.setdefault(label.split()[0], []).extend(by_steps.values())
    state, s, cp, rcp = data["state_bytes"], data["segment"], temp[CHECKPOINT][str(hi)], temp[RCP][str(hi)]
    per_step = fit(temp[BP], steps)[0]
    notes = [blocks["residual"].format(state=fb(state), per_step=fb(per_step), states=f"{per_step / state:.0f}"),
             blocks["checkpoint"].format(hi=hi, measured=fb(cp), saved=hi // s, state=fb(state), s=s, rcp=fb(rcp),
                                         per_step=fb(per_step),
                                         predicted=fb(math.ceil(hi / s) * state + s * per_step),
                                         less=f"{cp / rcp:.1f}")]
    torch = ""
    if data["torch"]:
        plain, adj = rss[ODEINT], rss[ODEINT_ADJOINT]
        slopes = [f"{fit(rss[label], steps)[0]:,.0f}" for label in (ODEINT, ODEINT_ADJOINT)]
        notes.append(blocks["torch_fixed"].format(lo=lo, hi=hi, first=fb(adj[str(lo)]), last=fb(adj[str(hi)]),
                                                  slope=slopes[1], adj=data["torch_modules"][ODEINT_ADJOINT],
                                                  plain=data["torch_modules"][ODEINT]))
        s0, s1, n = sec[ODEINT], sec[ODEINT_ADJOINT], str(cfg["torch_timed"][-1])
        table = [[k, fb(plain[k]), fb(adj[k]), f"{adj[k] / plain[k]:.2f}x", fmt(s0.get(k) and 1e3 * s0[k], ".1f"),
                  fmt(s1.get(k) and 1e3 * s1[k], ".1f"), fmt(s0.get(k) and s1[k] / s0[k], ".2f", "x")]
                 for k in map(str, steps)]
        torch = blocks["torch"].format(
            table=common.rows(table), hi=hi, adj=fb(adj[str(hi)]), plain=fb(plain[str(hi)]), n=n,
            saves="saves" if adj[str(hi)] < plain[str(hi)] else "saves no", slope_adj=slopes[1],
            slope_plain=slopes[0],
            ratio=f"{s1[n] / s0[n]:.2f}", slower="slower" if s1[n] > s0[n] else "faster")
    agree = [[label, METHODS[label][0], f"{METHODS[label][1]:.0e}", f"{d:.1e} ({n} steps)",
              "PASS" if d <= METHODS[label][1] else "FAIL"] for label, (d, n) in data["agreement"].items()]
    return {**cfg, **{k: ", ".join(map(str, cfg[k])) for k in ("steps", "timed", "torch_timed")},
            "diffrax": data["diffrax"], "notes": "\n".join(notes), "torch_section": torch, "exact": f"{EXACT:.0e}",
            "torch": blocks["torch_line"].format(**data["torch"]) if data["torch"] else blocks["no_torch"],
            "memory_table": common.md_table(["method", "measure", *map(str, steps), "slope (B/step)",
                                             f"{hi}/{lo}"], mem), "adjoint_tol": f"{ADJOINT_TOL:.0e}",
            "time_table": common.md_table(["method", "vs", *[c for n in timed for c in (f"{n} steps (ms)",
                                          f"{n}: ratio")], f"compile at {hi} (s)"], times),
            "compile_range": ", ".join(f"{lib} {min(v):.1f} to {max(v):.1f} s" for lib, v in ranges.items()),
            "agreement": common.rows(agree)}


def figures(data: dict, fig_dir) -> None:
    steps, timed, sec = data["config"]["steps"], data["config"]["timed"], data["seconds"]
    series = {**data["temp"], **{f"{k} (peak RSS delta)": v for k, v in data["rss"].items()}}
    common.figure(fig_dir, "memory_vs_steps", "Gradient memory vs steps", xlabel="steps",
                  ylabel="bytes (JAX: XLA temp; torch: peak RSS delta)",
                  lines={k: tuple(zip(*[(n, v[str(n)]) for n in steps if v.get(str(n))]))
                         for k, v in series.items()})
    labels = [k for k in METHODS if any(str(n) in sec.get(k, {}) for n in timed)]
    common.figure(fig_dir, "memory_time_ratio", "Gradient time relative to Backprop", groups=labels, ref=1.0,
                  horizontal=True, xlabel="time / odenets Backprop (same integrator)",
                  bars={f"{n} steps": [sec[k][str(n)] / sec[TIME_REFERENCE.get(k, BP)][str(n)] if str(n) in sec[k]
                                       else None for k in labels] for n in timed})
