"""The Neural ODE demonstration everyone runs first: a 2-D spiral's dynamics learned from one noisy trajectory.

The true system (Chen et al. 2018's demo, odenets' `spiral_ode`): dx/dt = f(x) = x^3 A, x a row vector, x^3
elementwise, A = [[-0.1, 2], [-2, -0.1]], x(0) = [2, 0]. One trajectory is observed at T uniform times on
[0, t_end] with Gaussian noise of std sigma on every observation. As in torchdiffeq's demo the model trains on
windows of w consecutive observations: a window's first (noisy) observation is the initial state, and the
loss is the mean squared error of the model's states at the window's w times (the first one exact, so
RMSE = sqrt(loss w / (w - 1)) over the predicted ones). The model is `odenets.models.trajectory("node")`: an
autonomous field F_theta = MLPField(2, width, 2 hidden layers, tanh) on the state itself; the same field is
trained with Euler, RK4 (both at `steps_per_interval` steps per observation interval) and Dopri5.

What is measured, for each integrator:
  fit error     the RMSE of the path from the true x(0) over the whole [0, t_end], solved by the model's own
                integrator, against the clean trajectory (over training, and at the end);
  field error   || F_theta - f || / || f || (RMS over the clean trajectory's states: the region the data covers);
  chord error   || F_theta - c || / || c ||, c_i = (x(t_(i+1)) - x(t_i)) / h the chord of the flow over one
                interval, which one Euler step per interval needs;
  re-solved     the same learned field solved accurately (RK4, 32 steps per interval): a field that fits
                only through its integrator's error (Euler at a coarse step learns (Phi_h(x) - x) / h, the
                chord of the flow over one step, not its tangent f) loses its fit.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odenets as on
from experiments.studies import _fits
from odenets import data as datasets
from odenets import models
from odenets import study as studies
from odenets._abstract import final
from odenets.data.trajectories import SpiralODE
from odenets.gradients.adjoint import ReconstructionWarning

from ._plots import log_ticks

COLOURS = {"euler": "tab:red", "rk4": "tab:blue", "dopri5": "tab:green"}
ACCURATE = ("rk4", 32)  # the re-solve of a learned field: RK4 at 32 steps per observation interval


def true_field(x: np.ndarray) -> np.ndarray:
    """f(x) = x^3 A for states (..., 2) (row vectors), `spiral_ode`'s field."""
    return np.asarray(x, np.float64) ** 3 @ SpiralODE.A


@final
@dataclasses.dataclass(frozen=True)
class Options:
    t_end: float = 5.0  # horizon (as experiment=spiral_fit: on the dataset's 25 fits decay to the mean)
    num_times: int = 50  # observations of the one trajectory (observation interval t_end / (num_times - 1))
    noise: float = 0.05  # std sigma of the Gaussian noise on every observation
    window: int = 10  # observations per training window (torchdiffeq's batch_time)
    width: int = 64  # hidden units of the field
    integrators: tuple[str, ...] = ("euler", "rk4", "dopri5")
    steps_per_interval: int = 1  # fixed-step integrators' steps per observation interval
    adaptive_gradient: str = "adjoint"  # the adaptive integrators' gradient (fixed-step ones: backprop)
    epochs: int = 600
    batch_size: int = 8
    lr: float = 3e-2  # Adam, cosine decay, clipped at norm 1
    every: int = 25  # epochs between fit-error measurements
    grid: int = 25  # phase-portrait grid points per axis


def observed(o: Options, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts (T,), clean states (T, 2), noisy observations (T, 2)): `spiral_ode` from [2, 0] (spread 0), noise
    drawn from default_rng([seed, 2])."""
    ds = datasets.load("spiral_ode", n_train=1, n_test=1, num_times=o.num_times, t_end=o.t_end, spread=0.0,
                       seed=seed)
    clean = np.asarray(ds.y_train[0], np.float64)
    noisy = clean + o.noise * np.random.default_rng([seed, 2]).standard_normal(clean.shape)
    return np.asarray(ds.ts, np.float64), clean, noisy


def windows(ts: np.ndarray, clean: np.ndarray, noisy: np.ndarray, w: int) -> datasets.Dataset:
    """Every window of w consecutive observations as a trajectory set: training on the noisy observations
    (x = a window's first), testing on the clean ones; ts = the window's times from 0."""
    starts = np.arange(len(ts) - w + 1)
    cut = lambda path: np.stack([path[i:i + w] for i in starts]).astype(np.float32)
    y_train, y_test = cut(noisy), cut(clean)
    return datasets.Dataset("spiral_windows", y_train[:, 0], y_train, y_test[:, 0], y_test, "trajectory",
                            ts=ts[:w] - ts[0])


def trajectory_model(integrator: str, ts, o: Options, seed: int, steps: int | None = None) -> models.Trajectory:
    """The Neural ODE on the state (2 channels), autonomous, with `integrator` at `steps` steps per
    observation interval (None: o.steps_per_interval; adaptive integrators choose their own)."""
    integ = on.integrator(integrator)
    gradient = o.adaptive_gradient if integ.adaptive else "backprop"
    depth = 1 if integ.adaptive else steps or o.steps_per_interval
    return models.trajectory("node", dim=2, ts=ts, width=o.width, depth=depth, time=False, integrator=integ,
                             gradient=gradient, rngs=seed)


def solver(integrator: str, ts, o: Options, seed: int, steps: int | None = None):
    """path(params): the states at ts (T, 2) from the true x(0) = [2, 0] of the field with parameters
    `params` (those of a trained model), solved by `integrator` (`steps` as `trajectory_model`'s); jitted."""
    abstract = _fits.initialise(lambda: trajectory_model(integrator, ts, o, seed, steps), seed)
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    x0 = jnp.asarray([[2.0, 0.0]], jnp.float32)
    path = jax.jit(lambda params, rest, x0: nnx.merge(graphdef, params, rest)(x0)[0])
    return lambda params: path(params, rest, x0)


def field_of(model: models.Trajectory):
    """F_theta(x) for states (..., 2), jitted."""
    graphdef, state = nnx.split(model.field)
    field = jax.jit(lambda state, x: nnx.merge(graphdef, state)(0.0, x))
    return lambda x: field(state, x)


def reconstruction_drifts(caught: list[warnings.WarningMessage]) -> list[float]:
    """The relative drifts |x_rebuilt - x0| / |x0| that the adjoint's `ReconstructionWarning`s among `caught`
    report (NaN where a message gives none); every other warning is shown as usual."""
    drifts = []
    for w in caught:
        if not issubclass(w.category, ReconstructionWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            continue
        found = re.search(r", ([0-9.eE+-]+) relative", str(w.message))
        drifts.append(float(found.group(1)) if found else float("nan"))
    return drifts


def portrait_grid(clean: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(axis (n,), points (n^2, 2)): the square grid over the trajectory's extent (x1 by column, x2 by row)."""
    lim = 1.15 * float(np.max(np.abs(clean)))
    g = np.linspace(-lim, lim, n)
    x1, x2 = np.meshgrid(g, g)
    return g, np.stack([x1.ravel(), x2.ravel()], axis=1)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """|| a - b || / || b ||: the RMS over the rows (N, 2) relative to b's."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.sum((a - b) ** 2) / np.sum(b**2)))


def chord(ts: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """(x(t_(i+1)) - x(t_i)) / h at the states x(t_i), i < T - 1: the field whose one Euler step per
    interval reproduces the true trajectory exactly; it differs from f(x(t_i)) by O(h) (rotated by about
    half the angle the flow turns in one interval)."""
    return np.diff(clean, axis=0) / np.diff(ts)[:, None]


@final
@studies.study.register("spiral")
class Spiral(studies.Study):
    title = "A spiral's dynamics from one noisy trajectory: Euler, RK4 and Dopri5 (Chen et al. 2018's demo)"
    claim = ("Chen et al. (2018, 'Neural Ordinary Differential Equations', NeurIPS; torchdiffeq's ode_demo.py): "
             "a Neural ODE trained on one trajectory of dx/dt = x^3 A, A = [[-0.1, 2], [-2, -0.1]], recovers the "
             "dynamics: the learned phase portrait matches the true one and the fitted path the data. "
             "Fitting through a fixed-step solver fits the solver's discrete map: with a coarse Euler step the "
             "learned field is biased (it matches the data only through Euler's own error), while an accurate "
             "integrator (RK4, Dopri5) learns f itself, to the noise level.")
    sizes = {
        "smoke": Options(num_times=30, t_end=3.0, window=5, width=32, integrators=("euler", "rk4"), epochs=150,
                         batch_size=13, lr=3e-2, every=0, grid=12),
        "full": Options(),
    }
    smoke_expect = ("euler_learns_the_chord", "euler_fit_needs_euler")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        o = options
        ts, clean, noisy = observed(o, report.seed)
        data = windows(ts, clean, noisy, o.window)
        h = ts[1] - ts[0]
        report.setup(
            "The literature: torchdiffeq's demo (Chen et al. 2018) observes dx/dt = x^3 A from x(0) = [2, 0] at "
            "1000 times on [0, 25], fits an MLP field (50 tanh units on x^3) with dopri5 (optionally the "
            "adjoint) on 20 random windows of 10 observations per step, and plots the learned phase portrait "
            "next to the true one.")
        report.setup(
            f"What we run: odenets' `spiral_ode` from [2, 0] (one trajectory), {o.num_times} observations on "
            f"[0, {o.t_end}] (interval h = {h:.4g}; the fast first turns rotate by about {8 * h:.2f} rad per "
            f"interval), Gaussian noise sigma = {o.noise} on each; {len(data.x_train)} windows of {o.window} "
            f"observations; the model `odenets.models.trajectory('node')`: MLPField(2, {o.width}, 2 hidden "
            f"layers, tanh), autonomous, on the state itself; integrators {list(o.integrators)} (fixed-step ones "
            f"at {o.steps_per_interval} step(s) per interval and backprop; adaptive ones with "
            f"{o.adaptive_gradient}, rtol 1e-3); {o.epochs} epochs of Adam (lr {o.lr}, cosine, clip 1, batch "
            f"{o.batch_size}), odenets' own train step. Field error ||F_theta - f|| / ||f|| on the clean "
            f"trajectory's states x(t_i), i < {len(ts) - 1}; chord error ||F_theta - c|| / ||c|| against the "
            f"chord c_i = (x(t_(i+1)) - x(t_i)) / h (the field one Euler step per interval would need); the path "
            f"from the true x(0) over [0, {o.t_end}] against the clean trajectory, by the model's own integrator "
            f"and re-solved by RK4 at {ACCURATE[1]} steps per interval.")

        runs, rows = {}, []
        accurate = solver(*ACCURATE[:1], ts, o, report.seed, steps=ACCURATE[1])
        states, chords = clean[:-1], chord(ts, clean)
        _, grid = portrait_grid(clean, o.grid)
        for name in o.integrators:
            own = solver(name, ts, o, report.seed)
            path_error = lambda m: rmse(own(nnx.state(m, nnx.Param)), clean)  # noqa: B023 (called in this loop)
            run = {}
            model = _fits.initialise(lambda: trajectory_model(name, data.ts, o, report.seed), report.seed)  # noqa: B023
            with warnings.catch_warnings(record=True) as caught:  # the adjoint's drift check, counted
                warnings.simplefilter("always", ReconstructionWarning)
                fit = _fits.fit(model, data, lr=o.lr, batch_size=o.batch_size, epochs=o.epochs, seed=report.seed,
                                every=o.every, measure=path_error)
            run["drifts"] = reconstruction_drifts(caught)
            params = nnx.state(fit.model, nnx.Param)
            # the learned field on the trajectory's states and on the phase portrait's grid, in one call
            learned = np.asarray(field_of(fit.model)(jnp.asarray(np.concatenate([states, grid]), jnp.float32)))
            run["grid_field"], learned = learned[len(states):], learned[: len(states)]
            run |= {"fit": fit, "path": np.asarray(own(params)), "resolved": np.asarray(accurate(params)),
                   "train_rmse": float(np.sqrt(fit.epoch_losses[-1] * o.window / (o.window - 1))),
                   "field_error": relative(learned, true_field(states)), "chord_error": relative(learned, chords),
                   "nfe": float(_fits.epoch_mean(fit.nfe, o.epochs)[-1]),
                   "nfe_backward": float(_fits.epoch_mean(fit.nfe_backward, o.epochs)[-1])}
            run["path_error"], run["resolved_error"] = rmse(run["path"], clean), rmse(run["resolved"], clean)
            runs[name] = run
            rows.append([name, run["train_rmse"], run["path_error"], run["resolved_error"], run["field_error"],
                         run["chord_error"], run["nfe"], run["nfe_backward"], fit.seconds])
        report.table("fits", ["integrator", "train RMSE (noisy windows)", "path RMSE (own integrator)",
                              f"path RMSE (re-solved, RK4 x {ACCURATE[1]})", "field error ||F - f||/||f||",
                              "chord error ||F - c||/||c||", "NFE forward / step", "NFE backward / step",
                              "seconds"],
                     rows, f"After training (noise sigma = {o.noise}): RMSE against the noisy windows (predicted "
                     "points), the path from the true x(0) against the clean trajectory, the learned field "
                     "against f and against the Euler chord c on the trajectory's states, NFE per training step "
                     "(last epoch; -1: unknown)")
        bias = relative(chords, true_field(states))
        report.value("noise", o.noise)
        report.value("observation_interval", float(h))
        report.value("chord_vs_f", bias)

        self.plot_fit(runs, ts, clean, noisy, o, report, plt)  # first: the headline figure
        self.plot_portraits(runs, clean, noisy, o, report, plt)
        self.findings(runs, o, report)

    @staticmethod
    def plot_portraits(runs, clean, noisy, o, report, plt):
        g, points = portrait_grid(clean, o.grid)
        x1, x2 = np.meshgrid(g, g)
        fields = {"true f": true_field(points)} | {f"learned, {n}": r["grid_field"] for n, r in runs.items()}
        fig, axes = plt.subplots(1, len(fields), figsize=(4.6 * len(fields), 4.4), squeeze=False)
        for ax, (title, f) in zip(axes[0], fields.items()):
            u, v = f[:, 0].reshape(x1.shape), f[:, 1].reshape(x1.shape)
            speed = np.hypot(u, v) + 1e-9
            arrows = ax.quiver(x1, x2, u / speed, v / speed, np.log10(speed), cmap="viridis", clim=(-2, 1.5),
                               pivot="mid", scale=1.6 * len(g), width=0.004)
            ax.plot(clean[:, 0], clean[:, 1], "k-", lw=1, label="true trajectory")
            ax.plot(noisy[:, 0], noisy[:, 1], ".", color="tab:orange", ms=3, label="noisy observations")
            name = title.removeprefix("learned, ")
            if name in runs:
                title += f" (field error {runs[name]['field_error']:.3f})"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            ax.set_aspect("equal")
        axes[0, 0].legend(fontsize=7, loc="lower left")
        fig.colorbar(arrows, ax=axes[0].tolist(), shrink=0.8, label="log10 |field|")
        report.figure("phase_portraits", fig, "The true field f(x) = x^3 A and the learned fields F_theta "
                      "(arrows: direction, colour: log10 speed), with the data")

    @staticmethod
    def plot_fit(runs, ts, clean, noisy, o, report, plt):
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        for name, r in runs.items():
            epochs, errors = zip(*r["fit"].measured)
            axes[0].plot(epochs, errors, "o-", ms=3, color=COLOURS.get(name), label=name)
            losses = np.sqrt(r["fit"].epoch_losses * o.window / (o.window - 1))
            axes[1].plot(np.arange(1, len(losses) + 1), losses, color=COLOURS.get(name), label=name)
        for ax, what in zip(axes[:2], ("path RMSE from x(0) vs clean (own integrator)",
                                       "training RMSE vs noisy windows")):
            ax.axhline(o.noise, color="k", ls=":", label=f"noise sigma = {o.noise}")
            ax.set_yscale("log")
            log_ticks(ax)
            ax.set_xlabel("epoch")
            ax.set_ylabel(what)
            ax.legend(fontsize=8)
        ax = axes[2]
        ax.plot(ts, clean[:, 0], "k-", lw=1.5, label="true x1(t)")
        ax.plot(ts, noisy[:, 0], ".", color="tab:orange", ms=4, label="noisy observations")
        for name, r in runs.items():
            ax.plot(ts, r["path"][:, 0], "-", color=COLOURS.get(name), lw=1, label=f"{name} (own integrator)")
            ax.plot(ts, r["resolved"][:, 0], "--", color=COLOURS.get(name), lw=1,
                    label=f"{name} field, re-solved")
        ax.set_xlabel("t")
        ax.set_ylabel("x1")
        ax.legend(fontsize=7)
        report.figure("fit_error", fig, "Fit error over training (left, middle) and the fitted paths from x(0) "
                      f"(right; dashed: the learned field re-solved by RK4 at {ACCURATE[1]} steps per interval)")

    @staticmethod
    def findings(runs, o, report):
        err = {n: r["field_error"] for n, r in runs.items()}
        cho = {n: r["chord_error"] for n, r in runs.items()}
        bias = report.results["values"]["chord_vs_f"]
        accurate = [n for n in runs if n != "euler"]
        if "euler" in runs and accurate:
            report.finding(
                "euler_learns_the_chord", cho["euler"] < err["euler"] and all(err[n] < cho[n] for n in accurate),
                "a coarse Euler step learns a biased field: the chord (x(t + h) - x(t)) / h that one Euler step "
                "needs rather than f, while the accurate integrators learn f (closer to f than to the chord).",
                f"||c - f|| / ||f|| = {bias:.3f} on the trajectory; " + ", ".join(
                    f"{n}: error against f {err[n]:.3f}, against the chord {cho[n]:.3f}" for n in runs) + ".")
            best = min(err[n] for n in accurate)
            report.finding(
                "euler_field_biased", err["euler"] > 1.5 * best,
                "the Euler-trained field's error against f is well above (1.5 times) the accurate integrators'.",
                ", ".join(f"{n}: {err[n]:.3f}" for n in runs) + " (relative field error on the trajectory).")
            e = runs["euler"]
            ratio = {n: r["resolved_error"] / r["path_error"] for n, r in runs.items()}
            report.finding(
                "euler_fit_needs_euler", ratio["euler"] > 2 and all(ratio[n] < ratio["euler"] for n in accurate),
                "the Euler-trained field fits the data only through Euler: re-solved accurately its path error "
                "grows (over twice), that of the accurately trained fields much less.",
                f"euler: path RMSE {e['path_error']:.3f} with Euler, {e['resolved_error']:.3f} re-solved; "
                + ", ".join(f"{n}: {runs[n]['path_error']:.3f} -> {runs[n]['resolved_error']:.3f}"
                            for n in accurate) + ".")
        for name in runs:
            r = runs[name]
            report.finding(
                f"{name}_fits_to_noise", r["train_rmse"] <= 1.5 * o.noise,
                f"{name} fits the noisy windows to the noise level (training RMSE at most 1.5 sigma).",
                f"training RMSE {r['train_rmse']:.4f} (sigma = {o.noise}), path RMSE from x(0) "
                f"{r['path_error']:.4f}, field error {r['field_error']:.3f}.")
        report.note("A training RMSE below sigma means the field follows part of the noise: the windows overlap, "
                    "and each starts at a noisy observation that the model takes as exact.")
        for name, r in runs.items():
            if on.integrator(name).adaptive and o.adaptive_gradient == "adjoint":
                drifts, steps = np.asarray(r["drifts"]), len(r["fit"].losses)
                report.value(f"{name}_reconstruction_warnings", len(drifts))
                worst = f", relative drift up to {np.nanmax(drifts):.3g} (median {np.nanmedian(drifts):.3g})" \
                    if len(drifts) else ""
                report.note(f"{name} with the adjoint: odenets' reconstruction check (the backward solve's "
                            f"rebuilt x(t0) against x0, tolerance 1e-2 relative) warned {len(drifts)} times over "
                            f"{steps} training steps{worst}: those gradients are approximate. The backward NFE "
                            "of the adaptive solve is not recorded by the Trajectory model (-1).")
        for name, r in runs.items():
            report.note(f"{name}: training RMSE {r['train_rmse']:.4f} (sigma {o.noise}), path RMSE "
                        f"{r['path_error']:.4f} (re-solved {r['resolved_error']:.4f}), field error "
                        f"{r['field_error']:.4f}, chord error {r['chord_error']:.4f}, NFE per step forward "
                        f"{r['nfe']:.1f}, backward {r['nfe_backward']:.1f}, {r['fit'].seconds:.1f} s.")
