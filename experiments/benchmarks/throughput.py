"""Case 6: training throughput of Chen et al.'s ODE-Net and ResNet (odenets.models.preset("chen_*")) through
odenets' own train step, unrolled (unroll=True) and as a loop (unroll=1), against PyTorch + torchdiffeq from the
same initial parameters, and the same steps on forced host devices (a correctness harness: the devices share the
same cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from odenets import models
from odenets.train import loop

from . import common

NETS = {"odenet": "ODE-Net", "resnet": "ResNet"}
INPUTS = {"mnist1d": ("1d", (40, 1), "MNIST-1D-sized"), "cifar": ("2d", (32, 32, 3), "CIFAR-sized")}
FULL = dict(pairs=[(n, i) for i in INPUTS for n in NETS], batch={"mnist1d": 128, "cifar": 32},
            steps={"mnist1d": 10, "cifar": 6}, devices=(1, 2, 4), device_nets=tuple(NETS), repeats=5, model={},
            shapes={}, unrolls=(True, 1))
QUICK = dict(pairs=[("odenet", "mnist1d"), ("resnet", "cifar")], batch={"mnist1d": 8, "cifar": 4},
             steps={"mnist1d": 4, "cifar": 4}, devices=(1, 2), device_nets=("odenet",), repeats=2,
             model={"width": 8, "depth": 2}, shapes={"mnist1d": (12, 1), "cifar": (12, 12, 3)}, unrolls=(True, 1))
UNTIMED, CHECKED, GROUPS, CLASSES = 3, 3, 32, 10  # compile + 2 warm-ups; steps whose losses must agree
OPTIM = {"lr": 3e-3, "weight_decay": 1e-4, "clip_norm": 1.0}
TOL_TORCH, TOL_DEVICES = 1e-4, 1e-5
UNROLL_GOAL = 1.2  # unroll=1 step time within 1.2x of unroll=True's


def shape(inp: str, cfg: dict) -> tuple[int, ...]:
    return tuple(cfg["shapes"].get(inp, INPUTS[inp][1]))


def unrolls(cfg: dict) -> tuple:
    """The unroll settings measured (True: straight-line steps; 1: one step per loop iteration)."""
    return tuple(cfg.get("unrolls", (True,)))


def model_options(net: str, inp: str, cfg: dict, unroll: int | bool = True) -> dict:
    """The preset's options as the experiments train it (32 groups) at `unroll`, with the run's overrides."""
    drop = ("integrator", "gradient", "input_shape", "num_classes")
    opts = {k: v for k, v in models.preset(f"chen_{net}_{INPUTS[inp][0]}").items() if k not in drop}
    opts = {**opts, "unroll": unroll, **({"t1": 1.0} if net == "odenet" else {}), **cfg["model"]}
    return {**opts, "groups": min(GROUPS, opts["width"])}


def train_steps(net: str, inp: str, data: Path, cfg: dict, unroll: int | bool = True) -> tuple[loop.Setup, dict]:
    """`steps` calls of odenets' train step on the one batch, the batch sharded over the devices."""
    optim = {"name": "adamw", **OPTIM, "schedule": "constant", "warmup_steps": 0, "epochs": 1,
             "batch_size": cfg["batch"][inp]}
    s = loop.setup({"seed": 0, "data": {"name": "npz", "path": str(data), "num_classes": CLASSES}, "optim": optim,
                    "model": model_options(net, inp, cfg, unroll), "integrator": {"name": "euler"},
                    "gradient": {"name": "backprop"}, "train": {"progress": False}})
    train_step, sharding = loop.make_steps(s)[0], NamedSharding(s.mesh, PartitionSpec("data"))
    x, y = jax.device_put(s.data.x_train, sharding), jax.device_put(s.data.y_train, sharding)
    state, times, losses, norms = s.state, [], [], []
    for _ in range(cfg["steps"][inp]):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(train_step(state, x, y))
        times.append(time.perf_counter() - start)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
    return s, dict(seconds=min(times[UNTIMED:]), first_call_s=times[0], losses=losses, grad_norms=norms,
                   devices=s.mesh.devices.size, params=s.n_params)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def measure_pair(net, inp, data: Path, cfg, python, tmp: Path) -> tuple[list[dict], dict | None]:
    """odenets' train steps at each unroll, then the torch peer's from the same initial parameters (one torch
    run: unrolling changes odenets' program, not the computation), checked against every odenets row."""
    opts, shp, batch, rows = model_options(net, inp, cfg), shape(inp, cfg), cfg["batch"][inp], []
    for unroll in unrolls(cfg):
        s, ours = train_steps(net, inp, data, cfg, unroll)
        rows.append(dict(net=net, inp=inp, unroll=unroll, batch=batch, steps=cfg["steps"][inp], params=s.n_params,
                         odenets=ours, torch=None))
        print(net, inp, f"unroll={unroll}", ours, flush=True)
    spec = {"net": net, "ndim": len(shp) - 1, "width": opts["width"], "depth": opts["depth"], **OPTIM,
            "groups": opts["groups"], "t1": opts.get("t1", 1.0), "in_channels": shp[-1], "num_classes": CLASSES,
            "param_count": s.n_params}
    if python is None:
        return rows, None
    flat = jax.tree_util.tree_flatten_with_path(s.state[0])[0]
    params = {"param/" + "/".join(str(getattr(k, "key", getattr(k, "idx", ""))) for k in p
                                  if not isinstance(k, jax.tree_util.GetAttrKey)): np.asarray(v) for p, v in flat}
    np.savez(path := tmp / "model.npz", x=s.data.x_train, y=s.data.y_train, **params)
    info = common.run_torch(python, "throughput", dict(problem=str(path), spec=spec, steps=rows[0]["steps"]))
    if info:
        t = {k: info.pop(k) for k in ("seconds", "losses", "grad_norms")}
        for row in rows:
            ours = row["odenets"]
            pairs = [(t["grad_norms"][0], ours["grad_norms"][0]), *zip(t["losses"][:CHECKED], ours["losses"])]
            row.update(torch=t, rel_checked=max(rel(a, b) for a, b in pairs),
                       rel_last=rel(t["losses"][-1], ours["losses"][-1]))
    return rows, info


def measure_devices(data: Path, cfg: dict, rows: list[dict]) -> list[dict]:
    """1 device: this process' measurements; N > 1: a fresh process with N forced host devices."""
    out = [dict(r["odenets"], net=r["net"]) for r in rows
           if r["inp"] == "mnist1d" and r["net"] in cfg["device_nets"] and r["unroll"] == unrolls(cfg)[0]]
    for n in cfg["devices"][1:]:
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}")
        cmd = [sys.executable, "-m", __spec__.name, str(data), json.dumps(cfg)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.ROOT)
        if done.returncode:
            raise RuntimeError(f"the worker on {n} devices failed:\n{done.stderr[-3000:]}")
        out += [dict(r, net=net) for net, r in json.loads(done.stdout.strip().splitlines()[-1]).items()]
    for r in out:
        one = next(o for o in out if o["net"] == r["net"] and o["devices"] == 1)
        r.update(rel_checked=max(rel(a, b) for a, b in zip(r["losses"][:CHECKED], one["losses"][:CHECKED])),
                 rel_last=rel(r["losses"][-1], one["losses"][-1]))
    return out


def measure(cfg: dict, python: str | None) -> dict:
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        raise RuntimeError("the forced-host-device harness needs this process on one CPU device")
    rows, info = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for inp in INPUTS:  # one batch: standard normal inputs, uniform labels, as the npz dataset's file
            rng, batch = np.random.default_rng(0), cfg["batch"][inp]
            x, y = rng.standard_normal((batch, *shape(inp, cfg)), np.float32), rng.integers(0, CLASSES, batch)
            np.savez(Path(tmp) / f"{inp}.npz", x_train=x, y_train=y.astype(np.int32), x_test=x,
                     y_test=y.astype(np.int32))
        for net, inp in cfg["pairs"]:
            pair, answer = measure_pair(net, inp, Path(tmp) / f"{inp}.npz", cfg, python, Path(tmp))
            rows += pair
            python, info = (python, answer) if answer else (None, info)
        devices = measure_devices(Path(tmp) / "mnist1d.npz", cfg, rows)
    return {"config": cfg, "device": common.device_name(), "usable_cpus": common.usable_cpus(), "torch": info,
            "rows": rows, "devices": devices}


# -- what the numbers say -------------------------------------------------------------------------
def eps(row: dict, peer: str) -> float | None:
    return row["batch"] / row[peer]["seconds"] if row.get(peer) else None


def unroll_of(row: dict) -> int | bool:
    return row.get("unroll", True)  # results from before the unroll=1 rows: unrolled


def label(row: dict, unroll: bool = False) -> str:
    return f"{NETS[row['net']]}, {INPUTS[row['inp']][2]}" + (f", unroll={unroll_of(row)}" if unroll else "")


def unroll_ratios(data: dict) -> dict[tuple[str, str], float]:
    """{(net, input): unroll=1 step time / unroll=True step time} where both were measured."""
    by = {(r["net"], r["inp"], str(unroll_of(r))): r["odenets"]["seconds"] for r in data["rows"]}
    return {(n, i): by[n, i, "1"] / by[n, i, "True"] for n, i, u in by if u == "1" and (n, i, "True") in by}


def goals(data: dict) -> list[common.Goal]:
    """odenets >= torch on every row (both unrolls), and unroll=1 within 1.2x of unroll=True per model."""
    out = [common.Goal(f"odenets / torch examples/s ({label(r, True)})",
                       r["torch"] and eps(r, "odenets") / eps(r, "torch"), 1.0, True,
                       where="" if r["torch"] else "torch peer not run") for r in data["rows"]]
    ratios, rows = unroll_ratios(data), {(r["net"], r["inp"]): r for r in data["rows"]}
    return out + [common.Goal(f"unroll=1 / unroll=True step time ({label(rows[k])})", ratios.get(k), UNROLL_GOAL,
                              False, where="" if k in ratios else "unroll=1 not measured") for k in rows]


def fields(data: dict) -> dict:
    cfg, rows, devs, blocks, fmt = data["config"], data["rows"], data["devices"], common.template("throughput"), \
        common.fmt
    batch, steps, main, why = cfg["batch"]["mnist1d"], cfg["steps"]["mnist1d"], [], []
    for r in rows:
        o, t = eps(r, "odenets"), eps(r, "torch")
        main.append([NETS[r["net"]], INPUTS[r["inp"]][2], unroll_of(r), r["batch"], f"{r['params']:,}", f"{o:.0f}",
                     fmt(t, ".0f"), fmt(t and o / t, ".2f", "x"), f"{1e3 * r['odenets']['seconds']:.1f}",
                     fmt(t and 1e3 * r["torch"]["seconds"], ".1f"), f"{r['odenets']['first_call_s']:.1f}",
                     f"{r['odenets']['losses'][0]:.6f} / " + fmt(t and r["torch"]["losses"][0], ".6f"),
                     fmt(r.get("rel_checked"), ".1e"), fmt(r.get("rel_last"), ".1e") + f" (step {r['steps']})"])
        if t and o < t:
            so, st = r["odenets"]["seconds"], r["torch"]["seconds"]
            why.append(blocks["slower"].format(label=label(r, True), ours=1e3 * so, theirs=1e3 * st,
                                               gap=1e3 * (so - st), fewer=100 * (1 - st / so)))
    dev = [[NETS[r["net"]], r["devices"], f"{batch / r['seconds']:.0f}",
            ", ".join(f"{v:.7f}" for v in r["losses"][:3]),
            f"{r['rel_checked']:.1e}", "PASS" if r["rel_checked"] <= TOL_DEVICES else "FAIL",
            f"{r['rel_last']:.1e}"] for r in devs]
    worst = max((r for r in devs if r["devices"] > 1), key=lambda r: r["rel_last"], default=None)
    return {"shrunk": " " + blocks["shrunk"].format(**cfg) if cfg["model"] else "", "checked": CHECKED,
            "steps": steps,
            "tol": f"{TOL_TORCH:.0e}", "tol_devices": f"{TOL_DEVICES:.0e}", "device": data["device"],
            "all_steps": ", ".join(f"{cfg['steps'][i]} on {INPUTS[i][2]}" for i in INPUTS),
            "torch": blocks["torch_line"].format(**data["torch"]) if data["torch"] else blocks["no_torch"],
            "table": common.rows(main), "cpus": data["usable_cpus"], "batch": batch, "devices": common.rows(dev),
            "why": "\n\n".join([blocks["why"], "\n".join(why)]) if why else "",
            "loop": blocks["loop"].format(ratios="; ".join(f"{NETS[n]}, {INPUTS[i][2]}: {v:.2f}x"
                                                           for (n, i), v in unroll_ratios(data).items()) or "-"),
            "drift": worst and blocks["drift"].format(checked=CHECKED, n=worst["devices"], last=worst["rel_last"],
                                                      step=steps) or ""}


def figures(data: dict, fig_dir) -> None:
    rows, devs, batch = data["rows"], data["devices"], data["config"]["batch"]["mnist1d"]
    common.figure(fig_dir, "case6_throughput", "Train step throughput, AdamW, float32 (higher is better)",
                  groups=[f"{label(r)}\nunroll={unroll_of(r)}" for r in rows], ylabel="training examples / s",
                  bars={"odenets (JAX)": [eps(r, "odenets") for r in rows],
                        "PyTorch + torchdiffeq": [eps(r, "torch") for r in rows]}, annotate=True)
    counts, nets = sorted({r["devices"] for r in devs}), list(dict.fromkeys(r["net"] for r in devs))
    common.figure(fig_dir, "case6_devices",
                  "MNIST-1D-sized, forced host devices: a correctness harness, not a speed "
                  "claim\n(the devices share the same cores)", groups=[f"{n} device(s)" for n in counts],
                  bars={NETS[net]: [batch / next(r["seconds"] for r in devs if (r["net"], r["devices"]) == (net,
                                                                                                            n))
                                    for n in counts] for net in nets}, ylabel="training examples / s", log=False,
                  annotate=True)

if __name__ == "__main__":  # the MNIST-1D-sized steps on this process' forced host devices: DATA CONFIG
    cfg = json.loads(sys.argv[2])
    print(json.dumps({n: train_steps(n, "mnist1d", Path(sys.argv[1]), cfg)[1] for n in cfg["device_nets"]}))
