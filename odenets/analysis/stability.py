"""Linear stability of fixed-step integrators, computed from the methods themselves.

One step of a one-step method applied to the test equation y' = lambda y with step h is
linear in y: y_1 = R(z) y_0, z = h lambda. R is the method's *stability function*; the
method is (linearly) stable at z when |R(z)| <= 1, and {z : |R(z)| <= 1} is its *stability
region*. Examples: forward Euler R = 1 + z; RK4 the quartic Taylor polynomial of exp(z);
backward Euler 1 / (1 - z); the trapezoidal rule (1 + z/2) / (1 - z/2).

Here R is never written down per method: it is read off the integrator's own step
(`init` and `advance`, the step rule `odeint` runs), in complex arithmetic. A method that
carries more state than y (reversible Heun carries (y, z, f(z))) maps that whole state
linearly: state_1 = M(z) state_0 with an *amplification matrix* M, built here column by
column by stepping the basis vectors of the carried state. Its eigenvalues are the roots
of the method's characteristic polynomial; `stability_function` returns the one of largest
modulus (the spectral radius decides whether M^n stays bounded), or with root="principal"
the root that tends to 1 as z -> 0 (the one that approximates exp(z)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from odenets import validate
from odenets.integrators import REGISTRY as INTEGRATORS
from odenets.integrators import FixedStepIntegrator, Integrator

# which eigenvalue of M(z) is R(z): the one with the highest score
ROOTS = {"dominant": np.abs, "principal": lambda mu: -np.abs(mu - 1)}
TOL = 1e-9  # |R(z)| <= 1 + TOL counts as stable (rounding on the edge of a region)


def fixed_step(integrator: Integrator | str) -> FixedStepIntegrator:
    """The integrator (an instance or a name), refused with ValueError if it is adaptive: an
    adaptive method has no fixed step, so no stability function of h lambda."""
    integ = INTEGRATORS(integrator)
    if integ.adaptive or not isinstance(integ, FixedStepIntegrator):
        fixed = [n for n in INTEGRATORS.names() if not INTEGRATORS.get(n).adaptive]
        raise ValueError(
            f"stability analysis needs a fixed-step integrator, got adaptive integrator {integ.name!r} (its "
            f"steps are chosen by error control, so it has no stability function of h lambda); valid choices: "
            f"{', '.join(fixed)}"
        )
    return integ


def _inexact(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _matrix_one(integ: FixedStepIntegrator, z):
    """M(z) for one complex scalar z: column j is one step (h = 1, lambda = z) from basis vector j
    of the carried state (its floating-point leaves; counters such as Newton's stay as `init` set them)."""
    dtype = z.dtype
    h = jnp.ones((), jnp.finfo(dtype).dtype)
    t0 = jnp.zeros((), h.dtype)

    def fq(t, y, args):
        return z * y, ()

    leaves, tree = jax.tree.flatten(integ.init(fq, t0, jnp.ones((), dtype), None))
    carried = [i for i, leaf in enumerate(leaves) if _inexact(leaf)]
    columns = []
    for j in carried:
        basis = [jnp.asarray(i == j, dtype) if i in carried else leaf for i, leaf in enumerate(leaves)]
        new, _ = integ.advance(fq, t0, h, tree.unflatten(basis), None)
        out = jax.tree.leaves(new)
        columns.append(jnp.stack([out[i].astype(dtype) for i in carried]))
    return jnp.stack(columns, axis=1)


@functools.cache
def _matrix_fn(integ: FixedStepIntegrator) -> Callable:
    return jax.jit(jax.vmap(functools.partial(_matrix_one, integ)))


def amplification_matrix(integrator: Integrator | str, z) -> np.ndarray:
    """M(z), shape z.shape + (m, m): one step of the integrator on y' = lambda y, z = h lambda, as a
    linear map of its carried state (m = 1 for methods that carry y only, where M = R(z)).

    The carried state is whatever the integrator's `init` returns (its floating-point parts): for
    reversible Heun (y, z, f(z)), m = 3, and f(z) = lambda z holds on every state a solve
    reaches, so the third eigenvalue of M is 0 and the other two are those of the 2 x 2 map on
    (y, z), mu = z +- sqrt(z^2 + 1). Computed in complex128 whatever jax_enable_x64 says.
    """
    integ = fixed_step(integrator)
    z = np.asarray(z)
    flat = z.reshape(-1)
    size = max(16, 1 << max(flat.size - 1, 0).bit_length())  # a power of two: few compiled shapes
    with jax.enable_x64(True):  # complex128 whatever the caller's precision: regions to rounding
        padded = jnp.asarray(np.pad(flat, (0, size - flat.size)), jnp.complex128)
        m = np.asarray(_matrix_fn(integ)(padded))[: flat.size]
    return m.reshape(z.shape + m.shape[1:])


def carried_size(integrator: Integrator | str) -> int:
    """m: how many numbers per entry of y the integrator carries from step to step (1 for
    Runge-Kutta and theta methods, 3 for reversible Heun)."""
    return amplification_matrix(integrator, np.zeros(1)).shape[-1]


def stability_function(integrator: Integrator | str, *, root: str = "dominant") -> Callable[..., np.ndarray]:
    """R(z) of a fixed-step integrator, as a function on complex arrays (numpy out, z's shape).

    R(z) is one step of y' = lambda y from y = 1 with h = 1, lambda = z, computed with the
    integrator's own step in complex arithmetic, so any registered method gets its function:
    Euler 1 + z, Heun and Midpoint 1 + z + z^2/2, RK4 sum_{j<=4} z^j / j!, BackwardEuler
    1 / (1 - z), Trapezoid (1 + z/2) / (1 - z/2).

    For methods that carry more state, R is an eigenvalue of the amplification matrix M(z)
    (`amplification_matrix`): root="dominant" (default) the one of largest modulus, so that
    |R(z)| <= 1 is the stability region (up to defective eigenvalues of modulus exactly 1);
    root="principal" the one nearest 1, the root that approximates exp(z) for small |z|
    (it may jump between roots where |z| is large). For m = 1 both are M itself.
    Adaptive integrators are refused with a ValueError naming the fixed-step choices.
    """
    integ = fixed_step(integrator)
    score = ROOTS[validate.choice("root", root, ROOTS)]

    def R(z) -> np.ndarray:
        m = amplification_matrix(integ, z)
        if m.shape[-1] == 1:
            return m[..., 0, 0]
        mu = np.linalg.eigvals(m)
        return np.take_along_axis(mu, np.argmax(score(mu), axis=-1)[..., None], axis=-1)[..., 0]

    R.__doc__ = f"R(z) of {integ.name!r} ({root} root): z complex array -> complex array of its shape."
    R.integrator = integ  # pyright: ignore[reportFunctionMemberAccess] (R carries the integrator it was made from)
    return R


def stable(integrator: Integrator | str, z, *, tol: float = TOL) -> np.ndarray:
    """|R(z)| <= 1 + tol, elementwise (bool array of z's shape): z = h lambda inside the region."""
    return np.abs(stability_function(integrator)(z)) <= 1.0 + tol


def reach(integrator: Integrator | str, angles, *, r_max: float = 100.0, n: int = 800, bisect: int = 40,
          tol: float = TOL) -> np.ndarray:
    """How far the region reaches from 0 along each ray z = r e^{i theta}: the first r > 0 with
    |R(r e^{i theta})| > 1 + tol (theta: array of angles; result of its shape). The crossing is
    bracketed on a geometric grid of n radii from r_max * 1e-5 to r_max, then refined by `bisect`
    bisections; inf where the ray stays inside up to r_max, 0 where it starts outside.

    Euler along pi: 2; RK4 along pi: 2.7853, along pi/2: 2 sqrt 2; BackwardEuler along pi: inf.
    Step-size limits follow: h lambda stays inside for h < reach(arg lambda) / |lambda|.
    """
    theta = np.asarray(angles, dtype=float)
    rays = np.exp(1j * theta.reshape(-1))
    r = np.geomspace(r_max * 1e-5, r_max, n)
    outside = ~stable(integrator, r[None, :] * rays[:, None], tol=tol)
    first = outside.argmax(axis=1)
    lo = np.where(first > 0, r[np.maximum(first - 1, 0)], 0.0)
    hi = r[first]
    for _ in range(bisect):  # one evaluation per round for all rays: the same shape, one compilation
        mid = 0.5 * (lo + hi)
        out = ~stable(integrator, mid * rays, tol=tol)
        lo, hi = np.where(out, lo, mid), np.where(out, mid, hi)
    edge = np.where(~outside.any(axis=1), np.inf, np.where(outside[:, 0], 0.0, hi))
    return edge.reshape(theta.shape)


def fraction_inside(integrator: Integrator | str, eigenvalues, *, axis=None, tol: float = TOL):
    """The fraction of the eigenvalues z = h lambda (any shape; NaNs are left out) inside the
    integrator's stability region, over `axis` (None: all of them, a float)."""
    z = np.asarray(eigenvalues)
    valid = np.isfinite(z)
    inside = stable(integrator, np.where(valid, z, 0.0), tol=tol) & valid
    return np.sum(inside, axis=axis) / np.maximum(np.sum(valid, axis=axis), 1)
