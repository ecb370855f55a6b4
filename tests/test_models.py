"""Models: every family x kind builds and trains, the step rules are what they claim, configs fail early."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import odenets as on
import odenets.models as om
from odenets._abstract import is_final
from odenets.fields.bottleneck import BottleneckField

KINDS = {"mlp": (2,), "conv1d": (8, 1), "conv2d": (6, 6, 1)}
FAMILIES = om.family.names()  # odenets' own and the test suite's (tests/extensions.py)


def rngs(seed=0):
    # rbg keys: initialisers compile much faster than threefry's, and model tests build many tiny nets
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny(family, kind="mlp", **kw):
    """A tiny model (2 classes, width 4, depth 2); repeated builds are clones of the first (build time)."""
    return nnx.clone(_tiny(family, kind, tuple(sorted(kw.items()))))


@functools.cache
def _tiny(family, kind, kw):
    groups = None if kind == "mlp" else 2
    config = dict(kind=kind, input_shape=KINDS[kind], num_classes=2, width=4, depth=2, groups=groups)
    return om.build(family, **{**config, **dict(kw)}, rngs=rngs())


def normal(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def jitted(fn):
    """fn(model, *args) as one jitted call on the split model; returns (output, updated model)."""

    def call(model, *args):
        graphdef, state = nnx.split(model)

        @jax.jit
        def run(state, *args):
            m = nnx.merge(graphdef, state)
            return fn(m, *args), nnx.state(m)

        out, state = run(state, *args)
        return out, nnx.merge(graphdef, state)

    return call


# -- every family x kind ----------------------------------------------------------------------------


def evaluations_per_step(model):
    """What one step of the model's stages costs in field evaluations: the integrator's count for
    families that take one (one Euler step costs 1, RK4 4), else 1 (one layer per step)."""
    if not model.config.takes_integrator:
        return 1
    sol = on.odeint(lambda t, x, a: -x, jnp.ones(1), 0.0, 1.0, 1, integrator=model.config.integrator)
    return int(sol.stats["nfe"])


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_is_a_final_dataclass_of_its_options(name):
    cls = om.family.get(name)
    assert issubclass(cls, om.Family) and is_final(cls) and cls.name == name
    fields = [f.name for f in dataclasses.fields(cls)]
    assert list(cls.options) == fields and set(om.Family.options) <= set(fields)
    assert cls.takes_integrator == ("integrator" in fields) and cls.takes_gradient == ("gradient" in fields)
    assert om.family(name) == cls(**{key: None for key in fields}), "None means not given"
    with pytest.raises(TypeError, match="final"):
        type("Sub", (cls,), {})


@pytest.mark.parametrize("kind", ["mlp", *(pytest.param(k, marks=pytest.mark.slow) for k in KINDS if k != "mlp")])
def test_every_family_and_kind_gives_finite_logits(kind):
    """All families at once (one jitted program per kind: compile time dominates these tests)."""
    stages = 2 if kind == "conv1d" else 1  # transitions here and in test_solver_stats_rk4_node_block (mlp)
    models = [tiny(family, kind, stages=stages) for family in FAMILIES]
    logits, models = jitted(lambda ms, x: [m(x) for m in ms])(models, normal((2, *KINDS[kind])))
    for family, model, out in zip(FAMILIES, models, logits):
        assert out.shape == (2, 2) and out.dtype == jnp.float32, family
        assert np.all(np.isfinite(out)), family
        nfe = stages * 2 * evaluations_per_step(model)  # 2 steps a stage
        assert om.solver_stats(model) == {"nfe": nfe, "nfe_backward": 0}, family


def test_field_variants_run():
    """bottleneck and preact fields (conv and mlp), DenseNet-B: one jitted program, finite logits."""
    variants = [
        ("resnet", "conv1d", dict(field="basic", preact=True)),
        ("resnet", "conv1d", dict(field="bottleneck")),
        ("node", "conv1d", dict(field="bottleneck", preact=True, time=True)),
        ("resnet", "mlp", dict(field="bottleneck")),
        ("densenet", "conv1d", dict(field="bottleneck", preact=True)),
    ]
    models = [tiny(family, kind, width=8, **kw) for family, kind, kw in variants]
    field = models[1].stages[0].field
    assert isinstance(field, BottleneckField)
    assert field.convs[0].kernel.shape == (2, 1, 8, 2)  # (steps, kernel, in, out): 1x1 reduce to 8 // 4
    assert isinstance(models[0].stages[0].field, on.fields.ConvField)
    assert models[3].stages[0].field.out.kernel.shape == (2, 2, 8)  # MLPField, hidden = width // 4
    xs = {"conv1d": normal((2, 8, 1)), "mlp": normal((2, 2))}
    logits, _ = jitted(lambda ms, xs: [m(xs[kind]) for m, (_, kind, _) in zip(ms, variants)])(models, xs)
    for out in logits:
        assert out.shape == (2, 2) and np.all(np.isfinite(out))


def two_blobs(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.7, (n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def test_adam_steps_reduce_the_loss_for_every_family():
    """12 Adam steps (nnx.Optimizer, one jitted step for all families) cut each family's loss by 10 %."""
    x, y = two_blobs()
    models = [tiny(family) for family in FAMILIES]
    optimizers = [nnx.Optimizer(m, optax.adam(2e-2), wrt=nnx.Param) for m in models]
    graphdef, state = nnx.split((models, optimizers))

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @jax.jit
    def train_step(state):
        models, optimizers = nnx.merge(graphdef, state)
        losses = []
        for model, optimizer in zip(models, optimizers):
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            losses.append(loss)
        return jnp.stack(losses), nnx.state((models, optimizers))

    losses = []
    for _ in range(12):
        loss, state = train_step(state)
        losses.append(np.asarray(loss))
    first, last = losses[0], losses[-1]
    assert np.all(np.isfinite(losses))
    failed = {f: (float(a), float(b)) for f, a, b in zip(FAMILIES, first, last) if not b < 0.9 * a}
    assert not failed, f"loss did not fall by 10 % (first, last): {failed}"
    models, _ = nnx.merge(graphdef, state)  # the step returned the updated SolverStats
    assert all(om.solver_stats(m)["nfe"] > 0 for m in models)


# -- the step rules ---------------------------------------------------------------------------------


def first_stage(family, kind="mlp", **kw):
    """Stage 0 of a tiny model: its state is (B, 4) for mlp, (B, 8, 4) for conv1d."""
    return tiny(family, kind, **kw).stages[0]


def test_resnet_is_the_residual_loop_float32():
    """resnet (Euler, h = 1): x_{k+1} = x_k + F_k(k, x_k), through field_at, to 1e-6 in float32."""
    n = 5
    block = first_stage("resnet", depth=n, time=True)
    x0 = normal((3, 4))
    x = x0
    for k in range(n):
        x = x + on.fields.field_at(block.field, k)(jnp.float32(k), x)
    got = block(x0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-6)
    assert not np.allclose(got, x0)


def test_resnet_t_over_n_scales_the_step():
    n, t1 = 4, 2.0
    block = first_stage("resnet", depth=n, step_size="t_over_n", t1=t1, time=True)
    x0 = normal((3, 4))
    x, h = x0, t1 / n
    for k in range(n):
        x = x + h * on.fields.field_at(block.field, k)(jnp.float32(k * h), x)
    np.testing.assert_allclose(block(x0), x, rtol=0, atol=1e-6)


def test_plain_has_no_skip():
    n = 4
    block = first_stage("plain", "conv1d", depth=n)
    x0 = normal((2, 8, 4))
    x = x0
    for k in range(n):
        x = on.fields.field_at(block.fields, k)(jnp.float32(k), x)
    # GroupNorm-ed outputs of size ~3: 1e-6 of their size (the jitted stage and the eager loop round apart)
    np.testing.assert_allclose(block(x0), x, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(x))))


def test_no_stage_is_the_one_hidden_layer_mlp():
    """stages=0 with kind mlp: logits = W2 relu(GN(W1 x + b1)) + b2 (GroupNorm with one group over the
    `width` hidden units), written out in numpy (on the last family's model); every family takes it (its
    stage is never built)."""
    d, width, classes = 6, 4, 3
    build = lambda name, **kw: om.build(name, kind="mlp", input_shape=(2, 3), num_classes=classes, width=width,
                                        stages=0, **kw)
    for name in FAMILIES:  # shapes only: nothing initialised
        abstract = nnx.eval_shape(lambda name=name: build(name))
        assert len(abstract.stages) == 0
        assert om.param_count(abstract) == d * width + width + 2 * width + width * classes + classes
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)  # every parameter drawn by numpy: no initialiser to compile
    model = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), state))
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    w1, b1 = np.asarray(model.stem.linear.kernel[...]), np.asarray(model.stem.linear.bias[...])
    h = x.reshape(4, d) @ w1 + b1
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + model.head.norm.epsilon)
    h = np.maximum(h * np.asarray(model.head.norm.scale[...]) + np.asarray(model.head.norm.bias[...]), 0)
    logits = h @ np.asarray(model.head.linear.kernel[...]) + np.asarray(model.head.linear.bias[...])
    out, model = jitted(lambda m, x: m(x))(model, jnp.asarray(x))
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-5)
    assert om.solver_stats(model) == {"nfe": 0, "nfe_backward": 0}


def test_highway_is_a_gated_skip():
    n = 3
    block = first_stage("highway", depth=n)
    x0 = normal((3, 4))
    x = x0
    for k in range(n):
        layer = on.fields.field_at(block.field, k)
        g = jax.nn.sigmoid(layer.gate(x))
        x = g * layer.field(jnp.float32(k), x) + (1 - g) * x
    np.testing.assert_allclose(block(x0), x, rtol=0, atol=1e-6)


def test_densenet_concatenates():
    block = first_stage("densenet", depth=3, growth=2)
    assert [layer.weight.in_features for layer in block.layers] == [4, 6, 8]
    assert (block.transition.weight.in_features, block.transition.weight.out_features) == (10, 4)
    assert block(normal((3, 4))).shape == (3, 4)


def test_anode_keeps_the_augmented_channels():
    model = tiny("anode", "conv1d", augment=2)
    assert model.features(normal((3, 8, 1))).shape == (3, 8, 6)
    assert model.head.linear.in_features == 6


@pytest.mark.parametrize("family", ["momentum", "hamiltonian"])
def test_block_is_invertible(family):
    """Reconstruct the input state from the output state (float32, 6 layers) to 1e-5."""
    block = first_stage(family, depth=6)
    half = 2 if family == "hamiltonian" else 4  # Hamiltonian: the state is (y, z)
    a0, b0 = normal((3, half), 1), normal((3, half), 2)
    a, b = block.forward(a0, b0)
    assert not np.allclose(a, a0)
    ra, rb = block.inverse(a, b)
    np.testing.assert_allclose(ra, a0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rb, b0, rtol=0, atol=1e-5)


def test_momentum_block_is_the_momentum_recursion():
    gamma, n = 0.8, 3
    block = first_stage("momentum", depth=n, gamma=gamma)
    x0 = normal((3, 4))
    x, v = x0, jnp.zeros_like(x0)
    for k in range(n):
        v = gamma * v + (1 - gamma) * on.fields.field_at(block.fields, k)(jnp.float32(k), x)
        x = x + v
    np.testing.assert_allclose(block(x0), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,shape", [("mlp", (1, 4)), ("conv1d", (1, 8, 4))])
def test_antisymmetric_linear_part_has_real_part_minus_damping(kind, shape):
    """Eigenvalues of (K - K^T - damping I) (a matrix; a convolution and its adjoint) are -damping + i w."""
    gamma = 0.05
    field = on.fields.field_at(first_stage("antisymmetric", kind, damping=gamma).field, 1)
    size = math.prod(shape)
    linear = lambda v: field.linear(v.reshape(shape)).reshape(size)
    jac = np.asarray(jax.jit(jax.jacfwd(linear))(jnp.zeros(size, jnp.float32)), np.float64)
    eig = np.linalg.eigvals(jac)
    np.testing.assert_allclose(eig.real, -gamma, atol=1e-5)
    assert np.max(np.abs(eig.imag)) > 0.1  # K - K^T is not zero


# -- NFE accounting ---------------------------------------------------------------------------------


def test_solver_stats_rk4_node_block():
    steps = 5
    block = om.ODEBlock(lambda r: on.fields.MLPField(3, 8, rngs=r), params="shared", steps=steps, rngs=rngs())
    assert om.solver_stats(block) == {"nfe": -1, "nfe_backward": -1}  # not called yet
    block(normal((2, 3)))
    assert om.solver_stats(block) == {"nfe": 4 * steps, "nfe_backward": 0}
    assert isinstance(block.nfe, om.SolverStats) and block.nfe[...].dtype == jnp.int32
    model = tiny("node", depth=3, stages=2, gradient="adjoint")
    _, model = jitted(lambda m, x: nnx.grad(lambda m: jnp.sum(m(x)))(m))(model, normal((2, 2)))
    stats = om.solver_stats(model)
    assert stats["nfe"] == 2 * 4 * 3 and stats["nfe_backward"] > 0


def test_solver_stats_dopri5_chen_odenet():
    model = om.build(**om.preset("chen_odenet_1d", width=8, **om.CHEN_DOPRI5), rngs=rngs())
    logits, model = jitted(lambda m, x: m(x))(model, normal((2, 40, 1)))
    assert logits.shape == (2, 10)
    nfe = om.solver_stats(model)["nfe"]
    assert nfe > 0 and (nfe - 1) % 6 == 0  # FSAL: 1 + 6 per attempted step


# -- configuration ---------------------------------------------------------------------------------


def test_ode_block_checks_at_construction():
    make = lambda r: on.fields.MLPField(3, 8, rngs=r)
    with pytest.raises(ValueError, match=r"unknown params 'deep'; valid choices: shared, per_step"):
        om.ODEBlock(make, params="deep", steps=2, rngs=rngs())
    with pytest.raises(ValueError, match=r"fixed-step integrator, got integrator 'dopri5'; valid choices: euler"):
        om.ODEBlock(make, params="per_step", steps=2, integrator="dopri5", rngs=rngs())
    with pytest.raises(ValueError, match=r"unknown integrator 'rk5'; valid choices: euler"):
        om.ODEBlock(make, params="shared", steps=2, integrator="rk5", rngs=rngs())
    with pytest.raises(ValueError, match=r"'reversible' needs an algebraically reversible integrator"):
        om.ODEBlock(make, params="shared", steps=2, gradient="reversible", rngs=rngs())
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got steps=0"):
        om.ODEBlock(make, params="shared", steps=0, rngs=rngs())
    with pytest.raises(ValueError, match=r"t1 must differ from t0, got t0 = t1 = 1.0"):
        om.ODEBlock(make, params="shared", steps=2, t0=1.0, t1=1.0, rngs=rngs())


GOOD = dict(kind="conv1d", input_shape=(8, 1), num_classes=3, width=4, depth=2)


@pytest.mark.parametrize(
    "family,config,match",
    [
        ("resnett", {}, r"unknown model family 'resnett'; valid choices: resnet, plain, node"),
        ("resnet", dict(kind="conv3d"), r"unknown kind 'conv3d'; valid choices: mlp, conv1d, conv2d"),
        ("resnet", dict(field="wide"), r"unknown field 'wide'; valid choices: basic, bottleneck"),
        ("node", dict(input_shape=(8,)), r"input_shape=\(8,\) has rank 1; kind 'conv1d' needs rank 2.*kind='mlp'"),
        ("node", dict(kind=None, input_shape=(2, 2, 2, 2)), r"has rank 4: give kind='mlp' to flatten it"),
        ("node", dict(input_shape=(8, 0)), r"input_shape must be a tuple of ints >= 1"),
        ("node", dict(width=6, groups=4), r"width=6 is not divisible by groups=4"),
        ("node", dict(width=48), r"width=48 is not divisible by groups=32"),
        ("plain", dict(num_classes=1), r"num_classes must be an int >= 2, got num_classes=1"),
        ("plain", dict(depth=0), r"depth must be an int >= 1, got depth=0"),
        ("plain", dict(stages=-1), r"stages must be an int >= 0, got stages=-1"),
        ("resnet", dict(integrator="dopri5"), r"'dopri5'; valid choices: euler, midpoint.*model=node"),
        ("node", dict(integrator="rk5"), r"unknown integrator 'rk5'; valid choices: euler"),
        ("node", dict(gradient="reversible"), r"'reversible' needs an algebraically reversible integrator"),
        ("node", dict(widht=4), r"unknown option 'widht' for model family 'node'; valid options: width, depth"),
        ("plain", dict(integrator="rk4"), r"unknown option 'integrator' for model family 'plain'; valid"),
        ("antisymmetric", dict(gamma=0.1), r"unknown option 'gamma' for .*'antisymmetric'; valid .*damping"),
        ("antisymmetric", dict(damping=-0.1), r"damping must be a finite number in \[0.0, inf\), got damping=-0"),
        ("resnet", dict(step_size="half"), r"unknown step_size 'half'; valid choices: one, t_over_n"),
        ("resnet", dict(t1=3.0), r"t1=3.0 conflicts with step_size='one'"),
        ("node", dict(t1=-1.0), r"t1 must be a finite number in \(0.0, inf\), got t1=-1.0"),
        ("hamiltonian", dict(width=5, groups=1), r"width=5 must be even"),
        ("momentum", dict(gamma=1.5), r"gamma must be a finite number in \(0.0, 1.0\), got gamma=1.5"),
        ("anode", dict(augment=0), r"augment must be an int >= 1, got augment=0"),
        ("densenet", dict(growth=0), r"growth must be an int >= 1, got growth=0"),
        ("resnet", dict(kind="mlp", input_shape=(3,), preact=True), r"preact=True needs a conv kind"),
        ("resnet", dict(stem="chen", kind="mlp", input_shape=(3,)), r"stem 'chen' does not apply to kind 'mlp'"),
        ("resnet", dict(stem="chen", input_shape=(5, 1)), r"input_shape=\(5, 1\) is too small for stem 'chen'"),
        ("plain", dict(unroll=0), r"unroll must be True, False or an integer >= 1, got 0"),
        ("node", dict(integrator="dopri5", unroll=True), r"unroll=True applies to fixed-step integrators only"),
        ("densenet", dict(unroll=True), r"unknown option 'unroll' for model family 'densenet'"),
    ],
)
def test_bad_config_fails_before_any_parameter(family, config, match):
    r = rngs()
    with pytest.raises(ValueError, match=match):
        om.build(family, **{**GOOD, **config}, rngs=r)
    assert int(r.default.count[...]) == 0  # no parameter was drawn


def test_none_means_not_given():
    """Every family option given as None resolves to the same config as the option left out, in every family."""
    for family in FAMILIES:
        every = {k: None for k in om.family.get(family).options if k not in GOOD}
        given = nnx.eval_shape(lambda family=family: om.build(family, **GOOD, **every))
        left_out = nnx.eval_shape(lambda family=family: om.build(family, **GOOD))
        assert given.config == left_out.config, family
        assert (given.input_shape, given.num_classes) == (GOOD["input_shape"], GOOD["num_classes"])


@pytest.mark.parametrize("shape,kind", [((2,), "mlp"), ((40, 1), "conv1d"), ((8, 8, 1), "conv2d")])
def test_defaults_follow_the_data(shape, kind):
    """With every option at its default, each family builds for flat points (spheres), signals
    (MNIST-1D) and images (digits): the kind, groups and stem follow the input's rank."""
    for family in FAMILIES:
        model = nnx.eval_shape(lambda family=family: om.build(family, input_shape=shape, num_classes=2))
        assert model.config.kind == kind and model.config == om.family(family).resolve(shape), family
        assert model.config.groups == (1 if kind == "mlp" else 32)
        assert model.config.stem == ("linear" if kind == "mlp" else "conv")


def test_neural_ode_defaults():
    node = om.family("node")
    assert (node.time, node.integrator, node.gradient, node.t1) == (True, "rk4", "backprop", 1.0)
    assert om.family.get("node").takes_integrator and not om.family.get("plain").takes_integrator
    assert om.family("resnet").resolve((3,)).t1 == 6.0  # step_size "one": h = 1


def test_family_builds_from_an_instance():
    spec = om.family("momentum", width=4, depth=2, gamma=0.5)
    model = om.build(spec, input_shape=(3,), num_classes=2, rngs=rngs())
    assert model.config == spec.resolve((3,)) and model.family == "momentum"
    assert model(normal((5, 3))).shape == (5, 2)
    with pytest.raises(TypeError, match="options"):
        om.build(spec, input_shape=(3,), num_classes=2, width=8)


@pytest.mark.parametrize("family", [f for f in FAMILIES if "unroll" in om.family.get(f).options])
def test_unroll_changes_nothing_but_the_program(family):
    """model.unroll=True gives the logits and gradients of the default scan, in every family that scans."""
    x = normal((3, *KINDS["mlp"]))

    def value_and_grad(unroll):
        model = om.build(family, kind="mlp", input_shape=KINDS["mlp"], num_classes=2, width=4, depth=3,
                         unroll=unroll, rngs=rngs())
        return nnx.value_and_grad(lambda m: jnp.sum(jnp.sin(m(x))))(model)

    for a, b in zip(jax.tree.leaves(value_and_grad(1)), jax.tree.leaves(value_and_grad(True)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- presets --------------------------------------------------------------------------------------


def chen_counts(ndim):
    """Parameter counts of Chen et al.'s nets by hand: stem, 6 blocks or 1 ODE field, head (width 64)."""
    k3, k4, c, gn = 3**ndim, 4**ndim, 64, 128
    stem = (k3 * c + c) + 2 * (k4 * c * c + c) + 2 * gn
    block = 2 * (k3 * c * c + c) + 3 * gn
    ode_field = 2 * (k3 * (c + 1) * c + c) + 3 * gn
    head = gn + c * 10 + 10
    return stem + 6 * block + head, stem + ode_field + head


@pytest.mark.parametrize("dim", ["1d", "2d"])
def test_chen_preset_parameter_counts(dim):
    count = lambda name: om.param_count(nnx.eval_shape(lambda: om.build(**om.preset(name))))
    resnet, odenet = count(f"chen_resnet_{dim}"), count(f"chen_odenet_{dim}")
    assert (resnet, odenet) == chen_counts(1 if dim == "1d" else 2)
    if dim == "1d":
        assert odenet <= resnet / 3  # MNIST-1D, width 64: 59,658 vs 184,714


def test_preset_overrides_and_unknown_name():
    config = om.preset("chen_odenet_1d", width=32)
    assert config["width"] == 32 and config["family"] == "node" and config["input_shape"] == (40, 1)
    assert all(om.preset(name)["unroll"] is True for name in om.PRESETS)
    with pytest.raises(ValueError, match=r"unknown preset 'chen'; valid choices: chen_resnet_1d"):
        om.preset("chen")
