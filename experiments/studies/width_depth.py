"""Depth against width at a fixed parameter (and FLOP) budget on MNIST-1D: deep narrow and shallow wide
ResNets, a multi-branch (Inception-like) block, and compound scaling (EfficientNet-like).

In the ODE view x_{k+1} = x_k + F_k(x_k) is Euler with h = 1 on a state of `width` channels: depth is
the resolution of the integration (NFE = depth), width the state's dimension. One stage of conv1d fields
(the `resnet` family, GroupNorm with `groups` groups, no downsampling), trained by `_depthnets.train`:

    part A  fixed budget: the budget net (budget_depth blocks of budget_width channels) fixes the
            parameter count P; every other net (basic fields at each depth of `depths`, and the
            `multibranch` field, parallel 1/3/5-wide kernels, at branch_depth) takes the width (a
            multiple of `groups`) whose parameter count is nearest P
    part B  scaling by 2^phi in FLOPs from a base (base_depth, base_width, 40 samples): depth only
            (d 2^phi), width only (w 2^(phi/2)), resolution only (r 2^phi, the signal resampled by
            `data.length`), and compound (d alpha^phi, w beta^phi, r gamma^phi; Tan & Le's alpha = 1.2,
            beta = 1.1, gamma = 1.15, alpha beta^2 gamma^2 ~ 2)

FLOPs are counted as 2 x the multiply-adds of every kernel (a convolution's at each of the r output
positions, the head's once; norms, activations and additions left out), parameters from the built model
(`nnx.eval_shape`, nothing initialised), NFE from the trained model's own counters (`solver_stats`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets_
from odenets import models, validate
from odenets import study as studies
from odenets._abstract import final

LENGTH = 40  # MNIST-1D's samples per signal
COMPOUND = (1.2, 1.1, 1.15)  # Tan & Le (2019)'s alpha, beta, gamma (depth, width, resolution)
SCALINGS = ("depth", "width", "resolution", "compound")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    groups: int = 1  # GroupNorm groups (widths are multiples of it; 1: steps of one channel, the closest budgets)
    budget_depth: int = 16  # the deep narrow net that fixes the budget
    budget_width: int = 16
    depths: tuple[int, ...] = (1, 2, 4, 8)  # basic-field nets at the budget (the budget net is added)
    branch_depth: int = 4  # the multi-branch net's depth (0: none)
    base_depth: int = 4  # part B's base net
    base_width: int = 16
    phis: tuple[int, ...] = (1, 2)  # part B's scaling exponents (() skips it)
    epochs: int = 12
    scaled_epochs: int = 12  # part B's epochs (0: parameter and FLOP counts only, nothing trained)
    batch_size: int = 128
    lr: float = 1e-2
    n_train: int | None = None  # the first n training signals (None: all 4000)
    evaluate: bool = True  # the test error too (one more compiled program per net)

    def __post_init__(self):
        for key in ("groups", "budget_depth", "budget_width", "base_depth", "base_width", "epochs", "batch_size"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        for key in ("branch_depth", "scaled_epochs"):
            validate.integer(f"study.{key}", getattr(self, key), 0)
        for d in self.depths:
            validate.integer("study.depths", d, 1)
        for phi in self.phis:
            validate.integer("study.phis", phi, 1)
        validate.optional(validate.integer, "study.n_train", self.n_train, self.batch_size)
        validate.number("study.lr", self.lr, low=0.0)
        validate.boolean("study.evaluate", self.evaluate)
        for key in ("budget_width", "base_width"):
            if getattr(self, key) % self.groups:
                raise ValueError(f"study.{key}={getattr(self, key)} must be a multiple of "
                                 f"study.groups={self.groups}")


@final
@dataclasses.dataclass(frozen=True)
class Arch:
    """One net: its depth, width, field type and input resolution."""

    label: str
    depth: int
    width: int
    field: str = "basic"
    length: int = LENGTH

    def overrides(self, groups: int) -> list[str]:
        return nets_.overrides("resnet", self.depth, self.width, "conv1d") + [f"model.groups={groups}",
                                                                              f"model.field={self.field}"]

    def data(self) -> tuple[str, ...]:
        return ("data=mnist1d",) + ((f"data.length={self.length}",) if self.length != LENGTH else ())


@functools.cache
def counts(arch: Arch, groups: int) -> tuple[int, float]:
    """(parameters, FLOPs per signal) of the net, from its shapes alone: FLOPs = 2 x multiply-adds of the
    kernels (convolutions, whose kernels have 3 or more axes, at each of the `length` positions)."""
    abstract = nnx.eval_shape(lambda: models.build("resnet", input_shape=(arch.length, 1), num_classes=10,
                                                   kind="conv1d", width=arch.width, depth=arch.depth,
                                                   groups=groups, field=arch.field))
    params, flops = 0, 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(abstract, nnx.Param)):
        size = int(np.prod(leaf.shape))
        params += size
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if [k for k in keys if isinstance(k, str) and k != "value"][-1] == "kernel":
            flops += 2.0 * size * (arch.length if leaf.ndim >= 3 else 1)
    return params, flops


def at_budget(label: str, depth: int, field: str, budget: int, groups: int) -> Arch:
    """The net of `depth` blocks whose width (a multiple of groups) gives the parameter count nearest `budget`.
    Every parameter count is a quadratic in the width (kernels grow as width^2, biases and norms as width), so
    three counts locate it; the multiples of groups around that width are then counted exactly."""
    ws = [groups * k for k in (3, 6, 9)]  # >= 3 channels: a channel per branch of the multi-branch field
    a, b, c = np.polyfit(ws, [counts(Arch(label, depth, w, field), groups)[0] for w in ws], 2)
    root = max(np.roots([a, b, c - budget]).real)
    near = {max(3 * groups, groups * (int(root // groups) + k)) for k in (-1, 0, 1, 2)}
    return min((Arch(label, depth, w, field) for w in sorted(near)),
               key=lambda arch: abs(counts(arch, groups)[0] - budget))


def scaled(kind: str, phi: int, o: Options) -> Arch:
    """Part B's net `kind` at exponent phi: depth and resolution rounded from their factors; the width, a
    multiple of groups next to its factor's width, is the one whose FLOPs come nearest 2^phi x the base's
    (integer depths and widths cannot hit 2^phi exactly)."""
    d, w, r = o.base_depth, o.base_width, LENGTH
    factors = {"depth": (2.0 ** phi, 1.0, 1.0), "width": (1.0, 2.0 ** (phi / 2), 1.0),
               "resolution": (1.0, 1.0, 2.0 ** phi), "compound": tuple(c ** phi for c in COMPOUND)}[kind]
    depth, length = max(1, round(d * factors[0])), max(2, round(r * factors[2]))
    target = 2.0 ** phi * counts(Arch("base", d, w), o.groups)[1]
    exact = w * factors[1] / o.groups
    widths = sorted({max(o.groups, o.groups * k) for k in (int(np.floor(exact)), int(np.ceil(exact)))})
    archs = [Arch(f"{kind}, phi = {phi}", depth, width, "basic", length) for width in widths]
    return min(archs, key=lambda a: abs(np.log(counts(a, o.groups)[1] / target)))


@final
@studies.study.register("width_depth")
class WidthDepth(studies.Study):
    title = "Depth against width at a fixed parameter and FLOP budget; multi-branch blocks; compound scaling"
    claim = (
        "Zagoruyko & Komodakis (2016, 'Wide residual networks', BMVC, arXiv:1605.07146): at a comparable "
        "parameter count a wide, shallow ResNet (WRN-40-4, 8.9M) matches or beats a thin, very deep one "
        "(ResNet-1001, 10.2M) on CIFAR and trains several times faster. Szegedy et al. (2015, 'Going deeper with "
        "convolutions', CVPR): parallel branches of 1x1, 3x3 and 5x5 kernels (Inception) use a budget better "
        "than one kernel size. Tan & Le (2019, 'EfficientNet', ICML, arXiv:1905.11946): scaling depth, width and "
        "resolution together (d = 1.2^phi, w = 1.1^phi, r = 1.15^phi, FLOPs ~ 2^phi) beats scaling any one of "
        "them at the same FLOPs (ImageNet). In the ODE view depth is the number of Euler steps (NFE) and width "
        "the state's dimension."
    )
    sizes = {
        "smoke": Options(budget_depth=4, budget_width=8, depths=(), branch_depth=1, base_depth=2,
                         base_width=8, phis=(1,), epochs=1, scaled_epochs=0, n_train=256, evaluate=False),
        "full": Options(),
    }
    smoke_expect = ("params_matched", "flops_matched", "nfe_is_depth")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        metric = "test error" if o.evaluate else "training error"
        report.setup(
            "The literature: Zagoruyko & Komodakis (2016) compared ResNets of equal parameter count on "
            "CIFAR-10/100 and found width (more channels, fewer blocks) at least as accurate as depth and much "
            "faster to train; "
            "Szegedy et al. (2015) built Inception modules of parallel 1x1/3x3/5x5 convolutions; Tan & Le (2019) "
            "grew depth, width and input resolution together by a compound coefficient phi and found it better "
            "than "
            "growing one of them at equal FLOPs.")
        budget_arch = Arch(f"deep narrow (d = {o.budget_depth})", o.budget_depth, o.budget_width)
        budget = counts(budget_arch, o.groups)[0]
        archs = [budget_arch] + [at_budget(f"basic, d = {d}", d, "basic", budget, o.groups)
                                 for d in sorted(o.depths) if d != o.budget_depth]
        if o.branch_depth:
            archs.append(at_budget(f"multi-branch, d = {o.branch_depth}", o.branch_depth, "multibranch", budget,
                                   o.groups))
        report.setup(
            f"What we run: MNIST-1D ({o.n_train or 4000} training signals of 40 samples), one stage of conv1d "
            "residual blocks x_{k+1} = x_k + F_k(x_k) (Euler, h = 1; F: conv3-GN-ReLU-conv3-GN, post-activation, "
            f"GroupNorm with {o.groups} groups, no time input), a 3-wide conv stem and a GN-ReLU-pool-linear "
            "head. "
            f"Part A: the budget is the deep narrow net's {budget} parameters ({o.budget_depth} blocks of "
            f"{o.budget_width} channels); every other net takes the width (a multiple of {o.groups}) whose count "
            "is nearest: basic fields at depths "
            + ", ".join(str(a.depth) for a in archs[1:] if a.field == "basic")
            + (f", and the multi-branch field (parallel 1-, 3- and 5-wide kernels to width/3 channels each, "
               "concatenated, GN-ReLU, a 1x1 mix, GN: `odenets.fields.MultiBranchField`) at depth "
               f"{o.branch_depth}"
               if o.branch_depth else "") + ". Part B: from a base of "
            f"{o.base_depth} blocks x {o.base_width} channels x 40 samples, FLOPs grown by 2^phi for phi in "
            f"{list(o.phis)} through depth only, width only, resolution only (the signals resampled by linear "
            "interpolation, `data.length`) and compound scaling (alpha, beta, gamma = 1.2, 1.1, 1.15). "
            f"Training: {o.epochs} epochs (part B: {o.scaled_epochs}), Adam, lr {o.lr}, cosine, clip 1, batch "
            f"{o.batch_size}, odenets' train step. Reported: the {metric}, seconds per epoch after the first "
            "(which compiles), NFE per forward pass from the model's counters.")

        def measure(arch: Arch, epochs: int) -> dict:
            params, flops = counts(arch, o.groups)
            out = {"arch": arch, "params": params, "flops": flops, "error": np.nan, "s_epoch": np.nan,
                   "nfe": np.nan}
            if epochs:
                net = nets_.train(arch.overrides(o.groups), epochs=epochs, batch_size=o.batch_size, lr=o.lr,
                                  seed=report.seed, n_train=o.n_train, evaluate=o.evaluate, data=arch.data())
                later = net.epoch_seconds[1:] or net.epoch_seconds
                out.update(error=net.test_error if o.evaluate else net.train_error,
                           s_epoch=float(np.median(later)), nfe=models.solver_stats(net.model)["nfe"])
            return out

        part_a = [measure(a, o.epochs) for a in archs]
        report.table("budget", ["net", "depth (NFE per forward)", "width", "field", "parameters",
                                "MFLOPs per signal", metric, "s / epoch", "measured NFE"],
                     [[m["arch"].label, m["arch"].depth, m["arch"].width, m["arch"].field, m["params"],
                       m["flops"] / 1e6, m["error"], m["s_epoch"], m["nfe"]] for m in part_a],
                     f"Part A: nets at the budget of {budget} parameters")
        scalings = {}
        if o.phis:
            base = Arch("base", o.base_depth, o.base_width)
            b = measure(base, o.scaled_epochs)
            for kind in SCALINGS:
                scalings[kind] = [b] + [measure(scaled(kind, phi, o), o.scaled_epochs) for phi in o.phis]
            rows = [[kind, phi, m["arch"].depth, m["arch"].width, m["arch"].length, m["params"],
                     m["flops"] / b["flops"], m["error"], m["s_epoch"], m["nfe"]]
                    for kind in SCALINGS for phi, m in zip((0, *o.phis), scalings[kind])]
            report.table("scaling", ["scaling", "phi", "depth", "width", "resolution", "parameters",
                                     "FLOPs / base", metric, "s / epoch", "measured NFE"], rows,
                         "Part B: growing one dimension, or all three (compound), by 2^phi in FLOPs")

        fig, axes = plt.subplots(1, 3 if scalings else 2, figsize=(16 if scalings else 11, 4), squeeze=False)
        for ax, key, ylabel in ((axes[0][0], "error", metric), (axes[0][1], "s_epoch", "seconds per epoch")):
            for m in part_a:
                marker = "s" if m["arch"].field == "multibranch" else "o"
                ax.scatter(m["arch"].depth, m[key], marker=marker, s=40)
                ax.annotate(f"w = {m['arch'].width}" + (", multi-branch" if marker == "s" else ""),
                            (m["arch"].depth, m[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("depth = NFE per forward pass (log2)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"Part A: {budget} parameters each")
        if scalings:
            ax, key = axes[0][2], "error" if o.scaled_epochs else "params"
            for kind in SCALINGS:
                ms = scalings[kind]
                ax.plot([m["flops"] / ms[0]["flops"] for m in ms], [m[key] for m in ms], "o-", label=kind)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("FLOPs / base (log2)")
            ax.set_ylabel(metric if o.scaled_epochs else "parameters (not trained at this size)")
            ax.set_title("Part B: scaling by 2^phi")
            ax.legend(fontsize=8)
        report.figure("width_depth", fig, f"Part A, nets of equal parameters and FLOPs: {metric} and seconds "
                      "per epoch against depth; part B: against FLOPs when scaling depth, width, resolution or "
                      "all three")

        # findings
        p = [m["params"] for m in part_a]
        f = [m["flops"] for m in part_a]
        report.finding("params_matched", max(p) / min(p) - 1 <= 0.05,
                       "every part A net has the budget's parameter count within 5%.",
                       f"{min(p)} to {max(p)} parameters ({max(p) / min(p) - 1:.1%} apart).")
        report.finding("flops_matched", max(f) / min(f) - 1 <= 0.1,
                       "at one resolution and equal parameters the FLOPs are equal too, within 10% (biases, norms "
                       "and the head are parameters whose FLOPs do not grow with the resolution).",
                       f"{min(f) / 1e6:.3f} to {max(f) / 1e6:.3f} MFLOPs per signal "
                       f"({max(f) / min(f) - 1:.1%} apart).")
        trained = [m for m in part_a if not np.isnan(m["nfe"])]
        report.finding("nfe_is_depth", bool(trained) and all(m["nfe"] == m["arch"].depth for m in trained),
                       "Euler with h = 1: a forward pass evaluates each block's field once (NFE = depth).",
                       ", ".join(f"d = {m['arch'].depth}: NFE {m['nfe']}" for m in trained) + ".")
        basic = [m for m in part_a if m["arch"].field == "basic"]
        deep, wide = max(basic, key=lambda m: m["arch"].depth), min(basic, key=lambda m: m["arch"].depth)
        if o.epochs > 1 and len(basic) > 1:
            report.finding("wide_is_faster", wide["s_epoch"] < deep["s_epoch"],
                           "at equal FLOPs the shallow wide net trains faster per epoch than the deep narrow one "
                           "(fewer sequential steps; Zagoruyko & Komodakis).",
                           f"d = {wide['arch'].depth}, w = {wide['arch'].width}: {wide['s_epoch']:.3f} s; d = "
                           f"{deep['arch'].depth}, w = {deep['arch'].width}: {deep['s_epoch']:.3f} s per epoch.")
        if len(basic) > 1:
            report.finding("wide_matches_deep", wide["error"] <= deep["error"] + 0.01,
                           f"the shallow wide net's {metric} is at most 1 point above the deep narrow net's "
                           "(Zagoruyko & Komodakis).",
                           ", ".join(f"d = {m['arch'].depth}, w = {m['arch'].width}: {m['error']:.3f}"
                                     for m in basic) + ".")
        branch = [m for m in part_a if m["arch"].field == "multibranch"]
        same = [m for m in basic if branch and m["arch"].depth == branch[0]["arch"].depth]
        if branch and same:
            report.finding("multibranch_beats_single_kernel", branch[0]["error"] < same[0]["error"],
                           f"at the same depth and budget the multi-branch block's {metric} is below the single "
                           "3-wide kernel's (Szegedy et al.).",
                           f"d = {same[0]['arch'].depth}: multi-branch (w = {branch[0]['arch'].width}) "
                           f"{branch[0]['error']:.3f}, basic (w = {same[0]['arch'].width}) "
                           f"{same[0]['error']:.3f}.")
        if scalings and o.scaled_epochs:
            top = {kind: scalings[kind][-1] for kind in SCALINGS}
            single = min(top[k]["error"] for k in SCALINGS[:3])
            report.finding("compound_beats_single", top["compound"]["error"] < single,
                           f"at the largest phi = {max(o.phis)} compound scaling's {metric} is below every "
                           "single-dimension scaling's (Tan & Le).",
                           ", ".join(f"{k}: {top[k]['error']:.3f} "
                                     f"({top[k]['flops'] / scalings[k][0]['flops']:.2f}x FLOPs)" for k in SCALINGS)
                           + ".")
        if trained:
            ranked = sorted(trained, key=lambda m: m["error"])
            report.note(f"Part A ranked by {metric}: " + ", ".join(
                f"{m['arch'].label} (w = {m['arch'].width}) {m['error']:.3f}" for m in ranked) + ". Seconds per "
                "epoch at equal parameters and FLOPs, by depth: " + ", ".join(
                    f"d = {m['arch'].depth}{' (multi-branch)' if m['arch'].field == 'multibranch' else ''}: "
                    f"{m['s_epoch']:.2f}" for m in sorted(trained, key=lambda m: m["arch"].depth)) + ".")
        if scalings and o.scaled_epochs:
            report.note("Resolution here is MNIST-1D's 40 samples resampled by linear interpolation: it adds "
                        "samples, not information, and a 3-wide kernel then covers a smaller part of the signal "
                        "(the receptive field in signal length shrinks as r grows at fixed depth). EfficientNet "
                        "scaled natural images, where higher resolution shows finer detail.")
        report.note("Parameters and FLOPs: " + "; ".join(f"{m['arch'].label} (w = {m['arch'].width}) "
                                                         f"{m['params']} params, {m['flops'] / 1e6:.3f} MFLOPs"
                                                         for m in part_a)
                    + ". A convolution's FLOPs are its kernel size times the positions it is applied at, so at "
                    "one resolution FLOPs follow parameters; only resolution separates them (part B).")
        if scalings:
            ratios = {k: ", ".join(f"{m['flops'] / scalings[k][0]['flops']:.2f}x" for m in scalings[k][1:])
                      for k in SCALINGS}
            report.note("Rounding: depths, widths (multiples of " f"{o.groups}) and resolutions are integers, so "
                        "the FLOPs of part B's nets are " + "; ".join(f"{k} {v}" for k, v in ratios.items())
                        + f" of the base for phi = {list(o.phis)} (2^phi intended; the width is chosen to come "
                        "nearest).")
