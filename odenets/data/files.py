"""User data from local files: an .npz of arrays, or a directory of MNIST-format IDX files.

Nothing is ever downloaded: a missing file is a FileNotFoundError that says where it looked
and what it expected to find. `load`'s seed does not change the data.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from odenets._abstract import final
from odenets.data.base import TASKS, Builder, Dataset, register
from odenets.validate import choice, integer

NPZ_FORMAT = "an .npz with arrays x_train, y_train, x_test, y_test"


def _path_option(builder: NPZ | IDX, what: str):
    if builder.path is None:
        raise ValueError(f"dataset {builder.name!r} needs the option path: {what}")
    builder._require("path", lambda v: isinstance(v, str | os.PathLike), f"a path to {what}")


ZIP_MAGIC, NPY_MAGIC = b"PK", b"\x93NUMPY"


def read_npz(path: Path, keys: dict[str, str]) -> dict[str, np.ndarray]:
    """{field: array} for each `keys[field]` of the .npz at `path`; a file that is not an .npz (text,
    a single .npy array), a corrupt or truncated archive, or a missing key raises an error naming
    the path. Pickled object arrays are refused (allow_pickle=False)."""
    with path.open("rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head.startswith(NPY_MAGIC):
        raise ValueError(f"dataset 'npz': {path} holds a single array (.npy), expected {NPZ_FORMAT}")
    if not head.startswith(ZIP_MAGIC):
        raise ValueError(
            f"dataset 'npz': {path} is not an .npz file (it starts with {head!r}, not a zip archive's 'PK'); "
            f"expected {NPZ_FORMAT}, as numpy.savez writes it"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys.values() if key not in archive.files]
            if missing:
                raise KeyError(
                    f"dataset 'npz': {path} has no array {missing[0]!r}; keys found: {', '.join(archive.files)} "
                    f"(options x_train_key, y_train_key, x_test_key, y_test_key, ts_key rename them)"
                )
            arrays = {field: archive[key] for field, key in keys.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        damaged = isinstance(error, OSError | EOFError | zipfile.BadZipFile | zlib.error)
        what = "the archive is corrupt or truncated" if damaged else "its contents are not plain arrays"
        raise ValueError(
            f"dataset 'npz': cannot read {path}: {what} ({type(error).__name__}: {error}); expected {NPZ_FORMAT}"
        ) from None
    for field, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise ValueError(f"dataset 'npz': cannot read {path}: member {keys[field]!r} is not a .npy array")
    return arrays


@register("npz")
@final
@dataclasses.dataclass(frozen=True)
class NPZ(Builder):
    """Arrays from a local .npz file (`np.savez(path, x_train=..., y_train=..., ...)`).

    The `*_key` options name the arrays when the file uses other names. For classification
    num_classes defaults to the largest label + 1; for task="trajectory" the file must also
    hold the observation times (`ts_key`). 1-D x arrays are read as (N, 1). Pickled object
    arrays are refused (np.load with allow_pickle=False).
    """

    path: str | None = None
    task: str = "classification"  # pyright: ignore[reportIncompatibleVariableOverride] (Builder's class attribute made an option)
    num_classes: int | None = None
    x_train_key: str = "x_train"
    y_train_key: str = "y_train"
    x_test_key: str = "x_test"
    y_test_key: str = "y_test"
    ts_key: str = "ts"

    def __post_init__(self):
        _path_option(self, NPZ_FORMAT)
        self._check(choice, "task", TASKS)
        if self.num_classes is not None:
            self._check(integer, "num_classes", 1)
            if self.task != "classification":
                raise ValueError(
                    f"dataset 'npz': num_classes is for task='classification', got task={self.task!r}"
                )
        for field in ("x_train_key", "y_train_key", "x_test_key", "y_test_key", "ts_key"):
            self._require(field, lambda v: isinstance(v, str) and v != "", "a non-empty string")

    def build(self, seed: int) -> Dataset:
        assert self.path is not None  # refused at construction
        path = Path(self.path).expanduser()
        keys = {
            "x_train": self.x_train_key,
            "y_train": self.y_train_key,
            "x_test": self.x_test_key,
            "y_test": self.y_test_key,
        }
        if self.task == "trajectory":
            keys["ts"] = self.ts_key
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset 'npz': no file at {path}; expected an .npz with arrays {', '.join(keys.values())}"
            )
        arrays = read_npz(path, keys)
        for field in ("x_train", "x_test"):
            if arrays[field].ndim == 1:
                arrays[field] = arrays[field][:, None]
        if self.task == "trajectory":
            check_trajectory_arrays(path, arrays, {**keys, "ts": self.ts_key})
        num_classes = self.num_classes
        if self.task == "classification" and num_classes is None:
            top = max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))
            num_classes = int(top) + 1 if np.isfinite(top) else None  # Dataset names the bad label
        return Dataset(self.name, **arrays, task=self.task, num_classes=num_classes)


def check_trajectory_arrays(path: Path, arrays: dict[str, np.ndarray], keys: dict[str, str]) -> None:
    """An .npz's observation times t (T,) strictly increasing, and each split's x (N, D) and y (N, T, D)
    matching them; the error names the file, the arrays' shapes and what is expected."""
    ts = arrays["ts"]
    t_name = keys["ts"]
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"dataset 'npz': {path}: the observation times {t_name!r} must be a 1-D array of T >= 2 "
                         f"times, got shape {ts.shape}")
    if np.issubdtype(ts.dtype, np.number):
        bad = np.flatnonzero(~(np.diff(ts.astype(np.float64)) > 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"dataset 'npz': {path}: the observation times {t_name!r} (shape {ts.shape}) must be strictly "
                f"increasing, but {t_name}[{i + 1}] = {ts[i + 1]:g} follows {t_name}[{i}] = {ts[i]:g}; sort the "
                f"times (and the states with them) and drop repeated times")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x_name, y_name = keys[f"x_{split}"], keys[f"y_{split}"]
        if y.ndim != 3 or y.shape[1] != len(ts) or x.shape != (y.shape[0], y.shape[2]):
            raise ValueError(
                f"dataset 'npz': {path}: {len(ts)} observation times {t_name!r} {ts.shape}, so {y_name!r} must "
                f"have shape (N, T, D) with T = {len(ts)} and {x_name!r} shape (N, D) (the states at "
                f"{t_name}[0]); got {x_name!r} {x.shape} and {y_name!r} {y.shape}")


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (plain or .gz) as a native-endian numpy array.

    The format (LeCun's MNIST page): a magic number of two zero bytes, a type byte (0x08
    unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and
    the number of dimensions; then each dimension as a big-endian uint32; then the data,
    big-endian, in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        name = type(error).__name__
        raise ValueError(f"{path}: cannot read it as a gzipped IDX file ({name}: {error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(
            f"{path} is not an IDX file: magic number {raw[:4].hex()!r}, expected 0000 then a type byte "
            f"({', '.join(f'{t:02x}' for t in IDX_TYPES)}) and the number of dimensions"
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[raw[2]])
    size = math.prod(shape) * dtype.itemsize
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: the header says shape {shape} of {dtype.str} ({size} bytes) "
            f"but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@register("idx")
@final
@dataclasses.dataclass(frozen=True)
class IDX(Builder):
    """MNIST-format data from a local directory: the four IDX files of MNIST, Fashion-MNIST, KMNIST.

    `path` holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
    and t10k-labels-idx1-ubyte, each optionally gzipped (name + ".gz"). Images must be
    unsigned bytes; x is (N, H, W, 1) float32 in [0, 1] (bytes / 255). num_classes defaults
    to the largest label + 1.
    """

    path: str | None = None
    num_classes: int | None = None

    def __post_init__(self):
        _path_option(self, "a directory of MNIST-format IDX files")
        if self.num_classes is not None:
            self._check(integer, "num_classes", 1)

    def build(self, seed: int) -> Dataset:
        assert self.path is not None  # refused at construction
        root = Path(self.path).expanduser()
        expected = f"expected the files {', '.join(IDX_FILES.values())} (each optionally .gz)"
        if not root.is_dir():
            raise FileNotFoundError(f"dataset 'idx': no directory {root}; {expected}")
        arrays = {}
        for field, name in IDX_FILES.items():
            found = [p for p in (root / name, root / f"{name}.gz") if p.is_file()]
            if not found:
                raise FileNotFoundError(f"dataset 'idx': {root} has no {name} (nor {name}.gz); {expected}")
            arrays[field] = read_idx(found[0])
        for field in ("x_train", "x_test"):
            x = arrays[field]
            if x.dtype != np.uint8 or x.ndim != 3:
                raise ValueError(
                    f"dataset 'idx': {IDX_FILES[field]} must hold unsigned-byte images (N, H, W), "
                    f"got {x.dtype} {x.shape}"
                )
            arrays[field] = (x / np.float32(255))[..., None]
        for field in ("y_train", "y_test"):
            if not np.issubdtype(arrays[field].dtype, np.integer):
                raise ValueError(
                    f"dataset 'idx': {IDX_FILES[field]} must hold integer labels, got {arrays[field].dtype}"
                )
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
        return Dataset(self.name, **arrays, task="classification", num_classes=num_classes)
