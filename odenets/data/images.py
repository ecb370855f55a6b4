"""Labelled image sets shipped inside installed packages, split once by class (digits, mnist)."""

from __future__ import annotations

import abc
import dataclasses
from typing import cast

import numpy as np

from odenets.data.base import Builder, Dataset
from odenets.validate import integer, number


@dataclasses.dataclass(frozen=True)
class HeldOut(Builder):
    """A fixed set of labelled images (N, H, W, 1) in [0, 1], 10 classes, of which `test_fraction`
    of each class is held out (stratified). The split is fixed by `split_seed`, not by `load`'s
    `seed`: runs that differ only in their seed share one test set. A subclass says where the
    images come from (`images`)."""

    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        self._check(number, "test_fraction", low=0.0, high=0.9, open_high=False)
        self._check(integer, "split_seed", 0)

    @abc.abstractmethod
    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): every image, float32 (N, H, W, 1) in [0, 1], and its label 0..9."""

    def build(self, seed: int) -> Dataset:
        from sklearn.model_selection import train_test_split  # deferred: sklearn is slow to import

        x, y = self.images()
        x_train, x_test, y_train, y_test = cast(list[np.ndarray], train_test_split(  # arrays in, arrays out
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.split_seed
        ))
        return Dataset(self.name, x_train, y_train, x_test, y_test, task="classification", num_classes=10)
