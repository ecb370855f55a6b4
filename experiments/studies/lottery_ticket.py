"""Frankle & Carbin (2019), "The lottery ticket hypothesis", with rewinding (Frankle et al. 2020), on a
plain net and a residual net with the same layers; the ticket of each moved to the other as a mask.

Two MNIST-1D classifiers with the same parameter shapes, leaf by leaf (the `plain` and `resnet` families of
one stage: x_{k+1} = F_k(x_k) vs x_{k+1} = x_k + F_k(x_k), the same fields F_k), start from the same
theta_0 (`_depthnets.initialise` draws leaf by leaf in the same order). Iterative magnitude pruning (IMP)
with rewinding, per net, with `odenets.analysis` (`magnitude_masks`, `random_masks`, `rewind`,
`transfer_masks`, and `masked`, through `_depthnets.train_masked`):

    theta_k = the dense run's weights after k steps (the rewind point); m_1 = magnitude_masks(dense, p)
    round r: train m_r * theta from rewind(theta_k, m_r)  -> the ticket's accuracy at kept fraction (1-p)^r
             m_{r+1} = magnitude_masks(trained, p, m_r)  (global: the smallest p of the live weights)

Beside each round's ticket, trained from the same theta_k on the same batches: `randoms` random masks with
the ticket's per-layer counts (`random_masks`), and the other net's round-r ticket mask (`transfer_masks`:
the plain net's ticket trained in the residual net, and back). All variants of one net train together,
vmapped in one compiled step (the masks are data of the optimiser state).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import kept_fraction, magnitude_masks, ones_like, random_masks, transfer_masks, weights_only

NETS = ("plain", "resnet")
OTHER = {"plain": "resnet", "resnet": "plain"}


@final
@dataclasses.dataclass(frozen=True)
class Options:
    kind: str = "mlp"  # the fields' kind (mlp: MLP fields on the flattened signal; conv1d)
    width: int = 32
    depth: int = 4  # blocks of the one stage (each: two layers of width x width)
    epochs: int = 20  # per round (the optimiser and its cosine schedule restart at the rewind point)
    batch_size: int = 128
    lr: float = 3e-3
    n_train: int | None = None  # the first n training signals (None: all 4000)
    rate: float = 0.2  # the fraction of live weights pruned per round (Frankle & Carbin: 20%)
    rounds: int = 12  # pruning rounds: (1 - rate)^rounds of the weights remain at the end
    rewind: int = 20  # the rewind iteration k (0: theta_0, the original lottery ticket)
    randoms: int = 2  # random masks per round
    evaluate: bool = True  # test error (False: the training error of the last epoch, the smoke size's seconds)
    vmap: bool = True  # a round's variants in one vmapped step (False: one after the other; compiles faster)

    def __post_init__(self):
        validate.choice("study.kind", self.kind, ("mlp", "conv1d"))
        for key in ("width", "depth", "epochs", "batch_size", "rounds", "randoms"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.rewind", self.rewind, 0)
        validate.optional(validate.integer, "study.n_train", self.n_train, self.batch_size)
        validate.number("study.lr", self.lr, low=0.0)
        validate.number("study.rate", self.rate, low=0.0, high=1.0)
        validate.boolean("study.evaluate", self.evaluate)
        validate.boolean("study.vmap", self.vmap)


def stacked(trees):
    """A list of pytrees as one with a leading variant axis."""
    return jax.tree.map(lambda *a: np.stack([np.asarray(v) for v in a]), *trees)


def variant(tree, i: int):
    """Variant i of a stacked pytree."""
    return jax.tree.map(lambda a: np.asarray(a)[i], tree)


def pruned_max(params, masks) -> float:
    """max |theta| over the pruned (mask 0) weights: 0 when training honoured the mask."""
    values = [np.abs(np.asarray(v))[np.asarray(m) == 0] for v, m in zip(jax.tree.leaves(params),
                                                                      jax.tree.leaves(masks))]
    return float(max((v.max() for v in values if v.size), default=0.0))


def overlap(a, b) -> float:
    """|kept(a) and kept(b)| / |kept(a) or kept(b)| over the prunable weights (Jaccard index)."""
    flags = [weights_only(p, v) for p, v in jax.tree_util.tree_leaves_with_path(a)]
    both = either = 0.0
    for x, y, f in zip(jax.tree.leaves(a), jax.tree.leaves(b), flags):
        if f:
            x, y = np.asarray(x) != 0, np.asarray(y) != 0
            both, either = both + float(np.sum(x & y)), either + float(np.sum(x | y))
    return both / either if either else 1.0


@final
@studies.study.register("lottery_ticket")
class LotteryTicket(studies.Study):
    title = "Lottery tickets with rewinding in a plain and a residual net, and tickets moved between them"
    claim = (
        "Frankle & Carbin (2019, 'The lottery ticket hypothesis: finding sparse, trainable neural networks', "
        "ICLR, arXiv:1803.03635): iterative magnitude pruning (train, remove the 20% smallest weights, reset the "
        "rest to their initial values, repeat) finds subnetworks of LeNet-300-100 and Conv-2/4/6 (VGG-like) "
        "nets on MNIST / CIFAR-10 that train to the dense net's accuracy with 10-20% of the weights, while the "
        "same masks with random positions (or random re-initialisation) do much worse. Frankle, Dziugaite, Roy "
        "& Carbin (2020, 'Linear mode connectivity and the lottery ticket hypothesis', ICML, arXiv:1912.05671): "
        "for deeper nets (ResNet-20, VGG-16) the reset must go to an early iteration k of training (rewinding), "
        "not to initialisation. No paper we know of moves a ticket between a plain and a residual net."
    )
    sizes = {
        "smoke": Options(width=32, depth=2, epochs=4, n_train=2048, rate=0.6, rounds=3, rewind=4, randoms=1,
                         evaluate=False, vmap=False),
        "full": Options(),
    }
    smoke_expect = ("masks_honoured", "ticket_beats_random")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        o = options
        metric = "test error" if o.evaluate else "training error"
        report.setup(
            "The literature: Frankle & Carbin (2019) pruned LeNet-300-100 (MNIST) and Conv-2/4/6 (CIFAR-10) by "
            "iterative magnitude pruning, 20% per round (fc layers; 10-15% for conv layers, 10% for the output "
            "layer), resetting the surviving weights to their initial values theta_0 after each round: the "
            "resulting 'winning tickets' matched the dense net's test accuracy down to about 10-20% of the "
            "weights (and learned faster), while the same sparsity at random positions or with re-drawn weights "
            "fell behind. Frankle et al. (2020) found that for deeper nets the reset must go to the weights "
            "theta_k of an early iteration k (0.1-7% into training), not theta_0.")
        report.setup(
            f"What we run: MNIST-1D ({o.n_train or 4000} training signals), two nets with the same parameter "
            f"shapes leaf by leaf: a linear stem (40 -> {o.width}), one stage of {o.depth} blocks of {o.kind} "
            f"fields F_k of width {o.width} (MLP: two {o.width}x{o.width} layers, tanh), a linear head; `plain` "
            "x_{k+1} = F_k(x_k) (a VGG-like stack), `resnet` x_{k+1} = x_k + F_k(x_k) (Euler, h = 1). Both "
            f"start from the same theta_0. {o.epochs} epochs per round (Adam, lr {o.lr}, cosine schedule "
            f"restarted at the rewind point, clip 1, batch {o.batch_size}, odenets' train step), rewind to "
            f"iteration k = {o.rewind} of the dense run. Global magnitude pruning of {o.rate:.0%} of the live "
            f"weights per round over every kernel (stem, fields, head; biases and norm scales are never pruned), "
            f"{o.rounds} rounds: {(1 - o.rate) ** o.rounds:.1%} of the weights remain at the end. Per round, "
            f"beside the ticket, trained from the same theta_k on the same batches: {o.randoms} random mask(s) "
            "with the ticket's per-layer counts, and the other net's ticket of the same round as a mask "
            f"(`transfer_masks`). Pruned weights are held at exactly zero by `odenets.analysis.masked`. Reported: "
            f"the {metric}.")

        setups = {net: nets_.setup(nets_.overrides(net, o.depth, o.width, o.kind), epochs=o.epochs,
                                   batch_size=o.batch_size, lr=o.lr, seed=report.seed, n_train=o.n_train)
                  for net in NETS}
        steps = {net: nets_.masked_steps(s, vmap=o.vmap) for net, s in setups.items()}
        V = 2 + o.randoms  # ticket, randoms, the other net's ticket: one compiled step per net
        err = lambda r: r.test_error if o.evaluate else r.train_error

        def train(net, starts, masks):
            return nets_.train_masked(steps[net], stacked(starts), stacked(masks), seed=report.seed,
                                      rewind_at=o.rewind, evaluate=o.evaluate)

        # the dense runs: the rewind point theta_k and the first masks
        theta0 = {net: setups[net].state[0] for net in NETS}
        ones = {net: ones_like(theta0[net]) for net in NETS}
        dense, theta_k, masks = {}, {}, {}
        for net in NETS:
            run = train(net, [theta0[net]] * V, [ones[net]] * V)
            dense[net] = float(err(run)[0])
            theta_k[net] = variant(run.at_rewind, 0)
            masks[net] = magnitude_masks(variant(run.params, 0), o.rate)
        rows, curves, honoured, overlaps = [], {}, [], []
        for r in range(1, o.rounds + 1):
            kept = {net: kept_fraction(masks[net]) for net in NETS}
            moved = {net: transfer_masks(masks[OTHER[net]], theta0[net]) for net in NETS}  # before they change
            overlaps.append(overlap(masks["plain"], masks["resnet"]))
            row = [r]
            for net in NETS:
                variants = [masks[net], *(random_masks(masks[net], seed=1000 * r + j) for j in range(o.randoms)),
                            moved[net]]
                run = train(net, [theta_k[net]] * V, variants)
                e = [float(v) for v in err(run)]
                curves.setdefault(net, []).append((kept[net], e[0], float(np.mean(e[1:-1])), e[-1],
                                                   kept_fraction(moved[net])))
                honoured.append(max(pruned_max(variant(run.params, i), m) for i, m in enumerate(variants)))
                row += [kept[net], e[0], float(np.mean(e[1:-1])), e[-1]]
                masks[net] = magnitude_masks(variant(run.params, 0), o.rate, masks[net])
            rows.append(row + [overlaps[-1]])
        report.table(
            "rounds",
            ["round", "plain kept", "plain ticket", "plain random", "plain w/ resnet ticket", "resnet kept",
             "resnet ticket", "resnet random", "resnet w/ plain ticket", "mask overlap (Jaccard)"], rows,
            f"{metric.capitalize()} per round, by mask (random: mean over {o.randoms} draw(s)); dense: plain "
            f"{dense['plain']:.3f}, resnet {dense['resnet']:.3f}. 'w/ X ticket': this net trained from its own "
            "theta_k under the other net's ticket mask of the same round.")
        report.value("dense_error", dense)
        report.value("pruned_max_abs", max(honoured))

        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, net in zip(axes, NETS):
            c = np.array(curves[net])
            ax.plot(c[:, 0], c[:, 1], "o-", label=f"{net} ticket (IMP, rewind k = {o.rewind})")
            ax.plot(c[:, 0], c[:, 2], "s--", label="random mask, same per-layer sparsity")
            ax.plot(c[:, 4], c[:, 3], "^:", label=f"{OTHER[net]}'s ticket as the mask")
            ax.axhline(dense[net], color="k", lw=0.8, label="dense")
            ax.set_xscale("log")
            ticks = [t for t in (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if c[:, 0].min() * 0.8 <= t <= 1.0]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
            ax.invert_xaxis()
            ax.set_xlabel("fraction of weights remaining (log)")
            ax.set_title(f"{net} net (x_{{k+1}} = {'F_k(x_k)' if net == 'plain' else 'x_k + F_k(x_k)'})")
            ax.legend(fontsize=7)
        axes[0].set_ylabel(metric)
        report.figure("error_vs_sparsity", fig, f"{metric.capitalize()} against the fraction of weights "
                      "remaining: tickets, random masks, and the other net's ticket")

        # findings
        report.finding("masks_honoured", max(honoured) == 0.0,
                       "training under a mask keeps every pruned weight at exactly zero.",
                       f"max |theta| over pruned weights after training, all runs: {max(honoured):.3g}.")
        last = {net: curves[net][-1] for net in NETS}
        report.finding(
            "ticket_beats_random", all(last[n][1] < last[n][2] for n in NETS),
            f"at the sparsest round the ticket's {metric} is below the random masks' (both nets).",
            "; ".join(f"{n} at {last[n][0]:.1%} kept: ticket {last[n][1]:.3f}, random {last[n][2]:.3f}"
                      for n in NETS) + ".")
        for net in NETS:
            matched = [c[0] for c in curves[net] if c[1] <= dense[net] + 0.02]
            report.finding(
                f"{net}_ticket_matches_dense", bool(matched) and min(matched) <= 0.2,
                f"the {net} net's ticket stays within 2 points of the dense {metric} down to 20% of the weights "
                "or fewer (Frankle & Carbin: 10-20%).",
                f"dense {dense[net]:.3f}; sparsest ticket within 2 points: "
                f"{f'{min(matched):.1%} kept' if matched else 'none'}; "
                + ", ".join(f"{c[0]:.1%}: {c[1]:.3f}" for c in curves[net]) + ".")
        for net in NETS:
            c = np.array(curves[net])  # kept, ticket, random, transferred, kept by the transferred mask
            gap = c[:, 3] - c[:, 2]
            advantage = c[:, 2] - c[:, 1]  # what the net's own ticket gains over random masks
            big = advantage > 0.02  # rounds where there is a ticket advantage to recover
            recovered = float(np.sum(-gap[big]) / np.sum(advantage[big])) if big.any() else float("nan")
            report.value(f"{OTHER[net]}_ticket_in_{net}_recovered", recovered)
            report.finding(
                f"{OTHER[net]}_ticket_in_{net}_beats_random", float(np.mean(gap)) < 0,
                f"no prior claim: does the {OTHER[net]} net's ticket, as a mask of the {net} net (trained from "
                f"the {net} net's own theta_k), beat random masks of the same per-layer sparsity, on average over "
                "the rounds?",
                f"transferred minus random {metric}, mean over rounds {np.mean(gap):+.3f}, per round "
                + ", ".join(f"{g:+.3f}" for g in gap) + f"; over the rounds where the {net} net's own ticket "
                f"beats random by more than 2 points the transferred mask recovers {recovered:.0%} of that "
                f"advantage; at the sparsest round ({c[-1, 4]:.1%} kept) transferred {c[-1, 3]:.3f}, random "
                f"{c[-1, 2]:.3f}, own ticket {c[-1, 1]:.3f}.")
        report.note("Mask overlap (Jaccard index of the kept weights) between the plain and the residual ticket "
                    "per round: " + ", ".join(f"{v:.2f}" for v in overlaps) + " (random masks of the same "
                    "sparsity s overlap about s / (2 - s)). Both nets start from the same theta_0, so an overlap "
                    "above that says the two training dynamics keep partly the same weights.")
        how = "vmapped over the variants" if o.vmap else "one variant after the other"
        report.note(f"Each round's {V} variants (ticket, {o.randoms} random, transferred) train on the same "
                    f"batches with one compiled step per net ({how}). The cosine schedule restarts at the "
                    "rewind point, so every round trains the full schedule (Frankle et al. 2020 continue the "
                    "schedule from iteration k; with k a few percent of training the difference is small).")
