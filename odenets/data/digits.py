"""scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, nothing downloaded)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from odenets._abstract import final
from odenets.data.base import register
from odenets.data.images import HeldOut


@register("digits")
@final
@dataclasses.dataclass(frozen=True)
class Digits(HeldOut):
    """The 1797 8x8 digit images of `sklearn.datasets.load_digits`, 10 classes.

    x is (N, 8, 8, 1) float32 in [0, 1] (the 0..16 pixel counts divided by 16); the default
    split is 1437 train / 360 test (`HeldOut`).
    """

    def images(self):
        from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

        digits: Any = load_digits()  # a Bunch (sklearn's annotation also allows the return_X_y tuple)
        return (digits.images / 16.0).astype(np.float32)[..., None], digits.target
