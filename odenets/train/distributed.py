"""Multi-process data parallelism: joining the processes, placing the batch, one writer.

JAX runs one program per process (multi-controller): every process runs `fit` with the same
config, drives its own local devices, and the jitted train step over the mesh of all processes'
devices runs as one SPMD program whose collectives cross processes (gloo on CPU, NCCL on GPU).

odenets keeps the whole (small, in-memory) dataset in every process, and every process draws the
same global batch order from the seed. Each process places only the rows of the global batch
that its own devices hold (`global_batch`), so with P processes the loss and its gradient are

    L = (1/B) sum_{i<B} l(x_i) = sum_{p<P} (1/B) sum_{i in shard p} l(x_i),

the one-process quantities over the same batch, summed in another order: a P-process run equals
the one-process run up to floating-point rounding of that order, not to a different batch. Where
every example's solve is its own (`per_shard`) the gradient is taken per device and averaged once
a step (`value_and_grad`); otherwise XLA partitions the one program over the global batch.

Process 0 writes the run directory (config, metrics, figures, report); orbax's checkpointing is
collective (every process calls save and restore; the replicated state is written once), so a
multi-host run needs the run directory on a filesystem all hosts share.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from odenets._abstract import final
from odenets.train.config import TrainConfig

KEYS = ("coordinator_address", "num_processes", "process_id")  # train.* keys passed to JAX


def initialize(train: TrainConfig) -> None:
    """jax.distributed.initialize with the train.* keys that are set; the unset ones JAX detects
    (Slurm, Open MPI, Cloud TPU, or $JAX_COORDINATOR_ADDRESS). Call before any JAX computation.

    A second call in one process (a resume in the same interpreter) is a no-op when it asks for
    the same processes, and refused when it asks for others (JAX joins processes once)."""
    given = {k: getattr(train, k) for k in KEYS if getattr(train, k) is not None}
    if jax.distributed.is_initialized():
        have = {"num_processes": jax.process_count(), "process_id": jax.process_index()}
        clash = {k: v for k, v in given.items() if k in have and have[k] != v}
        if clash:
            raise ValueError(f"this process already joined {have['num_processes']} processes as process "
                             f"{have['process_id']}; it cannot join again with "
                             + ", ".join(f"train.{k}={v!r}" for k, v in clash.items()))
        return
    try:
        jax.distributed.initialize(**given)
    except (ValueError, TypeError) as err:  # nothing detected for the unset keys
        unset = [f"train.{k}" for k in KEYS if k not in given]
        raise ValueError(f"train.distributed=true: jax.distributed.initialize failed ({err}); outside a "
                         f"cluster JAX detects (Slurm, Open MPI, Cloud TPU) set {', '.join(unset)}") from None
    except RuntimeError as err:
        raise RuntimeError(f"train.distributed=true: {err} (odenets calls it first thing in setup; something "
                           f"in this process used JAX before)") from None


def run_local(argv: Callable[[int, int], list[str]], processes: int, *, timeout: float,
              cwd: str | Path | None = None) -> list[str]:
    """Run `processes` Python processes on this machine as the processes of one run, each with one CPU device:
    process p runs `python *argv(p, port)`, port a free localhost port for process 0's coordinator
    (train.coordinator_address=localhost:{port}). Waits for all (killing every one still running after
    `timeout` seconds) and returns their stdouts; RuntimeError naming the first that failed, with its output's
    end. For trying a multi-process run (and testing one) without a cluster."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen([sys.executable, *argv(p, port)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in range(processes)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode:
            raise RuntimeError(f"process {rank} of {processes} failed (exit {p.returncode}):\n"
                               f"{out[-2000:]}{err[-4000:]}")
    return [out for out, _ in outs]


def is_primary() -> bool:
    """Whether this process writes the run directory (process 0; True without multi-process)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier across every process (a no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"odenets:{name}")


def global_batch(mesh: Mesh, *arrays: np.ndarray) -> list[jax.Array]:
    """Host arrays, the same in every process, as global arrays sharded along their first axis
    over the mesh's "data" axis: each process transfers only the rows its own devices hold."""
    sharding = NamedSharding(mesh, P("data"))
    if jax.process_count() == 1:
        return [jax.device_put(a, sharding) for a in arrays]
    return [jax.make_array_from_callback(a.shape, sharding, lambda index, a=a: a[index]) for a in arrays]


def replicate(mesh: Mesh, tree):
    """A pytree, the same in every process, replicated on every device of the mesh."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                                               lambda index, x=np.asarray(x): x[index]), tree)


@final
class NoLog:
    """The metrics log of a process that does not write the run directory: accepts records, keeps none."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def per_shard(mesh: Mesh, integrator) -> bool:
    """Whether a train step may take the gradient shard by shard and average it once (`value_and_grad`):
    with more than one device, and a solve that treats every example on its own (no integrator, or a
    fixed-step one whose work does not depend on the state). An adaptive solve's steps follow an error
    norm over the whole batch, and an implicit step's Newton iterations a residual over it: a shard's
    solve would take other steps than the batch's, so those stay one program over the global batch."""
    if mesh.devices.size == 1:
        return False
    return integrator is None or not (integrator.adaptive or integrator.dynamic_nfe)


def value_and_grad(loss_fn, graphdef, params, rest, x, y, mesh: Mesh | None = None, wrt=None):
    """((loss, out), grads, rest) of `loss_fn(model, x, y) -> (mean loss over the batch, out)` at the
    model (graphdef, params, rest): gradients w.r.t. params, rest as the forward pass left it.
    wrt: an nnx filter of what is differentiated (None: nnx.Param; the train step adds the ODE
    blocks' BackwardProbes, whose gradients are backward evaluation counts).

    mesh None: one program over the global batch, partitioned by XLA. A shared field's parameter
    cotangent is then summed over the devices inside every backward solver step (an all-reduce per
    step: across processes, a round trip per step). With a mesh: each device takes the gradient of
    its shard's mean loss (shard_map) and the means are averaged once,

        grad (1/B) sum_i l_i = (1/D) sum_{d<D} grad (D/B) sum_{i in shard d} l_i,

    exact for D equal shards, one all-reduce per step. Only for per-example models (`per_shard`);
    `rest` is then the first shard's (the same on every shard for such solves)."""
    from flax import nnx

    def local(params, rest, x, y):
        model = nnx.merge(graphdef, params, rest)
        diff = nnx.DiffState(0, nnx.Param if wrt is None else wrt)
        (loss, out), grads = nnx.value_and_grad(loss_fn, argnums=diff, has_aux=True)(model, x, y)
        return (loss, out), grads, nnx.split(model, nnx.Param, ...)[2]

    if mesh is None:
        return local(params, rest, x, y)

    def shard(params, rest, x, y):
        (loss, out), grads, rest = local(params, rest, x, y)
        return (jax.lax.pmean(loss, "data"), out), jax.lax.pmean(grads, "data"), rest

    data, same = P("data"), P()
    return jax.shard_map(shard, mesh=mesh, in_specs=(same, same, data, data), out_specs=((same, data), same, same),
                         check_vma=False)(params, rest, x, y)
