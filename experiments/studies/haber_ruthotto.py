"""Haber & Ruthotto (2017), "Stable architectures for deep neural networks": Example 1 and the
antisymmetric / Hamiltonian networks beside a standard ResNet.

Part 1 (Example 1). Ten forward-Euler layers Y_{j+1} = Y_j + h tanh(K Y_j), h = 0.1, b = 0, are
`odeint` of dY/dt = tanh(K Y) on [0, 1] with 10 Euler steps. Near 0 the field is K Y, so the
distances between trajectories follow the eigenvalues of K: they grow for K+ (eigenvalue 2, twice),
shrink for K- (-2, twice) and are kept by the exact flow for K0 (+-i). Forward Euler with an
imaginary eigenvalue i w multiplies by |1 + i h w| = sqrt(1 + h^2 w^2) > 1 per step, so ten
steps of the K0 net grow a small distance by (1 + h^2)^5 = 1.0511 (measured, and compared with
1000 steps, which approach the exact flow).

Part 2. Classifiers of the families resnet, antisymmetric and hamiltonian (stem -> one stage of
`depth` layers -> head) trained on 2-D sets at several depths, through odenets' own train and
eval steps (`odenets.train.loop.setup` / `make_steps`). Measured per model: test accuracy; the
eigenvalues z = h lambda of h dF_k/dx at every layer k along the test points' trajectories
(`odenets.analysis.step_spectra` for the ODE-block families); and the singular values of the
stage's input-output Jacobian (forward stability: sigma_max explodes, sigma_min vanishes).

What theory says about the spectra, for any parameters:
    antisymmetric  dF/dx = D (K - K^T - gamma I), D = diag(tanh') in (0, 1]: similar to
                   D^(1/2) (K - K^T) D^(1/2) - gamma D, so Re(h lambda) lies in [-h gamma, 0].
    hamiltonian    dF/d(y, z) = [[0, K D1 K^T], [-K^T D2 K, 0]] with D1, D2 >= 0: eigenvalues
                   +-i sqrt(mu), mu the eigenvalues of (K D1 K^T)(K^T D2 K) >= 0: purely imaginary.
                   Its leapfrog step is stable for |h lambda| < 2.
    resnet         dF/dx = W2 D W1 of an MLP field: no structure; eigenvalues anywhere.
The Hamiltonian stage is a leapfrog scan, not an ODE block, so its states are taken one layer at a
time with the family's own `HamiltonianBlock` (one step per call) and its spectra with
`odenets.analysis.jacobian_spectrum` on the field's (dy, dz) as one function of x = (y, z).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odenets as on
from odenets import cli, validate
from odenets import data as datasets
from odenets import study as studies
from odenets._abstract import final
from odenets.data.toy import Toy
from odenets.fields import field_at
from odenets.models.stages import HamiltonianBlock
from odenets.train import loop

# ---- Part 1: Example 1 ----------------------------------------------------------------------------------

EXAMPLE_K = {  # Haber & Ruthotto's Example 1: name -> (K, what the trajectories do)
    "K+": ([[2.0, -2.0], [0.0, 2.0]], "diverge"),
    "K-": ([[-2.0, 0.0], [2.0, -2.0]], "contract"),
    "K0": ([[0.0, -1.0], [1.0, 0.0]], "keep distances"),
}
EXAMPLE_Y0 = [[0.1, 0.1], [-0.1, -0.1], [0.0, 0.5]]  # y1, y2 = -y1, y3
PAIRS = ((0, 1), (0, 2), (1, 2))


def example_field(t, y, k):
    """dY/dt = tanh(K Y) for states stored as rows (Y: (3, 2)), i.e. tanh(Y K^T); b = 0."""
    return jnp.tanh(y @ k.T)


def pair_distances(y) -> np.ndarray:
    """|y_i - y_j| for the pairs (1, 2), (1, 3), (2, 3) of the three rows of y."""
    y = np.asarray(y, np.float64)
    return np.array([np.linalg.norm(y[i] - y[j]) for i, j in PAIRS])


def example1(steps: int, t1: float = 1.0):
    """{name: (states (steps + 1, 3, 2), distance ratios after / before (3,), eigenvalues of K)}: the
    three nets of Example 1 as `odeint` with forward Euler, h = t1 / steps."""
    y0 = jnp.asarray(EXAMPLE_Y0, jnp.float32)
    ks = jnp.asarray([k for k, _ in EXAMPLE_K.values()], jnp.float32)
    solve = lambda k: on.odeint(example_field, y0, 0.0, t1, steps, integrator="euler", args=k, save="all").xs
    states = np.asarray(jax.jit(jax.vmap(solve))(ks))  # the three nets in one solve
    return {name: (xs, pair_distances(xs[-1]) / pair_distances(xs[0]), np.linalg.eigvals(np.asarray(k)))
            for name, xs, k in zip(EXAMPLE_K, states, ks)}


# ---- Part 2: the models ------------------------------------------------------------------------------------


MODELS = ("resnet", "resnet_t", "antisymmetric", "hamiltonian")


def model_overrides(model: str, options: Options, depth: int) -> list[str]:
    """The model group of one compared net: the family, at `depth` layers of `width` channels.

    resnet         the standard ResNet, h = 1 (t1 = depth): the family's default
    resnet_t       the same net with h = t1 / depth (one ODE on [0, t1], as the stable nets)
    antisymmetric  h = t1 / depth, damping gamma
    hamiltonian    h = t1 / depth, leapfrog
    """
    base = ["model.kind=mlp", f"model.width={options.width}", f"model.depth={depth}"]
    t_over_n = ["model.step_size=t_over_n", f"model.t1={options.t1}"]
    extra = {
        "resnet": ["model=resnet"],
        "resnet_t": ["model=resnet", *t_over_n],
        "antisymmetric": ["model=antisymmetric", *t_over_n, f"model.damping={options.damping}"],
        "hamiltonian": ["model=hamiltonian", *t_over_n],
    }
    return [*extra[validate.choice("study.models", model, MODELS)], *base]


def step_of(model: str, options: Options, depth: int) -> float:
    return 1.0 if model == "resnet" else options.t1 / depth


SPECTRAL = ("max_re", "min_re", "max_abs_re", "max_abs", "frac_re_pos", "frac_stable")  # none when diverged
RELATIVE_TOL = 1e-4  # |Re z| below this fraction of max |z| is rounding (float32 Jacobians)


def fraction_stable(model: str, eig) -> float:
    """The fraction of z = h lambda inside the stability region of the model's step: Euler's disk
    |1 + z| <= 1, or for the Hamiltonian leapfrog (imaginary z) the segment |z| < 2 of the imaginary axis."""
    if model == "hamiltonian":
        return float(np.mean(np.abs(eig) < 2.0))
    return float(on.analysis.fraction_inside("euler", eig))


def non_finite(err: Exception) -> bool:
    """Whether `err` says the net diverged: a non-finite loss or parameters (FloatingPointError, raised
    below), or odeint's check of a solve's initial state (raised by JAX or equinox under jit, or as
    odenets' ValueError on an eager call)."""
    return isinstance(err, FloatingPointError) or loop.X0_CHECK in str(err)


def train(overrides: list[str], options: Options, seed: int):
    """(Classifier, loop.Setup, test accuracy, train seconds, diverged): odenets' jitted train step for
    `epochs` epochs of the config `overrides` describe (no run directory: nothing to resume). epochs=0:
    the initial parameters, not evaluated (accuracy None). A loss or parameters that become non-finite
    (checked once per epoch) stop the training: diverged, accuracy None."""
    cfg = cli.compose([*overrides, f"optim.epochs={max(options.epochs, 1)}",
                       f"optim.batch_size={options.batch_size}", f"optim.lr={options.lr}", f"seed={seed}",
                       "train.progress=false"])
    s = loop.setup(cfg)
    state, accuracy, diverged, start = s.state, None, False, time.perf_counter()
    if options.epochs:
        train_step, eval_step = loop.make_steps(s)
        x, y = s.data.x_train, s.data.y_train
        try:
            for epoch in range(options.epochs):
                for idx in datasets.batches(len(x), options.batch_size, seed=seed, epoch=epoch):
                    state, metrics = train_step(state, x[idx], y[idx])
                if not (bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))):
                    raise FloatingPointError("the loss or the parameters became non-finite")
            accuracy = float(loop.evaluate(s, eval_step, state)["accuracy"])
        except Exception as err:
            if not non_finite(err):
                raise
            diverged = True
    params, rest, _ = state
    return nnx.merge(s.graphdef, params, rest), s, accuracy, time.perf_counter() - start, diverged


# ---- Part 2: spectra and sensitivity --------------------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True)
class _FlatHamiltonian:
    """The Hamiltonian field as one function of x = concat(y, z): (dy/dt, dz/dt) = (K s(K^T z + c),
    -K^T s(K y + b)); hashable by its graph, so every layer reuses one compilation."""

    graphdef: Any

    def __call__(self, t, x, state):
        field = nnx.merge(self.graphdef, state)
        y, z = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([field.dy(z), field.dz(y)], axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _one_step(graphdef, state, y, z):
    return nnx.merge(graphdef, state).forward(y, z)


def hamiltonian_spectra(block: HamiltonianBlock, x) -> tuple[np.ndarray, jax.Array]:
    """(eigenvalues of h dF_k/dx (N, B, C) at the states x_k the leapfrog passes through, x_N), x the
    stage's input (B, C); each layer's step is the family's HamiltonianBlock with that layer alone,
    so x_N equals block(x)."""
    one = nnx.clone(block)  # the same block, given one layer at a time below
    one.steps = 1
    y, z = jnp.split(x, 2, axis=-1)
    eigs = []
    for k in range(block.steps):
        layer = field_at(block.fields, k)
        graphdef, state = nnx.split(layer)
        xk = jnp.concatenate([y, z], axis=-1)
        eigs.append(on.analysis.jacobian_spectrum(_FlatHamiltonian(graphdef), xk, 0.0, state, h=block.h,
                                                  batched=True))
        one.fields = jax.tree.map(lambda v: v[None], layer)  # a stack of one layer
        y, z = _one_step(*nnx.split(one), y, z)
    return np.stack(eigs), jnp.concatenate([y, z], axis=-1)


def spectra(model, x) -> np.ndarray:
    """Eigenvalues of h dF_k/dx at every layer k and test point, (N, B, C), of the model's one stage."""
    stage = model.stages[0]
    if isinstance(stage, HamiltonianBlock):
        return hamiltonian_spectra(stage, model.stem(x))[0]
    (spectrum,) = on.analysis.step_spectra(model, x)
    return np.asarray(spectrum.eigenvalues)


@functools.partial(jax.jit, static_argnums=0)
def _stage_jacobians(graphdef, state, x):
    def one(state, v):  # fresh Variables at this trace level (the stage records its NFE when called)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a, state))(v[None])[0]

    return jax.vmap(jax.jacfwd(one, argnums=1), in_axes=(None, 0))(state, x)


def stage_singular_values(model, x) -> np.ndarray:
    """Singular values (B, C) of d(stage output)/d(stage input) at each test point: forward stability."""
    jac = _stage_jacobians(*nnx.split(model.stages[0]), model.stem(x))
    return np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)


def decision_grid(model, lim: float, n: int = 120):
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g)
    logits = model(jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32))
    return xx, yy, np.asarray(jnp.argmax(logits, -1)).reshape(xx.shape)


# ---- the study ------------------------------------------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True)
class Options:
    depths: tuple[int, ...] = (4, 16, 64)  # layers of the one stage
    datasets: tuple[str, ...] = ("spirals", "peaks")  # 2-D classification sets (odenets.data)
    models: tuple[str, ...] = MODELS
    width: int = 8  # channels of the stage (even: the Hamiltonian splits it into y, z)
    t1: float = 5.0  # T of the nets with h = T / depth
    damping: float = 0.01  # gamma of the antisymmetric field
    epochs: int = 30  # 0: no training, the spectra of the initial parameters (they hold for any)
    n_train: int = 1000
    n_test: int = 500
    batch_size: int = 50
    lr: float = 1e-2
    spectrum_points: int = 32  # test points whose trajectories the spectra are taken along
    sensitivity: bool = True  # the stage's input-output singular values
    reference_steps: int = 1000  # Euler steps for the near-exact Example 1 flow

    def __post_init__(self):
        for depth in self.depths:
            validate.integer("study.depths", depth, 1)
        for model in self.models:
            validate.choice("study.models", model, MODELS)
        toys = [n for n in datasets.dataset.names() if issubclass(datasets.dataset.get(n), Toy)]
        for dataset in self.datasets:
            validate.choice("study.datasets", dataset, toys)  # the generated classification sets
        validate.integer("study.width", self.width, 2)
        if self.width % 2:
            raise ValueError(f"study.width={self.width} must be even (the Hamiltonian net splits it into y, z)")
        validate.integer("study.epochs", self.epochs, 0)
        validate.integer("study.spectrum_points", self.spectrum_points, 1)
        validate.integer("study.reference_steps", self.reference_steps, 1)
        validate.number("study.t1", self.t1, low=0.0)
        validate.number("study.damping", self.damping, low=0.0, open_low=False)


@final
@studies.study.register("haber_ruthotto")
class HaberRuthotto(studies.Study):
    title = "Stable architectures: Haber & Ruthotto's Example 1, antisymmetric and Hamiltonian nets"
    claim = (
        "Haber & Ruthotto (2017, 'Stable architectures for deep neural networks', Inverse Problems 34, "
        "arXiv:1705.03341) read a ResNet as forward Euler on dY/dt = sigma(K(t) Y + b(t)): its forward "
        "propagation is stable when the eigenvalues of the Jacobian have real parts near zero. Example 1 "
        "(10 layers, tanh, h = 0.1, b = 0): K+ (eigenvalues with positive real part) makes trajectories "
        "diverge, K- contracts them, K0 (imaginary eigenvalues) keeps their distances. Antisymmetric "
        "(K - K^T - gamma I) and Hamiltonian (leapfrog) networks have imaginary spectra by construction, "
        "stay stable for arbitrary depth, and classify the swiss roll and peaks sets competitively with a "
        "standard ResNet, whose Jacobians have eigenvalues with positive real parts."
    )
    sizes = {
        "smoke": Options(depths=(2, 8), datasets=("peaks",), models=("resnet", "antisymmetric", "hamiltonian"),
                         width=4, epochs=0, n_train=100, n_test=100, batch_size=50, spectrum_points=8,
                         sensitivity=False, reference_steps=200),
        "full": Options(),
    }
    smoke_expect = ("example1_diverge", "example1_contract", "example1_keep", "euler_imaginary_growth",
                    "antisymmetric_spectrum", "hamiltonian_spectrum", "resnet_positive_real")

    def run(self, options: Options, report: studies.Report) -> None:
        self._example1(options, report)
        self._networks(options, report)

    # -- Part 1 --

    def _example1(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        h, steps = 0.1, 10
        nets = example1(steps)
        exact = example1(options.reference_steps)
        report.setup(
            "**Part 1, Example 1 of Haber & Ruthotto (2017).** Y_{j+1} = Y_j + h tanh(K Y_j), 10 layers, "
            "h = 0.1, b = 0, inputs y1 = (0.1, 0.1), y2 = -y1, y3 = (0, 0.5), computed as `odenets.odeint` of "
            "dY/dt = tanh(K Y) on [0, 1] with integrator `euler` and 10 steps. Distances |y_i - y_j| after the "
            f"10 layers over those at the input; beside them the same ODE with {options.reference_steps} Euler "
            "steps (close to the exact flow), to separate the ODE's behaviour from forward Euler's."
        )
        rows = []
        for name, (k, what) in EXAMPLE_K.items():
            xs, ratio, eig = nets[name]
            rows.append([name, str(k), " ".join(f"{e:.3g}" for e in eig), float(np.max(eig.real)), what,
                         *map(float, ratio), *map(float, exact[name][1])])
        report.table("example1", ["K", "matrix", "eigenvalues", "max Re", "paper", "ratio |y1-y2|",
                                  "ratio |y1-y3|", "ratio |y2-y3|", *(f"{options.reference_steps} steps: "
                                                                       f"{p}" for p in ("y1-y2", "y1-y3",
                                                                                        "y2-y3"))],
                     rows, caption="Example 1: distance after 10 layers / distance at the input")
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        for ax, (name, (k, what)) in zip(axes, EXAMPLE_K.items()):
            xs = nets[name][0]
            for i in range(xs.shape[1]):
                line, = ax.plot(xs[:, i, 0], xs[:, i, 1], "-o", markersize=3, label=f"y{i + 1}")
                ax.plot(xs[0, i, 0], xs[0, i, 1], "s", color=line.get_color(), markersize=7)
            ax.set_title(f"{name} = {k}: {what}")
            ax.set_xlabel("first component")
            ax.set_ylabel("second component")
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        report.figure("example1_trajectories", fig,
                      "Example 1: the three inputs through 10 layers (squares: inputs), as Fig. 1 of the paper")

        plus, minus, zero = (nets[n][1] for n in EXAMPLE_K)
        report.finding("example1_diverge", bool(plus.min() > 1.0),
                       "K+ (eigenvalues 2, 2): the trajectories diverge, every distance ratio > 1.",
                       f"ratios {_fmt(plus)}.")
        report.finding("example1_contract", bool(minus.max() < 1.0),
                       "K- (eigenvalues -2, -2): the trajectories contract, every distance ratio < 1.",
                       f"ratios {_fmt(minus)}.")
        report.finding("example1_keep", bool(np.all(np.abs(zero - 1.0) < 0.1)),
                       "K0 (eigenvalues +-i): distances kept, every ratio within 0.1 of 1.",
                       f"ratios {_fmt(zero)}.")
        predicted = (1 + h**2) ** (steps / 2)
        zero_exact = exact["K0"][1]
        report.finding(
            "euler_imaginary_growth",
            bool(zero.min() > 1.0 and abs(zero[0] / predicted - 1) < 0.01
                 and abs(zero_exact[0] - 1) < abs(zero[0] - 1) / 10),
            f"forward Euler on imaginary eigenvalues +-i grows by |1 + i h|^10 = (1 + h^2)^5 = {predicted:.4f}: "
            "every K0 ratio > 1, the small pair |y1 - y2| (where tanh is nearly linear) within 1% of that, and "
            f"with {options.reference_steps} steps (near the exact flow) that pair at least 10x closer to 1.",
            f"10 steps: {_fmt(zero)} (|y1 - y2|: {zero[0]:.4f}); {options.reference_steps} steps: "
            f"{_fmt(zero_exact)}.",
        )
        report.value("euler_growth_predicted", predicted)

    # -- Part 2 --

    def _networks(self, options: Options, report: studies.Report) -> None:
        report.setup(
            f"**Part 2.** Models {', '.join(options.models)} on {', '.join(options.datasets)} at depths "
            f"{', '.join(map(str, options.depths))}: stem (linear 2 -> {options.width}) -> one stage of `depth` "
            f"layers at width {options.width} -> head (GroupNorm, ReLU, linear). `resnet`: per-layer MLP fields "
            "W2 tanh(W1 x + b1) + b2, forward Euler with h = 1 (the standard ResNet); `resnet_t`: the same with "
            f"h = T / depth, T = {options.t1}; `antisymmetric`: tanh((K - K^T - gamma I) x + b), gamma = "
            f"{options.damping}, Euler, h = T / depth; `hamiltonian`: the leapfrog of (K s(K^T z + c), "
            "-K^T s(K y + b)) on the state split into (y, z), h = T / depth. Adam, lr "
            f"{options.lr}, batch {options.batch_size}, {options.epochs} epochs, {options.n_train} training and "
            f"{options.n_test} test points, odenets' own train step (`odenets.train.loop`"
            f"{'; 0 epochs: the initial parameters, not evaluated' if not options.epochs else ''}). Spectra: the "
            f"eigenvalues of h dF_k/dx at every layer k along the trajectories of {options.spectrum_points} test "
            "points (`odenets.analysis.step_spectra`; the Hamiltonian stage through "
            "`odenets.analysis.jacobian_spectrum`, one layer at a time). Sensitivity: singular values of the "
            "stage's input-output Jacobian at the same points. The paper's 'swiss roll' is two interleaved 2-D "
            "spirals: odenets' `spirals` (odenets' `swiss_roll` is sklearn's 3-D roll, also accepted here); "
            "`peaks` is the paper's peaks set (5 classes by level of MATLAB's peaks)."
        )
        rows, results = [], {}
        for dataset in options.datasets:
            for depth in options.depths:
                for name in options.models:
                    over = [f"data={dataset}", f"data.n_train={options.n_train}", f"data.n_test={options.n_test}",
                            *model_overrides(name, options, depth)]
                    model, s, accuracy, seconds, diverged = train(over, options, report.seed)
                    x = jnp.asarray(s.data.x_test[: options.spectrum_points], jnp.float32)
                    h = step_of(name, options, depth)
                    if diverged:  # nothing finite to take spectra of; counted at chance accuracy below
                        eig, sv = np.zeros((1, 1, 1), complex), np.full((1, 2), np.nan)
                        accuracy = 1.0 / s.data.output_dim
                    else:
                        try:
                            eig = spectra(model, x)
                            sv = (stage_singular_values(model, x) if options.sensitivity
                                  else np.full((1, 2), np.nan))
                        except Exception as err:  # finite parameters, but a state overflows on the test points
                            if not non_finite(err):
                                raise
                            diverged, accuracy = True, 1.0 / s.data.output_dim
                            eig, sv = np.zeros((1, 1, 1), complex), np.full((1, 2), np.nan)
                    stats = {
                        "accuracy": accuracy, "h": h, "diverged": diverged,
                        "max_re": float(eig.real.max()), "min_re": float(eig.real.min()),
                        "max_abs_re": float(np.abs(eig.real).max()), "max_abs": float(np.abs(eig).max()),
                        "frac_re_pos": float(np.mean(eig.real > RELATIVE_TOL * np.abs(eig).max())),
                        "frac_stable": fraction_stable(name, eig),
                        "sigma_max": _number(np.median(sv[:, 0])), "sigma_min": _number(np.median(sv[:, -1])),
                        "train_s": seconds,
                    }
                    if diverged:
                        stats.update(dict.fromkeys(SPECTRAL, None))
                    results[(dataset, depth, name)] = (stats, model, eig, s)
                    rows.append([dataset, depth, name, h, "diverged" if diverged else accuracy, stats["max_re"],
                                 stats["min_re"],
                                 stats["max_abs"], stats["frac_re_pos"], stats["frac_stable"], stats["sigma_max"],
                                 stats["sigma_min"], seconds])
        report.table("networks", ["data", "depth", "model", "h", "test accuracy", "max Re(h lambda)",
                                  "min Re(h lambda)", "max |h lambda|", "fraction Re > 0",
                                  "fraction in the step's region", "median sigma_max", "median sigma_min",
                                  "train s"], rows,
                     caption="Accuracy, spectra of h dF_k/dx over every layer and test point, and the stage's "
                             "input-output singular values")
        self._figures(options, report, results)
        self._findings(options, report, results)

    def _figures(self, options, report, results) -> None:
        import matplotlib.pyplot as plt

        if options.epochs:
            self._accuracy_figures(options, report, results)
        deep = options.depths[-1]
        fig, axes = plt.subplots(len(options.datasets), len(options.models),
                                 figsize=(4.2 * len(options.models), 4 * len(options.datasets)), squeeze=False)
        for row, dataset in enumerate(options.datasets):
            for col, name in enumerate(options.models):
                ax = axes[row, col]
                eig = results[(dataset, deep, name)][2].reshape(-1)
                lim = max(1.05 * float(np.abs(eig).max()), 0.05)
                t = np.linspace(0, 2 * np.pi, 200)
                ax.plot(-1 + np.cos(t), np.sin(t), color="0.5", linewidth=1, label="Euler: |1 + z| = 1")
                ax.scatter(eig.real, eig.imag, s=4, alpha=0.4, label=r"$h\lambda$, all layers")
                ax.axhline(0, color="0.7", linewidth=0.6)
                ax.axvline(0, color="0.7", linewidth=0.6)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_aspect("equal")
                ax.set_xlabel(r"Re$(h\lambda)$")
                ax.set_ylabel(r"Im$(h\lambda)$")
                gone = " (diverged)" if results[(dataset, deep, name)][0]["diverged"] else ""
                ax.set_title(f"{name}, {dataset}, depth {deep}{gone}", fontsize="medium")
                ax.legend(fontsize="x-small", loc="upper left")
        fig.tight_layout()
        report.figure("spectra", fig, f"Eigenvalues of h dF_k/dx in the complex plane, every layer, depth {deep}")

    def _accuracy_figures(self, options, report, results) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(options.datasets), figsize=(5.5 * len(options.datasets), 4), squeeze=False)
        for ax, dataset in zip(axes[0], options.datasets):
            for name in options.models:
                ax.plot(options.depths, [results[(dataset, d, name)][0]["accuracy"] for d in options.depths],
                        "-o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("depth (layers)")
            ax.set_ylabel("test accuracy")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        report.figure("accuracy_vs_depth", fig, "Test accuracy as depth grows")

        deep = options.depths[-1]
        first = options.models[0]
        planar = [d for d in options.datasets if results[(d, deep, first)][3].data.x_test.shape[1] == 2]
        if planar:
            fig, axes = plt.subplots(len(planar), len(options.models),
                                     figsize=(3.6 * len(options.models), 3.4 * len(planar)), squeeze=False)
            for row, dataset in enumerate(planar):
                for col, name in enumerate(options.models):
                    stats, model, _, s = results[(dataset, deep, name)]
                    ax = axes[row, col]
                    if stats["diverged"]:
                        ax.set_title(f"{name}, {dataset}: diverged", fontsize="medium")
                        continue
                    lim = float(np.abs(s.data.x_test).max())
                    xx, yy, cls = decision_grid(model, lim)
                    ax.contourf(xx, yy, cls, levels=np.arange(s.data.output_dim + 1) - 0.5,
                                colors=[plt.cm.tab10(c) for c in range(s.data.output_dim)], alpha=0.3)
                    x, y = s.data.x_test, s.data.y_test
                    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=5,
                               label="test points")
                    ax.set_title(f"{name}, {dataset}: {stats['accuracy']:.2f}", fontsize="medium")
                    ax.set_xlabel("x1")
                    ax.set_ylabel("x2")
                    ax.legend(fontsize="x-small", loc="lower right")
            fig.tight_layout()
            report.figure("decision_boundaries", fig, f"Decision regions at depth {deep} (title: test accuracy)")

    def _findings(self, options, report, results) -> None:
        diverged = [k for k in results if results[k][0]["diverged"]]
        if diverged:
            report.note("Diverged (loss or parameters non-finite; no spectra, counted at chance accuracy in the "
                        "depth findings): " + ", ".join(f"{m} on {d} at depth {n}" for d, n, m in diverged) + ".")
        keys = [k for k in results if k not in diverged]  # the spectral findings
        present = {k[2] for k in keys}

        def over(name, field, fn=max):
            return fn(results[k][0][field] for k in keys if k[2] == name)

        if "antisymmetric" in present:
            worst = [(results[k][0]["max_re"], results[k][0]["min_re"] / results[k][0]["h"])
                     for k in keys if k[2] == "antisymmetric"]
            max_re, min_re_over_h = max(w[0] for w in worst), min(w[1] for w in worst)
            report.finding(
                "antisymmetric_spectrum", max_re <= 1e-6 and min_re_over_h >= -options.damping * (1 + 1e-3),
                f"antisymmetric fields: Re(h lambda) in [-h gamma, 0] (gamma = {options.damping}): imaginary up "
                "to the damping.",
                f"max Re(h lambda) {max_re:.2e}, min Re(lambda) {min_re_over_h:.4f} (>= -gamma), max |h lambda| "
                f"{over('antisymmetric', 'max_abs'):.3g}.")
        if "hamiltonian" in present:
            ratio = max(results[k][0]["max_abs_re"] / max(results[k][0]["max_abs"], 1e-30)
                        for k in keys if k[2] == "hamiltonian")
            report.finding(
                "hamiltonian_spectrum", ratio < RELATIVE_TOL,
                f"Hamiltonian fields: purely imaginary eigenvalues (max |Re| / max |h lambda| < "
                f"{RELATIVE_TOL:g}).",
                f"max |Re| / max |h lambda| = {ratio:.1e}; max |h lambda| {over('hamiltonian', 'max_abs'):.3g} "
                "(leapfrog stable below 2).")
        if "resnet" in present:
            max_re = over("resnet", "max_re")
            frac = float(np.mean([results[k][0]["frac_re_pos"] for k in keys if k[2] == "resnet"]))
            report.finding(
                "resnet_positive_real", max_re > 1e-3,
                "standard ResNet: eigenvalues with positive real parts (no structure keeps them out).",
                f"max Re(h lambda) {max_re:.3g}; on average {frac:.0%} of the eigenvalues have Re > 0.")
        if len(options.depths) > 1 and options.epochs:
            self._depth_findings(options, report, results)
        total = sum(results[k][0]["train_s"] for k in results)
        report.note(f"{len(results)} models; their training loops took {total:.1f} s in all (the train step's "
                    "compilation included; spectra, sensitivities and figures aside).")
        if "hamiltonian" in present:
            text = "; ".join(f"{d}, depth {depth}: {results[(d, depth, 'hamiltonian')][0]['max_abs']:.3g}"
                             for d, depth, m in keys if m == "hamiltonian")
            report.note("The leapfrog of the Hamiltonian net is stable only for |h lambda| < 2 (its step on "
                        f"imaginary eigenvalues); the largest |h lambda| measured: {text}.")

    def _depth_findings(self, options, report, results) -> None:
        deep, shallow = options.depths[-1], options.depths[0]

        def stat(d, depth, name, key):
            value = results[(d, depth, name)][0][key]
            return float("nan") if value is None else value  # a sensitivity not measured

        for name in options.models:
            acc = {d: (stat(d, shallow, name, "accuracy"), stat(d, deep, name, "accuracy"))
                   for d in options.datasets}
            drop = max(a - b for a, b in acc.values())
            text = "; ".join(f"{d}: {a:.3f} -> {b:.3f}" for d, (a, b) in acc.items())
            if name in ("antisymmetric", "hamiltonian"):
                report.finding(
                    f"{name}_stable_in_depth", drop <= 0.05,
                    f"{name}: stable as depth grows {shallow} -> {deep}: test accuracy drops by at most 5 "
                    "points on every set.", f"test accuracy {text}.")
            elif name == "resnet":
                report.finding(
                    "resnet_degrades_in_depth", drop > 0.05,
                    f"standard ResNet (h = 1): accuracy may degrade as depth grows {shallow} -> {deep} (a drop of "
                    "more than 5 points on some set).", f"test accuracy {text}.")
        if "resnet_t" in options.models:
            sig = {(d, depth): stat(d, depth, "resnet_t", "sigma_max")
                   for d in options.datasets for depth in (shallow, deep)}
            text = "; ".join(f"{d}: accuracy {stat(d, shallow, 'resnet_t', 'accuracy'):.3f} -> "
                             f"{stat(d, deep, 'resnet_t', 'accuracy'):.3f}, median sigma_max "
                             f"{sig[(d, shallow)]:.3g} -> {sig[(d, deep)]:.3g}" for d in options.datasets)
            report.note(f"The same ResNet fields with h = T / depth (`resnet_t`, T = {options.t1}, one ODE on "
                        f"[0, T] as the stable nets), depth {shallow} -> {deep}: {text}. Its spectra have "
                        "eigenvalues with positive real parts as well (table): it differs from the h = 1 ResNet "
                        "in the end time (T fixed, not T = depth) and from the stable nets in the structure of "
                        "its field.")
        stable = [m for m in ("antisymmetric", "hamiltonian") if m in options.models]
        if not (stable and "resnet" in options.models):
            return
        gaps = {(d, depth): max(stat(d, depth, "resnet", "accuracy") - stat(d, depth, m, "accuracy")
                                for m in stable)
                for d in options.datasets for depth in options.depths}
        worst = max(gaps, key=gaps.get)
        report.finding(
            "stable_competitive", gaps[worst] <= 0.05,
            "antisymmetric and Hamiltonian nets classify competitively with the standard ResNet: within 5 points "
            "of its test accuracy at every depth and set.",
            f"largest shortfall {gaps[worst]:.3f} ({worst[0]}, depth {worst[1]}).")
        if options.sensitivity:
            grows = all(stat(d, deep, "resnet", "sigma_max") > stat(d, shallow, "resnet", "sigma_max")
                        for d in options.datasets)
            below = all(stat(d, deep, m, "sigma_max") < stat(d, deep, "resnet", "sigma_max")
                        for d in options.datasets for m in stable)
            text = "; ".join(f"{d}: " + ", ".join(f"{m} {stat(d, shallow, m, 'sigma_max'):.3g} -> "
                                                   f"{stat(d, deep, m, 'sigma_max'):.3g}"
                                                   for m in ("resnet", *stable))
                             for d in options.datasets)
            report.finding(
                "forward_sensitivity", grows and below,
                f"forward stability: the largest singular value of the stage's Jacobian grows with depth for the "
                f"standard ResNet (h = 1) and stays below it, at depth {deep}, for the antisymmetric and "
                "Hamiltonian nets.", f"median sigma_max, depth {shallow} -> {deep}: {text}.")


def _number(value) -> float | None:
    """A float, or None where it was not measured (NaN)."""
    return float(value) if np.isfinite(value) else None


def _fmt(values) -> str:
    return ", ".join(f"{v:.4f}" for v in np.asarray(values).reshape(-1))
