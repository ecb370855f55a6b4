"""Residual alignment: does each block's residual point down the loss gradient?

A residual stage x_{k+1} = x_k + F_k(x_k) (Euler, h = 1) changes the loss, to first order, by

    L(x_k + F_k(x_k)) - L(x_k) ~ <dL/dx_k, F_k(x_k)> = -|F_k| |dL/dx_k| cos_k,
    cos_k = <F_k(x_k), -dL/dx_k> / (|F_k(x_k)| |dL/dx_k|),

so a block whose residual has cos_k > 0 moves the representation downhill, one step of a
gradient-descent-like iterative refinement (Jastrzebski et al. 2018; Greff et al. 2017). We train a
residual MLP classifier on MNIST-1D with odenets' own train step (`_depthnets.run_epochs`, epoch by
epoch) and, at initialisation and after every epoch, observe every block on a fixed probe batch of
training signals (`odenets.analysis.observe_model`: the states x_k, residuals F_k(x_k) and gradients
dL/dx_k of the mean cross-entropy through the rest of the net). cos_k is taken per signal (each signal's
gradient is its own loss's up to the batch mean's 1/B) and averaged over the probe batch. Random
directions in C dimensions have |cos| of order sqrt(2 / (pi C)): the printed reference.
"""

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

    def __post_init__(self):
        for key in ("depth", "stages", "width", "epochs", "batch_size", "probe"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.n_train", self.n_train, 0)
        validate.number("study.lr", self.lr, low=0.0)


def cosines(model, x, y) -> dict[str, np.ndarray]:
    """Per block k (flat over stages, forward order), means over the signals of x:
    cos_k = cos(F_k(x_k), -dL/dx_k), cos_next_k = cos(F_k(x_k), -dL/dx_{k+1}) (the gradient where the
    update lands), |F_k(x_k)| / |x_k| and |dL/dx_k|."""
    out = {"cos": [], "cos_next": [], "relative": [], "grad": []}
    for obs in observe_model(model, x, y):
        r = np.asarray(obs.residuals, np.float64).reshape(obs.residuals.shape[0], len(x), -1)
        g = np.asarray(obs.grads, np.float64).reshape(obs.grads.shape[0], len(x), -1)
        xs = np.asarray(obs.states, np.float64).reshape(obs.states.shape[0], len(x), -1)
        nr, ng = np.linalg.norm(r, axis=-1), np.linalg.norm(g, axis=-1)
        tiny = 1e-30
        out["cos"].append(np.mean(np.sum(r * -g[:-1], -1) / np.maximum(nr * ng[:-1], tiny), axis=1))
        out["cos_next"].append(np.mean(np.sum(r * -g[1:], -1) / np.maximum(nr * ng[1:], tiny), axis=1))
        out["relative"].append(np.mean(nr / np.maximum(np.linalg.norm(xs[:-1], axis=-1), tiny), axis=1))
        out["grad"].append(np.mean(ng[:-1], axis=1))
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
        "smoke": Options(depth=4, stages=1, width=16, epochs=3, batch_size=128, lr=1e-2, probe=256, n_train=2000),
        "full": Options(),
    }
    smoke_expect = ("aligned_after_training", "alignment_grows")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib

        matplotlib.use("Agg")
        o = options
        over = [*nets.overrides("resnet", o.depth, o.width, "mlp"), f"model.stages={o.stages}"]
        s = nets.setup(over, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=report.seed,
                       n_train=o.n_train or None)
        x, y = nets.probe_batch(s, o.probe)
        train_step, eval_step = loop.make_steps(s)
        state, per_epoch, rows = s.state, [], []
        per_epoch.append(cosines(nets.model_of(s, state), x, y))
        rows.append([0, None, None, *self._summary(per_epoch[-1])])
        for epoch, state, loss, train_error in nets.run_epochs(s, state, train_step, range(o.epochs),
                                                               seed=report.seed):
            per_epoch.append(cosines(nets.model_of(s, state), x, y))
            rows.append([epoch + 1, loss, train_error, *self._summary(per_epoch[-1])])
        test_error = nets.error(eval_step, state, s.data.x_test, s.data.y_test)
        cos = np.stack([c["cos"] for c in per_epoch])  # (epochs + 1, blocks)
        n_blocks = cos.shape[1]
        widths = [o.width * 2 ** i for i in range(o.stages)]
        chance = [math.sqrt(2 / (math.pi * w)) for w in widths]
        report.setup(
            "The literature: Jastrzebski et al. (2018) measure cos(F_k(h_k), dL/dh_k) in ResNets trained on "
            "CIFAR-10 and find it negative (the residual along the negative gradient) for the blocks of every "
            "stage, with the residuals of later blocks small relative to the state (iterative refinement).")
        report.setup(
            f"What we run: a residual MLP classifier (family resnet, {o.stages} stage(s) x {o.depth} blocks = "
            f"{n_blocks} blocks, width {', '.join(map(str, widths))}, tanh MLP fields, Euler with h = 1) on "
            f"MNIST-1D ({len(s.data.x_train)} training signals), trained by odenets' train step for {o.epochs} "
            f"epochs (Adam, lr {o.lr}, cosine schedule, batch {o.batch_size}). At initialisation and after every "
            f"epoch: cos_k = cos(F_k(x_k), -dL/dx_k) per signal, averaged over {o.probe} fixed training signals "
            "(`odenets.analysis.observe_model`; L the mean cross-entropy through the rest of the net). Random "
            f"directions would give |cos| of order sqrt(2 / (pi C)) = {', '.join(f'{c:.3f}' for c in chance)}.")
        report.table("epochs", ["epoch", "train loss", "train error", "mean cos_k", "min cos_k", "max cos_k",
                                "mean cos(F_k, -dL/dx_{k+1})", "mean |F_k| / |x_k|"], rows,
                     "cos(F_k(x_k), -dL/dx_k) over the blocks k, per epoch (epoch 0: initialisation)")
        last = per_epoch[-1]
        report.table("blocks", ["block k", "stage", "cos at init", "cos trained", "cos(F_k, -dL/dx_{k+1}) trained",
                                "|F_k| / |x_k| trained", "|dL/dx_k| trained"],
                     [[k, k // o.depth, per_epoch[0]["cos"][k], last["cos"][k], last["cos_next"][k],
                       last["relative"][k], last["grad"][k]] for k in range(n_blocks)],
                     "Per block, at initialisation and after training (probe batch means)")
        report.value("cos", cos)
        report.value("test_error", test_error)
        self._figure(report, cos, per_epoch, o)
        self._findings(report, cos, per_epoch, o, test_error, chance)

    @staticmethod
    def _summary(c) -> list[float]:
        return [float(c["cos"].mean()), float(c["cos"].min()), float(c["cos"].max()), float(c["cos_next"].mean()),
                float(c["relative"].mean())]

    @staticmethod
    def _figure(report, cos, per_epoch, o) -> None:
        import matplotlib.pyplot as plt

        epochs, n_blocks = cos.shape
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        bound = max(float(np.abs(cos).max()), 1e-3)
        im = axes[0].imshow(cos.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-bound, vmax=bound,
                            extent=(-0.5, epochs - 0.5, -0.5, n_blocks - 0.5))
        fig.colorbar(im, ax=axes[0], label="mean cos(F_k(x_k), -dL/dx_k)")
        for s in range(1, o.stages):
            axes[0].axhline(s * o.depth - 0.5, color="k", lw=1)
        axes[0].set_xlabel("epoch (0: initialisation)")
        axes[0].set_ylabel("block k (lines: stage transitions)")
        axes[0].set_title("alignment per block and epoch")
        cmap = plt.get_cmap("viridis")
        for k in range(n_blocks):
            axes[1].plot(np.arange(epochs), cos[:, k], color=cmap(k / max(n_blocks - 1, 1)), lw=1.2,
                         label=f"block {k}" if n_blocks <= 8 or k in (0, n_blocks - 1) else None)
        axes[1].plot(np.arange(epochs), cos.mean(1), "k--", lw=2, label="mean over blocks")
        axes[1].axhline(0, color="gray", lw=0.8)
        axes[1].set_xlabel("epoch (0: initialisation)")
        axes[1].set_ylabel("mean cos(F_k(x_k), -dL/dx_k)")
        axes[1].set_title("per block over training")
        axes[1].legend(fontsize="small", ncol=2)
        axes[1].grid(alpha=0.3)
        fig.tight_layout()
        report.figure("alignment", fig, "cos(F_k(x_k), -dL/dx_k) per block and epoch: heatmap (left) and lines "
                      "(right; dark to light: first to last block)")

    @staticmethod
    def _findings(report, cos, per_epoch, o, test_error, chance) -> None:
        init, final_ = cos[0], cos[-1]
        report.finding(
            "aligned_after_training", bool(final_.mean() > 0),
            "after training the mean cos(F_k(x_k), -dL/dx_k) over the blocks is positive (each block moves the "
            "representation downhill).",
            f"mean {final_.mean():.3f} (blocks {final_.min():.3f}..{final_.max():.3f}); test error "
            f"{test_error:.3f}.")
        report.finding(
            "alignment_grows", bool(final_.mean() > init.mean()),
            "training raises the alignment: the mean cosine after training exceeds the one at initialisation.",
            f"mean cos at initialisation {init.mean():.3f}, after {o.epochs} epochs {final_.mean():.3f}; per "
            f"epoch: {', '.join(f'{c:.3f}' for c in cos.mean(1))}.")
        report.finding(
            "every_block_aligned", bool(np.all(final_ > 0)),
            "every block's mean cosine is positive after training.",
            f"{int(np.sum(final_ > 0))} of {len(final_)} blocks positive; min {final_.min():.3f} (block "
            f"{int(np.argmin(final_))}).")
        late = [np.mean(final_[s * o.depth + o.depth // 2:(s + 1) * o.depth]) for s in range(o.stages)]
        early = [np.mean(final_[s * o.depth:s * o.depth + o.depth // 2]) for s in range(o.stages)]
        report.finding(
            "later_blocks_more_aligned", bool(np.mean(late) > np.mean(early)),
            "if the later blocks of a stage refine iteratively (Jastrzebski et al.), their residuals align with "
            "-dL/dx_k more than those of the stage's first half.",
            f"mean cos, first half of each stage {np.mean(early):.3f}, second half {np.mean(late):.3f} (per "
            f"stage: {', '.join(f'{a:.3f}/{b:.3f}' for a, b in zip(early, late))}).")
        rel = per_epoch[-1]["relative"]
        report.note(
            f"After training the residual is {rel.min():.3f}..{rel.max():.3f} of the state's norm |x_k| (mean "
            f"{rel.mean():.3f}; first block {rel[0]:.3f}, last {rel[-1]:.3f}). The mean cosine with the gradient "
            f"at the block's output, cos(F_k, -dL/dx_{{k+1}}), is {per_epoch[-1]['cos_next'].mean():.3f} "
            f"(with -dL/dx_k: {final_.mean():.3f}). Random directions: |cos| about "
            f"{', '.join(f'{c:.3f}' for c in chance)} for the stages' widths; at initialisation the blocks' "
            f"cosines lie in {init.min():.3f}..{init.max():.3f}.")
