"""odenets.analysis.gradflow against independent references: closed forms on linear stacks (the
textbook exercise), jax.grad / jax.jacobian of hand-written stacks, `observe_model`, and the
binomial counts of the path expansion."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import odenets as on
from odenets._abstract import final
from odenets.analysis import gradflow as gf
from odenets.fields import field_at
from odenets.models import ODEBlock
from odenets.models.stages import MomentumBlock, PlainBlock


@final
class Scale(nnx.Module):
    """F(t, x) = a x: a linear residual branch."""

    def __init__(self, a: float, rngs: nnx.Rngs):
        self.a = nnx.Param(jnp.asarray(a, jnp.float64))

    def __call__(self, t, x):
        return self.a * x


def _filled(build, seed=0, value=None):
    """The module `build()` makes, with its structure from nnx.eval_shape (no initialiser is compiled)
    and its float parameters drawn by numpy (N(0, 1 / fan_in) matrices, N(0, 0.1) vectors) or all
    equal to `value`."""
    graphdef, state = nnx.split(nnx.eval_shape(build))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        if value is not None:
            return jnp.full(leaf.shape, value, jnp.float64)
        scale = 1 / math.sqrt(leaf.shape[-2]) if leaf.ndim >= 3 or (leaf.ndim == 2 and leaf.shape[0] > 1) else 0.1
        return jnp.asarray(rng.standard_normal(leaf.shape) * scale)

    return nnx.merge(graphdef, jax.tree.map(draw, state))


def _mlp(width):
    return lambda r: on.fields.MLPField(width, 5, time=False, rngs=r)


def _resnet(make, depth, seed=0, value=None):
    return _filled(lambda: ODEBlock(make, params="per_step", steps=depth, integrator="euler", t0=0.0,
                                    t1=float(depth), rngs=nnx.Rngs(0)), seed, value)


def _plain(make, depth, seed=0, value=None):
    return _filled(lambda: PlainBlock(make, steps=depth, rngs=nnx.Rngs(0)), seed, value)


def test_textbook_exercise_plain_and_residual_stacks_of_three():
    """Each layer scales by 1/2: a plain stack of 3 passes 1/8 to its input; a residual stack
    (1 + 1/2)^3 = 27/8, of which the identity path carries 1."""
    x = jnp.ones((1, 1))
    plain = gf.gradient_flow(_plain(lambda r: Scale(0.5, r), 3, value=0.5), x, loss=jnp.sum)
    res = gf.gradient_flow(_resnet(lambda r: Scale(0.5, r), 3, value=0.5), x, loss=jnp.sum)
    np.testing.assert_allclose(plain.grad_norm[:, 0], [0.125, 0.25, 0.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(res.grad_norm[:, 0], [3.375, 2.25, 1.5, 1.0], rtol=1e-12)
    assert gf.jacobian_product([0.5] * 3, skip=False) == pytest.approx(0.125)
    assert gf.jacobian_product([0.5] * 3) == pytest.approx(3.375)
    paths = gf.path_expansion([0.5] * 3)
    np.testing.assert_allclose(paths.by_length, [1.0, 1.5, 0.75, 0.125])  # C(3, k) / 2^k; k = 0 is I
    assert paths.by_length.sum() == pytest.approx(res.grad_norm[0, 0])
    np.testing.assert_allclose(res.response_std[:3], 0.0)  # one sample, one feature: std 0


def _cross_entropy(model, x, y) -> float:
    graphdef, state = nnx.split(model)
    logits = jax.jit(lambda s, x: nnx.merge(graphdef, s, copy=True)(x))(state, x)
    return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))


@pytest.mark.parametrize("skip", [True, False], ids=["resnet", "plain"])
def test_stage_gradients_and_responses_match_a_hand_written_stack(skip):
    width, depth = 3, 4
    make = _mlp(width)
    stage = (_resnet if skip else _plain)(make, depth)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, width)))
    w = jnp.asarray(np.random.default_rng(1).standard_normal((6, width)))
    loss = lambda out: jnp.sum(jnp.tanh(out) * w)
    flow = gf.gradient_flow(stage, x, loss=loss)
    graphdef, state = nnx.split(stage.field if skip else stage.fields)

    @jax.jit
    def reference(state, x):  # the stack written out layer by layer; jax.grad of the tail from each x_l
        fields = nnx.merge(graphdef, state)
        layer = lambda k, z: field_at(fields, k)(float(k), z) + (z if skip else 0.0)

        def tail(start, z):
            for k in range(start, depth):
                z = layer(k, z)
            return loss(z)

        states = [x]
        for k in range(depth):
            states.append(layer(k, states[-1]))
        grads = [jax.grad(lambda z, i=i: tail(i, z))(states[i]) for i in range(depth + 1)]
        stds = [jnp.std(field_at(fields, k)(float(k), states[k])) for k in range(depth)]
        return jnp.stack([jnp.linalg.norm(g, axis=-1) for g in grads]), jnp.stack(stds), tail(0, x)

    norms, stds, value = reference(state, x)
    np.testing.assert_allclose(flow.grad_norm, norms, rtol=1e-6)
    np.testing.assert_allclose(flow.response_std[:depth], stds, rtol=1e-6)
    assert np.isnan(flow.response_std[depth]) and flow.loss == pytest.approx(float(value), rel=1e-9)


def test_momentum_stage_gradients_match_a_hand_written_momentum_loop():
    """gradient_flow restates the momentum rule v_{l+1} = gamma v_l + (1 - gamma) F_l(x_l), x_{l+1} = x_l +
    v_{l+1}: its |dL/d(x_l, v_l)| and std F_l(x_l) against jax.grad of that loop written out by hand."""
    width, depth, gamma = 3, 4, 0.7
    stage = _filled(lambda: MomentumBlock(_mlp(width), steps=depth, gamma=gamma, rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, width)))
    w = jnp.asarray(np.random.default_rng(1).standard_normal((6, width)))
    loss = lambda out: jnp.sum(jnp.tanh(out) * w)
    flow = gf.gradient_flow(stage, x, loss=loss)
    graphdef, state = nnx.split(stage.fields)

    @jax.jit
    def reference(state, x):
        fields = nnx.merge(graphdef, state)
        branch = lambda k, z: field_at(fields, k)(float(k), z)

        def layer(k, c):
            v = gamma * c[1] + (1 - gamma) * branch(k, c[0])
            return c[0] + v, v

        def tail(start, c):
            for k in range(start, depth):
                c = layer(k, c)
            return loss(c[0])

        states = [(x, jnp.zeros_like(x))]
        for k in range(depth):
            states.append(layer(k, states[-1]))
        norms = []
        for i, c in enumerate(states):
            gx, gv = jax.grad(lambda c, i=i: tail(i, c))(c)
            norms.append(jnp.sqrt(jnp.sum(gx**2, -1) + jnp.sum(gv**2, -1)))
        stds = [jnp.std(branch(k, states[k][0])) for k in range(depth)]
        return jnp.stack(norms), jnp.stack(stds), tail(0, states[0])

    norms, stds, value = reference(state, x)
    np.testing.assert_allclose(flow.grad_norm, norms, rtol=1e-6)
    np.testing.assert_allclose(flow.response_std[:depth], stds, rtol=1e-6)
    assert flow.loss == pytest.approx(float(value), rel=1e-9)


def test_classifier_matches_observe_model():
    model = _filled(lambda: on.models.build("resnet", input_shape=(6,), num_classes=3, width=4, depth=2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 6)))
    y = jnp.asarray([0, 1, 2, 0, 1])
    flow = gf.gradient_flow(model, x, y)
    observed = on.analysis.observe_model(model, x, y)  # gradients of the batch mean: B times smaller
    reference = np.concatenate([5 * np.linalg.norm(np.asarray(o.grads), axis=-1) for o in observed])
    np.testing.assert_allclose(flow.grad_norm, reference, rtol=1e-5)
    assert list(flow.stage) == [0] * 3 and list(flow.layer) == [0, 1, 2]
    # and independently of observe_model: jax.grad through the model's own stem, stage and head
    graphdef, state = nnx.split(model)

    @jax.jit
    def ends(state, x):
        m = lambda: nnx.merge(graphdef, state, copy=True)  # a fresh copy per trace: stages record their NFE
        summed = lambda logits: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        h0 = m().stem(x)
        g0 = jax.grad(lambda h: summed(m().head(m().stages[0](h))))(h0)
        g_out = jax.grad(lambda h: summed(m().head(h)))(m().stages[0](h0))
        return jnp.linalg.norm(g0, axis=-1), jnp.linalg.norm(g_out, axis=-1)

    g0, g_out = ends(state, x)
    np.testing.assert_allclose(flow.grad_norm[0], g0, rtol=1e-9)
    np.testing.assert_allclose(flow.grad_norm[-1], g_out, rtol=1e-9)


@pytest.mark.parametrize("skip", [True, False], ids=["resnet", "plain"])
def test_product_of_layer_jacobians_is_the_stage_jacobian(skip):
    width, depth = 3, 3
    stage = (_resnet if skip else _plain)(_mlp(width), depth, seed=2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal(width))
    jac = gf.layer_jacobians(stage, x)
    graphdef, state = nnx.split(stage)
    expected = jax.jit(jax.jacobian(lambda z: nnx.merge(graphdef, state, copy=True)(z[None])[0]))(x)
    np.testing.assert_allclose(gf.jacobian_product(jac, skip=skip), expected, rtol=1e-6, atol=1e-9)
    if skip:
        paths = gf.path_expansion(jac)
        np.testing.assert_allclose(paths.terms.sum(0), expected, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(paths.by_length[0], np.eye(width))  # the identity path


def test_path_expansion_counts_and_refusals():
    depth, a = 5, -0.3
    paths = gf.path_expansion([a] * depth)
    assert paths.terms.shape == (2**depth,)
    for k in range(depth + 1):
        assert int((paths.lengths == k).sum()) == math.comb(depth, k)
        assert paths.by_length[k] == pytest.approx(math.comb(depth, k) * a**k)
    scales = np.array([2.0, 3.0, 5.0, 7.0])  # distinct primes: each product names its subset
    single = gf.path_expansion(scales)
    np.testing.assert_array_equal(single.terms, [np.prod(scales[s]) for s in single.subsets])
    assert not single.subsets[0].any() and single.subsets[-1].all()
    mats = np.random.default_rng(0).standard_normal((4, 2, 2))
    # ordered products: the non-commuting J_l of a path are applied first layer first (J_3 J_1 for {1, 3})
    terms = gf.path_expansion(mats).terms
    np.testing.assert_allclose(terms[0b1010], mats[3] @ mats[1], atol=1e-15)
    np.testing.assert_allclose(gf.path_expansion(mats).by_length.sum(0), gf.jacobian_product(mats), atol=1e-12)
    with pytest.raises(ValueError, match="L must be <= 16, got L=17"):
        gf.path_expansion([0.5] * 17)
    with pytest.raises(ValueError, match=r"\(L, n, n\) or \(L,\), got shape \(2, 2, 3\)"):
        gf.jacobian_product(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("family, stages", [("momentum", 1), ("anode", 1), ("hamiltonian", 2)])
def test_other_step_rules_reproduce_the_models_loss(family, stages):
    """Momentum stages are taken layer by layer (state (x, v)), ANODE's augmented ODE block too (on the padded
    state); Hamiltonian stages count as one layer; the transitions between stages are the model's."""
    model = _filled(lambda: on.models.build(family, input_shape=(4,), num_classes=2, width=4, depth=2,
                                              stages=stages))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    y = jnp.asarray([0, 1, 1])
    flow = gf.gradient_flow(model, x, y)
    assert flow.loss == pytest.approx(_cross_entropy(model, x, y), rel=1e-6)
    per_stage = 2 if family == "hamiltonian" else 3  # the stage's input and output / x_0, x_1, x_2
    assert flow.grad_norm.shape == (per_stage * stages, 3)
    assert list(flow.stage) == [s for s in range(stages) for _ in range(per_stage)]
    assert np.all(np.isfinite(flow.grad_norm)) and np.any(flow.grad_norm > 0)


def test_dense_stage_gradients_match_a_hand_written_concatenation():
    """A dense stage layer by layer: x_{l+1} = concat(x_l, H_l(x_l)), the state growing by `growth` channels;
    |dL/dx_l| per sample against jax.grad of a hand-written loop from x_l (its later layers, the transition,
    the head), std H_l(x_l) and the loss; each layer's state is the whole concatenation so far."""
    depth, growth, width = 2, 2, 4
    model = _filled(lambda: on.models.build("densenet", input_shape=(5,), num_classes=3, width=width,
                                              depth=depth, growth=growth), seed=4)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)))
    y = jnp.asarray([0, 1, 2, 1])
    flow = gf.gradient_flow(model, x, y)
    assert list(flow.stage) == [0] * (depth + 1) and list(flow.layer) == list(range(depth + 1))
    assert flow.loss == pytest.approx(_cross_entropy(model, x, y), rel=1e-9)
    graphdef, state = nnx.split(model)

    @jax.jit
    def reference(state, x):
        m = lambda: nnx.merge(graphdef, state, copy=True)
        stage = m().stages[0]
        summed = lambda logits: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        def tail(i, c):
            for layer in stage.layers[i:]:
                c = jnp.concatenate([c, layer(c)], -1)
            return summed(m().head(stage.transition(c)))

        states = [m().stem(x)]
        for layer in stage.layers:
            states.append(jnp.concatenate([states[-1], layer(states[-1])], -1))
        norms = [jnp.linalg.norm(jax.grad(lambda c, i=i: tail(i, c))(c), axis=-1) for i, c in enumerate(states)]
        return [s.shape[-1] for s in states], jnp.stack(norms), jnp.stack([jnp.std(la(s)) for la, s in
                                                                          zip(stage.layers, states)])

    widths, norms, stds = reference(state, x)
    assert widths == [width + growth * k for k in range(depth + 1)]
    np.testing.assert_allclose(flow.grad_norm, norms, rtol=1e-9)
    np.testing.assert_allclose(flow.response_std[:depth], stds, rtol=1e-9)
    assert np.isnan(flow.response_std[depth])
    with pytest.raises(ValueError, match="residual branches on the state x alone"):
        gf.layer_jacobians(model.stages[0], x[:1, :width])


def test_refusals():
    model = _filled(lambda: on.models.build("plain", input_shape=(4,), num_classes=2, width=4, depth=2))
    with pytest.raises(ValueError, match="needs the labels y"):
        gf.gradient_flow(model, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="needs loss=L"):
        gf.gradient_flow(model.stages[0], jnp.zeros((2, 4)))


@pytest.mark.parametrize("family, kind, preact, stages",
                         [("plain", "mlp", False, 2), ("resnet", "conv1d", True, 1), ("highway", "mlp", False, 1),
                          ("node", "mlp", False, 1), ("node", "conv1d", False, 1), ("anode", "mlp", False, 1)])
def test_study_nets_numpy_initialiser_draws_the_library_initialisers_distributions(family, kind, preact, stages):
    """The depth studies draw initial parameters by numpy (experiments/studies/_depthnets.initialise) to skip
    compiling the initialisers: every leaf must match the library's own draw in what is zero, what is one, and
    the scale of every kernel (max |w| of a normal truncated at two standard deviations, and the std)."""
    from experiments.studies._depthnets import initialise

    build = lambda r: on.models.build(family, kind=kind, input_shape=(16, 1) if kind == "conv1d" else (16,),
                                      num_classes=10, width=8, depth=3, stages=stages, preact=preact, rngs=r)
    graphdef, ours = nnx.split(initialise(nnx.eval_shape(lambda: build(nnx.Rngs(0))), seed=0))
    _, library = nnx.split(build(nnx.Rngs(jax.random.key(1, impl="rbg"))))
    flat, lib = dict(nnx.to_flat_state(ours)), dict(nnx.to_flat_state(library))
    assert flat.keys() == lib.keys()
    kernels = 0
    for path, leaf in lib.items():
        a, b = np.asarray(flat[path][...]), np.asarray(leaf[...])
        assert a.shape == b.shape and a.dtype == b.dtype, path
        # constants (zeros, ones, a highway gate's bias) must be equal
        if not np.issubdtype(b.dtype, np.floating) or np.all(b == b.reshape(-1)[0]):
            if np.issubdtype(b.dtype, np.floating):
                np.testing.assert_array_equal(a, b, err_msg=str(path))
            continue
        kernels += 1
        wide = 0.0 if a.size >= 96 else 0.5  # looser for a few dozen entries (a stem's 3-wide kernel)
        assert 0.8 - wide < np.abs(a).max() / np.abs(b).max() < 1.25 + 2 * wide, path
        assert 0.75 - wide < a.std() / b.std() < 1.33 + 2 * wide, path
    assert kernels >= 4  # stem, the fields' two layers (stacked over steps), head (and transitions)


def test_study_nets_initialiser_draws_a_trajectory_models_shared_field_without_a_step_axis():
    """A Trajectory model (node) holds one shared field: its kernels' fan-in is every axis but the last, as the
    library's LeCun normal draw has it (the std of every kernel within 25% of the library's)."""
    from experiments.studies._depthnets import initialise

    build = lambda r: on.models.trajectory("node", dim=2, ts=np.linspace(0.0, 1.0, 5), width=16, rngs=r)
    ours = dict(nnx.to_flat_state(nnx.state(initialise(nnx.eval_shape(lambda: build(nnx.Rngs(0))), seed=0))))
    lib = dict(nnx.to_flat_state(nnx.state(build(nnx.Rngs(1)))))
    kernels = [p for p in lib if str(p[-1]) == "kernel"]
    assert len(kernels) >= 2
    for path in kernels:
        a, b = np.asarray(ours[path][...]), np.asarray(lib[path][...])
        assert a.shape == b.shape and 0.75 < a.std() / b.std() < 1.33, (path, a.std(), b.std())


def test_study_nets_initialiser_draws_an_rnode_model_as_the_unregularised_one():
    """An RNODE block holds raw key data (uint32) for its Hutchinson probes: the numpy initialiser draws it
    from a stream of its own, so every float leaf equals the same model's without RNODE (the arms of a
    comparison start alike), and the key differs between seeds."""
    from experiments.studies._depthnets import initialise

    build = lambda **rnode: lambda: on.models.build("node", kind="mlp", input_shape=(6,), num_classes=3, width=4,
                                                    integrator="dopri5", gradient="adjoint", rngs=nnx.Rngs(0),
                                                    **rnode)
    plain = dict(nnx.to_flat_state(nnx.state(initialise(nnx.eval_shape(build()), seed=3))))
    reg = dict(nnx.to_flat_state(nnx.state(initialise(nnx.eval_shape(build(lambda_K=0.01, lambda_J=0.01)), 3))))
    other = dict(nnx.to_flat_state(nnx.state(initialise(nnx.eval_shape(build(lambda_J=0.01)), seed=4))))
    keys = [p for p, leaf in reg.items() if np.asarray(leaf[...]).dtype == np.uint32]
    assert len(keys) == 1 and not np.array_equal(np.asarray(reg[keys[0]][...]), np.asarray(other[keys[0]][...]))
    for path, leaf in plain.items():
        if np.issubdtype(np.asarray(leaf[...]).dtype, np.floating):
            np.testing.assert_array_equal(np.asarray(reg[path][...]), np.asarray(leaf[...]), err_msg=str(path))
    assert sum(np.asarray(leaf[...]).size for leaf in plain.values()) > 50
