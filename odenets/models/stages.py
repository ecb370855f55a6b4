"""Stages that are not a plain `odeint` of a field: other step rules over per-step stacks.

plain (no skip), momentum (Sander et al. 2021), Hamiltonian leapfrog (Haber & Ruthotto 2017)
and dense concatenation (Huang et al. 2017) are their own scans / loops; the highway gate and
ANODE's augmentation wrap an `ODEBlock`. Every stage records `SolverStats` like an ODEBlock.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from odenets.fields import stack
from odenets.models.block import Counted, ODEBlock
from odenets.models.layers import Unit, weight
from odenets.solve import check_unroll


def scan_layers(stacked: nnx.Module, step: Callable, carry, *, reverse: bool = False, unroll: int | bool = 1):  # noqa: E501
    """carry <- step(layer_k, k, carry) for k = 0..N-1 (N-1..0 with reverse), by `lax.scan`
    over the split per-step state: compile time does not grow with depth (unroll as odeint's)."""
    graphdef, state = nnx.split(stacked)
    n = jax.tree.leaves(state)[0].shape[0]

    def body(c, xs):
        k, s = xs
        return step(nnx.merge(graphdef, s), k, c), None

    carry, _ = lax.scan(body, carry, (jnp.arange(n), state), reverse=reverse, unroll=unroll)
    return carry


def _t(k, x):
    return k.astype(x.dtype)


class ScanStage(Counted):
    """Per-step fields `stack(make_field, steps)` run by a step rule of its own (`_scan`);
    a forward pass records one evaluation per step."""

    def __init__(self, make_field, *, steps: int, unroll: int | bool = 1, rngs: nnx.Rngs):
        check_unroll(unroll)
        self.steps, self.unroll = steps, unroll
        self.fields = stack(make_field, steps, rngs)
        self._init_stats()

    def _scan(self, step: Callable, carry, *, reverse: bool = False):
        carry = scan_layers(self.fields, step, carry, reverse=reverse, unroll=self.unroll)
        if not reverse:
            self._record(self.steps, 0)
        return carry


class PlainBlock(ScanStage):
    """x_{k+1} = F_k(t_k, x_k), t_k = k: the same per-step fields as a ResNet with the skip removed."""

    def __call__(self, x):
        return self._scan(lambda f, k, x: f(_t(k, x), x).astype(x.dtype), x)


class HighwayField(nnx.Module):
    """G(t, x) = g (F(t, x) - x), g = sigmoid(gate(x)): one Euler step with h = 1 is the highway
    layer x + G = g F + (1 - g) x (Srivastava et al. 2015). The gate is a 1x1 convolution / linear
    map with bias `gate_bias` (negative: layers start close to carrying x through)."""

    def __init__(self, field: nnx.Module, channels: int, ndim: int, *, gate_bias: float = -1.0, rngs: nnx.Rngs):
        self.field = field
        self.gate = weight(channels, channels, ndim, bias_init=nnx.initializers.constant(gate_bias), rngs=rngs)

    def __call__(self, t, x):
        g = jax.nn.sigmoid(self.gate(x))
        return g * (self.field(t, x) - x)


class AugmentedBlock(nnx.Module):
    """ANODE (Dupont et al. 2019): append `augment` zero channels, then the ODE block on
    channels + augment channels. The extra channels are kept (the rest of the net sees them)."""

    def __init__(self, augment: int, block: ODEBlock):
        self.augment, self.block = augment, block

    def __call__(self, x):
        zeros = jnp.zeros(x.shape[:-1] + (self.augment,), x.dtype)
        return self.block(jnp.concatenate([x, zeros], axis=-1))


class DenseBlock(Counted):
    """x_{k+1} = concat(x_k, H_k(x_k)), H_k adding `growth` channels (Huang et al. 2017), then a
    transition unit (1x1) back to `channels`. H_k is a 3-wide unit, or with bottleneck=True
    (DenseNet-B) a 1x1 unit to 4 * growth channels then a 3-wide unit. Layer widths differ, so
    the layers are a Python loop (compile time grows with depth here, unlike the scans)."""

    def __init__(self, channels, *, depth, growth, ndim, bottleneck, preact, groups, rngs):
        layers, c = [], channels
        for _ in range(depth):
            if bottleneck:
                layer = nnx.Sequential(
                    Unit(c, 4 * growth, ndim, kernel=1, preact=preact, groups=groups, rngs=rngs),
                    Unit(4 * growth, growth, ndim, kernel=3, preact=preact, groups=groups, rngs=rngs),
                )
            else:
                layer = Unit(c, growth, ndim, kernel=3, preact=preact, groups=groups, rngs=rngs)
            layers.append(layer)
            c += growth
        self.layers = nnx.List(layers)
        self.transition = Unit(c, channels, ndim, kernel=1, preact=preact, groups=groups, rngs=rngs)
        self._init_stats()

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.concatenate([x, layer(x)], axis=-1)
        self._record(len(self.layers), 0)
        return self.transition(x)


class MomentumBlock(ScanStage):
    """Momentum ResNet (Sander et al. 2021), v_0 = 0 by default:

        v_{k+1} = gamma v_k + (1 - gamma) F_k(t_k, x_k),    x_{k+1} = x_k + v_{k+1}

    Invertible for 0 < gamma: x_k = x_{k+1} - v_{k+1}, v_k = (v_{k+1} - (1 - gamma) F_k(t_k, x_k)) / gamma
    (`inverse`). Gradients here are plain backprop through the scan (the memory saving of
    the paper's custom backward pass is not implemented)."""

    def __init__(self, make_field, *, steps: int, gamma: float, unroll: int | bool = 1, rngs: nnx.Rngs):
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {gamma}")
        self.gamma = gamma
        super().__init__(make_field, steps=steps, unroll=unroll, rngs=rngs)

    def forward(self, x, v):
        """(x_N, v_N) from (x_0, v_0)."""
        g = self.gamma

        def step(f, k, c):
            x, v = c
            v = g * v + (1 - g) * f(_t(k, x), x).astype(v.dtype)
            return x + v, v

        return self._scan(step, (x, v))

    def inverse(self, x, v):
        """(x_0, v_0) from (x_N, v_N), recomputing every F_k once more."""
        g = self.gamma

        def step(f, k, c):
            x, v = c
            x = x - v
            return x, (v - (1 - g) * f(_t(k, x), x).astype(v.dtype)) / g

        return self._scan(step, (x, v), reverse=True)

    def __call__(self, x):
        return self.forward(x, jnp.zeros_like(x))[0]


class HamiltonianBlock(ScanStage):
    """Haber & Ruthotto's Hamiltonian network as a leapfrog (Verlet) scan over per-step
    `HamiltonianField`s, on the input split channel-wise into y and z (Chang et al. 2018):

        z_{k+1} = z_k - h K_k^T sigma(K_k y_k + b_k)
        y_{k+1} = y_k + h K_k sigma(K_k^T z_{k+1} + c_k)

    output concat(y_N, z_N). Symplectic and exactly invertible (`inverse`)."""

    def __init__(self, make_field, *, steps: int, h: float, unroll: int | bool = 1, rngs: nnx.Rngs):
        self.h = h
        super().__init__(make_field, steps=steps, unroll=unroll, rngs=rngs)

    def forward(self, y, z):
        h = self.h

        def step(f, k, c):
            y, z = c
            z = z + h * f.dz(y).astype(z.dtype)
            return y + h * f.dy(z).astype(y.dtype), z

        return self._scan(step, (y, z))

    def inverse(self, y, z):
        h = self.h

        def step(f, k, c):
            y, z = c
            y = y - h * f.dy(z).astype(y.dtype)
            return y, z - h * f.dz(y).astype(z.dtype)

        return self._scan(step, (y, z), reverse=True)

    def __call__(self, x):
        y, z = jnp.split(x, 2, axis=-1)
        return jnp.concatenate(self.forward(y, z), axis=-1)
