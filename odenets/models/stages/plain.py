"""The plain net: a ResNet's per-step fields with the skip removed (not an ODE)."""

from __future__ import annotations

from odenets._abstract import final
from odenets.models.stages.scan import ScanStage, step_time


@final
class PlainBlock(ScanStage):
    """x_{k+1} = F_k(t_k, x_k), t_k = k: the same per-step fields as a ResNet with the skip removed."""

    def __call__(self, x):
        return self._scan(lambda f, k, x: f(step_time(k, x), x).astype(x.dtype), x)
