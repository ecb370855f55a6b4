"""torchdiffeq peer for experiments/benchmarks/sizes.py (standalone: imports no JAX, no odenets).

    python torch_peer.py --problem P.npz --steps N --methods rk4,euler --repeats R --threads T --out O.npz

Loads the MLP parameters and x0 written by sizes.py (float32), solves dx/dt = F(t, x) with
F(t, x) = tanh(x W1 + b1) W2 + b2 on t in [0, 1] with N fixed steps of torchdiffeq's odeint,
loss = mean(x(1) ** 2), and backpropagates through the solver (plain autograd, no adjoint) to
the parameters and x0: the same math as the JAX side. Timing: 2 warm-up calls, then the
minimum of R calls. torch.set_num_threads(T) and OMP_NUM_THREADS=T (the caller sets the latter
in the environment before this process starts).

RK4: torchdiffeq's method="rk4" is the 3/8 rule, not the classic (1/6, 1/3, 1/3, 1/6) rule
that odenets, the scan and diffrax use, so a fixed-grid solver with torchdiffeq's own classic
step function (`rk_common.rk4_step_func`) is registered under the name "rk4_classic". If those
internals are missing, the 3/8 rule is used and the result says so (key rk4_rule).

Exit status 3 with "not installed" on stdout when torch or torchdiffeq cannot be imported.
Prints one JSON line with the results on success.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from torch_common import TORCH_MISSING, classic_rk4, import_torch, versions  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--methods", default="rk4,euler")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args(argv)

    modules = import_torch()
    if modules is None:
        return TORCH_MISSING
    np, torch, torchdiffeq = modules

    torch.set_num_threads(opts.threads)
    rk4_name, rk4_rule = classic_rk4()  # torchdiffeq's own "rk4" is the 3/8 rule
    data = np.load(opts.problem)
    names = ("W1", "b1", "W2", "b2")
    steps = opts.steps
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float32)

    def grid_constructor(func, y0, t):
        return grid

    def make_leaves():
        leaves = {k: torch.tensor(data[k], dtype=torch.float32, requires_grad=True) for k in names}
        leaves["x0"] = torch.tensor(data["x0"], dtype=torch.float32, requires_grad=True)
        return leaves

    results = {**versions(torch, torchdiffeq), "rk4_rule": rk4_rule, "methods": {}}
    arrays = {}
    for method in opts.methods.split(","):
        leaves = make_leaves()
        W1, b1, W2, b2, x0 = (leaves[k] for k in (*names, "x0"))

        def f(t, x):
            return torch.tanh(x @ W1 + b1) @ W2 + b2

        td_method = rk4_name if method == "rk4" else method

        def call():
            for v in leaves.values():
                v.grad = None
            xs = torchdiffeq.odeint(f, x0, ts, method=td_method,
                                    options={"grid_constructor": grid_constructor})
            loss = torch.mean(xs[-1] ** 2)
            loss.backward()
            return loss

        for _ in range(2):
            loss = call()
        best = float("inf")
        for _ in range(opts.repeats):
            start = time.perf_counter()
            loss = call()
            best = min(best, time.perf_counter() - start)
        results["methods"][method] = {"seconds": best, "loss": float(loss.detach())}
        arrays[f"{method}/loss"] = np.asarray(float(loss.detach()), np.float32)
        for k, v in leaves.items():
            arrays[f"{method}/{k}"] = v.grad.detach().numpy()
    np.savez(opts.out, **arrays)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
