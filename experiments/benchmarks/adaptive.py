"""Case 2: an adaptive Dopri5 / Tsit5 neural ODE (diffrax's small_neural_ode benchmark), odenets against
diffeqsolve written out with what odenets uses underneath (same process, round robin, plus diffrax's program
called again: A/A, the noise floor) and torchdiffeq; solutions, gradients, steps and NFE must agree. Then the
MLP Neural ODE of case 1's mid size solved by Dopri5 with its gradient, each odenets gradient strategy against
torchdiffeq and torchode, and the MNIST-1D ODE-Net trained through Dopri5 against the Euler ODE-Net: cost per
forward NFE and temporary memory of a train step."""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import diffrax
import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odenets as on
from odenets import cli, models
from odenets.integrators.adaptive import ADJOINTS
from odenets.train import loop

from . import common
from . import problem as pb

RTOL = ATOL = 1e-6
MAX_STEPS = 4096  # odenets' default, passed explicitly to both peers
DENSE_TIMES = 100
SOLVERS = {"dopri5": (on.Dopri5, diffrax.Dopri5), "tsit5": (on.Tsit5, diffrax.Tsit5)}
MODES = {"forward": "forward", "backprop": "grad, Backprop", "adjoint": "grad, Adjoint"}
STRATEGIES = ("backprop", "checkpoint", "adjoint")  # gradients for adaptive solves (Backprop: the default)
MLP_TOL, MLP_T1 = 1e-5, 1.0  # the MLP Neural ODE: Dopri5 rtol = atol, t in [0, t1]
TRAIN = ("experiment=mnist1d_odenet", "model.unroll=1")  # both ODE-Nets as loops (adaptive ones cannot unroll)
FULL = dict(batch=64, t1=100.0, groups=(("dopri5", "final"), ("tsit5", "final"), ("dopri5", "dense")),
            modes=tuple(MODES), budget_s=3.0, min_repeats=10, max_repeats=500, retime=True,
            torch=dict(forward=20, gradient=10, budget_s=3.0),
            mlp=dict(batch=256, width=64, hidden=256, repeats=20, torch_repeats=10, torch_budget_s=5.0),
            train=dict(overrides=(), steps=4))
QUICK = dict(batch=8, t1=10.0, groups=(("dopri5", "final"),), modes=("forward", "backprop"), budget_s=0.1,
             min_repeats=2, max_repeats=5, retime=False, torch=dict(forward=2, gradient=2, budget_s=1.0),
             mlp=dict(batch=8, width=4, hidden=8, repeats=2, torch_repeats=2, torch_budget_s=1.0),
             train=dict(overrides=("optim.batch_size=8", "model.width=8"), steps=1))
COST_GOAL, MEMORY_GOAL = 1.5, 4.0  # adaptive training / the Euler ODE-Net's: cost per forward NFE, temp memory
GOAL = 1.05  # odenets / diffrax, every row
TOL_DIFFRAX, TOL_TORCH = 1e-6, 1e-3  # relative: everything vs diffrax; saved states vs torchdiffeq
TORCH_SKIPPED = ("dense", "adjoint")  # odeint_adjoint with 100 save times: seconds per call in Python


def solves(solver, save, mode, t1, f=pb.adaptive_field) -> dict:
    """{peer: (params, x0) -> (saved states, step counts)}; odenets also counts its NFE."""
    dense, integ = save == "dense", SOLVERS[solver][0](rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS)
    adjoint = ADJOINTS["adjoint" if mode == "adjoint" else "backprop"](integ)  # what odenets' own solve passes
    saveat = diffrax.SaveAt(ts=jnp.linspace(0.0, t1, DENSE_TIMES)) if dense else diffrax.SaveAt(t1=True)

    def ours(params, x0):
        sol = on.odeint(f, x0, 0.0, t1, DENSE_TIMES - 1 if dense else 1, integrator=integ, args=params,
                        gradient=on.Adjoint() if mode == "adjoint" else on.Backprop(),
                        save="all" if dense else "final")
        return (sol.xs if dense else sol.x), {k: sol.stats[k] for k in ("nfe", "steps", "rejected")}

    def theirs(params, x0):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(f), SOLVERS[solver][1](), 0.0, t1, None, x0, args=params,
                                  saveat=saveat, stepsize_controller=integ.controller(),
                                  adjoint=adjoint, max_steps=MAX_STEPS)
        return (sol.ys if dense else sol.ys[-1]), {"steps": sol.stats["num_accepted_steps"],
                                                   "rejected": sol.stats["num_rejected_steps"]}

    return {"odenets": ours, "diffrax": theirs}


def program(solve, save, mode):
    """loss = sum of the saved states (final: [x0, x(t1)]), aux (states, stats); or its grad for (params, x0)."""

    def loss(params, x0):
        states, stats = solve(params, x0)
        return jnp.sum(states) + (jnp.sum(x0) if save == "final" else 0.0), (states, stats)

    return loss if mode == "forward" else jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)


def primitive_counts(fn, *args) -> collections.Counter:
    """(inside a while loop?, primitive) over the jaxpr of fn and all its sub-jaxprs."""
    counts = collections.Counter()

    def walk(jaxpr, in_loop):
        for eqn in jaxpr.eqns:
            counts[in_loop, eqn.primitive.name] += 1
            for sub in jcore.jaxprs_in_params(eqn.params):
                walk(sub, in_loop or eqn.primitive.name == "while")

    walk(jax.make_jaxpr(fn)(*args).jaxpr, False)
    return counts


def timed(cfg, fns, args):
    """Two round robins: 2 repeats to learn the call time, then as many as the budget allows."""
    best, _, outs = common.time_all(fns, args, 2)
    repeats = int(min(cfg["max_repeats"], max(cfg["min_repeats"], cfg["budget_s"] / sum(best.values()))))
    more, _, _ = common.time_all(fns, args, repeats)
    return {k: min(best[k], more[k]) for k in fns}, outs, repeats + 2


def run_row(cfg, solver, save, mode, params, x0, arrays: list) -> dict:
    """Time one row of both JAX peers (and A/A), compare them; a row over the goal is timed again."""
    programs = {k: program(f, save, mode) for k, f in solves(solver, save, mode, cfg["t1"]).items()}
    fns = {name: jax.jit(p) for name, p in programs.items()}
    fns["diffrax again"] = jax.jit(programs["diffrax"])
    best, outs, repeats = timed(cfg, fns, (params, x0))
    unpack = (lambda o: (o[0], o[1][0], o[1][1], None)) if mode == "forward" else (
        lambda o: (o[0][0], o[0][1][0], o[0][1][1], o[1]))
    (_, states, stats, grads), (_, _, dstats, _) = unpack(outs["odenets"]), unpack(outs["diffrax"])
    a, b = (primitive_counts(p, params, x0) for p in programs.values())
    diff = {k: a[k] - b[k] for k in sorted(set(a) | set(b)) if a[k] != b[k]}
    row = dict(solver=solver, save=save, mode=mode, ours_s=best["odenets"], diffrax_s=best["diffrax"],
               noise=best["diffrax"] / best["diffrax again"], repeats=repeats, nfe=int(stats["nfe"]),
               steps=[int(stats["steps"]), int(dstats["steps"])], rejected=[int(stats["rejected"]),
                                                                            int(dstats["rejected"])],
               rel=common.rel_discrepancy(*([o for i, o in enumerate(unpack(outs[p])) if i != 2 and o is not None]
                                            for p in ("odenets", "diffrax"))),
               loop=[sum(n for (lp, _), n in c.items() if lp) for c in (a, b)],
               outside=[sum(n for (lp, _), n in c.items() if not lp) for c in (a, b)],
               extra=", ".join(f"{p}{n:+d}{' (in loop)' if lp else ''}" for (lp, p), n in diff.items()) or "none")
    if cfg["retime"] and row["ours_s"] / row["diffrax_s"] > GOAL:
        again, _, more = timed(cfg, {k: fns[k] for k in ("odenets", "diffrax")}, (params, x0))
        row.update(first_ratio=row["ours_s"] / row["diffrax_s"], second_ratio=again["odenets"] / again["diffrax"],
                   ours_s=min(row["ours_s"], again["odenets"]), diffrax_s=min(row["diffrax_s"], again["diffrax"]),
                   repeats=repeats + more)
    print(row, flush=True)
    arrays.append({"states": np.asarray(states), "grads": grads and jax.tree.map(np.asarray, grads)})
    return row


def torch_peer(python: str, task: str, params, x0, opts: dict) -> tuple[dict | None, dict]:
    """The torch worker's `task` on (params, x0) (problem.save_npz): its JSON answer (None: torch missing)
    and the arrays it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "problem.npz", Path(tmp) / "out.npz"
        pb.save_npz(path, params, x0)
        info = common.run_torch(python, task, dict(problem=str(path), out=str(out), **opts))
        return info, (dict(np.load(out)) if info else {})


def torch_grads(got: dict, key: str) -> tuple[dict, np.ndarray]:
    """A torch run's gradient in odenets' layout: ({W1, b1, W2, b2}, x0)."""
    return {k: got[f"{key}/grad/{k}"] for k in ("W1", "b1", "W2", "b2")}, got[f"{key}/grad/x0"]


def torch_rows(python, cfg, params, x0, rows, arrays) -> tuple[dict | None, list[dict]]:
    """torchdiffeq's dopri5 on every Dopri5 row it runs; saved states must agree with ours."""
    keys = [f"{r['save']}/{r['mode']}" for r in rows if r["solver"] == "dopri5"
            and (r["save"], r["mode"]) != TORCH_SKIPPED]
    t = cfg["torch"]
    info, got = torch_peer(python, "adaptive", params, x0, dict(
        t1=cfg["t1"], rtol=RTOL, atol=ATOL, runs=keys, repeats_forward=t["forward"],
        repeats_gradient=t["gradient"], budget_s=t["budget_s"]))
    trows = []
    for r, ours in zip(rows, arrays):
        key = f"{r['save']}/{r['mode']}"
        if key not in keys or not info:
            continue
        run = info["runs"][key]
        grad_rel = ours["grads"] and common.rel_discrepancy(torch_grads(got, key), ours["grads"])
        trows.append(dict(save=r["save"], mode=r["mode"], seconds=run["seconds"], ours_s=r["ours_s"],
                          nfe=info["runs"].get(f"{r['save']}/forward",
                                               run)["nfe"], calls=run["nfe"], ours_nfe=r["nfe"],
                          rel=common.rel_discrepancy(got[f"{key}/solution"], ours["states"]), grad_rel=grad_rel))
    return info and {k: v for k, v in info.items() if k != "runs"}, trows


def mlp_rows(cfg: dict, python: str | None) -> dict:
    """The MLP Neural ODE solve + gradient, jit(value_and_grad(mean(x(t1)^2))) w.r.t. (params, x0), under each
    odenets gradient strategy (round robin, with the forward solve alone), then torchdiffeq and torchode."""
    m = cfg["mlp"]
    params, x0 = pb.make_problem(m["batch"], m["width"], m["hidden"])
    integ = on.Dopri5(rtol=MLP_TOL, atol=MLP_TOL)
    solve = lambda g: lambda p, x: on.odeint(pb.field, x, 0.0, MLP_T1, integrator=integ, gradient=g, args=p)
    fns = {g: jax.jit(jax.value_and_grad(lambda p, x, s=solve(g): jnp.mean(s(p, x).x ** 2), argnums=(0, 1)))
           for g in STRATEGIES}
    fns["forward"] = jax.jit(lambda p, x: solve("backprop")(p, x).x)
    temp = {g: common.temp_bytes(fn, params, x0) for g, fn in fns.items()}
    best, _, outs = common.time_all(fns, (params, x0), m["repeats"])
    stats = on.odeint(pb.field, x0, 0.0, MLP_T1, integrator=integ, args=params).stats
    ours = {g: dict(seconds=best[g], temp_bytes=temp[g]) for g in fns}
    for g in STRATEGIES:
        ours[g]["grad_rel"] = common.rel_discrepancy(outs[g][1], outs["backprop"][1])
    out = dict(ours=ours, nfe=int(stats["nfe"]), steps=int(stats["steps"]), rejected=int(stats["rejected"]),
               torch={}, torch_versions=None)
    if python is None:
        return out
    info, got = torch_peer(python, "mlp_adaptive", params, x0, dict(
        t1=MLP_T1, rtol=MLP_TOL, atol=MLP_TOL, repeats=m["torch_repeats"], budget_s=m["torch_budget_s"],
        runs=["torchdiffeq/backprop", "torchdiffeq/adjoint", "torchode/backprop"]))
    if info:
        ref = jax.tree.map(np.asarray, outs["backprop"][1])
        for key, run in info["runs"].items():
            if "seconds" in run:
                out["torch"][key] = {**run, "grad_rel": common.rel_discrepancy(torch_grads(got, key), ref)}
        out["torch_versions"] = {k: info.get(k) for k in ("torch", "torchdiffeq", "torchode", "threads")}
    print(out, flush=True)
    return out


def train_rows(cfg: dict) -> dict:
    """Train steps of the MNIST-1D ODE-Net (`odenets run experiment=mnist1d_odenet model.unroll=1`) through Dopri5
    under each gradient strategy and through its 6 Euler steps (Backprop), round robin on one batch: the minimum
    step time over `steps` steps after a compiling and a warm-up step, the forward NFE of the step
    (models.solver_stats) and XLA's temporary buffer size of the compiled train step."""
    t = cfg["train"]
    variants = {"euler": ("integrator=euler", "gradient=backprop"),
                **{g: ("integrator=dopri5", f"gradient={g}") for g in STRATEGIES}}
    runs = {}
    for name, over in variants.items():
        s = loop.setup(cli.compose([*TRAIN, *over, *t["overrides"]]))
        step = loop.make_steps(s)[0]
        b = s.run.optim.batch_size
        batch = jax.device_put((s.data.x_train[:b], s.data.y_train[:b]))
        runs[name] = dict(setup=s, step=step, batch=batch, state=s.state, times=[],
                          temp_bytes=common.temp_bytes(step, s.state, *batch))
    for k in range(t["steps"] + 2):  # a compiling step, a warm-up step, then the timed ones
        for r in runs.values():
            start = time.perf_counter()
            r["state"], _ = jax.block_until_ready(r["step"](r["state"], *r["batch"]))
            if k >= 2:
                r["times"].append(time.perf_counter() - start)
    out = {}
    for name, r in runs.items():
        params, rest, _ = r["state"]
        nfe = models.solver_stats(nnx.merge(r["setup"].graphdef, params, rest))["nfe"]
        out[name] = dict(seconds=min(r["times"]), nfe=int(nfe), temp_bytes=r["temp_bytes"],
                         batch=int(r["setup"].run.optim.batch_size), params=int(r["setup"].n_params))
    print(out, flush=True)
    return out


def measure(cfg: dict, python: str | None) -> dict:
    params, x0 = pb.adaptive_problem(cfg["batch"])
    rows, arrays = [], []
    for solver, save in cfg["groups"]:
        for mode in cfg["modes"]:
            rows.append(run_row(cfg, solver, save, mode, params, x0, arrays))
    info, trows = torch_rows(python, cfg, params, x0, rows, arrays) if python else (None, [])
    return {"config": cfg, "rows": rows, "torch": info, "torch_rows": trows, "mlp": mlp_rows(cfg, python),
            "backprop_checkpoints": ADJOINTS["backprop"](on.Dopri5(max_steps=MAX_STEPS)).checkpoints,
            "training": train_rows(cfg)}


# -- what the numbers say -----------------------------------------------------------------------
def name(r: dict) -> str:
    return f"{r['solver']} {r['save']} {MODES[r['mode']]}"


def goals(data: dict) -> list[common.Goal]:
    out = [common.Goal(f"odenets / diffrax, {name(r)}", r["ours_s"] / r["diffrax_s"], GOAL, False)
           for r in data["rows"]]
    out += [common.Goal(f"torchdiffeq / odenets, dopri5 {t['save']} {MODES[t['mode']]}",
                        t["seconds"] / t["ours_s"],
                        1.0, True, info=True) for t in data["torch_rows"]]
    out += [common.Goal("torchdiffeq / odenets, dopri5", None, 1.0, True, where="torch peer not run")
            for _ in [0] if not data["torch_rows"]]
    return out + mlp_goals(data.get("mlp")) + train_goals(data.get("training"))


def mlp_best(mlp: dict) -> str:
    return min(STRATEGIES, key=lambda g: mlp["ours"][g]["seconds"])


def peer_seconds(mlp: dict, lib: str) -> float | None:
    """The fastest of a torch library's runs (torchdiffeq: odeint or odeint_adjoint), None when not run."""
    times = [r["seconds"] for k, r in mlp["torch"].items() if k.startswith(lib + "/")]
    return min(times) if times else None


def mlp_goals(mlp: dict | None) -> list[common.Goal]:
    """odenets' default (Backprop) and best strategy against each torch library's fastest run: theirs / ours."""
    if mlp is None:
        return [common.Goal("torchdiffeq, torchode / odenets, MLP Neural ODE solve + gradient", None, 1.0, True,
                            where="not measured in this run")]
    out = []
    for lib in ("torchdiffeq", "torchode"):
        theirs = peer_seconds(mlp, lib)
        for label, g in (("default, Backprop", "backprop"), (f"best, {mlp_best(mlp)}", mlp_best(mlp))):
            out.append(common.Goal(f"{lib} / odenets ({label}), MLP Neural ODE solve + gradient",
                                   theirs and theirs / mlp["ours"][g]["seconds"], 1.0, True,
                                   where="" if theirs else f"{lib} not run"))
    return out


def train_ratios(training: dict, g: str) -> tuple[float, float]:
    """(cost per forward NFE, temporary bytes) of Dopri5 training under g over the Euler ODE-Net's."""
    per_nfe = lambda r: r["seconds"] / r["nfe"]
    base = training["euler"]
    return per_nfe(training[g]) / per_nfe(base), training[g]["temp_bytes"] / base["temp_bytes"]


def train_goals(training: dict | None) -> list[common.Goal]:
    if training is None:
        return [common.Goal("Dopri5 / Euler ODE-Net training, cost per forward NFE and temporary memory", None,
                            COST_GOAL, False, where="not measured in this run")]
    out = []
    for g in STRATEGIES:
        cost, memory = train_ratios(training, g)
        out += [common.Goal(f"Dopri5 / Euler ODE-Net training, cost per forward NFE, {g}", cost, COST_GOAL, False),
                common.Goal(f"Dopri5 / Euler ODE-Net training, temporary memory, {g}", memory, MEMORY_GOAL, False)]
    return out


def agrees(r: dict) -> bool:
    return r["rel"] <= TOL_DIFFRAX and r["steps"][0] == r["steps"][1] and r["rejected"][0] == r["rejected"][1]


def fields(data: dict) -> dict:
    cfg, rows, blocks, fmt = data["config"], data["rows"], common.template("adaptive"), common.fmt
    main = [[r["solver"], r["save"], MODES[r["mode"]], f"{1e3 * r['ours_s']:.3f}", f"{1e3 * r['diffrax_s']:.3f}",
             f"**{r['ours_s'] / r['diffrax_s']:.3f}x**" + (" (2 rounds)" if "first_ratio" in r else ""),
             f"{1e6 * (r['ours_s'] - r['diffrax_s']):+.0f}", f"{r['noise']:.3f}x", r["repeats"],
             r["nfe"], "{}/{}".format(*r["steps"]),
             "{}/{}".format(*r["rejected"]), f"{r['rel']:.1e}" + ("" if agrees(r) else " DISAGREE")] for r in rows]
    jaxprs = [[r["solver"], r["save"], MODES[r["mode"]], "{}/{}".format(*r["loop"]), "{}/{}".format(*r["outside"]),
               r["extra"]] for r in rows]
    torch = [[t["save"], MODES[t["mode"]], f"{1e3 * t['seconds']:.2f}", f"{1e3 * t['ours_s']:.3f}",
              f"{t['seconds'] / t['ours_s']:.1f}x", f"{t['nfe']}/{t['ours_nfe']}", t["calls"],
              f"{t['rel']:.1e}" + ("" if t["rel"] <= TOL_TORCH else " FAIL"), fmt(t["grad_rel"], ".1e")]
             for t in data["torch_rows"]]
    over = [blocks["over"].format(
        name=name(r), ratio=r["ours_s"] / r["diffrax_s"], gap=1e6 * (r["ours_s"] - r["diffrax_s"]),
        noise=r["noise"], loops="the same per-step program" if r["loop"][0] == r["loop"][1] else
        "{} vs {} equations per step".format(
            *r["loop"]), once=r["outside"][0] - r["outside"][1], rounds=blocks["rounds"].format(
            **r, within="the first round's miss does not reproduce" if r["second_ratio"] <= GOAL else
            "over the goal in both rounds") if "first_ratio" in r else "")
        for r in rows if "first_ratio" in r or r["ours_s"] / r["diffrax_s"] > GOAL]
    return {**cfg, **cfg["torch"], "budget_s": f"{cfg['budget_s']:g}",
            "mlp": mlp_section(data, blocks), "training": training_section(data, blocks),
            "torch_budget_s": f"{cfg['torch']['budget_s']:g}",
            "t1": f"{cfg['t1']:g}", "rtol": f"{RTOL:g}", "max_steps": MAX_STEPS,
            "checkpoints": data.get("backprop_checkpoints", MAX_STEPS), "dense": DENSE_TIMES,
            "table": common.rows(main), "jaxprs": common.rows(jaxprs), "tol": f"{TOL_DIFFRAX:g}",
            "worst": f"{max(r['rel'] for r in rows):.1e}",
            "torch_table": blocks["torch"].format(tol=TOL_TORCH, table=common.rows(torch)) if torch else "",
            "torch": blocks["torch_line"].format(**data["torch"]) if data["torch"] else blocks["no_torch"],
            "over": blocks["over_intro"] + "\n\n" + "\n".join(over) if over else ""}


def mlp_section(data: dict, blocks: dict) -> str:
    if "mlp" not in data:
        return blocks["not_measured"].format(what="MLP Neural ODE: Dopri5 solve + gradient")
    cfg, mlp, fmt = data["config"]["mlp"], data["mlp"], common.fmt
    ours = [[g, f"{1e3 * mlp['ours'][g]['seconds']:.2f}", common.fmt_bytes(mlp["ours"][g]["temp_bytes"]),
             f"{mlp['ours'][g]['seconds'] / mlp['ours']['forward']['seconds']:.2f}x",
             fmt(mlp["ours"][g].get("grad_rel"), ".1e")] for g in (*STRATEGIES, "forward")]
    torch = [[k, f"{1e3 * r['seconds']:.2f}", r["calls"], fmt(r["grad_rel"], ".1e"),
              f"{r['seconds'] / mlp['ours']['backprop']['seconds']:.2f}x",
              f"{r['seconds'] / mlp['ours'][mlp_best(mlp)]['seconds']:.2f}x"] for k, r in mlp["torch"].items()]
    return blocks["mlp"].format(
        mlp_batch=cfg["batch"], mlp_width=cfg["width"], mlp_hidden=cfg["hidden"], mlp_tol=f"{MLP_TOL:g}",
        mlp_t1=f"{MLP_T1:g}", mlp_repeats=cfg["repeats"], mlp_torch_repeats=cfg["torch_repeats"],
        mlp_nfe=mlp["nfe"], mlp_steps=mlp["steps"], mlp_rejected=mlp["rejected"], mlp_table=common.rows(ours),
        mlp_torch=common.rows(torch) if torch else "| (torch peers not run) | | | | | |",
        mlp_versions=", ".join(f"{k} {v}" for k, v in (mlp["torch_versions"] or {}).items()) or "not run")


def training_section(data: dict, blocks: dict) -> str:
    if "training" not in data:
        return blocks["not_measured"].format(what="Training through Dopri5: cost per NFE and memory")
    cfg, training = data["config"]["train"], data["training"]
    table = [[name, f"{1e3 * r['seconds']:.1f}", f"{r['batch'] / r['seconds']:.0f}", r["nfe"],
              f"{1e3 * r['seconds'] / r['nfe']:.2f}", common.fmt_bytes(r["temp_bytes"]),
              *(("1 (reference)", "1 (reference)") if name == "euler" else
                (f"{v:.2f}x" for v in train_ratios(training, name)))] for name, r in training.items()]
    return blocks["training"].format(
        train_cmd=" ".join(TRAIN + tuple(cfg["overrides"])), train_steps=cfg["steps"],
        train_table=common.rows(table), train_params=training["euler"]["params"], cost_goal=f"{COST_GOAL:g}",
        memory_goal=f"{MEMORY_GOAL:g}")


def figures(data: dict, fig_dir) -> None:
    rows, cfg = data["rows"], data["config"]
    by = {(t["save"], t["mode"]): 1e3 * t["seconds"] for t in data["torch_rows"]}
    bars = {"odenets": [1e3 * r["ours_s"] for r in rows], "diffrax direct": [1e3 * r["diffrax_s"] for r in rows]}
    if by:
        bars["torchdiffeq"] = [by.get((r["save"], r["mode"])) if r["solver"] == "dopri5" else None for r in rows]
    common.figure(fig_dir, "case2_adaptive", f"adaptive neural ODE: MLP 4-32-4, batch {cfg['batch']}, t1 = "
                  f"{cfg['t1']:g}, rtol = atol = {RTOL:g} (min of repeats)", bars=bars,
                  groups=[name(r).replace(" grad",
                                          "\ngrad") for r in rows], ylabel="time per call, ms (log scale)")
