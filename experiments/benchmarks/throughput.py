"""Case 6: training throughput of Chen et al.'s ODE-Net and ResNet, odenets against PyTorch + torchdiffeq.

The models are odenets.models.preset("chen_<net>_<1d|2d>") trained as in the MNIST-1D experiments
(Euler, 6 steps, backprop, unroll, AdamW lr 3e-3, weight decay 1e-4, clip_norm 1, here at a
constant learning rate), through odenets.train.loop.setup and its jitted train step (make_steps),
on synthetic float32 data read by the `npz` dataset. The torch peer (torch_worker.py) builds the
same layers from the same initial parameters and runs the same steps. To explain differences:
each convolution timed alone in both frameworks, and the fields' convolution chain as a lax.scan
(how odeint runs steps) against the same chain unrolled. Forced host devices: a process per
device count runs the MNIST-1D-sized steps with the batch sharded over the devices (a
correctness harness: the devices share the same cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from odenets import models
from odenets.train import loop

from . import common

NETS = {"odenet": "ODE-Net", "resnet": "ResNet"}
INPUTS = {"mnist1d": ("1d", (40, 1), "MNIST-1D-sized"), "cifar": ("2d", (32, 32, 3), "CIFAR-sized")}
FULL = dict(pairs=[(n, i) for i in INPUTS for n in NETS], batch={"mnist1d": 128, "cifar": 32},
            steps={"mnist1d": 10, "cifar": 6}, devices=(1, 2, 4), device_nets=tuple(NETS), repeats=5, model={},
            shapes={})
QUICK = dict(pairs=[("odenet", "mnist1d"), ("resnet", "cifar")], batch={"mnist1d": 8, "cifar": 4},
             steps={"mnist1d": 4, "cifar": 4}, devices=(1, 2), device_nets=("odenet",), repeats=2,
             model={"width": 8, "depth": 2}, shapes={"mnist1d": (12, 1), "cifar": (12, 12, 3)})
UNTIMED, CHECKED, GROUPS, CLASSES = 3, 3, 32, 10  # compile + 2 warm-ups; steps whose losses must agree
OPTIM = {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "momentum": 0.0, "schedule": "constant",
         "warmup_steps": 0, "clip_norm": 1.0, "epochs": 1}
TOL_TORCH, TOL_DEVICES, TOL_LOOP = 1e-4, 1e-5, 1e-4


def shape(inp: str, cfg: dict) -> tuple[int, ...]:
    return tuple(cfg["shapes"].get(inp, INPUTS[inp][1]))


def write_batch(path: Path, inp: str, cfg: dict) -> None:
    """One batch of standard normal inputs and uniform labels, as the npz dataset's file."""
    rng, batch = np.random.default_rng(0), cfg["batch"][inp]
    x = rng.standard_normal((batch, *shape(inp, cfg))).astype(np.float32)
    y = rng.integers(0, CLASSES, batch).astype(np.int32)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)


def model_options(net: str, inp: str, cfg: dict) -> dict:
    """The preset's options as the experiments train it (unroll, 32 groups) and the run's overrides."""
    drop = ("integrator", "gradient", "input_shape", "num_classes")
    opts = {k: v for k, v in models.preset(f"chen_{net}_{INPUTS[inp][0]}").items() if k not in drop}
    opts = {**opts, "unroll": True, **({"t1": 1.0} if net == "odenet" else {}), **cfg["model"]}
    return {**opts, "groups": min(GROUPS, opts["width"])}


def train_steps(net: str, inp: str, data: Path, cfg: dict) -> tuple[loop.Setup, dict]:
    """`steps` calls of odenets' train step on the one batch, the batch sharded over the devices."""
    s = loop.setup({"seed": 0, "data": {"name": "npz", "path": str(data), "num_classes": CLASSES},
                    "model": model_options(net, inp, cfg), "integrator": {"name": "euler"},
                    "gradient": {"name": "backprop"}, "optim": {**OPTIM, "batch_size": cfg["batch"][inp]},
                    "train": {"progress": False}})
    train_step, _ = loop.make_steps(s)
    x, y = (jax.device_put(a, NamedSharding(s.mesh, PartitionSpec("data"))) for a in (s.data.x_train, s.data.y_train))
    state, times, losses, norms = s.state, [], [], []
    for _ in range(cfg["steps"][inp]):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(train_step(state, x, y))
        times.append(time.perf_counter() - start)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
    return s, dict(seconds=min(times[UNTIMED:]), first_call_s=times[0], losses=losses, grad_norms=norms,
                   devices=s.mesh.devices.size, params=s.n_params)


# -- the convolutions, alone and chained ------------------------------------------------------------
def conv_specs(spec: dict, batch: int, size: int) -> list[dict]:
    """Every convolution of the model at spatial size `size`, with its calls per train step."""
    down = lambda n: (n + 2 - 4) // 2 + 1  # conv4, stride 2, pad 1
    w, base = spec["width"], dict(ndim=spec["ndim"], batch=batch)
    return [dict(base, name="stem conv3 VALID", size=size, cin=spec["in_channels"], cout=w, k=3, stride=1, pad=0,
                 input_grad=False, count=1),
            dict(base, name="stem conv4/2", size=size - 2, cin=w, cout=w, k=4, stride=2, pad=1, input_grad=True,
                 count=1),
            dict(base, name="stem conv4/2", size=down(size - 2), cin=w, cout=w, k=4, stride=2, pad=1, input_grad=True,
                 count=1),
            dict(base, name="field conv3", size=down(down(size - 2)), cin=w + (spec["net"] == "odenet"), cout=w, k=3,
                 stride=1, pad=1, input_grad=True, count=2 * spec["depth"])]


def conv_fn(ndim: int, stride: int, pad: int):
    """A convolution as nnx.Conv computes it: channels-last lax.conv_general_dilated."""
    dims = ("NWC", "WIO", "NWC") if ndim == 1 else ("NHWC", "HWIO", "NHWC")
    return lambda x, w: jax.lax.conv_general_dilated(x, w, (stride,) * ndim, ((pad, pad),) * ndim,
                                                     dimension_numbers=dims)


def conv_seconds(c: dict, repeats: int) -> float:
    """Forward + backward of one convolution (+ bias) with a random cotangent; min of `repeats`."""
    conv, rng = conv_fn(c["ndim"], c["stride"], c["pad"]), np.random.default_rng(0)
    x = rng.standard_normal((c["batch"], *(c["size"],) * c["ndim"], c["cin"]), np.float32)
    w = rng.standard_normal((*(c["k"],) * c["ndim"], c["cin"], c["cout"]), np.float32)
    b = np.zeros(c["cout"], np.float32)
    layer = lambda x, w, b: conv(x, w) + b
    g = rng.standard_normal(jax.eval_shape(layer, x, w, b).shape, np.float32)

    @jax.jit
    def fwd_bwd(x, w, b, g):
        out, vjp = jax.vjp(layer, x, w, b) if c["input_grad"] else jax.vjp(lambda w, b: layer(x, w, b), w, b)
        return out, vjp(g)

    return common.time_all({"conv": fwd_bwd}, tuple(map(jnp.asarray, (x, w, b, g))), repeats)[0]["conv"]


def loop_chain(spec: dict, batch: int, size: int, repeats: int) -> dict:
    """x <- x + h relu(conv(x)) for `depth` steps (ODE-Net: one kernel on [x, t]; ResNet: a kernel per
    step, h = 1), loss sum(x^2), gradients for x0 and the kernels: as a lax.scan (how odeint runs the
    steps) and unrolled; their times, disagreement and non-canonical HLO convolutions."""
    nd, w, depth, shared = spec["ndim"], spec["width"], spec["depth"], spec["net"] == "odenet"
    h, conv, rng = (spec["t1"] / depth if shared else 1.0), conv_fn(nd, 1, 1), np.random.default_rng(0)
    x0 = jnp.asarray(rng.standard_normal((batch, *(size,) * nd, w), np.float32))
    ks = jnp.asarray(rng.standard_normal((1 if shared else depth, *(3,) * nd, w + shared, w), np.float32)
                     / np.sqrt(9 * w))

    def step(x, k, t):
        return x + h * jax.nn.relu(conv(jnp.concatenate([x, jnp.full_like(x[..., :1], t)], -1) if shared else x, k))

    def scan(x0, ks):
        body = lambda x, tk: (step(x, ks[0] if shared else tk[1], tk[0]), None)
        return jnp.sum(jax.lax.scan(body, x0, (h * jnp.arange(depth, dtype=x0.dtype), None if shared else ks))[0] ** 2)

    def unrolled(x0, ks):
        for i in range(depth):
            x0 = step(x0, ks[0 if shared else i], h * i)
        return jnp.sum(x0**2)

    fns = {"scan": jax.jit(jax.value_and_grad(scan, (0, 1))), "unrolled": jax.jit(jax.value_and_grad(unrolled, (0, 1)))}
    best, _, outs = common.time_all(fns, (x0, ks), repeats)
    canonical = "b0f_0io->b0f" if nd == 1 else "b01f_01io->b01f"
    labels = {k: re.findall(r"= \S+ convolution\(.*?dim_labels=(\S+?),", f.lower(x0, ks).compile().as_text())
              for k, f in fns.items()}
    return dict(scan_s=best["scan"], unrolled_s=best["unrolled"], canonical=canonical,
                odd={k: [d for d in v if d != canonical] for k, v in labels.items()},
                rel=common.rel_discrepancy(outs["scan"], outs["unrolled"]))


# -- one (model, input), then the devices ----------------------------------------------------------
def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def measure_pair(net, inp, data: Path, cfg, python, tmp: Path) -> tuple[dict, dict | None]:
    s, ours = train_steps(net, inp, data, cfg)
    opts, batch = model_options(net, inp, cfg), cfg["batch"][inp]
    spec = {"net": net, "ndim": len(shape(inp, cfg)) - 1, "width": opts["width"], "depth": opts["depth"],
            "groups": opts["groups"], "t1": opts.get("t1", 1.0), "in_channels": shape(inp, cfg)[-1], "num_classes": CLASSES,
            "param_count": s.n_params, "lr": OPTIM["lr"], "weight_decay": OPTIM["weight_decay"],
            "clip_norm": OPTIM["clip_norm"]}
    convs = conv_specs(spec, batch, shape(inp, cfg)[0])
    for c in convs:
        c["odenets_s"] = conv_seconds(c, cfg["repeats"])
    row = dict(net=net, inp=inp, batch=batch, steps=cfg["steps"][inp], params=s.n_params, odenets=ours, convs=convs,
               chain=loop_chain(spec, batch, convs[-1]["size"], cfg["repeats"]), torch=None)
    print(net, inp, ours, flush=True)
    if python is None:
        return row, None
    path = tmp / f"{net}_{inp}.npz"
    flat = jax.tree_util.tree_flatten_with_path(s.state[0])[0]
    params = {"param/" + "/".join(str(getattr(k, "key", getattr(k, "idx", ""))) for k in p
                                  if not isinstance(k, jax.tree_util.GetAttrKey)): np.asarray(v) for p, v in flat}
    np.savez(path, x=s.data.x_train, y=s.data.y_train, **params)
    info = common.run_torch(python, "throughput", dict(problem=str(path), spec=spec, steps=row["steps"], convs=convs,
                                                       conv_repeats=cfg["repeats"]))
    if info:
        for c, t in zip(convs, info.pop("conv_seconds"), strict=True):
            c["torch_s"] = t
        row["torch"] = {k: info.pop(k) for k in ("seconds", "losses", "grad_norms")}
        pairs = [*zip(row["torch"]["losses"][:CHECKED], ours["losses"][:CHECKED]),
                 (row["torch"]["grad_norms"][0], ours["grad_norms"][0])]
        row.update(rel_checked=max(rel(a, b) for a, b in pairs), rel_last=rel(row["torch"]["losses"][-1],
                                                                               ours["losses"][-1]))
    return row, info


def devices_worker(argv) -> None:
    """The MNIST-1D-sized steps on this process' (forced host) devices; one JSON line {net: result}."""
    p = argparse.ArgumentParser()
    p.add_argument("--devices-worker", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--config", required=True)
    opts = p.parse_args(argv)
    cfg = json.loads(opts.config)
    print(json.dumps({n: train_steps(n, "mnist1d", Path(opts.data), cfg)[1] for n in cfg["device_nets"]}))


def measure_devices(data: Path, cfg: dict, rows: list[dict]) -> list[dict]:
    """1 device: this process' measurements; N > 1: a fresh process with N forced host devices."""
    out = [dict(r["odenets"], net=r["net"]) for r in rows if r["inp"] == "mnist1d" and r["net"] in cfg["device_nets"]]
    for n in cfg["devices"][1:]:
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip())
        done = subprocess.run([sys.executable, "-m", __spec__.name, "--devices-worker", str(n), "--data", str(data),
                               "--config", json.dumps(cfg)], capture_output=True, text=True, env=env, cwd=common.ROOT)
        if done.returncode:
            raise RuntimeError(f"the worker on {n} devices failed:\n{done.stderr[-3000:]}")
        out += [dict(r, net=net) for net, r in json.loads(done.stdout.strip().splitlines()[-1]).items()]
    for r in out:
        one = next(o for o in out if o["net"] == r["net"] and o["devices"] == 1)
        r.update(rel_checked=max(rel(a, b) for a, b in zip(r["losses"][:CHECKED], one["losses"][:CHECKED])),
                 rel_last=rel(r["losses"][-1], one["losses"][-1]))
    return out


def measure(cfg: dict, python: str | None) -> dict:
    rows, info = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for inp in INPUTS:
            write_batch(tmp / f"{inp}.npz", inp, cfg)
        for net, inp in cfg["pairs"]:
            row, answer = measure_pair(net, inp, tmp / f"{inp}.npz", cfg, python, tmp)
            rows.append(row)
            python, info = (python, answer) if answer else (None, info)
        if jax.default_backend() != "cpu" or jax.device_count() != 1:
            raise RuntimeError("the forced-host-device harness needs this process on one CPU device")
        devices = measure_devices(tmp / "mnist1d.npz", cfg, rows)
    return {"config": cfg, "device": common.device_name(), "usable_cpus": common.usable_cpus(), "torch": info, "rows": rows, "devices": devices}



# -- what the numbers say -------------------------------------------------------------------------
def eps(row: dict, peer: str) -> float | None:
    return row["batch"] / row[peer]["seconds"] if row.get(peer) else None


def label(row: dict) -> str:
    return f"{NETS[row['net']]}, {INPUTS[row['inp']][2]}"


def conv_time(row: dict, peer: str) -> float | None:
    """Sum over the model's convolutions of calls per step x the time of one alone."""
    return None if any(f"{peer}_s" not in c for c in row["convs"]) else sum(c["count"] * c[f"{peer}_s"]
                                                                             for c in row["convs"])


def goals(data: dict) -> list[common.Goal]:
    return [common.Goal(f"odenets / torch examples/s ({label(r)}; the issue sets no target)",
                        r["torch"] and eps(r, "odenets") / eps(r, "torch"), 1.0, True, info=True,
                        where="" if r["torch"] else "torch peer not run") for r in data["rows"]]


def fields(data: dict) -> dict:
    cfg, rows, devs, blocks, fmt = data["config"], data["rows"], data["devices"], common.template("throughput"), common.fmt
    main, chain, convs, why = [], [], [], []
    for r in rows:
        o, t, c, f = eps(r, "odenets"), eps(r, "torch"), r["chain"], r["convs"][-1]
        main.append([NETS[r["net"]], INPUTS[r["inp"]][2], r["batch"], f"{r['params']:,}", f"{o:.0f}", fmt(t, ".0f"),
                     fmt(t and o / t, ".2f", "x"), f"{1e3 * r['odenets']['seconds']:.1f}",
                     fmt(t and 1e3 * r["torch"]["seconds"], ".1f"), f"{r['odenets']['first_call_s']:.1f}",
                     f"{r['odenets']['losses'][0]:.6f} / " + fmt(t and r["torch"]["losses"][0], ".6f"),
                     fmt(r.get("rel_checked"), ".1e"), fmt(r.get("rel_last"), ".1e") + f" (step {r['steps']})"])
        chain.append([label(r), f"{r['batch']}x{'x'.join([str(f['size'])] * f['ndim'])}x{f['cin']} -> {f['cout']}",
                      f"{1e3 * c['scan_s']:.1f}", f"{1e3 * c['unrolled_s']:.1f}", f"{c['scan_s'] / c['unrolled_s']:.1f}x",
                      f"{c['rel']:.0e}", ", ".join(c["odd"]["scan"]) or "none", ", ".join(c["odd"]["unrolled"]) or "none"])
        for v in r["convs"]:
            ts = v.get("torch_s")
            convs.append([label(r), f"{v['name']} {v['cin']}->{v['cout']} at {'x'.join([str(v['size'])] * v['ndim'])}",
                          v["count"], f"{1e3 * v['odenets_s']:.2f}", fmt(ts and 1e3 * ts), fmt(ts and v["odenets_s"] / ts,
                                                                                                ".2f", "x")])
        ours, theirs = conv_time(r, "odenets"), conv_time(r, "torch")
        convs.append([label(r), "**all, x calls per step**", "", f"**{1e3 * ours:.1f}**", fmt(theirs and 1e3 * theirs,
                      ".1f"), fmt(theirs and ours / theirs, ".2f", "x")])
        if t and o < t:
            so, st = r["odenets"]["seconds"], r["torch"]["seconds"]
            kernels, gap = ours - theirs, so - st
            why.append(blocks["slower"].format(label=label(r), ours=1e3 * so, theirs=1e3 * st, fewer=100 * (1 - st / so),
                                               gap=1e3 * gap, kernels=1e3 * abs(kernels),
                                               faster="slower" if kernels > 0 else "faster")
                       + (blocks["rest"].format(rest=1e3 * (gap - kernels)) if gap > kernels else "."))
    if why:
        c = rows[0]["chain"]
        why.append(blocks["loop_penalty"].format(odd=", ".join(sorted(set(c["odd"]["scan"]))), canonical=c["canonical"]))
    batch, steps = cfg["batch"]["mnist1d"], cfg["steps"]["mnist1d"]
    dev = [[NETS[r["net"]], r["devices"], f"{batch / r['seconds']:.0f}", ", ".join(f"{v:.7f}" for v in r["losses"][:3]),
            f"{r['rel_checked']:.1e}", "PASS" if r["rel_checked"] <= TOL_DEVICES else "FAIL", f"{r['rel_last']:.1e}"]
           for r in devs]
    worst = max((r for r in devs if r["devices"] > 1), key=lambda r: r["rel_last"], default=None)
    return {"shrunk": " " + blocks["shrunk"].format(**cfg) if cfg["model"] else "", "checked": CHECKED, "steps": steps,
            "tol": f"{TOL_TORCH:.0e}", "tol_devices": f"{TOL_DEVICES:.0e}", "device": data["device"],
            "all_steps": ", ".join(f"{cfg['steps'][i]} on {INPUTS[i][2]}" for i in INPUTS),
            "torch": blocks["torch_line"].format(**data["torch"]) if data["torch"] else blocks["no_torch"],
            "table": common.rows(main), "chain": common.rows(chain), "convs": common.rows(convs),
            "repeats": cfg["repeats"], "cpus": data["usable_cpus"], "batch": batch, "devices": common.rows(dev),
            "drift": blocks["drift"].format(checked=CHECKED, n=worst["devices"], last=worst["rel_last"], step=steps)
            if worst else "", "why": blocks["why"] + "\n\n" + "\n".join(why) if why else ""}


def figures(data: dict, fig_dir) -> None:
    rows, devs, batch = data["rows"], data["devices"], data["config"]["batch"]["mnist1d"]
    common.figure(fig_dir, "case6_throughput", "Train step throughput, AdamW, float32 (higher is better)",
                  groups=[f"{label(r)}\nbatch {r['batch']}" for r in rows], ylabel="training examples / s",
                  bars={"odenets (JAX)": [eps(r, "odenets") for r in rows],
                        "PyTorch + torchdiffeq": [eps(r, "torch") for r in rows]}, annotate=True)
    counts, nets = sorted({r["devices"] for r in devs}), list(dict.fromkeys(r["net"] for r in devs))
    common.figure(fig_dir, "case6_devices", "MNIST-1D-sized, forced host devices: a correctness harness, not a speed "
                  "claim\n(the devices share the same cores)", groups=[f"{n} device(s)" for n in counts],
                  bars={NETS[net]: [batch / next(r["seconds"] for r in devs if (r["net"], r["devices"]) == (net, n))
                                    for n in counts] for net in nets}, ylabel="training examples / s", log=False,
                  annotate=True)

if __name__ == "__main__":
    if "--devices-worker" in sys.argv:
        devices_worker(sys.argv[1:])
    else:
        common.main_of(__spec__.name, measure, FULL, QUICK)
