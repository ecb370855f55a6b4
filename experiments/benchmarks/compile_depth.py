"""Compile time against depth: a per-step ResNet through odeint (one lax.scan) vs an unrolled loop.

    python experiments/benchmarks/compile_depth.py [--quick] [--max-unrolled N]

Each model is x_{k+1} = x_k + F_k(x_k) with one MLP field per layer (width 64, hidden 64,
batch 32, float32); we time `jit(value_and_grad(loss)).lower(...).compile()` (tracing and XLA
compilation, no execution). odenets scans over the stacked parameters, so its program has
one layer whatever the depth; the unrolled loop (a Python for over layers, how a Flax
ResNet is usually written) grows with depth.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import odenets as on

WIDTH, HIDDEN, BATCH = 64, 64, 32


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 4 and 16 only (smoke test)")
    parser.add_argument("--max-unrolled", type=int, default=256, help="deepest unrolled model (256)")
    opts = parser.parse_args(argv)
    depths = [4, 16] if opts.quick else [8, 32, 128, 256, 512, 1024]
    print(f"== compile time vs depth: per-step MLP ResNet, width {WIDTH}, hidden {HIDDEN}, batch {BATCH}; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"{'depth':>6}  {'odenets (s)':>11}  {'unrolled (s)':>12}  {'unrolled / odenets':>18}")
    first = None
    for depth in depths:
        a = compile_seconds(ours, depth)
        first = first or a
        b = compile_seconds(unrolled, depth) if depth <= opts.max_unrolled else None
        ratio = "-" if b is None else f"{b / a:.1f}x"
        print(f"{depth:>6}  {a:>11.2f}  {'-' if b is None else f'{b:.2f}':>12}  {ratio:>18}", flush=True)
    growth = a / first
    verdict = "PASS" if growth <= 2.0 else "FAIL"
    print(f"odenets compile time, depth {depths[-1]} / depth {depths[0]} = {growth:.2f}x (flat: <= 2.0) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
