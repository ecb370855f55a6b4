"""The unrolled view of a residual stage: paths, the gradient they carry, and boosting.

n residual blocks x_{l+1} = x_l + F_l(x_l) (Euler, h = 1) unroll into x_n = x_0 + sum_l F_l(x_l), and
their input-output Jacobian prod_l (I + J_l) into 2^n paths, one per subset of blocks; C(n, k) of
them have length k, so path lengths are Binomial(n, 1/2) (`path_length_distribution`). Veit et
al. (2016) sample single paths of each length k and back-propagate through them alone (the branch
at the drawn blocks, the skip elsewhere): the gradient per path shrinks with its length, so
C(n, k) times it, the total gradient of length k, peaks at short paths. We measure that on a
residual MLP classifier trained on MNIST-1D (`odenets.analysis.stage_paths`: exact parts G_k of
dL/dx_0 by length, and sampled single paths), and call the shortest range of lengths that holds 90%
of the sampled total the effective paths.

The boosting view reads x_n = x_0 + sum_l F_l(x_l) as an additive model: block l is a weak learner
that adds F_l to the representation. We apply the trained head to every intermediate state x_l
(the net truncated after l blocks) and record the mean logit margin z_y - max_{j != y} z_j and the
accuracy, l = 0..n: each block's contribution to the margin is the increment from x_l to x_{l+1}.
Then a stagewise-trained net, trained as boosting trains its learners: at stage l only block l (and
the head; the stem only at stage 0) trains while blocks 0..l-1 are frozen (`analysis.frozen`: the
frozen entries' updates are exactly 0) and blocks l+1.. are still the identity (their output layers
zero until their stage), beside the same net trained jointly for as many steps.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import (
    block_mask,
    frozen,
    path_length_distribution,
    stage_paths,
    with_mask,
)
from odenets.analysis._field import as_field
from odenets.analysis.steps import ode_stages
from odenets.perstep import PerStep
from odenets.solve import odeint
from odenets.train import loop

VEIT_BLOCKS = 54  # Veit et al.'s 110-layer CIFAR-10 ResNet: 54 residual blocks of two layers each


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depth: int = 24  # residual blocks (one stage)
    width: int = 64
    stage_epochs: int = 3  # epochs per period (one block's stage); both nets train depth * stage_epochs epochs
    batch_size: int = 128
    lr: float = 3e-3
    probe: int = 512  # training signals on which the path gradients are measured
    samples: int = 64  # single paths sampled per length
    mass: float = 0.9  # the share of the total gradient that the effective paths hold
    n_train: int = 0  # first n training signals (0: all)

    def __post_init__(self):
        for key in ("depth", "width", "stage_epochs", "batch_size", "probe", "samples"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.n_train", self.n_train, 0)
        validate.number("study.lr", self.lr, low=0.0)
        validate.number("study.mass", self.mass, low=0.0, high=1.0)


def effective_range(weights, mass: float) -> tuple[int, int]:
    """The shortest range [a, b] of path lengths whose weights hold at least `mass` of their sum (the
    first such range when several are as short)."""
    w = np.asarray(weights, np.float64)
    total, n = w.sum(), len(w)
    best = (0, n - 1)
    for a in range(n):
        acc = np.cumsum(w[a:])
        hit = np.flatnonzero(acc >= mass * total)
        if hit.size and hit[0] < best[1] - best[0]:
            best = (a, a + int(hit[0]))
    return best


def lens(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(mean logit margin, accuracy) of the trained head applied to every state x_l of the one residual
    stage, l = 0..n (the net truncated after l blocks): margin z_y - max_{j != y} z_j. The states are the
    block's own solve (`odeint`, save="all")."""
    graphdef, state = nnx.split(model)
    margin, accuracy = _lens(graphdef, state, jnp.asarray(x), jnp.asarray(y))
    return np.asarray(margin), np.asarray(accuracy)


@functools.partial(jax.jit, static_argnums=0)
def _lens(graphdef, state, x, y):
    model = nnx.merge(graphdef, state, copy=True)
    ((_, block, x_in),) = list(ode_stages(model, x))
    field, args = as_field(PerStep(block.field))
    states = odeint(field, x_in, block.t0, block.t1, block.steps, integrator=block.integrator, args=args,
                    save="all").xs  # (n + 1, B, C)
    logits = jax.vmap(model.head)(states)
    true = jnp.take_along_axis(logits, y[None, :, None], -1)[..., 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool)[None], -jnp.inf, logits), -1)
    return jnp.mean(true - other, 1), jnp.mean(jnp.argmax(logits, -1) == y[None], 1)


def _zero_outputs(params, blocks: range):
    """The parameters with the output layer (`out` kernel and bias) of the listed blocks of the per-step MLP
    field set to 0: those blocks are the identity, x + 0 (and train from there once opened)."""
    def zero(path, v):
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if "stages" in keys and "out" in keys and len(blocks):
            w = np.array(v)
            w[np.asarray(list(blocks), int)] = 0.0
            return jnp.asarray(w, v.dtype)
        return v

    return jax.tree_util.tree_map_with_path(zero, params)


@final
@studies.study.register("ensemble_paths")
class EnsemblePaths(studies.Study):
    title = "Residual nets as ensembles of paths: path lengths, the gradient per length, and boosting"
    claim = (
        "Veit, Wilber & Belongie (2016, 'Residual networks behave like ensembles of relatively shallow networks', "
        "NeurIPS, arXiv:1605.06431): a residual net of n blocks unrolls into 2^n paths whose lengths are "
        "Binomial(n, 1/2); sampling single paths of a trained 110-layer ResNet on CIFAR-10 (54 blocks), the "
        "gradient per path falls with its length, and almost all of the gradient comes from paths 5 to 17 blocks "
        "(10 to 34 layers) deep, far shorter than the typical path (27 blocks). Huang, Ash, Langford & Schapire "
        "(2018, 'Learning deep ResNet blocks sequentially using boosting theory', ICML) read the sum x_0 + sum_l "
        "F_l(x_l) as boosting and train the blocks one at a time."
    )
    sizes = {
        "smoke": Options(depth=4, width=16, stage_epochs=1, batch_size=128, lr=1e-2, probe=64, samples=8,
                         n_train=1000),
        "full": Options(),
    }
    smoke_expect = ("frozen_blocks_fixed", "per_path_decays")

    def run(self, options: Options, report: studies.Report) -> None:
        o = options
        n = o.depth
        over = nets.overrides("resnet", n, o.width, "mlp")
        trained = self._train(over, o, report.seed)
        joint, stagewise, data = trained["joint"], trained["stagewise"], trained["data"]
        joint_acc = float(joint["accuracy"][-1])
        x, y = data.x_train[:o.probe], data.y_train[:o.probe]
        xt, yt = np.asarray(data.x_test), np.asarray(data.y_test)
        report.setup(
            "The literature: Veit et al. (2016) count the 2^n paths of a residual net by length (Binomial(n, "
            "1/2)), sample single paths of each length in a trained 54-block ResNet on CIFAR-10 and find the "
            "gradient of the trained net carried by paths of 5 to 17 blocks (10 to 34 layers); Huang et al. "
            "(2018) train a ResNet's blocks one at a time, as boosting trains weak learners (BoostResNet).")
        report.setup(
            f"What we run: a residual MLP classifier (family resnet, one stage of n = {n} blocks, width "
            f"{o.width}, tanh MLP fields, Euler with h = 1) on MNIST-1D ({len(data.x_train)} training signals), "
            f"trained jointly by odenets' train step for {n * o.stage_epochs} epochs in {n} periods of "
            f"{o.stage_epochs} (Adam, lr {o.lr}, a cosine schedule restarted with Adam's state at each period, "
            f"batch {o.batch_size}). On {o.probe} training signals: the exact parts G_k of dL/dx_0 "
            f"carried by the paths of each length k, and {o.samples} single paths sampled per length "
            f"(`stage_paths`); the effective paths: the shortest range of lengths holding {o.mass:.0%} of the "
            f"sampled total gradient C(n, k) E|g_path|. The head applied to every state x_l (logit margin and "
            f"accuracy after l blocks, on the {len(xt)} test signals). A stagewise net of the same shape: {n} "
            f"stages of {o.stage_epochs} epoch(s), at stage l only block l and the head train (the stem at stage "
            "0 too), blocks 0..l-1 frozen by a mask in the optimiser state (`analysis.frozen`, `block_mask`), "
            "blocks l+1.. the identity until their stage (output layer zero). Both nets are trained by the same "
            "compiled train step, schedule and restarts: they differ in the mask alone.")

        # ---- paths
        paths = stage_paths(joint["model"], x, y, samples=o.samples, seed=report.seed)[0]
        dist = path_length_distribution(n)
        total = paths.sampled_total
        share = total / total.sum()
        lo, hi = effective_range(total, o.mass)
        blo, bhi = effective_range(dist, o.mass)
        mean_len = float(np.sum(np.arange(n + 1) * share))
        report.table("paths", ["length k", "paths C(n,k)", "fraction of paths", "|G_k| exact",
                               "E|g_path| sampled", "C(n,k) E|g_path|", "share of the sampled total"],
                     [[k, float(paths.counts[k]), dist[k], paths.exact_norm[k], paths.sampled_norm[k], total[k],
                       share[k]] for k in range(n + 1)],
                     f"The {2**n} paths of the trained net by length, and the gradient of dL/dx_0 they carry "
                     f"(|dL/dx_0| = {paths.gradient_norm:.4g})")
        vdist = path_length_distribution(VEIT_BLOCKS)
        vlo, vhi = effective_range(vdist, o.mass)
        report.value("effective_range", [lo, hi])
        report.value("binomial_range", [blo, bhi])
        report.value("gradient_weighted_mean_length", mean_len)

        # ---- boosting view
        margin_j, acc_j = lens(joint["model"], xt, yt)
        margin_s, acc_s = lens(stagewise["model"], xt, yt)
        stage_acc = stagewise["accuracy"]
        step = lambda m, b: None if b == 0 else m[b] - m[b - 1]
        rows = [[b, acc_j[b], margin_j[b], step(margin_j, b), acc_s[b], margin_s[b], step(margin_s, b),
                 None if b == 0 else joint["accuracy"][b - 1], None if b == 0 else stage_acc[b - 1]]
                for b in range(n + 1)]
        report.table("boosting", ["blocks l", "joint: accuracy", "joint: margin", "joint: block l's increment",
                                  "stagewise: accuracy", "stagewise: margin", "stagewise: block l's increment",
                                  "joint: accuracy after period l", "stagewise: accuracy after stage l"], rows,
                     "The trained head applied to x_l (the net after l blocks), test set: accuracy and mean logit "
                     "margin z_y - max_{j != y} z_j; the stagewise net also as it was after its stage l")
        report.table("nets", ["net", "test accuracy", "epochs", "optimiser steps", "seconds"],
                     [["joint", joint_acc, n * o.stage_epochs, joint["steps"], joint["seconds"]],
                      ["stagewise", stage_acc[-1], n * o.stage_epochs, stagewise["steps"], stagewise["seconds"]]],
                     "Jointly and stagewise trained nets of the same shape")
        self._figures(report, o, paths, dist, vdist, (lo, hi), (blo, bhi), margin_j, margin_s, acc_j, acc_s,
                      stage_acc, joint["accuracy"])

        # ---- findings
        k = np.arange(n + 1)
        finite = np.isfinite(paths.sampled_norm) & (paths.sampled_norm > 0)
        slope = float(np.polyfit(k[finite], np.log10(paths.sampled_norm[finite]), 1)[0])
        report.finding(
            "per_path_decays", bool(slope < 0),
            "the gradient carried by a single path falls with its length (Veit et al.: exponentially).",
            f"E|g_path| from {paths.sampled_norm[0]:.3g} (k = 0, the identity path) to "
            f"{paths.sampled_norm[-1]:.3g} (k = {n}); a log-linear fit gives a factor {10 ** slope:.3g} per "
            "block.")
        report.finding(
            "short_paths_carry", bool(mean_len < n / 2 and hi < n / 2),
            "most of the gradient comes from paths shorter than the typical path: the effective range "
            f"({o.mass:.0%} of the sampled total) ends below n / 2, the binomial mean, and so does the "
            "gradient-weighted mean length.",
            f"effective paths {lo}..{hi} blocks of n = {n} ({lo / n:.2f}n..{hi / n:.2f}n; Veit et al.: 5..17 of "
            f"54 = 0.09n..0.31n), gradient-weighted mean length {mean_len:.2f} (n / 2 = {n / 2:g}); the "
            f"{o.mass:.0%} range of the path counts is {blo}..{bhi} (for n = 54: {vlo}..{vhi}).")
        report.finding(
            "stagewise_boosts", bool(np.all(np.diff(stage_acc) > -0.02) and stage_acc[-1] > stage_acc[0]),
            "stagewise training improves as blocks are added, as boosting does: the test accuracy after each "
            "stage never falls by more than 0.02 and the last stage beats the first.",
            f"accuracy after stages 1..{n}: {', '.join(f'{a:.3f}' for a in stage_acc)}.")
        report.finding(
            "stagewise_close_to_joint", bool(stage_acc[-1] >= joint_acc - 0.05),
            "the stagewise net comes within 0.05 of the jointly trained net's test accuracy (BoostResNet's "
            "claim of comparable accuracy).",
            f"stagewise {stage_acc[-1]:.3f}, joint {joint_acc:.3f}.")
        inc = np.diff(margin_j)
        report.finding(
            "blocks_raise_margin", bool(margin_j[-1] > margin_j[0] and np.mean(inc > 0) >= 0.5),
            "in the jointly trained net read as an additive model, the blocks raise the logit margin: it ends "
            "higher than at x_0 and at least half the blocks add to it.",
            f"margin at x_0 {margin_j[0]:.3f}, at x_n {margin_j[-1]:.3f}; {int(np.sum(inc > 0))} of {n} blocks "
            f"raise it (increments {inc.min():.3f}..{inc.max():.3f}); stagewise: {margin_s[0]:.3f} -> "
            f"{margin_s[-1]:.3f}, {int(np.sum(np.diff(margin_s) > 0))} of {n} blocks.")
        report.finding(
            "frozen_blocks_fixed", bool(stagewise["moved"] == 0.0),
            "the frozen blocks do not move while later blocks train (the mask holds them exactly).",
            f"largest change of a frozen block's parameters over all stages: {stagewise['moved']:.3g}.")
        report.note(
            f"The norm of the exact length-k part |G_k| and the sampled total C(n, k) E|g_path| differ because "
            f"paths of one length partly cancel: sum_k |G_k| = {paths.exact_norm.sum():.4g}, sum_k C(n, k) "
            f"E|g_path| = {total.sum():.4g}, |dL/dx_0| = {paths.gradient_norm:.4g}. The exact parts peak at k = "
            f"{int(np.argmax(paths.exact_norm))}, the sampled total at k = {int(np.argmax(total))}; the binomial "
            f"count peaks at k = {n // 2}.")

    @staticmethod
    def _train(over, o: Options, seed: int) -> dict[str, dict]:
        """The joint and the stagewise net, trained by one compiled train step (odenets' own, with the
        optimiser `frozen(tx, mask)`) in n periods of stage_epochs epochs, Adam restarted at each period:
        the joint net with every entry open, the stagewise net with block l (and the head; the stem in
        period 0) open in period l and blocks l+1.. the identity until then. The nets differ in the mask
        alone."""
        n = o.depth
        s = nets.setup(over, epochs=o.stage_epochs, batch_size=o.batch_size, lr=o.lr, seed=seed,
                       n_train=o.n_train or None)
        init, rest, _ = s.state
        model = nets.model_of(s, (init, rest, None))
        everything = block_mask(model, [(0, b) for b in range(n)], also=("stem", "stages", "transitions", "head"))
        tx = frozen(s.tx, everything)
        s = dataclasses.replace(s, tx=tx)
        # Adam's state starts as zeros (step count, moments): drawn from its shapes, no compiled init
        fresh = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(tx.init, init))
        train_step, eval_step = loop.make_steps(s)
        plans = {"joint": (init, [everything] * n),
                 "stagewise": (_zero_outputs(init, range(1, n)),
                               [block_mask(model, [(0, b)], also=("head", "stem") if b == 0 else ("head",))
                                for b in range(n)])}
        out = {}
        for name, (params, masks) in plans.items():
            start, accuracy, moved = time.perf_counter(), [], 0.0
            state = (params, rest, fresh)
            for b in range(n):
                before = state[0]
                opened = (state[0], state[1], with_mask(fresh, masks[b]))
                period = range(b * o.stage_epochs, (b + 1) * o.stage_epochs)
                for _, state, _, _ in nets.run_epochs(s, opened, train_step, period, seed=seed):  # noqa: B007
                    pass
                if name == "stagewise" and b:
                    old = block_mask(model, [(0, j) for j in range(b)])
                    diff = jax.tree.map(lambda a, c, m: float(np.max(np.abs(np.asarray(a) - np.asarray(c))
                                                                     * np.asarray(m))), state[0], before, old)
                    moved = max(moved, *jax.tree.leaves(diff))
                accuracy.append(1.0 - nets.error(eval_step, state, s.data.x_test, s.data.y_test))
            out[name] = {"model": nets.model_of(s, state), "accuracy": np.asarray(accuracy), "moved": moved,
                         "steps": s.steps_per_epoch * o.stage_epochs * n, "seconds": time.perf_counter() - start}
        out["data"] = s.data
        return out

    @staticmethod
    def _figures(report, o, paths, dist, vdist, effective, binomial, margin_j, margin_s, acc_j, acc_s, stage_acc,
                 joint_acc) -> None:
        import matplotlib.pyplot as plt

        n = o.depth
        k = np.arange(n + 1)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        ax = axes[0]
        ax.plot(k, dist, "o-", label=f"n = {n} (this net)")
        ax.plot(np.arange(VEIT_BLOCKS + 1), vdist, "-", label=f"n = {VEIT_BLOCKS} (Veit et al.'s 110-layer net)")
        ax.set_xlabel("path length k (blocks)")
        ax.set_ylabel("fraction of the 2^n paths")
        ax.set_title("path lengths: Binomial(n, 1/2)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax = axes[1]
        ax.semilogy(k, paths.sampled_norm, "o-", label="one sampled path: E|g_path|")
        ax.semilogy(k, np.maximum(paths.exact_norm, 1e-30), "s--", label="all paths of length k: |G_k| (exact)")
        ax.set_xlabel("path length k (blocks)")
        ax.set_ylabel("gradient norm at x_0")
        ax.set_title("gradient per path length (trained net)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax = axes[2]
        total = paths.sampled_total / paths.sampled_total.sum()
        ax.bar(k, total, color="C0", alpha=0.7, label="share of C(n, k) E|g_path| (sampled)")
        ax.plot(k, dist, "k.-", label="share of the paths (binomial)")
        lo, hi = effective
        ax.axvspan(lo - 0.5, hi + 0.5, color="C1", alpha=0.15, label=f"effective paths {lo}..{hi} ({o.mass:.0%})")
        ax.set_xlabel("path length k (blocks)")
        ax.set_ylabel("share")
        ax.set_title("total gradient per length vs number of paths")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        report.figure("paths", fig, "Path lengths (left), gradient per path and per length (middle, log scale) "
                      "and the share of the total gradient per length against the binomial (right) (Veit et al. "
                      "2016, Fig. 6)")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ls = np.arange(n + 1)
        axes[0].plot(ls, margin_j, "o-", label="joint")
        axes[0].plot(ls, margin_s, "s-", label="stagewise")
        axes[0].axhline(0, color="gray", lw=0.8)
        axes[0].set_xlabel("blocks l (the trained head applied to x_l)")
        axes[0].set_ylabel("mean logit margin z_y - max_{j != y} z_j (test)")
        axes[0].set_title("each block's contribution to the margin")
        axes[0].legend(fontsize="small")
        axes[0].grid(alpha=0.3)
        axes[1].plot(ls, acc_j, "o-", label="joint: head applied to x_l")
        axes[1].plot(ls, acc_s, "s-", label="stagewise: final head applied to x_l")
        axes[1].plot(ls[1:], stage_acc, "^-", label="stagewise: after stage l (its head then)")
        axes[1].plot(ls[1:], joint_acc, "v--", color="C0", lw=1, label="joint: full net after period l")
        axes[1].set_xlabel("blocks l")
        axes[1].set_ylabel("test accuracy")
        axes[1].set_title("boosting: accuracy as blocks are added")
        axes[1].legend(fontsize="small")
        axes[1].grid(alpha=0.3)
        fig.tight_layout()
        report.figure("boosting", fig, "The boosting view: logit margin (left) and accuracy (right) after l "
                      "blocks, jointly vs stagewise trained")
