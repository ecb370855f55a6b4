"""ResNet vs DenseNet vs Highway as information transport, at equal depth on MNIST-1D.

Five classifiers of one stage of `depth` layers (MLP kind, `width` channels; `_depthnets`, trained in
memory by odenets' own train step):

    resnet          x_{l+1} = x_l + F_l(x_l)                         (identity skip)
    densenet        x_{l+1} = concat(x_l, H_l(x_l)), then a transition (Huang et al. 2017)
    highway         x_{l+1} = g_l F_l(x_l) + (1 - g_l) x_l, gate bias b = `gate_bias` (Srivastava et al.)
    highway_closed  the same with b = `closed_bias` (g_l near 1 from the start: the carry path closed)
    plain           x_{l+1} = F_l(x_l)                               (no skip: the reference)

Measured on each:
- the shortest gradient path from the loss to layer l, from the model's layer graph
  (`odenets.analysis.shortest_paths`): the fewest edges (hops; ResNet L - l, DenseNet 1) and the fewest
  parametrised layers on any path (transforms; 0 through an identity or a concatenation, L - l for the
  plain net);
- the mean per-sample |dL/dx_l| at every layer (`gradient_flow`) at initialisation and after training,
  as the ratio to the stage output's |dL/dx_L|: how much of the gradient reaches the early layers;
- the test error and the parameter count;
- the highway nets' transform gates g_l per layer (`highway_gates`) at initialisation and after
  training, and the carry path's product prod_l (1 - g_l), the identity's share of the gradient;
- (full size) the gradient reaching x_0 at initialisation for a sweep of gate biases.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import gradient_flow, highway_gates, shortest_paths
from odenets.models import build

NETS = ("resnet", "densenet", "highway", "highway_closed", "plain")
HIGHWAYS = ("highway", "highway_closed")
COLOURS = {"resnet": "C0", "densenet": "C2", "highway": "C1", "highway_closed": "C3", "plain": "C7"}


@final
@dataclasses.dataclass(frozen=True)
class Options:
    data: tuple[str, ...] = ("data=mnist1d",)  # the data group's overrides
    depth: int = 16  # layers of every net (one stage)
    width: int = 32  # channels (DenseNet: the stage's input and output; growth = width // 2 per layer)
    gate_bias: float = -1.0  # the highway net's initial gate bias (the family default; g ~ sigmoid(b))
    closed_bias: float = 4.0  # highway_closed: the gates start near sigmoid(4) = 0.98 (the carry path closed)
    epochs: int = 20  # 0: initialisation only (no training, no test error)
    batch_size: int = 128
    lr: float = 3e-3
    n_train: int | None = None  # the first n training signals (None: all)
    probe: int = 256  # training signals on which gradients and gates are measured
    bias_sweep: tuple[float, ...] = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)  # highway gate biases at init
    nets: tuple[str, ...] = NETS  # the nets whose gradients are measured and which are trained (the layer
    # graphs and parameter counts are of all five); resnet and highway_closed always

    def __post_init__(self):
        for key in ("depth", "width", "batch_size", "probe"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.epochs", self.epochs, 0)
        validate.optional(validate.integer, "study.n_train", self.n_train, 1)
        validate.number("study.lr", self.lr, low=0.0)
        for key in ("gate_bias", "closed_bias"):
            validate.number(f"study.{key}", getattr(self, key))
        for b in self.bias_sweep:
            validate.number("study.bias_sweep", b)
        for net in self.nets:
            validate.choice("study.nets", net, NETS)
        for net in ("resnet", "highway_closed"):
            if net not in self.nets:
                raise ValueError(f"study.nets must hold {net!r} (the findings compare with it), got {self.nets}")


def model_overrides(net: str, o: Options, gate_bias: float | None = None) -> list[str]:
    """The model group of a compared net (one stage of `depth` MLP layers of `width` channels)."""
    family = "highway" if net in HIGHWAYS else net
    over = nets_.overrides(family, o.depth, o.width, "mlp")
    if family == "highway":
        bias = gate_bias if gate_bias is not None else (o.closed_bias if net == "highway_closed" else o.gate_bias)
        over.append(f"model.gate_bias={bias}")
    return over


def train(net: str, o: Options, seed: int, epochs: int, gate_bias: float | None = None) -> nets_.Net:
    return nets_.train(model_overrides(net, o, gate_bias), epochs=epochs, batch_size=o.batch_size, lr=o.lr,
                       seed=seed, n_train=o.n_train, data=o.data)


def structure(net: str, o: Options, data):
    """The classifier of a compared net as shapes only (`nnx.eval_shape`, no parameter drawn): the same
    family options as `model_overrides`, for its layer graph and its parameter count."""
    family = "highway" if net in HIGHWAYS else net
    extra = {"gate_bias": o.closed_bias if net == "highway_closed" else o.gate_bias} if family == "highway" else {}
    return nnx.eval_shape(lambda: build(family, input_shape=data.input_shape, num_classes=data.output_dim,
                                        width=o.width, depth=o.depth, kind="mlp", **extra))


def parameters(model) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def reach(flow) -> np.ndarray:
    """(L + 1,) mean |dL/dx_l| / mean |dL/dx_L|: the share of the output's gradient that reaches layer l."""
    norms = flow.mean_norm
    return norms / norms[-1]


def per_layer_factor(flow) -> float:
    """(|dL/dx_0| / |dL/dx_L|)^(1/L): the geometric-mean factor by which the gradient changes per layer."""
    r = reach(flow)
    return float(r[0] ** (1.0 / (len(r) - 1)))


def spread(flow) -> float:
    """max_l / min_l of mean |dL/dx_l|: 1 for a profile that does not depend on the layer."""
    norms = flow.mean_norm
    return float(norms.max() / norms.min())


def sigmoid(b: float) -> float:
    return float(1.0 / (1.0 + np.exp(-b)))


@final
@studies.study.register("topology")
class Topology(studies.Study):
    title = "Topology: ResNet vs DenseNet vs Highway as information transport at equal depth"
    claim = (
        "Skip connections shorten the path the gradient travels: in a ResNet (He et al. 2016) layer l is L - l "
        "additions from the loss but every step of that path is an identity, in a DenseNet (Huang et al. 2017, "
        "'Densely connected convolutional networks', CVPR) every layer's features reach the transition directly "
        "(one hop), which Huang et al. credit for 'implicit deep supervision' and strong gradient flow; a highway "
        "net (Srivastava, Greff & Schmidhuber 2015, 'Training very deep networks', NeurIPS) gates its skip, "
        "x_{l+1} = g F(x_l) + (1 - g) x_l, and with the gates closed (g = 1) it is a plain net whose gradient "
        "vanishes with depth."
    )
    sizes = {
        "smoke": Options(depth=8, width=8, epochs=0, probe=64, bias_sweep=(), nets=("resnet", "highway_closed")),
        "full": Options(),
    }
    smoke_expect = ("graph_paths", "residual_reaches_early_layers", "closed_highway_vanishes",
                    "closed_gates_near_one")

    def run(self, options: Options, report: studies.Report) -> None:
        o, seed = options, report.seed
        measured = [net for net in NETS if net in o.nets]
        init = {net: train(net, o, seed, 0) for net in measured}
        trained = {net: train(net, o, seed, o.epochs) for net in measured} if o.epochs else {}
        data = init["resnet"].data
        x, y = nets_.probe_batch(init["resnet"].setup, o.probe)
        chance = 1.0 / data.output_dim
        report.setup(
            "The literature: He et al. (2016, 'Identity mappings in deep residual networks', ECCV): a ResNet's "
            "dL/dx_l = dL/dx_L (I + d/dx_l sum_k F_k), so the gradient of the output reaches every layer through "
            "the identity. Huang et al. (2017, CVPR, DenseNet on CIFAR/SVHN/ImageNet): each layer has a direct "
            "connection to the loss through the concatenation, so the shortest path is one layer. Srivastava et "
            "al. (2015, NeurIPS, highway nets of up to 100 layers on MNIST/CIFAR): the transform gate "
            "g = sigmoid(W x + b), b initialised negative (-1 to -3) so that layers start by carrying x through; "
            "plain nets of the same depth trained far worse, and they show the learned gates per layer (their "
            "Fig. 2): selective, data-dependent, many layers mostly carrying.")
        report.setup(
            f"What we run: {data.output_dim}-class MNIST-1D ({len(data.x_train)} training / {len(data.x_test)} "
            f"test signals, chance {chance:.2f}), five classifiers of one stage of {o.depth} layers, MLP kind, "
            f"width {o.width} (`odenets` families resnet, densenet (growth {max(1, o.width // 2)} per layer, a "
            f"1x1 transition back to {o.width}), highway (gate bias {o.gate_bias}, g ~ {sigmoid(o.gate_bias):.2f} "
            f"at the start), highway_closed (gate bias {o.closed_bias}, g ~ {sigmoid(o.closed_bias):.3f}: the "
            "carry path nearly closed) and plain, each with the family's default layer (tanh MLP fields; "
            "DenseNet: linear-GroupNorm-ReLU units), initial parameters drawn by numpy from the initialisers' "
            f"distributions with seed {seed}). "
            + (f"Trained {o.epochs} epochs (batch {o.batch_size}, lr {o.lr}, the default optimiser) by odenets' "
               "own train step. " if o.epochs else "Initialisation only (no training at this size). ")
            + f"Gradients |dL/dx_l| (per-sample cross-entropy) and gates on {o.probe} training signals with "
            "`odenets.analysis.gradient_flow` and `highway_gates`; shortest paths from the models' layer graphs "
            "(`shortest_paths`). A DenseNet's state x_l is the concatenation of the input and the l maps so far "
            "(its width grows), so its |dL/dx_l| is of a wider vector than the others'.")

        shapes = {net: structure(net, o, data) for net in NETS}
        paths = {net: shortest_paths(shapes[net]) for net in NETS}
        params = {net: parameters(shapes[net]) for net in NETS}
        assert all(params[net] == init[net].setup.n_params for net in measured)
        flows0 = {net: gradient_flow(init[net].model, x, y) for net in measured}
        flows1 = {net: gradient_flow(trained[net].model, x, y) for net in trained}
        gates0 = {net: highway_gates(init[net].model, x) for net in HIGHWAYS if net in measured}
        gates1 = {net: highway_gates(trained[net].model, x) for net in HIGHWAYS if net in trained}

        self._summary(report, o, params, trained, paths, flows0, flows1, gates0, gates1, chance)
        self._per_layer(report, o, paths, flows0, flows1, gates0, gates1)
        sweep = self._sweep(report, o, seed, x, y) if o.bias_sweep else None
        self._figures(report, o, paths, flows0, flows1, gates0, gates1, sweep)
        self._findings(report, o, paths, flows0, flows1, gates0, gates1, trained, chance)

    # -- tables --

    @staticmethod
    def _summary(report, o, params, trained, paths, flows0, flows1, gates0, gates1, chance):
        rows = []
        for net in NETS:
            p = paths[net]
            t = trained.get(net)
            gate0 = float(gates0[net].mean.mean()) if net in gates0 else None
            gate1 = float(gates1[net].mean.mean()) if net in gates1 else None
            rows.append([net, params[net], int(p.hops[0]), int(p.transforms[0]),
                         float(reach(flows0[net])[0]) if net in flows0 else None,
                         float(reach(flows1[net])[0]) if net in flows1 else None,
                         t.train_error if t else None, t.test_error if t else None, gate0, gate1])
        report.table("summary", ["net", "parameters", "hops loss -> x_0", "transforms loss -> x_0",
                                 "|dL/dx_0| / |dL/dx_L| init", "... trained", "train error", "test error",
                                 "mean gate init", "mean gate trained"], rows,
                     f"{o.depth} layers each: shortest paths, the gradient reaching the stage's input, errors "
                     f"(chance {1 - chance:.2f}), highway gates")

    @staticmethod
    def _per_layer(report, o, paths, flows0, flows1, gates0, gates1):
        rows = [[net, int(paths[net].hops.min()), int(paths[net].hops.max()), int(paths[net].transforms.max()),
                 per_layer_factor(flows0[net]), spread(flows0[net]),
                 per_layer_factor(flows1[net]) if net in flows1 else None,
                 spread(flows1[net]) if net in flows1 else None] for net in flows0]
        report.table("path_check", ["net", "min hops", "max hops", "max transforms", "per-layer factor init",
                                    "spread init", "per-layer factor trained", "spread trained"], rows,
                     "The graph's shortest paths beside the measured profile: (|dL/dx_0| / |dL/dx_L|)^(1/L) and "
                     "max_l / min_l of |dL/dx_l| (1: the same gradient at every layer)")
        cols, rows = ["layer l"], []
        for net in flows0:
            cols += [f"{net} hops", f"{net} reach init"] + ([f"{net} reach trained"] if net in flows1 else [])
        for layer in range(o.depth + 1):
            row = [layer]
            for net in flows0:
                row += [int(paths[net].hops[layer]), float(reach(flows0[net])[layer])]
                if net in flows1:
                    row.append(float(reach(flows1[net])[layer]))
            rows.append(row)
        report.table("per_layer", cols, rows, "Per layer: the shortest path's hops from the loss and "
                     "mean |dL/dx_l| / mean |dL/dx_L| (reach)")
        cols = ["layer l"] + [f"{net} g {when}" for net in gates0 for when in ("init", "trained")
                              if when == "init" or net in gates1]
        rows = []
        for layer in range(o.depth):
            row = [layer]
            for net in gates0:
                row.append(float(gates0[net].mean[layer]))
                if net in gates1:
                    row.append(float(gates1[net].mean[layer]))
            rows.append(row)
        report.table("gates", cols, rows, "The highway nets' mean transform gate g_l per layer "
                     "(0: carry x_l through, 1: the plain layer F_l)")

    @staticmethod
    def _sweep(report, o, seed, x, y):
        rows = []
        for b in o.bias_sweep:
            net = train("highway", o, seed, 0, gate_bias=b)
            flow, gates = gradient_flow(net.model, x, y), highway_gates(net.model, x)
            rows.append([b, sigmoid(b), float(gates.mean.mean()), float(gates.carry[-1]), float(reach(flow)[0])])
        report.table("bias_sweep", ["gate bias b", "sigmoid(b)", "mean gate", "carry prod (1 - g_l)",
                                    "|dL/dx_0| / |dL/dx_L|"], rows,
                     f"Highway nets of {o.depth} layers at initialisation, by gate bias")
        rows = np.asarray(rows, float)
        low = int(np.argmin(rows[:, 4]))
        report.note(
            f"Highway nets at initialisation, by gate bias (table bias_sweep): the gradient reaching x_0 is "
            f"{rows[0, 4]:.3g} of the output's at b = {rows[0, 0]:g} (g ~ {rows[0, 2]:.2f}: nearly the identity), "
            f"falls to {rows[low, 4]:.3g} at b = {rows[low, 0]:g} (g ~ {rows[low, 2]:.2f}) and rises again to "
            f"{rows[-1, 4]:.3g} at b = {rows[-1, 0]:g} (g ~ {rows[-1, 2]:.2f}: the plain layers). A layer's "
            "Jacobian (1 - g) I + g dF/dx + (F - x) dg/dx mixes a shrunk identity with a shrunk transform, and "
            "with both halves open its norm falls below either one's. The carry path alone, prod (1 - g_l), "
            "is the measured share while the gates are nearly open to the identity and far below it otherwise.")
        return rows

    # -- figures --

    @staticmethod
    def _figures(report, o, paths, flows0, flows1, gates0, gates1, sweep):
        import matplotlib.pyplot as plt

        panels = [("initialisation", flows0)] + ([("after training", flows1)] if flows1 else [])
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.5 * (len(panels) + 1), 4))
        layers = np.arange(o.depth + 1)
        for ax, (title, flows) in zip(axes, panels):
            for net in flows:
                ax.semilogy(layers, reach(flows[net]), "o-", ms=3, color=COLOURS[net], label=net)
            ax.axhline(1.0, color="k", lw=0.8, ls=":")
            ax.set_xlabel("layer l (0: the stage's input)")
            ax.set_ylabel("mean |dL/dx_l| / mean |dL/dx_L|")
            ax.set_title(f"gradient reaching layer l, {title}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        ax = axes[-1]
        for key, style, colours in (("hops", "o-", ("C0", "C2", "C4")), ("transforms", "x--", ("C1", "C3", "C5"))):
            groups: dict[tuple, list[str]] = {}  # nets with the same shortest paths share one line
            for net in NETS:
                groups.setdefault(tuple(getattr(paths[net], key)), []).append(net)
            for (values, names), colour in zip(groups.items(), colours):
                ax.plot(layers, values, style, ms=4, color=colour, label=f"{key}: {', '.join(names)}")
        ax.set_xlabel("layer l")
        ax.set_ylabel("shortest path from the loss")
        ax.set_title("layer graph: hops (solid), parametrised layers (dashed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
        fig.tight_layout()
        report.figure("gradient_reach", fig, f"The gradient reaching each layer of {o.depth}-layer nets (left: "
                      "ratio to the output's) and the shortest gradient path from the loss (right)")

        fig, axes = plt.subplots(1, 2 if sweep is not None else 1, figsize=(11 if sweep is not None else 5.5, 4),
                                 squeeze=False)
        ax = axes[0, 0]
        for net in gates0:
            ax.plot(np.arange(o.depth), gates0[net].mean, "o--", ms=3, color=COLOURS[net], label=f"{net}: init")
            if net in gates1:
                ax.plot(np.arange(o.depth), gates1[net].mean, "o-", ms=3, color=COLOURS[net],
                        label=f"{net}: trained")
        ax.set_ylim(0, 1)
        ax.set_xlabel("layer l")
        ax.set_ylabel("mean transform gate g_l")
        ax.set_title("highway gates (0: carry, 1: transform)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        if sweep is not None:
            ax = axes[0, 1]
            ax.semilogy(sweep[:, 0], sweep[:, 4], "o-", label="measured |dL/dx_0| / |dL/dx_L|")
            ax.semilogy(sweep[:, 0], sweep[:, 3], "s--", label="carry path prod (1 - g_l)")
            ax.set_xlabel("gate bias b at initialisation")
            ax.set_ylabel("share of the gradient at x_0")
            ax.set_title(f"highway, {o.depth} layers, at initialisation")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        report.figure("highway_gates", fig, "Highway gates per layer" + (" and the gradient at x_0 by gate bias"
                                                                          if sweep is not None else ""))

    # -- findings --

    @staticmethod
    def _findings(report, o, paths, flows0, flows1, gates0, gates1, trained, chance):
        L = o.depth
        layers = np.arange(L + 1)
        res, dense = paths["resnet"], paths["densenet"]
        ok = (np.array_equal(res.hops, L - layers) and np.array_equal(dense.hops, np.ones(L + 1))
              and np.array_equal(paths["plain"].transforms, L - layers) and not res.transforms.any()
              and not dense.transforms.any())
        report.finding("graph_paths", ok, "shortest gradient path from the loss to layer l: ResNet L - l hops, "
                       "DenseNet 1, all through identities (0 parametrised layers); plain net L - l transforms",
                       f"resnet hops {res.hops.tolist()}, densenet hops {dense.hops.tolist()}, plain transforms "
                       f"{paths['plain'].transforms.tolist()}")
        r0 = {net: float(reach(flows0[net])[0]) for net in flows0}
        report.finding("residual_reaches_early_layers", r0["resnet"] > 0.5 and r0.get("densenet", 1.0) > 0.5
                       and r0["resnet"] > 10 * r0.get("plain", 0.0),
                       "at initialisation the gradient reaches the first layer of the ResNet"
                       + (" and the DenseNet" if "densenet" in r0 else "")
                       + " (paths with no parametrised layer) undiminished (at least half the output's)"
                       + (", and of the plain net diminished" if "plain" in r0 else ""),
                       "|dL/dx_0| / |dL/dx_L|: " + ", ".join(f"{n} {v:.3g}" for n, v in r0.items()))
        report.finding("closed_highway_vanishes", r0["highway_closed"] < 0.1 * r0["resnet"]
                       and r0["highway_closed"] < 1.0,
                       "a highway net with its gates closed (g -> 1) is a plain net: its gradient at x_0 vanishes "
                       "(far below the ResNet's)", ", ".join(f"{n} {v:.3g}" for n, v in r0.items()))
        if "densenet" in flows0:
            sp = {net: spread(flows0[net]) for net in flows0}
            report.finding("dense_profile_flat", sp["densenet"] < 1.5 and sp["densenet"] < sp["resnet"],
                           "every DenseNet layer is one hop from the loss, so its gradient does not depend on the "
                           "layer's depth (max_l / min_l of |dL/dx_l| near 1), unlike the chains' (L - l hops)",
                           "spread at initialisation: " + ", ".join(f"{n} {v:.3g}" for n, v in sp.items()))
            report.note(
                f"The ResNet's gradient grows toward its input ({r0['resnet']:.3g} times the output's at x_0, a "
                f"factor {per_layer_factor(flows0['resnet']):.3f} per layer at initialisation): prod (I + J_l) "
                "keeps the identity path, and here the other paths add to it. The DenseNet's is flat "
                f"({r0['densenet']:.3g} at x_0), as its one-hop graph predicts. The ResNet, highway and plain "
                "chains all put layer l L - l hops from the loss, yet their profiles differ by orders of "
                "magnitude: what sets the profile is what the shortest path passes through (identities, gates, "
                "parametrised layers), not its length alone.")
        g0 = float(gates0["highway_closed"].mean.mean())
        report.finding("closed_gates_near_one", g0 > 0.9, f"gate bias {o.closed_bias} starts the gates near "
                       f"sigmoid({o.closed_bias}) = {sigmoid(o.closed_bias):.3f}",
                       f"mean g at initialisation {g0:.3f} (layers {gates0['highway_closed'].mean.min():.3f} to "
                       f"{gates0['highway_closed'].mean.max():.3f})")
        if "highway" not in gates0:
            return
        carry = float(gates0["highway"].carry[-1])
        report.finding("highway_carry_is_not_identity", r0["highway"] < 0.5 * r0["resnet"],
                       "a highway layer's carry is (1 - g) x, not x: at initialisation (g ~ sigmoid(b)) its "
                       "gradient through the carry path alone shrinks as prod (1 - g_l), unlike the ResNet's",
                       f"highway (b = {o.gate_bias}): carry product {carry:.3g}, measured |dL/dx_0| / |dL/dx_L| "
                       f"{r0['highway']:.3g} (resnet {r0['resnet']:.3g})")
        if set(trained) != set(NETS):
            return
        err = {net: trained[net].test_error for net in NETS}
        report.finding("skips_beat_plain", min(err["resnet"], err["densenet"], err["highway"]) < err["plain"],
                       "at equal depth the nets with skips train better than the plain net (test error)",
                       ", ".join(f"{n} {v:.3f}" for n, v in err.items()))
        report.finding("closed_highway_like_plain", abs(err["highway_closed"] - err["plain"])
                       < abs(err["highway_closed"] - err["resnet"]),
                       "the closed highway net behaves like the plain net (its test error nearer the plain net's "
                       "than the ResNet's)", ", ".join(f"{n} {err[n]:.3f}" for n in ("highway_closed", "plain",
                                                                                     "resnet")))
        if "highway_closed" in gates1:
            g1 = gates1["highway_closed"].mean
            report.note(f"The closed highway net's gates after training: mean {g1.mean():.3f} (layers "
                        f"{g1.min():.3f} to {g1.max():.3f}); the default highway net's: mean "
                        f"{gates1['highway'].mean.mean():.3f} (layers {gates1['highway'].mean.min():.3f} to "
                        f"{gates1['highway'].mean.max():.3f}).")
        r1 = {net: float(reach(flows1[net])[0]) for net in NETS}
        report.note("After training, |dL/dx_0| / |dL/dx_L|: " + ", ".join(f"{n} {v:.3g}" for n, v in r1.items())
                    + ".")
