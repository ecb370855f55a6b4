"""Cases 1 and 5: jit(value_and_grad) of a fixed-step solve of the MLP problem from the overhead floor to
compute-bound sizes: odenets, the hand-written scan, diffrax default and tuned (one process, round robin),
torchdiffeq (its own); agreement with odenets, and the HLO instruction counts at the floor."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import odenets as on

from . import common
from . import problem as pb

# (label, width, batch, hidden, steps, repeats): floor and small are overhead-bound, compute is compute-bound,
# mid lies between (judged for RK4 against torchdiffeq)
FULL = dict(integrators=("rk4", "euler"), sizes=(("floor", 4, 1, 16, 1000, 50), ("small", 32, 32, 64, 200, 30),
                                                  ("mid", 64, 256, 256, 50, 10), ("compute", 512, 1024, 512, 20,
                                                                                  3)))
QUICK = dict(sizes=(("floor", 2, 1, 4, 20, 2), ("mid", 4, 4, 8, 3, 2), ("compute", 8, 8, 16, 3, 2)),
             integrators=("rk4", "euler"))
STAGES, TOLERANCE = {"rk4": 4, "euler": 1}, 1e-4
METHODS = ("odenets", "hand-written scan", "diffrax default", "diffrax tuned", "torchdiffeq")
# (goal, method, target, at least?, sizes, integrators); the scan's goal is on odenets / scan, the others on
# peer / odenets; None: every size / integrator
GOALS = (("odenets / hand-written scan at every size (worst case)", "hand-written scan", 1.10, False, None, None),
         ("diffrax tuned / odenets at small sizes (floor, small)", "diffrax tuned", 1.5, True, ("floor", "small"),
          None),
         ("diffrax tuned / odenets at compute-bound sizes", "diffrax tuned", 1.3, True, ("compute",), None),
         ("torchdiffeq / odenets at small sizes (floor, small)", "torchdiffeq", 10.0, True, ("floor", "small"),
          None),
         ("torchdiffeq / odenets at compute-bound sizes (parity)", "torchdiffeq", 1.0, True, ("compute",), None),
         ("torchdiffeq / odenets, RK4 at the mid size (parity)", "torchdiffeq", 1.0, True, ("mid",), ("rk4",)))


def measure(cfg: dict, python: str | None) -> dict:
    rows, structure, torch_info = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, batch, hidden, steps, repeats in cfg["sizes"]:
            params, x0 = pb.make_problem(batch, width, hidden)
            pb.save_npz(Path(tmp) / "problem.npz", params, x0)
            info = common.run_torch(python, "fixed", dict(
                problem=f"{tmp}/problem.npz", steps=steps, repeats=repeats, methods=cfg["integrators"],
                out=f"{tmp}/out.npz", adjoint=False))
            python, torch_info = (python, info) if info else (None, torch_info)
            for integ in cfg["integrators"]:
                fns = {name: pb.value_and_grad(f) for name, f in (
                    ("odenets", pb.odenets_solve(steps, on.RK4() if integ == "rk4" else on.Euler())),
                    ("hand-written scan", pb.scan_solve(steps, integ)), ("diffrax default",
                                                                         pb.diffrax_solve(steps, integ)),
                    ("diffrax tuned", pb.diffrax_solve(steps, integ, tuned=True)))}
                best, _, outs = common.time_all(fns, (params, x0), repeats)
                if label == cfg["sizes"][0][0]:
                    structure += [{"integ": integ, "method": n, **common.hlo_structure(f, params, x0)}
                                  for n, f in fns.items()]
                if info:
                    a = np.load(f"{tmp}/out.npz")
                    best["torchdiffeq"] = info["methods"][integ]["seconds"]
                    outs["torchdiffeq"] = (a[f"{integ}/loss"], ({k: a[f"{integ}/{k}"] for k in params},
                                                                a[f"{integ}/x0"]))
                ref = float(outs["odenets"][0])
                rows += [dict(size=label, integ=integ, method=name, width=width, batch=batch, hidden=hidden,
                              steps=steps, seconds=best[name], loss=float(outs[name][0]),
                              loss_rel=abs(float(outs[name][0]) - ref) / abs(ref),
                              grad_rel=common.rel_discrepancy(outs[name], outs["odenets"])) for name in best]
                print(rows[-len(best):], flush=True)
    torch_info = torch_info and {k: torch_info[k] for k in ("torch", "torchdiffeq", "threads", "omp_num_threads",
                                                            "rk4_rule")}
    return {"config": cfg, "sgemm_gflops": common.sgemm_gflops(), "torch": torch_info, "rows": rows,
            "structure": structure}


def table(data: dict) -> dict:
    """{(size, integrator, method): row} with the derived ms, ratio to odenets, us/step, GFLOP/s and % SGEMM;
    FLOPs: 2 batch (width hidden 2) per evaluation of f, x stages x steps, x 3 for forward + backward."""
    ref = {(r["size"], r["integ"]): r["seconds"] for r in data["rows"] if r["method"] == "odenets"}
    by = {}
    for r in data["rows"]:
        gflops = 12 * STAGES[r["integ"]] * r["steps"] * r["batch"] * r["width"] * r["hidden"] / r["seconds"] / 1e9
        by[r["size"], r["integ"], r["method"]] = dict(
            r, ms=1e3 * r["seconds"], ratio=r["seconds"] / ref[r["size"], r["integ"]], gflops=gflops,
            us=1e6 * r["seconds"] / r["steps"], pct=100 * gflops / data["sgemm_gflops"])
    return by


def goals(data: dict) -> list[common.Goal]:
    """Each goal at its worst (size, integrator) among the sizes and integrators it is about."""
    by, out = table(data), []
    for desc, method, target, at_least, among, integs in GOALS:
        vals = {f"{s}/{i}": 1 / r["ratio"] if method == "hand-written scan" else r["ratio"]
                for (s, i, m), r in by.items()
                if m == method and s in (among or {k[0] for k in by}) and i in (integs or {k[1] for k in by})}
        key = vals and (min if at_least else max)(vals, key=vals.get)
        out.append(common.Goal(desc, vals[key], target, at_least, where=key) if vals else
                   common.Goal(desc, None, target, at_least, where="not measured in this run"))
    return out


def fields(data: dict) -> dict:
    by, blocks, fmt, floor = table(data), common.template("sizes"), common.fmt, data["config"]["sizes"][0]
    keys, methods = list(dict.fromkeys(k[:2] for k in by)), [m for m in METHODS if any(k[2] == m for k in by)]
    def ratio(key, method, invert=False):
        r = by.get((*key, method))
        return fmt(r and (1 / r["ratio"] if invert else r["ratio"]), ".2f", "x")

    worst, hlo = max(r["grad_rel"] for r in data["rows"]), {(h["integ"],
                                                             h["method"]): h for h in data["structure"]}
    notes = []
    for integ in data["config"]["integrators"]:
        ours, scan, tuned = (hlo[integ, m] for m in ("odenets", "hand-written scan", "diffrax tuned"))
        extra = ours["loop_body"] - scan["loop_body"]
        notes.append(blocks["hlo_note"].format(
            integ=integ, ours=ours, scan=scan, tuned=tuned, outside=ours["total"] - scan["total"],
            same="the same work per step" if abs(extra) <= 2 else f"{extra:+d} instructions per step",
            tuned_ratio=f"{tuned['loop_body'] / ours['loop_body']:.2f}"))
    cols = ("size", "integ", "method", "width", "batch", "hidden", "steps")
    return {"sgemm": f"{data['sgemm_gflops']:.1f}", "floor": floor[0], "floor_width": floor[1],
            "floor_batch": floor[2], "floor_hidden": floor[3], "floor_steps": floor[4],
            "agreement": f"{worst:.2e}",
            "tolerance": f"{TOLERANCE:.0e}", "verdict": "PASS" if worst <= TOLERANCE else "FAIL",
            "hlo_notes": "\n".join(notes),
            "torch": blocks["torch"].format(**data["torch"]) if data["torch"] else blocks["no_torch"],
            "ratios": common.rows([[*k, ratio(k, "hand-written scan", True), ratio(k, "diffrax default"),
                                    ratio(k, "diffrax tuned"), ratio(k, "torchdiffeq"),
                                    f"{by[(*k, 'odenets')]['pct']:.0f}%"] for k in keys]),
            "floor_table": common.rows([[m, *(fmt(by.get((floor[0], i, m), {}).get("us")) for i in ("rk4",
                                                                                                      "euler"))]
                                        for m in methods]),
            "rows": common.rows([[r[c] for c in cols] + [
                f"{r['ms']:.3f}", f"{r['ratio']:.2f}x", f"{r['us']:.2f}", f"{r['gflops']:.2f}", f"{r['pct']:.1f}%",
                f"{r['loss']:.7f}", f"{r['loss_rel']:.1e}", f"{r['grad_rel']:.1e}"] for r in by.values()]),
            "hlo_table": common.rows([[i, m, h["loops"], h["loop_body"], h["total"],
                                       fmt(by.get((floor[0], i, m), {}).get("us"))] for (i, m), h in hlo.items()])}


def figures(data: dict, fig_dir) -> None:
    by, floor = table(data), data["config"]["sizes"][0][0]
    keys, methods = list(dict.fromkeys(k[:2] for k in by)), [m for m in METHODS if any(k[2] == m for k in by)]
    common.figure(fig_dir, "case1_ratios",
                  "fixed-step solve + gradient: time relative to odenets (lower is faster)",
                  groups=[f"{s}\n{i}" for s, i in keys], ylabel="time / odenets time (log)", ref=1.0,
                  bars={m: [by.get((*k, m), {}).get("ratio") for k in keys] for m in methods})
    common.figure(fig_dir, "case5_floor", f"overhead floor ({floor}): microseconds per step", groups=methods,
                  bars={i: [by.get((floor, i, m),
                                   {}).get("us") for m in methods] for i in data["config"]["integrators"]},
                  xlabel="microseconds per step, forward + backward (log)", horizontal=True)
