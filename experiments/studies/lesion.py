"""Veit, Wilber & Belongie (2016), "Residual networks behave like ensembles of relatively shallow
networks": lesions of a trained residual net at test time, beside a plain net.

A residual net and a plain net with the same per-block fields (the `resnet` and `plain` families:
x_{k+1} = x_k + F_k(x_k) vs x_{k+1} = F_k(x_k)) are trained on MNIST-1D by `odenets run`
(`odenets.train.loop.fit`, one run directory each under runs/) and restored from their
checkpoints. At test time, with `odenets.analysis`:

    single deletions    each block k removed alone (`delete_blocks`: the residual block becomes its
                        skip, x_{k+1} = x_k; the plain layer is dropped and its input goes on)
    k random deletions  k blocks drawn at random, `repeats` draws per k (`random_deletion`)
    reordering          k random swaps of two blocks of one stage (`random_swaps`)

and the test accuracy of each lesioned copy (`lesion_accuracy`: every lesion of one shape runs in
one compiled program). Blocks of different stages have different widths, so the stage
transitions (a linear projection to twice the width) are not blocks and are never deleted; the
first block of each later stage is where Veit et al.'s downsampling blocks sit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import blocks, lesion_accuracy, random_deletion, random_swaps
from odenets.analysis.lesion import keep_orders

NETS = ("resnet", "plain")
DEEP = ("deep", "plain_deep")
WHERE = {True: " through `odenets run` into runs/<net>/ and restored from its last checkpoint",
         False: " in memory (no run directory; the initial parameters drawn by numpy from the initialisers' "
                "distributions)"}


@final
@dataclasses.dataclass(frozen=True)
class Options:
    data: tuple[str, ...] = ("data=mnist1d",)  # `odenets run` overrides of the data group
    kind: str = "mlp"  # the blocks' kind (mlp: MLP fields on the flattened signal; conv1d)
    width: int = 64
    depth: int = 4  # blocks per stage (a plain MLP net of 12 or more tanh layers does not train here: see below)
    stages: int = 2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    deep_depth: int = 8  # a deeper residual net (deep_stages x deep_depth blocks) for the deletions, swaps and
    deep_stages: int = 3  # transitions; 0: those use the compared resnet
    ks: tuple[int, ...] = (1, 2, 4, 6, 8, 12)  # numbers of randomly deleted blocks
    swaps: tuple[int, ...] = (1, 2, 4, 8, 16)  # numbers of random swaps
    repeats: int = 10  # random draws per k and per number of swaps
    checkpoints: bool = True  # train by `odenets run` into runs/<net>/ and restore the checkpoint (False:
    # the same train step in memory, no run directory: the smoke size's seconds)

    def __post_init__(self):
        validate.choice("study.kind", self.kind, ("mlp", "conv1d"))
        for key in ("width", "depth", "stages", "epochs", "batch_size", "repeats"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.number("study.lr", self.lr, low=0.0)
        validate.boolean("study.checkpoints", self.checkpoints)
        validate.integer("study.deep_depth", self.deep_depth, 0)
        validate.integer("study.deep_stages", self.deep_stages, 1)
        depth, stages = (self.deep_depth, self.deep_stages) if self.deep_depth else (self.depth, self.stages)
        for k in self.ks:
            validate.integer("study.ks", k, 1, (depth - 1) * stages)
        for k in self.swaps:
            validate.integer("study.swaps", k, 0)


def model_overrides(net: str, options: Options) -> list[str]:
    """The model group of a compared net ("resnet", "plain") or of one at the deep size ("deep": the residual
    net, "plain_deep")."""
    deep = net in DEEP
    depth, stages = (options.deep_depth, options.deep_stages) if deep else (options.depth, options.stages)
    family = {"deep": "resnet", "plain_deep": "plain"}.get(net, net)
    return [f"model={family}", f"model.kind={options.kind}", f"model.width={options.width}",
            f"model.depth={depth}", f"model.stages={stages}"]


def overrides(net: str, options: Options, seed: int) -> list[str]:
    """`odenets run` overrides of a net (`model_overrides`, the data group, the optimiser, the seed)."""
    return [*options.data, *model_overrides(net, options), f"optim.epochs={options.epochs}",
            f"optim.batch_size={options.batch_size}", f"optim.lr={options.lr}", f"seed={seed}"]


def train_in_memory(net: str, options: Options, seed: int) -> nets_.Net:
    """The same config's model trained by the same train step in memory (`_depthnets.train`: no run
    directory, no checkpoints, numpy-drawn initial parameters, no compiled initialisers)."""
    return nets_.train(model_overrides(net, options), epochs=options.epochs, batch_size=options.batch_size,
                       lr=options.lr, seed=seed, evaluate=False, data=options.data)


@final
@studies.study.register("lesion")
class Lesion(studies.Study):
    title = "Lesions: deleting and reordering blocks of a trained residual net vs a plain net"
    claim = (
        "Veit, Wilber & Belongie (2016, 'Residual networks behave like ensembles of relatively shallow "
        "networks', NeurIPS, arXiv:1605.06431): deleting a single block of a trained 110-layer ResNet on "
        "CIFAR-10 at test time barely changes its error, except for the downsampling blocks at the stage "
        "transitions, while deleting any layer of a plain VGG net drops it to chance; deleting k random "
        "blocks degrades the ResNet smoothly as k grows, and so does reordering blocks by random swaps. "
        "They read it as a ResNet being an ensemble of paths that do not strongly depend on each other."
    )
    sizes = {
        "smoke": Options(width=16, depth=4, stages=1, epochs=3, batch_size=128, lr=1e-2, deep_depth=0, ks=(1, 2),
                         swaps=(1, 2), repeats=6, checkpoints=False),
        "full": Options(),
    }
    smoke_expect = ("residual_beats_plain", "k_deletions_decline")

    def run(self, options: Options, report: studies.Report) -> None:
        from experiments.studies._trained import train

        names = (*NETS, *DEEP) if options.deep_depth else NETS
        if options.checkpoints:
            nets = {net: train(overrides(net, options, report.seed), report.subdir(net)) for net in names}
        else:
            nets = {net: train_in_memory(net, options, report.seed) for net in names}
        subject = "deep" if options.deep_depth else "resnet"  # the net of the deletions, swaps, transitions
        data = nets["resnet"].data
        x, y = np.asarray(data.x_test), np.asarray(data.y_test)
        chance = 1.0 / data.output_dim
        deep = (f" A deeper residual net, `deep`: {options.deep_stages} stages x {options.deep_depth} blocks "
                f"({options.deep_depth * options.deep_stages} blocks), otherwise the same and trained the same "
                "way, is the net of the single deletions' size, the k deletions, the swaps and the transitions; "
                "a plain net of that size (`plain_deep`) is trained beside it." if options.deep_depth else "")
        report.setup(
            f"Data: {' '.join(options.data)} ({len(data.x_train)} train / {len(x)} test, {data.output_dim} "
            f"classes, chance {chance:.2f}). Two nets of {options.stages} stage(s) x {options.depth} blocks "
            f"({options.depth * options.stages} blocks), kind {options.kind}, width {options.width} doubling per "
            "stage, the same fields F_k (the family defaults): `resnet` x_{k+1} = x_k + F_k(x_k) (Euler, h = 1) "
            f"and `plain` x_{{k+1}} = F_k(x_k). Each trained by odenets' train step ({options.epochs} epochs, "
            f"batch {options.batch_size}, lr {options.lr}, the default optimiser){WHERE[options.checkpoints]}."
            f"{deep} "
            "Lesions with `odenets.analysis` (`delete_blocks`, `random_deletion`, `random_swaps`, "
            f"`lesion_accuracy`) on the test set; {options.repeats} random draws per k and per number of swaps "
            "(random deletions keep one block in every stage)."
        )
        base, single = {}, {}
        for net, t in nets.items():
            identity = keep_orders(t.model, np.ones(len(blocks(t.model)), bool))  # every block kept, in order:
            # the unlesioned net, compiled as the reorderings are
            base[net] = lesion_accuracy(t.model, x, y, identity)
            single[net] = self._single(t.model, x, y)
        where = {net: blocks(t.model) for net, t in nets.items()}
        rows = [[s, k, single["resnet"][i], single["plain"][i]] for i, (s, k) in enumerate(where["resnet"])]
        report.table("single", ["stage", "block", "resnet accuracy", "plain accuracy"],
                     [["-", "none", base["resnet"], base["plain"]], *rows],
                     caption="Test accuracy with one block deleted (first row: no deletion)")
        if options.deep_depth:
            report.table("single_deep", ["stage", "block", "deep accuracy", "plain_deep accuracy"],
                         [["-", "none", base["deep"], base["plain_deep"]],
                          *[[s, k, a, b] for (s, k), a, b in zip(where["deep"], single["deep"],
                                                                 single["plain_deep"])]],
                         caption="The deep nets: test accuracy with one block deleted")
            report.value("plain_deep_accuracy", base["plain_deep"])
            trains = base["plain_deep"] > chance + 0.25 * (base["deep"] - chance)
            verdict = ("It trains, so its lesions compare with the deep residual net's too." if trains else
                       "It barely trains (the degradation of deep plain nets, He et al. 2016), so its lesions say "
                       "little; Veit et al.'s plain VGG net trained well, and the residual vs plain findings use "
                       "the smaller size, where the plain net trains.")
            report.note(
                f"The plain net at the deep size ({options.deep_stages} x {options.deep_depth} blocks) reaches "
                f"{base['plain_deep']:.3f} test accuracy (chance {chance:.2f}; the residual net of that size "
                f"{base['deep']:.3f}, the plain net of {options.stages} x {options.depth} blocks "
                f"{base['plain']:.3f}). {verdict}"
            )
        model = nets[subject].model
        deletions = self._deletions(model, x, y, options, report.seed)
        swaps = self._swaps(model, x, y, options, report.seed)
        b = base[subject]
        report.table("k_deletions", ["k deleted", "mean accuracy", "std", "min", "max"],
                     [[0, b, 0.0, b, b], *[[k, *stats] for k, stats in deletions.items()]],
                     caption=f"{subject}: k random blocks deleted ({options.repeats} draws per k)")
        report.table("swaps", ["swaps", "mean accuracy", "std", "min", "max"],
                     [[0, b, 0.0, b, b], *[[k, *stats] for k, stats in swaps.items()]],
                     caption=f"{subject}: blocks reordered by random swaps ({options.repeats} draws per count)")
        self._figures(report, where, base, single, deletions, swaps, chance, options, subject)
        self._findings(report, where, base, single, deletions, swaps, chance, subject)

    # -- measurements --

    @staticmethod
    def _single(model, x, y) -> np.ndarray:
        where = blocks(model)
        return np.array([lesion_accuracy(model, x, y, keep_orders(model, np.arange(len(where)) != i))
                         for i in range(len(where))])

    @staticmethod
    def _stats(values) -> list[float]:
        v = np.asarray(values)
        return [float(v.mean()), float(v.std()), float(v.min()), float(v.max())]

    def _deletions(self, model, x, y, options, seed) -> dict[int, list[float]]:
        where = blocks(model)
        out = {}
        for k in options.ks:
            accs = []
            for r in range(options.repeats):
                drop = set(random_deletion(model, k, seed=1000 * seed + 100 * k + r))
                accs.append(lesion_accuracy(model, x, y, keep_orders(model, [b not in drop for b in where])))
            out[k] = self._stats(accs)
        return out

    def _swaps(self, model, x, y, options, seed) -> dict[int, list[float]]:
        seeds = lambda k: [1000 * seed + 100 * k + r for r in range(options.repeats)]
        return {k: self._stats([lesion_accuracy(model, x, y, random_swaps(model, k, seed=i)) for i in seeds(k)])
                for k in options.swaps}

    # -- report --

    @staticmethod
    def _figures(report, where, base, single, deletions, swaps, chance, options, subject) -> None:
        import matplotlib.pyplot as plt

        panels = [(NETS, options.depth)] + ([(DEEP, options.deep_depth)] if options.deep_depth else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4), squeeze=False)
        for ax, (nets, depth) in zip(axes[0], panels):
            for net, marker in zip(nets, ("o", "s")):
                line, = ax.plot(np.arange(len(single[net])), single[net], marker + "-",
                                label=f"{net}: one block deleted")
                ax.axhline(base[net], color=line.get_color(), ls="--", lw=1, label=f"{net}: no deletion")
            ax.axhline(chance, color="gray", ls=":", label="chance")
            for s in range(1, max(s for s, _ in where[nets[0]]) + 1):
                ax.axvline(s * depth - 0.5, color="k", alpha=0.3, lw=1)
            ax.set_xlabel("deleted block (flat index; vertical lines: stage transitions)")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1)
            ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        report.figure("single_deletion", fig, "Test accuracy with one block deleted: residual vs plain net"
                      f"{' (left) and at the deep size (right)' if options.deep_depth else ''} "
                      "(Veit et al. 2016, Fig. 3)")

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, results, label in ((axes[0], deletions, "blocks deleted at random (k)"),
                                   (axes[1], swaps, "random swaps of two blocks")):
            ks = [0, *results]
            mean = np.array([base[subject], *[r[0] for r in results.values()]])
            std = np.array([0.0, *[r[1] for r in results.values()]])
            ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=f"{subject} (mean, std over draws)")
            ax.axhline(chance, color="gray", ls=":", label="chance")
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        report.figure("k_deletion_reorder", fig, f"Residual net ({subject}): k random blocks deleted (left) "
                      "and blocks reordered by random swaps (right) (Veit et al. 2016, Fig. 5)")

    @staticmethod
    def _findings(report, where, base, single, deletions, swaps, chance, subject) -> None:
        drop = {net: base[net] - single[net] for net in single}
        firsts = np.array([k == 0 and s > 0 for s, k in where[subject]])
        report.value("mean_single_drop", {net: float(drop[net].mean()) for net in drop})
        report.finding(
            "residual_beats_plain", bool(drop["resnet"].mean() < drop["plain"].mean()),
            "deleting one block costs the residual net less accuracy than deleting one layer costs the plain "
            "net (mean over blocks).",
            f"mean drop resnet {drop['resnet'].mean():.3f} (base {base['resnet']:.3f}), plain "
            f"{drop['plain'].mean():.3f} (base {base['plain']:.3f}).",
        )
        report.finding(
            "residual_single_small", bool(np.median(drop[subject]) < 0.05),
            f"a single deleted residual block ({subject}) barely moves the accuracy: median drop below 0.05.",
            f"median drop {np.median(drop[subject]):.3f}, max {drop[subject].max():.3f} (block "
            f"{where[subject][int(np.argmax(drop[subject]))]}); the compared resnet: median "
            f"{np.median(drop['resnet']):.3f}.",
        )
        margin = 0.25 * (base["plain"] - chance)
        report.finding(
            "plain_collapses", bool(np.median(single["plain"]) < chance + margin),
            "deleting one layer of the plain net drops it to chance: median lesioned accuracy within a quarter "
            "of the way from chance to its base accuracy.",
            f"median {np.median(single['plain']):.3f}, range {single['plain'].min():.3f}.."
            f"{single['plain'].max():.3f} (chance {chance:.2f}, base {base['plain']:.3f}).",
        )
        means = np.array([base[subject], *[r[0] for r in deletions.values()]])
        steps = np.diff(means)
        report.finding(
            "k_deletions_decline", bool(means[-1] < means[0] and np.all(steps < 0.02)),
            "deleting more random blocks lowers the residual net's mean accuracy, k by k (no rise above 0.02).",
            f"mean accuracy at k = 0, {', '.join(map(str, deletions))}: {', '.join(f'{m:.3f}' for m in means)}.",
        )
        largest = float(-steps.min()) if len(steps) else 0.0
        total = float(means[0] - means[-1])
        report.finding(
            "k_deletions_smooth", bool(total > 0 and largest <= 0.6 * total),
            "the decline is smooth: no single step in k accounts for more than 60% of the total loss.",
            f"largest step {largest:.3f} of a total loss {total:.3f}.",
        )
        smeans = np.array([base[subject], *[r[0] for r in swaps.values()]])
        half = chance + 0.5 * (base[subject] - chance)
        report.finding(
            "reorder_degrades", bool(smeans[-1] < smeans[0] and smeans[1] > half),
            "reordering blocks degrades the residual net gradually: one swap keeps more than half of the way from "
            "chance to the base accuracy, and the most swaps are worse than none.",
            f"mean accuracy at 0, {', '.join(map(str, swaps))} swaps: {', '.join(f'{m:.3f}' for m in smeans)}.",
        )
        if firsts.any():
            later = np.array([s > 0 and k > 0 for s, k in where[subject]])
            d = drop[subject]
            report.finding(
                "transitions_hurt_most", bool(d[firsts].mean() > 2 * max(d[later].mean(), 1e-3)),
                "deleting the first block after a stage transition (where Veit et al.'s downsampling blocks are) "
                "hurts the residual net more than twice as much as deleting another block of the same stages.",
                f"{subject}: mean drop of the first blocks of stages 2.. {d[firsts].mean():.3f}, of the other "
                f"blocks of those stages {d[later].mean():.3f} (blocks of stage 1: "
                f"{d[np.array([s == 0 for s, _ in where[subject]])].mean():.3f}).",
            )
        report.note("Single deletions, accuracy drops in forward block order: " + "; ".join(
            f"{net}: {', '.join(f'{v:.3f}' for v in d)}" for net, d in drop.items()) + ".")
