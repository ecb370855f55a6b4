"""Checkpoints of the training state with orbax, restorable into a freshly built state.

The state (parameters, optimiser state, other model state) is saved as its flat list of
leaves plus a small JSON of counters; restoring unflattens into the tree structure of a
freshly initialised state, so optax and NNX containers round-trip whatever their types.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
        self.directory = Path(directory).absolute()
        # synchronous saves: every save is waited for before the next step anyway, and orbax's asynchronous
        # path runs its own event loops on background threads, whose teardown crashed a training process
        # (a fatal signal during an in-process fit, an asyncio traceback at exit after a Ctrl-C)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        leaves = {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)),
        )
        self._manager.wait_until_finished()

    def restore(self, step: int, like):
        """(state with the structure of `like`, meta) saved at `step`."""
        leaves, tree = jax.tree.flatten(like)
        target = {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        out: Any = self._manager.restore(  # a Composite: its items as attributes
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
        )
        restored = [out.state[f"{i:06d}"] for i in range(len(leaves))]
        state = tree.unflatten([np.asarray(r, dtype=np.asarray(x).dtype) for r, x in zip(restored, leaves)])
        return state, out.meta

    def restore_latest(self, like):
        """(state, meta) from the newest checkpoint that restores, or None when there is none.

        A checkpoint that fails to restore (truncated or corrupt files, e.g. a disk filled or a
        copy cut short) is reported with its path and the next older one is tried; orbax writes
        each checkpoint to a temporary directory and renames it when complete, so a kill during
        a write leaves no half-written checkpoint behind."""
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self.restore(step, like)
            except Exception as err:  # orbax/tensorstore/json raise many types for damaged files
                warnings.warn(f"checkpoint {self.directory / str(step)} is damaged and was skipped "
                              f"({type(err).__name__}: {str(err)[:200]}); trying the previous one", stacklevel=2)
        return None

    def close(self) -> None:
        self._manager.close()
