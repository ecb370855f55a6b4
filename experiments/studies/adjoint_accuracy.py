"""Gradient accuracy of Backprop, Checkpoint, Adjoint and Reversible against the continuous gradient.

Problem (float64): dx/dt = f(x; theta) = tanh(x W1 + b1) W2 - c m * x on R^d, theta = (W1, b1, W2),
m = (1, .., 1, 0, .., 0) (the first half of the coordinates damped at rate c), a batch of x0,
L(theta) = mean_batch |x(1)|^2. With c = 0 the field is a smooth tanh MLP; with c large the
dynamics contract strongly, so the reverse-time flow that the continuous adjoint integrates to
rebuild x(t) from x(1) expands errors like e^{c t}.

Discretise-then-optimise (Backprop, Checkpoint, Reversible) differentiates the discrete map
x0 -> x_N exactly: its error against the true dL/dtheta is the solver's, O(h^p). Optimise-then-
discretise (Adjoint) integrates the continuous adjoint system backwards: also O(h^p) from the true
gradient, but it is not the gradient of the discrete map (Gholami, Keutzer & Biros 2019), and its
backward reconstruction of x(t) amplifies errors where the forward flow contracts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import odenets as on
from experiments.studies._xla import compiled, loglog_slope, rel
from odenets import study as studies
from odenets._abstract import final
from odenets.gradients.adjoint import ReconstructionWarning
from odenets.solve import resolve_solver

DRIFT = re.compile(r"\|x_rebuilt - x0\| = \S+, (\S+) relative")
ORDER_SLACK = 0.3  # fitted slope vs the declared order, as the test suite's convergence-order check
CHECKPOINT_EXACT, REVERSIBLE_EXACT = 1e-12, 1e-10  # rounding only: relative gradient discrepancy to Backprop


@final
@dataclasses.dataclass(frozen=True)
class Options:
    steps: tuple[int, ...] = (4, 8, 16, 32, 64, 128)  # fixed-step sweep, c = 0
    integrators: tuple[str, ...] = ("euler", "rk4", "reversible_heun")
    gradients: tuple[str, ...] = ("backprop", "checkpoint", "adjoint", "reversible")  # refused pairs skipped
    adaptive: tuple[str, ...] = ("dopri5", "tsit5")
    adaptive_gradients: tuple[str, ...] = ("backprop", "adjoint")
    tolerances: tuple[float, ...] = (1e-3, 1e-5, 1e-7, 1e-9)  # rtol = atol
    dampings: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0)  # c of the contracting case
    unstable_integrators: tuple[str, ...] = ("rk4", "reversible_heun")
    unstable_gradients: tuple[str, ...] = ("backprop", "adjoint", "reversible")
    unstable_steps: int = 32
    reverse_solve: bool = True  # also rebuild x(0) by a reverse-time odeint, beside the warning's drift
    reference_steps: int = 2048  # RK4 + Backprop, float64
    dopri8_check: bool = True  # cross-check the reference with diffrax Dopri8 at rtol = atol = 1e-12
    width: int = 4
    hidden: int = 16
    batch: int = 8


def _params(seed: int, width: int, hidden: int, batch: int):
    """(theta, x0) in float64, drawn by numpy (no compile)."""
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((width, hidden)) / math.sqrt(width),
              "b1": 0.1 * rng.standard_normal(hidden),
              "W2": rng.standard_normal((hidden, width)) / math.sqrt(hidden)}
    return jax.tree.map(jnp.asarray, params), jnp.asarray(rng.standard_normal((batch, width)))


def _rate(damping: float, width: int):
    """c m: the damping rate per coordinate, c on the first half, 0 on the rest."""
    return jnp.asarray([damping if i < width // 2 else 0.0 for i in range(width)], jnp.float64)


def field(t, x, args):
    """f(t, x; theta, c m) = tanh(x W1 + b1) W2 - c m * x."""
    p, rate = args
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] - rate * x


@final
class Gradients:
    """dL/dtheta by one (integrator, gradient, steps), compiled once and reused for every damping c."""

    def __init__(self, x0, params):
        self.x0, self.params, self.cache = x0, params, {}

    def __call__(self, integrator, gradient, steps, rate):
        """(dL/dtheta, forward NFE, temp bytes, the relative drift a ReconstructionWarning reported or None)."""
        key = (integrator, gradient, steps)
        if key not in self.cache:
            x0 = self.x0

            def loss(p, rate):
                sol = on.odeint(field, x0, 0.0, 1.0, steps, integrator=integrator, gradient=gradient,
                                args=(p, rate))
                return jnp.mean(jnp.sum(sol.x**2, axis=-1)), sol.stats["nfe"]

            self.cache[key] = compiled(jax.grad(loss, has_aux=True), self.params, rate)
        executable, temp = self.cache[key]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ReconstructionWarning)
            grads, nfe = jax.block_until_ready(executable(self.params, rate))
            jax.effects_barrier()
        drifts = [float(m[1]) for w in caught if issubclass(w.category, ReconstructionWarning)
                  for m in [DRIFT.search(str(w.message))] if m]
        return grads, int(nfe), temp, (max(drifts) if drifts else None)


def _pairs(integrators, gradients):
    """(integrator, gradient) pairs that odenets accepts (their own `check`s), and the refused ones."""
    ok, refused = [], []
    for i in integrators:
        for g in gradients:
            try:
                resolve_solver(i, g, per_step=False)
                ok.append((i, g))
            except ValueError as err:
                refused.append((i, g, str(err).split(";")[0]))
    return ok, refused


def _backward_drift(x0, params, rate, integrator, steps) -> float:
    """|x_rebuilt - x0| / |x0| of the reverse-time solve from x(1) to t = 0 (what the adjoint rebuilds)."""

    def there_and_back(args):
        x1 = on.odeint(field, x0, 0.0, 1.0, steps, integrator=integrator, args=args).x
        return on.odeint(field, x1, 1.0, 0.0, steps, integrator=integrator, args=args).x

    return rel(jax.jit(there_and_back)((params, rate)), x0)


@final
@studies.study.register("adjoint_accuracy")
class AdjointAccuracy(studies.Study):
    title = "Adjoint vs backprop vs reversible: gradient accuracy, memory and unstable reconstruction"
    claim = ("The continuous adjoint (Chen et al. 2018) integrates the adjoint ODE backwards and rebuilds x(t) "
             "by a reverse-time solve: memory independent of the number of steps, but its gradient is that of "
             "the ODE discretised a second time, not the gradient of the discrete forward map, and where the "
             "backward reconstruction is unstable it can be badly wrong (Gholami, Keutzer & Biros 2019, ANODE). "
             "Backprop and checkpointing (Griewank & Walther 2008) give the exact gradient of the discrete "
             "solve; reversible integration (Gomez et al. 2017; Kidger et al. 2021) gives the same exact "
             "gradient in constant memory by inverting the steps algebraically.")
    sizes = {
        "smoke": Options(steps=(4, 16), integrators=("reversible_heun",),
                         gradients=("backprop", "adjoint", "reversible"), adaptive=(), dampings=(40.0,),
                         unstable_integrators=("rk4",), unstable_gradients=("backprop", "adjoint"),
                         reference_steps=1024, dopri8_check=False, reverse_solve=False),
        "full": Options(),
    }
    smoke_expect = ("backprop_order", "adjoint_gap_shrinks", "reversible_exact", "memory",
                    "unstable_adjoint_fails")

    def run(self, options: Options, report: studies.Report) -> None:
        with jax.enable_x64(True):
            self._run(options, report)

    def _run(self, o: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        params, x0 = _params(report.seed, o.width, o.hidden, o.batch)
        grad_of, smooth = Gradients(x0, params), _rate(0.0, o.width)
        ref = lambda rate: grad_of("rk4", "backprop", o.reference_steps, rate)[0]
        g_ref = ref(smooth)
        report.setup(
            f"Field f(x; theta) = tanh(x W1 + b1) W2 - c m * x on R^{o.width} (hidden {o.hidden}, "
            f"W ~ N(0, 1/fan_in), b1 ~ N(0, 0.01), seed {report.seed}), m = 1 on the first {o.width // 2} "
            f"coordinates, batch {o.batch} of x0 ~ N(0, I), loss mean |x(1)|^2, t in [0, 1], float64 throughout. "
            f"Reference dL/dtheta: RK4 + "
            f"Backprop with {o.reference_steps} steps (error O(h^4) ~ {o.reference_steps ** -4.0:.0e}). Error = "
            f"|g - g_ref| / |g_ref| over all parameters; gap = |g - g_backprop| / |g_backprop| at the same "
            "integrator and steps (how far a strategy is from the exact gradient of the discrete solve). "
            "Memory: XLA's temporary bytes of the compiled jit(grad(loss)) (as experiments/benchmarks/memory.py).")
        report.setup(
            f"Fixed steps (c = 0): integrators {', '.join(o.integrators)}, steps {', '.join(map(str, o.steps))}, "
            f"gradients {', '.join(o.gradients)}, paired as odenets' own checks allow. Adaptive (c = 0): "
            f"{', '.join(o.adaptive) or 'none'} with {', '.join(o.adaptive_gradients)} at rtol = atol in "
            f"{', '.join(f'{t:g}' for t in o.tolerances)}. Contracting case: c in "
            f"{', '.join(f'{c:g}' for c in o.dampings)}, {o.unstable_steps} steps of "
            f"{', '.join(o.unstable_integrators)}; the drift is the relative error |x_rebuilt - x0| / |x0| "
            "that odenets' ReconstructionWarning reports (captured), beside that of a reverse-time odeint from "
            "x(1) to t = 0 with the same integrator and steps.")
        if o.dopri8_check:
            self._dopri8(x0, (params, smooth), g_ref, report)

        # -- fixed steps -------------------------------------------------------------------------------
        pairs, refused = _pairs(o.integrators, o.gradients)
        runs = {}  # (integrator, gradient, steps) -> (grads, nfe, temp, drift)
        for integ, grad in pairs:
            for n in o.steps:
                runs[integ, grad, n] = grad_of(integ, grad, n, smooth)
        rows, orders = [], {}
        for integ, grad in pairs:
            errs, gaps = [], []
            for n in o.steps:
                g, nfe, temp, drift = runs[integ, grad, n]
                bp = runs.get((integ, "backprop", n))
                err, gap = rel(g, g_ref), (rel(g, bp[0]) if bp else None)
                errs.append(err)
                gaps.append(gap)
                rows.append([integ, grad, n, err, gap, temp, drift])
            order = on.integrator(integ).order
            fit = [(n, e) for n, e in zip(o.steps, errs) if e > 1e-12]  # above the reference's own error
            gap_fit = [(n, e) for n, e in zip(o.steps, gaps) if e is not None and e > 1e-12]
            orders[integ, grad] = dict(order=order, slope=loglog_slope(*zip(*fit)) if len(fit) > 1 else math.nan,
                                       gap_slope=loglog_slope(*zip(*gap_fit)) if len(gap_fit) > 1 else math.nan,
                                       errs=errs, gaps=gaps, temp_lo=runs[integ, grad, o.steps[0]][2],
                                       temp_hi=runs[integ, grad, o.steps[-1]][2])
        columns = ["integrator", "gradient", "steps", "error vs reference", "gap to backprop", "temp bytes",
                   "warning drift"]
        report.table("steps", columns, rows,
                     "Fixed steps, c = 0: relative gradient error, gap to the discrete gradient, temporary "
                     "memory, and the drift a ReconstructionWarning reported (- where none)")
        report.table("orders", ["integrator", "gradient", "order", "error slope", "gap slope",
                                f"temp bytes ({o.steps[0]} steps)", f"temp bytes ({o.steps[-1]} steps)"],
                     [[i, g, v["order"], v["slope"], v["gap_slope"], v["temp_lo"], v["temp_hi"]]
                      for (i, g), v in orders.items()],
                     "Fitted log-log slopes against steps: error ~ steps^slope (expected -order)")
        if refused:
            report.note("Pairs odenets refuses (their own checks): " + "; ".join(
                f"{i} + {g} ({why})" for i, g, why in refused) + ".")
        self._fixed_findings(o, orders, runs, pairs, report)
        ratios = [f"{i} {orders[i, 'adjoint']['errs'][-1] / orders[i, 'backprop']['errs'][-1]:.2f}x"
                  for i, g in pairs if g == "adjoint" and (i, "backprop") in orders]
        if ratios:
            report.note(f"At {o.steps[-1]} steps Adjoint's error against the continuous gradient is "
                        + ", ".join(ratios) + " Backprop's: on this smooth field the continuous adjoint, though "
                        "not the discrete gradient, is no less accurate a gradient of the ODE.")
        warned = [(i, n, d) for (i, g, n), (_, _, _, d) in runs.items() if g == "adjoint" and d is not None]
        if warned:
            report.note(
                "On the smooth field (c = 0) the ReconstructionWarning fired for " + ", ".join(
                    f"{i} at {n} steps (drift {d:.3g})" for i, n, d in warned) + ": the forward and the "
                "reverse solve are each O(h^p) accurate, so they do not invert each other exactly and the drift "
                "falls with h; this is discretisation, not an unstable reconstruction, and the gradient errors "
                "there are those of the table (the 1% threshold flags few-step low-order solves).")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for (integ, grad), v in orders.items():
            style = dict(marker="o", label=f"{integ} + {grad}", linestyle="--" if grad == "adjoint" else "-")
            axes[0].loglog(o.steps, v["errs"], **style)
            if grad != "backprop" and all(g is not None for g in v["gaps"]):
                axes[1].loglog(o.steps, np.maximum(v["gaps"], 1e-17), **style)  # exact zeros drawn at 1e-17
        axes[0].set(xlabel="steps N", ylabel="|g - g_ref| / |g_ref|", title="error vs the continuous gradient")
        axes[1].set(xlabel="steps N", ylabel="|g - g_backprop| / |g_backprop|",
                    title="gap to the exact discrete gradient")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
        report.figure("error_vs_steps", fig, "Relative gradient error against steps (left) and distance to "
                                             "Backprop's discrete gradient (right); float64, c = 0")

        if o.adaptive:
            self._tolerances(o, grad_of, smooth, g_ref, report, plt)
        self._unstable(o, grad_of, ref, report, plt)

    def _dopri8(self, x0, args, g_ref, report):
        import diffrax

        def loss(p):
            sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri8(), 0.0, 1.0, None, x0, (p, args[1]),
                                      stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
                                      max_steps=100_000)
            return jnp.mean(jnp.sum(sol.ys[-1] ** 2, axis=-1))

        d = rel(jax.jit(jax.grad(loss))(args[0]), g_ref)
        report.value("reference_vs_dopri8", d)
        report.note(f"The reference gradient agrees with diffrax Dopri8 (rtol = atol = 1e-12, backprop through "
                    f"the solve) to {d:.2g} relative.")

    def _fixed_findings(self, o, orders, runs, pairs, report):
        def order_finding(key, grad, what):
            got = {i: v for (i, g), v in orders.items() if g == grad}
            if not got:
                return
            holds = all(abs(v["slope"] + v["order"]) <= ORDER_SLACK for v in got.values())
            measured = "; ".join(f"{i}: slope {v['slope']:.2f} (p = {v['order']})" for i, v in got.items())
            report.finding(key, holds, f"{what} error vs the continuous gradient falls as h^p, p the integrator's "
                           f"order (fitted slope within {ORDER_SLACK} of -p).", measured + ".")

        order_finding("backprop_order", "backprop", "Backprop's (the exact gradient of the discrete solve)")
        order_finding("adjoint_order", "adjoint", "Adjoint's (the discretised continuous adjoint)")
        gaps = {i: v for (i, g), v in orders.items() if g == "adjoint"}
        if gaps:
            holds = all(v["gap_slope"] <= -(v["order"] - ORDER_SLACK) for v in gaps.values())
            report.finding(
                "adjoint_gap_shrinks", holds,
                "Adjoint is not the gradient of the discrete map (Gholami et al. 2019), but both approximate the "
                "ODE's gradient to O(h^p): their gap shrinks at least like h^p.",
                "; ".join(f"{i}: gap {v['gaps'][0]:.2g} at {o.steps[0]} steps -> {v['gaps'][-1]:.2g} at "
                          f"{o.steps[-1]}, slope {v['gap_slope']:.2f} (p = {v['order']})" for i, v in gaps.items())
                + ".")
        for key, grad, tol, who in (("checkpoint_exact", "checkpoint", CHECKPOINT_EXACT, "Checkpoint (recomputes "
                                     "segments)"), ("reversible_exact", "reversible", REVERSIBLE_EXACT,
                                                    "Reversible (reconstructs states by the algebraic inverse)")):
            got = [(i, n, runs[i, g, n][0], runs[i, "backprop", n][0]) for i, g in pairs if g == grad
                   for n in o.steps if (i, "backprop", n) in runs]
            if got:
                worst = max(rel(a, b) for _, _, a, b in got)
                report.finding(key, worst <= tol, f"{who} equals Backprop's gradient to rounding (<= {tol:g}).",
                               f"largest relative difference over {len(got)} solves: {worst:.2g}.")
        flat = {k: v["temp_hi"] / v["temp_lo"] for k, v in orders.items() if k[1] in ("adjoint", "reversible")}
        grows = {k: v["temp_hi"] / v["temp_lo"] for k, v in orders.items() if k[1] == "backprop"}
        if flat and grows:
            ratio = o.steps[-1] / o.steps[0]
            holds = all(r <= 1.05 for r in flat.values()) and all(r >= ratio**0.5 for r in grows.values())
            report.finding(
                "memory", holds,
                f"Adjoint and Reversible store nothing per step (temp bytes flat from {o.steps[0]} to "
                f"{o.steps[-1]} steps, ratio <= 1.05); Backprop stores every step (ratio >= sqrt({ratio:g})).",
                "; ".join(f"{i} + {g}: {r:.2f}x" for (i, g), r in {**grows, **flat}.items()) + ".")

    def _tolerances(self, o, grad_of, rate, g_ref, report, plt):
        pairs, refused = _pairs(o.adaptive, o.adaptive_gradients)
        runs = {(i, g, tol): grad_of(on.integrator(i, rtol=tol, atol=tol), g, 1, rate)
                for i, g in pairs for tol in o.tolerances}
        rows, errs = [], {}
        for i, g in pairs:
            for tol in o.tolerances:
                grads, nfe, temp, drift = runs[i, g, tol]
                bp = runs.get((i, "backprop", tol))
                errs.setdefault((i, g), []).append(rel(grads, g_ref))
                rows.append([i, g, tol, errs[i, g][-1], rel(grads, bp[0]) if bp else None, nfe, temp, drift])
        columns = ["integrator", "gradient", "rtol = atol", "error vs reference", "gap to backprop", "forward NFE",
                   "temp bytes", "warning drift"]
        report.table("tolerances", columns, rows,
                     "Adaptive steps (diffrax PID controller), c = 0")
        temps = {}
        for r in rows:
            temps.setdefault((r[0], r[1]), set()).add(r[6])
        report.note("Adaptive temporary memory over the tolerances: " + ", ".join(
            f"{i} + {g} " + " to ".join(f"{t:,}" for t in sorted({min(t), max(t)})) + " B"
            for (i, g), t in temps.items()) + " (Backprop maps to diffrax's RecursiveCheckpointAdjoint with "
            "max_steps checkpoints, allocated whatever the number of steps taken; Adjoint to BacksolveAdjoint).")
        conv = {k: e[0] / max(e[-1], 1e-300) for k, e in errs.items()}
        report.finding("tolerance_converges", all(r >= 100 for r in conv.values()),
                       f"Tightening the tolerance from {o.tolerances[0]:g} to {o.tolerances[-1]:g} reduces the "
                       "gradient error of both strategies at least 100-fold.",
                       "; ".join(f"{i} + {g}: {r:.3g}x" for (i, g), r in conv.items()) + ".")
        adj = [(i, tol) for i, g in pairs if g == "adjoint" for tol in o.tolerances
               if (i, "backprop", tol) in runs]
        if adj:
            gaps = [(i, tol, rel(runs[i, "adjoint", tol][0], runs[i, "backprop", tol][0]),
                     rel(runs[i, "backprop", tol][0], g_ref)) for i, tol in adj]
            report.finding(
                "adaptive_adjoint_not_discrete", all(gap >= 0.1 * err for _, _, gap, err in gaps),
                "Adaptive Adjoint (diffrax BacksolveAdjoint) is not the gradient of the discrete solve: its gap "
                "to Backprop is of the order of the solver's error (>= 0.1 x Backprop's error), not rounding.",
                "; ".join(f"{i} tol {tol:g}: gap {gap:.2g} vs Backprop error {err:.2g}"
                          for i, tol, gap, err in gaps) + ".")
            ratio = [errs[i, "adjoint"][k] / errs[i, "backprop"][k] for i in {i for i, _ in adj}
                     for k in range(len(o.tolerances))]
            report.note(f"On the smooth field the adaptive Adjoint's error against the continuous gradient is "
                        f"{min(ratio):.2g}x to {max(ratio):.2g}x Backprop's at equal tolerance: not being the "
                        "discrete gradient does not make it less accurate here; the failure needs an unstable "
                        "reconstruction (below).")
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for (i, g), e in errs.items():
            ax.loglog(o.tolerances, e, marker="o", linestyle="--" if g == "adjoint" else "-", label=f"{i} + {g}")
        ax.loglog(o.tolerances, o.tolerances, color="gray", linestyle=":", label="error = tolerance")
        ax.invert_xaxis()
        ax.set(xlabel="rtol = atol", ylabel="|g - g_ref| / |g_ref|", title="adaptive steps: error vs tolerance")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        report.figure("error_vs_tolerance", fig, "Relative gradient error of adaptive Backprop and Adjoint "
                                                 "against the tolerance (c = 0)")

    def _unstable(self, o, grad_of, ref, report, plt):
        pairs, _ = _pairs(o.unstable_integrators, o.unstable_gradients)
        n, rows, series = o.unstable_steps, [], {}
        for c in o.dampings:
            rate = _rate(c, o.width)
            g_ref = ref(rate)
            runs = {(i, g): grad_of(i, g, n, rate) for i, g in pairs}
            back = {i: _backward_drift(grad_of.x0, grad_of.params, rate, i, n) if o.reverse_solve else None
                    for i in {i for i, _ in pairs}}
            for (i, g), (grads, _, _, drift) in runs.items():
                bp = runs.get((i, "backprop"))
                err = rel(grads, g_ref)
                series.setdefault((i, g), []).append(err)
                rows.append([c, c / n, i, g, err, rel(grads, bp[0]) if bp else None, drift,
                             back[i] if g == "adjoint" else None])
                if g == "adjoint":
                    fallback = back[i] if back[i] is not None else math.nan  # below the warning's 1%
                    series.setdefault((i, "drift"), []).append(drift if drift is not None else fallback)
        report.table("contracting", ["c", "h c", "integrator", "gradient", "error vs reference", "gap to backprop",
                                     "warning drift", "reverse-solve drift"], rows,
                     f"Contracting field (damping c on half the coordinates), {n} steps: the reverse-time "
                     "reconstruction expands errors like e^c")
        c = o.dampings[-1]
        last = {(r[2], r[3]): r for r in rows if r[0] == c}
        i = o.unstable_integrators[0]  # the first integrator's rows carry the finding
        if (i, "adjoint") in last and (i, "backprop") in last:
            adj, bp = last[i, "adjoint"], last[i, "backprop"]
            holds = adj[4] >= 0.1 and adj[4] >= 100 * bp[4] and adj[6] is not None and adj[6] > 0.01
            report.finding(
                "unstable_adjoint_fails", holds, f"With strongly contracting dynamics (c = {c:g}) the reverse-"
                "time reconstruction is unstable: Adjoint's gradient is badly wrong (error >= 0.1 and >= 100x "
                "Backprop's) and "
                "odenets' ReconstructionWarning reports the drift (> 1%).",
                f"{i}, {n} steps: Adjoint error {adj[4]:.3g}, Backprop error {bp[4]:.3g}, warning drift "
                f"{adj[6] if adj[6] is None else format(adj[6], '.3g')}"
                + ("" if adj[7] is None else f" (reverse solve: {adj[7]:.3g})") + ".")
        rh = [r for r in rows if r[2] == "reversible_heun" and r[3] == "reversible"]
        if rh:
            report.note("Reversible Heun under contraction: " + "; ".join(
                f"c = {r[0]:g}: error {r[4]:.3g}, gap to its own Backprop {r[5]:.3g}" for r in rh) + ". Its "
                "stability region is a segment of the imaginary axis, so strongly damped modes grow in the "
                "forward solve itself, whatever the gradient; and the algebraic inverse that Reversible runs "
                "backwards is exact only up to rounding, which those modes amplify once the state has grown "
                "(the gap to Backprop rises with c).")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for (i, g), e in series.items():
            ax = axes[1] if g == "drift" else axes[0]
            ax.semilogy(o.dampings, np.maximum(e, 1e-17), marker="o", label=f"{i} + {g}" if g != "drift" else i,
                        linestyle="--" if g == "adjoint" else "-")
        axes[0].set(xlabel="damping c", ylabel="|g - g_ref| / |g_ref|", title=f"gradient error, {n} steps")
        axes[1].axhline(0.01, color="gray", linestyle=":", label="warning threshold 1%")
        axes[1].set(xlabel="damping c", ylabel="|x_rebuilt - x0| / |x0|", title="Adjoint's reconstruction drift")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        report.figure("contracting", fig, "Contracting dynamics: gradient error (left) and the adjoint's backward "
                                          "reconstruction drift (right) against the damping c")
