"""Case 6 op by op: where a Chen ODE-Net / ResNet train step spends its time in XLA:CPU and in PyTorch.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 \\
        python -m experiments.benchmarks.profile_case6 [--inputs cifar mnist1d] [--torch-python PY]

Single-threaded CPU time (run it pinned to one core; torch.set_num_threads(1) in the peer):
- ops: each operation of the step alone at the preset's shapes, jit-compiled (JAX) or eager (torch), called
  `--calls` times, the minimum per call: the convolutions' forward, input gradient and kernel gradient (stem
  conv3, the two strided conv4/2, the fields' conv3), GroupNorm + ReLU forward and backward (Flax's
  nnx.GroupNorm and odenets'), and the optimiser (clip by global norm + AdamW) over the model's parameters;
  `per step` multiplies by the number of times the step runs each.
- step: odenets' real train step (throughput.train_steps' setup) under jax.profiler, XLA's thunks summed by
  kind (from the compiled HLO: which convolution, transposes, elementwise/reductions of the forward and
  backward passes, the rest), each thunk's minimum over `--steps` steps; beside it the whole step's
  minimum time in both frameworks.
The torch side runs as `python -m experiments.benchmarks.profile_case6 --torch-worker JSON` under
`--torch-python` (torch, torchdiffeq) and imports no JAX.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INPUTS = {"cifar": dict(batch=32, size=32, channels=3, ndim=2),
          "mnist1d": dict(batch=128, size=40, channels=1, ndim=1)}
WIDTH, DEPTH, GROUPS = 64, 6, 32


def op_list(net: str, inp: str) -> list[dict]:
    """The operations of one train step: name, kind (conv / gn / opt), shapes, counts per step."""
    c = INPUTS[inp]
    b, nd, s0 = c["batch"], c["ndim"], c["size"]
    s1 = s0 - 2
    s2 = (s1 + 2 - 4) // 2 + 1
    s3 = (s2 + 2 - 4) // 2 + 1
    cin = WIDTH + (net == "odenet")
    conv = lambda name, size, ci, k, stride, pad, grads, count: dict(
        kind="conv", name=name, x=[b] + [size] * nd + [ci], k=[k] * nd + [ci, WIDTH], stride=stride, pad=pad,
        grads=grads, count=count)
    return [conv("stem conv3", s0, c["channels"], 3, 1, 0, ("kernel",), 1),
            conv("stem conv4/2 (1)", s1, WIDTH, 4, 2, 1, ("input", "kernel"), 1),
            conv("stem conv4/2 (2)", s2, WIDTH, 4, 2, 1, ("input", "kernel"), 1),
            conv(f"field conv3 ({cin} in)", s3, cin, 3, 1, 1, ("input", "kernel"), 2 * DEPTH),
            dict(kind="gn", name=f"GN+ReLU {s1}", x=[b] + [s1] * nd + [WIDTH], count=1),
            dict(kind="gn", name=f"GN+ReLU {s2}", x=[b] + [s2] * nd + [WIDTH], count=1),
            dict(kind="gn", name=f"GN+ReLU {s3}", x=[b] + [s3] * nd + [WIDTH], count=3 * DEPTH + 1),
            dict(kind="opt", name="clip + AdamW", count=1)]


def best(call, calls: int) -> float:
    """Seconds: the minimum of `calls` timed calls after 2 warm-ups (`call` blocks on its result)."""
    call(), call()
    out = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        call()
        out = min(out, time.perf_counter() - start)
    return out


# -- JAX ------------------------------------------------------------------------------------------
def jax_ops(net: str, inp: str, calls: int, param_shapes: list[list[int]]) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from odenets.fields.conv import channels_last, conv_general_dilated
    from odenets.fields.norm import GroupNorm

    keys = map(lambda i: jax.random.fold_in(jax.random.PRNGKey(0), i), range(10**6))
    normal = lambda shape: jax.random.normal(next(keys), shape, jnp.float32)
    timed = lambda f, *a: best(lambda: jax.block_until_ready(f(*a)), calls)
    out = {}
    for op in op_list(net, inp):
        if op["kind"] == "conv":
            nd = len(op["x"]) - 2
            x, k = normal(op["x"]), normal(op["k"]) * 0.1
            fwd = lambda x, k, op=op, nd=nd: conv_general_dilated(
                x, k, (op["stride"],) * nd, ((op["pad"],) * 2,) * nd, dimension_numbers=channels_last(nd))
            g = normal(jax.eval_shape(fwd, x, k).shape)
            out[f"{op['name']}: forward"] = timed(jax.jit(fwd), x, k)
            if "input" in op["grads"]:
                dx = jax.jit(lambda x, k, g, fwd=fwd: jax.vjp(lambda x: fwd(x, k), x)[1](g)[0])
                out[f"{op['name']}: input-grad"] = timed(dx, x, k, g)
            dk = jax.jit(lambda x, k, g, fwd=fwd: jax.vjp(lambda k: fwd(x, k), k)[1](g)[0])
            out[f"{op['name']}: kernel-grad"] = timed(dk, x, k, g)
        elif op["kind"] == "gn":
            x, g = normal(op["x"]), normal(op["x"])
            for label, cls in (("Flax nnx.GroupNorm", nnx.GroupNorm), ("odenets GroupNorm", GroupNorm)):
                gn = cls(WIDTH, num_groups=GROUPS, epsilon=1e-6, rngs=nnx.Rngs(0))
                graph, params = nnx.split(gn)
                f = lambda p, x, graph=graph: jax.nn.relu(nnx.merge(graph, p)(x))
                out[f"{op['name']}, {label}: forward"] = timed(jax.jit(f), params, x)
                out[f"{op['name']}, {label}: backward"] = timed(
                    jax.jit(lambda p, x, g, f=f: jax.vjp(f, p, x)[1](g)), params, x, g)
        else:
            tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=1e-4))
            params = [normal(s) for s in param_shapes]
            grads = [normal(s) for s in param_shapes]
            state = tx.init(params)

            @jax.jit
            def update(params, grads, state):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            out[f"{op['name']}: update"] = timed(update, params, grads, state)
    return out


def jax_step(net: str, inp: str, steps: int) -> dict:
    """odenets' train step (unrolled): its minimum time and XLA's thunks summed by kind."""
    import jax
    import numpy as np

    from . import throughput as tp

    cfg = {**tp.FULL, "steps": {inp: steps}}
    with tempfile.TemporaryDirectory() as tmp:
        rng, batch = np.random.default_rng(0), INPUTS[inp]["batch"]
        x = rng.standard_normal((batch, *tp.shape(inp, cfg)), np.float32)
        y = rng.integers(0, 10, batch).astype(np.int32)
        np.savez(Path(tmp) / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
        s, timing = tp.train_steps(net, inp, Path(tmp) / "d.npz", cfg, True)
        step = tp.loop.make_steps(s)[0]
        xs, ys = jax.device_put(s.data.x_train), jax.device_put(s.data.y_train)
        kind = thunk_kinds(step.lower(s.state, xs, ys).compile().as_text())
        state = s.state
        for _ in range(2):
            state, _ = jax.block_until_ready(step(state, xs, ys))
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                state, _ = jax.block_until_ready(step(state, xs, ys))
        trace = json.load(gzip.open(next(Path(tmp).rglob("*.trace.json.gz"))))
    runs, execute = collections.defaultdict(list), []
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and e["name"] == "ThunkExecutor::Execute":
            execute.append(e["dur"])
        elif e.get("ph") == "X" and kind(e["name"]):
            runs[e["name"]].append(e["dur"])
    kinds = collections.Counter()
    for name, durs in runs.items():  # a thunk's minimum over the steps (a name may run more than once a step)
        per = max(1, round(len(durs) / steps))
        kinds[kind(name)] += 1e-6 * min(sum(durs[i:i + per]) for i in range(0, len(durs) - per + 1, per))
    return {"step_s": timing["seconds"], "kinds": dict(kinds), "params": param_shapes_of(s)}


def param_shapes_of(setup) -> list[list[int]]:
    import jax

    return [list(v.shape) for v in jax.tree.leaves(setup.state[0])]


def thunk_kinds(hlo: str):
    """thunk name -> what it computes, from the compiled HLO (None: not a top-level operation)."""
    comps, cur = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
        if head and line.rstrip().endswith("{"):
            comps[head.group(1)] = cur = []
        elif cur is not None:
            cur.append(line)
    instr = {}
    for lines in comps.values():
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
            if m:
                instr[m.group(1)] = line

    def kind(name: str) -> str | None:
        line = instr.get(name)
        if line is None:
            return None
        called = re.search(r"calls=%([\w.\-]+)", line)
        body = "\n".join(comps.get(called.group(1), [])) if called else line
        root = next((x for x in body.splitlines() if "ROOT" in x), line)
        op_name = (re.search(r'op_name="([^"]*)"', root) or re.search(r'op_name="([^"]*)"', body)
                   or re.search(r'op_name="([^"]*)"', line))
        backward = bool(op_name) and "transpose(" in op_name.group(1)
        conv = re.search(r"= f32\[([\d,]*)\].* convolution\(.*window=\{([^}]*)\}", body)
        if conv:
            window = conv.group(2)
            if "lhs_dilate" in window:
                return "conv: stem conv4/2 input-grad"
            if "rhs_dilate" in window:
                return "conv: stem conv4/2 kernel-grad"
            if "stride" in window:
                return "conv: stem conv4/2 forward"
            if "pad" not in window:
                return "conv: stem conv3 " + ("kernel-grad" if backward else "forward")
            dims = [int(d) for d in conv.group(1).split(",")]
            if not backward:
                return "conv: fields forward"
            return "conv: fields kernel-grad" if dims[0] in (WIDTH, WIDTH + 1) else "conv: fields input-grad"
        if re.match(r"(transpose|copy)", name):
            return "transposes and copies"
        if op_name and ("jvp(" in op_name.group(1) or backward):
            return "elementwise + reductions (GN, ReLU, ...): " + ("backward" if backward else "forward")
        return "optimiser, clip, loss, other"

    return kind


# -- torch (this file under the torch interpreter) -------------------------------------------------
def torch_worker(opts: dict) -> dict:
    import torch
    import torchdiffeq

    sys.path.insert(0, str(ROOT))
    from experiments.benchmarks.torch_worker import chen_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, inp, calls = opts["net"], opts["inp"], opts["calls"]
    c = INPUTS[inp]
    nd = c["ndim"]
    chw = lambda shape: [shape[0], shape[-1], *shape[1:-1]]
    out = {}
    for op in op_list(net, inp):
        if op["kind"] == "conv":
            conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[nd]
            x = torch.randn(chw(op["x"]), requires_grad=True)
            k = (0.1 * torch.randn([op["k"][-1], op["k"][-2], *op["k"][:-2]])).requires_grad_()
            fwd = lambda x=x, k=k, op=op: conv(x, k, None, op["stride"], op["pad"])
            with torch.no_grad():
                out[f"{op['name']}: forward"] = best(fwd, calls)
            y = fwd()
            g = torch.randn_like(y)
            for grad, mask in (("input", [True, False, False]), ("kernel", [False, True, False])):
                if grad in op["grads"]:
                    back = lambda mask=mask, x=x, k=k, g=g, op=op: torch.ops.aten.convolution_backward(
                        g, x, k, None, [op["stride"]] * nd, [op["pad"]] * nd, [1] * nd, False, [0] * nd, 1, mask)
                    out[f"{op['name']}: {grad}-grad"] = best(back, calls)
        elif op["kind"] == "gn":
            gn = torch.nn.GroupNorm(GROUPS, WIDTH, eps=1e-6)
            x = torch.randn(chw(op["x"]), requires_grad=True)
            with torch.no_grad():
                out[f"{op['name']}: forward"] = best(lambda gn=gn, x=x: torch.relu(gn(x)), calls)
            g = torch.randn(chw(op["x"]))
            y = torch.relu(gn(x))
            inputs = [x, *gn.parameters()]
            out[f"{op['name']}: backward"] = best(
                lambda y=y, g=g, inputs=inputs: torch.autograd.grad(y, inputs, g, retain_graph=True), calls)
        else:
            params = [torch.randn(s, requires_grad=True) for s in opts["params"]]
            for p in params:
                p.grad = torch.randn_like(p)
            adamw = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)

            def update(params=params, adamw=adamw):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                adamw.step()

            out[f"{op['name']}: update"] = best(update, calls)
    spec = dict(net=net, ndim=nd, width=WIDTH, depth=DEPTH, groups=GROUPS, t1=1.0, in_channels=c["channels"],
                num_classes=10)
    model = chen_model(torch, torchdiffeq, spec)
    x = torch.randn(c["batch"], c["channels"], *(c["size"],) * nd)
    y = torch.randint(0, 10, (c["batch"],))
    adamw = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)

    def step():
        adamw.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        adamw.step()

    return {"ops": out, "step_s": best(step, opts["steps"])}


# -- the table ------------------------------------------------------------------------------------
def report(net: str, inp: str, ours: dict, theirs: dict, step: dict) -> str:
    counts = {op["name"]: op["count"] for op in op_list(net, inp)}
    lines = [f"### {net}, {inp}: one train step, single-threaded", "",
             "| operation | per step | XLA:CPU ms | torch ms | XLA / torch | XLA ms / step | torch ms / step |",
             "|---|---|---|---|---|---|---|"]
    totals, ops = collections.Counter(), theirs["ops"]
    for name, seconds in ours.items():
        base, _, what = name.rpartition(": ")
        op = base.split(", ")[0]
        peer = ops[f"{op}: {what}"]
        n = counts[op]
        lines.append(f"| {name} | {n} | {1e3 * seconds:.3f} | {1e3 * peer:.3f} | {seconds / peer:.2f}x | "
                     f"{1e3 * n * seconds:.1f} | {1e3 * n * peer:.1f} |")
        if "Flax" not in name:
            totals["XLA"] += n * seconds
            totals["torch"] += n * peer
    lines += ["", f"Sum of the ops (odenets' GroupNorm): XLA:CPU {1e3 * totals['XLA']:.1f} ms, torch "
              f"{1e3 * totals['torch']:.1f} ms; whole step: odenets {1e3 * step['step_s']:.1f} ms, torch "
              f"{1e3 * theirs['step_s']:.1f} ms.", "", "odenets' step in XLA's profiler (thunk minima, ms):", ""]
    lines += [f"- {k}: {1e3 * v:.1f}" for k, v in sorted(step["kinds"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["odenet", "resnet"], choices=["odenet", "resnet"])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--calls", type=int, default=100, help="timed calls per operation")
    parser.add_argument("--steps", type=int, default=8, help="timed train steps (whole-step minimum)")
    parser.add_argument("--torch-python", default=os.environ.get("ODENETS_TORCH_PYTHON", sys.executable))
    parser.add_argument("--out", help="append each model's raw numbers to this JSON-lines file")
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.torch_worker:
        print(json.dumps(torch_worker(json.loads(opts.torch_worker))))
        return
    if "xla_cpu_multi_thread_eigen=false" not in os.environ.get("XLA_FLAGS", ""):
        print("note: XLA_FLAGS lacks --xla_cpu_multi_thread_eigen=false; pin the process to one core", flush=True)
    for inp in opts.inputs:
        for net in opts.nets:
            step = jax_step(net, inp, opts.steps)
            ours = jax_ops(net, inp, opts.calls, step["params"])
            worker = {"net": net, "inp": inp, "calls": opts.calls, "steps": opts.steps, "params": step["params"]}
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            done = subprocess.run([opts.torch_python, "-m", __spec__.name, "--torch-worker", json.dumps(worker)],
                                  capture_output=True, text=True, cwd=ROOT, env=env, check=False)
            if done.returncode:
                raise RuntimeError(f"the torch side failed:\n{done.stderr[-3000:]}")
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            if opts.out:
                with open(opts.out, "a") as f:
                    f.write(json.dumps(dict(net=net, inp=inp, xla=ours, torch=theirs, step=step)) + "\n")
            print(report(net, inp, ours, theirs, step), "\n", flush=True)


if __name__ == "__main__":
    main()
