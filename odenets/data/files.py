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
from pathlib import Path

import numpy as np

from odenets.data.base import TASKS, Builder, Dataset, register

NPZ_FORMAT = "an .npz with arrays x_train, y_train, x_test, y_test"


def _path_option(builder: Builder, what: str):
    if builder.path is None:
        raise ValueError(f"dataset {builder.name!r} needs the option path: {what}")
    builder._require("path", lambda v: isinstance(v, str | os.PathLike), f"a path to {what}")


@register("npz")
@dataclasses.dataclass(frozen=True)
class NPZ(Builder):
    """Arrays from a local .npz file (`np.savez(path, x_train=..., y_train=..., ...)`).

    The `*_key` options name the arrays when the file uses other names. For classification
    num_classes defaults to the largest label + 1; for task="trajectory" the file must also
    hold the observation times (`ts_key`). 1-D x arrays are read as (N, 1). Pickled object
    arrays are refused (np.load with allow_pickle=False).
    """

    path: str | None = None
    task: str = "classification"
    num_classes: int | None = None
    x_train_key: str = "x_train"
    y_train_key: str = "y_train"
    x_test_key: str = "x_test"
    y_test_key: str = "y_test"
    ts_key: str = "ts"

    def __post_init__(self):
        _path_option(self, NPZ_FORMAT)
        self._choice("task", TASKS)
        if self.num_classes is not None:
            self._int("num_classes", 1)
            if self.task != "classification":
                raise ValueError(
                    f"dataset 'npz': num_classes is for task='classification', got task={self.task!r}"
                )
        for field in ("x_train_key", "y_train_key", "x_test_key", "y_test_key", "ts_key"):
            self._require(field, lambda v: isinstance(v, str) and v != "", "a non-empty string")

    def build(self, seed: int) -> Dataset:
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
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"dataset 'npz': cannot read {path} as {NPZ_FORMAT}: {error}") from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"dataset 'npz': {path} holds a single array, expected {NPZ_FORMAT}")
        with archive:
            missing = [key for key in keys.values() if key not in archive.files]
            if missing:
                raise KeyError(
                    f"dataset 'npz': {path} has no array {missing[0]!r}; keys found: {', '.join(archive.files)} "
                    f"(options x_train_key, y_train_key, x_test_key, y_test_key, ts_key rename them)"
                )
            arrays = {field: archive[key] for field, key in keys.items()}
        for field in ("x_train", "x_test"):
            if arrays[field].ndim == 1:
                arrays[field] = arrays[field][:, None]
        num_classes = self.num_classes
        if self.task == "classification" and num_classes is None:
            num_classes = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
        return Dataset(self.name, **arrays, task=self.task, num_classes=num_classes)


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
    with opener(path, "rb") as f:
        raw = f.read()
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
            self._int("num_classes", 1)

    def build(self, seed: int) -> Dataset:
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
