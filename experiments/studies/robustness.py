"""Lipschitz bounds and adversarial robustness: plain net vs ResNet vs ODE-Net (and an ODE-Net with smaller h).

Nets on MNIST-1D, one stage of MLP fields of one width, trained in memory by odenets' train step
(`_depthnets.train`):

    plain       x_{k+1} = F_k(x_k), L layers
    resnet      x_{k+1} = x_k + F_k(x_k), L blocks (Euler, h = 1, per-step weights)
    node        dx/dt = F(t, x), one shared field, RK4 with `node_steps` steps on [0, 1] (h = 1 / steps)
    node_fine   the same ODE-Net with `fine_steps` steps (a smaller h)
    node_decay  the ODE-Net of `node_steps` steps trained with decoupled weight decay `decay` (AdamW): a norm
                penalty, which bounds Lip(F) <= prod_i |W_i|_2 (tanh is 1-Lipschitz) only indirectly

Measured on the test set:

    per-step Lipschitz  `analysis.block_lipschitz`: Lip(F_k) by power iteration (max over a probe batch),
                        the step bound 1 + h Lip(F_k), the step map's own norm, the product of the bounds
                        prod_k (1 + h Lip(F_k)) (an estimate of the stage's Lipschitz bound)
    stage norm          |dx_N / dx_0|_2 at the probe inputs (`analysis.spectral_norm` of the stage map),
                        which the product bounds from above
    network norm        |d logits / d input|_2 at the probe inputs (every net, the plain one too)
    attacks             accuracy under FGSM and PGD (`analysis.attack_accuracy`, L_inf, `pgd_steps` steps of
                        2.5 eps / steps) at growing eps

The per-step bound 1 + h Lip(F) is Euler's; an RK4 step's own norm is at most
1 + hL + (hL)^2 / 2 + (hL)^3 / 6 + (hL)^4 / 24 <= exp(hL), so for the ODE-Nets the product is an
estimate to first order in h.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import attack_accuracy, block_lipschitz, spectral_norm
from odenets.analysis.attacks import ATTACKS
from odenets.analysis.steps import ode_stages

NETS = ("plain", "resnet", "node", "node_fine", "node_decay")
COLOURS = {net: f"C{i}" for i, net in enumerate(NETS)}  # one colour per net in every panel
ODE_NETS = ("resnet", "node", "node_fine", "node_decay")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    data: tuple[str, ...] = ("data=mnist1d",)  # `odenets run` overrides of the data group
    nets: tuple[str, ...] = NETS
    width: int = 32
    depth: int = 4  # L, the layers of plain and resnet
    node_steps: int = 4  # the ODE-Net's RK4 steps on [0, 1]
    fine_steps: int = 16  # node_fine's
    decay: float = 0.5  # node_decay's weight decay (AdamW, decoupled: each step scales weights by 1 - lr decay)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    n_train: int | None = None  # the first n_train training signals (None: all)
    eps: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)  # L_inf radii (the signals have std ~1)
    pgd_steps: int = 10
    n_test: int = 1000  # test signals attacked
    probe: int = 256  # test signals at which the Lipschitz estimates are taken
    iters: int = 50  # power iterations

    def __post_init__(self):
        for net in self.nets:
            validate.choice("study.nets", net, NETS)
        if "resnet" not in self.nets:
            raise ValueError(f"study.nets must hold resnet (the net the others are compared with), got "
                             f"{self.nets!r}")
        for key in ("width", "depth", "node_steps", "fine_steps", "epochs", "batch_size", "pgd_steps", "n_test",
                    "probe", "iters"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.number("study.lr", self.lr, low=0.0)
        if self.n_train is not None:
            validate.integer("study.n_train", self.n_train, 1)
        if len(self.eps) < 2 or self.eps[0] != 0.0:
            raise ValueError(f"study.eps must start at 0 (the clean accuracy) and hold a radius > 0, got "
                             f"{self.eps}")
        for e in self.eps:
            validate.number("study.eps", e, low=0.0, open_low=False)


def model_overrides(net: str, options: Options) -> list[str]:
    """The model group of a compared net (one stage of MLP fields of `width`)."""
    common = ["model.kind=mlp", f"model.width={options.width}", "model.stages=1"]
    if net in ("plain", "resnet"):
        return [f"model={net}", *common, f"model.depth={options.depth}"]
    steps = options.fine_steps if net == "node_fine" else options.node_steps
    decay = [f"optim.weight_decay={options.decay}"] if net == "node_decay" else []
    return ["model=node", *common, f"model.depth={steps}", *decay]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _norms(graphdef, state, x, iters: int):
    return spectral_norm(lambda z: nnx.merge(graphdef, state, copy=True)(z), x, batched=True, iters=iters)


def network_norm(model, x, iters: int) -> np.ndarray:
    """|d logits / d input|_2 at each input of x (power iteration on the whole net, one compiled program)."""
    graphdef, state = nnx.split(model)
    return np.asarray(_norms(graphdef, state, x, iters))


def stage_norm(model, x, iters: int) -> float:
    """max over x of |dx_N / dx_0|_2 of the (single) ODE stage, at the stage inputs x produces."""
    ((_, block, x_in),) = list(ode_stages(model, jax.numpy.asarray(x)))
    graphdef, state = nnx.split(block)
    return float(np.max(_norms(graphdef, state, x_in, iters)))


@final
@studies.study.register("robustness")
class Robustness(studies.Study):
    title = "Lipschitz bounds and adversarial robustness: plain vs ResNet vs ODE-Net"
    claim = (
        "Residual blocks x + h F(x) have Lipschitz constant at most 1 + h Lip(F), a stack of them at most the "
        "product (e.g. Gouk et al. 2021, 'Regularisation of neural networks by enforcing Lipschitz continuity'; "
        "Tsuzuku et al. 2018): a small step h with a bounded field gives a bounded network. Yan et al. (2020, "
        "'On robustness of neural ordinary differential equations', ICLR) report ODE-Nets more robust than "
        "CNNs/ResNets of similar size under random and FGSM/PGD perturbations on MNIST, SVHN and ImageNet "
        "subsets, attributing it to the non-intersecting ODE flow; Carrara et al. (2019) find the ODE-Net's "
        "robustness grows with the solver tolerance (a coarser solve), and later work (Huang et al. 2022, "
        "Carlini-style adaptive attacks) finds much of that robustness is gradient obfuscation."
    )
    sizes = {
        "smoke": Options(nets=("resnet",), width=16, depth=3, epochs=6, lr=1e-2,
                         eps=(0.0, 0.1, 0.3), pgd_steps=5, n_test=500, probe=64, iters=20),
        "full": Options(),
    }
    smoke_expect = ("accuracy_falls_with_eps", "pgd_at_most_fgsm", "resnet_bound_holds")

    def run(self, options: Options, report: studies.Report) -> None:
        o = options
        nets = {net: nets_.train(model_overrides(net, o), epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                                 seed=report.seed, n_train=o.n_train, evaluate=False, data=o.data)
                for net in o.nets}
        data = next(iter(nets.values())).data
        x, y = np.asarray(data.x_test[:o.n_test]), np.asarray(data.y_test[:o.n_test])
        probe = x[:o.probe]
        report.setup(
            f"Data: {' '.join(o.data)} ({len(data.x_train) if o.n_train is None else o.n_train} train signals; "
            f"{len(x)} test signals attacked, std {float(np.std(x)):.2f}, {data.output_dim} classes). Nets "
            f"{', '.join(o.nets)}: one stage of MLP fields of width {o.width}; plain and resnet {o.depth} layers "
            f"(resnet: Euler, h = 1), node an ODE-Net with one shared field on [0, 1], RK4, {o.node_steps} steps "
            f"(h = 1/{o.node_steps}), node_fine the same with {o.fine_steps} steps (h = 1/{o.fine_steps}), "
            f"node_decay the node trained with weight decay {o.decay} (AdamW). Each "
            f"trained in memory by odenets' train step ({o.epochs} epochs, batch {o.batch_size}, lr {o.lr}). "
            f"Lipschitz estimates by {o.iters} power iterations at {o.probe} test signals; FGSM and PGD "
            f"({o.pgd_steps} steps of 2.5 eps / {o.pgd_steps}, no random start) at eps {list(o.eps)}. No net is "
            "trained with a Lipschitz penalty proper (odenets' train step has no such term): the smaller-h "
            "ODE-Net and the weight-decayed one are the variants."
        )
        acc = {a: {net: [attack_accuracy(t.model, x, y, e, attack=a, **({"steps": o.pgd_steps} if a == "pgd"
                                                                         else {})) for e in o.eps]
                       for net, t in nets.items()} for a in ATTACKS}
        norms = {net: network_norm(t.model, probe, o.iters) for net, t in nets.items()}
        lips = {net: block_lipschitz(nets[net].model, probe, iters=o.iters)[0] for net in ODE_NETS if net in nets}
        stage = {net: stage_norm(nets[net].model, probe, o.iters) for net in lips}
        for a in ATTACKS:
            report.table(f"{a}_accuracy", ["eps", *nets],
                         [[e, *[acc[a][net][i] for net in nets]] for i, e in enumerate(o.eps)],
                         caption=f"Test accuracy under {a.upper()} (L_inf radius eps)")
        report.table("lipschitz", ["net", "h", "steps", "mean Lip(F_k)", "max Lip(F_k)", "max step norm",
                                   "product of bounds", "stage norm (max)", "network norm mean",
                                   "network norm max"],
                     [[net, lips[net].h if net in lips else "-", len(lips[net].field) if net in lips else o.depth,
                       *([float(np.mean(lips[net].field)), float(np.max(lips[net].field)),
                          float(np.max(lips[net].step)), lips[net].product, stage[net]] if net in lips
                         else ["-"] * 5),
                       float(np.mean(norms[net])), float(np.max(norms[net]))] for net in nets],
                     caption="Lipschitz estimates: per-step (ODE stages), the product prod_k (1 + h Lip(F_k)), "
                             "the stage's and the whole net's local norms |J|_2 at the probe signals")
        for net, lip in lips.items():
            report.value(f"{net}_per_step", {"field": lip.field.tolist(), "bound": lip.bound.tolist(),
                                               "step": lip.step.tolist()})
        self._figure(report, o, nets, acc, lips)
        self._findings(report, o, nets, acc, lips, stage, norms)

    @staticmethod
    def _figure(report, o, nets, acc, lips) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for ax, a in zip(axes[:2], ATTACKS):
            for net in nets:
                ax.plot(o.eps, acc[a][net], "o-", color=COLOURS[net], label=net)
            ax.set_xlabel("eps (L_inf radius)")
            ax.set_ylabel("test accuracy")
            ax.set_title(a.upper())
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        ax = axes[2]
        for net, lip in lips.items():
            s = (np.arange(len(lip.bound)) + 0.5) / len(lip.bound)
            ax.plot(s, lip.bound, "o-", color=COLOURS[net], label=f"{net}: 1 + h Lip(F_k)")
            ax.plot(s, lip.step, "x:", color=COLOURS[net], label=f"{net}: step norm")
        ax.set_xlabel("depth (step k + 1/2) / N")
        ax.set_ylabel("per-step Lipschitz estimate")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
        fig.tight_layout()
        report.figure("robustness", fig, "Accuracy under FGSM (left) and PGD (middle) of growing radius; per-step "
                      "Lipschitz bounds 1 + h Lip(F_k) and the steps' own norms (right)")

    @staticmethod
    def _findings(report, o, nets, acc, lips, stage, norms) -> None:
        pos = [i for i, e in enumerate(o.eps) if e > 0]
        report.finding(
            "accuracy_falls_with_eps", all(acc["fgsm"][n][-1] < acc["fgsm"][n][0] - 0.1 for n in nets),
            f"every net loses more than 0.1 accuracy under FGSM at eps = {o.eps[-1]}.",
            "; ".join(f"{n}: {acc['fgsm'][n][0]:.3f} -> {acc['fgsm'][n][-1]:.3f}" for n in nets) + ".",
        )
        gaps = {n: max(acc["pgd"][n][i] - acc["fgsm"][n][i] for i in pos) for n in nets}
        report.finding(
            "pgd_at_most_fgsm", all(g <= 0.01 for g in gaps.values()),
            "PGD (iterated) is at least as strong as FGSM (one step): its accuracy is never above FGSM's by "
            "more than 0.01.",
            "largest PGD - FGSM accuracy: " + ", ".join(f"{n} {g:+.3f}" for n, g in gaps.items()) + ".",
        )
        holds = {n: stage[n] <= lips[n].product * 1.001 for n in lips}
        report.finding(
            "resnet_bound_holds", bool(holds["resnet"] and np.all(lips["resnet"].step <= lips["resnet"].bound
                                                                   * 1.001)),
            "for the Euler ResNet each step's norm is at most 1 + h Lip(F_k), and the stage's norm at most their "
            "product.",
            f"resnet: stage norm {stage['resnet']:.3g} <= product {lips['resnet'].product:.3g}; max step / bound "
            f"{float(np.max(lips['resnet'].step / lips['resnet'].bound)):.3f}.",
        )
        report.finding(
            "bound_holds_all", all(holds.values()),
            "the stage norm is below the product of the per-step bounds for every ODE-stage net (RK4 included).",
            "; ".join(f"{n}: {stage[n]:.3g} <= {lips[n].product:.3g}" for n in lips) + ".",
        )
        mean_pgd = {n: float(np.mean([acc["pgd"][n][i] for i in pos])) for n in nets}
        kept = {n: mean_pgd[n] / max(acc["pgd"][n][0], 1e-9) for n in nets}
        report.value("pgd_mean_accuracy", mean_pgd)
        report.value("pgd_kept_fraction", kept)
        node = next((n for n in ("node", "node_fine") if n in nets), None)  # the ODE-Net compared
        if node is not None:
            report.finding(
                "odenet_more_robust", bool(mean_pgd[node] > mean_pgd["resnet"]),
                "the ODE-Net keeps a higher accuracy under PGD than the ResNet (mean over eps > 0), as Yan et al. "
                "(2020) report.",
                f"mean PGD accuracy {node} {mean_pgd[node]:.3f} (clean {acc['pgd'][node][0]:.3f}), resnet "
                f"{mean_pgd['resnet']:.3f} (clean {acc['pgd']['resnet'][0]:.3f})"
                + (f", plain {mean_pgd['plain']:.3f} (clean {acc['pgd']['plain'][0]:.3f})" if "plain" in nets
                   else "")
                + "; the fraction of the clean accuracy kept: "
                + ", ".join(f"{n} {k:.2f}" for n, k in kept.items()) + ".",
            )
            gap = {a: acc[a][node][-1] - acc[a]["resnet"][-1] for a in ATTACKS}
            report.finding(
                "fgsm_overstates_odenet", bool(gap["fgsm"] > gap["pgd"]),
                f"the ODE-Net's margin over the ResNet at eps = {o.eps[-1]} is larger under FGSM than under PGD: "
                "a one-step attack overstates its robustness (the gradient-masking reading of later work).",
                f"{node} - resnet accuracy at eps = {o.eps[-1]}: FGSM {gap['fgsm']:+.3f}, PGD {gap['pgd']:+.3f}.",
            )
        if "node" in nets and "node_decay" in nets:
            report.finding(
                "decay_more_robust", bool(mean_pgd["node_decay"] > mean_pgd["node"]),
                "the ODE-Net trained with weight decay (smaller weights, a smaller bound on Lip(F)) keeps a "
                "higher accuracy under PGD than the one without.",
                f"mean PGD accuracy node_decay {mean_pgd['node_decay']:.3f} (clean "
                f"{acc['pgd']['node_decay'][0]:.3f}), node {mean_pgd['node']:.3f} (clean "
                f"{acc['pgd']['node'][0]:.3f}); mean Lip(F_k) "
                f"{float(np.mean(lips['node_decay'].field)):.3g} vs {float(np.mean(lips['node'].field)):.3g}.",
            )
        if "node" in nets and "node_fine" in nets:
            report.finding(
                "smaller_h_more_robust", bool(mean_pgd["node_fine"] > mean_pgd["node"]),
                "the ODE-Net with the smaller step h keeps a higher accuracy under PGD than the coarser one.",
                f"mean PGD accuracy node_fine (h = 1/{o.fine_steps}) {mean_pgd['node_fine']:.3f}, node (h = "
                f"1/{o.node_steps}) {mean_pgd['node']:.3f}; network norms (mean) "
                f"{float(np.mean(norms['node_fine'])):.3g} vs {float(np.mean(norms['node'])):.3g}.",
            )
        order = sorted(nets, key=lambda n: float(np.mean(norms[n])))
        report.note(
            "Nets by their mean local network norm |d logits / d input|_2 (smallest first): "
            + ", ".join(f"{n} {float(np.mean(norms[n])):.3g} (mean PGD accuracy {mean_pgd[n]:.3f})" for n in order)
            + ". A product of per-step bounds is a much looser number than the stage's measured norm: "
            + ", ".join(f"{n} {lips[n].product:.3g} vs {stage[n]:.3g}" for n in lips) + "."
        )
        over = {n: int(np.sum(lips[n].step > lips[n].bound)) for n in lips}
        report.value("steps_above_euler_bound", over)
        report.note(
            "Steps whose own norm exceeds 1 + h Lip(F_k): "
            + ", ".join(f"{n} {over[n]} of {len(lips[n].step)} (max step {float(np.max(lips[n].step)):.3g}, max "
                        f"bound {float(np.max(lips[n].bound)):.3g})" for n in lips)
            + ". 1 + h Lip(F) bounds an Euler step; an RK4 step is bounded by 1 + hL + ... + (hL)^4 / 24 <= "
            "exp(hL) only, which a large h Lip(F) makes far larger."
        )
