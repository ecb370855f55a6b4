"""The degradation problem (He et al. 2016): deeper plain nets train worse, deeper ResNets better.

Part 1 (MLP fields, many epochs). Classifiers of the families plain and resnet with the same
layers (one stage of L MLP fields F_l(x) = W2 tanh(W1 x + b1) + b2 of `width` units; the plain
net drops the skip, x_{l+1} = F_l(x_l)) on MNIST-1D at depths 8, 20 and 56, trained alike: the
training error (running, over the last epoch's mini-batches, as He et al.'s curves) against
depth, and the test error.

Part 2 (He et al.'s Fig. 7). The std of each residual block's response F_l(x_l) over the
training signals (`odenets.analysis.gradient_flow`'s response_std), per layer and by depth:
He et al. found ResNets' responses smaller than plain nets', and smaller in deeper ResNets
(each block modifies the signal less).

Part 3 (conv fields with GroupNorm, fewer epochs: conv steps cost more on a CPU). plain,
resnet with post-activation blocks (conv-GN-ReLU-conv-GN, He et al. 2016a) and with
pre-activation blocks (GN-ReLU-conv-GN-ReLU-conv-GN, `preact=True`; He et al. 2016b) at a
few depths: training error, test error, and the responses' std.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.studies import _depthnets as nets
from odenets import study as studies
from odenets._abstract import final
from odenets.analysis import gradient_flow

MLP_NETS = (("plain", False), ("resnet", False))
CONV_NETS = (("plain", False), ("resnet", False), ("resnet", True))


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depths: tuple[int, ...] = (8, 20, 56)  # Part 1 and 2 (MLP fields)
    width: int = 32
    epochs: int = 20
    lr: float = 3e-3
    n_train: int | None = None  # the first n training signals (None: all 4000)
    conv_depths: tuple[int, ...] = (8, 20)  # Part 3; () skips it
    conv_width: int = 8
    conv_epochs: int = 6
    conv_n_train: int | None = None
    conv_lr: float = 1e-2
    probe: int = 512  # training signals on which the responses are measured (0: not measured)
    evaluate: bool = True  # the test error too (one more compiled program per net)


def label(family: str, preact: bool) -> str:
    return f"{family} (pre-act)" if preact else family


def run_net(family: str, preact: bool, depth: int, kind: str, width: int, epochs: int, n_train, lr: float,
            o: Options, seed: int):
    """(Net, per-layer response std (L,), NaN when o.probe = 0) after training."""
    net = nets.train(nets.overrides(family, depth, width, kind, preact), epochs=epochs, batch_size=128, lr=lr,
                     seed=seed, n_train=n_train, evaluate=o.evaluate)
    if not o.probe:
        return net, np.full(depth, np.nan)
    x, y = nets.probe_batch(net.setup, o.probe)
    flow = gradient_flow(net.model, x, y)
    return net, flow.response_std[:-1]


@final
@studies.study.register("degradation")
class Degradation(studies.Study):
    title = "Degradation: deeper plain nets train worse, deeper residual nets better (He et al. 2016)"
    claim = ("He et al. (2016, 'Deep residual learning for image recognition', CVPR; Fig. 1, 4 and 6 on "
             "CIFAR-10 and ImageNet): a deeper plain net has HIGHER training error than a shallower one (20 vs 56 "
             "layers), which is not overfitting; the same nets with identity shortcuts reverse this (56 layers "
             "train better than 20); the residual responses F(x) are small and shrink as depth grows (their "
             "Fig. 7). Pre-activation blocks (He et al. 2016, 'Identity mappings in deep residual networks') "
             "train more easily still.")
    sizes = {
        "smoke": Options(depths=(32,), width=16, epochs=3, n_train=2048, conv_depths=(), probe=0, evaluate=False),
        "full": Options(),
    }
    smoke_expect = ("residual_beats_plain_deep",)

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        report.setup(
            "The literature: He et al. (2016a) trained plain and residual nets of 20, 32, 44, 56 and 110 layers "
            "(3x3 convolutions with batch norm) on CIFAR-10 with SGD: the plain nets' training error rose with "
            "depth while the ResNets' fell; std of the responses of each 3x3 layer (after BN, before the "
            "addition) was smaller for ResNets and decreased with depth (Fig. 7). He et al. (2016b) moved the "
            "norm and activation before the convolutions (pre-activation) and found deep nets easier to optimise.")
        report.setup(
            f"What we run: MNIST-1D (4000 training signals{'' if o.n_train is None else f', first {o.n_train}'}), "
            f"one stage of L layers, h = 1. Part 1: MLP fields of width {o.width} (tanh, no norm) at depths "
            f"{list(o.depths)}, plain vs resnet, {o.epochs} epochs of Adam (lr {o.lr}, cosine, clip 1, batch "
            f"128, odenets' own train step). Part 2: std of F_l(x_l) per layer on {o.probe} training signals. "
            f"Part 3: conv fields with GroupNorm of width {o.conv_width} at depths {list(o.conv_depths)}, plain, "
            f"resnet (post-activation) and resnet (pre-activation), {o.conv_epochs} epochs on "
            f"{o.conv_n_train or 4000} signals, lr {o.conv_lr}. Training error: the running error over the last "
            "epoch's batches.")

        results, responses = {}, {}
        parts = [("mlp", o.depths, o.width, o.epochs, o.n_train, o.lr, MLP_NETS)]
        if o.conv_depths:
            parts.append(("conv1d", o.conv_depths, o.conv_width, o.conv_epochs, o.conv_n_train, o.conv_lr,
                          CONV_NETS))
        rows = []
        for kind, depths, width, epochs, n_train, lr, kinds in parts:
            for depth in depths:
                for family, preact in kinds:
                    net, std = run_net(family, preact, depth, kind, width, epochs, n_train, lr, o, report.seed)
                    key = (kind, label(family, preact), depth)
                    results[key], responses[key] = net, std
                    rows.append([kind, label(family, preact), depth, net.train_error, net.test_error,
                                 net.losses[-1], float(np.mean(std)) if o.probe else None, net.seconds])
        report.table("errors", ["fields", "net", "depth L", "train error", "test error", "last epoch loss",
                                "mean response std", "seconds"], rows,
                     "Training and test error after training, by depth (response std: mean over layers of "
                     "std F_l)")

        # training curves and errors against depth
        fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
        for ax, (kind, depths, *_rest, kinds) in zip(axes[0], parts):
            for family, preact in kinds:
                name = label(family, preact)
                runs = [results[kind, name, d] for d in depths]
                ax.plot(depths, [r.train_error for r in runs], "o-", label=f"{name}, train")
                if o.evaluate:
                    ax.plot(depths, [r.test_error for r in runs], "x:", label=f"{name}, test")
            ax.set_xlabel("depth L")
            ax.set_ylabel("error")
            ax.set_title(f"{kind} fields")
            ax.legend(fontsize=8)
        report.figure("errors_vs_depth", fig, "Training (and test) error against depth, plain vs residual")

        fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
        for ax, (kind, depths, *_rest, kinds) in zip(axes[0], parts):
            for family, preact in kinds:
                name = label(family, preact)
                for d in depths:
                    ax.plot(np.arange(1, len(results[kind, name, d].losses) + 1), results[kind, name, d].losses,
                            label=f"{name}, L = {d}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss (epoch mean)")
            ax.set_title(f"{kind} fields")
            ax.legend(fontsize=7)
        report.figure("training_curves", fig, "Training loss per epoch")

        # He et al. Fig. 7: response std per layer, and sorted by magnitude
        if o.probe:
            self.plot_responses(responses, report, plt)

        # findings
        deep, shallow = max(o.depths), min(o.depths)
        err = lambda name, d, kind="mlp": results[kind, name, d].train_error
        self.depth_findings(report, err, o.depths, "MLP fields",
                            "residual_beats_plain_deep", "plain_degrades")
        if len(o.depths) >= 2:
            report.finding("residual_improves", err("resnet", deep) <= err("resnet", shallow),
                           f"the residual net's training error falls (or holds) from L = {shallow} to L = {deep}.",
                           ", ".join(f"L = {d}: {err('resnet', d):.3f}" for d in o.depths) + ".")
        if len(o.depths) >= 2 and o.probe:
            mean_std = {d: float(np.nanmean(responses["mlp", "resnet", d])) for d in o.depths}
            report.finding("responses_shrink", mean_std[deep] < mean_std[shallow],
                           "the residual responses' std shrinks as depth grows (He et al. Fig. 7).",
                           ", ".join(f"L = {d}: mean std {mean_std[d]:.3g}" for d in o.depths) + ".")
        if o.probe:
            plain_std = float(np.nanmean(responses["mlp", "plain", deep]))
            res_std = float(np.nanmean(responses["mlp", "resnet", deep]))
            report.finding("residual_responses_smaller", res_std < plain_std,
                           "ResNets' responses are smaller than the plain net's (He et al. Fig. 7).",
                           f"at L = {deep}: mean std of F_l(x_l) plain {plain_std:.3g}, resnet {res_std:.3g}.")
        if o.conv_depths:
            cdeep = max(o.conv_depths)
            cerr = lambda name, d: err(name, d, "conv1d")
            self.depth_findings(report, cerr, o.conv_depths, "conv + GroupNorm fields",
                                "conv_residual_beats_plain", "conv_plain_degrades")
            pre, post = cerr("resnet (pre-act)", cdeep), cerr("resnet", cdeep)
            report.finding("preact_trains_better", pre <= post,
                           f"pre-activation blocks train at least as well as post-activation ones (L = {cdeep}).",
                           f"training error pre-activation {pre:.3f}, post-activation {post:.3f}.")
        for kind, depths, *_rest, kinds in parts:
            for family, preact in kinds:
                name = label(family, preact)
                trend = ", ".join(f"L = {d}: {results[kind, name, d].train_error:.3f}" for d in depths)
                report.note(f"{kind} {name}: training error by depth {trend}.")
        report.note("Training error is the running error over the last epoch's mini-batches (the parameters "
                    "change during the epoch), as in He et al.'s training curves; the test error is of the final "
                    "parameters.")

    @staticmethod
    def depth_findings(report: studies.Report, err, depths, fields: str, beats: str, degrades: str) -> None:
        """He et al.'s two claims for one kind of field, err(net, L) the training error: at the deepest L the
        residual net trains better than the plain net (`beats`); the plain net's error rises from the
        shallowest L to the deepest (`degrades`, with two depths or more)."""
        deep, shallow = max(depths), min(depths)
        report.finding(beats, err("resnet", deep) < err("plain", deep),
                       f"with {fields} at the deepest depth (L = {deep}) the residual net trains to a lower error "
                       "than the plain net with the same layers.",
                       f"training error plain {err('plain', deep):.3f}, resnet {err('resnet', deep):.3f}.")
        if len(depths) >= 2:
            report.finding(degrades, err("plain", deep) > err("plain", shallow),
                           f"with {fields} the plain net's training error rises from L = {shallow} to L = {deep}.",
                           ", ".join(f"L = {d}: {err('plain', d):.3f}" for d in depths) + ".")

    @staticmethod
    def plot_responses(responses: dict, report: studies.Report, plt) -> None:
        """He et al.'s Fig. 7: the std of F_l(x_l) per layer, and sorted by magnitude."""
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for (kind, name, d), std in responses.items():
            style = "-" if name.startswith("resnet") else ":"
            axes[0].plot(np.arange(len(std)), std, style, label=f"{kind} {name}, L = {d}")
            axes[1].plot(np.arange(len(std)), np.sort(std)[::-1], style, label=f"{kind} {name}, L = {d}")
        axes[0].set_xlabel("layer index l")
        axes[1].set_xlabel("layer index (sorted by magnitude)")
        for ax in axes:
            ax.set_ylabel("std of F_l(x_l)")
            ax.set_yscale("log")
        axes[1].legend(fontsize=7)
        report.figure("responses", fig, "Std of the layer responses F_l(x_l) after training (He et al. Fig. 7)")
