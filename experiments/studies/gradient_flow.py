"""Gradient flow through depth: |dL/dx_l| at every layer of plain and residual nets.

Part 1, the textbook exercise. Layers that each scale by a = 1/2: a plain stack x_{l+1} = a x_l of
L = 3 layers passes a^3 = 1/8 of the gradient to its input; a residual stack x_{l+1} = x_l + a x_l
passes (1 + a)^3 = 27/8, whose expansion 1 + 3a + 3a^2 + a^3 into the 2^3 paths holds the identity
term 1 (the path through no branch). Closed forms beside `gradient_flow` on odenets stages (a
`PlainBlock` and an Euler `ODEBlock` with h = 1 of linear fields F(x) = a x).

Part 2. Classifiers of the families plain and resnet (MLP fields, one stage, MNIST-1D) at
initialisation, at depths 8 to 512 (and more for the resnet): the mean per-sample |dL/dx_l| at
every layer (`odenets.analysis.gradient_flow`), and the ratio |dL/dx_0| / |dL/dx_L| of the
stage's input to its output.

Part 3. The same after training (a few depths): does training change the profile, and which
nets train.

Part 4. The path view of a residual stage at initialisation: the layer Jacobians J_l at the
states one signal passes through (`layer_jacobians`), their product prod (I + J_l) against
jax.jacobian of the stage itself, and the 2^L terms of the product summed by path length k
(`path_expansion`): how much of dx_L/dx_0 the paths of each length carry.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets
from odenets import study as studies
from odenets._abstract import final
from odenets.analysis import gradient_flow, jacobian_product, layer_jacobians, path_expansion
from odenets.models import ODEBlock
from odenets.models.stages import PlainBlock

FAMILIES = ("plain", "resnet")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depths: tuple[int, ...] = (8, 32, 128, 512)  # plain and resnet
    residual_depths: tuple[int, ...] = (1024,)  # resnet only
    width: int = 16
    batch: int = 256  # signals on which the gradients are measured
    train_depths: tuple[int, ...] = (8, 32)  # trained nets (Part 3); () skips it
    epochs: int = 8
    lr: float = 3e-3
    path_layers: int = 10  # the residual stage whose 2^L paths are enumerated (0: Part 4 skipped)
    check_jacobian: bool = True  # compare prod (I + J_l) with jax.jacobian of the stage itself
    scale: float = 0.5  # the textbook exercise: each layer scales by this
    textbook_layers: int = 3


@final
class Scale(nnx.Module):
    """F(t, x) = a x: a linear layer that scales by a."""

    def __init__(self, a: float, rngs: nnx.Rngs):
        self.a = nnx.Param(jnp.asarray(a, jnp.float32))

    def __call__(self, t, x):
        return self.a * x


def textbook(a: float, depth: int):
    """(plain, residual) `GradFlow` of L = depth layers scaling by a, loss = the output (one number)."""
    x = jnp.ones((1, 1), jnp.float32)
    make = lambda r: Scale(a, r)
    plain = PlainBlock(make, steps=depth, rngs=nnx.Rngs(0))
    res = ODEBlock(make, params="per_step", steps=depth, integrator="euler", t0=0.0, t1=float(depth),
                   rngs=nnx.Rngs(0))
    return gradient_flow(plain, x, loss=jnp.sum), gradient_flow(res, x, loss=jnp.sum)


def flow_at(family: str, depth: int, o: Options, seed: int, net=None):
    """(GradFlow on the probe batch, the net) for an initial (net=None) or trained net."""
    if net is None:
        net = nets.train(nets.overrides(family, depth, o.width, "mlp"), epochs=0, batch_size=o.batch, lr=o.lr,
                         seed=seed)
    x, y = nets.probe_batch(net.setup, o.batch)
    return gradient_flow(net.model, x, y), net


def ratio(flow) -> float:
    """mean |dL/dx_0| / mean |dL/dx_L| of the one stage."""
    norms = flow.mean_norm
    return float(norms[0] / norms[-1])


@final
@studies.study.register("gradient_flow")
class GradientFlow(studies.Study):
    title = "Gradient flow through depth: plain nets lose the gradient, residual nets keep the identity path"
    claim = ("In a plain deep net the gradient reaching early layers is a product of L layer Jacobians and "
             "vanishes (or explodes) geometrically with depth (Bengio et al. 1994; Glorot & Bengio 2010); a "
             "residual net's Jacobian prod (I + dF_l) contains the identity, so the gradient reaches every layer "
             "undiminished (He et al. 2016, Identity Mappings), and the product expands into 2^L paths of which "
             "the short ones carry the gradient (Veit et al. 2016).")
    sizes = {
        "smoke": Options(depths=(32,), residual_depths=(), width=8, batch=64, train_depths=(), path_layers=0),
        "full": Options(),
    }
    smoke_expect = ("textbook_plain", "textbook_residual", "plain_below_residual")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        report.setup(
            "The literature: the gradient dL/dx_l of a plain net is (prod_k dPhi_k/dx)^T dL/dx_L and shrinks "
            "(or grows) geometrically in L - l (Bengio et al. 1994; Glorot & Bengio 2010); a ResNet's layer "
            "Jacobian is I + dF_l, so the product keeps an identity term (He et al. 2016, 'Identity mappings in "
            "deep residual networks', Eq. 5) and unrolls into 2^L paths (Veit et al. 2016, NeurIPS).")
        report.setup(
            f"What we run: the textbook exercise with a = {o.scale}, L = {o.textbook_layers} (closed forms "
            f"against `odenets.analysis.gradient_flow` on a PlainBlock and an Euler ODEBlock, h = 1). Then "
            f"classifiers of the families plain and resnet (MLP fields of width {o.width}, tanh, one stage, "
            f"h = 1, LeCun-normal initialisation) on MNIST-1D at depths {list(o.depths)} (resnet also "
            f"{list(o.residual_depths)}): the mean per-sample |dL/dx_l| (cross-entropy) over {o.batch} training "
            f"signals at every layer, at initialisation and (depths {list(o.train_depths)}) after {o.epochs} "
            f"epochs of Adam (lr {o.lr}, odenets' own train step). Then the {o.path_layers} layer Jacobians of a "
            f"residual stage at one signal, their product and its 2^{o.path_layers} paths.")

        # ---- Part 1: the textbook exercise
        a, depth = o.scale, o.textbook_layers
        plain, res = textbook(a, depth)
        plain_in, res_in = float(plain.grad_norm[0, 0]), float(res.grad_norm[0, 0])
        closed_plain = jacobian_product([a] * depth, skip=False)
        closed_res = jacobian_product([a] * depth)
        paths = path_expansion([a] * depth)
        rows = [[i, float(plain.grad_norm[i, 0]), a ** (depth - i), float(res.grad_norm[i, 0]),
                 (1 + a) ** (depth - i)] for i in range(depth + 1)]
        report.table("textbook", ["layer l", "plain measured", "plain a^(L-l)", "residual measured",
                                  "residual (1+a)^(L-l)"], rows,
                     f"The textbook exercise: |dL/dx_l| through {depth} layers that scale by {a}")
        report.table("textbook_paths", ["path length k", "paths C(L,k)", "closed form C(L,k) a^k",
                                        "sum of the measured-Jacobian terms"],
                     [[k, math.comb(depth, k), math.comb(depth, k) * a**k, float(paths.by_length[k])]
                      for k in range(depth + 1)],
                     f"prod (1 + a) over {depth} layers as 2^{depth} paths; k = 0 is the identity term")
        report.finding("textbook_plain",
                       abs(plain_in - closed_plain) < 1e-6 and abs(closed_plain - a**depth) < 1e-12,
                       f"a plain stack of {depth} layers scaling by {a} passes a^L = {a**depth:g} to its input.",
                       f"measured {plain_in:.6g}, closed form prod J_l = {closed_plain:.6g}.")
        report.finding("textbook_residual",
                       abs(res_in - closed_res) < 1e-5 and abs(float(paths.by_length[0]) - 1.0) < 1e-12
                       and abs(float(paths.by_length.sum()) - res_in) < 1e-5,
                       f"a residual stack passes (1 + a)^L = {(1 + a)**depth:g}, of which the identity path "
                       "carries 1.",
                       f"measured {res_in:.6g}, closed form prod (1 + J_l) = {closed_res:.6g}, sum over paths "
                       f"{float(paths.by_length.sum()):.6g}, identity term {float(paths.by_length[0]):.6g}.")

        # ---- Part 2: depth sweep at initialisation
        profiles, sweep = {}, []
        for family in FAMILIES:
            for depth in sorted(set(o.depths) | (set(o.residual_depths) if family == "resnet" else set())):
                start = time.perf_counter()
                flow, _ = flow_at(family, depth, o, report.seed)
                profiles[family, depth] = flow.mean_norm
                r = ratio(flow)
                sweep.append([family, depth, float(flow.mean_norm[0]), float(flow.mean_norm[-1]), r,
                              math.log10(r) / depth if r > 0 else float("-inf"), flow.loss,
                              time.perf_counter() - start])
        report.table("init", ["family", "depth L", "|dL/dx_0|", "|dL/dx_L|", "ratio x_0 / x_L",
                              "log10(ratio) per layer", "loss", "seconds"], sweep,
                     "At initialisation: the mean per-sample gradient at the stage's input x_0 and output x_L")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, family in zip(axes, FAMILIES):
            for (fam, depth), norms in sorted(profiles.items()):
                if fam == family:
                    ax.semilogy(np.arange(len(norms)), np.maximum(norms, 1e-38), label=f"L = {depth}")
            ax.set_xscale("symlog", linthresh=8)
            ax.set_xlabel("layer l (state x_l entering layer l; symlog)")
            ax.set_title(f"{family}: at initialisation")
            ax.legend(fontsize=8)
        axes[0].set_ylabel("mean |dL/dx_l|")
        report.figure("init_profiles", fig, "Per-layer gradient norms at initialisation, plain vs residual")

        ratios = {(row[0], row[1]): row[4] for row in sweep}
        common = sorted(o.depths)
        margin = [ratios["resnet", d] / max(ratios["plain", d], 1e-300) for d in common]
        report.finding("plain_below_residual", all(m > 10 for m in margin),
                       "at every depth the plain net passes far less of the gradient to its input than the "
                       "residual net (ratio |dL/dx_0| / |dL/dx_L| at least 10 times smaller).",
                       ", ".join(f"L = {d}: plain {ratios['plain', d]:.3g}, resnet {ratios['resnet', d]:.3g}"
                                 for d in common) + ".")
        if len(common) >= 2:
            lo, hi = common[0], common[-1]
            report.finding("plain_vanishes", ratios["plain", hi] < 1e-2 * ratios["plain", lo],
                           f"the plain net's ratio falls geometrically with depth (L = {hi} at least 100 times "
                           f"below L = {lo}).",
                           f"ratio {ratios['plain', lo]:.3g} at L = {lo}, {ratios['plain', hi]:.3g} at L = {hi}.")
            res_depths = sorted(d for f, d in ratios if f == "resnet")
            report.finding("residual_keeps", all(ratios["resnet", d] >= 0.5 for d in res_depths),
                           "the residual net's gradient at its input does not vanish at any depth (ratio >= 0.5).",
                           ", ".join(f"L = {d}: {ratios['resnet', d]:.3g}" for d in res_depths) + ".")

        # ---- Part 3: after training
        if o.train_depths:
            trained_rows, trained = [], {}
            for depth in o.train_depths:
                for family in FAMILIES:
                    net = nets.train(nets.overrides(family, depth, o.width, "mlp"), epochs=o.epochs,
                                     batch_size=128, lr=o.lr, seed=report.seed)
                    flow, _ = flow_at(family, depth, o, report.seed, net)
                    trained[family, depth] = flow.mean_norm
                    init = ratios.get((family, depth))
                    if init is None:
                        init = ratio(flow_at(family, depth, o, report.seed)[0])
                    trained_rows.append([family, depth, net.train_error, net.test_error, init, ratio(flow),
                                         float(flow.mean_norm[0]), net.seconds])
            report.table("trained", ["family", "depth L", "train error", "test error", "ratio at init",
                                     "ratio trained", "|dL/dx_0| trained", "train seconds"], trained_rows,
                         f"After {o.epochs} epochs: training and test error, and the gradient ratio x_0 / x_L")
            fig, axes = plt.subplots(1, len(o.train_depths), figsize=(5.5 * len(o.train_depths), 4), squeeze=False)
            for ax, depth in zip(axes[0], o.train_depths):
                for family, style in zip(FAMILIES, ("-", "--")):
                    if (family, depth) in profiles:
                        ax.semilogy(profiles[family, depth], style, color="0.6", label=f"{family}, init")
                    ax.semilogy(trained[family, depth], style, label=f"{family}, trained")
                ax.set_xlabel("layer l")
                ax.set_ylabel("mean |dL/dx_l|")
                ax.set_title(f"L = {depth}")
                ax.legend(fontsize=8)
            report.figure("trained_profiles", fig, "Per-layer gradient norms before and after training")
            deepest = max(o.train_depths)
            errs = {row[0]: row[2] for row in trained_rows if row[1] == deepest}
            report.finding("residual_trains_better", errs["resnet"] < errs["plain"],
                           f"at the deepest trained depth (L = {deepest}) the residual net reaches a lower "
                           "training error than the plain net.",
                           f"training error plain {errs['plain']:.3f}, resnet {errs['resnet']:.3f}.")

        for family in FAMILIES:
            rates = [10 ** row[5] for row in sweep if row[0] == family]
            report.note(f"{family} at initialisation: the gradient is multiplied by {min(rates):.4g} to "
                        f"{max(rates):.4g} per layer on the way to x_0 (10^(log10(ratio) / L) over the depths): "
                        + ("it vanishes geometrically." if family == "plain" else
                           "it does not vanish, but with h = 1 and this initialisation it grows geometrically "
                           "(a gain above 1 per layer): the identity path keeps the gradient, the other paths "
                           "add to it."))

        # ---- Part 4: the 2^L paths of a residual stage
        if o.path_layers:
            self.paths(o, report, plt)

    @staticmethod
    def paths(o: Options, report: studies.Report, plt) -> None:
        """Part 4: the layer Jacobians of a residual stage at one signal, their product and its 2^L paths."""
        net = nets.train(nets.overrides("resnet", o.path_layers, o.width, "mlp"), epochs=0, batch_size=o.batch,
                         lr=o.lr, seed=report.seed)
        x, _ = nets.probe_batch(net.setup, 1)
        model = net.model
        x0 = model.stem(jnp.asarray(x).reshape(1, -1))
        stage = model.stages[0]
        jac = layer_jacobians(stage, x0)
        expansion = path_expansion(jac)
        product = jacobian_product(jac)
        measured = product
        if o.check_jacobian:
            graphdef, state = nnx.split(stage)
            stage_map = lambda z: nnx.merge(graphdef, state, copy=True)(z[None])[0]
            measured = np.asarray(jax.jit(jax.jacobian(stage_map))(x0[0]))
        rel = float(np.linalg.norm(expansion.by_length.sum(0) - measured) / np.linalg.norm(measured))
        rel_prod = float(np.linalg.norm(product - measured) / np.linalg.norm(measured))
        norms = np.linalg.norm(expansion.by_length, axis=(1, 2))
        total = float(np.linalg.norm(measured))
        each = np.linalg.norm(expansion.terms, axis=(1, 2))
        mean_each = [float(each[expansion.lengths == k].mean()) for k in range(o.path_layers + 1)]
        report.table("paths", ["path length k", "paths C(L,k)", "|sum of length-k terms|_F",
                               "over |dx_L/dx_0|_F", "mean |term|_F of one path"],
                     [[k, math.comb(o.path_layers, k), float(norms[k]), float(norms[k] / total), mean_each[k]]
                      for k in range(o.path_layers + 1)],
                     f"dx_L/dx_0 of a residual stage of {o.path_layers} layers at one signal, by path length")
        report.value("paths_relative_error", rel)
        report.value("product_relative_error", rel_prod)
        fig, ax = plt.subplots(figsize=(6, 4))
        ks = np.arange(o.path_layers + 1)
        ax.semilogy(ks, norms, "o-", label="|sum of length-k paths|_F")
        ax.semilogy(ks, mean_each, "s-", label="mean |one path|_F")
        typical = float(np.mean(np.linalg.norm(jac, ord=2, axis=(1, 2))))
        ax.semilogy(ks, [math.comb(o.path_layers, k) * typical**k * math.sqrt(o.width) for k in ks], "--",
                    label="bound C(L,k) s^k sqrt(n) (s: mean |J_l|_2)")
        ax.set_xlabel("path length k (branches passed)")
        ax.set_ylabel("Frobenius norm")
        ax.set_title(f"prod (I + J_l), L = {o.path_layers}: the paths by length")
        ax.legend(fontsize=8)
        report.figure("paths", fig, "The Jacobian of a residual stage expanded into its 2^L paths, by length")
        against = "jax.jacobian of the stage" if o.check_jacobian else "prod (I + J_l)"
        report.finding("paths_sum_to_product", rel < 1e-4 and rel_prod < 1e-4,
                       "the 2^L paths sum to prod (I + J_l), which equals the stage's Jacobian dx_L/dx_0.",
                       f"relative error against {against}: path sum {rel:.2g}, product {rel_prod:.2g} (float32).")
        peak = int(np.argmax(norms))
        report.note(f"Residual stage of {o.path_layers} layers at initialisation: the path lengths carrying the "
                    f"largest part of dx_L/dx_0 peak at k = {peak} (mean layer Jacobian norm |J_l|_2 = "
                    f"{typical:.3g}; identity share {norms[0] / total:.3g}).")
