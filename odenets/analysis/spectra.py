"""Eigenvalues of h dF/dx: the linearised step that a stability region is compared against.

Near a state x, dx/dt = F(t, x) behaves like y' = J y with J = dF/dx(t, x); one step of size h
is stable when every z = h lambda, lambda an eigenvalue of J, lies in the integrator's
stability region (`odenets.analysis.stability`). J is generally non-symmetric, so its
eigenvalues are complex. Three ways to get them, by `method`:

    "exact"    J by forward-mode autodiff (jax.jacfwd, n columns), all n eigenvalues by LAPACK
               (numpy.linalg.eig): for states of up to a few thousand numbers.
    "arnoldi"  the k of largest modulus by implicitly restarted Arnoldi (ARPACK, through
               scipy.sparse.linalg.eigs), matrix-free: J is only applied to vectors, by a JVP
               J v = jax.jvp(F, (x,), (v,)). Lanczos would need J symmetric; Arnoldi does not.
    "power"    the k of largest modulus by block power (subspace) iteration with k + 2 vectors
               and a Rayleigh-Ritz step at the end (one JVP per vector per iteration): cheap and
               robust for the spectral radius (k = 1), a complex-conjugate dominant pair included.

With `batched=True` the leading axis of x is a batch of independent samples (a model's
fields act on each sample on its own): J is the per-sample Jacobian, n = x[0].size, and the
result has one row of eigenvalues per sample.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from odenets import validate
from odenets.analysis._field import as_field
from odenets.perstep import PerStep

METHODS = ("exact", "arnoldi", "power")


def _sample_map(field, batched, t, shape, args):
    """v (flat, one sample) -> F(t, x, args) (flat), x = v reshaped to one sample's shape."""

    def g(v):
        x = v.reshape(shape)
        out = field(t, x[None], args)[0] if batched else field(t, x, args)
        return out.reshape(-1).astype(v.dtype)

    return g


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jacobians(field, batched, t, x, args):
    """dF/dx of every sample, (B, n, n) (batched) or (n, n)."""
    shape = x.shape[1:] if batched else x.shape
    jac = jax.jacfwd(_sample_map(field, batched, t, shape, args), holomorphic=jnp.iscomplexobj(x))
    if batched:
        return jax.vmap(jac)(x.reshape(x.shape[0], -1))
    return jac(x.reshape(-1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(field, batched, t, x, args, vectors):
    """J V for one sample x (unbatched shape) and V of shape (n, p), by p JVPs."""
    g = _sample_map(field, batched, t, x.shape, args)
    flat = x.reshape(-1)
    return jax.vmap(lambda v: jax.jvp(g, (flat,), (v.astype(flat.dtype),))[1], in_axes=1, out_axes=1)(vectors)


def _by_modulus(mu, k=None):
    mu = np.asarray(mu)
    order = np.argsort(-np.abs(mu), kind="stable")
    return mu[order][:k]


def _arnoldi(matvec, n, k, rng, iters, dtype):
    if not k < n - 1:
        raise ValueError(f"method='arnoldi' finds k < n - 1 eigenvalues, got k={k} for n={n}: use method='exact'")
    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: matvec(v[:, None])[:, 0], dtype=dtype)  # pyright: ignore[reportCallIssue] (its __new__ hides __init__'s arguments)
    v0 = rng.standard_normal(n).astype(dtype)
    mu = scipy.sparse.linalg.eigs(op, k=k, which="LM", v0=v0, maxiter=max(iters, 10 * n),
                                  return_eigenvectors=False)
    return _by_modulus(mu, k)


def _power(matvec, n, k, rng, iters, dtype):
    p = min(n, k + 2)
    q, _ = np.linalg.qr(rng.standard_normal((n, p)).astype(dtype))
    for _ in range(iters):
        q, _ = np.linalg.qr(matvec(q))
    ritz = np.linalg.eigvals(q.conj().T @ matvec(q))
    return _by_modulus(ritz, k)


MATRIX_FREE = {"arnoldi": _arnoldi, "power": _power}


def jacobian_spectrum(
    f,
    x,
    t=0.0,
    args=None,
    *,
    h: float = 1.0,
    method: str = "exact",
    k: int = 6,
    batched: bool = False,
    iters: int = 500,
    seed: int = 0,
) -> np.ndarray:
    """Eigenvalues z = h lambda of h dF/dx at (t, x), sorted by decreasing modulus (complex numpy).

    f:       a function f(t, x, args) -> dx/dt, or an NNX module with __call__(t, x) (args=None);
             one step's field of a per-step stack is `odenets.fields.field_at(stack, k)`.
    method:  "exact" (all n eigenvalues), "arnoldi" or "power" (the k of largest modulus,
             matrix-free); see the module docstring. iters: power iterations (Arnoldi: its
             restart budget); seed: the random start vectors.
    batched: x is (B, ...) independent samples; each sample's Jacobian (result (B, n) or (B, k)).
    Complex states give the complex (holomorphic) Jacobian.
    """
    if isinstance(f, PerStep):
        raise TypeError("jacobian_spectrum takes one step's field: use odenets.fields.field_at(stack, k)")
    method = validate.choice("method", method, METHODS)
    k = validate.integer("k", k, low=1)
    iters = validate.integer("iters", iters, low=1)
    batched = validate.boolean("batched", batched)
    h = validate.number("h", h)
    field, args = as_field(f, args)
    x = jnp.asarray(x)
    if batched and x.ndim < 1:
        raise ValueError(f"batched=True needs x with a leading batch axis, got shape {x.shape}")
    t = jnp.asarray(t, jnp.finfo(x.dtype).dtype)
    if method == "exact":
        jac = np.asarray(_jacobians(field, batched, t, x, args))
        mu = np.linalg.eigvals(jac.astype(np.complex128 if np.iscomplexobj(jac) else np.float64))
        order = np.argsort(-np.abs(mu), axis=-1, kind="stable")
        return h * np.take_along_axis(mu, order, axis=-1)
    samples = x if batched else x[None]
    n = samples[0].size
    dtype = np.complex128 if jnp.iscomplexobj(x) else np.float64
    out = []
    for xi in samples:
        matvec = lambda v, xi=xi: np.asarray(_apply(field, batched, t, xi, args, jnp.asarray(v)), dtype)
        out.append(MATRIX_FREE[method](matvec, n, k, np.random.default_rng(seed), iters, dtype))
    out = h * np.stack(out)
    return out if batched else out[0]
