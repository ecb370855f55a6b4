"""MNIST-1D (Greydanus & Kobak 2024), generated offline and cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import tempfile
import warnings
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np

from odenets._abstract import final
from odenets.data.base import Builder, Dataset, data_dir, register
from odenets.validate import boolean, integer

CACHE_FORMAT = 1  # bump when the cached arrays change meaning
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_path() -> Path:
    """The cache file for the canonical arrays, under `data_dir()`.

    The name carries the generator arguments that matter (seed, sample count, length) and a
    digest of all of them plus the mnist1d version, so a change to any gives a new file.
    """
    from mnist1d.data import get_dataset_args  # deferred, as everywhere here: mnist1d is slow to import

    args: Any = get_dataset_args(as_dict=True)  # a dict with as_dict=True (annotated as an ObjectView)
    spec = {key: value for key, value in args.items() if key != "url"}
    spec["mnist1d_version"] = metadata.version("mnist1d")
    spec["format"] = CACHE_FORMAT
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    name = f"mnist1d_seed{args['seed']}_n{args['num_samples']}_len{args['final_seq_length']}_{digest}.npz"
    return data_dir() / name


def generate() -> dict[str, np.ndarray]:
    """`make_dataset(get_dataset_args())` as float32 / int32 arrays, x shaped (N, 40).

    make_dataset reseeds Python's and numpy's global generators; their states are restored
    afterwards so that loading data never changes anyone else's random stream.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": raw["x"].astype(np.float32),
        "y_train": raw["y"].astype(np.int32),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int32),
    }


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing or unreadable: regenerate


def _write(path: Path, arrays: dict[str, np.ndarray]):
    """Write atomically (temp file + rename), so a concurrent reader never sees half a file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            np.savez(f, **cast(dict[str, Any], arrays))
        tmp.replace(path)
    except OSError as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        warnings.warn(
            f"mnist1d: could not cache the dataset at {path} ({error}); it will be regenerated next time",
            stacklevel=3,
        )


def canonical_arrays() -> dict[str, np.ndarray]:
    """The canonical MNIST-1D arrays, read from the cache or generated (about 1.5 s) and cached."""
    path = cache_path()
    arrays = _read(path)
    if arrays is None:
        arrays = generate()
        _write(path, arrays)
    return arrays


@register("mnist1d")
@final
@dataclasses.dataclass(frozen=True)
class MNIST1D(Builder):
    """MNIST-1D: 4000 train / 1000 test signals of length 40, 10 classes; x is (N, 40, 1).

    The data are `mnist1d.data.make_dataset(get_dataset_args())`, generated locally (never
    downloaded) with the generator's own seed 42, which defines the canonical dataset.
    `load`'s `seed` does not change them: it is for shuffling and initialisation elsewhere.
    The generated arrays are cached as .npz under `data_dir()` ($ODENETS_DATA_DIR or
    ~/.cache/odenets).

    The raw values are already centred and scaled by one global mean and std over all 5000
    signals. `standardize=True` additionally standardises each of the 40 positions with the
    training set's per-position mean and std (applied to train and test alike).

    `length` resamples every signal to `length` samples by linear interpolation over the same
    span: sample j of the new signal sits at position j (40 - 1) / (length - 1) of the old one,
    x'_j = (1 - f) x_i + f x_{i+1} with i + f that position (None: the 40 samples as they are).
    It changes the input's resolution, not its content (the scaled input of EfficientNet-like
    compound scaling); standardisation, if asked, comes after it.
    """

    standardize: bool = False
    length: int | None = None

    def __post_init__(self):
        self._check(boolean, "standardize")
        if self.length is not None:
            self._check(integer, "length", 2)

    def build(self, seed: int) -> Dataset:
        a = canonical_arrays()
        x_train, x_test = a["x_train"], a["x_test"]
        if self.length is not None:
            x_train, x_test = resample(x_train, self.length), resample(x_test, self.length)
        if self.standardize:
            mean, std = x_train.mean(axis=0), x_train.std(axis=0)
            x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        return Dataset(
            self.name,
            x_train[..., None],
            a["y_train"],
            x_test[..., None],
            a["y_test"],
            task="classification",
            num_classes=10,
        )


def resample(x: np.ndarray, length: int) -> np.ndarray:
    """Signals (N, L) resampled to (N, length) by linear interpolation: sample j at old position
    j (L - 1) / (length - 1) (both ends kept)."""
    old = x.shape[-1]
    where = np.arange(length) * (old - 1) / (length - 1)
    i = np.minimum(np.floor(where).astype(int), old - 2)
    f = (where - i).astype(x.dtype)
    return (1 - f) * x[..., i] + f * x[..., i + 1]
