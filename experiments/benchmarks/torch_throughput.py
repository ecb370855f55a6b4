"""PyTorch + torchdiffeq peer of throughput.py: Chen et al.'s ODE-Net / ResNet, one AdamW train step.

    python torch_throughput.py --problem P.npz --spec JSON --steps N --threads T

Standalone (imports no JAX, no odenets). P.npz holds the odenets model's initial parameters
(arrays "param/<path>", odenets layouts: channels-last kernels, per-step stacks with a
leading axis), the batch x (channels-last) and labels y. JSON gives the architecture and the
optimiser: {"net": "odenet"|"resnet", "ndim", "width", "depth", "groups", "t1", "in_channels",
"num_classes", "param_count", "lr", "weight_decay", "clip_norm"}.

The model is built layer for layer like odenets' (channels-first here):
    stem   conv3 VALID -> GN-ReLU-conv4 stride 2 pad 1 -> GN-ReLU-conv4 stride 2 pad 1
    field  GN-ReLU-conv3-GN-ReLU-conv3-GN (pad 1, biases); for the ODE-Net each conv is a
           ConcatConv: t appended as the LAST input channel, as odenets' concat_time does
    body   ODE-Net: ONE shared field, torchdiffeq.odeint(method="euler") on the fixed grid
           linspace(0, t1, depth + 1), backprop through the solver (no adjoint);
           ResNet: `depth` discrete blocks x <- x + F_k(x)
    head   GN-ReLU-global average pool-Linear
GroupNorm: gcd(channels, groups) groups, eps 1e-6 (Flax's default). The parameter count must
equal --spec's param_count, and every odenets array must fill exactly one torch parameter of
the same shape: otherwise exit status 1.

A train step is: zero grads, forward, mean softmax cross-entropy, backward,
clip_grad_norm_(clip_norm), torch.optim.AdamW(lr, weight_decay).step(). N steps are run on
the same batch from the odenets parameters; the first 2 are warm-ups, the time is the minimum
over the others. Prints one JSON line: the losses and gradient norms of all N steps, the
minimum step time, the parameter count, versions and thread settings. Exit status 3 with
"not installed" when torch or torchdiffeq cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from torch_common import TORCH_MISSING, import_torch, versions  # noqa: E402

WARMUP = 2


def build(torch, torchdiffeq, spec):
    """The torch model of `spec` (a torch.nn.Module taking channels-first input)."""
    nn = torch.nn
    ndim, width, groups = spec["ndim"], spec["width"], spec["groups"]
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d}[ndim]

    def norm(channels):
        return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)

    class Stem(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.conv0 = conv_cls(cin, width, 3, padding=0)
            self.norm1, self.conv1 = norm(width), conv_cls(width, width, 4, stride=2, padding=1)
            self.norm2, self.conv2 = norm(width), conv_cls(width, width, 4, stride=2, padding=1)

        def forward(self, x):
            x = self.conv0(x)
            x = self.conv1(torch.relu(self.norm1(x)))
            return self.conv2(torch.relu(self.norm2(x)))

    class Field(nn.Module):
        def __init__(self, time_channel):
            super().__init__()
            self.time_channel = time_channel
            cin = width + int(time_channel)
            self.norm1, self.conv1 = norm(width), conv_cls(cin, width, 3, padding=1)
            self.norm2, self.conv2 = norm(width), conv_cls(cin, width, 3, padding=1)
            self.norm3 = norm(width)

        def _conv(self, conv, t, x):
            if self.time_channel:
                tt = torch.ones_like(x[:, :1]) * t
                x = torch.cat([x, tt], dim=1)
            return conv(x)

        def forward(self, t, x):
            out = self._conv(self.conv1, t, torch.relu(self.norm1(x)))
            out = self._conv(self.conv2, t, torch.relu(self.norm2(out)))
            return self.norm3(out)

    class ODEBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.field = Field(time_channel=True)
            self.register_buffer("ts", torch.tensor([0.0, spec["t1"]]), persistent=False)
            self.register_buffer("grid", torch.linspace(0.0, spec["t1"], spec["depth"] + 1), persistent=False)

        def forward(self, x):
            opts = {"grid_constructor": lambda func, y0, t: self.grid}
            return torchdiffeq.odeint(self.field, x, self.ts, method="euler", options=opts)[-1]

    class ResBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.fields = nn.ModuleList([Field(time_channel=False) for _ in range(spec["depth"])])

        def forward(self, x):
            for k, f in enumerate(self.fields):
                x = x + f(float(k), x)
            return x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Stem(spec["in_channels"])
            self.body = ODEBlock() if spec["net"] == "odenet" else ResBlocks()
            self.head_norm, self.head_linear = norm(width), nn.Linear(width, spec["num_classes"])

        def forward(self, x):
            x = self.body(self.stem(x))
            x = torch.relu(self.head_norm(x)).mean(dim=tuple(range(2, 2 + ndim)))
            return self.head_linear(x)

    return Net()


def torch_names(name: str, depth: int) -> list[tuple[str, int | None]]:
    """The torch parameter(s) an odenets array fills: [(torch name, per-step index or None)].

    odenets names are "stem/conv0/kernel", "stages/0/field/norm1/scale", "head/linear/bias"...
    """
    parts = name.split("/")
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[parts[-1]]
    if parts[0] == "stem":
        return [(f"stem.{parts[1]}.{leaf}", None)]
    if parts[0] == "head":
        return [(f"head_{parts[1]}.{leaf}", None)]
    layer = parts[-2]  # stages/0/field/<layer>/<leaf>
    if depth:
        return [(f"body.fields.{k}.{layer}.{leaf}", k) for k in range(depth)]
    return [(f"body.field.{layer}.{leaf}", None)]


def to_torch_layout(np, array, leaf: str):
    """A channels-last odenets array in torch's layout: conv kernels (k.., cin, cout) ->
    (cout, cin, k..), linear kernels (in, out) -> (out, in), the rest unchanged."""
    if leaf == "kernel":
        return np.transpose(array, (array.ndim - 1, array.ndim - 2, *range(array.ndim - 2)))
    return array


def load_params(torch, np, model, arrays, spec) -> None:
    """Copy the odenets arrays into the model; every torch parameter is filled exactly once."""
    params = dict(model.named_parameters())
    filled = set()
    depth = spec["depth"] if spec["net"] == "resnet" else 0
    for key, array in arrays.items():
        name = key.removeprefix("param/")
        for tname, k in torch_names(name, depth):
            value = to_torch_layout(np, array if k is None else array[k], name.split("/")[-1])
            p = params.get(tname)
            if p is None or tuple(p.shape) != value.shape or tname in filled:
                raise SystemExit(f"odenets array {name} {array.shape} does not map onto torch parameter "
                                 f"{tname} {None if p is None else tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            filled.add(tname)
    missing = sorted(set(params) - filled)
    if missing:
        raise SystemExit(f"torch parameters not filled from odenets: {missing}")


def conv_seconds(torch, c: dict, repeats: int) -> float:
    """Forward + backward of one convolution (channels-first, bias, random cotangent); 2 warm-ups,
    then the minimum of `repeats`."""
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[c["ndim"]]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(c["batch"], c["cin"], *(c["size"],) * c["ndim"], generator=gen,
                    requires_grad=c["input_grad"])
    w = torch.randn(c["cout"], c["cin"], *(c["k"],) * c["ndim"], generator=gen, requires_grad=True)
    b = torch.zeros(c["cout"], requires_grad=True)
    g = torch.randn(conv(x, w, b, stride=c["stride"], padding=c["pad"]).shape, generator=gen)

    def call():
        for v in (x, w, b):
            v.grad = None
        conv(x, w, b, stride=c["stride"], padding=c["pad"]).backward(g)

    best = float("inf")
    for i in range(WARMUP + repeats):
        start = time.perf_counter()
        call()
        if i >= WARMUP:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--steps", type=int, required=True, help="train steps, the first 2 are warm-ups")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--convs", default="[]", help="JSON list of convolutions to time alone")
    parser.add_argument("--conv-repeats", type=int, default=10)
    opts = parser.parse_args(argv)
    modules = import_torch()
    if modules is None:
        return TORCH_MISSING
    np, torch, torchdiffeq = modules

    torch.set_num_threads(opts.threads)
    spec = json.loads(opts.spec)
    with np.load(opts.problem) as data:
        arrays = {k: data[k] for k in data.files if k.startswith("param/")}
        x = torch.from_numpy(np.moveaxis(data["x"], -1, 1).copy())  # channels-last -> channels-first
        y = torch.from_numpy(data["y"].astype(np.int64))
    model = build(torch, torchdiffeq, spec)
    count = sum(p.numel() for p in model.parameters())
    if count != spec["param_count"]:
        print(f"parameter count {count} != odenets' {spec['param_count']}: not the same architecture",
              file=sys.stderr)
        return 1
    load_params(torch, np, model, arrays, spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip_norm"])
        opt.step()
        return loss, norm

    losses, norms, times = [], [], []
    for _ in range(opts.steps):
        start = time.perf_counter()
        loss, norm = step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        norms.append(float(norm))
    convs = [conv_seconds(torch, c, opts.conv_repeats) for c in json.loads(opts.convs)]
    print(json.dumps({**versions(torch, torchdiffeq), "param_count": count, "seconds": min(times[WARMUP:]),
                      "losses": losses, "grad_norms": norms, "conv_seconds": convs,
                      "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
