"""Step-size control of the adaptive integrators, measured: accepted and rejected steps, f calls and
the error against a tight reference, for every adaptive integrator and a grid of PID coefficients.

    python -m experiments.step_control               # every problem (about 6 minutes on two cores)
    python -m experiments.step_control --quick       # Robertson with two controllers (a smoke test)
    python -m experiments.step_control --json out.json

The controller (diffrax.PIDController, as odenets builds it) scales each step by

    h_(n+1) = h_n * clip(safety * r_n^-(pcoeff + icoeff + dcoeff)/k * r_(n-1)^(pcoeff + 2 dcoeff)/k
                         * r_(n-2)^-dcoeff/k, factormin, factormax)

where r_n is the RMS of the local error estimate in units of atol + rtol |x| and k is the error
order (5 for Dopri5/Tsit5/Kvaerno5's embedded pairs). Cost is counted as calls of f (a counter
inside f: Kvaerno5's Newton iterations and Jacobians included, a Jacobian column as one call), and
accuracy as max |x - x_ref| / (atol + rtol |x_ref|) over the states at 11 evenly spaced times (the
error in units of the tolerance; below about 10 is tolerance proportionality at work). The
reference solves the same problem with Kvaerno5 (stiff) or Dopri5 at rtol = 1e-12.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import odenets as on  # noqa: E402

# name -> (pcoeff, icoeff, dcoeff). diffrax's default is the I controller; the PI pairs are those its
# documentation suggests for moderately hard problems; hairer is DOPRI5's (beta = 0.04: h ~ r_n^-0.17
# r_(n-1)^0.04); h211pi and h312pid are Soderlind's digital filters (2003), a negative pcoeff there.
CONTROLLERS = {
    "I (0, 1, 0)": (0.0, 1.0, 0.0),
    "PI (0.4, 1, 0)": (0.4, 1.0, 0.0),
    "hairer (0.2, 0.65, 0)": (0.2, 0.65, 0.0),
    "PI (0.4, 0.3, 0)": (0.4, 0.3, 0.0),
    "PI (0.3, 0.3, 0)": (0.3, 0.3, 0.0),
    "PI (0.3, 0.4, 0)": (0.3, 0.4, 0.0),
    "PI (0.2, 0.4, 0)": (0.2, 0.4, 0.0),
    "PI (0.1, 0.3, 0)": (0.1, 0.3, 0.0),
    "h211pi (-1/6, 1/3, 0)": (-1 / 6, 1 / 3, 0.0),
    "h312pid (-2/9, 2/9, 1/18)": (-2 / 9, 2 / 9, 1 / 18),
}


def robertson(t, y, args):
    """ROBER (Hairer & Wanner): rates 0.04, 3e7, 1e4; stiff."""
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    fast, slow = 1e4 * b * c, 3e7 * b**2
    return jnp.stack([-0.04 * a + fast, 0.04 * a - fast - slow, slow], axis=-1)


def van_der_pol(t, y, mu):
    """x' = v, v' = mu (1 - x^2) v - x; stiff for large mu."""
    x, v = y[..., 0], y[..., 1]
    return jnp.stack([v, mu * (1 - x**2) * v - x], axis=-1)


def mlp(t, x, p):
    """A Neural ODE's field: tanh MLP of (x, t), random weights of gain 1.5."""
    w1, b1, w2, b2 = p
    h = jnp.tanh(jnp.concatenate([x, jnp.full(x.shape[:-1] + (1,), t)], axis=-1) @ w1 + b1)
    return h @ w2 + b2


def mlp_params(dim=8, hidden=64, gain=1.5, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    w1 = gain * jax.random.normal(k[0], (dim + 1, hidden)) / np.sqrt(dim + 1)
    w2 = gain * jax.random.normal(k[1], (hidden, dim)) / np.sqrt(hidden)
    return w1, jnp.zeros(hidden), w2, 0.1 * jax.random.normal(k[2], (dim,))


@dataclasses.dataclass(frozen=True)
class Problem:
    f: Callable
    x0: np.ndarray
    t1: float
    args: object
    rtol: float
    atol: float
    methods: tuple[str, ...]  # the integrators that solve it in reasonable time
    stiff: bool


ALL = ("dopri5", "tsit5", "kvaerno5")


def problems() -> dict[str, Problem]:
    y0 = np.array([1.0, 0.0, 0.0])
    x_mlp = np.asarray(jax.random.normal(jax.random.key(1), (16, 8)))
    return {
        "robertson [0, 1e5]": Problem(robertson, y0, 1e5, None, 1e-4, 1e-8, ("kvaerno5",), True),
        "robertson [0, 1]": Problem(robertson, y0, 1.0, None, 1e-4, 1e-8, ALL, True),
        "vdp mu=1000 [0, 3000]": Problem(van_der_pol, np.array([2.0, 0.0]), 3000.0, 1000.0, 1e-5, 1e-8,
                                         ("kvaerno5",), True),
        "vdp mu=1 [0, 20]": Problem(van_der_pol, np.array([2.0, 0.0]), 20.0, 1.0, 1e-6, 1e-9, ALL, False),
        "mlp rtol=1e-3 [0, 4]": Problem(mlp, x_mlp, 4.0, mlp_params(), 1e-3, 1e-6, ALL, False),
        "mlp rtol=1e-7 [0, 4]": Problem(mlp, x_mlp, 4.0, mlp_params(), 1e-7, 1e-9, ALL, False),
    }


SAVES = 10  # the states at t1 * k / SAVES, k = 0..SAVES, are compared with the reference's


def reference(p: Problem) -> np.ndarray:
    integ = on.Kvaerno5 if p.stiff else on.Dopri5
    tight = integ(rtol=1e-12, atol=1e-14 if p.stiff else 1e-13, max_steps=200_000)
    return np.asarray(on.odeint(p.f, jnp.asarray(p.x0), 0.0, p.t1, SAVES, integrator=tight, args=p.args,
                                save="all").xs)


def measure(p: Problem, method: str, coeffs: tuple[float, float, float], ref: np.ndarray,
            scale: float = 1.0) -> dict:
    """One solve at tolerances scale * (p.rtol, p.atol): steps, f calls, the error in units of
    p's tolerance (whatever the scale), seconds (compile included)."""
    calls = [0]

    def counted(t, x, args):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return p.f(t, x, args)

    pcoeff, icoeff, dcoeff = coeffs
    integ = on.integrator(method, rtol=scale * p.rtol, atol=scale * p.atol, max_steps=100_000, pcoeff=pcoeff,
                          icoeff=icoeff, dcoeff=dcoeff)
    start = time.perf_counter()
    sol = on.odeint(counted, jnp.asarray(p.x0), 0.0, p.t1, SAVES, integrator=integ, args=p.args, save="all")
    xs = np.asarray(jax.block_until_ready(sol.xs))
    seconds = time.perf_counter() - start
    error = np.max(np.abs(xs - ref) / (p.atol + p.rtol * np.abs(ref)))
    accepted, rejected = int(sol.stats["steps"]), int(sol.stats["rejected"])
    return {"accepted": accepted, "rejected": rejected, "calls": calls[0], "error": float(error),
            "nfe": None if sol.stats["nfe"] is None else int(sol.stats["nfe"]), "seconds": seconds}


def run(quick: bool = False) -> list[dict]:
    chosen = problems()
    controllers = CONTROLLERS
    if quick:
        chosen = {"robertson [0, 1e5]": chosen["robertson [0, 1e5]"]}
        controllers = {k: CONTROLLERS[k] for k in ("I (0, 1, 0)", "PI (0.3, 0.4, 0)")}
    rows = []
    for name, p in chosen.items():
        ref = reference(p)
        for method in p.methods:
            for label, coeffs in controllers.items():
                row = {"problem": name, "method": method, "controller": label, "coeffs": coeffs,
                       **measure(p, method, coeffs, ref)}
                rows.append(row)
                print(_line(row), flush=True)
    return rows


# work against precision: the I controller (every method's default) and the PI controller measured better for
# each method, over tolerances scale * (rtol, atol)
PRECISION = {"problems": ("robertson [0, 1]", "vdp mu=1 [0, 20]", "mlp rtol=1e-3 [0, 4]"),
             "methods": ("dopri5", "kvaerno5"), "scales": (10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4),
             "controllers": {"dopri5": ("I (0, 1, 0)", "PI (0.4, 0.3, 0)"),
                             "kvaerno5": ("I (0, 1, 0)", "PI (0.3, 0.3, 0)")}}


def precision() -> list[dict]:
    """Each (problem, method, controller) over the tolerance scales of PRECISION."""
    chosen, rows = problems(), []
    for name in PRECISION["problems"]:
        p = chosen[name]
        ref = reference(p)
        for method in PRECISION["methods"]:
            for label in PRECISION["controllers"][method]:
                for scale in PRECISION["scales"]:
                    row = {"problem": name, "method": method, "controller": label, "scale": scale,
                           "coeffs": CONTROLLERS[label], **measure(p, method, CONTROLLERS[label], ref, scale)}
                    rows.append(row)
                    print(f"| {name} | {method} | {label} | {scale:g} | {row['accepted']} | {row['rejected']} | "
                          f"{row['calls']} | {row['error']:.3g} |", flush=True)
    return rows


def matched(rows: list[dict]) -> str:
    """f calls of the second controller over the first's at equal error: the second's work-precision
    curve (log calls against log error, piecewise linear) read at each error the first reached
    inside the range of both."""
    out = ["| problem | method | controllers | f calls ratio at equal error (min-max) | errors compared "
           "(tol units) |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["problem"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["problem"] == name):
            first, second = ([r for r in rows if (r["problem"], r["method"], r["controller"]) == (name, method, c)]
                             for c in PRECISION["controllers"][method])
            curve = sorted((np.log(r["error"]), np.log(r["calls"])) for r in second if r["error"] > 0)
            xs, ys = np.array([c[0] for c in curve]), np.array([c[1] for c in curve])
            inside = [r for r in first if xs[0] <= np.log(r["error"]) <= xs[-1]]
            ratios = [np.exp(np.interp(np.log(r["error"]), xs, ys)) / r["calls"] for r in inside]
            label = " vs ".join(PRECISION["controllers"][method][::-1])
            span = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "no overlap"
            errors = ", ".join(f"{r['error']:.2g}" for r in inside)
            out.append(f"| {name} | {method} | {label} | {span} | {errors} |")
    return "\n".join(out)


HEADER = "| problem | method | controller (p, i, d) | accepted | rejected | rejected % | f calls | error/tol |"


def _line(r: dict) -> str:
    share = 100 * r["rejected"] / max(1, r["accepted"] + r["rejected"])
    return (f"| {r['problem']} | {r['method']} | {r['controller']} | {r['accepted']} | {r['rejected']} | "
            f"{share:.0f} | {r['calls']} | {r['error']:.2g} |")


def summary(rows: list[dict]) -> str:
    """Per method, each controller against the I controller (diffrax's default) over the problems:
    f calls and error as geometric means of the per-problem ratios, rejections as a ratio of
    totals, and the worst error in units of the tolerance."""
    out = ["| method | controller (p, i, d) | f calls / I's | rejected / I's | error / I's | worst error/tol |",
           "|---|---|---|---|---|---|"]
    geo = lambda values: float(np.exp(np.mean(np.log(values))))
    for method in ALL:
        mine = [r for r in rows if r["method"] == method]
        base = {r["problem"]: r for r in mine if tuple(r["coeffs"]) == CONTROLLERS["I (0, 1, 0)"]}
        for label in dict.fromkeys(r["controller"] for r in mine):
            these = [r for r in mine if r["controller"] == label]
            calls = geo([r["calls"] / base[r["problem"]]["calls"] for r in these])
            rejected = sum(r["rejected"] for r in these) / max(1, sum(base[r["problem"]]["rejected"]
                                                                      for r in these))
            error = geo([r["error"] / base[r["problem"]]["error"] for r in these])
            worst = max(r["error"] for r in these)
            out.append(f"| {method} | {label} | {calls:.2f} | {rejected:.2f} | {error:.2f} | {worst:.2g} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Robertson, Kvaerno5, two controllers")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--table", help="print the tables of rows saved by --json, measuring nothing")
    parser.add_argument("--precision", action="store_true",
                        help="work against precision: the I controller and each method's PI over tolerances")
    opts = parser.parse_args(argv)
    if opts.precision:
        if opts.table:
            with open(opts.table) as fh:
                rows = json.load(fh)
        else:
            print("| problem | method | controller | tolerance scale | accepted | rejected | f calls | "
                  "error/tol |\n|---|---|---|---|---|---|---|---|", flush=True)
            rows = precision()
        print("\n" + matched(rows))
        if opts.json:
            with open(opts.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return 0
    print(HEADER + "\n|---|---|---|---|---|---|---|---|", flush=True)
    if opts.table:
        with open(opts.table) as fh:
            rows = json.load(fh)
        print("\n".join(_line(r) for r in rows))
    else:
        rows = run(opts.quick)
    print("\n" + summary(rows))
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
