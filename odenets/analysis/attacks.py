"""Adversarial perturbations in the L_inf ball: FGSM and PGD, and accuracy under attack.

With L(x) the cross-entropy of the logits at the true label, an attack seeks
max_{|delta|_inf <= eps} L(x + delta), each input on its own.

    FGSM (Goodfellow et al. 2015)  x' = x + eps sign(grad_x L(x))
    PGD (Madry et al. 2018)        x_0 = x (or x + U(-eps, eps) with random_start),
                                   x_{t+1} = P(x_t + alpha sign(grad_x L(x_t))),
                                   P = clip to [x - eps, x + eps] (and to `bounds` if given)

FGSM is the exact maximiser of the first-order model L(x) + grad^T delta over the ball, so for a
binary linear classifier (where L decreases in the margin m(x) = w^T x + b alone) it is the exact
worst case, m(x') = m(x) - eps |w|_1. PGD here returns, per input, the iterate with the largest
loss seen (x included), so its loss is never below that of its start. The one thing a reader may
get wrong: sign(grad) of a float32 loss that is flat (saturated softmax) is 0, so an input
classified with a huge margin may not move at all.

    fgsm(model, x, y, eps)                          perturbed inputs
    pgd(model, x, y, eps, alpha, steps, ...)        perturbed inputs
    attack_accuracy(model, x, y, eps, attack=...)   accuracy on the perturbed inputs
`model` is any callable from inputs (B, ...) to logits (B, classes): a trained Classifier too.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from odenets import validate
from odenets._abstract import final

ATTACKS = ("fgsm", "pgd")


def _split(model):
    """(function of (state, x) -> logits, state): an NNX module split once (jit keys on its graph)."""
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return _Merged(graphdef), state
    if not callable(model):
        raise TypeError(f"model must be a callable from inputs to logits, got {type(model).__name__}")
    return _Plain(model), None


@final
@dataclasses.dataclass(frozen=True)
class _Merged:
    """logits = merge(graphdef, state)(x): hashable by its graph."""

    graphdef: Any

    def __call__(self, state, x):
        return nnx.merge(self.graphdef, state, copy=True)(x)


@final
@dataclasses.dataclass(frozen=True)
class _Plain:
    """logits = f(x) for a plain function f (no state)."""

    f: Any

    def __call__(self, state, x):
        return self.f(x)


def _losses(apply, state, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply(state, x), y)


def _grad(apply, state, x, y):
    return jax.grad(lambda v: jnp.sum(_losses(apply, state, v, y)))(x)


def _clip(x, lo, hi, bounds):
    x = jnp.clip(x, lo, hi)
    return x if bounds is None else jnp.clip(x, *bounds)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _fgsm(apply, state, x, y, eps, bounds):
    return _clip(x + eps * jnp.sign(_grad(apply, state, x, y)), x - eps, x + eps, bounds)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _pgd(apply, state, x, y, eps, alpha, steps, random_start, bounds, key):
    lo, hi = x - eps, x + eps
    start = _clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), lo, hi, bounds) if random_start \
        else x
    best, best_loss = x, _losses(apply, state, x, y)
    shape = (-1,) + (1,) * (x.ndim - 1)

    def body(_, carry):
        xt, best, best_loss = carry
        loss = _losses(apply, state, xt, y)
        better = loss > best_loss
        best = jnp.where(better.reshape(shape), xt, best)
        best_loss = jnp.maximum(loss, best_loss)
        return _clip(xt + alpha * jnp.sign(_grad(apply, state, xt, y)), lo, hi, bounds), best, best_loss

    xt, best, best_loss = lax.fori_loop(0, steps, body, (start, best, best_loss))
    better = _losses(apply, state, xt, y) > best_loss
    return jnp.where(better.reshape(shape), xt, best)


def _bounds(bounds):
    if bounds is None:
        return None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    return lo, hi


def fgsm(model, x, y, eps: float, *, bounds: tuple[float, float] | None = None):
    """FGSM: x + eps sign(grad_x CE(model(x), y)), per input (clipped to `bounds` if given)."""
    eps = validate.number("eps", eps, low=0.0, open_low=False)
    apply, state = _split(model)
    x = jnp.asarray(x)
    return _fgsm(apply, state, x, jnp.asarray(y), jnp.asarray(eps, x.dtype), _bounds(bounds))


def pgd(model, x, y, eps: float, *, alpha: float | None = None, steps: int = 10, random_start: bool = False,
        bounds: tuple[float, float] | None = None, seed: int = 0):
    """Projected gradient ascent on CE in the L_inf ball of radius eps: `steps` signed steps of
    size alpha (None: 2.5 eps / steps, Madry et al.'s choice), each projected back onto the
    ball (and `bounds`); returns each input's iterate with the largest loss (module docstring)."""
    eps = validate.number("eps", eps, low=0.0, open_low=False)
    steps = validate.integer("steps", steps, 1)
    alpha = 2.5 * eps / steps if alpha is None else validate.number("alpha", alpha, low=0.0)
    apply, state = _split(model)
    x = jnp.asarray(x)
    return _pgd(apply, state, x, jnp.asarray(y), jnp.asarray(eps, x.dtype), jnp.asarray(alpha, x.dtype), steps,
                bool(random_start), _bounds(bounds), jax.random.key(seed))


def attack_accuracy(model, x, y, eps: float, *, attack: str = "fgsm", batch: int = 1000, **options) -> float:
    """The fraction of inputs still classified correctly after `attack` ("fgsm" | "pgd", with its
    `options`) at radius eps (eps = 0: the clean accuracy)."""
    attack = validate.choice("attack", attack, ATTACKS)
    run = fgsm if attack == "fgsm" else pgd
    x, y = np.asarray(x), np.asarray(y)
    apply, state = _split(model)
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        adv = run(model, xb, yb, eps, **options)
        correct += int(_correct(apply, state, adv, jnp.asarray(yb)))
    return correct / len(x)


@functools.partial(jax.jit, static_argnums=0)
def _correct(apply, state, x, y):
    return jnp.sum(jnp.argmax(apply(state, x), -1) == y)
