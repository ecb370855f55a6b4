"""Bad input: a clear error naming the bad value and the valid choices, before any compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXED, GRADIENTS
from flax import nnx
from problems import mlp_field, mlp_params

import odenets as on
from odenets.solve import check_grid

pytestmark = pytest.mark.usefixtures("strict_promotion")

X0 = jnp.array([[0.3, -0.2, 0.5]])


class Counting:
    """A vector field that counts how often it is evaluated or traced."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t, x, args):
        self.calls += 1
        return mlp_field(t, x, args)


def rejects(match, **kwargs):
    """odeint(**kwargs) raises before the vector field is ever touched."""
    f = Counting()
    call = {"f": f, "x0": X0, "args": mlp_params(jax.random.key(0)), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        on.odeint(call.pop("f"), call.pop("x0"), **call)
    assert f.calls == 0, "the error came after compute started"


def test_unknown_integrator_lists_choices():
    rejects(r"unknown integrator 'rk5'; valid choices: .*rk4.*dopri5", integrator="rk5")


def test_unknown_gradient_lists_choices():
    rejects(r"unknown gradient 'adjont'; valid choices: .*adjoint", gradient="adjont")


def test_every_name_is_listed_in_the_error():
    with pytest.raises(ValueError) as info:
        on.integrator("nope")
    assert all(name in str(info.value) for name in FIXED)
    with pytest.raises(ValueError) as info:
        on.gradient("nope")
    assert all(name in str(info.value) for name in GRADIENTS)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "10", None])
def test_steps_must_be_a_positive_int(steps):
    rejects(r"steps must be an int >= 1, got steps=" + repr(steps).replace(".", r"\."), steps=steps)


def test_unknown_save_mode():
    rejects(r"unknown save 'every'; valid choices: final, all", save="every")


def test_perstep_of_the_wrong_length():
    args = on.PerStep(mlp_params(jax.random.key(0), leading=(7,)))
    rejects(r"leading axis of length steps=10 .* got leading lengths \[7\]", steps=10, args=args)


def test_perstep_with_mixed_lengths():
    p = mlp_params(jax.random.key(0), leading=(10,))
    args = on.PerStep((p[0], p[1], p[2][:3], p[3]))
    rejects(r"got leading lengths \[3, 10\]", steps=10, args=args)


def test_perstep_needs_a_fixed_step_integrator():
    args = on.PerStep(mlp_params(jax.random.key(0), leading=(10,)))
    rejects(r"PerStep \(per-step\) arguments need a fixed-step integrator, got integrator 'dopri5'; "
            r"valid choices: .*euler",
            steps=10, args=args, integrator="dopri5")


@pytest.mark.parametrize("integrator", [n for n in FIXED if n != "reversible_heun"])
def test_reversible_needs_a_reversible_integrator(integrator):
    rejects(rf"needs an algebraically reversible integrator, got '{integrator}'; valid choices: reversible_heun",
            integrator=integrator, gradient="reversible")


def test_reversible_with_an_adaptive_integrator():
    rejects(r"'reversible' is not available for adaptive integrator 'tsit5'; valid choices for it: "
            r"backprop, checkpoint, adjoint", integrator="tsit5", gradient="reversible")


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_non_finite_x0(bad):
    rejects(r"x0 has non-finite entries", x0=X0.at[0, 1].set(bad))


def test_non_finite_x0_under_jit_is_a_runtime_error():
    solve = jax.jit(lambda x: on.odeint(mlp_field, x, args=mlp_params(jax.random.key(0))).x)
    assert jnp.all(jnp.isfinite(solve(X0)))
    with pytest.raises(Exception, match="x0 has non-finite entries"):
        jax.block_until_ready(solve(X0.at[0, 0].set(jnp.nan)))


def test_integer_x0():
    rejects(r"x0 must be floating point, got dtype int", x0=jnp.array([[1, 2, 3]]))


def test_empty_time_span():
    rejects(r"t1 must differ from t0, got t0 = t1 = 1.0", t0=1.0, t1=1.0)


@pytest.mark.parametrize("t0", [1j, jnp.zeros(2), "0"])
def test_times_are_real_scalars(t0):
    rejects(r"t0 must be a real scalar, got t0=", t0=t0)


def test_check_grid_is_the_one_grid_check():
    """The same rules for odeint and the models: numpy ints are ints, times finite and distinct."""
    assert check_grid(np.int64(4), 0.0, np.float32(1.0)) == 4 and type(check_grid(np.int64(4), 0, 1)) is int
    for steps, t0, t1, match in [(0, 0.0, 1.0, "steps must be an int >= 1"), (True, 0.0, 1.0, "got steps=True"),
                                 (4, 0.0, np.nan, "t0 and t1 must be finite"), (4, 2, 2.0, "t1 must differ")]:
        with pytest.raises(ValueError, match=match):
            check_grid(steps, t0, t1)


def test_field_output_shaped_unlike_x0():
    rejects(r"f\(t, x, args\) must return dx/dt shaped like x0", f=lambda t, x, a: x[..., :2])


def test_module_with_args():
    module = on.fields.MLPField(3, 4, rngs=__import__("flax").nnx.Rngs(0))
    with pytest.raises(ValueError, match="carries its own parameters: pass args=None"):
        on.odeint(module, X0, args=1.0)


def test_not_a_field():
    with pytest.raises(TypeError, match="f must be a function f\\(t, x, args\\) or an NNX module, got int"):
        on.odeint(3, X0)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: on.Checkpoint(segment=0), r"segment must be an int >= 1, got segment=0"),
        (lambda: on.Checkpoint(segment=2.0), r"segment must be an int >= 1, got segment=2.0"),
        (lambda: on.Dopri5(rtol=-1.0), r"rtol must be a finite number in \(0.0, inf\), got rtol=-1.0"),
        (lambda: on.Tsit5(atol=0.0), r"atol must be a finite number in \(0.0, inf\), got atol=0.0"),
        (lambda: on.Kvaerno5(max_steps=0), r"max_steps must be an int >= 1, got max_steps=0"),
        (lambda: on.Trapezoid(max_iters=True), r"max_iters must be an int >= 1, got max_iters=True"),
        (lambda: on.integrator("rk4", rtol=1e-3),
         r"unknown option 'rtol' for integrator 'rk4'; valid options: \(none\)"),
        (lambda: on.integrator(on.RK4(), order=3), r"options \['order'\] given with an already built"),
    ],
)
def test_bad_options(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "kvaerno5"])
def test_adaptive_max_steps_exhausted_is_an_error(name):
    """A stiff problem with a tiny step budget: an error naming max_steps, never a wrong answer."""
    stiff = lambda t, x, a: -1000.0 * (x - jnp.cos(t))
    integ = on.integrator(name, max_steps=3)
    with pytest.raises(Exception, match=rf"adaptive integrator '{name}' took max_steps=3 steps without "
                                        r"reaching t1; raise max_steps"):
        jax.block_until_ready(on.odeint(stiff, jnp.ones(2), 0.0, 10.0, integrator=integ).x)
    with pytest.raises(Exception, match=r"max_steps=3"):
        jax.block_until_ready(jax.jit(lambda x: on.odeint(stiff, x, 0.0, 10.0, integrator=integ).x)(jnp.ones(2)))


def test_adjoint_backward_solve_that_stops_short_is_an_error():
    """x0 = 0 makes the forward solve of dx/dt = -c x take 3 steps; the adjoint a' = c a solved
    backwards needs about 100 at c = 300. With max_steps=16 the backward solve stops short: before,
    the gradient was the adjoint where it stopped (d/dx0 = 1.0215, exact 1 + e^-300); now an error."""
    f = lambda t, x, c: -c * x
    integ = on.Dopri5(rtol=1e-6, atol=1e-9, max_steps=16)
    loss = lambda c, x0: jnp.sum(on.odeint(f, x0, integrator=integ, gradient="adjoint", args=c).x) + jnp.sum(x0)
    assert int(on.odeint(f, jnp.zeros(2), integrator=integ, args=300.0).stats["steps"]) < 16  # forward is fine
    with pytest.raises(Exception, match=r"backward \(adjoint\) solve of gradient 'adjoint' with adaptive "
                                        r"integrator 'dopri5' took max_steps=16 steps without reaching t0"):
        jax.block_until_ready(jax.jit(jax.grad(loss, argnums=1))(jnp.float32(300.0), jnp.zeros(2)))
    enough = on.Dopri5(rtol=1e-6, atol=1e-9)  # the default budget: the exact gradient
    grad = jax.grad(lambda x0: jnp.sum(on.odeint(f, x0, integrator=enough, gradient="adjoint", args=300.0).x)
                    + jnp.sum(x0))(jnp.zeros(2))
    np.testing.assert_allclose(grad, 1.0, atol=1e-5)


def test_adjoint_backward_solve_below_dtmin_is_an_error():
    """The backward solve uses the integrator's controller, dtmin included: dx/dt = -c x from x0 = 0 is
    solved forwards in steps of any size, but the adjoint a' = c a (c = 300) needs steps near 3/c = 0.01
    backwards, below dtmin = 0.05; with force_dtmin=False that is the backward dtmin error (the forward
    solve's own errors have other messages), not a gradient."""
    f = lambda t, x, c: -c * x
    integ = on.Dopri5(rtol=1e-6, atol=1e-9, dtmin=0.05, force_dtmin=False)
    loss = lambda x0: jnp.sum(on.odeint(f, x0, integrator=integ, gradient="adjoint", args=300.0).x) + jnp.sum(x0)
    with pytest.raises(Exception, match=r"backward \(adjoint\) solve of gradient 'adjoint' with adaptive "
                                        r"integrator 'dopri5' needed a step below dtmin=0\.05"):
        jax.block_until_ready(jax.jit(jax.grad(loss))(jnp.zeros(2)))


@pytest.mark.parametrize("unroll", [0, -2, 1.5, "all", None])
def test_unroll_must_be_a_bool_or_positive_int(unroll):
    rejects(r"unroll must be True, False or an integer >= 1, got " + repr(unroll).replace(".", r"\."),
            unroll=unroll)


def test_numpy_integers_are_accepted():
    x0, args = X0, mlp_params(jax.random.key(0))
    ref = on.odeint(mlp_field, x0, steps=4, args=args).x
    x = on.odeint(mlp_field, x0, steps=np.int64(4), args=args, unroll=np.int64(2)).x
    np.testing.assert_array_equal(x, ref)
    assert on.Kvaerno5(max_steps=np.int64(5)).max_steps == 5 and on.Checkpoint(segment=np.int64(4)).segment == 4


def test_unroll_is_for_fixed_step_integrators():
    rejects(r"unroll=True applies to fixed-step integrators only; adaptive integrator 'dopri5'.*unroll=1",
            integrator="dopri5", unroll=True)



class LayerField(nnx.Module):
    """A vector field module around one extra layer, `layer(rngs)` (dropout or a normalisation)."""

    def __init__(self, layer):
        rngs = nnx.Rngs(0)
        self.lin = nnx.Linear(3, 3, rngs=rngs, param_dtype=jnp.float64)
        self.layer = layer(rngs)

    def __call__(self, t, x):
        return jnp.tanh(self.layer(self.lin(x)))


@pytest.mark.parametrize("layer,match", [
    (lambda r: nnx.Dropout(0.5, rngs=r),
     r"nnx\.Dropout at 'layer' in training mode \(rate=0\.5, deterministic=False\).*deterministic=True"),
    (lambda r: nnx.BatchNorm(3, rngs=r, param_dtype=jnp.float64),
     r"nnx\.BatchNorm at 'layer' in training mode \(use_running_average=False\).*GroupNorm or nnx\.LayerNorm"),
])
def test_stateful_layers_in_the_field_are_refused_naming_what_works(layer, match):
    with pytest.raises(ValueError, match=match):
        on.odeint(LayerField(layer), X0, 0.0, 1.0, 4)


@pytest.mark.parametrize("layer", [
    lambda r: nnx.Dropout(0.5, deterministic=True),
    lambda r: nnx.BatchNorm(3, use_running_average=True, rngs=r, param_dtype=jnp.float64),
    lambda r: nnx.GroupNorm(3, num_groups=1, rngs=r, param_dtype=jnp.float64),
])
def test_what_the_refusal_suggests_works(layer):
    with jax.numpy_dtype_promotion("standard"):  # flax's norms promote float64 with float32 themselves
        assert on.odeint(LayerField(layer), X0, 0.0, 1.0, 4).x.shape == X0.shape


def test_eval_mode_makes_stateful_layers_usable():
    field = LayerField(lambda r: nnx.Dropout(0.5, rngs=r))
    field.eval()
    assert on.odeint(field, X0, 0.0, 1.0, 4).x.shape == X0.shape
