"""Temporary memory and time per step against depth L for every gradient strategy and the Momentum ResNet.

A per-step MLP ResNet (one field F_k per step, t in [0, 1], h = 1 / L) is differentiated by each
gradient strategy; memory is XLA's temporary bytes of jit(value_and_grad) (parameters, inputs and
gradients are arguments and outputs, not temporaries), so it measures what a strategy stores:

    Backprop     every step's activations               O(L)
    Checkpoint   L / s boundary states + one segment    O(L / s + s) = O(sqrt L) with s = ceil(sqrt L)
    Adjoint      nothing per step (backsolve)           O(1)
    Reversible   nothing per step (algebraic inverse)   O(1)
    Momentum     v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k), x_{k+1} = x_k + v_{k+1}: invertible, so a
                 custom backward pass needs O(1) (Sander et al. 2021): MomentumBlock with
                 gradient="reversible" rebuilds (x_k, v_k) by the inverse instead of storing them.

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


SHARED = "shared"  # one field for every step (a Neural ODE), for the Checkpoint tail check


def _model(kind: str, o: Options, depth: int) -> nnx.Module:
    """`depth` per-step MLPFields (a stack), the Momentum ResNet block, or one shared MLPField (kind SHARED),
    with parameters drawn by numpy (kernels N(0, 1/fan_in), biases 0): the structure comes from
    nnx.eval_shape, so no initializer is compiled at each depth."""
    make = lambda r: on.fields.MLPField(o.width, o.hidden, time=False, rngs=r)
    if kind == MOMENTUM:
        gamma = family.get(MOMENTUM).gamma
        abstract = nnx.eval_shape(lambda: MomentumBlock(make, steps=depth, gamma=gamma, gradient="reversible",
                                                        rngs=nnx.Rngs(0)))
    elif kind == SHARED:
        abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
    else:
        abstract = nnx.eval_shape(lambda: on.fields.stack(make, depth, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        if "kernel" in jax.tree_util.keystr(path):  # (..., fan_in, fan_out)
            return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(leaf.shape[-2]), leaf.dtype)
        return jnp.asarray(np.zeros(leaf.shape, leaf.dtype))

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _x0(o: Options):
    return jnp.asarray(np.random.default_rng(1).standard_normal((o.batch, o.width)), jnp.float32)


def _builder(method: str, integrator: str | None, model: nnx.Module, depth: int, o: Options, shared=False):
    """(value_and_grad(params, rest, x0), (params, rest, x0)) for one method on one model (a stack, the
    Momentum ResNet block, or a single shared field)."""
    if method == MOMENTUM:
        forward = lambda m, x: m(x)
    else:

        def forward(m, x):
            f = m if shared else on.PerStep(m)
            return on.odeint(f, x, 0.0, 1.0, depth, integrator=integrator, gradient=method).x

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def value_and_grad(params, rest, x0):
        m = nnx.merge(graphdef, params, rest)
        return nnx.value_and_grad(lambda m_: jnp.mean(forward(m_, x0) ** 2))(m)

    return value_and_grad, (params, rest, _x0(o))


def _pack(built):
    """(fn, *args) from _builder's (fn, args)."""
    return (built[0], *built[1])


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
               f"{family.get(MOMENTUM).gamma}, gradient 'reversible': the backward pass by exact inversion) with "
               f"the same fields" if o.momentum else "")
            + ". Every method evaluates F once per step. "
            f"Depths {', '.join(map(str, o.depths))}; Checkpoint segments s = ceil(sqrt L) = "
            + ", ".join(f"{s}" for s in segments.values())
            + ". Memory: XLA's temporary bytes of the compiled jit(value_and_grad) (memory_analysis, as "
            f"experiments/benchmarks/memory.py); time: median of {o.repeats} calls after a warm-up, per step. "
            f"Exponent p of memory ~ L^p: least squares on log-log over depths >= {o.fit_from} (all depths "
            "when fewer than two qualify).")

        temp, per_step = {m: [] for m in methods}, {m: [] for m in methods}
        inverse = {}  # depth -> the Momentum ResNet's forward-then-inverse error
        for depth in o.depths:
            stack = _model("stack", o, depth)
            for method, integ in methods.items():
                model = _model(MOMENTUM, o, depth) if method == MOMENTUM else stack
                if method == MOMENTUM:
                    inverse[depth] = _momentum_inverse_error(model, o)
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
            self._momentum(o, inverse, temp, report)
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

    def _momentum(self, o: Options, inverse: dict, temp: dict, report: studies.Report) -> None:
        """How far MomentumBlock.inverse rebuilds x0: each inverse step divides by gamma, so rounding grows
        like gamma^-L (the reason Sander et al. store the bits their multiplication by gamma loses)."""
        gamma, eps = family.get(MOMENTUM).gamma, float(np.finfo(np.float32).eps)
        rows = [[L, err, eps * gamma ** (-L)] for L, err in inverse.items()]
        report.table("momentum_inverse", ["L", "|x0_rebuilt - x0| / |x0|", "eps32 * gamma^-L"], rows,
                     f"Momentum ResNet (gamma = {gamma}): forward then MomentumBlock.inverse in float32")
        exact = [L for L, err in inverse.items() if err <= 1e-3]
        report.note(
            f"MomentumBlock.inverse rebuilds x0 to {', '.join(f'{e:.2g}' for e in inverse.values())} relative at "
            f"L = {', '.join(map(str, inverse))} (float32): usable (<= 1e-3) up to L = "
            f"{max(exact) if exact else 'none of these'}; beyond, the division by gamma = {gamma} in every "
            f"inverse step amplifies rounding like gamma^-L. An O(1)-memory backward pass (Sander et al. 2021) "
            f"therefore needs a short network, gamma near 1, or the bits that the multiplication by gamma "
            f"discards stored exactly (Maclaurin, Duvenaud & Adams 2015). odenets' MomentumBlock here takes "
            f"gradient='reversible' (the inverse in floating point), so its memory stays flat "
            f"({temp[MOMENTUM][-1]:,} vs Backprop's {temp['backprop'][-1]:,} B at L = {o.depths[-1]}) while its "
            f"gradient is only as good as the inverse above.")

    def _tail(self, o: Options, temp: dict, report: studies.Report) -> None:
        """Checkpoint where s does not divide L: the steps split into L // s segments and a shorter tail;
        per-step parameters (the sweep's) beside one shared field, at the tail depth and the nearest square."""
        rows, integ = [], _integrator_for("checkpoint", o.integrator)
        for depth in o.tail_depths:
            s = on.Checkpoint().segment_length(depth)
            square = s * s if abs(s * s - depth) <= abs((s - 1) ** 2 - depth) else (s - 1) ** 2
            for kind, L in (("per-step", depth), ("per-step", square), (SHARED, depth), (SHARED, square)):
                model = _model(SHARED if kind == SHARED else "stack", o, L)
                got = {m: compiled(*_pack(_builder(m, integ, model, L, o, shared=kind == SHARED)))[1]
                       for m in ("checkpoint", "backprop")}
                s_l = on.Checkpoint().segment_length(L)
                rows.append([kind, L, s_l, L % s_l, got["checkpoint"], got["backprop"],
                             got["checkpoint"] / got["backprop"]])
        report.table("checkpoint_tail", ["parameters", "L", "segment s", "tail L mod s", "checkpoint temp bytes",
                                         "backprop temp bytes", "checkpoint / backprop"], rows,
                     "Checkpoint at depths that its segment length does not divide, beside the nearest square")
        one_field = nnx.state(_model(SHARED, o, 1), nnx.Param)
        per_step = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(one_field))
        per = [r for r in rows if r[3] and r[0] != SHARED]
        shared = {r[1]: r for r in rows if r[0] == SHARED}
        worst = max(per, key=lambda r: r[6])
        near = next(r for r in rows if r[0] != SHARED and not r[3] and r is not worst)
        report.finding(
            "checkpoint_tail", worst[6] <= 1.5 * near[6],
            "Checkpoint's saving does not depend on whether s = ceil(sqrt L) divides L: with per-step parameters "
            "its memory relative to Backprop's stays within 1.5x of that at the nearest square depth.",
            f"L = {worst[1]} (s = {worst[2]}, tail {worst[3]}): {worst[4]:,} B = {worst[6]:.2f} x Backprop's; "
            f"L = {near[1]}: {near[4]:,} B = {near[6]:.2f} x Backprop's.")
        report.note(
            f"Checkpoint with per-step parameters where s does not divide L: {worst[4] - near[4]:,} B more at "
            f"L = {worst[1]} than at L = {near[1]}, about one copy of the per-step parameters or their gradients "
            f"(L x {per_step} floats = {worst[1] * per_step * 4:,} B), which splitting the stacked arrays into "
            f"whole segments and the tail makes. With one shared field the same depths measure "
            + ", ".join(f"{r[4]:,} B at L = {L}" for L, r in shared.items())
            + ": the O(sqrt L) saving holds for the activations, and is lost for per-step parameters at such "
            "depths.")
