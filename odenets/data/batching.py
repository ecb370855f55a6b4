"""Mini-batch index streams that can be resumed exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from odenets.validate import is_int


def batches(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays into a dataset of `n` samples, one per mini-batch of one epoch.

    The order is `np.random.default_rng([seed, epoch]).permutation(n)`: a pure function of
    (seed, epoch), with no state carried between epochs, so a run resumed at epoch e sees
    exactly the batches it would have seen. With `drop_last` the final short batch is
    skipped (every batch then has the same shape, so a jitted step compiles once); without
    it every index appears exactly once per epoch.

    Arguments are checked when `batches` is called, not when the iterator is first used.
    """
    for field, value, low in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0), ("epoch", epoch, 0)):
        if not is_int(value) or value < low:
            raise ValueError(f"batches: {field} must be an int >= {low}, got {value!r}")
    if drop_last and batch_size > n:
        raise ValueError(
            f"batches: batch_size {batch_size} > n {n} with drop_last=True would give no batch; "
            f"choose batch_size in [1, {n}] or drop_last=False"
        )
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (order[start : start + batch_size] for start in range(0, stop, batch_size))
