"""Case 4: compile time of jit(value_and_grad) against depth for a per-step ResNet x_{k+1} = x_k + F_k(x_k):
odeint over on.PerStep parameters (one lax.scan whatever the depth) against an unrolled Python loop."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import odenets as on

from . import common
from .problem import field, make_problem

FULL = dict(width=64, hidden=64, batch=32, depths=(8, 32, 128, 256, 512, 1024), max_unrolled=256)
QUICK = dict(width=64, hidden=64, batch=32, depths=(4, 16), max_unrolled=256)
FLAT = 2.0  # goal: odenets' compile time at the deepest / at the shallowest depth <= this


def ours(p, x):
    depth = p["W1"].shape[0]
    return jnp.sum(on.odeint(field, x, 0, depth, depth, integrator=on.Euler(), args=on.PerStep(p)).x ** 2)


def unrolled(p, x):
    for k in range(p["W1"].shape[0]):
        x = x + field(float(k), x, jax.tree.map(lambda a, k=k: a[k], p))
    return jnp.sum(x**2)


def measure(cfg: dict, torch_python=None) -> dict:
    def problem(depth):
        return make_problem(cfg["batch"], cfg["width"], cfg["hidden"], depth=depth)

    def seconds(loss, depth):
        start = time.perf_counter()
        jax.jit(jax.value_and_grad(loss)).lower(*problem(depth)).compile()
        return time.perf_counter() - start

    rows = [[d, seconds(ours, d), seconds(unrolled, d) if d <= cfg["max_unrolled"] else None]
            for d in cfg["depths"]]
    p, x = problem(cfg["depths"][0])
    agreement = common.rel_discrepancy(jax.value_and_grad(ours)(p, x), jax.value_and_grad(unrolled)(p, x))
    return {"config": cfg, "rows": rows, "agreement": agreement}


def goals(data: dict) -> list[common.Goal]:
    rows = data["rows"]
    both = max((r for r in rows if r[2] is not None), key=lambda r: r[0])
    return [common.Goal(f"odenets compile time flat: depth {rows[-1][0]} / depth {rows[0][0]}",
                        rows[-1][1] / rows[0][1], FLAT, False),
            common.Goal(f"unrolled / odenets compile time at depth {both[0]}", both[2] / both[1], 1.0, True,
                        info=True)]


def fields(data: dict) -> dict:
    rows = [[d, f"{a:.2f}", common.fmt(b), common.fmt(b and b / a, ".1f", "x")] for d, a, b in data["rows"]]
    return {**data["config"], "table": common.rows(rows), "agreement": f"{data['agreement']:.1e}",
            "shallowest": data["rows"][0][0]}


def figures(data: dict, fig_dir) -> None:
    rows = data["rows"]
    common.figure(fig_dir, "case4_compile", "compile time vs depth",
                  xlabel="depth (layers, one parameter set each)",
                  ylabel="compile time of jit(value_and_grad), s (log)",
                  lines={"odenets (one lax.scan)": ([d for d, _, _ in rows], [a for _, a, _ in rows]),
                         "unrolled Python loop": tuple(zip(*[(d, b) for d, _, b in rows if b is not None]))})
