"""Case 4: compile time against depth, a per-step ResNet through odeint (one lax.scan) vs an unrolled loop.

    python experiments/benchmarks/compile_depth.py [--quick] [--max-unrolled N] [--md M] [--json J] [--fig-dir D]

Each model is x_{k+1} = x_k + F_k(x_k) with one MLP field per layer (width 64, hidden 64,
batch 32, float32); we time `jit(value_and_grad(loss)).lower(...).compile()` (tracing and XLA
compilation, no execution). odenets scans over the stacked parameters, so its program has
one layer whatever the depth; the unrolled loop (a Python for over layers, how a Flax
ResNet is usually written) grows with depth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import odenets as on  # noqa: E402

WIDTH, HIDDEN, BATCH = 64, 64, 32
FLAT = 2.0  # goal: odenets' compile time at the deepest / at the shallowest depth <= this


def field(t, x, p):
    w1, b1, w2, b2 = p
    return jnp.tanh(x @ w1 + b1) @ w2 + b2


def params(depth):
    k1, k2 = jax.random.split(jax.random.key(0))
    scale = 1.0 / jnp.sqrt(WIDTH)
    return (scale * jax.random.normal(k1, (depth, WIDTH, HIDDEN)), jnp.zeros((depth, HIDDEN)),
            0.1 * scale * jax.random.normal(k2, (depth, HIDDEN, WIDTH)), jnp.zeros((depth, WIDTH)))


def ours(p, x):
    depth = p[0].shape[0]
    return jnp.sum(on.odeint(field, x, 0, depth, depth, integrator="euler", args=on.PerStep(p)).x ** 2)


def unrolled(p, x):
    for k in range(p[0].shape[0]):
        x = x + field(float(k), x, tuple(a[k] for a in p))
    return jnp.sum(x**2)


def compile_seconds(loss, depth) -> float:
    p, x = params(depth), jnp.ones((BATCH, WIDTH))
    fn = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    fn.lower(p, x).compile()
    return time.perf_counter() - start


def agreement(depth) -> float:
    """Relative difference of odenets' and the unrolled loop's loss and gradient at `depth`."""
    p, x = params(depth), jnp.ones((BATCH, WIDTH))
    return common.rel_discrepancy(jax.value_and_grad(ours)(p, x), jax.value_and_grad(unrolled)(p, x))


def plot(rows, fig_dir):
    def draw(fig):
        ax = fig.add_subplot()
        ax.plot([d for d, _, _ in rows], [a for _, a, _ in rows], "o-", label="odenets (one lax.scan)")
        un = [(d, b) for d, _, b in rows if b is not None]
        ax.plot([d for d, _ in un], [b for _, b in un], "s--", label="unrolled Python loop")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth (layers, one parameter set each)")
        ax.set_ylabel("compile time of jit(value_and_grad), s (log)")
        ax.set_title("compile time vs depth")
        ax.legend()

    return common.figure(fig_dir, "case4_compile", draw)


def main(argv=None) -> int:
    parser = common.case_parser(__doc__)
    parser.add_argument("--max-unrolled", type=int, default=256, help="deepest unrolled model (256)")
    opts = parser.parse_args(argv)
    depths = [4, 16] if opts.quick else [8, 32, 128, 256, 512, 1024]
    print(f"== compile time vs depth: per-step MLP ResNet, width {WIDTH}, hidden {HIDDEN}, batch {BATCH}; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"{'depth':>6}  {'odenets (s)':>11}  {'unrolled (s)':>12}  {'unrolled / odenets':>18}")
    rows = []
    for depth in depths:
        a = compile_seconds(ours, depth)
        b = compile_seconds(unrolled, depth) if depth <= opts.max_unrolled else None
        rows.append((depth, a, b))
        ratio = "-" if b is None else f"{b / a:.1f}x"
        print(f"{depth:>6}  {a:>11.2f}  {'-' if b is None else f'{b:.2f}':>12}  {ratio:>18}", flush=True)
    diff = agreement(depths[0])
    ok = diff <= 1e-5
    print(f"odenets vs unrolled loss and gradient at depth {depths[0]}: rel. diff {diff:.1e} "
          f"{'PASS' if ok else 'FAIL'}")
    growth = rows[-1][1] / rows[0][1]
    deepest_both = max((r for r in rows if r[2] is not None), key=lambda r: r[0])
    goals = [
        common.Goal("4", f"odenets compile time flat: depth {depths[-1]} / depth {depths[0]}", growth, FLAT,
                    False),
        common.Goal("4", f"unrolled / odenets compile time at depth {deepest_both[0]}",
                    deepest_both[2] / deepest_both[1], 1.0, True, info=True),
    ]
    lines = [
        "## Case 4: compile time vs depth",
        "",
        f"A per-step ResNet x_(k+1) = x_k + F_k(x_k), one MLP field (width {WIDTH}, hidden {HIDDEN}, tanh) "
        f"per layer, batch {BATCH}, float32; time of `jit(value_and_grad(loss)).lower(...).compile()` "
        "(tracing + XLA compilation, no execution). odenets: `odeint(..., integrator='euler', "
        "args=PerStep(stacked params))`, one `lax.scan` whatever the depth. Unrolled: a Python for loop over "
        f"layers (how a Flax ResNet is usually written), up to depth {opts.max_unrolled}. Loss and gradient "
        f"of the two agree to {diff:.1e} (relative) at depth {depths[0]}.",
        "",
    ]
    lines += common.md_table(["depth", "odenets (s)", "unrolled (s)", "unrolled / odenets"],
                             [[d, f"{a:.2f}", "-" if b is None else f"{b:.2f}",
                               "-" if b is None else f"{b / a:.1f}x"] for d, a, b in rows])
    lines += [""] + [x for x in [plot(rows, opts.fig_dir)] if x] + [""] + common.goals_table(goals)
    common.write_outputs(opts, lines, goals, {"rows": rows, "agreement": diff})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
