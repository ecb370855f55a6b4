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

# (label, width, batch, hidden, steps, repeats): floor and small are overhead-bound, compute is
# compute-bound, mid lies between (reported, not judged)
FULL = dict(sizes=(("floor", 4, 1, 16, 1000, 50), ("small", 32, 32, 64, 200, 30), ("mid", 64, 256, 256, 50, 10),
                   ("compute", 512, 1024, 512, 20, 3)), integrators=("rk4", "euler"))
QUICK = dict(sizes=(("floor", 2, 1, 4, 20, 2), ("compute", 8, 8, 16, 3, 2)), integrators=("rk4", "euler"))
STAGES = {"rk4": 4, "euler": 1}
METHODS = ("odenets", "hand-written scan", "diffrax default", "diffrax tuned", "torchdiffeq")
SMALL, COMPUTE = ("floor", "small"), ("compute",)
TOLERANCE = 1e-4
GOAL_SCAN = 1.10  # odenets / scan <= this at every size
GOAL_TUNED = {"small": 1.5, "compute": 1.3}  # diffrax tuned / odenets >= these
GOAL_TORCH = {"small": 10.0, "compute": 1.0}  # torchdiffeq / odenets >= these


def jax_peers(integ: str, steps: int) -> dict:
    solves = {"odenets": pb.odenets_solve(steps, on.RK4() if integ == "rk4" else on.Euler()),
              "hand-written scan": pb.scan_solve(steps, integ),
              "diffrax default": pb.diffrax_solve(steps, integ), "diffrax tuned": pb.diffrax_solve(steps, integ, tuned=True)}
    return {name: pb.value_and_grad(s) for name, s in solves.items()}


def torch_peer(python, params, x0, steps, repeats, integrators, tmp: Path):
    """torchdiffeq on the same problem and grid: ({integ: (seconds, (loss, grads))}, info) or None."""
    path, out = tmp / f"problem_{steps}.npz", tmp / f"out_{steps}.npz"
    pb.save_npz(path, params, x0)
    info = common.run_torch(python, "fixed", dict(problem=str(path), steps=steps, methods=integrators, repeats=repeats,
                                                  out=str(out), adjoint=False))
    if info is None:
        return None
    a = np.load(out)
    return {m: (info["methods"][m]["seconds"], (a[f"{m}/loss"], ({k: a[f"{m}/{k}"] for k in params},
                                                                  a[f"{m}/x0"])))
            for m in integrators}, info


def measure(cfg: dict, python: str | None) -> dict:
    rows, structure, torch_info = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, batch, hidden, steps, repeats in cfg["sizes"]:
            params, x0 = pb.make_problem(batch, width, hidden)
            peer = torch_peer(python, params, x0, steps, repeats, cfg["integrators"], Path(tmp)) if python else None
            if peer is None:
                python = None
            else:
                torch_info = {k: peer[1][k] for k in ("torch", "torchdiffeq", "threads", "omp_num_threads", "rk4_rule")}
            for integ in cfg["integrators"]:
                fns = jax_peers(integ, steps)
                best, _, outs = common.time_all(fns, (params, x0), repeats)
                if label == cfg["sizes"][0][0]:
                    structure += [{"integ": integ, "method": n, **common.hlo_structure(f, params, x0)}
                                  for n, f in fns.items()]
                if peer is not None:
                    best["torchdiffeq"], outs["torchdiffeq"] = peer[0][integ]
                ref = float(outs["odenets"][0])
                for name in best:
                    loss = float(outs[name][0])
                    rows.append(dict(size=label, integ=integ, method=name, width=width, batch=batch, hidden=hidden,
                                     steps=steps, seconds=best[name], loss=loss, loss_rel=abs(loss - ref) / abs(ref),
                                     grad_rel=common.rel_discrepancy(outs[name], outs["odenets"])))
                    print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return {"config": cfg, "sgemm_gflops": common.sgemm_gflops(), "torch": torch_info, "rows": rows,
            "structure": structure}


# -- what the rows say ------------------------------------------------------------------------------
def table(data: dict) -> dict:
    """{(size, integrator, method): row} with the derived ms, ratio, us/step, GFLOP/s and % SGEMM."""
    by = {}
    for r in data["rows"]:
        ref = next(o["seconds"] for o in data["rows"] if (o["size"], o["integ"], o["method"]) ==
                   (r["size"], r["integ"], "odenets"))
        flops = 3 * STAGES[r["integ"]] * r["steps"] * 2 * r["batch"] * (r["width"] * r["hidden"] * 2)
        gflops = flops / r["seconds"] / 1e9
        by[r["size"], r["integ"], r["method"]] = dict(r, ms=1e3 * r["seconds"], ratio=r["seconds"] / ref,
                                                      us=1e6 * r["seconds"] / r["steps"], gflops=gflops,
                                                      pct=100 * gflops / data["sgemm_gflops"])
    return by


def goals(data: dict) -> list[common.Goal]:
    by = table(data)
    sizes = list(dict.fromkeys(k[0] for k in by))

    def worst(desc, method, target, at_least, among, invert=False):
        vals = {f"{s}/{i}": 1 / r["ratio"] if invert else r["ratio"]
                for (s, i, m), r in by.items() if m == method and s in among}
        if not vals:
            return common.Goal(desc, None, target, at_least, where="not measured in this run")
        key = (min if at_least else max)(vals, key=vals.get)
        return common.Goal(desc, vals[key], target, at_least, where=key)

    small = ", ".join(SMALL)
    return [worst("odenets / hand-written scan at every size (worst case)", "hand-written scan", GOAL_SCAN, False,
                  sizes, invert=True),
            worst(f"diffrax tuned / odenets at small sizes ({small})", "diffrax tuned", GOAL_TUNED["small"], True,
                  SMALL),
            worst("diffrax tuned / odenets at compute-bound sizes", "diffrax tuned", GOAL_TUNED["compute"], True,
                  COMPUTE),
            worst(f"torchdiffeq / odenets at small sizes ({small})", "torchdiffeq", GOAL_TORCH["small"], True, SMALL),
            worst("torchdiffeq / odenets at compute-bound sizes (parity)", "torchdiffeq", GOAL_TORCH["compute"],
                  True, COMPUTE)]


def fields(data: dict) -> dict:
    by, blocks = table(data), common.template("sizes")
    keys = list(dict.fromkeys(k[:2] for k in by))
    floor = data["config"]["sizes"][0]

    def ratio(key, method, invert=False):
        r = by.get((*key, method))
        return "-" if r is None else f"{1 / r['ratio'] if invert else r['ratio']:.2f}x"

    ratios = common.md_table(
        ["size", "integrator", "odenets / scan", "diffrax default / odenets", "diffrax tuned / odenets",
         "torchdiffeq / odenets", "odenets % SGEMM"],
        [[*k, ratio(k, "hand-written scan", True), ratio(k, "diffrax default"), ratio(k, "diffrax tuned"),
          ratio(k, "torchdiffeq"), f"{by[(*k, 'odenets')]['pct']:.0f}%"] for k in keys])
    methods = [m for m in METHODS if any(k[2] == m for k in by)]
    floor_table = common.md_table(["method", "rk4 us/step", "euler us/step"], [
        [m] + [common.fmt(by.get((floor[0], i, m), {}).get("us")) for i in ("rk4", "euler")] for m in methods])
    cols = ["size", "integ", "method", "width", "batch", "hidden", "steps"]
    rows = common.md_table(
        ["size", "integrator", "method", "width", "batch", "hidden", "steps", "ms", "vs odenets", "us/step",
         "GFLOP/s", "% SGEMM", "loss", "rel. loss diff", "rel. grad diff"],
        [[r[c] for c in cols] + [f"{r['ms']:.3f}", f"{r['ratio']:.2f}x", f"{r['us']:.2f}", f"{r['gflops']:.2f}",
                                 f"{r['pct']:.1f}%", f"{r['loss']:.7f}", f"{r['loss_rel']:.1e}",
                                 f"{r['grad_rel']:.1e}"] for r in by.values()])
    worst = max(r["grad_rel"] for r in data["rows"])
    hlo = {(h["integ"], h["method"]): h for h in data["structure"]}
    hlo_table = common.md_table(["integrator", "method", "while loops", "loop body", "total", "us/step"], [
        [i, m, h["loops"], h["loop_body"], h["total"], common.fmt(by.get((floor[0], i, m), {}).get("us"))]
        for (i, m), h in hlo.items()])
    notes = []
    for integ in data["config"]["integrators"]:
        ours, scan, tuned = (hlo.get((integ, m)) for m in ("odenets", "hand-written scan", "diffrax tuned"))
        extra = ours["loop_body"] - scan["loop_body"]
        notes.append(blocks["hlo_note"].format(
            integ=integ, ours=ours, scan=scan, tuned=tuned, outside=ours["total"] - scan["total"],
            same="the same work per step" if abs(extra) <= 2 else f"{extra:+d} instructions per step",
            tuned_ratio=f"{tuned['loop_body'] / ours['loop_body']:.2f}"))
    torch = data["torch"]
    return {"sgemm": f"{data['sgemm_gflops']:.1f}", "ratios": ratios, "floor_table": floor_table, "rows": rows,
            "floor": floor[0], "floor_width": floor[1], "floor_batch": floor[2], "floor_hidden": floor[3],
            "floor_steps": floor[4], "agreement": f"{worst:.2e}", "tolerance": f"{TOLERANCE:.0e}",
            "verdict": "PASS" if worst <= TOLERANCE else "FAIL", "hlo_table": hlo_table, "hlo_notes": "\n".join(notes),
            "torch": blocks["torch"].format(**torch) if torch else blocks["no_torch"]}


def figures(data: dict, fig_dir) -> None:
    by, floor = table(data), data["config"]["sizes"][0][0]
    keys = list(dict.fromkeys(k[:2] for k in by))
    methods = [m for m in METHODS if any(k[2] == m for k in by)]
    common.figure(fig_dir, "case1_ratios", "fixed-step solve + gradient: time relative to odenets (lower is faster)",
                  groups=[f"{s}\n{i}" for s, i in keys], ylabel="time / odenets time (log)", ref=1.0,
                  bars={m: [by.get((*k, m), {}).get("ratio") for k in keys] for m in methods})
    common.figure(fig_dir, "case5_floor", f"overhead floor ({floor}): microseconds per step", groups=methods,
                  bars={i: [by.get((floor, i, m), {}).get("us") for m in methods] for i in data["config"]["integrators"]},
                  xlabel="microseconds per step, forward + backward (log)", horizontal=True)

if __name__ == "__main__":
    common.main_of(__spec__.name, measure, FULL, QUICK)
