"""Step size: where explicit integration of a trained field blows up, predicted from its spectrum and
observed; and training at depth N with h = 1, h = 1/N and a learned h.

Part 1. A Neural ODE field F trained by `fit` is integrated over [0, T] with h = T/N for many N by
Euler, RK4 and BackwardEuler, once as trained and once with a linear damping, G(x) = F(x) - gamma x,
whose Jacobian dF/dx - gamma I has the trained spectrum shifted left by gamma (a stiff field with a
known spectrum). Near a state, a step multiplies the mode of eigenvalue lambda by R(h lambda); along
the dominant eigenvalue's direction theta = arg lambda, the region reaches r(theta) from the origin, so
the step is predicted to amplify that mode once h > h* = r(theta) / |lambda|.

Part 2. A per-step ResNet x_{k+1} = x_k + h F_k(x_k) of depth N trained three times from the same
initial weights: h = 1 (t1 = N), h = 1/N (t1 = 1) and h learned (t1 = N h, h = exp(s), s trained with
the weights; odeint differentiates its end time).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import odenets as on
from odenets import analysis
from odenets import study as studies
from odenets._abstract import final
from odenets.data import batches

METHODS = ("euler", "rk4", "backward_euler")
STEP_RULES = ("one", "t_over_n", "learned")
BLOWUP = 10.0  # a solve "blows up" when its final state is this many times the reference's norm (or non-finite)


@final
@dataclasses.dataclass(frozen=True)
class Options:
    """node: `odenets run` overrides that train the Neural ODE of part 1 (autonomous MLP field);
    steps: the step counts N (h = T/N) of the sweep; reference: RK4 steps of the reference solve;
    damping: gamma of the damped field G = F - gamma x; inputs: test inputs integrated;
    depth, width, epochs, batch_size, lr: the part-2 ResNets (same data as part 1)."""

    node: tuple[str, ...] = ()
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    reference: int = 1024
    damping: float = 20.0
    inputs: int = 64
    depth: int = 16
    width: int = 16
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-2


_NODE = ("data=spirals", "model=node", "model.kind=mlp", "model.time=false", "model.t1=1.0",
         "model.depth=8", "integrator=rk4", "optim.lr=0.01")


ANGLES = np.linspace(0.5 * np.pi, 1.5 * np.pi, 361)  # rays into the left half-plane, 0.5 degrees apart


@functools.cache
def _reach(method: str) -> np.ndarray:
    """How far the method's region reaches along each ray of ANGLES (analysis.reach), once per method."""
    return analysis.reach(method, ANGLES)


def _critical_h(method: str, lam: np.ndarray) -> np.ndarray:
    """h* = r(arg lambda) / |lambda| for decaying eigenvalues lambda (Re < 0): the step beyond which h lambda
    leaves the region along its ray (the nearest of ANGLES; conjugates share the reach)."""
    theta = np.mod(np.angle(lam), 2 * np.pi)
    theta = np.where(theta > 1.5 * np.pi, 3 * np.pi - theta, theta)  # lower half: reflect (regions are symmetric)
    idx = np.clip(np.rint((theta - 0.5 * np.pi) / (np.pi / (len(ANGLES) - 1))).astype(int), 0, len(ANGLES) - 1)
    return _reach(method)[idx] / np.abs(lam)


@functools.cache
def _solver(graphdef, method: str, steps: int, t1: float):
    """x(t1) of dx/dt = F(x) - gamma x (F = merge(graphdef, state)) by `steps` steps of `method`, jitted,
    one solve per sample (vmap): an implicit step then solves a system of one sample's size, not the batch's."""

    def g(t, x, args):
        state, gamma = args
        return nnx.merge(graphdef, state)(t, x) - gamma * x

    def one(state, gamma, x0):
        return on.odeint(g, x0, 0.0, t1, steps, integrator=method, args=(state, gamma)).x

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


@final
class _ResNet(nnx.Module):
    """stem (linear) -> N Euler steps of per-step MLP fields on [0, N h] -> head (linear), h = exp(s).

    s is a parameter for every step rule (one compiled train step serves them all); the rules differ in
    its start, log 1 or log(1/N) (or log h0 when learned), and in whether its gradient is kept.
    """

    def __init__(self, d_in: int, width: int, depth: int, classes: int, h0: float, rngs: nnx.Rngs):
        self.stem = nnx.Linear(d_in, width, rngs=rngs)
        self.layers = on.fields.stack(lambda r: on.fields.MLPField(width, width, time=False, rngs=r), depth, rngs)
        self.head = nnx.Linear(width, classes, rngs=rngs)
        self.depth = depth
        self.log_h = nnx.Param(jnp.asarray(math.log(h0), jnp.float32))

    def h(self):
        return jnp.exp(self.log_h[...])

    def features(self, x):
        return on.odeint(on.PerStep(self.layers), self.stem(x), 0.0, self.depth * self.h(), self.depth,
                         integrator="euler").x

    def __call__(self, x):
        return self.head(self.features(x))


def _initial_h(rule: str, depth: int) -> float:
    """h = 1, h = 1/N, or for the learned rule the geometric middle 1/sqrt(N) (neither rule's value)."""
    return {"one": 1.0, "t_over_n": 1.0 / depth, "learned": 1.0 / math.sqrt(depth)}[rule]


def _train_resnets(data, options: Options, seed: int) -> dict[str, tuple[_ResNet, list[float]]]:
    """Adam on the cross-entropy for every step rule, from the same initial weights (same seed) and through
    one compiled step: the gradient of s = log h is multiplied by `learn` (0 for the fixed rules; Adam's
    update of a parameter whose gradients are all 0 is 0, so s stays at its start)."""
    d_in = int(np.prod(data.x_train.shape[1:]))
    tx = optax.adam(options.lr)
    graphdef = None

    @jax.jit
    def step(params, rest, opt_state, x, y, learn):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p, rest)(x)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        grads["log_h"] = jax.tree.map(lambda g: g * learn, grads["log_h"])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = data.x_train.reshape(len(data.x_train), -1), data.y_train
    out = {}
    for rule in STEP_RULES:
        model = _ResNet(d_in, options.width, options.depth, data.num_classes, _initial_h(rule, options.depth),
                        nnx.Rngs(seed))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        opt_state, learn = tx.init(params), jnp.asarray(float(rule == "learned"), jnp.float32)
        losses = []
        for epoch in range(options.epochs):
            epoch_losses = []
            for idx in batches(len(x), options.batch_size, seed=seed, epoch=epoch):
                params, opt_state, loss = step(params, rest, opt_state, x[idx], y[idx], learn)
                epoch_losses.append(loss)
            losses.append(float(np.mean(jax.device_get(epoch_losses))))
        out[rule] = (nnx.merge(graphdef, params, rest), losses)
    return out


@final
@studies.study.register("step_size")
class StepSize(studies.Study):
    title = "Step size: where explicit steps blow up, and why h = 1 may be suboptimal"
    claim = (
        "A step of an explicit method multiplies the mode of eigenvalue lambda of dF/dx by R(h lambda); once h "
        "lambda leaves the stability region (h > r(arg lambda) / |lambda|, r the region's reach along that "
        "direction) the explicit solve blows up, while A-stable implicit steps (BackwardEuler) stay bounded for "
        "every h on decaying modes (Hairer & Wanner 1996, 'Solving ODEs II: stiff problems', ch. IV.2; for "
        "residual networks Haber & Ruthotto 2017, Inverse Problems 34, who scale the step h = T/N). Whether "
        "ResNets should take h = 1 or h = T/N is open: the ODE view argues for h = T/N (Haber & Ruthotto 2017; "
        "Chen et al. 2018, NeurIPS), ReZero-style learned scales (Bachlechner et al. 2021) let training choose."
    )
    sizes = {
        "smoke": Options(node=(*_NODE, "data.n_train=200", "data.n_test=100", "model.width=8", "optim.epochs=3",
                               "optim.batch_size=50"),
                         steps=(4, 16), reference=256, inputs=32, depth=4, width=8, epochs=3, batch_size=50),
        "full": Options(node=(*_NODE, "data.n_train=1000", "data.n_test=500", "model.width=16", "optim.epochs=20",
                              "optim.batch_size=100"),
                        steps=(1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 128), reference=2048,
                        inputs=128, depth=16, width=16, epochs=20, batch_size=100),
    }
    smoke_expect = ("explicit_blows_up_past_edge", "backward_euler_bounded_damped")

    def run(self, options: Options, report: studies.Report) -> None:
        from experiments.studies._trained import train

        trained = train([*options.node, f"seed={report.seed}"], report.subdir("node"))
        self._sweep(options, report, trained)
        self._depth(options, report, trained.data)

    # part 1 -------------------------------------------------------------------------------------------------
    def _sweep(self, options: Options, report: studies.Report, trained) -> None:
        import matplotlib.pyplot as plt

        model, data = trained.model, trained.data
        block = model.stages[0]
        T = block.t1
        x = jnp.asarray(data.x_test[: options.inputs]).reshape(options.inputs, -1)
        labels = np.asarray(data.y_test[: options.inputs])
        x0 = model.stem(x)
        graphdef, state = nnx.split(block.field)
        fields = {"trained": 0.0, "damped": float(options.damping)}
        report.setup(
            f"Part 1: a Neural ODE (autonomous MLP field, width {x0.shape[-1]}, T = {T:g}) trained with "
            f"`odenets.train.loop.fit` (runs/node/: `{' '.join(options.node)}`), test accuracy "
            f"{trained.summary['test_accuracy']:.3f}. Its field F is integrated from the stem's output of "
            f"{options.inputs} test inputs with h = T/N, N in {list(options.steps)}, by {', '.join(METHODS)}, as "
            f"trained (gamma = 0) and damped, G(x) = F(x) - gamma x with gamma = {options.damping:g}: the same "
            "Jacobian shifted left by gamma, a stiff field with a known spectrum. Error: ||x_N - x_ref|| / "
            f"||x_ref|| over the batch, x_ref by RK4 with {options.reference} steps. A solve blows up when "
            f"||x_N|| > {BLOWUP:g} ||x_ref|| or is non-finite. The spectrum: eigenvalues lambda of dF/dx - "
            "gamma I at the states of the reference trajectory (16 points in time, every input; "
            "`odenets.analysis.step_spectra`); the prediction h* = r(arg lambda) / |lambda| uses the eigenvalue "
            "of largest modulus with Re lambda < 0 (dominant) and, as a worst case, the smallest h* over all "
            "eigenvalues with Re lambda < 0; r is read off `odenets.analysis.stable` along the ray."
        )
        sp = analysis.step_spectra(block.field, x0, t1=T, steps=16, integrator="rk4")
        lam0 = sp.eigenvalues.reshape(-1) / sp.h  # eigenvalues of dF/dx
        rows, edges, curves = [], {}, {}
        for fname, gamma in fields.items():
            lam = lam0 - gamma
            ref = np.asarray(_solver(graphdef, "rk4", options.reference, T)(state, gamma, x0))
            decaying = lam[lam.real < 0]
            dom = decaying[np.argmax(np.abs(decaying))] if decaying.size else None
            report.value(f"{fname}_spectrum", {
                "max_abs": float(np.max(np.abs(lam))), "max_re": float(np.max(lam.real)),
                "min_re": float(np.min(lam.real)),
                "dominant_decaying": None if dom is None else [dom.real, dom.imag]})
            for m in METHODS:
                h_dom = float(_critical_h(m, np.array([dom]))[0]) if dom is not None else math.inf
                h_worst = float(np.min(_critical_h(m, decaying))) if decaying.size else math.inf
                errs, norms, accs, blown = [], [], [], []
                for n in options.steps:
                    xn = np.asarray(_solver(graphdef, m, n, T)(state, gamma, x0))
                    finite = bool(np.all(np.isfinite(xn)))
                    err = float(np.linalg.norm(xn - ref) / np.linalg.norm(ref)) if finite else math.inf
                    ratio = float(np.linalg.norm(xn) / np.linalg.norm(ref)) if finite else math.inf
                    acc = (float(np.mean(np.argmax(np.asarray(model.head(jnp.asarray(xn))), -1) == labels))
                           if finite and gamma == 0.0 else None)
                    errs.append(err), norms.append(ratio), accs.append(acc)
                    blown.append(not finite or ratio > BLOWUP)
                    rows.append([fname, m, n, T / n, err, ratio, acc, not blown[-1]])
                hs = [T / n for n in options.steps]
                bounded_h = [h for h, b in zip(hs, blown) if not b]
                blown_h = [h for h, b in zip(hs, blown) if b]
                edges[(fname, m)] = {"predicted_dominant": h_dom, "predicted_worst": h_worst,
                                     "largest_bounded": max(bounded_h) if bounded_h else None,
                                     "smallest_blown": min(blown_h) if blown_h else None}
                curves[(fname, m)] = (hs, errs)
        report.table("sweep", ["field", "integrator", "N", "h", "error", "||x_N|| / ||x_ref||", "accuracy",
                               "bounded"], rows,
                     caption="Every solve of the sweep (accuracy: the trained head on x_N, undamped field only)")
        report.table("edges", ["field", "integrator", "predicted h* (dominant)", "predicted h* (worst)",
                               "largest bounded h", "smallest blown-up h"],
                     [[f, m, *e.values()] for (f, m), e in edges.items()],
                     caption="Where explicit integration blows up: predicted from the spectrum, observed in the "
                             "sweep (inf: the region holds the whole ray, or no decaying eigenvalue; -: none in "
                             "the sweep)")
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, fname in zip(axes, fields):
            for c, m in zip(colours, METHODS):
                hs, errs = curves[(fname, m)]
                shown = [min(e, 1e6) for e in errs]
                ax.loglog(hs, shown, "o-", color=c, label=m)
                h_dom = edges[(fname, m)]["predicted_dominant"]
                if math.isfinite(h_dom) and h_dom < 10 * max(hs):
                    ax.axvline(h_dom, color=c, linestyle="--", linewidth=1, label=f"{m}: predicted edge h*")
            ax.set_xlabel("step h = T / N")
            ax.set_title(f"{fname} field (gamma = {fields[fname]:g})")
            ax.legend(fontsize="small")
        axes[0].set_ylabel("relative error vs fine RK4 (capped at 1e6)")
        report.figure("error_vs_h", fig, "Error against h for each integrator, with the edge predicted from the "
                                         "dominant decaying eigenvalue (dashed)")
        self._sweep_findings(report, edges, curves, fields, options)

    @staticmethod
    def _sweep_findings(report, edges, curves, fields, options) -> None:
        ok, parts = True, []
        for m in ("euler", "rk4"):
            e = edges[("damped", m)]
            h_star, below, above = e["predicted_dominant"], e["largest_bounded"], e["smallest_blown"]
            hs, errs = curves[("damped", m)]
            blown = [h for h, err in zip(hs, errs) if not math.isfinite(err) or err > BLOWUP]
            holds = above is not None and below is not None and above > below
            holds = holds and all(h > below for h in blown)  # one transition: bounded below it, blown above
            holds = holds and 0.5 * h_star <= above and below <= 2.0 * h_star
            ok &= holds
            parts.append(f"{m}: predicted h* = {h_star:.3g}, largest bounded h = {below}, smallest blown-up h = "
                         f"{above}")
        report.finding(
            "explicit_blows_up_past_edge", ok,
            f"on the damped field (gamma = {fields['damped']:g}) Euler and RK4 stay bounded below the edge h* "
            "predicted from the dominant decaying eigenvalue and blow up above it (the observed transition within "
            "a factor 2 of h*).",
            "; ".join(parts) + ".",
        )
        values = report.results["values"]
        for fname in fields:
            e = edges[(fname, "backward_euler")]
            hs, errs = curves[(fname, "backward_euler")]
            max_re = values[f"{fname}_spectrum"]["max_re"]
            report.finding(
                f"backward_euler_bounded_{fname}", e["smallest_blown"] is None,
                f"BackwardEuler stays bounded at every h on the {fname} field (A-stable: every decaying mode is "
                "damped).",
                f"smallest blown-up h: {e['smallest_blown']}; largest error {max(errs):.3g} at h = "
                f"{hs[int(np.argmax(errs))]:.3g}; the field's eigenvalues reach Re lambda = {max_re:.3g}"
                + ("" if max_re <= 0 else " (expanding modes, outside A-stability's guarantee): I - h dF/dx is "
                   "singular where h lambda = 1, so near h = 1 / lambda (from " + f"{1 / max_re:.3g}" + ") the "
                   "implicit step's equation has no unique solution and its Newton iteration can fail"
                   ) + ".",
            )
        e, r = edges[("trained", "euler")], edges[("trained", "rk4")]
        report.note(
            "Undamped, the trained field is not stiff and its linear prediction does not show: its eigenvalues "
            f"reach Re lambda = {values['trained_spectrum']['max_re']:.3g} (expanding directions, where every "
            "method's error grows with the flow itself), its decaying eigenvalues lie near the imaginary axis "
            f"(past the predicted edges, h* = {e['predicted_dominant']:.3g} for Euler and "
            f"{r['predicted_dominant']:.3g} for RK4, |R(h lambda)| is barely above 1 per step), and the field is "
            "bounded (tanh hidden layer), "
            "so x_N cannot grow faster than linearly in T: smallest blown-up h for Euler "
            f"{e['smallest_blown']}, for RK4 {r['smallest_blown']}; the error only grows as O(h) and O(h^4)."
        )

    # part 2 -------------------------------------------------------------------------------------------------
    def _depth(self, options: Options, report: studies.Report, data) -> None:
        import matplotlib.pyplot as plt

        x_test = jnp.asarray(data.x_test).reshape(len(data.x_test), -1)
        rows, results, losses = [], {}, {}
        for rule, (model, curve) in _train_resnets(data, options, report.seed).items():
            acc = float(np.mean(np.argmax(np.asarray(model(x_test)), -1) == np.asarray(data.y_test)))
            h = float(model.h())
            sample = x_test[: min(32, len(x_test))]
            sp = analysis.step_spectra(on.PerStep(model.layers), model.stem(sample), t1=options.depth * h,
                                       steps=options.depth, integrator="euler")
            radius = np.max(np.abs(sp.eigenvalues), axis=-1)  # (N, B): spectral radius of h dF_k/dx
            results[rule] = {"h": h, "accuracy": acc, "loss": curve[-1], "radius_max": float(radius.max()),
                             "radius_median": float(np.median(radius)),
                             "inside_euler": float(analysis.fraction_inside("euler", sp.eigenvalues))}
            losses[rule] = curve
            rows.append([rule, h, options.depth * h, curve[-1], acc, float(radius.max()), float(np.median(radius)),
                         results[rule]["inside_euler"]])
        report.setup(
            f"Part 2: a per-step ResNet (linear stem, {options.depth} Euler steps of per-step MLP fields of width "
            f"{options.width}, linear head) on the same data, trained {options.epochs} epochs with Adam (lr "
            f"{options.lr:g}, batch {options.batch_size}) from the same initial weights with h = 1, h = 1/N and a "
            f"learned h = exp(s) (s trained with the weights, starting at h = 1/sqrt(N) = "
            f"{1 / math.sqrt(options.depth):.3g}); `odenets.train.loop.fit` has no learned-step option, so the "
            "three run through one small loop over `odeint` (t1 = N h, differentiated in h)."
        )
        report.table("depth", ["h rule", "h", "t1 = N h", "final train loss", "test accuracy",
                               "max spectral radius of h J", "median spectral radius", "inside euler"], rows,
                     caption=f"Depth N = {options.depth}: h = 1, h = 1/N, learned h")
        fig, ax = plt.subplots(figsize=(6, 4))
        for rule in STEP_RULES:
            label = f"{rule} (h = {results[rule]['h']:.3g})"
            ax.semilogy(range(1, len(losses[rule]) + 1), losses[rule], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (cross-entropy)")
        ax.legend()
        report.figure("depth_losses", fig, f"Training loss of the depth-{options.depth} ResNet for each step rule")
        one, small, learned = (results[r] for r in STEP_RULES)
        report.finding(
            "h_one_larger_spectrum", one["radius_max"] > small["radius_max"],
            "with h = 1 the step's h J is larger than with h = 1/N (the weights do not shrink by N to "
            "compensate), so its eigenvalues sit further out, towards or past the edge of Euler's region.",
            f"max spectral radius of h J: h = 1 {one['radius_max']:.3g}, h = 1/N {small['radius_max']:.3g}, "
            f"learned (h = {learned['h']:.3g}) {learned['radius_max']:.3g}; inside Euler's region: "
            f"{one['inside_euler']:.3f}, {small['inside_euler']:.3f}, {learned['inside_euler']:.3f}.",
        )
        report.finding(
            "h_one_not_best", one["loss"] > max(small["loss"], learned["loss"]),
            "h = 1 is not the best step: with the same epochs, h = 1/N and a learned h both reach a lower "
            "training loss than h = 1.",
            "test accuracy: " + ", ".join(f"{r} {results[r]['accuracy']:.3f}" for r in STEP_RULES)
            + "; final training loss: " + ", ".join(f"{r} {results[r]['loss']:.3g}" for r in STEP_RULES) + ".",
        )
        report.value("learned_h", learned["h"])
        h0 = _initial_h("learned", options.depth)
        report.note(
            f"The learned step moved from h = {h0:.3g} to {learned['h']:.3g} ({learned['h'] / h0 - 1:+.1%}) in "
            f"{options.epochs} epochs (Adam, lr {options.lr:g} on s = log h). The per-step weights can absorb any "
            "scale of h (F_k -> c F_k), which may leave s little gradient; we did not test this."
        )
