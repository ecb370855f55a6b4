"""Momentum ResNets (Sander et al. 2021) on scikit-learn's 8x8 digits: accuracy against a ResNet with the
same blocks, and the gradient's memory against depth with the backward pass by exact inversion.

Nets. One stage of L blocks on the 64-dim state (a Linear(64, 64) stem, a Linear(64, 10) head), each
block's branch F_k(x) = Linear(16, 64)(tanh(Linear(64, 16)(x))) (`model.field=bottleneck` at width 64):

    ResNet         x_{k+1} = x_k + F_k(x_k)
    Momentum       v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k),  x_{k+1} = x_k + v_{k+1},  v_0 = 0

Memory: XLA's temporary bytes of jit(grad) of the cross-entropy of one batch (`_xla.compiled`), at
several depths, for the ResNet by backprop, the Momentum ResNet by backprop, and the Momentum ResNet
by exact inversion (`gradient=reversible`: only (x_L, v_L) is kept; the backward pass rebuilds
(x_k, v_k) = inverse(x_{k+1}, v_{k+1}) step by step). The exact-inversion gradient of each trained
momentum net is compared with backprop's, and the inverse's rounding, amplified by up to 1 / gamma per
step, is measured at gamma 0.1, 0.5 and 0.9.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.studies import _depthnets as nets
from experiments.studies._xla import compiled, loglog_slope, rel
from odenets import study as studies
from odenets._abstract import final
from odenets.models import family

DIGITS = ("data=digits",)
INPUT, CLASSES = (8, 8, 1), 10
METHODS = (("resnet", "backprop"), ("momentum", "backprop"), ("momentum", "reversible"))


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depth: int = 20  # blocks of the trained nets
    width: int = 64  # the state; field=bottleneck gives the branch's hidden width // 4 = 16
    gammas: tuple[float, ...] = (0.5, 0.9)
    epochs: int = 60
    lr: float = 0.01
    batch_size: int = 128
    inverted_training: bool = True  # also train the last gamma's net by exact inversion
    memory_depths: tuple[int, ...] = (5, 10, 20, 40, 80)
    batch: int = 128  # images of the memory programs, the gradient check and the reconstruction error
    memory_resnet: bool = True  # the ResNet's memory too (else the Momentum ResNet's by backprop and inversion)
    rebuild_gammas: tuple[float, ...] = (0.1, 0.5, 0.9)  # reconstruction error at initialisation
    rebuild_depth: int = 20  # ... of a net of this many blocks


def label(name: str, gamma: float | None, gradient: str = "backprop") -> str:
    base = "ResNet" if name == "resnet" else f"Momentum gamma={gamma:g}"
    return base + (", exact inversion" if gradient == "reversible" else "")


def model_overrides(name: str, depth: int, o: Options, gamma=None, gradient="backprop") -> list[str]:
    over = [*nets.overrides(name, depth, o.width, "mlp"), "model.field=bottleneck"]
    if name == "momentum":
        over += [f"model.gamma={gamma}", f"gradient={gradient}"]
    return over


def spec(name: str, depth: int, o: Options, gamma=None, gradient="backprop"):
    options = dict(kind="mlp", width=o.width, depth=depth, field="bottleneck")
    if name == "momentum":
        options.update(gamma=gamma, gradient=gradient)
    return family(name, **options)


def loss(model: nnx.Module, x, y):
    """The mean cross-entropy of a batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model(x), y))


def grad_of(graphdef):
    """grad(state, x, y): d loss / d parameters of the model (graphdef, state)."""
    return lambda state, x, y: nnx.grad(loss)(nnx.merge(graphdef, state), x, y)


@functools.cache
def program(name: str, gradient: str, depth: int, o: Options, gamma: float | None):
    """(grad(state, x, y) compiled for a batch of o.batch, its XLA temporary bytes): compiled from shapes,
    nothing run. The state is any net's of this family and depth, whatever gradient strategy it was built with
    (the strategy is static: a momentum net trained by backprop is differentiated here by inversion too)."""
    model = nnx.eval_shape(lambda: spec(name, depth, o, gamma, gradient).build(INPUT, CLASSES, rngs=0))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((o.batch, *INPUT), jnp.float32)
    y = jax.ShapeDtypeStruct((o.batch,), jnp.int32)
    return compiled(grad_of(graphdef), state, x, y)


def rebuild_error(model: nnx.Module, x) -> float:
    """|x_0' - x_0| / |x_0| for the stage input x_0 = stem(x): inverse(forward(x_0, 0)), float32."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def there_and_back(state, x):
        m = nnx.merge(graphdef, state)
        x0 = m.stem(x.reshape(len(x), -1))  # the mlp kind flattens the image
        stage = m.stages[0]
        return stage.inverse(*stage.forward(x0, jnp.zeros_like(x0)))[0], x0

    back, x0 = there_and_back(state, x)
    return rel(back, x0)


@final
@studies.study.register("momentum_digits")
class MomentumDigits(studies.Study):
    title = "Momentum ResNets on digits: ResNet accuracy, gradient memory flat in depth by exact inversion"
    claim = ("Sander, Ablin, Blondel & Peyre (2021, 'Momentum Residual Neural Networks', ICML): replacing the "
             "residual step by v_{k+1} = gamma v_k + (1 - gamma) F_k(x_k), x_{k+1} = x_k + v_{k+1} keeps a "
             "ResNet's accuracy (CIFAR-10/100, ImageNet: within a few tenths of a point) while making the net "
             "invertible, so the backward pass can rebuild the activations instead of storing them: the "
             "gradient's memory no longer grows with depth. The inverse divides by gamma, so its rounding grows "
             "like (1 / gamma)^depth; gamma near 1 (they use 0.9) keeps it small.")
    sizes = {
        "smoke": Options(depth=4, width=16, gammas=(0.9,), epochs=0, memory_depths=(4, 32), batch=32,
                         memory_resnet=False, rebuild_gammas=(0.1, 0.9)),
        "full": Options(),
    }
    smoke_expect = ("inverted_memory_flat", "backprop_memory_grows", "inverted_gradient_exact",
                    "small_gamma_amplifies_rounding")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        report.setup(
            "The literature: Sander et al. (2021) trained Momentum ResNets (gamma = 0.9 by default, also other "
            "gammas) against ResNets of the same blocks on CIFAR-10/100 and ImageNet and found equal accuracy; "
            "their custom backward pass, which inverts the momentum step instead of storing activations, makes "
            "the memory of the gradient independent of depth. They note that the inverse multiplies rounding "
            "errors by 1 / gamma per step.")
        report.setup(
            f"What we run: scikit-learn's 8x8 digits (1437 train / 360 test), a Linear(64, {o.width}) stem, "
            f"one stage of {o.depth} blocks F_k = Linear({o.width // 4}, {o.width}) o tanh o Linear({o.width}, "
            f"{o.width // 4}) (model.field=bottleneck), a linear head; ResNet (x_(k+1) = x_k + F_k(x_k)) vs "
            f"Momentum ResNets with gamma in {list(o.gammas)}, each trained {o.epochs} epochs with Adam (lr "
            f"{o.lr}, cosine schedule, clip 1, batch {o.batch_size}, odenets' own train step, same batches). "
            f"Memory: XLA temporary bytes of jit(grad) of a batch of {o.batch}, depths "
            f"{list(o.memory_depths)}, gamma {o.gammas[-1]:g}. The exact-inversion gradient is compared with "
            f"backprop's on {o.batch} training images of each trained momentum net (float32).")

        # accuracy (epochs = 0: the momentum nets at initialisation only, for the gradient check)
        runs = [("momentum", g, "backprop") for g in o.gammas]
        if o.epochs:
            runs = [("resnet", None, "backprop"), *runs]
            if o.inverted_training:
                runs.append(("momentum", o.gammas[-1], "reversible"))
        trained, rows = {}, []
        for name, gamma, gradient in runs:
            net = nets.train(model_overrides(name, o.depth, o, gamma, gradient), epochs=o.epochs,
                             batch_size=o.batch_size, lr=o.lr, seed=report.seed, data=DIGITS,
                             evaluate=bool(o.epochs))
            trained[name, gamma, gradient] = net
            if o.epochs:
                rows.append([label(name, gamma, gradient), 1 - net.test_error, 1 - net.train_error, net.losses[-1],
                             net.seconds])
        if rows:
            report.table("accuracy", ["net", "test accuracy", "train accuracy (last epoch)", "last epoch loss",
                                      "seconds"], rows, f"{o.depth} blocks, {o.epochs} epochs")

        # memory against depth
        gamma = o.gammas[-1]
        methods = METHODS if o.memory_resnet else METHODS[1:]
        memory = {m: [program(*m, d, o, gamma if m[0] == "momentum" else None)[1] for d in o.memory_depths]
                  for m in methods}
        mlabel = lambda m: label(m[0], gamma if m[0] == "momentum" else None, m[1])
        report.table("memory", ["depth", *[mlabel(m) for m in methods]],
                     [[d, *[memory[m][i] for m in methods]] for i, d in enumerate(o.memory_depths)],
                     "XLA temporary bytes of the gradient")
        slopes = {m: loglog_slope(o.memory_depths, memory[m]) for m in methods}
        for m in methods:
            report.value(f"memory_slope/{m[0]}/{m[1]}", slopes[m])

        # gradient check on the trained nets, reconstruction error
        check_rows = []
        for g in o.gammas:
            net = trained["momentum", g, "backprop"]
            x, y = nets.probe_batch(net.setup, o.batch)
            x, y, state = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), nnx.state(net.model)
            want, got = (program("momentum", k, o.depth, o, g)[0](state, x, y) for k in ("backprop", "reversible"))
            bound = float(np.finfo(np.float32).eps) * g**-o.depth
            check_rows.append([g, rel(got, want), bound] + ([rebuild_error(net.model, x)] if o.epochs else []))
        report.table("gradient_check", ["gamma", "rel. error exact inversion vs backprop", "eps32 / gamma^L"]
                     + (["rebuild error"] if o.epochs else []), check_rows,
                     ("Trained momentum nets" if o.epochs else "Momentum nets at initialisation")
                     + ": |g_inv - g_bp| / |g_bp| over every parameter"
                     + (", and |x_0' - x_0| / |x_0| after inverse(forward(x_0))" if o.epochs else ""))
        init_rebuild = {}
        probe_x = nets.probe_batch(next(iter(trained.values())).setup, o.batch)[0]
        for rg in o.rebuild_gammas:
            abstract = nnx.eval_shape(
                lambda g=rg: spec("momentum", o.rebuild_depth, o, g).build(INPUT, CLASSES, rngs=0))
            init_rebuild[rg] = rebuild_error(nets.initialise(abstract, report.seed), probe_x)
        report.table("rebuild_at_init", ["gamma", "rebuild error"], [[g, e] for g, e in init_rebuild.items()],
                     f"Reconstruction error at initialisation, {o.rebuild_depth} blocks, float32")

        # figure
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"wspace": 0.3})
        if rows:
            accuracy = [r[1] for r in rows]
            bars = axes[0].bar(range(len(rows)), accuracy, color=["C0"] + ["C1"] * (len(rows) - 1))
            axes[0].bar_label(bars, [f"{a:.3f}" for a in accuracy], fontsize=8)
            axes[0].set_xticks(range(len(rows)), [r[0] for r in rows], rotation=20, ha="right", fontsize=8)
            axes[0].set_ylim(max(0.0, min(accuracy) - 0.05), 1.0)
        else:
            axes[0].text(0.5, 0.5, "not trained at this size (epochs = 0)", ha="center",
                         transform=axes[0].transAxes)
        axes[0].set_ylabel("test accuracy")
        axes[0].set_title(f"digits, {o.depth} blocks, {o.epochs} epochs of Adam")
        for m, style in zip(methods, ("o-", "s-", "^-")[-len(methods):]):
            axes[1].plot(o.memory_depths, np.asarray(memory[m]) / 2**20, style,
                         label=f"{mlabel(m)} (slope {slopes[m]:.2f})")
        axes[1].set_xticks(o.memory_depths)
        axes[1].set_ylim(0, None)
        axes[1].set_xlabel("depth (blocks)")
        axes[1].set_ylabel("XLA temporary memory of the gradient (MiB)")
        axes[1].set_title(f"batch {o.batch}; slope: log-log fit")
        axes[1].legend(fontsize=8)
        report.figure("momentum_digits", fig, "Test accuracy (left); memory of the gradient against depth (right)")

        # findings
        inv = memory[METHODS[2]]
        shallow, deep = o.memory_depths[0], o.memory_depths[-1]
        flat = max(inv) / min(inv)
        report.finding("inverted_memory_flat", flat < 1.5,
                       f"by exact inversion the gradient's memory does not grow with depth ({shallow} to {deep} "
                       "blocks: max / min < 1.5).",
                       f"{inv[0]:,} to {inv[-1]:,} bytes (max / min {flat:.2f}, log-log slope "
                       f"{slopes[METHODS[2]]:.2f}).")
        backprop = [m for m in methods if m[1] == "backprop"]
        growth = {m: memory[m][-1] / memory[m][0] for m in backprop}
        report.finding("backprop_memory_grows", min(growth.values()) > 0.5 * deep / shallow,
                       f"by backprop it grows about linearly: from {shallow} to {deep} blocks by more than half "
                       f"of {deep / shallow:g}x.",
                       "; ".join(f"{mlabel(m)} {memory[m][0]:,} -> {memory[m][-1]:,} bytes ({growth[m]:.1f}x, "
                                 f"slope {slopes[m]:.2f})" for m in backprop)
                       + f"; at {deep} blocks inversion needs {inv[-1] / memory[METHODS[1]][-1]:.3f}x backprop's "
                       "memory.")
        worst = max(r[1] for r in check_rows)
        report.finding("inverted_gradient_exact", worst < 1e-4,
                       "the exact-inversion gradient equals backprop's up to float32 rounding (< 1e-4 relative).",
                       ", ".join(f"gamma {r[0]:g}: {r[1]:.2g}" for r in check_rows) + ".")
        lo, hi = min(init_rebuild), max(init_rebuild)
        report.finding("small_gamma_amplifies_rounding", not init_rebuild[lo] < 100 * max(init_rebuild[hi], 1e-9),
                       f"the inverse's rounding grows like (1 / gamma)^depth: gamma {lo:g} rebuilds the input far "
                       f"(> 100x) worse than gamma {hi:g}.",
                       ", ".join(f"gamma {g:g}: {e:.2g}" for g, e in init_rebuild.items())
                       + f" ({o.rebuild_depth} blocks).")
        if o.epochs:
            res = 1 - trained["resnet", None, "backprop"].test_error
            accs = {g: 1 - trained["momentum", g, "backprop"].test_error for g in o.gammas}
            report.finding("momentum_matches_resnet", all(abs(a - res) <= 0.02 for a in accs.values()),
                           "the Momentum ResNets reach the ResNet's test accuracy (within 0.02).",
                           f"ResNet {res:.3f}; " + ", ".join(f"gamma {g:g}: {a:.3f}" for g, a in accs.items())
                           + ".")
        if o.epochs and o.inverted_training:
            g = o.gammas[-1]
            bp, ei = (1 - trained["momentum", g, k].test_error for k in ("backprop", "reversible"))
            report.finding("inverted_training_same", abs(bp - ei) <= 0.01,
                           f"training by exact inversion gives the same net as by backprop (gamma {g:g}; test "
                           "accuracy within 0.01).", f"backprop {bp:.3f}, exact inversion {ei:.3f}.")
        eps = float(np.finfo(np.float32).eps)
        report.note(
            f"Each inverse step divides by gamma, so float32 rounding (eps = {eps:.2g}) can grow by (1 / gamma)^L "
            f"over L = {o.depth} blocks: " + "; ".join(
                f"gamma {g:g}: (1 / gamma)^L = {bound / eps:.3g}, eps / gamma^L = {bound:.2g}, exact-inversion "
                f"gradient vs backprop {err:.2g}" for g, err, bound, *_ in check_rows)
            + ". Sander et al. keep the inversion exact in finite precision by storing the bits that the "
            "multiplication by gamma discards (Maclaurin, Duvenaud & Adams 2015); odenets inverts in floating "
            "point, so where (1 / gamma)^L is large the gradient by inversion is approximate.")
        if o.epochs:
            res = 1 - trained["resnet", None, "backprop"].test_error
            n_test = len(trained["resnet", None, "backprop"].data.x_test)
            diffs = ", ".join(f"{r[0]} {r[1] - res:+.3f}" for r in rows[1:])
            report.note(f"Test accuracy minus the ResNet's: {diffs} (one seed; one test image: {1 / n_test:.4f}).")
        report.note("Memory counts XLA's temporaries only (parameters, inputs and gradients are arguments and "
                    "outputs); exact inversion costs one more evaluation of every block in the backward pass "
                    "(2 per step instead of 0 extra).")
