"""Dupont et al. (2019): a Neural ODE cannot represent the concentric-spheres function; an ANODE and a ResNet can.

g(x) = -1 for |x| <= 0.5 (the inner ball), +1 for 1 <= |x| <= 1.5 (the shell), in d = 1 and 2 dimensions
(odenets' `spheres` set, labels 0 / 1 mapped to -1 / +1). Each model is Dupont et al.'s ODENet: a stage
phi on the input space itself (no stem) and one linear map to a scalar, g_hat(x) = w . phi(x) + b, trained
on the squared error (g_hat(x) - g(x))^2 by odenets' own train step (task "regression"):

    node    phi(x) = z(1),  dz/dt = F(t, z), z(0) = x in R^d                 (one shared field, `ODEBlock`)
    anode   phi(x) = z(1),  dz/dt = F(t, z), z(0) = [x, 0] in R^(d + p)      (`AugmentedBlock`)
    resnet  phi(x) = z_L,   z_(k+1) = z_k + F_k(z_k), z_0 = x                (per-step fields, Euler, h = 1)

The NODE's phi is the time-1 map of a flow, a homeomorphism of R^d; in d = 1 it is strictly increasing, so
trajectories never cross and g_hat is monotone in x. A monotone g_hat fits the labels (+1 | -1 | +1 along x)
no better than the isotonic regression of the labels: pooling the left shell with the ball (or the ball
with the right shell), the squared error is at least

    min over sides s of  [n_s (1 - m_s)^2 + n_b (1 + m_s)^2] / n,   m_s = (n_s - n_b) / (n_s + n_b)

(n_b points in the ball, n_s in the pooled side's shell): 2/3 for balanced classes in equal halves.
An ANODE's flow in R^(d + p) may carry points past each other through the extra dimension, and a ResNet's
discrete steps z + F_k(z) need not be monotone, so both can separate the classes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odenets as on
from experiments.studies import _fits
from odenets import data as datasets
from odenets import study as studies
from odenets._abstract import final
from odenets.fields.mlp import MLPField
from odenets.models import ODEBlock
from odenets.models.stages import AugmentedBlock

MODELS = ("node", "anode", "resnet")
COLOURS = {"node": "tab:red", "anode": "tab:blue", "resnet": "tab:green"}
LABEL_COLOURS = {-1: "tab:orange", 1: "tab:purple"}
CROSSING_TOL = 1e-5  # a pair counts as crossed when its order is reversed by more than this (float32 round-off)
GRID, EXTENT = 80, 1.8  # g_hat is drawn on GRID x GRID points of [-EXTENT, EXTENT]^2


@final
class LinearHead(nnx.Module):
    """Dupont et al.'s ODENet: g_hat(x) = w . phi(x) + b, the stage phi (an ODE block, an ANODE's
    AugmentedBlock or a ResNet's per-step Euler block) on the input space itself, then one linear map from
    its `channels` output channels to a scalar (B, 1)."""

    def __init__(self, stage: nnx.Module, channels: int, *, rngs: nnx.Rngs):
        self.stage = stage
        self.head = nnx.Linear(channels, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.stage(x))


@final
@dataclasses.dataclass(frozen=True)
class Options:
    dims: tuple[int, ...] = (1, 2)
    models: tuple[str, ...] = MODELS  # a subset of node, anode, resnet
    n_train: int = 1000  # points of `spheres`, classes balanced (Dupont et al.: 500 in the ball, 1500 shell)
    n_test: int = 500
    hidden: int = 32  # the fields: MLPField(channels, hidden, 2 hidden layers, tanh)
    augment: int = 1  # ANODE's extra zero channels p
    integrator: str = "dopri5"  # NODE and ANODE (Dupont et al.: dopri5, tolerance 1e-3)
    steps: int = 20  # fixed-step integrators' steps on [0, 1]; the grid the trajectories are plotted on
    resnet_depth: int = 5  # ResNet blocks (Dupont et al.: 5)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3  # Adam (Dupont et al.: 1e-3), cosine decay, clipped at norm 1
    plotted: int = 120  # test points whose trajectories are drawn


def labelled(dim: int, o: Options, seed: int) -> datasets.Dataset:
    """odenets' `spheres` in `dim` dimensions as a regression set: targets g(x) = 2 y - 1 in {-1, +1}, (N, 1)."""
    ds = datasets.load("spheres", dim=dim, n_train=o.n_train, n_test=o.n_test, seed=seed)
    target = lambda y: (2.0 * np.asarray(y, np.float32) - 1.0)[:, None]
    return datasets.Dataset(f"spheres{dim}d", ds.x_train, target(ds.y_train), ds.x_test, target(ds.y_test),
                            "regression")


def build(kind: str, dim: int, o: Options, seed: int) -> LinearHead:
    """The model `kind` (node | anode | resnet) for inputs in R^dim."""
    rngs = nnx.Rngs(seed)
    if kind == "resnet":
        make = lambda r: MLPField(dim, o.hidden, layers=2, time=False, rngs=r)
        block = ODEBlock(make, params="per_step", steps=o.resnet_depth, integrator="euler",
                         t1=float(o.resnet_depth), rngs=rngs)
        return LinearHead(block, dim, rngs=rngs)
    augment = o.augment if kind == "anode" else 0
    channels = dim + augment
    make = lambda r: MLPField(channels, o.hidden, layers=2, time=True, rngs=r)
    block = ODEBlock(make, params="shared", steps=o.steps, integrator=o.integrator, gradient="backprop", t1=1.0,
                     rngs=rngs)
    return LinearHead(AugmentedBlock(augment, block) if augment else block, channels, rngs=rngs)


def evaluate(model: LinearHead, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times (S + 1,), states (S + 1, B, C), g_hat (B,)): the stage's states at its step boundaries (an
    adaptive block's dense solution on the same grid), from [x, 0] for an ANODE, and the head on the last;
    one compiled program."""
    stage = model.stage
    block = stage.block if isinstance(stage, AugmentedBlock) else stage
    graphdef, state = nnx.split(model)

    def run(state, x):
        m = nnx.merge(graphdef, state)
        if isinstance(m.stage, AugmentedBlock):
            x = jnp.concatenate([x, jnp.zeros((len(x), m.stage.augment), x.dtype)], axis=-1)
        b = m.stage.block if isinstance(m.stage, AugmentedBlock) else m.stage
        xs = b.solve(x, save="all").xs
        return xs, m.head(xs[-1])[:, 0]

    xs, pred = jax.jit(run)(state, jnp.asarray(x))
    return np.linspace(block.t0, block.t1, block.steps + 1), np.asarray(xs), np.asarray(pred)


def discordant(x0: np.ndarray, xt: np.ndarray, tol: float = 0.0) -> float:
    """The fraction of pairs (i, j) whose order along the line is reversed from x0 to xt by more than `tol`
    (Kendall's discordant pairs, ties not counted): 0 for every increasing map."""
    a = np.asarray(xt)[np.argsort(x0, kind="stable")]
    n = len(a)
    return float(np.triu(a[:, None] - a[None, :] > tol, 1).sum() / (n * (n - 1) / 2))


def monotone_bound(x: np.ndarray, g: np.ndarray) -> float:
    """The least mean squared error of any monotone function of x (d = 1) on labels g that are +1 | -1 | +1
    along x: the isotonic regression pools one shell side with the ball (module docstring)."""
    x, g = np.asarray(x).ravel(), np.asarray(g).ravel()
    ball = g < 0
    n_b, n = int(ball.sum()), len(g)
    best = np.inf
    for side in (x < 0, x > 0):
        n_s = int((side & ~ball).sum())
        m = (n_s - n_b) / (n_s + n_b)
        best = min(best, (n_s * (1 - m) ** 2 + n_b * (1 + m) ** 2) / n)
    return float(best)


@final
@studies.study.register("anode_concentric")
class AnodeConcentric(studies.Study):
    title = "Concentric spheres: a Neural ODE cannot separate them, an ANODE and a ResNet can (Dupont et al. 2019)"
    claim = ("Dupont, Doucet & Teh (2019, 'Augmented Neural ODEs', NeurIPS; Sec. 4, Fig. 3-8): the flow of a "
             "Neural ODE is a homeomorphism, so it cannot map the inner ball (g = -1) and the surrounding shell "
             "(g = +1) to linearly separable features; in 1-D its trajectories cannot cross. Trained on g, the "
             "NODE's loss plateaus (in 2-D it squeezes the shell through gaps with rising NFE), while an ANODE "
             "(zero channels appended) and a ResNet (discrete steps can cross) fit g to near zero loss; the ANODE "
             "with fewer function evaluations than the NODE.")
    sizes = {
        "smoke": Options(dims=(1,), models=("node", "anode"), n_train=256, n_test=256, hidden=16, integrator="rk4",
                         steps=4, epochs=12, batch_size=32, lr=2e-2, plotted=40),
        "full": Options(),
    }
    smoke_expect = ("node_1d_no_crossing", "node_1d_plateaus", "anode_1d_separates")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        if not {"node", "anode"} <= set(o.models) <= set(MODELS):
            raise ValueError(f"models must hold node and anode, from {', '.join(MODELS)}; got models={o.models!r}")
        report.setup(
            "The literature: Dupont et al. (2019) sample 500 points in the ball |x| <= 0.5 and 1500 in the shell "
            "1 <= |x| <= 1.5 (d = 1 and 2), and train an ODENet (a time-dependent MLP field of 32 hidden units, "
            "ReLU, on the input space itself, dopri5 at tolerance 1e-3, then one linear layer to a scalar), an "
            "ANODE (the same with zero channels appended: 1 in their 1-D figures, 5 in their config) and a "
            "ResNet (5 residual MLP blocks), Adam 1e-3, batch 64, on the Huber loss to g; the NODE's loss "
            "plateaus, the ANODE's and ResNet's reach about 0.")
        report.setup(
            f"What we run: odenets' `spheres` (r = r_min + (r_max - r_min) U^(1/d), Dupont et al.'s sampler; "
            f"classes balanced, {o.n_train} training and {o.n_test} test points) in d = {list(o.dims)}, labels "
            f"mapped to g = -1 / +1. Fields: MLPField(channels, {o.hidden}, 2 hidden layers, tanh); NODE and "
            f"ANODE time-dependent, t in [0, 1], integrator {o.integrator} (backprop; {o.steps} steps where "
            f"fixed), ANODE with p = {o.augment} zero channels; ResNet: {o.resnet_depth} per-step fields, Euler "
            f"with h = 1 (`ODEBlock` params='per_step'). Head: one linear map to a scalar (`LinearHead`). Loss: "
            f"the squared error (g_hat - g)^2 (odenets' regression task; Dupont et al. used Huber's), "
            f"{o.epochs} epochs of Adam (lr {o.lr}, cosine, clip 1, batch {o.batch_size}), odenets' own train "
            f"step. Accuracy: sign(g_hat) = g on the test points. Crossing: the fraction of pairs of test points "
            f"whose order along the line is reversed between t = 0 and any plotted time (1-D; for the ANODE its "
            f"first channel, the input's own).")

        runs, rows = {}, []
        for dim in o.dims:
            data = labelled(dim, o, report.seed)
            bound = monotone_bound(data.x_train, data.y_train) if dim == 1 else None
            if bound is not None:
                report.value("monotone_bound_1d", bound)
            for kind in o.models:
                model = _fits.initialise(lambda: build(kind, dim, o, report.seed), report.seed)  # noqa: B023
                fit = _fits.fit(model, data, lr=o.lr, batch_size=o.batch_size,
                                epochs=o.epochs, seed=report.seed)
                n = len(data.x_test)  # the test points, then (2-D) a grid for g_hat over the plane
                x = data.x_test if dim == 1 else np.concatenate([data.x_test, self.grid()])
                times, xs, pred = evaluate(fit.model, x)
                g = data.y_test[:, 0]
                run = {"fit": fit, "times": times, "paths": xs[:, : o.plotted], "x": data.x_test[: o.plotted],
                       "g": g[: o.plotted], "test_loss": float(np.mean((pred[:n] - g) ** 2)),
                       "accuracy": float(np.mean(np.sign(pred[:n]) == g)),
                       "nfe": _fits.epoch_mean(fit.nfe, o.epochs) if kind != "resnet" else None}
                if dim == 1:
                    run["crossing"] = max(discordant(xs[0, :, 0], x, CROSSING_TOL) for x in xs[..., 0])
                    run["reversed"] = max(discordant(xs[0, :, 0], x) for x in xs[..., 0])
                    report.value(f"reversed_pairs_1d_{kind}", run["reversed"])
                if dim == 2:
                    run["grid"] = pred[n:].reshape(GRID, GRID)
                runs[dim, kind] = run
                nfe = run["nfe"]
                rows.append([dim, kind, fit.epoch_losses[-1], run["test_loss"], run["accuracy"],
                             run.get("crossing"), *((None, None) if nfe is None else (nfe[0], nfe[-1])),
                             fit.seconds])
        report.table("models", ["d", "model", "final train loss", "test loss", "test accuracy", "crossing pairs",
                                "NFE first epoch", "NFE last epoch", "seconds"], rows,
                     "After training: squared error, accuracy of sign(g_hat), the fraction of test-point pairs "
                     "whose order is reversed (1-D), forward NFE per training step (epoch means)")

        if 1 in o.dims:  # first: the headline figure
            self.plot_1d(runs, report, plt)
        self.plot_losses(runs, o, report, plt)
        if 2 in o.dims:
            self.plot_2d(runs, o, report, plt)
        adaptive = on.integrator.get(o.integrator).adaptive
        if adaptive:
            self.plot_nfe(runs, o, report, plt)
        self.findings(runs, o, report, adaptive)

    @staticmethod
    def grid(n: int = GRID, extent: float = EXTENT) -> np.ndarray:
        """The n x n points of [-extent, extent]^2 (row-major: x2 by row, x1 by column), (n^2, 2)."""
        g = np.linspace(-extent, extent, n, dtype=np.float32)
        x1, x2 = np.meshgrid(g, g)
        return np.stack([x1.ravel(), x2.ravel()], axis=1)

    @staticmethod
    def plot_losses(runs, o, report, plt):
        fig, axes = plt.subplots(1, len(o.dims), figsize=(5.5 * len(o.dims), 4), squeeze=False)
        for ax, dim in zip(axes[0], o.dims):
            for kind in o.models:
                losses = runs[dim, kind]["fit"].epoch_losses
                ax.plot(np.arange(1, len(losses) + 1), losses, color=COLOURS[kind], label=kind)
            if dim == 1:
                bound = report.results["values"]["monotone_bound_1d"]
                ax.axhline(bound, color="k", ls=":", label=f"monotone bound {bound:.3f}")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss (g_hat - g)^2, epoch mean")
            ax.set_title(f"d = {dim}")
            ax.legend(fontsize=8)
        report.figure("losses", fig, "Training loss per epoch: the NODE plateaus, the ANODE and ResNet fit g")

    @staticmethod
    def plot_1d(runs, report, plt):
        kinds = [k for k in MODELS if (1, k) in runs]
        fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(5 * len(kinds) + 5, 4))
        r = runs[1, "anode"]  # the ANODE's plane (x, z): the ball lifted past the shell through z
        for i, g in enumerate(r["g"]):
            axes[-1].plot(r["paths"][:, i, 0], r["paths"][:, i, 1], color=LABEL_COLOURS[int(g)], lw=0.7, alpha=0.7)
            axes[-1].plot(*r["paths"][-1, i, :2], "o", color=LABEL_COLOURS[int(g)], ms=2.5)
        axes[-1].set_xlabel("x (the input's channel)")
        axes[-1].set_ylabel("z (the first augmented channel)")
        axes[-1].set_title("anode: paths in the (x, z) plane, dots at t = 1")
        for ax, kind in zip(axes, kinds):
            r = runs[1, kind]
            for i, g in enumerate(r["g"]):
                ax.plot(r["times"], r["paths"][:, i, 0], color=LABEL_COLOURS[int(g)], lw=0.7, alpha=0.7)
            ax.set_xlabel("layer k" if kind == "resnet" else "t")
            ax.set_ylabel("x(t), the input's channel")
            ax.set_title(f"{kind}: crossing pairs {r['crossing']:.3f}, accuracy {r['accuracy']:.2f}")
        handles = [plt.Line2D([], [], color=c, label=f"g = {g:+d}") for g, c in LABEL_COLOURS.items()]
        axes[0].legend(handles=handles, fontsize=8)
        report.figure("trajectories_1d", fig, "1-D trajectories x(t) coloured by label: the NODE's never cross "
                      "(the inner points stay between the shell's); the ResNet's steps cross; the ANODE separates "
                      "the classes through its extra channel z (right)")

    @staticmethod
    def plot_2d(runs, o, report, plt):
        kinds = [k for k in MODELS if (2, k) in runs]
        fig, axes = plt.subplots(2, len(kinds), figsize=(5 * len(kinds), 9.5))
        for col, kind in enumerate(kinds):
            r = runs[2, kind]
            ax = axes[0, col]
            for i, g in enumerate(r["g"]):
                ax.plot(r["paths"][:, i, 0], r["paths"][:, i, 1], color=LABEL_COLOURS[int(g)], lw=0.5, alpha=0.5)
                ax.plot(*r["paths"][-1, i, :2], "o", color=LABEL_COLOURS[int(g)], ms=2.5)
            ax.set_xlabel("feature 1")
            ax.set_ylabel("feature 2")
            ax.set_title(f"{kind}: paths to phi(x) (dots; first 2 channels)", fontsize=10)
            ax = axes[1, col]
            extent = EXTENT
            image = ax.imshow(r["grid"], origin="lower", extent=(-extent, extent, -extent, extent), cmap="PuOr",
                              vmin=-1.5, vmax=1.5)
            ax.contour(np.linspace(-extent, extent, r["grid"].shape[0]),
                       np.linspace(-extent, extent, r["grid"].shape[0]), r["grid"], levels=[0.0], colors="k")
            for g, c in LABEL_COLOURS.items():
                pick = r["g"] == g
                ax.plot(r["x"][pick, 0], r["x"][pick, 1], ".", color=c, ms=3, label=f"g = {g:+d}")
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            ax.set_title(f"{kind}: g_hat (black: 0), accuracy {r['accuracy']:.2f}", fontsize=10)
            ax.legend(fontsize=7, loc="upper right")
        fig.colorbar(image, ax=axes[1].tolist(), shrink=0.8, label="g_hat(x)")
        report.figure("flow_2d", fig, "2-D: the flow of the test points to their features (top) and the learned "
                      "g_hat over the input plane (bottom)")

    @staticmethod
    def plot_nfe(runs, o, report, plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        for dim in o.dims:
            for kind, style in (("node", "-"), ("anode", "--")):
                nfe = runs[dim, kind]["nfe"]
                ax.plot(np.arange(1, len(nfe) + 1), nfe, style, color=COLOURS[kind], label=f"{kind}, d = {dim}",
                        alpha=1.0 if dim == 1 else 0.6)
        ax.set_xlabel("epoch")
        ax.set_ylabel("forward NFE per training step (epoch mean)")
        ax.legend(fontsize=8)
        report.figure("nfe", fig, f"Forward NFE of the adaptive solve ({o.integrator}) over training")

    @staticmethod
    def findings(runs, o, report, adaptive):
        loss = lambda d, k: float(runs[d, k]["fit"].epoch_losses[-1])
        acc = lambda d, k: runs[d, k]["accuracy"]
        if 1 in o.dims:
            bound = report.results["values"]["monotone_bound_1d"]
            report.finding(
                "node_1d_no_crossing", runs[1, "node"]["crossing"] == 0.0,
                "the 1-D NODE's trajectories never cross: the order of the points is the same at every time.",
                f"fraction of test-point pairs reversed by more than {CROSSING_TOL:g} at some plotted time: "
                + ", ".join(f"{k} {runs[1, k]['crossing']:.4g}" for k in o.models)
                + " (ANODE: its first channel); reversed by any amount: "
                + ", ".join(f"{k} {runs[1, k]['reversed']:.3g}" for k in o.models) + ".")
            report.finding(
                "node_1d_plateaus", loss(1, "node") >= 0.9 * bound and acc(1, "node") <= 0.8,
                f"the 1-D NODE's loss stays at or above the monotone bound ({bound:.3f} on the training points; "
                "2/3 for balanced classes) and its accuracy at or below 3/4.",
                f"NODE final training loss {loss(1, 'node'):.3f}, test accuracy {acc(1, 'node'):.3f}.")
            report.finding(
                "anode_1d_separates", loss(1, "anode") < 0.25 * bound and acc(1, "anode") >= 0.95,
                "the 1-D ANODE fits g (loss near 0, below a quarter of the monotone bound) and separates the "
                "classes.",
                f"ANODE final training loss {loss(1, 'anode'):.4f}, test accuracy {acc(1, 'anode'):.3f}.")
        if 1 in o.dims and "resnet" in o.models:
            report.finding(
                "resnet_1d_separates", loss(1, "resnet") < 0.25 * bound and acc(1, "resnet") >= 0.95
                and runs[1, "resnet"]["crossing"] > 0,
                "the 1-D ResNet fits g, its discrete steps carrying points past each other (crossing pairs > 0).",
                f"ResNet final training loss {loss(1, 'resnet'):.4f}, test accuracy {acc(1, 'resnet'):.3f}, "
                f"crossing pairs {runs[1, 'resnet']['crossing']:.4f}.")
        if 2 in o.dims:
            report.finding(
                "anode_2d_beats_node", loss(2, "anode") < 0.5 * loss(2, "node"),
                "in 2-D the ANODE's loss ends well below the NODE's (Dupont et al. Fig. 7: the NODE plateaus).",
                "final training loss " + ", ".join(f"{k} {loss(2, k):.4f}" for k in o.models) + "; test accuracy "
                + ", ".join(f"{k} {acc(2, k):.3f}" for k in o.models) + ".")
        if adaptive:
            last = {(d, k): float(runs[d, k]["nfe"][-1]) for d in o.dims for k in ("node", "anode")}
            first = {(d, k): float(runs[d, k]["nfe"][0]) for d in o.dims for k in ("node", "anode")}
            report.finding(
                "anode_fewer_nfe", all(last[d, "anode"] < last[d, "node"] for d in o.dims),
                "at the end of training the ANODE's adaptive solve takes fewer function evaluations than the "
                "NODE's (Dupont et al. Fig. 8).",
                "; ".join(f"d = {d}: NODE {first[d, 'node']:.0f} -> {last[d, 'node']:.0f}, ANODE "
                          f"{first[d, 'anode']:.0f} -> {last[d, 'anode']:.0f} (first -> last epoch mean)"
                          for d in o.dims) + ".")
        if 1 in o.dims:
            report.note(
                "In 1-D the ANODE separates the classes without reordering x (its first channel keeps the "
                f"order, reversed pairs {runs[1, 'anode']['reversed']:.3g}): it moves the ball along the extra "
                "channel z, and the head reads z (right panel of the 1-D figure); the ResNet reorders the points "
                "themselves.")
        if 2 in o.dims:
            border = lambda grid: np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
            outside = {k: float(np.mean(border(runs[2, k]["grid"]) < 0)) for k in o.models}
            for k, v in outside.items():
                report.value(f"negative_border_2d_{k}", v)
            report.note(
                f"2-D: the fraction of the border of [-{EXTENT}, {EXTENT}]^2 (on the {GRID} x {GRID} grid) "
                "where g_hat < 0. For a NODE {g_hat < 0} is the preimage of a half-plane under a homeomorphism, "
                "connected and unbounded: it holds the ball, so it must cross the shell and reach the border "
                "(an ANODE's or a ResNet's need not): " + ", ".join(f"{k} {v:.3f}" for k, v in outside.items())
                + ".")
        for d in o.dims:
            report.note(f"d = {d}: " + ", ".join(
                f"{k} loss {loss(d, k):.4f} (test {runs[d, k]['test_loss']:.4f}), accuracy {acc(d, k):.3f}"
                for k in o.models) + ".")
