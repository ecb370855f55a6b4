"""Forced-host-device worker of throughput.py: its MNIST-1D-sized train steps on this process' devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu \\
        python devices_worker.py --data D.npz --steps K --nets odenet,resnet [--quick]

The device count is fixed when JAX starts, hence a process per count. For each model, the
same config, initial parameters and batch as throughput.py's (throughput.make_cfg) and K calls
of odenets' train step with the batch sharded over the N devices (throughput.train_steps).
Prints one JSON line: {net: {"devices", "seconds", "losses", ...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="the npz batch throughput.py wrote")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--nets", default=",".join(throughput.NETS))
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args(argv)
    mode = throughput.QUICK if opts.quick else throughput.FULL
    nets = {net: throughput.train_steps(throughput.make_cfg(net, "mnist1d", opts.data, mode), opts.steps)[1]
            for net in opts.nets.split(",")}
    print(json.dumps(nets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
