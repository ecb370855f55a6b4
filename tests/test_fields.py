"""Vector fields as NNX modules, per-step stacks, and odeint on modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odenets as on


def mlp(rngs, **kw):
    return on.fields.MLPField(3, 8, param_dtype=jnp.float64, rngs=rngs, **kw)


def test_mlp_field_shapes_and_time_dependence():
    field = mlp(nnx.Rngs(0))
    x = jnp.ones((5, 3))
    assert field(0.0, x).shape == (5, 3)
    assert not np.allclose(field(0.0, x), field(1.0, x))  # t is an input
    autonomous = mlp(nnx.Rngs(0), time=False, layers=2)
    np.testing.assert_array_equal(autonomous(0.0, x), autonomous(1.0, x))


@pytest.mark.parametrize("ndim,shape", [(1, (2, 16, 8)), (2, (2, 6, 6, 8))])
def test_conv_field_keeps_shape_and_sees_time(ndim, shape):
    field = on.fields.ConvField(8, ndim=ndim, groups=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), shape)
    assert field(0.0, x).shape == shape
    assert not np.allclose(field(0.0, x), field(0.7, x))  # ConcatConv time channel
    plain = on.fields.ConvField(8, ndim=ndim, time=False, groups=4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(plain(0.0, x), plain(0.7, x))


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: on.fields.ConvField(8, ndim=4, rngs=nnx.Rngs(0)), r"ndim must be 1, 2 or 3 spatial axes, got 4"),
        (lambda: on.fields.ConvField(6, groups=4, rngs=nnx.Rngs(0)), r"channels=6 is not divisible by groups=4"),
        (lambda: on.fields.MLPField(3, layers=0, rngs=nnx.Rngs(0)), r"layers >= 1 hidden layers, got 0"),
        (lambda: on.fields.stack(lambda r: mlp(r), 0, nnx.Rngs(0)), r"steps must be an int >= 1, got steps=0"),
    ],
)
def test_bad_field_options(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_stack_has_a_leading_step_axis_and_independent_layers():
    stacked = on.fields.stack(lambda r: mlp(r), 6, nnx.Rngs(0))
    single = nnx.state(mlp(nnx.Rngs(0)), nnx.Param)
    for a, b in zip(jax.tree.leaves(nnx.state(stacked, nnx.Param)), jax.tree.leaves(single)):
        assert a.shape == (6, *b.shape)
    kernel = stacked.hidden[0].kernel[...]
    assert not np.allclose(kernel[0], kernel[1])  # each layer initialised on its own
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(on.fields.field_at(stacked, 4).hidden[0].kernel[...], kernel[4])
    assert not np.allclose(on.fields.field_at(stacked, 0)(0.0, x), on.fields.field_at(stacked, 1)(0.0, x))


def test_perstep_module_is_a_resnet_float32():
    """odeint(PerStep(stack), Euler, h = 1) is the residual loop x <- x + F_k(k, x), to 1e-6 in float32."""
    n = 10
    stacked = on.fields.stack(lambda r: on.fields.MLPField(4, 16, rngs=r), n, nnx.Rngs(0))
    x0 = jax.random.normal(jax.random.key(1), (3, 4), jnp.float32)
    sol = on.odeint(on.PerStep(stacked), x0, 0, n, n, integrator="euler")
    x = x0
    for k in range(n):
        x = x + on.fields.field_at(stacked, k)(jnp.float32(k), x)
    assert sol.x.dtype == jnp.float32
    np.testing.assert_allclose(sol.x, x, rtol=0, atol=1e-6)


def test_nnx_grad_through_odeint_matches_finite_differences():
    field = mlp(nnx.Rngs(0))
    x0 = jnp.array([[0.2, -0.4, 0.9]])

    def loss(model):
        return jnp.sum(on.odeint(model, x0, 0.0, 1.0, 16, integrator="rk4").x ** 2)

    grads = nnx.grad(loss)(field)
    graphdef, params = nnx.split(field)
    leaves, tree = jax.tree.flatten(params)
    v = tree.unflatten([jax.random.normal(jax.random.key(i), p.shape, p.dtype) for i, p in enumerate(leaves)])
    at = lambda s: loss(nnx.merge(graphdef, jax.tree.map(lambda p, d: p + s * d, params, v)))
    fd = (at(1e-6) - at(-1e-6)) / 2e-6
    ours = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(nnx.state(grads)), jax.tree.leaves(v)))
    assert abs(ours - fd) < 1e-7 * abs(fd), (ours, fd)


@pytest.mark.parametrize("gradient,integrator", [  # 8-9 s each: the slow run
    pytest.param("checkpoint", "rk4", marks=pytest.mark.slow),
    pytest.param("reversible", "reversible_heun", marks=pytest.mark.slow)])
def test_perstep_conv_resnet_gradients_agree_with_backprop(gradient, integrator):
    """A 6-layer Conv1d ResNet (one ConvField per layer): every strategy's nnx.grad vs Backprop."""
    n = 6
    stacked = on.fields.stack(lambda r: on.fields.ConvField(4, ndim=1, groups=2, rngs=r), n, nnx.Rngs(0))
    x0 = jax.random.normal(jax.random.key(2), (2, 12, 4), jnp.float32)

    def loss(model, grad):
        return jnp.mean(on.odeint(on.PerStep(model), x0, 0.0, 1.0, n, integrator=integrator, gradient=grad).x ** 2)

    ref = nnx.state(nnx.grad(lambda m: loss(m, "backprop"))(stacked))
    got = nnx.state(nnx.grad(lambda m: loss(m, gradient))(stacked))
    # Checkpoint and Reversible compute the same discrete gradient: equal up to float32 rounding
    tol = 1e-4
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        scale = float(jnp.max(jnp.abs(a))) + 1e-12
        assert float(jnp.max(jnp.abs(a - b))) <= tol * scale


@pytest.mark.parametrize("k", [3, -4, 1.0, "1", True, None, np.float32(0)])
def test_field_at_refuses_a_step_outside_the_stack(k):
    """k out of range (or not an int) raises instead of clamping to the first or last step."""
    stacked = on.fields.stack(lambda r: mlp(r), 3, nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"k must be an int in \[-3, 3\) for a stack of 3 steps"):
        on.fields.field_at(stacked, k)


def test_field_at_counts_negative_steps_from_the_end():
    stacked = on.fields.stack(lambda r: mlp(r), 3, nnx.Rngs(0))
    kernel = stacked.hidden[0].kernel[...]
    np.testing.assert_array_equal(on.fields.field_at(stacked, -1).hidden[0].kernel[...], kernel[2])
    np.testing.assert_array_equal(on.fields.field_at(stacked, np.int64(1)).hidden[0].kernel[...], kernel[1])
    with pytest.raises(ValueError, match="per-step stack"):
        on.fields.field_at(mlp(nnx.Rngs(0)), 0)


@pytest.mark.parametrize("name", on.fields.field_type.names())
@pytest.mark.parametrize("ndim,shape", [(0, (2, 8)), (1, (2, 6, 8))])
def test_every_field_type_keeps_the_state_shape(name, ndim, shape):
    if ndim == 0 and not on.fields.field_type(name).flat:  # conv-only types refuse flat states, naming the others
        with pytest.raises(ValueError, match=rf"field '{name}' needs a conv kind.*valid choices for kind 'mlp'"):
            on.fields.field_type(name).make(8, ndim=ndim, preact=False, time=True, groups=4)
        with pytest.raises(ValueError, match=rf"field '{name}' needs a conv kind"):
            on.models.family("resnet", field=name, kind="mlp").resolve((40,))
        return
    make = on.fields.field_type(name).make(8, ndim=ndim, preact=ndim > 0, time=True, groups=4)
    field = make(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), shape)
    out = field(0.5, x)
    assert out.shape == shape and np.all(np.isfinite(out))


def _group_norm(x, groups, eps=1e-6):
    """GroupNorm with unit scale and zero bias: per sample, over the positions and the channels of a group."""
    n, length, c = x.shape
    g = x.reshape(n, length, groups, c // groups)
    mean, var = g.mean(axis=(1, 3), keepdims=True), g.var(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def _same_conv(x, kernel):
    """y[n, l, o] = sum_{j, i} xp[n, l + j, i] K[j, i, o], xp zero-padded (k - 1) // 2 left, k // 2 right."""
    k, length = kernel.shape[0], x.shape[1]
    xp = np.pad(x, ((0, 0), ((k - 1) // 2, k // 2), (0, 0)))
    return sum(np.einsum("nli,io->nlo", xp[:, j:j + length], kernel[j]) for j in range(k))


@pytest.mark.parametrize("preact", [False, True])
def test_multibranch_field_against_a_hand_computation(preact):
    """F = GN(W_mix * relu(GN(concat(K_1 * x, K_3 * x)))) (preact: x -> relu(GN(x)) first), in numpy: 5
    channels split 3 + 2 over a 1-wide and a 3-wide branch, biases drawn nonzero."""
    field = on.fields.MultiBranchField(5, ndim=1, kernel_sizes=(1, 3), time=False, groups=5, preact=preact,
                                       rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    for conv in (*field.branches, field.mix):
        conv.bias[...] = jnp.asarray(rng.normal(size=conv.bias.shape), jnp.float32)
    assert [b.kernel.shape for b in field.branches] == [(1, 5, 3), (3, 5, 2)]
    x = rng.normal(size=(2, 7, 5)).astype(np.float32)
    h = np.maximum(_group_norm(x, 5), 0) if preact else x
    branch = lambda conv: _same_conv(h, np.asarray(conv.kernel)) + np.asarray(conv.bias)
    hidden = np.maximum(_group_norm(np.concatenate([branch(b) for b in field.branches], -1), 5), 0)
    expected = _group_norm(np.einsum("nli,io->nlo", hidden, np.asarray(field.mix.kernel)[0])
                           + np.asarray(field.mix.bias), 5)
    np.testing.assert_allclose(field(0.0, jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


def test_scaled_field_starts_at_zero_and_scales():
    """ReZero: alpha = 0 at initialisation, so the field (and a residual step) starts as zero (identity)."""
    inner = mlp(nnx.Rngs(0))
    field = on.fields.ScaledField(inner)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(field(0.0, x), 0.0)
    field.alpha[...] = 0.5
    np.testing.assert_allclose(field(0.0, x), 0.5 * inner(0.0, x), rtol=1e-6)


def test_highway_field_is_a_gated_difference():
    inner = mlp(nnx.Rngs(0))
    field = on.fields.HighwayField(inner, 3, 0, rngs=nnx.Rngs(1))
    x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    g = jax.nn.sigmoid(field.gate(x))
    np.testing.assert_allclose(field(0.0, x), g * (inner(0.0, x) - x), rtol=1e-6)


# -- the loop-friendly convolution ------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,k_shape,padding", [((2, 6, 3), (4, 3, 2), ((1, 2),)),
                                                     ((2, 6, 3), (4, 3, 2), "SAME"),  # even kernel: pads (1, 2)
                                                     ((2, 7, 3), (3, 3, 2), "VALID"),
                                                     ((2, 5, 4, 3), (3, 3, 3, 2), "SAME"),
                                                     ((2, 5, 4, 3), (2, 3, 3, 2), "VALID")])
def test_conv_general_dilated_equals_lax_in_value_and_every_derivative(x_shape, k_shape, padding):
    """fields.conv.conv_general_dilated against lax.conv_general_dilated: value, grad, jvp and hessian."""
    from jax import lax

    from odenets.fields.conv import conv_general_dilated

    rng = np.random.default_rng(0)
    x, k = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x_shape, k_shape))
    nd = len(x_shape) - 2
    labels = ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")
    dn = lax.conv_dimension_numbers(x_shape, k_shape, labels)
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k, (1,) * nd, padding, dimension_numbers=dn)))
    checks = (lambda f: f(x, k), lambda f: jax.grad(f, (0, 1))(x, k), lambda f: jax.jvp(f, (x, k), (x, k)),
              lambda f: jax.hessian(f, 1)(x, k))
    for check in checks:
        ours, ref = (jax.jit(lambda conv=conv: check(loss(conv)))() for conv in (conv_general_dilated,
                                                                                  lax.conv_general_dilated))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("x_shape,k_shape,options", [
    ((2, 8, 3), (3, 3, 2), dict(window_strides=(2,))),  # a strided stem
    ((2, 8, 3), (3, 3, 2), dict(rhs_dilation=(2,))),
    ((2, 8, 3), (3, 3, 2), dict(lhs_dilation=(2,))),
    ((2, 8, 4), (3, 2, 4), dict(feature_group_count=2)),
    ((2, 3, 8), (2, 3, 3), dict(dimension_numbers=("NCW", "OIW", "NCW"))),  # channels first
])
def test_conv_general_dilated_passes_other_convolutions_to_lax(x_shape, k_shape, options):
    """Anything but a channels-last stride-1 undilated ungrouped convolution is lax's own: the same
    program as lax.conv_general_dilated for the value and the gradient (the custom path would ignore
    strides and dilations, and give other values)."""
    from jax import lax

    from odenets.fields.conv import conv_general_dilated

    nd = len(x_shape) - 2
    options = {"window_strides": (1,) * nd, "dimension_numbers": ("NWC", "WIO", "NWC"), **options}
    x, k = (jnp.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s) for s in (x_shape, k_shape))
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k, padding=((1, 1),), **options)))
    ours, theirs = (str(jax.make_jaxpr(jax.value_and_grad(loss(conv), (0, 1)))(x, k))
                    for conv in (conv_general_dilated, lax.conv_general_dilated))
    assert "custom_jvp" not in ours and ours == theirs


def test_conv_field_gradients_in_a_scan_use_canonical_convolutions():
    """The ConvField's backward convolutions inside lax.scan keep XLA:CPU's canonical dimension labels
    (b0f_0io->b0f), where lax's own derivatives leave b0f_0oi / f0b_i0o ones that run 5-10x slower."""
    import re

    field = on.fields.ConvField(8, ndim=1, groups=4, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(field)

    def loss(params, x):
        f = nnx.merge(graphdef, params)
        return jnp.sum(jax.lax.scan(lambda x, t: (x + 0.1 * f(t, x), None), x, jnp.arange(3.0))[0] ** 2)

    text = jax.jit(jax.grad(loss)).lower(params, jnp.ones((2, 6, 8))).compile().as_text()
    labels = set(re.findall(r"dim_labels=([\w>-]+)", text))
    assert labels == {"b0f_0io->b0f"}, labels


# -- GroupNorm with per-channel statistics ----------------------------------------------------------
@pytest.mark.parametrize("shape,groups", [((4, 7, 7, 64), 32), ((3, 9, 65), 5), ((2, 5, 4, 3, 8), 4),
                                          ((5, 64), 32), ((3, 6, 8), 1)])
def test_group_norm_equals_flax_in_value_and_gradient(shape, groups):
    """odenets.fields.norm.GroupNorm against nnx.GroupNorm: the same parameters, values and gradients (with
    respect to the input and to scale and bias) within float32 rounding."""
    from odenets.fields.norm import GroupNorm

    rng = np.random.default_rng(0)
    x, g = (jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.float32) for _ in range(2))
    ours, flax = (cls(shape[-1], num_groups=groups, rngs=nnx.Rngs(0)) for cls in (GroupNorm, nnx.GroupNorm))
    for name in ("scale", "bias"):
        value = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
        getattr(ours, name)[...] = getattr(flax, name)[...] = value
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(flax))

    def value_and_grads(module):
        graph, params = nnx.split(module)
        y, back = jax.vjp(lambda p, x: jax.nn.relu(nnx.merge(graph, p)(x)), params, x)
        return y, back(g)

    for a, b in zip(jax.tree.leaves(jax.jit(lambda: value_and_grads(ours))()),
                    jax.tree.leaves(jax.jit(lambda: value_and_grads(flax))()), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(b))))
