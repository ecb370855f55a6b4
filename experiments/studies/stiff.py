"""Learning a stiff system from trajectories: explicit fixed steps diverge past the region's edge.

A field whose Jacobian has eigenvalues lambda with |lambda_max| >> |lambda_min| is stiff: the
fast modes decay at once, yet an explicit step of size h amplifies them by R(h lambda) with
|R| > 1 unless h |lambda_max| lies inside the method's region (Euler: h |lambda| <= 2 on the
negative real axis; RK4: <= 2.785). Training through such a solve multiplies the loss (and its
gradient) by |R|^steps: it diverges, or needs h below the edge, i.e. steps that grow with
|lambda_max|. A-stable implicit methods (backward Euler, the trapezoidal rule, Kvaerno5) are
stable for every h on the negative half-plane and train at coarse steps.

Two cases, both through the trajectory task's `Trajectory` model (one `odeint` solve per
observation interval, `steps_per_interval` steps each):

  linear:    x' = A x, A = -R(phi) diag(exp(theta)) R(phi)^T, learnable (theta, phi): the field is
             linear and its spectrum -exp(theta) known at every training step; targets are the
             closed-form paths of the true A (eigenvalues -1 and -1000) at log-spaced times.
  robertson: the Robertson kinetics (rates over 11 decades) fitted with the `odenets run`
             trajectory task (an MLP field, `fit`), one run per solver.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import odenets as on
from odenets import analysis, models, validate
from odenets import study as studies
from odenets._abstract import final

from ._plots import log_ticks

EXPLODED = 1e3  # a loss above this many times mean(y^2) (the zero path's loss), or non-finite, is divergence


def rotation(phi):
    """R(phi) = [[cos, -sin], [sin, cos]]."""
    c, s = jnp.cos(phi), jnp.sin(phi)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


def linear_matrix(log_rates, angle):
    """A = -R(angle) diag(exp(log_rates)) R(angle)^T: symmetric, eigenvalues -exp(log_rates)."""
    r = rotation(angle)
    return -(r * jnp.exp(log_rates)) @ r.T


@final
class LinearField(nnx.Module):
    """F(t, x) = A x with A = linear_matrix(theta, phi): a linear field whose spectrum -exp(theta)
    is known, and whose stiffness ratio exp(theta_2 - theta_1) is learned."""

    def __init__(self, log_rates, angle):
        self.log_rates = nnx.Param(jnp.asarray(log_rates, jnp.float32))
        self.angle = nnx.Param(jnp.asarray(angle, jnp.float32))

    def __call__(self, t, x):
        return x @ linear_matrix(self.log_rates[...], self.angle[...]).T


@final
@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: an integrator (by name) and its steps per observation interval (None for adaptive)."""

    integrator: str
    steps: int | None = None
    role: str = ""  # "explicit coarse", "explicit fine", "implicit", "adaptive implicit"


@final
@dataclasses.dataclass(frozen=True)
class Options:
    rates: tuple[float, float] = (1.0, 1000.0)  # true decay rates: eigenvalues -1 and -1000
    angle: float = 0.5  # true eigenvector angle (rad)
    init_rates: tuple[float, float] = (0.5, 300.0)  # the learnable field's start
    init_angle: float = 0.8
    trajectories: int = 8  # initial states on the unit circle
    num_times: int = 16  # observation times: 0, then log-spaced from t_first to t_end
    t_first: float = 1e-3
    t_end: float = 2.0
    coarse: int = 4  # steps per interval of the coarse runs
    fine: bool = True  # also run the last explicit method with steps below its edge
    fine_margin: float = 1.25  # the fine explicit run: h max|lambda| = edge / fine_margin on the widest interval
    explicit: tuple[str, ...] = ("euler", "rk4")  # coarse explicit runs; the last also runs fine
    implicit: tuple[str, ...] = ("backward_euler", "trapezoid", "kvaerno5")  # kvaerno5: adaptive, diffrax
    epochs: int = 150  # full-batch Adam steps
    lr: float = 0.05
    robertson: tuple[str, ...] = ("rk4", "backward_euler", "kvaerno5")  # `fit` on Robertson; empty: skipped
    robertson_epochs: int = 5
    robertson_depth: int = 4  # steps per observation interval (fixed-step solvers)
    robertson_train: int = 32
    robertson_times: int = 20
    robertson_t_end: float = 100.0  # last observation time (the dataset's default is 1e5)


@final
@studies.study.register("stiff")
class Stiff(studies.Study):
    title = "Learning a stiff system: explicit fixed steps diverge, implicit ones train"
    claim = (
        "Stiff problems (Hairer & Wanner 1996, 'Solving Ordinary Differential Equations II', Ch. IV) need "
        "A-stable implicit methods: an explicit step is stable only while h |lambda_max| lies in its small "
        "region, so its step is set by the fastest mode, not by accuracy. Kim, Ji, Deng, Ma & Rackauckas "
        "(2021, Chaos 31, 'Stiff neural ordinary differential equations') report the same for training: "
        "on Robertson's kinetics, Neural ODEs fitted through explicit solvers fail, and stiff (implicit) "
        "solvers with scaling are needed."
    )
    sizes = {
        "smoke": Options(explicit=("euler",), implicit=("backward_euler",), fine=False, epochs=6, trajectories=4,
                         num_times=8, robertson=()),
        "full": Options(),
    }
    smoke_expect = ("explicit_coarse_diverges", "implicit_trains")

    def run(self, options: Options, report: studies.Report) -> None:
        check(options)
        ts, x0, y = linear_data(options)
        edges = {name: real_edge(name) for name in options.explicit}
        runs = plan(options, ts, edges)
        results = [train_linear(options, run, ts, x0, y) for run in runs]
        robertson = [fit_robertson(options, name, report) for name in options.robertson]
        write(options, ts, edges, runs, results, robertson, report)


def check(options: Options) -> None:
    """Every option, before any compute."""
    fixed = [n for n in on.integrator.names() if not on.integrator.get(n).adaptive]
    for key in ("rates", "init_rates"):
        values = getattr(options, key)
        if len(values) != 2:
            raise ValueError(f"study.{key} must be two decay rates, got study.{key}={values!r}")
        for v in values:
            validate.number(f"study.{key}", v, low=0.0)
    for name in options.explicit:
        validate.choice("study.explicit", name, fixed)
    for name in (*options.implicit, *options.robertson):
        validate.choice("study.implicit", name, on.integrator.names())
    for key in ("trajectories", "coarse", "epochs", "robertson_epochs", "robertson_depth", "robertson_train"):
        validate.integer(f"study.{key}", getattr(options, key), low=1)
    validate.integer("study.num_times", options.num_times, low=3)
    validate.integer("study.robertson_times", options.robertson_times, low=3)
    for key in ("t_first", "lr", "fine_margin"):
        validate.number(f"study.{key}", getattr(options, key), low=0.0)
    validate.number("study.t_end", options.t_end, low=options.t_first)


def linear_data(options: Options):
    """(ts, x0, y): ts = 0 then log-spaced from t_first to t_end; x0 on the unit circle; y[b, i] =
    expm(A ts[i]) x0[b] in closed form from the eigen-decomposition of the true A (float64, stored float32)."""
    ts = np.concatenate([[0.0], np.geomspace(options.t_first, options.t_end, options.num_times - 1)])
    angles = 2 * np.pi * (np.arange(options.trajectories) + 0.5) / options.trajectories
    x0 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    c, s = np.cos(options.angle), np.sin(options.angle)
    v = np.array([[c, -s], [s, c]])
    decay = np.exp(-np.outer(ts, options.rates))  # (T, 2)
    y = np.einsum("ij,tj,kj,bk->bti", v, decay, v, x0)
    return ts, x0.astype(np.float32), y.astype(np.float32)


def real_edge(integrator: str) -> float:
    """The method's interval of stability [0, X] on the negative real axis (analysis.reach along pi)."""
    return float(analysis.reach(integrator, np.pi))


def is_implicit(integrator: str) -> bool:
    """Whether a method solves for its stages (theta methods; diffrax's implicit solvers such as Kvaerno5)."""
    integ = on.integrator(integrator)
    if integ.adaptive:
        import diffrax

        return isinstance(integ.diffrax_solver(), diffrax.AbstractImplicitSolver)
    return not math.isfinite(real_edge(integrator)) or bool(getattr(integ, "dynamic_nfe", False))


def plan(options: Options, ts: np.ndarray, edges: dict[str, float]) -> list[Run]:
    """Coarse explicit runs, one fine explicit run (the last explicit method, with h on the widest interval
    at edge / fine_margin for the true lambda_max), then the implicit ones at the coarse steps."""
    runs = [Run(name, options.coarse, "explicit coarse") for name in options.explicit]
    if options.explicit and options.fine:
        name = options.explicit[-1]
        widest = float(np.max(np.diff(ts)))
        fine = math.ceil(options.fine_margin * widest * max(options.rates) / edges[name])
        runs.append(Run(name, max(fine, options.coarse), "explicit fine"))
    for name in options.implicit:
        adaptive = on.integrator.get(name).adaptive
        role = "adaptive implicit" if adaptive else "implicit"
        runs.append(Run(name, None if adaptive else options.coarse, role))
    return runs


def train_linear(options: Options, run: Run, ts, x0, y) -> dict:
    """Full-batch Adam on the MSE of the Trajectory model's states at ts; stops at the first diverged loss.

    Returns losses, the learned rates after each step, NFE of one forward call and of its backward
    pass (models.solver_stats; -1 where unknown), compile and per-step wall times, and a failure message
    if the solve raised (an adaptive solve that cannot reach t1 raises at run time)."""
    model = models.Trajectory(lambda rngs: LinearField(np.log(options.init_rates), options.init_angle), 2, ts,
                              steps_per_interval=run.steps or 1, integrator=run.integrator, gradient="backprop",
                              rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(options.lr)
    x0, y = jnp.asarray(x0), jnp.asarray(y)
    scale = float(jnp.mean(y**2))

    @jax.jit
    def step(params, rest, opt_state):
        model = nnx.merge(graphdef, params, rest)

        def loss_fn(m):
            return jnp.mean((m(x0) - y) ** 2)

        # gradients w.r.t. the nnx.Param leaves; the solver statistics of the forward pass come back in `rest`
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        new_rest = nnx.split(model, nnx.Param, ...)[2]
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss

    out = {"losses": [], "rates": [], "nfe": -1, "nfe_backward": -1, "error": None, "diverged_at": None}
    opt_state = opt.init(params)
    rates = lambda p: np.exp(np.asarray(p["field"]["log_rates"][...], np.float64))
    begin = start = time.perf_counter()
    try:
        for k in range(options.epochs):
            new_params, new_rest, new_opt, loss = step(params, rest, opt_state)
            loss = float(loss)
            if k == 0:
                out["compile_s"] = time.perf_counter() - start
                start = time.perf_counter()
                stats = models.solver_stats(nnx.merge(graphdef, params, new_rest))
                out["nfe"], out["nfe_backward"] = stats["nfe"], stats["nfe_backward"]
            out["losses"].append(loss)
            out["rates"].append(rates(params))
            if not math.isfinite(loss) or loss > EXPLODED * scale:
                out["diverged_at"] = k
                break
            params, rest, opt_state = new_params, new_rest, new_opt
    except Exception as err:  # noqa: BLE001 - a solve that fails at run time is a measured outcome
        message = next((line for line in str(err).splitlines() if "odeint" in line), str(err).strip())[:200]
        if "non-finite" in message:  # the state overflowed inside the solve: odeint's check stops it
            out["losses"].append(float("nan"))
            out["diverged_at"] = len(out["losses"]) - 1
        else:
            out["error"] = message
    end = time.perf_counter()
    out["wall_s"] = end - begin  # compile (the first step) included
    out.setdefault("compile_s", end - begin)  # the first step raised: compile and that step
    out["steps_s"] = (end - start) / (len(out["losses"]) - 1) if len(out["losses"]) > 1 else None
    out["final_rates"] = rates(params)
    out["solver_steps"] = (run.steps * (len(ts) - 1) if run.steps else
                           adaptive_steps(run.integrator, params["field"], ts, x0, y))
    return out


def adaptive_steps(integrator: str, field_params, ts, x0, y) -> int:
    """Accepted + rejected steps of an adaptive solve of the trained linear field over every observation
    interval, each from the observed states at its start (odeint's stats; the NFE of an adaptive implicit
    solve is not counted, its steps are)."""
    a = linear_matrix(field_params["log_rates"][...], field_params["angle"][...])
    total = 0
    for i in range(len(ts) - 1):
        start = x0 if i == 0 else y[:, i]
        sol = on.odeint(lambda t, x, m: x @ m.T, start, float(ts[i]), float(ts[i + 1]), integrator=integrator,
                        args=a)
        total += int(sol.stats["steps"]) + int(sol.stats["rejected"])
    return total


def fit_robertson(options: Options, integrator: str, report: studies.Report) -> dict:
    """`fit` (the `odenets run` trajectory task) on Robertson's kinetics with an MLP Neural ODE."""
    from odenets.train.loop import fit

    cfg = {
        "data": {"name": "robertson", "n_train": options.robertson_train, "n_test": 16,
                 "num_times": options.robertson_times, "t_end": options.robertson_t_end},
        "model": {"family": "node", "width": 32, "depth": options.robertson_depth, "time": False},
        "integrator": {"name": integrator},
        "optim": {"name": "adam", "lr": 1e-2, "batch_size": min(16, options.robertson_train),
                  "epochs": options.robertson_epochs},
        "train": {"progress": False, "log_every": 1000},
    }
    run_dir = report.subdir(f"robertson_{integrator}")
    start = time.perf_counter()
    try:
        summary = fit(cfg, run_dir)
    except Exception as err:  # noqa: BLE001 - a run that fails is a measured outcome
        message = next((line for line in str(err).splitlines() if "odeint" in line), str(err).strip())
        return {"integrator": integrator, "status": "failed", "error": message[:200]}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    test = [r["loss"] for r in records if r["split"] == "test"]
    finite = all(math.isfinite(r.get("grad_norm", 0.0)) for r in records if r["split"] == "train")
    status = summary["status"] if finite else "diverged (non-finite gradients)"
    return {"integrator": integrator, **summary, "status": status, "first_test_mse": test[0] if test else None,
            "test_curve": test, "total_s": time.perf_counter() - start}


def write(options, ts, edges, runs, results, robertson, report) -> None:
    import matplotlib.pyplot as plt

    lam_max = max(options.rates)
    widest = float(np.max(np.diff(ts)))
    report.setup(
        f"Linear case: true x' = A x with eigenvalues -{options.rates[0]:g} and -{options.rates[1]:g} "
        f"(eigenvectors at angle {options.angle}); {options.trajectories} initial states on the unit circle; "
        f"{options.num_times} observation times, 0 then log-spaced from {options.t_first:g} to {options.t_end:g} "
        f"(widest interval {widest:.3g}); targets in closed form. The learnable field is linear, A = "
        "-R(phi) diag(exp(theta)) R(phi)^T, started at rates "
        f"{options.init_rates} and angle {options.init_angle}, fitted by full-batch Adam (lr {options.lr}, "
        f"{options.epochs} steps) on the MSE of the `Trajectory` model's states (one `odeint` solve per interval, "
        f"Backprop). Coarse runs take {options.coarse} steps per interval; the fine explicit run takes the steps "
        f"that put h |lambda_max| at the edge / {options.fine_margin} on the widest interval. Stability "
        "intervals on the negative real axis of the explicit methods, read off their R (`odenets.analysis`): "
        + ", ".join(f"{n} {e:.4g}" for n, e in edges.items()) + "."
    )
    if options.robertson:
        report.setup(
            "Robertson case: `odenets run data=robertson model=node` (the trajectory task: an MLP field of width "
            f"32 on the raw state, MSE of the states at {options.robertson_times} times, 0 then log-spaced from "
            f"1e-5 to {options.robertson_t_end:g}), {options.robertson_train} training trajectories, "
            f"{options.robertson_epochs} epochs, Adam lr 1e-2, {options.robertson_depth} steps per interval for "
            "fixed-step solvers, one run per solver: " + ", ".join(options.robertson) + ". No rescaling of states "
            "or time (Kim et al. rescale). The horizon is shorter than the dataset's default 1e5: there, while "
            "this study was built, backward Euler's Newton solve became non-finite and Kvaerno5 exceeded "
            "max_steps = 4096 in the first epoch, so no solver trained."
        )
    rows = []
    for run, res in zip(runs, results, strict=True):
        h = widest / run.steps if run.steps else None
        z = h * lam_max if h else None
        status = "failed" if res["error"] else "diverged" if res["diverged_at"] is not None else "trained"
        final = res["losses"][-1] if res["losses"] else float("nan")
        rows.append([run.integrator, run.role, run.steps, h, z, edges.get(run.integrator), status,
                     res["losses"][0] if res["losses"] else None, final,
                     f"{res['final_rates'][0]:.4g}, {res['final_rates'][1]:.4g}", res["solver_steps"], res["nfe"],
                     res["nfe_backward"], res.get("compile_s"), res["steps_s"], res["wall_s"]])
        res.update(status=status, final=final, h=h, z=z)
    report.table("linear", ["integrator", "run", "steps/interval", "h widest", "h lambda_max", "edge", "status",
                            "initial loss", "final loss", "learned rates", "solver steps", "NFE fwd", "NFE bwd",
                            "compile (s)",
                            "s/step", "wall (s)"], rows,
                 caption="Linear stiff system (true rates "
                         f"{options.rates[0]:g}, {options.rates[1]:g}): h lambda_max on the widest interval "
                         "against the method's real-axis edge; NFE of one forward call and its backward pass "
                         "(-1: not known, Newton and adaptive steps); solver steps: all intervals of one forward "
                         "call (adaptive: accepted + rejected, with the trained field)")
    if robertson:
        report.table("robertson", ["integrator", "status", "first test MSE", "final test MSE",
                                   "test rel. error", "NFE fwd", "NFE bwd", "training wall (s)",
                                   "run wall incl. compile (s)", "note"],
                     [[r["integrator"], r.get("status"), r.get("first_test_mse"), r.get("test_mse"),
                       r.get("test_rel_error"), r.get("nfe_forward"), r.get("nfe_backward"), r.get("wall_time_s"),
                       r.get("total_s"), r.get("error", "")] for r in robertson],
                     caption="Robertson kinetics through the trajectory task (`fit`)")
    _figures(options, runs, results, report, plt)
    if robertson:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for i, r in enumerate(robertson):
            curve = np.asarray(r.get("test_curve") or [], float)
            if curve.size:
                ax.semilogy(np.arange(1, curve.size + 1), np.where(np.isfinite(curve), curve, np.nan), marker="o",
                            color=f"C{i}", label=f"{r['integrator']} ({r.get('status')})")
        log_ticks(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test MSE")
        ax.legend(fontsize="x-small")
        report.figure("robertson", fig, "Robertson through the trajectory task: test MSE per epoch per solver "
                      "(each run's fitted trajectories: runs/robertson_<solver>/figures)")
    _findings(options, edges, runs, results, robertson, report)


def _figures(options, runs, results, report, plt) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (run, res) in enumerate(zip(runs, results, strict=True)):
        label = f"{run.integrator} ({run.role}{f', {run.steps}/interval' if run.steps else ''})"
        losses = np.asarray(res["losses"], float)
        if losses.size:
            axes[0].semilogy(np.arange(losses.size), np.where(np.isfinite(losses), losses, np.nan), color=f"C{i}",
                             marker="x" if res["status"] == "diverged" else None, label=label)
            fast = [r[1] for r in res["rates"]]
            axes[1].plot(np.arange(len(fast)), fast, color=f"C{i}", label=label)
    diverged = [f"{r.integrator} ({r.role}): step {s['diverged_at']}, loss {s['losses'][-1]:.3g}"
                for r, s in zip(runs, results, strict=True) if s["diverged_at"] is not None]
    if diverged:  # a non-finite loss has no point on a log axis: say where it happened
        axes[0].text(0.02, 0.02, "diverged:\n" + "\n".join(diverged), transform=axes[0].transAxes, fontsize=7,
                     va="bottom")
    axes[1].axhline(max(options.rates), color="k", linestyle=":", label="true fast rate")
    log_ticks(axes[0])
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("MSE loss")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("learned fast rate -lambda_max")
    for ax in axes:
        ax.legend(fontsize="x-small")
    report.figure("training", fig,
                  "linear stiff system: loss and learned fast rate per training step (x: diverged)")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = [f"{r.integrator}\n{r.role}" for r in runs]
    solver_steps = [res["solver_steps"] for res in results]
    wall = [res["wall_s"] for res in results]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, solver_steps, 0.4, label="solver steps per forward call", color="C0")
    ax.set_yscale("log")
    ax.set_ylabel("solver steps (all intervals)")
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, wall, 0.4, label="wall time (s)", color="C1")
    ax2.set_ylabel("training wall time (s)")
    ax.set_xticks(x, names, fontsize=7)
    ax.legend(loc="upper left", fontsize="x-small")
    ax2.legend(loc="upper right", fontsize="x-small")
    report.figure("cost", fig,
                  "cost per run: solver steps of one forward call (log; NFE in the table) and training wall time")


def _findings(options, edges, runs, results, robertson, report) -> None:
    pairs = list(zip(runs, results, strict=True))
    coarse = [(r, s) for r, s in pairs if r.role == "explicit coarse"]
    outside = [(r, s) for r, s in coarse if s["z"] > edges[r.integrator]]
    implicit = [(r, s) for r, s in pairs if "implicit" in r.role]
    fine = [(r, s) for r, s in pairs if r.role == "explicit fine"]

    def describe(group):
        return "; ".join(f"{r.integrator} ({r.steps or 'adaptive'} steps/interval): {s['status']}, loss "
                         f"{s['losses'][0] if s['losses'] else float('nan'):.3g} -> {s['final']:.3g}"
                         + (f" (diverged at step {s['diverged_at']})" if s["diverged_at"] is not None else "")
                         + (f" ({s['error']})" if s["error"] else "") for r, s in group)

    if coarse:
        diverged = bool(outside) and all(s["status"] == "diverged" for _, s in outside)
        report.finding("explicit_coarse_diverges", diverged,
                       "explicit fixed steps with h lambda_max past the region's edge diverge (non-finite loss, "
                       f"or above {EXPLODED:g} x mean(y^2), the loss of the zero path)",
                       describe(coarse) + ".")
    if implicit:
        ok = all(s["status"] == "trained" and s["final"] < 0.5 * s["losses"][0] for _, s in implicit)
        report.finding("implicit_trains", ok,
                       "A-stable implicit methods train at the same coarse steps: the loss stays finite and falls "
                       "(to half or less)",
                       describe(implicit) + ".")
    if fine:
        ok = all(s["status"] == "trained" and s["final"] < 0.5 * s["losses"][0] for _, s in fine)
        report.finding("explicit_fine_trains", ok,
                       "explicit steps below the edge train, at many more evaluations",
                       describe(fine) + "; NFE per forward call " + ", ".join(
                           f"{r.integrator} ({r.role}) {s['nfe']}" for r, s in pairs) + ".")
    trained = [(r, s) for r, s in pairs if s["status"] == "trained"]
    if trained:
        learned = "; ".join(f"{r.integrator} ({r.role}) {s['final_rates'][0]:.4g}, {s['final_rates'][1]:.4g}"
                            for r, s in trained)
        report.note("A field fitted through a solver absorbs that solver's error: the learned rates of the "
                    f"trained runs, against the true {options.rates[0]:g}, {options.rates[1]:g}: {learned}.")
    for r, s in pairs:
        report.note(f"{r.integrator} ({r.role}): learned rates {s['final_rates'][0]:.4g}, "
                    f"{s['final_rates'][1]:.4g} "
                    f"(true {options.rates[0]:g}, {options.rates[1]:g}; start {options.init_rates}); "
                    f"wall {s['wall_s']:.3g} s.")
    if robertson:
        by = {r["integrator"]: r for r in robertson}
        trained = [n for n, r in by.items() if r.get("status") == "completed" and r.get("test_mse") is not None
                   and math.isfinite(r["test_mse"]) and r["test_mse"] < r["first_test_mse"]]
        implicit = [n for n in by if is_implicit(n)]
        explicit = [n for n in by if n not in implicit]
        holds = bool(implicit) and all(n in trained for n in implicit) and not any(n in trained for n in explicit)
        measured = "; ".join(
            f"{n}: {r.get('status')}, test MSE {r.get('first_test_mse')} -> {r.get('test_mse')}, NFE forward "
            f"{r.get('nfe_forward')}, wall {r.get('wall_time_s')} s"
            + (f" ({r['error']})" if r.get("error") else "")
            for n, r in by.items())
        report.finding("robertson_implicit_trains_explicit_does_not", holds,
                       "on Robertson's kinetics (an MLP field through `fit`), implicit solvers train (the test "
                       "MSE falls) and explicit fixed steps do not", measured + ".")
