"""torchdiffeq peer of experiments/benchmarks/adaptive.py (standalone: imports no JAX, no odenets).

    python torch_adaptive.py --problem P.npz --t1 T --rtol R --atol A --runs final/forward,dense/backprop,...
        --repeats-forward N --repeats-gradient M --budget-s B --threads K --out O.npz

The vector field of diffrax's benchmarks/small_neural_ode.py: torch.jit.script(Sequential(
Linear(4, 32), Softplus(), Linear(32, 4), Tanh())), its weights loaded from P.npz (W1, b1, W2, b2
in the layout x @ W1 + b1 of the JAX side, float32) with the initial state x0, solved by
torchdiffeq's dopri5 (rtol, atol) from 0 to T. Loss = sum of the saved states: "final" saves
[x0, x(T)], "dense" saves 100 evenly spaced times in [0, T] (both as in that benchmark). A run is
SAVE/MODE, with the modes:

    forward   odeint under torch.no_grad()
    backprop  odeint, then loss.backward() through the solver's operations (plain autograd)
    adjoint   odeint_adjoint, then loss.backward() (a second, backward-in-time dopri5 solve)

Gradients are taken with respect to the weights and x0. NFE = calls of the vector field during
one call, counted in the field (in backprop mode the backward pass calls it no more; in adjoint
mode the count includes the backward solve's calls). Timing: 2 warm-up calls, then the minimum
of the repeats (fewer, at least one, once they have taken B seconds). torch.set_num_threads(K);
the caller sets OMP_NUM_THREADS=K in the environment.

Exit status 3 with "not installed" on stdout when torch or torchdiffeq cannot be imported.
Writes the solutions, losses and gradients to O.npz and prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from torch_common import TORCH_MISSING, import_torch, versions  # noqa: E402

DENSE_TIMES = 100


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", required=True)
    parser.add_argument("--t1", type=float, required=True)
    parser.add_argument("--rtol", type=float, required=True)
    parser.add_argument("--atol", type=float, required=True)
    parser.add_argument("--runs", default="final/forward,final/backprop", help="comma-separated SAVE/MODE")
    parser.add_argument("--repeats-forward", type=int, default=5)
    parser.add_argument("--repeats-gradient", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=5.0, help="stop repeating after this long")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def build_field(torch, data):
    """The benchmark's scripted MLP with the given weights, wrapped in a call counter."""

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            mlp = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Softplus(), torch.nn.Linear(32, 4),
                                      torch.nn.Tanh())
            with torch.no_grad():
                mlp[0].weight.copy_(torch.tensor(data["W1"].T))
                mlp[0].bias.copy_(torch.tensor(data["b1"]))
                mlp[2].weight.copy_(torch.tensor(data["W2"].T))
                mlp[2].bias.copy_(torch.tensor(data["b2"]))
            self.func = torch.jit.script(mlp)
            self.calls = 0

        def forward(self, t, y):
            self.calls += 1
            return self.func(y)

    return Field()


def make_call(torch, torchdiffeq, field, x0, ts, mode, rtol, atol):
    """One solve (+ backward): returns (saved states, loss, gradients in the JAX layout or None)."""
    solve = torchdiffeq.odeint_adjoint if mode == "adjoint" else torchdiffeq.odeint
    lin1, lin2 = field.func[0], field.func[2]

    def call():
        field.calls = 0
        if mode == "forward":
            with torch.no_grad():
                ys = solve(field, x0, ts, rtol=rtol, atol=atol, method="dopri5")
            return ys, ys.sum(), None
        y0 = x0.detach().requires_grad_()
        field.zero_grad(set_to_none=True)
        ys = solve(field, y0, ts, rtol=rtol, atol=atol, method="dopri5")
        loss = ys.sum()
        loss.backward()
        grads = {"W1": lin1.weight.grad.T, "b1": lin1.bias.grad, "W2": lin2.weight.grad.T,
                 "b2": lin2.bias.grad, "x0": y0.grad}
        return ys, loss, grads

    return call


def best_of(call, repeats, budget_s):
    """2 warm-up calls, then the minimum of `repeats` calls (fewer, at least 1, past budget_s)."""
    for _ in range(2):
        out = call()
    best, spent, done = float("inf"), 0.0, 0
    while done < repeats and (done == 0 or spent < budget_s):
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
        best, spent, done = min(best, seconds), spent + seconds, done + 1
    return best, out, done


def main(argv=None):
    opts = parse(argv)
    modules = import_torch()
    if modules is None:
        return TORCH_MISSING
    np, torch, torchdiffeq = modules

    torch.set_num_threads(opts.threads)
    data = np.load(opts.problem)
    field = build_field(torch, data)
    x0 = torch.tensor(data["x0"], dtype=torch.float32)
    times = {"final": torch.tensor([0.0, opts.t1]), "dense": torch.linspace(0.0, opts.t1, DENSE_TIMES)}
    results = {**versions(torch, torchdiffeq), "runs": {}}
    arrays = {}
    for key in opts.runs.split(","):
        save, mode = key.split("/")
        call = make_call(torch, torchdiffeq, field, x0, times[save], mode, opts.rtol, opts.atol)
        repeats = opts.repeats_forward if mode == "forward" else opts.repeats_gradient
        seconds, (ys, loss, grads), done = best_of(call, repeats, opts.budget_s)
        loss = float(loss.detach())
        results["runs"][key] = {"seconds": seconds, "repeats": done, "nfe": field.calls, "loss": loss}
        arrays[f"{key}/loss"] = np.asarray(loss, np.float32)
        arrays[f"{key}/solution"] = (ys[-1] if save == "final" else ys).detach().numpy()
        for name, g in (grads or {}).items():
            arrays[f"{key}/grad/{name}"] = g.detach().numpy()
    np.savez(opts.out, **arrays)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
