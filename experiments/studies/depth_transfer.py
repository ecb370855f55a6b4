"""Sander, Ablin & Peyre (2022), "Do residual neural networks discretize neural ordinary differential
equations?": depth transfer of a trained ResNet, and the distance of a linear ResNet to its ODE.

Part 1, trained nets. A ResNet x_{k+1} = x_k + h F_k(x_k), h = 1 / N (`resnet`, step_size=t_over_n:
the stage integrates over [0, 1]), MLP fields F_k with per-step weights theta_k, is trained on MNIST-1D
at N steps from two initialisations of the same draws:

    iid      theta_0 .. theta_{N-1} independent (LeCun normal, the library's initialiser)
    smooth   `analysis.smooth_depth(model, K)`: K of those draws at evenly spaced steps, interpolated
             in depth with each step's variance kept (smooth in depth: increments O(K / N))

and evaluated at M steps with the per-step weights interpolated linearly in depth
(`analysis.interpolate_depth`: theta'_j = theta(j / (M - 1)), h' = 1 / M). If the trained net
discretises an ODE dx/dt = F(x; theta(t)), the M-step nets are other discretisations of that ODE
and their accuracy holds across M; if the weights are rough in depth, they are not.
`analysis.roughness` (sum |theta_{k+1} - theta_k|^2 / sum |theta_k|^2) says how smooth the weights
are before and after training. Nets trained at N = 4 .. 64 (`depths`) are compared with the ODE their
own weights define (interpolated to `fine` steps): |f_N - f_ODE| / |f_ODE| of the test logits against N.

Part 2, linear ResNets (float64, no training). x_{k+1} = x_k + (1 / N) A_k x_k (`odeint`, Euler,
per-step A_k) on R^d:

    smooth   A_k = A(k / N), A(t) = A_0 + cos(pi t) A_1: the limit is dx/dt = A(t) x, solved by
             RK4 at 4096 steps (cross-checked by diffrax Dopri8); Euler's global error is O(1 / N)
    iid      A_k = A_0 + sigma G_k, G_k i.i.d.: the noise averages out, sum_k G_k / N ~ N^{-1/2},
             and the limit is the mean ODE dx/dt = A_0 x, x(1) = expm(A_0) x_0 (closed form)

The relative error |x_N - x(1)| / |x(1)| over a batch of x_0 (RMS over `draws` draws for iid),
and its slope in log-log against N.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.analysis import interpolate_depth, per_step_params, roughness, smooth_depth
from odenets.perstep import PerStep
from odenets.solve import odeint

INITS = ("smooth", "iid")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    data: tuple[str, ...] = ("data=mnist1d",)  # `odenets run` overrides of the data group
    width: int = 32
    depth: int = 16  # N, the training steps (h = 1 / N)
    anchors: int = 3  # K, the smooth initialisation's anchor steps
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    n_train: int | None = None  # the first n_train training signals (None: all)
    ms: tuple[int, ...] = (2, 3, 4, 8, 12, 16, 24, 32, 64, 128)  # the evaluation step counts M
    depths: tuple[int, ...] = (4, 8, 16, 32, 64)  # nets trained at each of these N (both inits), each compared
    # with the ODE its weights define (interpolated to `fine` steps); () skips it
    fine: int = 512
    dim: int = 4  # linear ResNets: the state's dimension d
    batch: int = 32  # ... the number of initial states x_0
    ns: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024)  # ... their depths N
    sigma: float = 1.0  # ... the i.i.d. weights' noise A_k = A_0 + sigma G_k, G_k ~ N(0, 1 / d)
    draws: int = 16  # ... draws of the i.i.d. weights per N
    reference_steps: int = 4096  # ... RK4 steps of the smooth weights' limit ODE
    diffrax_check: bool = True  # ... and that limit cross-checked by diffrax Dopri8 (rtol = atol = 1e-12)

    def __post_init__(self):
        for key in ("width", "depth", "anchors", "epochs", "batch_size", "dim", "batch", "draws"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.integer("study.anchors", self.anchors, 1, self.depth)
        validate.number("study.lr", self.lr, low=0.0)
        validate.number("study.sigma", self.sigma, low=0.0)
        validate.integer("study.reference_steps", self.reference_steps, 1)
        validate.boolean("study.diffrax_check", self.diffrax_check)
        if self.n_train is not None:
            validate.integer("study.n_train", self.n_train, 1)
        for m in self.ms:
            validate.integer("study.ms", m, 1)
        for n in self.depths:
            validate.integer("study.depths", n, self.anchors)
        if len(self.depths) == 1:
            raise ValueError(f"study.depths needs two depths or more for a slope (or none), got {self.depths!r}")
        validate.integer("study.fine", self.fine, 1)
        if len(self.ns) < 2:
            raise ValueError(f"study.ns needs at least two depths for a slope, got {self.ns!r}")
        for n in self.ns:
            validate.integer("study.ns", n, 1)


def model_overrides(options: Options, depth: int | None = None) -> list[str]:
    """The ResNet of N = depth steps (None: options.depth) with h = 1 / N (MLP fields, one stage)."""
    depth = options.depth if depth is None else depth
    return ["model=resnet", "model.kind=mlp", f"model.width={options.width}", f"model.depth={depth}",
            "model.stages=1", "model.step_size=t_over_n"]


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, x):
    return nnx.merge(graphdef, state, copy=True)(x)


def logits(model, x) -> np.ndarray:
    """model(x), compiled once per model structure (the two initialisations share it at every M)."""
    return np.asarray(_logits(*nnx.split(model), x))


def slope(ns, errors) -> float:
    """The least-squares slope of log(error) against log(N)."""
    return float(np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(errors, float)), 1)[0])


def _batched(t, x, a):
    """dx/dt = A x for a stack of problems: x (R, B, d), A (R, d, d)."""
    return jnp.einsum("rbd,red->rbe", x, a)


def _smooth_a(t, x, a):
    """dx/dt = A(t) x, A(t) = A_0 + cos(pi t) A_1, a = (A_0, A_1); x (B, d)."""
    return x @ (a[0] + jnp.cos(jnp.pi * t) * a[1]).T


def linear_errors(options: Options, seed: int) -> dict[str, np.ndarray]:
    """Relative distance |x_N - x(1)| / |x(1)| of linear ResNets to their limit ODE at every N (module
    docstring, part 2): {"smooth": (len(ns),), "iid": (len(ns),) (RMS over draws)}. The smooth weights and
    the `draws` i.i.d. draws of one N are one `odeint` call (a stack of problems); the smooth limit is
    RK4 at `reference_steps` steps (`diffrax_check`: and diffrax Dopri8 at rtol = atol = 1e-12)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng([seed, 13])
        d, r = options.dim, options.draws
        a0, a1 = rng.normal(size=(2, d, d)) / np.sqrt(d)
        x0 = rng.normal(size=(options.batch, d))
        smooth = np.asarray(odeint(_smooth_a, jnp.asarray(x0), 0.0, 1.0, options.reference_steps,
                                   integrator="rk4", args=(jnp.asarray(a0), jnp.asarray(a1))).x)
        ref = {"smooth": smooth, "iid": x0 @ np.asarray(jax.scipy.linalg.expm(jnp.asarray(a0))).T}
        if options.diffrax_check:
            import diffrax

            sol = diffrax.diffeqsolve(diffrax.ODETerm(_smooth_a), diffrax.Dopri8(), 0.0, 1.0, None,
                                      jnp.asarray(x0), (jnp.asarray(a0), jnp.asarray(a1)),
                                      stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
                                      max_steps=100_000)
            ref["diffrax_gap"] = float(np.max(np.abs(np.asarray(sol.ys[-1]) - smooth)))
        rel = lambda x, ref: float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
        out = {"smooth": [], "iid": []}
        for n in options.ns:
            t = np.arange(n) / n
            stacks = np.concatenate([(a0 + np.cos(np.pi * t)[:, None, None] * a1)[:, None],
                                     a0 + options.sigma * rng.normal(size=(n, r, d, d)) / np.sqrt(d)], axis=1)
            xs = np.asarray(odeint(_batched, jnp.asarray(np.broadcast_to(x0, (r + 1, *x0.shape))), 0.0, 1.0, n,
                                   integrator="euler", args=PerStep(jnp.asarray(stacks))).x)
            out["smooth"].append(rel(xs[0], ref["smooth"]))
            out["iid"].append(float(np.sqrt(np.mean([rel(xi, ref["iid"]) ** 2 for xi in xs[1:]]))))
    result = {k: np.asarray(v) for k, v in out.items()}
    if "diffrax_gap" in ref:
        result["diffrax_gap"] = ref["diffrax_gap"]
    return result


@final
@studies.study.register("depth_transfer")
class DepthTransfer(studies.Study):
    title = "Depth transfer: a ResNet trained at N steps, run at M steps; linear ResNets' distance to their ODE"
    claim = (
        "Sander, Ablin & Peyre (2022, 'Do residual neural networks discretize neural ordinary differential "
        "equations?', NeurIPS, arXiv:2205.14612): a ResNet x_{k+1} = x_k + (1/N) F(x_k; theta_k) trained from "
        "an initialisation smooth in depth (theta_k = theta(k / N), theta smooth) keeps smooth weights and is a "
        "discretisation of a neural ODE: its weights interpolated to M != N steps give nearly the same "
        "accuracy, while the same net trained from an i.i.d. initialisation is no ODE and breaks when M "
        "differs from N (their Fig. 4, ResNets on CIFAR-10 / ImageNet); for linear ResNets they prove the "
        "trained network converges to its limit ODE at rate 1 / N."
    )
    sizes = {
        "smoke": Options(width=16, depth=8, anchors=2, epochs=10, lr=1e-2, ms=(4, 8, 16, 32), depths=(),
                         ns=(8, 16, 32, 64), batch=16, draws=4, reference_steps=512, diffrax_check=False),
        "full": Options(),
    }
    smoke_expect = ("smooth_transfers_better", "smooth_stays_smooth", "linear_rate_one")

    def run(self, options: Options, report: studies.Report) -> None:
        o = options
        init = {"smooth": lambda m: smooth_depth(m, o.anchors), "iid": None}
        nets = {name: nets_.train(model_overrides(o), epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                                  seed=report.seed, n_train=o.n_train, evaluate=False, data=o.data,
                                  init=init[name])
                for name in INITS}
        data = nets["iid"].data
        x, y = np.asarray(data.x_test), np.asarray(data.y_test)
        rough0 = {}
        for name in INITS:
            s = nets_.setup(model_overrides(o), epochs=0, batch_size=o.batch_size, lr=o.lr, seed=report.seed,
                            n_train=o.n_train, data=o.data, init=init[name])
            rough0[name] = roughness(per_step_params(nnx.merge(s.graphdef, s.state[0], s.state[1]))[0])
        rough = {name: roughness(per_step_params(net.model)[0]) for name, net in nets.items()}
        report.setup(
            f"Part 1: data {' '.join(o.data)} ({len(data.x_train) if o.n_train is None else o.n_train} train / "
            f"{len(x)} test signals, {data.output_dim} classes). A ResNet of N = {o.depth} steps with h = 1 / N "
            f"(`model=resnet model.step_size=t_over_n`, MLP fields of width {o.width}, per-step weights), trained "
            f"in memory by odenets' train step ({o.epochs} epochs, batch {o.batch_size}, lr {o.lr}) from the "
            f"library's i.i.d. draws (`iid`) or from `analysis.smooth_depth(model, K = {o.anchors})` of the same "
            "draws (`smooth`), then evaluated at M steps by `analysis.interpolate_depth` (h' = 1 / M)"
            + (f"; the same trained at N = {', '.join(map(str, o.depths))} and compared with the ODE of its "
               f"interpolated weights ({o.fine} steps). " if o.depths else ". ")
            + f"Part 2: linear ResNets on R^{o.dim}, x_(k+1) = x_k + A_k x_k / N (`odeint`, Euler, `PerStep`), "
            f"float64, {o.batch} initial states; smooth A_k = A(k/N) against RK4 at {o.reference_steps} steps, "
            "i.i.d. A_k = "
            f"A_0 + {o.sigma} G_k against expm(A_0) ({o.draws} draws per N, RMS)."
        )
        acc, dist = {}, {}
        for name, net in nets.items():
            base = logits(net.model, x)
            acc[name], dist[name] = [], []
            for m in o.ms:
                out = base if m == o.depth else logits(interpolate_depth(net.model, m), x)
                acc[name].append(float(np.mean(np.argmax(out, -1) == y)))
                dist[name].append(float(np.linalg.norm(out - base) / np.linalg.norm(base)))
        acc_n = {name: float(np.mean(np.argmax(logits(net.model, x), -1) == y)) for name, net in nets.items()}
        report.table("accuracy_vs_m", ["M", "h' = 1/M", *[f"{n} accuracy" for n in INITS],
                                       *[f"{n} |f_M - f_N| / |f_N|" for n in INITS]],
                     [[m, 1.0 / m, acc["smooth"][i], acc["iid"][i], dist["smooth"][i], dist["iid"][i]]
                      for i, m in enumerate(o.ms)],
                     caption=f"Test accuracy of the nets trained at N = {o.depth}, weights interpolated to M "
                             "steps")
        report.table("roughness", ["init", "roughness at init", "roughness trained", "accuracy at N",
                                   "train error (last epoch)"],
                     [[n, rough0[n], rough[n], acc_n[n], nets[n].train_error] for n in INITS],
                     caption="Roughness sum_k |theta_(k+1) - theta_k|^2 / sum_k |theta_k|^2 of the per-step "
                             "weights")
        lin = linear_errors(o, report.seed)
        gap = lin.pop("diffrax_gap", None)
        slopes = {k: slope(o.ns, v) for k, v in lin.items()}
        report.table("linear", ["N", "smooth: relative error", "iid: relative error (RMS)"],
                     [[n, lin["smooth"][i], lin["iid"][i]] for i, n in enumerate(o.ns)],
                     caption="Linear ResNets: distance to the limit ODE at x(1)")
        report.value("slopes", slopes)
        if gap is not None:
            report.value("reference_vs_diffrax", gap)
            report.note(f"The smooth limit x(1) (RK4, {o.reference_steps} steps) agrees with diffrax Dopri8 "
                        f"(rtol = atol = 1e-12) to {gap:.2g} (max abs).")
        trained = self._trained_distance(report, o, init, x, y) if o.depths else None
        self._figures(report, o, acc, acc_n, lin, slopes, trained)
        self._findings(report, o, acc, acc_n, rough0, rough, slopes, lin, dist)
        if trained is not None:
            self._trained_findings(report, o, trained)

    @staticmethod
    def _trained_distance(report, o, init, x, y) -> dict[str, dict[str, np.ndarray]]:
        """Nets trained at every N of o.depths from both initialisations: the relative distance of their
        logits to those of the ODE their weights define (`interpolate_depth` to o.fine steps), accuracy at N
        and at o.fine, roughness."""
        out = {name: {"distance": [], "accuracy": [], "accuracy_fine": [], "roughness": []} for name in INITS}
        for n in o.depths:
            for name in INITS:
                net = nets_.train(model_overrides(o, n), epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                                  seed=report.seed, n_train=o.n_train, evaluate=False, data=o.data,
                                  init=init[name])
                f_n, f_fine = logits(net.model, x), logits(interpolate_depth(net.model, o.fine), x)
                row = out[name]
                row["distance"].append(float(np.linalg.norm(f_n - f_fine) / np.linalg.norm(f_fine)))
                row["accuracy"].append(float(np.mean(np.argmax(f_n, -1) == y)))
                row["accuracy_fine"].append(float(np.mean(np.argmax(f_fine, -1) == y)))
                row["roughness"].append(roughness(per_step_params(net.model)[0]))
        out = {name: {k: np.asarray(v) for k, v in row.items()} for name, row in out.items()}
        report.table("trained_distance", ["N", *[f"{name} {k}" for name in INITS for k in
                                                 ("|f_N - f_ODE| / |f_ODE|", "accuracy N", "accuracy ODE",
                                                  "roughness")]],
                     [[n, *[out[name][k][i] for name in INITS for k in ("distance", "accuracy", "accuracy_fine",
                                                                          "roughness")]]
                      for i, n in enumerate(o.depths)],
                     caption=f"Nets trained at N steps: distance of their logits to the ODE their weights define "
                             f"(interpolated to {o.fine} steps), accuracy at N and at {o.fine} steps, roughness")
        report.value("trained_slopes", {name: slope(o.depths, out[name]["distance"]) for name in INITS})
        return out

    @staticmethod
    def _trained_findings(report, o, trained) -> None:
        slopes = {name: slope(o.depths, trained[name]["distance"]) for name in INITS}
        rough = {name: slope(o.depths, trained[name]["roughness"]) for name in INITS}
        report.value("trained_roughness_slopes", rough)
        report.note(
            f"Trained roughness against N (log-log slope over N = {o.depths[0]} .. {o.depths[-1]}): smooth "
            f"{rough['smooth']:.2f} ({trained['smooth']['roughness'][0]:.3g} -> "
            f"{trained['smooth']['roughness'][-1]:.3g}; increments O(1 / N) give -2), iid {rough['iid']:.2f} "
            f"({trained['iid']['roughness'][0]:.3g} -> {trained['iid']['roughness'][-1]:.3g}). The accuracy of "
            "the ODE of the weights (the nets run at the fine step count) against that at N: smooth "
            + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(trained["smooth"]["accuracy_fine"],
                                                           trained["smooth"]["accuracy"]))
            + "; iid " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(trained["iid"]["accuracy_fine"],
                                                                     trained["iid"]["accuracy"])) + "."
        )
        d = {name: trained[name]["distance"] for name in INITS}
        report.finding(
            "trained_smooth_rate_one", bool(-1.3 < slopes["smooth"] < -0.7),
            "a net trained from the smooth initialisation is within O(1 / N) of the ODE its weights define "
            "(log-log slope of the distance against N within 0.3 of -1; Sander et al. prove it for linear "
            "ResNets).",
            f"slope {slopes['smooth']:.3f}; distance {d['smooth'][0]:.3g} at N = {o.depths[0]} to "
            f"{d['smooth'][-1]:.3g} at N = {o.depths[-1]}.",
        )
        report.finding(
            "trained_iid_no_limit",
            bool(slopes["iid"] > slopes["smooth"] + 0.3 and d["iid"][-1] > d["smooth"][-1]),
            "a net trained from the i.i.d. initialisation approaches the ODE of its interpolated weights more "
            "slowly (slope above the smooth net's by more than 0.3) and stays farther from it at the largest N.",
            f"slope {slopes['iid']:.3f} (smooth {slopes['smooth']:.3f}); distance {d['iid'][0]:.3g} at N = "
            f"{o.depths[0]} to {d['iid'][-1]:.3g} at N = {o.depths[-1]} (smooth {d['smooth'][-1]:.3g}).",
        )

    @staticmethod
    def _figures(report, o, acc, acc_n, lin, slopes, trained) -> None:
        import matplotlib
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2 if trained is None else 3, figsize=(11 if trained is None else 16, 4))
        ax = axes[0]
        for name, marker in zip(INITS, ("o", "s")):
            ax.plot(o.ms, acc[name], marker + "-", label=f"{name} init (trained at N = {o.depth})")
        ax.axvline(o.depth, color="k", ls="--", lw=1, label="M = N")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation steps M (weights interpolated in depth)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax = axes[1]
        ns = np.asarray(o.ns, float)
        for name, marker, rate in (("smooth", "o", 1.0), ("iid", "s", 0.5)):
            line, = ax.loglog(ns, lin[name], marker + "-", label=f"{name} A_k: slope {slopes[name]:.2f}")
            ax.loglog(ns, lin[name][0] * (ns / ns[0]) ** -rate, ":", color=line.get_color(),
                      label=f"N^-{rate:g}")
        ax.set_xlabel("depth N (h = 1 / N)")
        ax.set_ylabel("|x_N - x(1)| / |x(1)|")
        ax.set_title("linear ResNets, fixed weights")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
        if trained is not None:
            ax = axes[2]
            depths = np.asarray(o.depths, float)
            for name, marker in zip(INITS, ("o", "s")):
                dist = trained[name]["distance"]
                ax.loglog(depths, dist, marker + "-", label=f"{name} init: slope {slope(depths, dist):.2f}")
            ax.loglog(depths, trained["smooth"]["distance"][0] * depths[0] / depths, "k:", label="N^-1")
            ax.set_xticks(depths, [str(n) for n in o.depths])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("training depth N (h = 1 / N)")
            ax.set_ylabel(f"|f_N - f_ODE| / |f_ODE| (ODE: {o.fine} steps)")
            ax.set_title("trained MNIST-1D ResNets")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize="small")
        fig.tight_layout()
        report.figure("depth_transfer", fig, "Left: accuracy of a ResNet trained at N steps and evaluated at M "
                      "steps, smooth vs i.i.d. initialisation (Sander et al. 2022, Fig. 4). Next: linear "
                      "ResNets' distance to their limit ODE against N"
                      + ("" if trained is None else "; right: trained ResNets' distance to the ODE their "
                         "weights define"))

    @staticmethod
    def _findings(report, o, acc, acc_n, rough0, rough, slopes, lin, dist) -> None:
        others = [i for i, m in enumerate(o.ms) if m != o.depth]
        drop = {n: float(np.mean([acc_n[n] - acc[n][i] for i in others])) for n in INITS}
        worst = {n: float(max(acc_n[n] - acc[n][i] for i in others)) for n in INITS}
        report.value("mean_drop", drop)
        report.value("worst_drop", worst)
        fine = [i for i in others if o.ms[i] >= o.depth / 2]  # resolutions not coarser than half of N's
        fine_mean = {n: float(np.mean([acc_n[n] - acc[n][i] for i in fine])) if fine else 0.0 for n in INITS}
        report.finding(
            "smooth_transfers_better", bool(fine_mean["smooth"] + 0.02 < fine_mean["iid"]),
            "interpolating the weights to M != N steps (M >= N / 2) costs the smooth-initialised net less "
            "accuracy than the i.i.d.-initialised one (mean drop, by more than 0.02).",
            f"mean drop at M >= N / 2 smooth {fine_mean['smooth']:.3f}, iid {fine_mean['iid']:.3f}; over every M "
            f"!= N smooth {drop['smooth']:.3f}, iid {drop['iid']:.3f} (accuracy at M = N: smooth "
            f"{acc_n['smooth']:.3f}, iid {acc_n['iid']:.3f}).",
        )
        fine_drop = {n: float(max((acc_n[n] - acc[n][i] for i in fine), default=0.0)) for n in INITS}
        report.value("worst_drop_m_at_least_half_n", fine_drop)
        report.finding(
            "smooth_holds_across_m", bool(fine_drop["smooth"] < 0.05),
            "the smooth-initialised net's accuracy holds at every M >= N / 2: no such M loses 0.05 or more.",
            f"largest drop at M >= N / 2: {fine_drop['smooth']:.3f} (iid: {fine_drop['iid']:.3f}); accuracies "
            + ", ".join(f"{m}: {a:.3f}" for m, a in zip(o.ms, acc["smooth"])) + ".",
        )
        chance_gap = lambda a: a - 1.0 / 10
        report.finding(
            "iid_breaks", bool(worst["iid"] > 0.5 * chance_gap(acc_n["iid"])),
            "the i.i.d.-initialised net breaks at some M != N: it loses more than half of its margin over "
            "chance (0.1).",
            f"largest drop {worst['iid']:.3f} (accuracy at N {acc_n['iid']:.3f}); accuracies "
            + ", ".join(f"{m}: {a:.3f}" for m, a in zip(o.ms, acc["iid"])) + ".",
        )
        report.finding(
            "smooth_stays_smooth", bool(rough["smooth"] < 0.25 * rough["iid"]),
            "training keeps the smooth initialisation smooth in depth: its roughness stays below a quarter of "
            "the i.i.d. net's.",
            f"roughness smooth {rough0['smooth']:.3g} -> {rough['smooth']:.3g}, iid {rough0['iid']:.3g} -> "
            f"{rough['iid']:.3g} (initialisation -> trained).",
        )
        report.finding(
            "linear_rate_one", bool(-1.15 < slopes["smooth"] < -0.85),
            "a linear ResNet with weights sampled from a smooth A(t) converges to dx/dt = A(t) x at rate 1 / N "
            "(log-log slope within 0.15 of -1).",
            f"slope {slopes['smooth']:.3f}; relative error {lin['smooth'][0]:.3g} at N = {o.ns[0]} to "
            f"{lin['smooth'][-1]:.3g} at N = {o.ns[-1]}.",
        )
        report.finding(
            "iid_rate_half", bool(-0.65 < slopes["iid"] < -0.35),
            "with i.i.d. weights the ResNet approaches only the mean ODE dx/dt = A_0 x, at the Monte-Carlo rate "
            "N^-1/2 (slope within 0.15 of -1/2): slower than the smooth weights' 1 / N.",
            f"slope {slopes['iid']:.3f}; RMS relative error {lin['iid'][0]:.3g} at N = {o.ns[0]} to "
            f"{lin['iid'][-1]:.3g} at N = {o.ns[-1]}.",
        )
        coarse = [m for m in o.ms if m < o.depth / 2]
        report.note(
            "The distance |f_M - f_N| / |f_N| of the logits (first table) at the largest M is the trained net's "
            f"distance to the ODE its interpolated weights define: smooth {dist['smooth'][-1]:.3g}, iid "
            f"{dist['iid'][-1]:.3g} at M = {o.ms[-1]} (accuracy there: smooth {acc['smooth'][-1]:.3f}, iid "
            f"{acc['iid'][-1]:.3f}, at M = N {acc_n['smooth']:.3f} and {acc_n['iid']:.3f})."
            + (f" Coarser than N / 2 (M = {', '.join(map(str, coarse))}) both nets lose accuracy: a step h' = 1/M "
               "that large is a coarse Euler discretisation of the learned ODE, smooth weights or not." if coarse
               else "")
            + " The linear part uses weights sampled from A(t) (or i.i.d.), not trained ones: it measures the "
            "discretisation side of the limit, the rate Sander et al. prove for trained linear ResNets."
        )
