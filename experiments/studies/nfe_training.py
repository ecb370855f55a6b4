"""Forward and backward NFE over the training of an adaptive ODE-Net: NODE, NODE + RNODE, ANODE.

Each arm is a classifier stem -> one ODE block -> head (`_depthnets`, trained in memory by odenets' own
train step), whose block solves dx/dt = F(t, x; theta) on [0, 1] with Dopri5 (rtol, atol) and is
differentiated by the continuous adjoint (`gradient=adjoint`). The train step records, at every step,

    nfe           the forward solve's evaluations of F: 1 + 6 x attempted steps (`solver_stats`)
    nfe_backward  the backward solve's evaluations of the adjoint system (x, a, g) (`BackwardProbe`)
    rnode         lambda_K mean K + lambda_J mean J, K = int |F|^2 dt, J = int |dF/dx|_F^2 dt (`odenets.rnode`)

and the arms differ in one thing each:

    node   the Neural ODE (Chen et al. 2018)
    rnode  the same with RNODE's penalty (Finlay et al. 2020), lambda_K = lambda_J (0.01 in the paper)
    anode  the Neural ODE on the state with `augment` zero channels appended (Dupont et al. 2019)

Tasks: MNIST-1D (the stem maps 40 samples to `width` channels) and Dupont's 2-D concentric spheres, whose
NODE flows in the plane itself (width 2: the stem is a linear map of R^2, the head's LayerNorm of two
channels keeps only the sign of x_1 - x_2, so the classes must be separated by a line after the flow).
Every arm of a task starts from the same seed (the same data, batches and stem/head draws where shapes
agree).
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import jax
import numpy as np

from experiments.studies import _depthnets as nets_
from odenets import study as studies
from odenets import validate
from odenets._abstract import final
from odenets.gradients.adjoint import ReconstructionWarning
from odenets.train import loop

ARMS = ("node", "rnode", "anode")
TASKS = {"mnist1d": ("data=mnist1d",), "spheres": ("data=spheres",)}
SPHERE_WIDTH = 2  # Dupont's g(x) in 2-D: the NODE flows in the input plane
COLOURS = {"node": "C0", "rnode": "C2", "anode": "C3"}
KEYS = ("loss", "accuracy", "nfe", "nfe_backward")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    tasks: tuple[str, ...] = ("mnist1d", "spheres")
    arms: tuple[str, ...] = ARMS
    width: int = 32  # MNIST-1D channels (spheres: 2, the input plane)
    augment: int | None = None  # ANODE's extra channels (None: the family's max(1, width // 4))
    rtol: float = 1e-4  # Dopri5's tolerances (Chen et al.'s MNIST: 1e-3, at which NFE stayed flat here)
    atol: float = 1e-4
    lambda_K: float = 0.01  # RNODE's weights (Finlay et al.)
    lambda_J: float = 0.01
    epochs: int = 30  # MNIST-1D
    lr: float = 1e-2
    spheres_epochs: int = 60  # the spheres (1000 points: 7 steps per epoch at batch 128)
    spheres_lr: float = 3e-2
    batch_size: int = 128
    n_train: int | None = None  # the first n training examples (None: all)
    seeds: int = 2  # seeds report.seed, report.seed + 1, ...: every arm runs on each
    window: int = 10  # steps averaged for the NFE at the start and at the end of training
    accuracy_slack: float = 0.02  # RNODE's test accuracy counts as "the same" within this of the NODE's
    evaluate: bool = True  # test accuracy after every epoch (False: the running training accuracy of each
    # epoch's mini-batches stands in for it, and no eval step is compiled)

    def __post_init__(self):
        validate.boolean("study.evaluate", self.evaluate)
        for key in ("width", "epochs", "spheres_epochs", "batch_size", "seeds", "window"):
            validate.integer(f"study.{key}", getattr(self, key), 1)
        validate.optional(validate.integer, "study.augment", self.augment, 1)
        validate.optional(validate.integer, "study.n_train", self.n_train, 1)
        for key in ("rtol", "atol", "lr", "spheres_lr", "accuracy_slack"):
            validate.number(f"study.{key}", getattr(self, key), low=0.0)
        for key in ("lambda_K", "lambda_J"):
            validate.number(f"study.{key}", getattr(self, key), low=0.0, open_low=False)
        if not self.tasks or not self.arms:
            raise ValueError(f"study.tasks and study.arms need at least one entry, got tasks={self.tasks}, "
                             f"arms={self.arms}")
        for task in self.tasks:
            validate.choice("study.tasks", task, list(TASKS))
        for arm in self.arms:
            validate.choice("study.arms", arm, ARMS)
        if "node" not in self.arms:
            raise ValueError(f"study.arms must hold 'node' (every finding compares with it), got {self.arms}")


def model_overrides(task: str, arm: str, o: Options) -> list[str]:
    """The model, integrator and gradient groups of one arm: an MLP ODE block solved by Dopri5 + adjoint."""
    width = SPHERE_WIDTH if task == "spheres" else o.width
    over = [f"model={'anode' if arm == 'anode' else 'node'}", "model.kind=mlp", f"model.width={width}",
            "integrator=dopri5", f"integrator.rtol={o.rtol}", f"integrator.atol={o.atol}", "gradient=adjoint"]
    if arm == "anode" and o.augment is not None:
        over.append(f"model.augment={o.augment}")
    if arm == "rnode":
        over += [f"model.lambda_K={o.lambda_K}", f"model.lambda_J={o.lambda_J}"]
    return over


@final
@dataclasses.dataclass(frozen=True)
class Curve:
    """One arm's training on one seed: per-step records (each (steps,)), per-epoch test accuracy, seconds."""

    steps: dict[str, np.ndarray]
    test_accuracy: np.ndarray  # after each epoch
    steps_per_epoch: int
    n_params: int
    seconds: float
    drift_warnings: int  # backward solves whose rebuilt x(0) missed the forward one by > 1% (odenets' warning)


def schedule(task: str, o: Options) -> tuple[int, float]:
    """(epochs, learning rate) of a task."""
    return (o.spheres_epochs, o.spheres_lr) if task == "spheres" else (o.epochs, o.lr)


def train(task: str, arm: str, o: Options, seed: int) -> Curve:
    """Train one arm for its task's epochs, keeping every step's NFE and the test accuracy after each epoch."""
    start = time.perf_counter()
    epochs, lr = schedule(task, o)
    s = nets_.setup(model_overrides(task, arm, o), epochs=epochs, batch_size=o.batch_size, lr=lr, seed=seed,
                    n_train=o.n_train, data=TASKS[task])
    train_step, eval_step = loop.make_steps(s)
    keys = KEYS + (("rnode",) if arm == "rnode" else ())
    records, accuracy, state = {k: [] for k in keys}, [], s.state
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReconstructionWarning)
        for _, state, epoch in nets_.run_steps(s, s.state, train_step, range(epochs), seed=seed, keys=keys):
            for k in keys:
                records[k].append(epoch[k])
            accuracy.append(1.0 - nets_.error(eval_step, state, s.data.x_test, s.data.y_test) if o.evaluate
                            else float(np.mean(epoch["accuracy"])))
        jax.effects_barrier()
    drift = sum(issubclass(w.category, ReconstructionWarning) for w in caught)
    steps = {k: np.concatenate(v).astype(float) for k, v in records.items()}
    return Curve(steps, np.asarray(accuracy), s.steps_per_epoch, s.n_params, time.perf_counter() - start, drift)


def _mean(curves: list[Curve], key: str) -> np.ndarray:
    return np.mean([c.steps[key] for c in curves], axis=0)


@final
@studies.study.register("nfe_training")
class NFETraining(studies.Study):
    title = "NFE over training: forward and backward, with and without RNODE, NODE vs ANODE"
    claim = ("An adaptive solver's number of function evaluations (NFE) is a cost the model learns: Chen et al. "
             "(2018, Fig. 3, MNIST ODE-Net, Dopri5 + adjoint) find that the forward NFE rises during training "
             "and that the adjoint's backward pass takes about half the forward NFE; Finlay et al. (2020, RNODE) "
             "add lambda_K int |f|^2 dt + lambda_J int |df/dx|_F^2 dt (0.01 each) to the loss and train to the "
             "same accuracy with far fewer NFE; Dupont et al. (2019, Figs. 8-9, concentric spheres, and their "
             "MNIST/CIFAR-10 models) find that a NODE's NFE grows during training while an augmented NODE's "
             "stays roughly flat and lower.")
    sizes = {
        "smoke": Options(tasks=("mnist1d",), arms=("node",), epochs=4, n_train=1024, batch_size=64, lr=0.1,
                         window=10, evaluate=False, seeds=1),
        "full": Options(),
    }
    smoke_expect = ("mnist1d_node_nfe_rises",)

    def run(self, o: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        seeds = [report.seed + i for i in range(o.seeds)]
        report.setup(
            f"Tasks: {', '.join(o.tasks)}. Arms: {', '.join(o.arms)}. Each arm is a classifier linear stem -> "
            f"one ODE block (a shared time-conditioned MLP field, t in [0, 1]) -> LayerNorm-ReLU-linear head, "
            f"with width {o.width} channels on MNIST-1D and {SPHERE_WIDTH} on the spheres (the NODE flows in the "
            f"input plane, as Dupont et al.'s); ANODE appends "
            f"{'the family default max(1, width // 4)' if o.augment is None else o.augment} zero channels. "
            f"Dopri5 at rtol = {o.rtol:g}, atol = {o.atol:g}, gradient by the continuous adjoint (diffrax's "
            f"backsolve, whose step control covers the whole adjoint state (x, a, dL/dtheta)); RNODE with "
            f"lambda_K = {o.lambda_K:g}, lambda_J = {o.lambda_J:g} (its NFE counts evaluations of the augmented "
            f"field (F, |F|^2, |eps^T dF/dx|^2), each one F and one vector-Jacobian product).")
        report.setup(
            f"Adam, batch {o.batch_size}; MNIST-1D lr {o.lr:g}, {o.epochs} epochs; spheres lr {o.spheres_lr:g}, "
            f"{o.spheres_epochs} epochs; "
            f"{'all' if o.n_train is None else o.n_train} training examples, seeds {seeds} (every arm on each). "
            f"NFE per training step from the train step's own records (forward: the solve of the batch; "
            f"backward: the adjoint solve). NFE at the start / end: mean over the first / last {o.window} steps "
            f"(averaged over seeds); test accuracy after each epoch. Chen et al. ran at tolerance 1e-3; at "
            f"rtol = atol = 1e-3 these nets' forward NFE did not move in trials (61 per step on MNIST-1D over 8 "
            f"epochs, 19 on the spheres over 60), hence 1e-4. On the spheres the head's LayerNorm of two "
            f"channels keeps about sign(x_1 - x_2) only: the NODE must separate the classes by a line after a "
            f"flow of the plane, which no flow can do (Dupont et al.'s argument); ANODE's LayerNorm sees "
            f"{SPHERE_WIDTH} + augment channels.")
        curves: dict[tuple[str, str], list[Curve]] = {}
        for task in o.tasks:
            for arm in o.arms:
                curves[task, arm] = [train(task, arm, o, seed) for seed in seeds]
        self._tables(o, curves, report)
        self._findings(o, curves, report)

        for (task, arm), cs in curves.items():  # the figure's curves: per-step means over the seeds
            report.value(f"{task}_{arm}_per_step", {k: _mean(cs, k).tolist() for k in ("nfe", "nfe_backward")})
        fig, axes = plt.subplots(len(o.tasks), 3, figsize=(15, 4.4 * len(o.tasks)), squeeze=False,
                                 layout="constrained")
        for row, task in zip(axes, o.tasks):
            for arm in o.arms:
                cs = curves[task, arm]
                colour = COLOURS[arm]
                steps = np.arange(1, len(cs[0].steps["nfe"]) + 1)
                for ax, key in zip(row[:2], ("nfe", "nfe_backward")):
                    values = _mean(cs, key)
                    ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
                    ax.plot(steps, _smooth(values, o.window), color=colour, lw=1.8, label=arm)
                epoch_nfe = _mean(cs, "nfe").reshape(len(cs[0].test_accuracy), -1).mean(axis=1)
                accuracy = np.mean([c.test_accuracy for c in cs], axis=0)
                row[2].plot(epoch_nfe, accuracy, "o-", color=colour, ms=3, label=arm)
                row[2].plot(epoch_nfe[-1:], accuracy[-1:], "*", color=colour, ms=12)
            row[0].set(xlabel="training step", ylabel="forward NFE per step", title=f"{task}: forward NFE")
            row[1].set(xlabel="training step", ylabel="backward NFE per step (adjoint)",
                       title=f"{task}: backward NFE")
            row[2].set(xlabel="forward NFE (mean over the epoch)",
                       ylabel="test accuracy" if o.evaluate else "training accuracy (running, over the epoch)",
                       title=f"{task}: accuracy vs NFE (per epoch; star: last)")
            for ax in row:
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=8)
        report.figure("nfe_training", fig, "Forward (left) and backward (middle) NFE per training step (faint: "
                      f"per step, bold: mean of {o.window}), and test accuracy against the epoch's mean forward "
                      "NFE (right), per arm and task")

    def _tables(self, o: Options, curves, report: studies.Report) -> None:
        rows, epochs = [], []
        for (task, arm), cs in curves.items():
            s = _summary(cs, o.window)
            rows.append([task, arm, cs[0].n_params, s["start"], s["end"], s["growth"], s["backward_start"],
                         s["backward_end"], s["ratio"], s["accuracy"], float(np.mean([c.seconds for c in cs])),
                         sum(c.drift_warnings for c in cs)])
            epochs_run = len(cs[0].test_accuracy)
            per_epoch = {k: _mean(cs, k).reshape(epochs_run, -1).mean(axis=1) for k in cs[0].steps}
            accuracy = np.mean([c.test_accuracy for c in cs], axis=0)
            for e in range(epochs_run):
                penalty = per_epoch["rnode"][e] if "rnode" in per_epoch else None
                epochs.append([task, arm, e + 1, per_epoch["loss"][e], accuracy[e], per_epoch["nfe"][e],
                               per_epoch["nfe_backward"][e], penalty])
        report.table("summary", ["task", "arm", "parameters", "NFE start", "NFE end", "end / start",
                                 "backward NFE start", "backward NFE end", "backward / forward", "test accuracy",
                                 "seconds per seed", "drift warnings"], rows,
                     "Per arm: forward NFE at the start and end of training, its growth, the backward NFE, the "
                     "mean per-step ratio backward / forward, the final test accuracy (means over seeds) and the "
                     "training time (compile included); drift warnings: adjoint backward solves whose rebuilt "
                     "x(0) missed the forward x(0) by more than 1% (ReconstructionWarning), over all seeds")
        report.table("epochs", ["task", "arm", "epoch", "train loss", "test accuracy", "forward NFE",
                                "backward NFE", "RNODE penalty"], epochs,
                     "Per epoch: mean training loss (data term), test accuracy after the epoch, mean forward and "
                     "backward NFE per step over the epoch, mean RNODE penalty (rnode arm)")

    def _findings(self, o: Options, curves, report: studies.Report) -> None:
        ratios = ", ".join(f"{t} {a} {_summary(cs, o.window)['ratio']:.2f}" for (t, a), cs in curves.items())
        report.note(
            f"Backward / forward NFE per step: {ratios}. odenets' adjoint solves (x, a, dL/dtheta) backwards "
            "under the forward solve's step-size controller with every component, the parameter gradient's "
            "included, in its error norm (diffrax's backsolve); Kidger, Chen & Lyons (2021) show that leaving the "
            "dL/dtheta channels out of that norm (a seminorm, later torchdiffeq's option) cuts the backward "
            "steps.")
        drifts = [(t, a, sum(c.drift_warnings for c in cs), sum(len(c.steps["nfe"]) for c in cs))
                  for (t, a), cs in curves.items()]
        report.note(
            "Backward solves whose rebuilt x(0) missed the forward x(0) by more than 1% (odenets' "
            "ReconstructionWarning: the gradient of such a step is unreliable): "
            + ", ".join(f"{t} {a} {n} of {steps} steps" for t, a, n, steps in drifts) + ".")
        for task in o.tasks:
            node = _summary(curves[task, "node"], o.window)
            report.value(f"{task}_node", node)
            report.finding(
                f"{task}_node_nfe_rises", node["growth"] > 1.0,
                "the NODE's forward NFE rises during training (end / start > 1; Chen et al. Fig. 3).",
                f"{node['start']:.1f} -> {node['end']:.1f} forward NFE per step (end / start "
                f"{node['growth']:.2f}).")
            report.finding(
                f"{task}_backward_half", abs(node["ratio"] - 0.5) <= 0.15,
                "the adjoint's backward NFE is about half the forward NFE (ratio within 0.5 +- 0.15; Chen et al. "
                "Fig. 3).",
                f"mean backward / forward {node['ratio']:.2f} over training (backward "
                f"{node['backward_start']:.1f} -> {node['backward_end']:.1f}).")
            if "rnode" in o.arms:
                reg = _summary(curves[task, "rnode"], o.window)
                report.value(f"{task}_rnode", reg)
                gap = node["accuracy"] - reg["accuracy"]
                report.finding(
                    f"{task}_rnode_fewer_nfe", reg["end"] < node["end"] and gap <= o.accuracy_slack,
                    f"RNODE ends with fewer forward NFE than the NODE at test accuracy within "
                    f"{o.accuracy_slack:g} (Finlay et al.).",
                    f"final NFE {reg['end']:.1f} vs {node['end']:.1f} ({reg['end'] / node['end']:.2f}x); test "
                    f"accuracy {reg['accuracy']:.3f} vs {node['accuracy']:.3f} (NODE ahead by {gap:+.3f}).")
                report.note(
                    f"{task}: RNODE's NFE counts steps of the augmented state (x, K, J), whose error estimates "
                    f"enter the step control too: it starts at {reg['start']:.1f} forward NFE per step against"
                    f" the NODE's {node['start']:.1f}, and each of its evaluations is one F and one"
                    f" vector-Jacobian product ({_seconds(curves[task, 'rnode']):.0f} s of training against "
                    f"{_seconds(curves[task, 'node']):.0f} s).")
            if "anode" in o.arms:
                aug = _summary(curves[task, "anode"], o.window)
                report.value(f"{task}_anode", aug)
                report.finding(
                    f"{task}_anode_flatter", aug["growth"] < node["growth"],
                    "ANODE's forward NFE grows less over training than the NODE's (Dupont et al.).",
                    f"end / start ANODE {aug['growth']:.2f} ({aug['start']:.1f} -> {aug['end']:.1f}) vs NODE "
                    f"{node['growth']:.2f}.")
                report.finding(
                    f"{task}_anode_fewer_nfe", aug["end"] < node["end"],
                    "ANODE ends training with fewer forward NFE than the NODE (Dupont et al.).",
                    f"final NFE {aug['end']:.1f} vs {node['end']:.1f}; test accuracy {aug['accuracy']:.3f} vs "
                    f"{node['accuracy']:.3f}.")


def _seconds(cs: list[Curve]) -> float:
    return float(np.mean([c.seconds for c in cs]))


def _summary(cs: list[Curve], window: int) -> dict[str, float]:
    """NFE at the start and end (means of the first / last `window` steps, over seeds), growth, backward NFE,
    the mean per-step backward / forward ratio and the final test accuracy."""
    nfe, back = _mean(cs, "nfe"), _mean(cs, "nfe_backward")
    ratio = float(np.mean([np.mean(c.steps["nfe_backward"] / c.steps["nfe"]) for c in cs]))
    start, end = float(np.mean(nfe[:window])), float(np.mean(nfe[-window:]))
    return {"start": start, "end": end, "growth": end / start, "backward_start": float(np.mean(back[:window])),
            "backward_end": float(np.mean(back[-window:])), "ratio": ratio,
            "accuracy": float(np.mean([c.test_accuracy[-1] for c in cs]))}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """The running mean over `window` steps (shorter at the start)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)
