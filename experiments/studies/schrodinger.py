"""Real-time propagation of i dpsi/dt = H psi: the residual update of real-time TDDFT codes.

    psi' = -i H psi,        psi_{n+1} = psi_n + h * (step of the method on -i H psi)

H is real symmetric with eigenpairs H v_k = lambda_k v_k, so psi = sum_k c_k v_k and every
component solves the test equation y' = mu y with mu = -i lambda_k on the imaginary axis. A
one-step method multiplies c_k by R(z_k) per step, z_k = -i h lambda_k, hence

    ||psi_n||^2 = sum_k |c_k|^2 |R(z_k)|^(2n)            (exact: exp(-i H t) keeps it at 1)

forward Euler: |R(iy)|^2 = 1 + y^2 > 1 (the norm grows); RK4: |R(iy)|^2 = 1 - y^6/72 + y^8/576,
below 1 for 0 < |y| < 2 sqrt(2) (a slight decay) and above past that edge (blow-up); the
trapezoidal rule (Crank-Nicolson): |R(iy)| = 1 for every y (norm and energy conserved).
Reversible Heun carries (y, z, f(z)); its amplification matrix has roots mu = z +- sqrt(z^2 + 1),
of modulus 1 on the imaginary segment |y| <= 1 and growing past it.

The prediction takes R(z) (or the amplification matrix) from odenets.analysis, i.e. from each
method's own step, and the eigen-decomposition of H (numpy eigh); the measurement is odeint
with complex128 states (64-bit enabled only inside this study). Energies are the normalised
expectation <psi|H|psi> / <psi|psi>, in Hartree (atomic units throughout).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import odenets as on
from odenets import analysis, validate
from odenets import study as studies
from odenets._abstract import final
from odenets.analysis.stability import TOL

from ._plots import log_ticks

RK4_EDGE = 2.0 * np.sqrt(2.0)  # |R(iy)| = 1 at |y| = 2 sqrt(2) for RK4 (closed form, checked in the study)
PLOT_ABOVE = 1e250  # norms past this are left out of the figures (log-axis transforms overflow near 1e308)
COMPARE_BELOW = 1e100  # predicted and measured norms are compared where both are finite and below this
EDGE_GRID = np.linspace(0.0, 10.0, 10001)  # y on which the imaginary-axis interval |R(iy)| <= 1 is read
PLOT_GRID = np.linspace(0.0, 4.0, 401)  # y of the |R(iy)| figure
SHOWN = ("euler", "rk4", "trapezoid", "reversible_heun")  # methods drawn in the norm figures


@final
@dataclasses.dataclass(frozen=True)
class Options:
    methods: tuple[str, ...] = ()  # fixed-step integrators; empty: every fixed-step one of the registry
    systems: tuple[str, ...] = ("chain", "well")
    steps: int = 1000
    h: float = 0.1  # au, the usual default of real-time TDDFT codes: every system runs at it
    h_well_below: float = 0.09  # au, a second step for the well (below RK4's edge for the default grid)
    chain_sites: int = 64
    well_points: int = 33
    well_half_width: float = 6.0  # au; 33 points: dx = 0.375 au, h max|lambda| = 2.86 at h = 0.1 au
    packet_width: float = 1.0  # Gaussian width, in units of the system's length scale (see `initial_state`)
    noise: float = 1e-3  # complex noise on the packet, so that every eigencomponent is populated
    noise_seed: int = 0


def initial_state(packet: np.ndarray, options: Options) -> np.ndarray:
    """The normalised packet plus `noise` times complex Gaussian noise (seeded), normalised: the
    noise populates the top of the spectrum, as a kick or a nonlinear potential does."""
    rng = np.random.default_rng(options.noise_seed)
    noise = rng.standard_normal(packet.size) + 1j * rng.standard_normal(packet.size)
    psi = packet / np.linalg.norm(packet) + options.noise * noise
    return psi / np.linalg.norm(psi)


def chain(options: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight-binding chain of `chain_sites` sites, open ends, hopping -1 Hartree:
    H = -sum_j (|j><j+1| + |j+1><j|), eigenvalues 2 cos(k pi / (sites + 1)), so |lambda| < 2.
    Returns (site positions, H, packet): a Gaussian of width 4 * packet_width sites, centred, with
    momentum pi/2 (the largest group velocity)."""
    sites = options.chain_sites
    x = np.arange(sites, dtype=float) - (sites - 1) / 2
    off = -np.ones(sites - 1)
    packet = np.exp(-(x / (4 * options.packet_width)) ** 2 / 2 + 0.5j * np.pi * x)
    return x, np.diag(off, 1) + np.diag(off, -1), packet


def well(options: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Harmonic well V = x^2 / 2 (omega = 1) on `well_points` grid points over [-L, L], L =
    `well_half_width`, kinetic energy -1/2 d^2/dx^2 by the 3-point finite difference (Dirichlet ends):
    H = (1/dx^2) tridiag(-1/2, 1, -1/2) + diag(x^2 / 2), max lambda ~ 2/dx^2 + L^2/2.
    Returns (grid, H, packet): a Gaussian of width packet_width au displaced to x = 1.5 au (for
    width 1 a coherent state)."""
    points, half = options.well_points, options.well_half_width
    x = np.linspace(-half, half, points)
    dx = x[1] - x[0]
    kinetic = (np.eye(points) - 0.5 * np.eye(points, k=1) - 0.5 * np.eye(points, k=-1)) / dx**2
    packet = np.exp(-((x - 1.5) / options.packet_width) ** 2 / 2).astype(complex)
    return x, kinetic + np.diag(0.5 * x**2), packet


SYSTEMS = {"chain": chain, "well": well}  # name -> builder of (grid, H, packet)


def _field(t, psi, hamiltonian):
    """dpsi/dt = -i H psi."""
    return -1j * (hamiltonian @ psi)


def _carried_start(integ, z: np.ndarray) -> np.ndarray:
    """s_0[k]: the state an integrator carries at t0 for y' = z_k y, y(0) = 1 (h = 1), as the
    floating-point leaves of its `init`, in the order `analysis.amplification_matrix` uses for M(z)."""
    def one(zk):
        def fq(t, y, args):
            return zk * y, ()

        leaves = jax.tree.leaves(integ.init(fq, jnp.zeros(()), jnp.ones((), zk.dtype), None))
        return jnp.stack([leaf.astype(zk.dtype) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.inexact)])

    return np.asarray(jax.vmap(one)(jnp.asarray(z)))


def responses(integrator: str, zs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(R(z), M(z)) for each array in zs: the stability function (analysis.stability_function) and the
    amplification matrix (analysis.amplification_matrix, shape z.shape + (m, m)), evaluated on all the
    arrays at once (one compile per method)."""
    flat = np.concatenate([np.ravel(z) for z in zs])
    r, m = analysis.stability_function(integrator)(flat), analysis.amplification_matrix(integrator, flat)
    cuts = np.cumsum([np.size(z) for z in zs])[:-1]
    return [(ri.reshape(np.shape(z)), mi.reshape(np.shape(z) + mi.shape[1:]))
            for z, ri, mi in zip(zs, np.split(r, cuts), np.split(m, cuts), strict=True)]


def predicted_amplitudes(integrator: str, z: np.ndarray, r: np.ndarray, m: np.ndarray, steps: int) -> np.ndarray:
    """a[n, k]: the factor multiplying c_k after n steps, shape (steps + 1, len(z)), given R(z) and M(z).

    One-step methods (m = 1): R(z_k)^n. Methods that carry more state (reversible Heun, m = 3):
    the first carried entry of M(z_k)^n s_0(z_k), s_0 the state the method starts from.
    """
    if m.shape[-1] == 1:
        with np.errstate(over="ignore", invalid="ignore"):
            return r[None, :] ** np.arange(steps + 1)[:, None]
    s = _carried_start(analysis.fixed_step(integrator), z)  # (K, m)
    out = np.empty((steps + 1, z.size), complex)
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(steps + 1):
            out[n] = s[:, 0]
            s = np.einsum("kij,kj->ki", m, s)
    return out


def imaginary_edge(y: np.ndarray, r_iy: np.ndarray) -> float:
    """The largest y_j with |R(i y)| <= 1 (+ rounding) on all of y_0 = 0, ..., y_j: the method's
    imaginary-axis stability interval on the grid y; inf when every y is stable."""
    unstable = np.abs(r_iy) > 1.0 + TOL
    return float(y[np.argmax(unstable) - 1]) if unstable.any() else float("inf")


def norms(states: np.ndarray) -> np.ndarray:
    """||psi_n|| along the last axis, scaled so that norms up to the float64 maximum do not overflow."""
    scale = np.max(np.abs(states), axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return scale[..., 0] * np.sqrt(np.sum(np.abs(states / scale) ** 2, axis=-1))


def energies(states: np.ndarray, hamiltonian: np.ndarray) -> np.ndarray:
    """<psi_n|H|psi_n> / <psi_n|psi_n> (real: H is symmetric), scaled against overflow."""
    scale = np.max(np.abs(states), axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        psi = states / scale
        return np.real(np.sum(psi.conj() * (psi @ hamiltonian.T), axis=-1)) / np.sum(np.abs(psi) ** 2, axis=-1)


@final
@studies.study.register("schrodinger")
class Schrodinger(studies.Study):
    title = "Real-time Schroedinger propagation: norm and energy under fixed-step integrators"
    claim = (
        "Real-time TDDFT propagates i dpsi/dt = H psi step by step. Castro, Marques & Rubio (2004, J. Chem. "
        "Phys. 121, 3425, 'Propagators for the time-dependent Kohn-Sham equations') compare the propagators "
        "such codes use: truncated Taylor expansions of exp(-i H h) (for a time-independent H, forward Euler is "
        "the first-order one and RK4 the fourth-order one) are only conditionally stable, while Crank-Nicolson "
        "(the trapezoidal rule) is unitary. Linear stability theory (Hairer & Wanner 1996, 'Solving ODEs II', "
        "Sect. IV.2) makes it quantitative on the imaginary axis, where -i H's eigenvalues lie: Euler's norm "
        "grows as |1 + i h lambda|^N per eigencomponent for every h; RK4 is slightly dissipative while "
        "h max|lambda| < 2 sqrt(2) and blows up past it; Crank-Nicolson keeps norm and energy for any h. "
        "0.1 au is a usual default time step of such codes."
    )
    sizes = {
        "smoke": Options(methods=SHOWN, steps=200, chain_sites=33),
        "full": Options(),
    }
    smoke_expect = ("euler_norm_as_predicted", "trapezoid_conserves_norm", "rk4_edge", "reversible_heun_edge",
                    "every_method_as_predicted")

    def run(self, options: Options, report: studies.Report) -> None:
        methods = check(options)
        with jax.enable_x64(True):  # complex128 states and R(z); restored on exit
            cases, axis, rows = measure(options, methods)
            write(options, methods, cases, axis, rows, report)


def check(options: Options) -> list[str]:
    """The methods to run (validated), every option checked before any compute."""
    fixed = [n for n in on.integrator.names() if not on.integrator.get(n).adaptive]
    methods = list(options.methods) or fixed
    for name in methods:
        validate.choice("study.methods", name, fixed)
    if not options.systems:
        raise ValueError(f"study.systems is empty; valid choices: {', '.join(SYSTEMS)}")
    for name in options.systems:
        validate.choice("study.systems", name, SYSTEMS)
    validate.integer("study.steps", options.steps, low=1)
    validate.integer("study.chain_sites", options.chain_sites, low=3)
    validate.integer("study.well_points", options.well_points, low=3)
    for key in ("h", "h_well_below", "well_half_width", "packet_width"):
        validate.number(f"study.{key}", getattr(options, key), low=0.0)
    validate.number("study.noise", options.noise, low=0.0, open_low=False)
    return methods


def _cases(options: Options) -> list[tuple[str, float]]:
    cases = [(system, options.h) for system in options.systems]
    if "well" in options.systems:
        cases.append(("well", options.h_well_below))
    return cases


def measure(options: Options, methods: list[str]):
    """Every (system, h) case with every method: measured and predicted norms and energies, and each
    method's R on the imaginary axis (the edge grid and the figure's grid)."""
    solvers = {name: jax.jit(lambda psi0, t1, ham, name=name: on.odeint(
        _field, psi0, 0.0, t1, steps=options.steps, integrator=name, args=ham, save="all").xs) for name in methods}
    cases = []
    for system, h in _cases(options):
        x, ham, packet = SYSTEMS[system](options)
        lam, vecs = np.linalg.eigh(ham)
        psi0 = initial_state(packet, options)
        t = h * np.arange(options.steps + 1)
        cases.append({"system": system, "h": h, "t": t, "ham": ham, "lam": lam, "vecs": vecs, "psi0": psi0,
                      "c": vecs.T @ psi0, "z": -1j * h * lam, "zmax": float(h * np.max(np.abs(lam))),
                      "e0": float(energies(psi0, ham)), "methods": {}})
    axis, rows = {}, []
    for name in methods:
        zs = [c["z"] for c in cases] + [np.array([-1j * c["zmax"] for c in cases]), 1j * EDGE_GRID, 1j * PLOT_GRID]
        *per_case, (r_top, _), (r_edge, _), (r_plot, _) = responses(name, zs)
        axis[name] = {"edge": imaginary_edge(EDGE_GRID, r_edge), "r_plot": np.abs(r_plot)}
        for case, (r, m), top in zip(cases, per_case, r_top, strict=True):
            lam, c, ham = case["lam"], case["c"], case["ham"]
            xs = np.asarray(solvers[name](jnp.asarray(case["psi0"]), float(case["t"][-1]), jnp.asarray(ham)))
            amp = predicted_amplitudes(name, case["z"], r, m, options.steps)
            with np.errstate(over="ignore", invalid="ignore"):
                weights = np.abs(amp * c) ** 2
                predicted = np.sqrt(np.sum(weights, axis=1))
            measured = norms(xs)
            energy = energies(xs, ham)
            ok = np.isfinite(measured) & np.isfinite(predicted)
            ok &= (measured < COMPARE_BELOW) & (predicted < COMPARE_BELOW)
            rel = float(np.max(np.abs(measured[ok] / predicted[ok] - 1.0))) if ok.any() else float("nan")
            drift = np.abs(energy - case["e0"])
            overflow = int(np.argmin(np.isfinite(measured) & (measured < COMPARE_BELOW))) if not ok.all() else None
            exact = case["vecs"] @ (np.exp(-1j * lam * case["t"][-1]) * c)
            err = float(norms(xs[-1] - exact)) if np.all(np.isfinite(xs[-1])) else float("inf")
            run = {"norm": measured, "predicted": predicted, "energy": energy, "rel": rel,
                   "compared": int(ok.sum()), "overflow_step": overflow,
                   "max_norm_dev": float(np.max(np.abs(measured - 1.0))),
                   "max_drift": float(np.max(drift)) if np.all(np.isfinite(drift)) else float("inf"), "error": err}
            case["methods"][name] = run
            rows.append([case["system"], case["h"], case["zmax"], name, float(abs(top)), float(predicted[-1]),
                         float(measured[-1]), rel, overflow, err, run["max_drift"]])
    return cases, axis, rows


def write(options: Options, methods: list[str], cases: list[dict], axis: dict, rows: list,
          report: studies.Report) -> None:
    import matplotlib.pyplot as plt

    edges = {name: axis[name]["edge"] for name in methods}
    report.setup(
        "Systems (atomic units): `chain`, a tight-binding chain of "
        f"{options.chain_sites} sites with hopping -1 Hartree (|lambda| < 2); `well`, a harmonic well "
        f"x^2/2 on {options.well_points} grid points over [-L, L], L = {options.well_half_width} au, "
        "with the 3-point kinetic energy (its largest eigenvalue ~ 2/dx^2 + L^2/2 sets h max|lambda|). "
        f"Every system runs at h = {options.h} au, the well also at h = {options.h_well_below} au; "
        f"{options.steps} steps each. Initial state: a normalised Gaussian wave packet plus {options.noise:g} "
        "complex noise (every eigencomponent populated). States are complex128 through `odenets.odeint` "
        "(64-bit only inside this study), one jitted solve per method and shape."
    )
    report.setup(
        "Prediction: with H = V diag(lambda) V^T and c = V^T psi_0, the component c_k after n steps is "
        "a_n(z_k) c_k with z_k = -i h lambda_k, where a_n = R(z_k)^n, R from "
        "`odenets.analysis.stability_function` (the method's own step in complex arithmetic), and for "
        "reversible Heun (which carries (y, z, f(z))) the first entry of M(z_k)^n s_0 with M from "
        "`analysis.amplification_matrix`. The predicted norm is sqrt(sum_k |a_n c_k|^2). Exact reference: "
        "psi(t) = V exp(-i diag(lambda) t) V^T psi_0 "
        "(norm 1 and energy E_0 for all t). Stability along the imaginary axis (Hairer & Wanner 1996, "
        "'Solving ODEs II', Sect. IV.2): |R(iy)| <= 1 on [0, Y]; Y read off each method's R: "
        + ", ".join(f"{n} {edges[n]:.3g}" for n in methods) + "."
    )
    report.table("propagation", ["system", "h (au)", "h lambda_max", "method", "abs R(-i h lambda_max)",
                                 "predicted norm psi_N", "measured norm psi_N", "max rel. dev.",
                                 "overflow step", "error vs exact psi_N", "max drift E_n - E_0 (Ha)"], rows,
                 caption="Norm and energy after N steps: predicted from R(z) and the spectrum of H (lambda_max = "
                         "max abs lambda), measured through odeint; max rel. dev. = max over steps of "
                         "abs(measured / predicted norm - 1), over the steps before the overflow step (the "
                         "first with a norm > 1e100 or non-finite); error and drift are 2-norms and abs values")
    report.value("imaginary_axis_edge", edges)
    report.value("energy_e0", {f"{c['system']}@{c['h']}": c["e0"] for c in cases})
    _figures(cases, methods, axis, report, plt)
    _findings(cases, methods, edges, report)


def _plotted(y: np.ndarray) -> np.ndarray:
    """y with the values a log axis cannot draw (<= 0, non-finite, past PLOT_ABOVE) as gaps."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(y) & (y > 0) & (y < PLOT_ABOVE), y, np.nan)


def _figures(cases, methods, axis, report, plt) -> None:
    shown = [m for m in methods if m in SHOWN] or methods
    width = 4.6 * len(cases)
    fig, axes = plt.subplots(2, len(cases), figsize=(width, 7.0), squeeze=False)
    for row, ylabel in enumerate(("||psi_n||", "| ||psi_n|| - 1 |")):
        for ax, case in zip(axes[row], cases, strict=True):
            for i, name in enumerate(shown):
                run = case["methods"][name]
                y = run["norm"] if row == 0 else np.abs(run["norm"] - 1.0)
                ax.semilogy(case["t"], _plotted(y), color=f"C{i}", label=name)
                if row == 0:
                    ax.semilogy(case["t"], _plotted(run["predicted"]), color="k", linestyle=":", linewidth=0.9,
                                label="predicted" if i == 0 else None)
            ax.set_title(f"{case['system']}, h = {case['h']} au, h max|lambda| = {case['zmax']:.3g}", fontsize=9)
            ax.set_xlabel("t (au)")
            ax.set_ylabel(ylabel)
            log_ticks(ax)
            ax.legend(fontsize="x-small")
    fig.tight_layout()
    report.figure("norm", fig, "norm (top; dotted: predicted from R(z) and the spectrum of H) and its deviation "
                  "from 1 (bottom) vs time per method, log scale: Trapezoid (Crank-Nicolson) stays at rounding, "
                  "RK4 below its edge decays slightly, Euler grows")
    fig, axes = plt.subplots(1, len(cases), figsize=(width, 3.6), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        for i, name in enumerate(methods):
            drift = np.abs(case["methods"][name]["energy"] - case["e0"])
            drift = _plotted(drift)
            ax.semilogy(case["t"], drift, color=f"C{i}", label=name)
        ax.set_title(f"{case['system']}, h = {case['h']} au", fontsize=9)
        ax.set_xlabel("t (au)")
        ax.set_ylabel("|E_n - E_0| (Ha)")
        log_ticks(ax)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    report.figure("energy_drift", fig, "energy drift |<H>_n - E_0| vs time (normalised expectation, log scale)")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, name in enumerate(methods):
        ax.plot(PLOT_GRID, axis[name]["r_plot"], color=f"C{i}", label=name)
    for j, case in enumerate(cases):
        ax.axvline(case["zmax"], color="0.4", linestyle=("--", ":", "-.")[j % 3], linewidth=0.9,
                   label=f"h max|lambda| ({case['system']}, h = {case['h']})")
    ax.axhline(1.0, color="k", linewidth=0.6)
    ax.set_ylim(0.0, 2.0)
    ax.set_xlabel("y  (z = h mu = i y, y = h |lambda|)")
    ax.set_ylabel("|R(iy)|")
    ax.legend(fontsize="x-small", ncol=2)
    report.figure("imaginary_axis", fig, "|R(iy)| along the imaginary axis, from each method's own step, "
                  "with the largest h|lambda| of each case")


def _findings(cases, methods, edges, report) -> None:
    def runs(name):
        return [(case, case["methods"][name]) for case in cases if name in case["methods"]]

    if "euler" in methods:
        rs = runs("euler")
        grows = all(r["norm"][min(10, len(r["norm"]) - 1)] > 1.0 for _, r in rs)
        worst = max(r["rel"] for _, r in rs)
        report.finding("euler_norm_as_predicted", grows and worst < 1e-6,
                       "forward Euler's norm grows, as sqrt(sum_k |c_k|^2 |1 - i h lambda_k|^(2n)), "
                       "matching the prediction to < 1e-6 relative",
                       "; ".join(f"{c['system']} h={c['h']}: ||psi_N|| {r['norm'][-1]:.4g} "
                                 f"(predicted {r['predicted'][-1]:.4g}), max rel. dev. {r['rel']:.2g} over "
                                 f"{r['compared']} steps" for c, r in rs) + ".")
    if "trapezoid" in methods:
        rs = runs("trapezoid")
        dev = max(r["max_norm_dev"] for _, r in rs)
        drift = max(r["max_drift"] / max(abs(c["e0"]), 1.0) for c, r in rs)
        report.finding("trapezoid_conserves_norm", dev < 1e-12 and drift < 1e-10,
                       "Crank-Nicolson (|R(iy)| = 1) keeps the norm to rounding (< 1e-12) and the energy "
                       "(< 1e-10 relative) at any h, past RK4's edge too",
                       f"max_n | ||psi_n|| - 1 | = {dev:.2g}, max relative energy drift {drift:.2g} over "
                       + ", ".join(f"{c['system']} h={c['h']} (h max|lambda| {c['zmax']:.3g})" for c, _ in rs)
                       + ".")
    if "rk4" in methods:
        rs = runs("rk4")
        below = [(c, r) for c, r in rs if c["zmax"] < RK4_EDGE]
        above = [(c, r) for c, r in rs if c["zmax"] > RK4_EDGE]
        decays = all(r["norm"][-1] < 1.0 and r["max_norm_dev"] < 1e-1 and np.nanmax(r["norm"]) <= 1.0 + 1e-12
                     and r["rel"] < 1e-6 for _, r in below)
        blows = all(not np.isfinite(r["norm"][-1]) or r["norm"][-1] > 10.0 for _, r in above)
        report.finding("rk4_edge", bool(below) and bool(above) and decays and blows,
                       f"RK4 (edge |y| = 2 sqrt 2 = {RK4_EDGE:.4f}; from its R: {edges['rk4']:.4f}): below the "
                       "edge the norm decays slightly and never grows; past it the norm blows up (> 10)",
                       "; ".join(f"{c['system']} h={c['h']} (h max|lambda| {c['zmax']:.3g}): ||psi_N|| "
                                 f"{r['norm'][-1]:.6g} (1 - ||psi_N|| = {1 - r['norm'][-1]:.3g}), predicted "
                                 f"{r['predicted'][-1]:.6g}" for c, r in rs)
                       + ("" if below and above else "; needs one case below and one above the edge") + ".")
    if "reversible_heun" in methods:
        rs = runs("reversible_heun")
        edge = edges["reversible_heun"]
        inside = [(c, r) for c, r in rs if c["zmax"] < edge]
        outside = [(c, r) for c, r in rs if c["zmax"] > edge]
        bounded = all(r["max_norm_dev"] < 1e-2 and r["rel"] < 1e-6 for _, r in inside)
        blows = all(not np.isfinite(r["norm"][-1]) or r["norm"][-1] > 10.0 for _, r in outside)
        report.finding("reversible_heun_edge", bool(inside) and bool(outside) and bounded and blows,
                       "reversible Heun: roots z +- sqrt(z^2 + 1) of modulus 1 for |y| <= 1 (from its "
                       f"amplification matrix: {edge:.4f}): the norm stays bounded (within 1e-2 of 1, as "
                       "predicted) inside, blows up (> 10) outside",
                       "; ".join(f"{c['system']} h={c['h']} (h max|lambda| {c['zmax']:.3g}): max | ||psi_n|| - 1 "
                                 f"| {r['max_norm_dev']:.3g}, ||psi_N|| {r['norm'][-1]:.4g}, rel. dev. from "
                                 f"prediction {r['rel']:.2g}" for c, r in rs)
                       + ("" if inside and outside else "; needs one case inside and one outside |y| <= 1") + ".")
    rels = {f"{name}@{c['system']},{c['h']}": r["rel"] for name in methods for c, r in runs(name)}
    worst = max(rels, key=lambda k: rels[k] if np.isfinite(rels[k]) else -1.0)
    report.finding("every_method_as_predicted", all(v < 1e-6 for v in rels.values() if np.isfinite(v)),
                   "every method's measured norm equals sqrt(sum_k |a_n(z_k) c_k|^2) with a_n from its stability "
                   "function or amplification matrix (< 1e-6 relative, where both are below 1e100)",
                   f"largest relative deviation {rels[worst]:.2g} ({worst}) over {len(rels)} method/case pairs.")
    for c in cases:
        ranked = sorted(methods, key=lambda n: c["methods"][n]["max_drift"])
        report.note(f"{c['system']}, h = {c['h']} au (h max|lambda| = {c['zmax']:.3g}, E_0 = {c['e0']:.6g} Ha): "
                    "energy drift max_n |E_n - E_0|, smallest first: "
                    + ", ".join(f"{n} {c['methods'][n]['max_drift']:.2g}" for n in ranked) + " Ha.")
