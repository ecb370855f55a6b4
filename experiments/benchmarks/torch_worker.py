"""The torch peers, `python -m experiments.benchmarks.torch_worker TASK THREADS JSON` (TASK: fixed, adaptive,
mlp_adaptive, throughput) under an interpreter with torch + torchdiffeq (imports no JAX, no odenets; exit status 3
without them; torchode is optional).
Input: an .npz of float32 arrays (x @ W + b layouts); output: arrays in opts["out"], one JSON line last.
Timing: 2 warm-up calls, then the minimum of the repeats."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import types

TORCH_MISSING = 3
NAMES = ("W1", "b1", "W2", "b2")


def peak_rss_kib() -> int:
    """This process' own peak resident set, KiB (VmHWM: ru_maxrss survives execve on Linux)."""
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))


def best_of(call, repeats: int, budget_s: float = math.inf):
    """2 warm-up calls, then the minimum of `repeats` calls (fewer, at least 1, past budget_s)."""
    out, best, spent, done = [call(), call()][-1], math.inf, 0.0, 0
    while done < repeats and (done == 0 or spent < budget_s):
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
        best, spent, done = min(best, seconds), spent + seconds, done + 1
    return (best if done else None), out


def mlp_problem(torch, data) -> tuple[dict, object]:
    """The MLP Neural ODE's tensors W1, b1, W2, b2, x0 from `data` (each requiring grad) and its field
    f(t, x) = tanh(x W1 + b1) W2 + b2."""
    leaves = {k: torch.tensor(data[k], requires_grad=True) for k in (*NAMES, "x0")}
    W1, b1, W2, b2 = (leaves[k] for k in NAMES)
    return leaves, lambda t, x: torch.tanh(x @ W1 + b1) @ W2 + b2


def classic_rk4(torchdiffeq) -> tuple[str, str]:
    """Register classic RK4 (1/6, 1/3, 1/3, 1/6) from torchdiffeq's rk4_step_func; (method, rule)."""
    import importlib

    try:
        odeint_mod = importlib.import_module("torchdiffeq._impl.odeint")
        from torchdiffeq._impl.rk_common import rk4_step_func
        from torchdiffeq._impl.solvers import FixedGridODESolver
    except (ImportError, AttributeError):
        return "rk4", "3/8 (torchdiffeq rk4)"

    class ClassicRK4(FixedGridODESolver):
        order = 4

        def _step_func(self, func, t0, dt, t1, y0):
            f0 = func(t0, y0)
            return rk4_step_func(func, t0, dt, t1, y0, f0=f0), f0

    odeint_mod.SOLVERS["rk4_classic"] = ClassicRK4
    return "rk4_classic", "classic (torchdiffeq rk4_step_func)"


def fixed(np, torch, torchdiffeq, opts) -> tuple[dict, dict]:
    """The MLP problem on a fixed grid over [0, 1], classic RK4 or Euler, loss = mean(x(1)^2), backward
    through odeint or odeint_adjoint; the peak resident set after the first call minus that after setup."""
    data = np.load(opts.problem)
    rk4, rule = classic_rk4(torchdiffeq)
    solve = torchdiffeq.odeint_adjoint if opts.adjoint else torchdiffeq.odeint
    ts = torch.tensor([0.0, 1.0])

    def grid(func, y0, t):  # from t: the adjoint's backward solve passes its own (reversed) t
        return torch.linspace(float(t[0]), float(t[-1]), opts.steps + 1, dtype=t.dtype)

    results, arrays, setup_kib, modules = {"rk4_rule": rule, "methods": {}}, {}, peak_rss_kib(), set(sys.modules)
    for method in opts.methods:
        leaves, f = mlp_problem(torch, data)
        extra = {"adjoint_params": tuple(leaves[k] for k in NAMES)} if opts.adjoint else {}

        def call():
            for v in leaves.values():
                v.grad = None
            xs = solve(f, leaves["x0"], ts, method=rk4 if method == "rk4" else method,
                       options={"grid_constructor": grid}, **extra)
            loss = torch.mean(xs[-1] ** 2)
            loss.backward()
            return loss

        loss, first_kib = call(), peak_rss_kib()
        seconds, loss = best_of(call, opts.repeats) if opts.repeats else (None, loss)
        results["methods"][method] = {"seconds": seconds, "loss": float(loss.detach())}
        arrays[f"{method}/loss"] = np.asarray(float(loss.detach()), np.float32)
        arrays.update({f"{method}/{k}": v.grad.numpy() for k, v in leaves.items()})
    new = set(sys.modules) - modules  # lazy imports count in the peak too
    results.update(rss_delta_bytes=1024 * (first_kib - setup_kib), modules_imported=len(new),
                   sympy_imported="sympy" in new, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"))
    return results, arrays


def adaptive(np, torch, torchdiffeq, opts) -> tuple[dict, dict]:
    """diffrax's small_neural_ode field, torch.jit.script(Linear, Softplus, Linear, Tanh), dopri5, loss = sum of
    the saved states; forward (no_grad), backprop through the solver, or odeint_adjoint."""
    data, nn = np.load(opts.problem), torch.nn
    mlp = nn.Sequential(nn.Linear(4, 32), nn.Softplus(), nn.Linear(32, 4), nn.Tanh())
    with torch.no_grad():
        for layer, w, b in ((mlp[0], "W1", "b1"), (mlp[2], "W2", "b2")):
            layer.weight.copy_(torch.tensor(data[w].T))
            layer.bias.copy_(torch.tensor(data[b]))
    scripted, calls = torch.jit.script(mlp), [0]
    lin1, lin2 = scripted[0], scripted[2]

    def field(t, y):
        calls[0] += 1
        return scripted(y)

    x0 = torch.tensor(data["x0"])
    times = {"final": torch.tensor([0.0, opts.t1]), "dense": torch.linspace(0.0, opts.t1, 100)}
    results, arrays = {"runs": {}}, {}
    for key in opts.runs:
        save, mode = key.split("/")
        solve = torchdiffeq.odeint_adjoint if mode == "adjoint" else torchdiffeq.odeint
        kw = dict(rtol=opts.rtol, atol=opts.atol, method="dopri5")
        if mode == "adjoint":
            kw["adjoint_params"] = tuple(scripted.parameters())

        def call():
            calls[0] = 0
            y0 = x0.detach().requires_grad_(mode != "forward")
            scripted.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(mode != "forward"):
                ys = solve(field, y0, times[save], **kw)
            if mode != "forward":
                ys.sum().backward()
            return ys, y0

        seconds, (ys, y0) = best_of(call, opts.repeats_forward if mode == "forward" else opts.repeats_gradient,
                                    opts.budget_s)
        results["runs"][key] = {"seconds": seconds, "nfe": calls[0]}
        arrays[f"{key}/solution"] = (ys[-1] if save == "final" else ys).detach().numpy()
        if mode != "forward":
            grads = {"W1": lin1.weight.grad.T, "b1": lin1.bias.grad, "W2": lin2.weight.grad.T,
                     "b2": lin2.bias.grad, "x0": y0.grad}
            arrays.update({f"{key}/grad/{k}": g.detach().numpy() for k, g in grads.items()})
    return results, arrays


def mlp_adaptive(np, torch, torchdiffeq, opts) -> tuple[dict, dict]:
    """The MLP Neural ODE f(t, x) = tanh(x W1 + b1) W2 + b2 on [0, t1], dopri5 at rtol / atol, loss =
    mean(x(t1)^2), backward to (W1, b1, W2, b2, x0): torchdiffeq odeint (backprop through the solver),
    odeint_adjoint, and torchode (AutoDiffAdjoint: backprop through its solver loop; IntegralController; each
    batch row takes its own steps).
    runs: "torchdiffeq/backprop", "torchdiffeq/adjoint", "torchode/backprop"; field calls counted per call."""
    (leaves, mlp), calls = mlp_problem(torch, np.load(opts.problem)), [0]

    def field(t, x):
        calls[0] += 1
        return mlp(t, x)

    def torchdiffeq_solve(adjoint):
        solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        extra = {"adjoint_params": tuple(leaves[k] for k in NAMES)} if adjoint else {}
        ts = torch.tensor([0.0, opts.t1])
        return lambda x0: solve(field, x0, ts, rtol=opts.rtol, atol=opts.atol, method="dopri5", **extra)[-1]

    def torchode_solve():
        import torchode

        term = torchode.ODETerm(field)
        solver = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term),
                                          torchode.IntegralController(atol=opts.atol, rtol=opts.rtol, term=term))

        def solve(x0):
            n = x0.shape[0]
            problem = torchode.InitialValueProblem(y0=x0, t_start=torch.zeros(n), t_end=torch.full((n,), opts.t1))
            return solver.solve(problem).ys[:, -1]

        return solve

    results, arrays = {"runs": {}}, {}
    for key in opts.runs:
        lib, mode = key.split("/")
        try:
            solve = torchode_solve() if lib == "torchode" else torchdiffeq_solve(mode == "adjoint")
        except ImportError as exc:
            results["runs"][key] = {"missing": str(exc)}
            continue

        def call():
            calls[0] = 0
            for v in leaves.values():
                v.grad = None
            loss = torch.mean(solve(leaves["x0"]) ** 2)
            loss.backward()
            return loss

        seconds, loss = best_of(call, opts.repeats, opts.budget_s)
        results["runs"][key] = {"seconds": seconds, "calls": calls[0], "loss": float(loss.detach())}
        arrays.update({f"{key}/grad/{k}": v.grad.numpy() for k, v in leaves.items()})
    try:
        import torchode

        results["torchode"] = torchode.__version__ if hasattr(torchode, "__version__") else "installed"
    except ImportError:
        results["torchode"] = None
    return results, arrays


def chen_model(torch, torchdiffeq, spec):
    """Stem conv3 VALID -> GN-ReLU-conv4/2 -> GN-ReLU-conv4/2; fields GN-ReLU-conv3-GN-ReLU-conv3-GN (the
    ODE-Net's convolutions take t as the LAST input channel); head GN-ReLU-pool-Linear. GroupNorm:
    gcd(channels, groups) groups, eps 1e-6 (Flax's)."""
    nn, nd, w, depth = torch.nn, spec["ndim"], spec["width"], spec["depth"]
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[nd]
    norm = lambda c: nn.GroupNorm(math.gcd(c, spec["groups"]), c, eps=1e-6)
    timed = spec["net"] == "odenet"

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.conv1 = norm(w), conv(w + timed, w, 3, padding=1)
            self.norm2, self.conv2, self.norm3 = norm(w), conv(w + timed, w, 3, padding=1), norm(w)

        def forward(self, t, x):
            cat = (lambda x: torch.cat([x, torch.ones_like(x[:, :1]) * t], 1)) if timed else (lambda x: x)
            x = self.conv1(cat(torch.relu(self.norm1(x))))
            return self.norm3(self.conv2(cat(torch.relu(self.norm2(x)))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.ModuleDict(dict(conv0=conv(spec["in_channels"], w, 3), norm1=norm(w),
                                           conv1=conv(w, w, 4, 2, 1), norm2=norm(w), conv2=conv(w, w, 4, 2, 1)))
            self.fields = nn.ModuleList([Field() for _ in range(1 if timed else depth)])
            self.head_norm, self.head_linear = norm(w), nn.Linear(w, spec["num_classes"])
            self.register_buffer("grid", torch.linspace(0.0, spec["t1"], depth + 1), persistent=False)

        def forward(self, x):
            s = self.stem
            x = s.conv2(torch.relu(s.norm2(s.conv1(torch.relu(s.norm1(s.conv0(x)))))))
            if timed:
                x = torchdiffeq.odeint(self.fields[0], x, self.grid[[0, -1]], method="euler",
                                       options={"grid_constructor": lambda f, y0, t: self.grid})[-1]
            for k, f in enumerate([] if timed else self.fields):
                x = x + f(float(k), x)
            return self.head_linear(torch.relu(self.head_norm(x)).mean(dim=tuple(range(2, 2 + nd))))

    return Net()


def load_params(np, torch, model, arrays, spec) -> None:
    """odenets arrays ("stem/conv0/kernel", "stages/0/field/norm1/scale", "head/linear/bias"; channels-last,
    per-step stacks leading) into the torch parameters; every one filled exactly once."""
    params, filled = dict(model.named_parameters()), set()
    for key, array in arrays.items():
        parts = key.removeprefix("param/").split("/")
        leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[parts[-1]]
        if parts[0] != "stages":
            targets = [(f"{parts[0]}.{parts[1]}.{leaf}" if parts[0] == "stem" else f"head_{parts[1]}.{leaf}",
                        array)]
        elif spec["net"] == "resnet":
            targets = [(f"fields.{k}.{parts[-2]}.{leaf}", array[k]) for k in range(spec["depth"])]
        else:
            targets = [(f"fields.0.{parts[-2]}.{leaf}", array)]
        for name, value in targets:
            if parts[-1] == "kernel":  # (k.., cin, cout) -> (cout, cin, k..)
                value = np.transpose(value, (value.ndim - 1, value.ndim - 2, *range(value.ndim - 2)))
            p = params.get(name)
            if p is None or tuple(p.shape) != value.shape or name in filled:
                raise SystemExit(f"odenets array {key} {array.shape} does not map onto torch parameter {name}")
            with torch.no_grad():
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            filled.add(name)
    if set(params) - filled:
        raise SystemExit(f"torch parameters not filled from odenets: {sorted(set(params) - filled)}")


def throughput(np, torch, torchdiffeq, opts) -> tuple[dict, dict]:
    spec = opts.spec
    with np.load(opts.problem) as data:
        arrays = {k: data[k] for k in data.files if k.startswith("param/")}
        x = torch.from_numpy(np.moveaxis(data["x"], -1, 1).copy())  # channels-last -> channels-first
        y = torch.from_numpy(data["y"].astype(np.int64))
    model = chen_model(torch, torchdiffeq, spec)
    count = sum(p.numel() for p in model.parameters())
    if count != spec["param_count"]:
        raise SystemExit(f"parameter count {count} != odenets' {spec['param_count']}: not the same architecture")
    load_params(np, torch, model, arrays, spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    losses, norms, times = [], [], []
    for _ in range(opts.steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip_norm"])))
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    return {"seconds": min(times[2:]), "losses": losses, "grad_norms": norms}, {}


def main(task: str, threads: str, opts: str) -> int:
    threads, opts = int(threads), json.loads(opts)
    try:
        import numpy as np
        import torch
        import torchdiffeq
    except ImportError as exc:
        print(f"not installed: {exc}")
        return TORCH_MISSING
    torch.set_num_threads(threads)
    results, arrays = {"fixed": fixed, "adaptive": adaptive, "throughput": throughput,
                       "mlp_adaptive": mlp_adaptive}[task](
        np, torch, torchdiffeq, types.SimpleNamespace(**opts))
    if opts.get("out"):
        np.savez(opts["out"], **arrays)
    print(json.dumps({**results, "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
                      "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
