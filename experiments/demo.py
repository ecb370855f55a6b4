"""The odenets demo: solve and differentiate a Neural ODE and a ResNet with every integrator.

Table 1, one row per (model, integrator):
  * "node":   a Neural ODE, one MLP field F(t, x; theta) shared over t in [0, 1];
  * "resnet": a discrete ResNet, one MLP field per layer (`PerStep`), x_{k+1} = x_k + h F_k(x_k)
              with 8 layers over t in [0, 8] (h = 1 for Euler: the textbook residual network).
  Columns: forward / backward function evaluations, the error of x(t1) against a tight
  Dopri5 reference (node only), and a gradient check against central finite differences.

Table 2, one row per gradient strategy (RK4, 64 steps; ReversibleHeun for Reversible): the
gradient's distance from Backprop and the compiled temporary memory of the backward pass.

Runs in float64 so the gradient checks are meaningful to many digits.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import odenets as on  # noqa: E402

WIDTH, HIDDEN, BATCH, LAYERS = 4, 32, 16, 8


def build_models(seed: int):
    node = on.fields.MLPField(WIDTH, HIDDEN, time=True, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
    resnet = on.fields.stack(
        lambda r: on.fields.MLPField(WIDTH, HIDDEN, time=False, out_scale=0.1, param_dtype=jnp.float64, rngs=r),
        LAYERS,
        nnx.Rngs(seed + 1),
    )
    x0 = jax.random.normal(jax.random.key(seed), (BATCH, WIDTH), jnp.float64)
    return node, resnet, x0


def loss_fn(model, per_step, integrator, gradient, steps, t1):
    """loss(state, x0) = mean |x(t1)|^2 / 2 for the model's parameters `state`."""
    graphdef, _ = nnx.split(model)

    def loss(state, x0):
        field = nnx.merge(graphdef, state)
        sol = on.odeint(on.PerStep(field) if per_step else field, x0, 0.0, t1, steps,
                        integrator=integrator, gradient=gradient)
        return 0.5 * jnp.mean(jnp.sum(sol.x**2, axis=-1)), sol

    return loss


def fd_check(loss, state, x0, grads, eps=1e-6):
    """Relative error of <grad, v> against a central difference along a random direction v."""
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(42), len(leaves))
    v = tree.unflatten([jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
    shift = lambda s: jax.tree.map(lambda p, d: p + s * d, state, v)
    fd = (loss(shift(eps), x0)[0] - loss(shift(-eps), x0)[0]) / (2 * eps)
    ours = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
    return float(abs(ours - fd) / max(abs(fd), 1e-30))


def timed(fn, *a):
    out = jax.block_until_ready(fn(*a))  # compile + warm-up
    start = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return out, 1e3 * (time.perf_counter() - start)


def fmt(v):
    return "-" if v is None else (f"{v:.1e}" if isinstance(v, float) else str(int(v)))


def table(rows, header):
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def integrators_table(node, resnet, x0, steps):
    ref_loss = loss_fn(node, False, on.Dopri5(rtol=1e-12, atol=1e-12), "backprop", 1, 1.0)
    reference = jax.jit(ref_loss)(nnx.state(node), x0)[1].x
    rows = []
    for name in on.integrator.names():
        integ = on.integrator(name)
        models = [("node", node, False, 1.0, steps)]
        if not integ.adaptive:  # per-layer parameters live on a fixed grid
            models.append(("resnet", resnet, True, float(LAYERS), LAYERS))
        for label, model, per_step, t1, n in models:
            loss = jax.jit(loss_fn(model, per_step, integ, "backprop", n, t1))
            vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
            state = nnx.state(model)
            ((value, sol), grads), ms = timed(vg, state, x0)
            err = float(jnp.max(jnp.abs(sol.x - reference))) if label == "node" else None
            rows.append([label, name, str(integ.order), fmt(sol.stats["steps"]), fmt(sol.stats["nfe"]),
                         fmt(err), f"{float(value):.6f}", fmt(fd_check(loss, state, x0, grads)), f"{ms:.1f}"])
    print(f"\nTable 1: every integrator, Backprop gradients (node: {steps} steps on [0, 1] or adaptive "
          f"with default rtol=1e-3, atol=1e-6; resnet: {LAYERS} layers on [0, {LAYERS}], h = 1)")
    table(rows, ["model", "integrator", "order", "steps", "nfe", "err x(t1)", "loss", "grad vs FD", "ms"])


def gradients_table(node, x0, steps):
    state = nnx.state(node)
    rows = []
    for name in on.gradient.names():
        integ = on.ReversibleHeun() if name == "reversible" else on.RK4()
        loss = loss_fn(node, False, integ, name, steps, 1.0)
        ref = jax.jit(jax.grad(lambda s, x: loss_fn(node, False, integ, "backprop", steps, 1.0)(s, x)[0]))
        vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
        ((_, sol), grads), ms = timed(vg, state, x0)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads),
                                                                     jax.tree.leaves(ref(state, x0))))
        memory = vg.lower(state, x0).compile().memory_analysis()
        temp = getattr(memory, "temp_size_in_bytes", None)
        rows.append([name, integ.name, fmt(sol.stats["nfe"]), fmt(sol.stats["nfe_backward"]), fmt(diff),
                     "-" if temp is None else f"{temp / 1024:.0f}", f"{ms:.1f}"])
    print(f"\nTable 2: every gradient strategy on the Neural ODE ({steps} steps)")
    table(rows, ["gradient", "integrator", "nfe fwd", "nfe bwd", "max |g - g_backprop|", "temp KiB", "ms"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="fixed steps of the Neural ODE (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    print(f"odenets demo on {jax.devices()[0].platform} (jax {jax.__version__}), float64, "
          f"state width {WIDTH}, batch {BATCH}, hidden {HIDDEN}")
    node, resnet, x0 = build_models(args.seed)
    integrators_table(node, resnet, x0, args.steps)
    gradients_table(node, x0, 64)
    print("\nnfe: vector-field evaluations (forward / backward re-solve); 'grad vs FD': relative error "
          "of a directional derivative against central differences; Adjoint differs from Backprop by "
          "the discretisation error, Reversible by rounding only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
