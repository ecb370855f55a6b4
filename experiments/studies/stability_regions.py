"""Stability regions of every fixed-step integrator, with the eigenvalues of h dF/dx of a trained
ResNet's and ODE-Net's blocks overlaid, and the fraction inside each region.

A residual step x_{k+1} = x_k + h F_k(x_k) is, near x_k, the forward-Euler step of y' = J_k y with
J_k = dF_k/dx(x_k); it (and any one-step method in its place) does not amplify perturbations when
every z = h lambda(J_k) lies in the method's region {z : |R(z)| <= 1}.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from odenets import analysis
from odenets import study as studies
from odenets._abstract import final
from odenets.integrators import REGISTRY as INTEGRATORS

MODELS = ("resnet", "odenet")


@final
@dataclasses.dataclass(frozen=True)
class Options:
    """resnet, odenet: `odenets run` overrides that train each model (`odenets.train.loop.fit`);
    inputs: test inputs whose trajectories' Jacobians are taken, at every step;
    resolution: the region plot's grid (resolution x resolution points)."""

    resnet: tuple[str, ...] = ()
    odenet: tuple[str, ...] = ()
    inputs: int = 16
    resolution: int = 250


_MNIST1D = ("model.width=32", "optim.epochs=30")
_TOY = ("data=spheres", "data.n_train=200", "data.n_test=100", "model.kind=mlp", "model.width=8",
        "model.depth=3", "integrator=euler", "optim.epochs=1", "optim.batch_size=50", "optim.lr=0.01")


def fixed_step_integrators() -> list[str]:
    """Every registered integrator with a fixed step (a stability function of h lambda)."""
    return [n for n in INTEGRATORS.names() if not INTEGRATORS.get(n).adaptive]


def stable(integrator: str, z, chunk: int) -> np.ndarray:
    """`analysis.stable` elementwise, evaluated in flat chunks of `chunk` points: R(z) is compiled
    once per integrator and array size, so every call of the study (and `plot_regions` with a grid of
    `chunk` points) reuses one compilation."""
    z = np.asarray(z)
    flat = z.reshape(-1)
    pad = (-flat.size) % chunk
    flat = np.concatenate([flat, np.zeros(pad, flat.dtype)])
    out = np.concatenate([analysis.stable(integrator, part) for part in flat.reshape(-1, chunk)])
    return out[: z.size].reshape(z.shape)


def numerically_zero(z: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """|z| <= rel max |z|: eigenvalues of a rank-deficient float32 Jacobian (a ReLU field's dead units)
    come out at rounding level, their sign and phase noise; every region's boundary passes through 0."""
    return np.abs(z) <= rel * np.max(np.abs(z))


def ray_edge(inside_on_rays: np.ndarray, r_max: float) -> np.ndarray:
    """From `stable` on the rays r e^{i theta} (one row per theta, r = r_max / n .. r_max): the first r
    outside the region (r_max if none), i.e. how far the region reaches from 0 along that ray."""
    n = inside_on_rays.shape[1]
    outside = ~inside_on_rays
    first = np.where(outside.any(axis=1), outside.argmax(axis=1), n)
    return np.where(first == 0, 0.0, r_max * first / n)


@final
@studies.study.register("stability_regions")
class StabilityRegions(studies.Study):
    title = "Stability regions and the spectra of trained residual blocks"
    claim = (
        "A residual network's forward propagation x_{k+1} = x_k + h F_k(x_k) is a discretisation of "
        "dx/dt = F(x); it is stable when the eigenvalues of h dF_k/dx lie in the integrator's stability "
        "region, and nothing in ordinary training keeps them there: trained ResNets are not guaranteed to be "
        "forward-stable (Haber & Ruthotto 2017, 'Stable architectures for deep neural networks', Inverse "
        "Problems 34; Chang et al. 2018, 'Reversible architectures for arbitrarily deep residual neural "
        "networks', AAAI). The explicit regions grow with the order (Euler's disc inside RK4's region near "
        "the origin); BackwardEuler and Trapezoid (A-stable) contain the whole left half-plane."
    )
    sizes = {
        "smoke": Options(resnet=("model=resnet", *_TOY), odenet=("model=node", "model.time=true", *_TOY), inputs=8,
                         resolution=150),
        "full": Options(resnet=("experiment=mnist1d_resnet", *_MNIST1D),
                        odenet=("experiment=mnist1d_odenet", *_MNIST1D), inputs=16),
    }
    smoke_expect = ("resnet_not_guaranteed", "explicit_fraction_grows_with_order", "a_stable_hold_left_half")

    def run(self, options: Options, report: studies.Report) -> None:
        import matplotlib.pyplot as plt

        from experiments.studies._trained import train

        methods = fixed_step_integrators()
        spectra, trained = {}, {}
        for name in MODELS:
            overrides = [*getattr(options, name), f"seed={report.seed}"]
            trained[name] = train(overrides, report.subdir(name))
            x = trained[name].data.x_test[: options.inputs]
            stages = analysis.step_spectra(trained[name].model, x)
            spectra[name] = stages[0]  # one ODE stage in both models
        report.setup(
            "Two classifiers trained with `odenets.train.loop.fit` (each into runs/<model>/, with its own "
            "report.md): a ResNet (per-step residual fields, forward Euler, h = 1) and an ODE-Net (one shared "
            "time-conditioned field, forward Euler, h = T/N). Overrides: ResNet `" + " ".join(options.resnet)
            + "`; ODE-Net `" + " ".join(options.odenet) + "`."
        )
        report.setup(
            f"For {options.inputs} test inputs, the exact Jacobian dF_k/dx (jax.jacfwd, per sample) is taken at "
            "the state x_k the trained forward pass reaches at every step k (`odenets.analysis.step_spectra`, "
            "through odeint's save='all'), and all its eigenvalues z = h lambda are compared with the region "
            "|R(z)| <= 1 of every fixed-step integrator in the registry (`odenets.analysis.stability_function`, "
            "read off each method's own step; ReversibleHeun's R is the dominant eigenvalue of its 3 x 3 "
            "amplification matrix): " + ", ".join(methods) + "."
        )
        # every z this study classifies, one evaluation of each method's R (chunks of the plot's grid size)
        chunk = options.resolution**2
        grid = np.linspace(-4, 1, 101)[None, :] + 1j * np.linspace(-3.5, 3.5, 141)[:, None]
        r_max, angles = 8.0, np.pi * np.array([0.52, 0.6, 0.75, 0.9, 1.0])
        rays = np.linspace(r_max / 1000, r_max, 1000)[None, :] * np.exp(1j * angles)[:, None]
        parts = [spectra[n].eigenvalues for n in MODELS] + [grid, rays]
        sizes = np.cumsum([p.size for p in parts])[:-1]
        every = np.concatenate([p.reshape(-1) for p in parts])
        inside = {}
        for m in methods:
            split = np.split(stable(m, every, chunk), sizes)
            inside[m] = {"resnet": split[0].reshape(parts[0].shape), "odenet": split[1].reshape(parts[1].shape),
                         "grid": split[2].reshape(grid.shape), "rays": split[3].reshape(rays.shape)}
        fractions = {n: {m: float(np.mean(inside[m][n])) for m in methods} for n in MODELS}

        rows = []
        for name in MODELS:
            sp, tr = spectra[name], trained[name]
            z = sp.eigenvalues.reshape(-1)
            nonzero = ~numerically_zero(z)
            rows.append([name, tr.summary["test_accuracy"], sp.h, len(sp.times), z.size,
                         float(np.max(np.abs(z))), float(np.median(np.abs(z[nonzero]))), float(np.mean(~nonzero)),
                         float(np.mean(z.real[nonzero] <= 0)), *[fractions[name][m] for m in methods],
                         *[float(np.mean(inside[m][name].reshape(-1)[nonzero])) for m in ("euler", "rk4")]])
        report.table(
            "fraction_inside",
            ["model", "test accuracy", "h", "steps", "eigenvalues", "max |z|", "median nonzero |z|",
             "share |z| ~ 0", "nonzero: Re z <= 0", *[f"inside {m}" for m in methods],
             "nonzero inside euler", "nonzero inside rk4"],
            rows,
            caption="Fraction of the eigenvalues z = h lambda of dF_k/dx (every step, every input) inside each "
                    "integrator's stability region (|z| ~ 0: at rounding level, |z| <= 1e-5 max |z|; 0 is on "
                    "every region's boundary and counts as inside)",
        )
        per_step = []
        for name in MODELS:
            z = spectra[name].eigenvalues
            for k in range(z.shape[0]):
                per_step.append([name, k, float(np.max(np.abs(z[k]))), float(np.mean(z[k].real <= 0)),
                                 *[float(np.mean(inside[m][name][k])) for m in ("euler", "rk4")]])
        report.table("per_step", ["model", "step k", "max |z|", "Re z <= 0", "inside euler", "inside rk4"],
                     per_step, caption="Per step: the spectral radius of h dF_k/dx and the fraction inside")

        # the figure: every region, each model's eigenvalues on top
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
        for ax, name in zip(axes, MODELS):
            z = spectra[name].eigenvalues.reshape(-1)
            reach = max(3.0, float(np.quantile(np.abs(z), 0.99)) * 1.1)
            extent = (min(-5.0, -reach), max(3.0, reach), -max(4.0, reach), max(4.0, reach))
            analysis.plot_regions(methods, ax, extent=extent, resolution=options.resolution,
                                  eigenvalues={f"{name}: h dF_k/dx, h = {spectra[name].h:.3g}": z})
            ax.set_title(f"{name} (test accuracy {trained[name].summary['test_accuracy']:.3f})")
        report.figure("regions", fig, "Stability regions |R(z)| <= 1 of every fixed-step integrator, with the "
                                      "eigenvalues z = h lambda of the trained blocks' Jacobians at every step")

        # region facts (independent of the models): nesting of the explicit regions, reach along rays
        report.value("grid_points", int(grid.size))
        report.value("grid_euler_not_in_heun", int(np.sum(inside["euler"]["grid"] & ~inside["heun"]["grid"])))
        report.value("grid_heun_not_in_rk4", int(np.sum(inside["heun"]["grid"] & ~inside["rk4"]["grid"])))
        edges = [[m, *ray_edge(inside[m]["rays"], r_max)] for m in methods]
        report.table("ray_edges", ["integrator", *[f"theta = {a / np.pi:.3g} pi" for a in angles]], edges,
                     caption=f"How far each region reaches from 0 along the ray z = r e^(i theta) (upper half; "
                             f"the regions are symmetric under conjugation; {r_max:g} = at least {r_max:g})")

        self._findings(report, spectra, fractions, inside, methods)

    @staticmethod
    def _findings(report, spectra, fractions, inside, methods) -> None:
        res = fractions["resnet"]
        nz = {}
        for n in MODELS:
            z = spectra[n].eigenvalues.reshape(-1)
            keep = ~numerically_zero(z)
            nz[n] = {"euler": float(np.mean(inside["euler"][n].reshape(-1)[keep])),
                     "median": float(np.median(np.abs(z[keep])))}
        report.finding(
            "resnet_not_guaranteed", res["euler"] < 1.0,
            "training does not keep every eigenvalue of h dF_k/dx of a ResNet (Euler, h = 1) inside Euler's "
            "region |1 + z| <= 1 (Haber & Ruthotto 2017): fraction inside < 1.",
            f"fraction inside Euler's region {res['euler']:.3f} of all eigenvalues, {nz['resnet']['euler']:.3f} "
            f"of the nonzero ones (ResNet); {fractions['odenet']['euler']:.3f} and {nz['odenet']['euler']:.3f} "
            f"(ODE-Net); max |z| {np.max(np.abs(spectra['resnet'].eigenvalues)):.3g} (ResNet).",
        )
        order = all(fractions[n]["euler"] <= fractions[n]["heun"] <= fractions[n]["rk4"] for n in MODELS)
        grid, heun = inside["euler"]["grid"], inside["heun"]["grid"]
        report.finding(
            "explicit_fraction_grows_with_order", order,
            "the explicit regions nest near the origin (Euler inside Heun inside RK4), so the fraction inside "
            "grows with the order: euler <= heun <= rk4 for both models.",
            "; ".join(f"{n}: euler {fractions[n]['euler']:.3f}, heun {fractions[n]['heun']:.3f}, midpoint "
                      f"{fractions[n]['midpoint']:.3f}, rk4 {fractions[n]['rk4']:.3f}" for n in MODELS)
            + f"; on a {grid.size}-point grid of [-4, 1] x [-3.5i, 3.5i], {int(np.sum(grid & ~heun))} points "
            f"are inside Euler's region but not Heun's, {int(np.sum(heun & ~inside['rk4']['grid']))} inside "
            "Heun's but not RK4's.",
        )
        left_ok, parts = True, []
        for n in MODELS:
            z = spectra[n].eigenvalues.reshape(-1)
            nonzero = ~numerically_zero(z)
            lhp = (z.real <= 0) & nonzero
            be, tr = (float(np.mean(inside[m][n].reshape(-1)[lhp])) for m in ("backward_euler", "trapezoid"))
            trap = inside["trapezoid"][n].reshape(-1)[nonzero]
            trap_is_lhp = bool(np.all(trap == (z.real[nonzero] <= 0)))
            left_ok &= be == 1.0 and tr == 1.0 and trap_is_lhp
            parts.append(f"{n}: {int(lhp.sum())} of the {int(nonzero.sum())} nonzero eigenvalues (of {z.size}) "
                         f"have Re z <= 0; inside backward_euler {be:.3f}, trapezoid {tr:.3f} of them; trapezoid "
                         f"holds exactly the nonzero ones with Re z <= 0: {trap_is_lhp}; backward_euler's overall "
                         f"fraction {fractions[n]['backward_euler']:.3f}")
        report.finding(
            "a_stable_hold_left_half", left_ok,
            "A-stability: BackwardEuler and Trapezoid hold every eigenvalue with Re z <= 0; Trapezoid's region is "
            "exactly the closed left half-plane (BackwardEuler also holds most of the right half-plane). "
            "Eigenvalues at rounding level (|z| <= 1e-5 max |z|, whose sign is noise) are left out.",
            "; ".join(parts) + ".",
        )
        smaller = nz["odenet"]["euler"] > nz["resnet"]["euler"]
        report.finding(
            "odenet_more_inside", smaller,
            "the ODE-Net's small step (h = T/N) keeps z = h lambda nearer the origin than the ResNet's h = 1, so "
            "a larger fraction of the nonzero eigenvalues lies inside Euler's region.",
            f"nonzero eigenvalues inside Euler: ODE-Net {nz['odenet']['euler']:.3f} (h = "
            f"{spectra['odenet'].h:.3g}, median nonzero |z| {nz['odenet']['median']:.3g}) vs ResNet "
            f"{nz['resnet']['euler']:.3f} (h = {spectra['resnet'].h:.3g}, median nonzero |z| "
            f"{nz['resnet']['median']:.3g}).",
        )
        if "reversible_heun" in methods:
            report.note(
                "ReversibleHeun's dominant root has modulus <= 1 only on the segment z in [-i, i] of the "
                "imaginary axis (its roots are mu = z +- sqrt(z^2 + 1) and 0), so its region has no area: "
                f"fractions inside {fractions['resnet']['reversible_heun']:.3f} (ResNet), "
                f"{fractions['odenet']['reversible_heun']:.3f} (ODE-Net). A reversible step neither damps nor "
                "can be damped: it suits fields with imaginary spectra (antisymmetric, Hamiltonian), not these "
                "trained blocks."
            )
