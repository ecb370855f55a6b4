"""scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, nothing downloaded)."""

from __future__ import annotations

import dataclasses

import numpy as np

from odenets._abstract import final
from odenets.data.base import Builder, Dataset, register
from odenets.validate import integer, number


@register("digits")
@final
@dataclasses.dataclass(frozen=True)
class Digits(Builder):
    """The 1797 8x8 digit images of `sklearn.datasets.load_digits`, 10 classes.

    x is (N, 8, 8, 1) float32 in [0, 1] (the 0..16 pixel counts divided by 16). The split
    is stratified, `test_fraction` of each class held out, and fixed by `split_seed`, *not*
    by `load`'s `seed`: runs that differ only in their seed share one test set (the default
    split is 1437 train / 360 test).
    """

    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        self._check(number, "test_fraction", low=0.0, high=0.9, open_high=False)
        self._check(integer, "split_seed", 0)

    def build(self, seed: int) -> Dataset:
        from sklearn.datasets import load_digits  # deferred: sklearn is slow to import
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[..., None]
        x_train, x_test, y_train, y_test = train_test_split(
            x, digits.target, test_size=self.test_fraction, stratify=digits.target, random_state=self.split_seed
        )
        return Dataset(self.name, x_train, y_train, x_test, y_test, task="classification", num_classes=10)
