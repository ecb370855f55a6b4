"""Temporary memory and time per step against depth L for every gradient strategy and the Momentum ResNet.

A per-step MLP ResNet (one field F_k per step, t in [0, 1], h = 1 / L) is differentiated by each
gradient strategy; memory is XLA's temporary bytes of jit(value_and_grad) (parameters, inputs and
gradients are arguments and outputs, not temporaries), so it measures what a strategy stores:

    Backprop     every step's activations               O(L)
    Checkpoint   L / s boundary states + one segment    O(L / s + s) = O(sqrt L) with s = ceil(sqrt L)
    Adjoint      nothing per step (backsolve)           O(1)
    Reversible   nothing per step (algebraic inverse)   O(1)
    Momentum     v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k), x_{k+1} = x_k + v_{k+1}: invertible, so a
                 custom backward pass needs O(1) (Sander et al. 2021); odenets' MomentumBlock
                 backpropagates through its scan, so it stores O(L) here.

The fitted exponent p of memory ~ L^p is compared with 1, 0.5 and 0.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odenets as on
from experiments.studies._xla import compiled, loglog_slope, median_seconds, rel
from odenets import study as studies
from odenets._abstract import final
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.models import family
from odenets.models.stages import MomentumBlock
from odenets.solve import resolve_solver

MOMENTUM = "momentum"
EXPECTED = {"backprop": 1.0, "checkpoint": 0.5, "adjoint": 0.0, "reversible": 0.0, MOMENTUM: 0.0}
SLACK = {1.0: 0.2, 0.5: 0.2, 0.0: 0.1}  # |p - expected| that still agrees


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depths: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    fit_from: int = 256  # fit the exponent over depths >= this (all depths when fewer than two qualify)
    integrator: str = "euler"  # for every strategy that accepts it; the others get the first one they accept
    width: int = 16
    hidden: int = 32
    batch: int = 32
    repeats: int = 5  # timed calls per (method, depth); the median is kept
    momentum: bool = True  # include the Momentum ResNet
    tail_depths: tuple[int, ...] = (1000,)  # Checkpoint where L is not a multiple of its segment s


def _integrator_for(gradient: str, preferred: str) -> str:
    """`preferred` where odenets pairs it with `gradient`, else the first fixed-step integrator it accepts."""
    for name in [preferred, *INTEGRATORS.names()]:
        try:
            resolve_solver(name, gradient, per_step=True)
            return name
        except ValueError:
            continue
    raise ValueError(f"no fixed-step integrator accepts gradient {gradient!r}")


def _model(method: str, o: Options, depth: int) -> nnx.Module:
    """The per-step fields (a stack of `depth` MLPFields) or the Momentum ResNet block, with parameters drawn
    by numpy (kernels N(0, 1/fan_in), biases 0): the structure comes from nnx.eval_shape, so no initializer
    is compiled at each depth."""
    make = lambda r: on.fields.MLPField(o.width, o.hidden, time=False, rngs=r)
    if method == MOMENTUM:
        gamma = family.get(MOMENTUM).gamma
        abstract = nnx.eval_shape(lambda: MomentumBlock(make, steps=depth, gamma=gamma, rngs=nnx.Rngs(0)))
    else:
        abstract = nnx.eval_shape(lambda: on.fields.stack(make, depth, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def draw(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        if len(leaf.shape) == 3:  # (steps, fan_in, fan_out) kernels
            return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(leaf.shape[1]), leaf.dtype)
        return jnp.asarray(np.zeros(leaf.shape, leaf.dtype))

    return nnx.merge(graphdef, jax.tree.map(draw, state))


def _x0(o: Options):
    return jnp.asarray(np.random.default_rng(1).standard_normal((o.batch, o.width)), jnp.float32)


def _builder(method: str, integrator: str | None, model: nnx.Module, depth: int, o: Options):
    """(value_and_grad(params, rest, x0), (params, rest, x0)) for one method on one model."""
    if method == MOMENTUM:
        forward = lambda m, x: m(x)
    else:

        def forward(m, x):
            return on.odeint(on.PerStep(m), x, 0.0, 1.0, depth, integrator=integrator, gradient=method).x

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def value_and_grad(params, rest, x0):
        m = nnx.merge(graphdef, params, rest)
        return nnx.value_and_grad(lambda m_: jnp.mean(forward(m_, x0) ** 2))(m)

    return value_and_grad, (params, rest, _x0(o))


def _momentum_inverse_error(model: nnx.Module, o: Options) -> float:
    """|x0_rebuilt - x0| / |x0| after MomentumBlock.forward then .inverse (float32): invertibility in practice."""
    graphdef, state = nnx.split(model)
    x0 = _x0(o)

    @jax.jit
    def there_and_back(state, x0):
        m = nnx.merge(graphdef, state)
        return m.inverse(*m.forward(x0, jnp.zeros_like(x0)))[0]

    return rel(there_and_back(state, x0), x0)


@final
@studies.study.register("memory_depth")
class MemoryDepth(studies.Study):
    title = "Memory and time per step against depth: backprop, checkpointing, adjoint, reversible, momentum"
    claim = ("Backprop stores every layer, O(L) memory; checkpointing with sqrt(L) segments needs O(sqrt L) "
             "(Griewank & Walther 2008; Chen et al. 2016); the continuous adjoint solves backwards with O(1) "
             "memory (Chen et al. 2018); reversible networks rebuild activations from the output, O(1) "
             "(Gomez et al. 2017, RevNets); Momentum ResNets are invertible and train in O(1) activation memory "
             "(Sander et al. 2021). Each saving is paid for in recomputation.")
    sizes = {"smoke": Options(depths=(16, 64), repeats=1, momentum=False, tail_depths=()), "full": Options()}
    smoke_expect = ("backprop_linear", "checkpoint_sqrt", "adjoint_constant", "reversible_constant")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        o = options
        methods = {g: _integrator_for(g, o.integrator) for g in on.gradient.names()}
        if o.momentum:
            methods[MOMENTUM] = None
        segments = {L: on.Checkpoint().segment_length(L) for L in o.depths}
        report.setup(
            f"A per-step MLP ResNet: L fields F_k(x) = tanh(x W1_k + b1_k) W2_k + b2_k (odenets MLPField, width "
            f"{o.width}, hidden {o.hidden}, no time input), batch {o.batch}, float32, t in [0, 1] with h = 1 / L, "
            f"loss mean(x_L^2). Gradient strategies through odeint with PerStep fields: "
            + ", ".join(f"{g} ({i})" for g, i in methods.items() if i)
            + f" (each with {o.integrator} where odenets pairs them, else the first integrator its check "
            f"accepts)"
            + (f"; Momentum ResNet: odenets' MomentumBlock (family `momentum`, gamma = "
               f"{family.get(MOMENTUM).gamma}) with the same fields" if o.momentum else "")
            + ". Every method evaluates F once per step. "
            f"Depths {', '.join(map(str, o.depths))}; Checkpoint segments s = ceil(sqrt L) = "
            + ", ".join(f"{s}" for s in segments.values())
            + ". Memory: XLA's temporary bytes of the compiled jit(value_and_grad) (memory_analysis, as "
            f"experiments/benchmarks/memory.py); time: median of {o.repeats} calls after a warm-up, per step. "
            f"Exponent p of memory ~ L^p: least squares on log-log over depths >= {o.fit_from} (all depths "
            "when fewer than two qualify).")

        temp, per_step = {m: [] for m in methods}, {m: [] for m in methods}
        momentum_top = None
        for depth in o.depths:
            stack = _model("backprop", o, depth)
            for method, integ in methods.items():
                model = _model(MOMENTUM, o, depth) if method == MOMENTUM else stack
                momentum_top = model if method == MOMENTUM else momentum_top
                fn, args = _builder(method, integ, model, depth, o)
                executable, nbytes = compiled(fn, *args)
                temp[method].append(nbytes)
                per_step[method].append(median_seconds(executable, *args, repeats=o.repeats) / depth)
        fit_depths = [L for L in o.depths if L >= o.fit_from]
        fit_depths = fit_depths if len(fit_depths) >= 2 else list(o.depths)
        idx = [o.depths.index(L) for L in fit_depths]
        slope = {m: loglog_slope(fit_depths, [temp[m][k] for k in idx]) for m in methods}
        slope_all = {m: loglog_slope(o.depths, temp[m]) for m in methods}
        time_slope = {m: loglog_slope(fit_depths, [per_step[m][k] * o.depths[k] for k in idx]) for m in methods}
        deep = len(o.depths) - 1
        report.table(
            "memory", ["method", "integrator", *[f"L = {L}" for L in o.depths], "p (fit)", "p (all depths)",
                       "expected p"],
            [[m, i or "-", *temp[m], slope[m], slope_all[m], EXPECTED[m]] for m, i in methods.items()],
            "Temporary bytes of jit(value_and_grad) against depth L, and the fitted exponent p (memory ~ L^p)")
        report.table(
            "time", ["method", *[f"L = {L} (us/step)" for L in o.depths], "time exponent (fit)",
                     f"time / backprop at L = {o.depths[-1]}"],
            [[m, *[1e6 * t for t in per_step[m]], time_slope[m], per_step[m][deep] / per_step["backprop"][deep]]
             for m in methods],
            "Wall time per step of one value_and_grad call (median), and time ~ L^q over the fitted depths")
        state_bytes = o.batch * o.width * 4
        report.value("state_bytes", state_bytes)
        report.value("backprop_bytes_per_step", float(np.polyfit(o.depths, temp["backprop"], 1)[0]))

        for m, key, name in (("backprop", "backprop_linear", "Backprop"), ("checkpoint", "checkpoint_sqrt",
                             "Checkpoint"), ("adjoint", "adjoint_constant", "Adjoint"),
                             ("reversible", "reversible_constant", "Reversible"),
                             (MOMENTUM, "momentum_constant", "The Momentum ResNet")):
            if m not in methods:
                continue
            exp = EXPECTED[m]
            report.finding(
                key, abs(slope[m] - exp) <= SLACK[exp],
                f"{name}'s temporary memory grows like L^{exp:g} (fitted p within {SLACK[exp]} of {exp:g}).",
                f"p = {slope[m]:.3f} over L = {', '.join(map(str, fit_depths))} (all depths: {slope_all[m]:.3f}); "
                f"{temp[m][0]:,} B at L = {o.depths[0]}, {temp[m][-1]:,} B at L = {o.depths[-1]}.")
        if o.momentum:
            self._momentum(o, momentum_top, temp, report)
        if o.tail_depths:
            self._tail(o, temp, report)
        s, top = segments[o.depths[-1]], o.depths[-1]
        bps = report.results["values"]["backprop_bytes_per_step"]
        report.note(
            f"Checkpoint at L = {top}: s = {s}, so {math.ceil(top / s)} boundary states of {state_bytes:,} B plus "
            f"one segment of {s} steps at Backprop's {bps:,.0f} B/step predict "
            f"{math.ceil(top / s) * state_bytes + s * bps:,.0f} B; measured {temp['checkpoint'][-1]:,} B.")
        ratios = {m: per_step[m][deep] / per_step["backprop"][deep] for m in methods if m != "backprop"}
        report.note("Time per step at L = " + str(o.depths[-1]) + " relative to Backprop: " + ", ".join(
            f"{m} {r:.2f}x" for m, r in ratios.items()) + ". Recomputation (Checkpoint: one extra forward; "
            "Adjoint: a backward solve of the augmented system; Reversible: the inverse and one step again) is "
            "expected to cost more than storing; on this small CPU problem memory traffic can outweigh it. "
            "Wall times on a shared machine are noisy; the memory numbers are exact properties of the compiled "
            "programs.")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for m in methods:
            style = dict(marker="o", label=f"{m} (p = {slope[m]:.2f})")
            axes[0].loglog(o.depths, temp[m], **style)
            axes[1].loglog(o.depths, [1e6 * t for t in per_step[m]], marker="o", label=m)
        L = np.asarray(o.depths, np.float64)
        for p, ls in ((1.0, ":"), (0.5, "-.")):
            axes[0].loglog(L, temp["backprop"][0] * (L / L[0]) ** p, color="gray", linestyle=ls,
                           label=f"~ L^{p:g}")
        axes[0].set(xlabel="depth L (steps)", ylabel="XLA temporary bytes", title="memory of jit(value_and_grad)")
        axes[1].set(xlabel="depth L (steps)", ylabel="microseconds per step", title="time per step (median)")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        report.figure("memory_vs_depth", fig, "Temporary memory (left) and time per step (right) against depth, "
                                              "log-log")

    def _momentum(self, o: Options, model: nnx.Module, temp: dict, report: studies.Report) -> None:
        inverse = _momentum_inverse_error(model, o)
        report.value("momentum_inverse_error", inverse)
        report.note(
            f"The Momentum ResNet is invertible in practice: forward then MomentumBlock.inverse over "
            f"L = {o.depths[-1]} steps rebuilds x0 to {inverse:.2g} relative (float32), so the O(1) backward "
            f"pass of Sander et al. is possible; odenets' MomentumBlock does not implement it (its gradient is "
            f"backprop through the scan), which is why its memory tracks Backprop's "
            f"({temp[MOMENTUM][-1]:,} vs {temp['backprop'][-1]:,} B at L = {o.depths[-1]}).")

    def _tail(self, o: Options, temp: dict, report: studies.Report) -> None:
        """Checkpoint where s does not divide L: the steps split into L // s segments and a shorter tail."""
        rows = []
        for depth in o.tail_depths:
            s = on.Checkpoint().segment_length(depth)
            got, stack = {}, _model("backprop", o, depth)
            for m in ("checkpoint", "backprop"):
                fn, args = _builder(m, _integrator_for(m, o.integrator), stack, depth, o)
                got[m] = compiled(fn, *args)[1]
            cp, bp = got["checkpoint"], got["backprop"]
            rows.append([depth, s, depth % s, cp, bp, cp / bp])
        report.table("checkpoint_tail", ["L", "segment s", "tail L mod s", "checkpoint temp bytes",
                                         "backprop temp bytes", "checkpoint / backprop"], rows,
                     "Checkpoint at depths that its segment length does not divide")
        square = {L: temp["checkpoint"][k] / temp["backprop"][k] for k, L in enumerate(o.depths)}
        worst = max(rows, key=lambda r: r[5])
        near = min(o.depths, key=lambda L: abs(math.log(L / worst[0])))
        report.finding(
            "checkpoint_tail", worst[5] <= 1.5 * square[near],
            "Checkpoint's saving does not depend on whether s = ceil(sqrt L) divides L: its memory relative to "
            "Backprop's at such a depth stays within 1.5x of that at the nearest depth of the sweep.",
            f"L = {worst[0]} (s = {worst[1]}, tail {worst[2]}): {worst[3]:,} B = {worst[5]:.2f} x Backprop's; "
            f"L = {near}: {square[near]:.2f} x Backprop's.")
