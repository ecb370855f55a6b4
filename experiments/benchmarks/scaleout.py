"""Case 8: training throughput against the number of processes. P processes (one CPU device each) join through a
coordinator on localhost (train.distributed: odenets.train.distributed) and run odenets' own train step as one
data-parallel program over the P-device mesh, the global batch fixed (strong scaling); each P is a fresh set of
processes. The losses of every P must equal those of one process (the batch's mean loss, summed in another
order)."""

from __future__ import annotations

import json
import sys
import time

from . import common

FULL = dict(processes=(1, 2, 4), batch=256, steps=12, width=64, depth=4, n_train=1024)
QUICK = dict(processes=(1, 2), batch=16, steps=5, width=8, depth=2, n_train=64)
UNTIMED, TOL = 3, 1e-5  # compile + 2 warm-ups; max relative difference of every loss from one process'
TIMEOUT = 900  # seconds for the processes of one count


def config(cfg: dict, processes: int, process: int, port: int) -> dict:
    """The run config of one process: a Neural ODE (MLP field, RK4) on concentric spheres, Adam."""
    join = {} if processes == 1 else {"distributed": True, "coordinator_address": f"localhost:{port}",
                                      "num_processes": processes, "process_id": process}
    return {"seed": 0, "data": {"name": "spheres", "n_train": cfg["n_train"], "n_test": cfg["batch"]},
            "model": {"family": "node", "kind": "mlp", "width": cfg["width"], "depth": cfg["depth"]},
            "integrator": {"name": "rk4"}, "gradient": {"name": "backprop"},
            "optim": {"name": "adam", "lr": 1e-2, "batch_size": cfg["batch"], "epochs": 1},
            "train": {"progress": False, **join}}


def worker(cfg: dict, processes: int, process: int, port: int) -> dict:
    """`steps` train steps over successive batches of the first epoch's order (every process draws the same);
    examples/s = global batch / minimum step time after compile and 2 warm-ups."""
    import jax

    from odenets import data as datasets
    from odenets.train import distributed, loop

    s = loop.setup(config(cfg, processes, process, port))
    train_step = loop.make_steps(s)[0]
    order = list(datasets.batches(len(s.data.x_train), cfg["batch"], seed=0, epoch=0))
    state, times, losses = s.state, [], []
    for k in range(cfg["steps"]):
        idx = order[k % len(order)]
        x, y = distributed.global_batch(s.mesh, s.data.x_train[idx], s.data.y_train[idx])
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(train_step(state, x, y))
        times.append(time.perf_counter() - start)
        losses.append(float(metrics["loss"]))
    timed = sorted(times[UNTIMED:])
    return dict(processes=jax.process_count(), devices=s.mesh.devices.size, seconds=timed[0],
                median_s=timed[len(timed) // 2], first_call_s=times[0], losses=losses)


def launch(cfg: dict, processes: int) -> dict:
    """The P processes of one count; process 0's measurements."""
    from odenets.train import distributed

    start = time.perf_counter()
    outs = distributed.run_local(lambda p, port: ["-m", __spec__.name, json.dumps(cfg), str(processes), str(p),
                                                  str(port)], processes, timeout=TIMEOUT, cwd=common.ROOT)
    return {**json.loads(outs[0].strip().splitlines()[-1]), "launch_s": time.perf_counter() - start}


def measure(cfg: dict, torch_python=None) -> dict:
    rows = []
    for n in cfg["processes"]:
        rows.append(launch(cfg, n))
        print(f"{n} process(es): {cfg['batch'] / rows[-1]['seconds']:.0f} examples/s", flush=True)
    one = next(r for r in rows if r["processes"] == 1)
    for r in rows:
        r["rel_checked"] = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(r["losses"], one["losses"]))
    return {"config": cfg, "usable_cpus": common.usable_cpus(), "rows": rows}


# -- what the numbers say -------------------------------------------------------------------------
def eps(data: dict, row: dict) -> float:
    return data["config"]["batch"] / row["seconds"]


def goals(data: dict) -> list[common.Goal]:
    rows = data["rows"]
    one = next(r for r in rows if r["processes"] == 1)
    many = [r for r in rows if r["processes"] > 1]
    worst = max(many, key=lambda r: r["rel_checked"], default=None)
    out = [common.Goal(f"losses of {', '.join(str(r['processes']) for r in many)} processes equal one process': "
                       f"max relative difference / {TOL:.0e}", worst and worst["rel_checked"] / TOL, 1.0, False,
                       where=f"{worst['processes']} processes" if worst else "one process count only")]
    cpus = data["usable_cpus"]
    return out + [common.Goal(f"examples/s, {r['processes']} processes / 1 process (the issue sets no target; "
                              f"{cpus} usable CPUs: no speedup is possible here)", eps(data, r) / eps(data, one),
                              1.0, True, info=True) for r in many]


def fields(data: dict) -> dict:
    cfg, rows = data["config"], data["rows"]
    one = next(r for r in rows if r["processes"] == 1)
    table = [[r["processes"], r["devices"], f"{eps(data, r):.0f}", f"{eps(data, r) / eps(data, one):.2f}x",
              f"{1e3 * r['seconds']:.1f}", f"{1e3 * r['median_s']:.1f}", f"{r['first_call_s']:.1f}",
              f"{r['launch_s']:.0f}", ", ".join(f"{v:.6f}" for v in r["losses"][:3]), f"{r['rel_checked']:.1e}",
              "PASS" if r["rel_checked"] <= TOL else "FAIL"] for r in rows]
    return {**cfg, "processes": ", ".join(map(str, cfg["processes"])), "untimed": UNTIMED, "tol": f"{TOL:.0e}",
            "cpus": data["usable_cpus"], "untimed_minus_one": UNTIMED - 1, "table": common.rows(table)}


def figures(data: dict, fig_dir) -> None:
    rows = data["rows"]
    common.figure(fig_dir, "case8_scaleout", f"Processes of one run on {data['usable_cpus']} shared CPUs: "
                  "examples/s (fixed global batch)", groups=[f"{r['processes']} process(es)" for r in rows],
                  bars={"odenets train step": [eps(data, r) for r in rows]}, ylabel="training examples / s",
                  log=False, annotate=True)


if __name__ == "__main__":  # one process of a launch: CFG PROCESSES PROCESS_ID PORT
    print(json.dumps(worker(json.loads(sys.argv[1]), *map(int, sys.argv[2:5]))), flush=True)
