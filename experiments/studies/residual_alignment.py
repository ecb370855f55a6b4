"""Residual alignment: does each block's residual point down the loss gradient?

A residual stage x_{k+1} = x_k + h F_k(x_k) (Euler; h = 1 is the discrete ResNet) changes the loss,
to first order in h F_k, by

    L(x_k + h F_k(x_k)) - L(x_k) ~ h <dL/dx_k, F_k(x_k)> = -h |F_k| |dL/dx_k| cos_k,
    cos_k = <F_k(x_k), -dL/dx_k> / (|F_k(x_k)| |dL/dx_k|),

so a block whose residual has cos_k > 0 moves the representation downhill, one step of a
gradient-descent-like iterative refinement (Jastrzebski et al. 2018; Greff et al. 2017). We train
residual MLP classifiers on MNIST-1D (one per step size h) with odenets' own train step
(`_depthnets.run_epochs`, epoch by epoch) and, at initialisation and after every epoch, observe every
block on a fixed probe batch of training signals (`odenets.analysis.observe_model`: the states x_k,
residuals F_k(x_k) and gradients dL/dx_k of the mean cross-entropy through the rest of the net).
cos_k is taken per signal (each signal's gradient is its own loss's up to the batch mean's 1/B) and
averaged over the probe batch; findings compare means with their standard errors over the signals.
Random directions in C dimensions have |cos| of order sqrt(2 / (pi C)): the printed reference.

The one thing a reader may get wrong: at a stationary point of training the first-order term
summed over the training set through a block's output, sum_i <dL/dx_{k+1,i}, F_k(x_{k,i})>, is 0
(scaling the block's linear output layer by 1 + e must not change the loss to first order), so
training does not by itself push it negative; the report measures it ('aggregate')."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from experiments.studies import _depthnets as nets
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import observe_model
from odenets.train import loop


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depth: int = 8  # blocks per stage
    stages: int = 2  # stages (width doubles at each transition)
    width: int = 32
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    probe: int = 512  # training signals on which cos_k is measured (the same at every epoch)
    n_train: int = 0  # first n training signals (0: all)
    step_sizes: tuple[float, ...] = (1.0, 0.1)  # h of each trained net (the first: the findings' net)

    def __post_init__(self):
        for key in ("depth", "stages", "width", "epochs", "batch_size", "probe"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.n_train", self.n_train, 0)
        validate.number("study.lr", self.lr, low=0.0)
        if not self.step_sizes:
            raise ValueError("study.step_sizes must name at least one step size h")
        for h in self.step_sizes:
            validate.number("study.step_sizes", h, low=0.0)


def cosines(model, x, y, h: float = 1.0) -> dict[str, np.ndarray]:
    """Per block k (flat over stages, forward order), means over the signals of x:
    cos_k = cos(F_k(x_k), -dL/dx_k), cos_next_k = cos(F_k(x_k), -dL/dx_{k+1}) (the gradient where the
    update lands), |h F_k(x_k)| / |x_k| (h the step size), |dL/dx_k|, and
    aggregate_k = sum_i <F_k, -dL/dx_{k+1}> / sum_i |F_k| |dL/dx_{k+1}| over the signals i (the batch's
    first-order loss change through block k, normalised); `signal`: (blocks, signals) the cosines
    cos(F_k(x_k), -dL/dx_k) of every signal (for standard errors)."""
    out = {"cos": [], "cos_next": [], "relative": [], "grad": [], "aggregate": [], "signal": []}
    for obs in observe_model(model, x, y):
        r = np.asarray(obs.residuals, np.float64).reshape(obs.residuals.shape[0], len(x), -1)
        g = np.asarray(obs.grads, np.float64).reshape(obs.grads.shape[0], len(x), -1)
        xs = np.asarray(obs.states, np.float64).reshape(obs.states.shape[0], len(x), -1)
        nr, ng = np.linalg.norm(r, axis=-1), np.linalg.norm(g, axis=-1)
        tiny = 1e-30
        out["signal"].append(np.sum(r * -g[:-1], -1) / np.maximum(nr * ng[:-1], tiny))
        out["cos"].append(np.mean(out["signal"][-1], axis=1))
        out["cos_next"].append(np.mean(np.sum(r * -g[1:], -1) / np.maximum(nr * ng[1:], tiny), axis=1))
        out["relative"].append(np.mean(h * nr / np.maximum(np.linalg.norm(xs[:-1], axis=-1), tiny), axis=1))
        out["grad"].append(np.mean(ng[:-1], axis=1))
        out["aggregate"].append(np.sum(r * -g[1:], (1, 2)) / np.maximum(np.sum(nr * ng[1:], 1), tiny))
    return {k: np.concatenate(v) for k, v in out.items()}


@final
@studies.study.register("residual_alignment")
class ResidualAlignment(studies.Study):
    title = "Residual alignment: each block's residual F(x_k) against the negative loss gradient -dL/dx_k"
    claim = (
        "Jastrzebski, Arpit, Ballas, Verma, Che & Bengio (2018, 'Residual connections encourage iterative "
        "inference', ICLR, arXiv:1710.04773): in trained ResNets on CIFAR-10 the residual F_k(x_k) of a block "
        "is aligned with the negative gradient of the loss at its input, cos(F_k(x_k), -dL/dx_k) > 0, so each "
        "block moves the representation downhill (to first order L(x_k + F_k) - L(x_k) = <dL/dx_k, F_k> < 0): "
        "a residual stage performs iterative refinement, a reading also argued by Greff, Srivastava & "
        "Schmidhuber (2017, 'Highway and residual networks learn unrolled iterative estimation', ICLR)."
    )
    sizes = {
        "smoke": Options(depth=4, stages=1, width=16, epochs=2, batch_size=128, lr=1e-2, probe=256, n_train=1000,
                         step_sizes=(1.0,)),
        "full": Options(),
    }
    smoke_expect = ("below_random",)

    def run(self, options: Options, report: studies.Report) -> None:
        o = options
        runs = {h: self._train(o, h, report.seed) for h in o.step_sizes}
        first = runs[o.step_sizes[0]]
        n_blocks = first["cos"].shape[1]
        widths = [o.width * 2 ** i for i in range(o.stages)]
        chance = [math.sqrt(2 / (math.pi * w)) for w in widths]
        report.setup(
            "The literature: Jastrzebski et al. (2018) measure cos(F_k(h_k), dL/dh_k) in ResNets trained on "
            "CIFAR-10 and find it negative (the residual along the negative gradient) for the blocks of every "
            "stage; their argument is first order in F_k (a residual small against the state), and they read the "
            "first blocks as representation learning and the later ones as iterative refinement.")
        report.setup(
            f"What we run: residual MLP classifiers (family resnet, {o.stages} stage(s) x {o.depth} blocks = "
            f"{n_blocks} blocks, width {', '.join(map(str, widths))}, tanh MLP fields, Euler) with step sizes h = "
            f"{', '.join(map(str, o.step_sizes))} (x_{{k+1}} = x_k + h F_k(x_k); h = 1 is the discrete ResNet, a "
            f"small h keeps every update small, the regime of the first-order argument), on MNIST-1D "
            f"({first['n_train']} training signals), each trained by odenets' train step for {o.epochs} epochs "
            f"(Adam, lr {o.lr}, cosine schedule, batch {o.batch_size}). At initialisation and after every epoch: "
            f"cos_k = cos(h F_k(x_k), -dL/dx_k) per signal, averaged over {o.probe} fixed training signals "
            "(`odenets.analysis.observe_model`; L the mean cross-entropy through the rest of the net). Random "
            f"directions would give |cos| of order sqrt(2 / (pi C)) = {', '.join(f'{c:.3f}' for c in chance)}.")
        for h, r in runs.items():
            report.table(f"epochs_h{h:g}", ["epoch", "train loss", "train error", "mean cos_k", "min cos_k",
                                            "max cos_k", "mean cos(F_k, -dL/dx_{k+1})",
                                            "max_k |aggregate_k|", "mean |h F_k| / |x_k|"],
                         r["rows"], f"h = {h:g}: cos(F_k(x_k), -dL/dx_k) over the blocks k, per epoch (epoch 0: "
                         f"initialisation); test error after training {r['test_error']:.3f}")
        report.table("blocks", ["h", "block k", "stage", "cos at init", "cos trained",
                                "cos(F_k, -dL/dx_{k+1}) trained", "|h F_k| / |x_k| trained", "|dL/dx_k| trained"],
                     [[h, k, k // o.depth, r["per_epoch"][0]["cos"][k], r["per_epoch"][-1]["cos"][k],
                       r["per_epoch"][-1]["cos_next"][k], r["per_epoch"][-1]["relative"][k],
                       r["per_epoch"][-1]["grad"][k]] for h, r in runs.items() for k in range(n_blocks)],
                     "Per block, at initialisation and after training (probe batch means)")
        for h, r in runs.items():
            report.value(f"cos_h{h:g}", r["cos"])
            report.value(f"test_error_h{h:g}", r["test_error"])
        self._figure(report, runs, o)
        self._findings(report, runs, o, chance)

    @staticmethod
    def _train(o: Options, h: float, seed: int) -> dict:
        """Train the net of step size h epoch by epoch, measuring `cosines` at initialisation and after each."""
        over = [*nets.overrides("resnet", o.depth, o.width, "mlp"), f"model.stages={o.stages}"]
        if h != 1.0:
            over += ["model.step_size=t_over_n", f"model.t1={h * o.depth}"]
        s = nets.setup(over, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=seed,
                       n_train=o.n_train or None)
        x, y = nets.probe_batch(s, o.probe)
        train_step, eval_step = loop.make_steps(s)
        state = s.state
        per_epoch = [cosines(nets.model_of(s, state), x, y, h)]
        rows = [[0, None, None, *ResidualAlignment._summary(per_epoch[-1])]]
        for epoch, state, loss, train_error in nets.run_epochs(s, s.state, train_step, range(o.epochs),
                                                               seed=seed):
            per_epoch.append(cosines(nets.model_of(s, state), x, y, h))
            rows.append([epoch + 1, loss, train_error, *ResidualAlignment._summary(per_epoch[-1])])
        return {"per_epoch": per_epoch, "rows": rows, "cos": np.stack([c["cos"] for c in per_epoch]),
                "test_error": nets.error(eval_step, state, s.data.x_test, s.data.y_test),
                "train_error": rows[-1][2], "n_train": len(s.data.x_train)}

    @staticmethod
    def _summary(c) -> list[float]:
        return [float(c["cos"].mean()), float(c["cos"].min()), float(c["cos"].max()), float(c["cos_next"].mean()),
                float(np.abs(c["aggregate"]).max()), float(c["relative"].mean())]

    @staticmethod
    def _figure(report, runs, o) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5.2 * (len(runs) + 1), 4.2), squeeze=False)
        axes = axes[0]
        bound = max(max(float(np.abs(r["cos"]).max()) for r in runs.values()), 1e-3)
        for ax, (h, r) in zip(axes, runs.items()):
            epochs, n_blocks = r["cos"].shape
            im = ax.imshow(r["cos"].T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-bound, vmax=bound,
                           extent=(-0.5, epochs - 0.5, -0.5, n_blocks - 0.5))
            for s in range(1, o.stages):
                ax.axhline(s * o.depth - 0.5, color="k", lw=1)
            ax.set_xlabel("epoch (0: initialisation)")
            ax.set_ylabel("block k (lines: stage transitions)")
            ax.set_title(f"h = {h:g}: cos(h F_k(x_k), -dL/dx_k)")
        fig.colorbar(im, ax=axes[:-1].tolist(), label="mean cos over the probe signals")
        ax = axes[-1]
        for (h, r), color in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            epochs = np.arange(r["cos"].shape[0])
            ax.plot(epochs, r["cos"].mean(1), "-", color=color, lw=2, label=f"h = {h:g}: mean over blocks")
            ax.fill_between(epochs, r["cos"].min(1), r["cos"].max(1), color=color, alpha=0.15,
                            label=f"h = {h:g}: min..max over blocks")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("epoch (0: initialisation)")
        ax.set_ylabel("cos(h F_k(x_k), -dL/dx_k)")
        ax.set_title("over training")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        report.figure("alignment", fig, "cos(F_k(x_k), -dL/dx_k) per block and epoch for each step size h "
                      "(heatmaps), and its mean and range over the blocks (right)")

    @staticmethod
    def _findings(report, runs, o, chance) -> None:
        h0 = o.step_sizes[0]
        cos = runs[h0]["cos"]
        init, final_ = cos[0], cos[-1]
        tag = f"h = {h0:g}: "
        # per-signal means over the blocks: a mean over the probe signals and its standard error
        signal = lambda r, e, blocks=slice(None): r["per_epoch"][e]["signal"][blocks].mean(0)
        se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v)))
        last = signal(runs[h0], -1)
        report.finding(
            "aligned_after_training", bool(last.mean() > 2 * se(last)),
            "after training the mean cos(F_k(x_k), -dL/dx_k) over the blocks is positive (each block moves the "
            "representation downhill), by more than two standard errors over the probe signals.",
            f"{tag}mean {final_.mean():.3f} +- {se(last):.3f} (standard error; blocks {final_.min():.3f}.."
            f"{final_.max():.3f}); test error {runs[h0]['test_error']:.3f}.")
        grow = last - signal(runs[h0], 0)
        report.finding(
            "alignment_grows", bool(grow.mean() > 2 * se(grow)),
            "training raises the alignment: the mean cosine after training exceeds the one at initialisation by "
            "more than two standard errors (paired over the probe signals).",
            f"{tag}mean cos at initialisation {init.mean():.3f}, after {o.epochs} epochs {final_.mean():.3f} "
            f"(change {grow.mean():.3f} +- {se(grow):.3f}); per epoch: "
            f"{', '.join(f'{c:.3f}' for c in cos.mean(1))}.")
        report.finding(
            "every_block_aligned", bool(np.all(final_ > 0)),
            "every block's mean cosine is positive after training.",
            f"{tag}{int(np.sum(final_ > 0))} of {len(final_)} blocks positive; min {final_.min():.3f} (block "
            f"{int(np.argmin(final_))}).")
        half = o.depth // 2
        late = [np.mean(final_[s * o.depth + half:(s + 1) * o.depth]) for s in range(o.stages)]
        early = [np.mean(final_[s * o.depth:s * o.depth + half]) for s in range(o.stages)]
        second = np.concatenate([np.arange(s * o.depth + half, (s + 1) * o.depth) for s in range(o.stages)])
        first = np.concatenate([np.arange(s * o.depth, s * o.depth + half) for s in range(o.stages)])
        diff = signal(runs[h0], -1, second) - signal(runs[h0], -1, first)
        report.finding(
            "later_blocks_more_aligned", bool(diff.mean() > 2 * se(diff)),
            "if the later blocks of a stage refine iteratively (Jastrzebski et al.), their residuals align with "
            "-dL/dx_k more than those of the stage's first half (by two standard errors, paired over signals).",
            f"{tag}mean cos, first half of each stage {np.mean(early):.3f}, second half {np.mean(late):.3f} (per "
            f"stage: {', '.join(f'{a:.3f}/{b:.3f}' for a, b in zip(early, late))}; difference {diff.mean():.3f} "
            f"+- {se(diff):.3f}).")
        stage_blocks = [np.arange(st * o.depth, (st + 1) * o.depth) for st in range(o.stages)]
        rows = []
        for h, r in runs.items():
            for st, blocks in enumerate(stage_blocks):
                a, b = signal(r, 0, blocks), signal(r, -1, blocks)
                rows.append([h, st, float(a.mean()), se(a), float(b.mean()), se(b)])
        report.table("stages", ["h", "stage", "mean cos at init", "standard error", "mean cos trained",
                                "standard error"], rows,
                     "cos(F_k(x_k), -dL/dx_k) averaged over the blocks of each stage (and the probe signals)")
        last_stage = signal(runs[h0], -1, stage_blocks[-1])
        per_h = "; ".join(f"h = {row[0]:g}, stage {row[1]}: {row[4]:.3f} +- {row[5]:.3f}" for row in rows)
        report.finding(
            "last_stage_aligned", bool(last_stage.mean() > 2 * se(last_stage)),
            "the blocks nearest the loss refine iteratively (Jastrzebski et al.: the later blocks): after "
            "training the mean cosine over the last stage's blocks is positive by more than two standard errors.",
            f"{tag}last stage {last_stage.mean():.3f} +- {se(last_stage):.3f}; every net and stage after "
            f"training: {per_h}.")
        agg = np.abs(runs[h0]["per_epoch"][-1]["aggregate"])
        scale = min(chance)
        report.finding(
            "below_random", bool(np.all(np.abs(final_) < scale)),
            "what we measure instead: no alignment. Every block's mean cosine after training is smaller in size "
            "than that of two random directions in the state's dimension, sqrt(2 / (pi C)).",
            f"{tag}max_k |mean cos_k| {np.abs(final_).max():.3f} against {scale:.3f}; the batch aggregate "
            f"sum_i <F_k, -dL/dx_{{k+1}}> / sum_i |F_k| |dL/dx_{{k+1}}| is at most {agg.max():.3f} in size over "
            "the blocks.")
        report.note(
            "Why the first-order term vanishes: the block's output layer is linear, F_k = W a + b, so scaling it, "
            "(W, b) -> (1 + e)(W, b), moves x_{k+1} = x_k + h F_k by e h F_k and changes the training loss by "
            "e h sum_i <dL/dx_{k+1,i}, F_k(x_{k,i})> to first order (i over the training signals). At a "
            "stationary point of training (dL/dW = 0, dL/db = 0) that sum is exactly 0: training drives the "
            "summed first-order loss change of every block through its output to zero instead of making it "
            "negative. With dL/dx_k = (I + h J_k)^T dL/dx_{k+1} (J_k = dF_k/dx), <F_k, -dL/dx_k> = <F_k, "
            "-dL/dx_{k+1}> - h <J_k F_k, dL/dx_{k+1}>: that term plus one with no sign of its own. The "
            "'aggregate' column (`max_k |aggregate_k|`) measures the first on the probe signals.")
        small = min(o.step_sizes)
        if small != h0:
            c = runs[small]["cos"]
            report.finding(
                "small_step_more_aligned", bool(c[-1].mean() > final_.mean()),
                "the first-order argument holds for small updates: with a small step h the trained residuals "
                "align with -dL/dx_k more than with h = 1.",
                f"mean cos after training: h = {small:g} {c[-1].mean():.3f} (blocks {c[-1].min():.3f}.."
                f"{c[-1].max():.3f}, {int(np.sum(c[-1] > 0))} of {c.shape[1]} positive; at initialisation "
                f"{c[0].mean():.3f}), h = {h0:g} {final_.mean():.3f}; test error h = {small:g} "
                f"{runs[small]['test_error']:.3f}, h = {h0:g} {runs[h0]['test_error']:.3f}.")
        for h, r in runs.items():
            rel = r["per_epoch"][-1]["relative"]
            c = r["cos"]
            report.note(
                f"h = {h:g}: after training the update h F_k is {rel.min():.3f}..{rel.max():.3f} of the state's "
                f"norm |x_k| (first block {rel[0]:.3f}, last {rel[-1]:.3f}); the mean cosine with the gradient at "
                f"the block's output, cos(F_k, -dL/dx_{{k+1}}), is "
                f"{r['per_epoch'][-1]['cos_next'].mean():.3f} (with -dL/dx_k: {c[-1].mean():.3f}); the blocks' "
                f"cosines lie in {c[0].min():.3f}..{c[0].max():.3f} at initialisation and {c[-1].min():.3f}.."
                f"{c[-1].max():.3f} after training. Random directions: |cos| about "
                f"{', '.join(f'{x:.3f}' for x in chance)} for the stages' widths.")
