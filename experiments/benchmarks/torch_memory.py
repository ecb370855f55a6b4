"""torchdiffeq worker for memory.py: peak resident memory and time of one (method, steps) solve.

    python torch_memory.py --problem P.npz --method odeint|odeint_adjoint --steps N --repeats R
                           --threads T --out O.npz

Standalone (imports no JAX, no odenets); memory.py starts one fresh process per (method, steps)
so that each peak belongs to one configuration only. Loads the MLP parameters and x0 that
memory.py wrote (float32), solves dx/dt = tanh(x W1 + b1) W2 + b2 on t in [0, 1] with N fixed
classic RK4 steps, loss = mean(x(1) ** 2), and backpropagates to (W1, b1, W2, b2, x0):

    odeint          autograd through every step of the solver (the graph keeps every stage)
    odeint_adjoint  torchdiffeq's continuous adjoint: the forward solve under no_grad, then the
                    augmented system solved backwards with the same method and grid

Memory: the process' peak resident set (VmHWM of /proc/self/status, KiB) after the first call,
minus the peak after setup (imports, tensors allocated, before the first solve); the peak after
all calls is reported too (later calls can add allocator fragmentation). Calls: 2 warm-ups and R
timed ones; with R = 0 a single untimed call. Not getrusage's ru_maxrss: on Linux it
survives execve, so a worker spawned by a large process reports its parent's size (the JSON
carries ru_maxrss too, to show it). Time: the minimum of the R calls (null when R = 0).
torch.set_num_threads(T); OMP_NUM_THREADS (and OMP_WAIT_POLICY, if set) come from the
caller's environment: on a machine shared with other jobs, OpenMP's default active spin-wait
with T = all cores makes torch's times erratic (OMP_WAIT_POLICY=PASSIVE steadies them, but
slows torch on a quiet machine, so it is not the default).

torchdiffeq's method="rk4" is the 3/8 rule; the classic (1/6, 1/3, 1/3, 1/6) rule that odenets
and diffrax use is registered from torchdiffeq's own `rk_common.rk4_step_func` (as in
torch_peer.py); if those internals are missing, the 3/8 rule is used and "rk4_rule" says so.

Exit status 3 with "not installed" on stdout when torch or torchdiffeq cannot be imported.
Prints one JSON line last on success; the loss and gradients go to --out (.npz).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from torch_common import TORCH_MISSING, classic_rk4, import_torch, versions  # noqa: E402

NAMES = ("W1", "b1", "W2", "b2")


def peak_rss_kib() -> int:
    """This process' own peak resident set (VmHWM), KiB; ru_maxrss where /proc is missing."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", required=True)
    parser.add_argument("--method", choices=("odeint", "odeint_adjoint"), required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args(argv)
    modules = import_torch()
    if modules is None:
        return TORCH_MISSING
    np, torch, torchdiffeq = modules

    torch.set_num_threads(opts.threads)
    rk4_name, rk4_rule = classic_rk4()
    data = np.load(opts.problem)
    leaves = {k: torch.tensor(data[k], dtype=torch.float32, requires_grad=True) for k in (*NAMES, "x0")}
    W1, b1, W2, b2, x0 = (leaves[k] for k in (*NAMES, "x0"))
    ts = torch.tensor([0.0, 1.0], dtype=torch.float32)
    steps = opts.steps

    def f(t, x):
        return torch.tanh(x @ W1 + b1) @ W2 + b2

    def grid(func, y0, t):  # built from t: the adjoint's backward solve passes its own (reversed) t
        return torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype)

    options = {"grid_constructor": grid}
    if opts.method == "odeint":
        solve = lambda: torchdiffeq.odeint(f, x0, ts, method=rk4_name, options=options)
    else:
        solve = lambda: torchdiffeq.odeint_adjoint(
            f, x0, ts, method=rk4_name, options=options, adjoint_params=(W1, b1, W2, b2))

    def call():
        for v in leaves.values():
            v.grad = None
        loss = torch.mean(solve()[-1] ** 2)
        loss.backward()
        return loss

    setup_kib, setup_modules = peak_rss_kib(), set(sys.modules)
    loss, best = call(), None
    first_kib = peak_rss_kib()
    if opts.repeats:
        call()
        best = float("inf")
        for _ in range(opts.repeats):
            start = time.perf_counter()
            loss = call()
            best = min(best, time.perf_counter() - start)
    peak_kib = peak_rss_kib()
    new_modules = set(sys.modules) - setup_modules  # lazy imports count in the peak too

    arrays = {"loss": np.asarray(float(loss.detach()), np.float32)}
    arrays.update({k: v.grad.detach().numpy() for k, v in leaves.items()})
    np.savez(opts.out, **arrays)
    print(json.dumps({
        "method": opts.method, "steps": steps, "seconds": best, "loss": float(loss.detach()),
        "rss_setup_kib": setup_kib, "rss_peak_kib": peak_kib, "rss_delta_bytes": 1024 * (first_kib - setup_kib),
        "rss_delta_all_calls_bytes": 1024 * (peak_kib - setup_kib),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "modules_imported": len(new_modules), "sympy_imported": "sympy" in new_modules,
        **versions(torch, torchdiffeq), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "rk4_rule": rk4_rule,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
