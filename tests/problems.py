"""Test problems with closed-form solutions."""

import jax.numpy as jnp
import jax.scipy.linalg

# a damped rotation: eigenvalues -0.4 +- i sqrt(0.99) (roughly)
A = jnp.array([[-0.5, 1.0], [-1.0, -0.3]])
X0 = jnp.array([1.0, 0.5])


def linear(t, x, a):
    return a @ x


def linear_exact(t1, a=A, x0=X0):
    return jax.scipy.linalg.expm(a * t1) @ x0


def riccati(t, x, args):
    """x' = -2 t x^2 (non-autonomous, so wrong stage times show): x(t) = 1 / (t^2 + 1/x0)."""
    return -2.0 * t * x**2


def riccati_exact(t, x0):
    return 1.0 / (t**2 + 1.0 / x0)


def mlp_field(t, x, p):
    """A small time-dependent MLP vector field with parameters p = (W1, b1, W2, b2)."""
    w1, b1, w2, b2 = p
    h = jnp.tanh(x @ w1 + b1 + t)
    return h @ w2 + b2


def mlp_params(key, width=3, hidden=5, scale=0.5, leading=()):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    n = lambda k, s: scale * jax.random.normal(k, leading + s)
    return (n(k1, (width, hidden)), n(k2, (hidden,)), n(k3, (hidden, width)), n(k4, (width,)))
