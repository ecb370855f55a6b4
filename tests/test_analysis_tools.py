"""The study tools of odenets.analysis against independent references: lesions and reorderings,
depth interpolation, path expansions, Lipschitz estimates, attacks and pruning masks."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.special import comb

import odenets as on
from odenets import analysis

RNG = np.random.default_rng(0)


@functools.cache
def _built(family, depth):
    return on.models.build(family, input_shape=(3,), num_classes=3, width=4, depth=depth, kind="mlp", rngs=1)


def tiny(family="resnet", depth=3):
    """A small classifier (a fresh copy: tests may change it); built once per family and depth."""
    return nnx.clone(_built(family, depth))


def shaped(family, depth):
    """The structure of `tiny(family, depth)` without initialising it (nnx.eval_shape: no compile)."""
    return nnx.eval_shape(lambda: on.models.build(family, input_shape=(3,), num_classes=3, width=4, depth=depth,
                                                  kind="mlp", rngs=1))


def stack_of(model, s=0):
    stage = model.stages[s]
    return stage.field if isinstance(stage, on.models.ODEBlock) else stage.fields


def set_stack(model, fn, s=0):
    """Replace every leaf v of stage s's per-step stack by fn(v)."""
    graphdef, state = nnx.split(stack_of(model, s))
    new = nnx.merge(graphdef, jax.tree.map(fn, state))
    if isinstance(model.stages[s], on.models.ODEBlock):
        model.stages[s].field = new
    else:
        model.stages[s].fields = new


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state, copy=True)(x)


def run(model, x):
    """model(x), compiled once per model structure (models of equal depth share it)."""
    return _apply(*nnx.split(model), x)


X = jnp.asarray(RNG.normal(size=(7, 3)))
Y = np.array([0, 1, 2, 0, 1, 2, 0])


# -- lesion ---------------------------------------------------------------------------------------------
def test_deleting_a_block_whose_branch_is_zero_changes_nothing():
    """F_1 = W_out s(.) + b_out = 0 (output layer zeroed): x_2 = x_1 + F_1 = x_1, so deleting it is exact."""
    model = tiny()
    model.stages[0].field.out.kernel[...] = model.stages[0].field.out.kernel[...].at[1].set(0.0)
    model.stages[0].field.out.bias[...] = model.stages[0].field.out.bias[...].at[1].set(0.0)
    lesioned = analysis.delete_blocks(model, [(0, 1)])
    assert lesioned.stages[0].steps == 2 and model.stages[0].steps == 3  # a copy; the model is untouched
    np.testing.assert_allclose(run(lesioned, X), run(model, X), rtol=1e-12, atol=1e-12)
    other = analysis.delete_blocks(model, [(0, 2)])  # a block whose branch is not zero does change the output
    assert np.max(np.abs(np.asarray(run(other, X) - run(model, X)))) > 1e-3


def test_a_permutation_of_identical_blocks_changes_nothing():
    model = tiny()
    set_stack(model, lambda v: jnp.broadcast_to(v[1], v.shape))  # every step holds block 1's parameters
    order = {0: [2, 0, 1]}
    np.testing.assert_allclose(run(analysis.restack(model, order), X), run(model, X), rtol=1e-12, atol=1e-12)
    assert analysis.lesion_accuracy(model, X, Y, order) == analysis.lesion_accuracy(model, X, Y)


@pytest.mark.parametrize("family", ["resnet", "plain"])
def test_deletion_equals_a_hand_built_shallower_model(family):
    """Deleting block 1 of 3 = a 2-block model holding blocks 0 and 2 (same stem and head)."""
    model = tiny(family)
    graphdef, small = nnx.split(shaped(family, 2))
    _, state = nnx.split(model)
    shallow = nnx.merge(graphdef, jax.tree.map(lambda v, s: v[np.array([0, 2])] if v.shape != s.shape else v,
                                               state, small))
    keep = [True, False, True]
    lesioned = analysis.restack(model, analysis.keep_orders(model, keep))
    np.testing.assert_allclose(run(lesioned, X), run(shallow, X), rtol=1e-12, atol=1e-12)
    deleted = analysis.delete_blocks(model, [(0, 1)])
    np.testing.assert_allclose(run(deleted, X), run(shallow, X), rtol=1e-12)
    assert len(analysis.random_deletion(model, 2, seed=3)) == 2
    assert sorted(analysis.random_swaps(model, 3, seed=0)[0].tolist()) == [0, 1, 2]


def test_lesions_refuse_what_they_cannot_run():
    model = tiny()
    with pytest.raises(ValueError, match=r"non-empty sequence of step indices in \[0, 3\)"):
        analysis.restack(model, {0: [0, 3]})
    with pytest.raises(ValueError, match="stage 1 has no per-step blocks.*valid choices: 0"):
        analysis.restack(model, {1: [0]})
    with pytest.raises(ValueError, match=r"keep must be a boolean mask of shape \(3,\)"):
        analysis.keep_orders(model, [True])
    assert analysis.blocks(shaped("node", 2)) == []
    assert analysis.blocks(shaped("anode", 2)) == []  # ANODE's wrapped ODE block shares one field


# -- depth ----------------------------------------------------------------------------------------------
def test_depth_interpolation_by_hand_and_identity():
    w = analysis.depth_weights(3, 5)  # s_j = 0, 1/4, 1/2, 3/4, 1 on the grid 0, 1/2, 1
    np.testing.assert_allclose(w, [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(analysis.depth_weights(4, 4), np.eye(4))
    w = analysis.depth_weights(4, 3)  # s_j = 0, 1/2, 1 on the grid 0, 1/3, 2/3, 1: 1/2 is halfway 1/3..2/3
    np.testing.assert_allclose(w, [[1, 0, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1]])
    model = tiny()
    np.testing.assert_allclose(run(analysis.interpolate_depth(model, 3), X), run(model, X), rtol=1e-12, atol=1e-12)
    deeper = analysis.interpolate_depth(model, 5)  # s_j = j / 4; grid k / 2: odd j are midpoints
    block, old = deeper.stages[0], model.stages[0]
    assert (block.steps, block.t1, old.t1) == (5, 3.0, 3.0)  # the interval kept: h = 3 / 5
    kernel, k_old = block.field.out.kernel[...], old.field.out.kernel[...]
    np.testing.assert_allclose(kernel[::2], k_old, rtol=1e-12)
    np.testing.assert_allclose(kernel[1::2], (k_old[:-1] + k_old[1:]) / 2, rtol=1e-12)
    assert analysis.interpolate_depth(shaped("anode", 2), 4).stages[0].block.steps == 4  # ANODE's inner block


def test_smooth_stack_by_hand_keeps_the_variance_and_is_smooth():
    a, b = RNG.normal(size=(2, 4))
    tree = {"w": jnp.asarray(np.stack([a, RNG.normal(size=4), b])), "bias": jnp.zeros((3, 4))}
    out = analysis.smooth_stack(tree, 2)  # anchors steps 0 and 2; step 1: (a + b) / 2 / |(1/2, 1/2)|
    np.testing.assert_allclose(out["w"], [a, (a + b) / np.sqrt(2), b], rtol=1e-6)
    np.testing.assert_array_equal(out["bias"], 0.0)  # constant in depth: kept
    np.testing.assert_allclose(analysis.smooth_stack(tree, 3)["w"], tree["w"])  # K = N: the draws themselves
    np.testing.assert_allclose(analysis.smooth_stack(tree, 1)["w"], np.stack([a] * 3), rtol=1e-6)
    draws = jnp.asarray(RNG.normal(size=(64, 4000)))  # 64 steps, i.i.d. N(0, 1)
    smooth = np.asarray(analysis.smooth_stack(draws, 4))
    np.testing.assert_allclose(smooth.std(axis=1), 1.0, atol=0.05)  # every step keeps one draw's variance
    assert analysis.roughness(draws) == pytest.approx(2.0, rel=0.05)  # E|a - b|^2 = 2 E|a|^2
    assert analysis.roughness(smooth) < 0.02  # increments O(K / N)
    with pytest.raises(ValueError, match="anchors"):
        analysis.smooth_stack(tree, 4)


def test_smooth_depth_of_a_model_smooths_only_its_per_step_stacks():
    graphdef, state = nnx.split(shaped("resnet", 3))  # random values, no compiled initialisers
    model = nnx.merge(graphdef, jax.tree.map(lambda v: jnp.asarray(RNG.normal(size=v.shape), v.dtype), state))
    smooth = analysis.smooth_depth(model, 1)  # constant in depth
    kernel, old = smooth.stages[0].field.out.kernel[...], model.stages[0].field.out.kernel[...]
    np.testing.assert_allclose(kernel, np.broadcast_to(old[:1], old.shape), rtol=1e-6)
    assert analysis.roughness(analysis.per_step_params(smooth)[0]) == 0.0
    np.testing.assert_array_equal(smooth.head.linear.kernel[...], model.head.linear.kernel[...])
    with pytest.raises(ValueError, match="per-step"):
        analysis.smooth_depth(shaped("node", 2), 2)


# -- paths ----------------------------------------------------------------------------------------------
def expansion(mats, g):
    """sum over subsets S of (prod_{l in S} A_l)^T g, binned by |S|: the expansion of prod (I + A_l)."""
    n, d = len(mats), len(g)
    out = np.zeros((n + 1, d))
    for subset in itertools.product([0, 1], repeat=n):
        p = np.eye(d)
        for a, on_ in zip(mats, subset):
            p = a @ p if on_ else p
        out[sum(subset)] += p.T @ g
    return out


def test_path_gradients_reproduce_the_expansion_of_linear_blocks():
    n, d = 5, 3
    mats = RNG.normal(size=(n, d, d)) * 0.6
    g = RNG.normal(size=d)
    parts = analysis.path_gradients(lambda x, a: a @ x, jnp.zeros((n, d)), jnp.asarray(g), jnp.asarray(mats))
    np.testing.assert_allclose(parts, expansion(mats, g), rtol=1e-10, atol=1e-12)
    full = np.eye(d)
    for a in mats:
        full = (np.eye(d) + a) @ full
    np.testing.assert_allclose(np.sum(parts, 0), full.T @ g, rtol=1e-10)  # all lengths: dL/dx_0
    np.testing.assert_allclose(analysis.path_counts(n), comb(n, np.arange(n + 1)))
    np.testing.assert_allclose(analysis.path_length_distribution(n), comb(n, np.arange(n + 1)) / 2**n)
    # sampled single paths of length 2: C(5, 2) x their mean estimates G_2 (unbiased)
    single = analysis.sample_path_gradients(lambda x, a: a @ x, jnp.zeros((n, d)), jnp.asarray(g),
                                            jnp.asarray(mats), 2, 4000, jax.random.key(0))
    estimate = comb(n, 2) * np.mean(np.asarray(single), 0)
    np.testing.assert_allclose(estimate, parts[2], atol=0.1 * np.linalg.norm(parts[2]) + 0.05)


def test_path_parts_of_a_nonlinear_stack_sum_to_its_gradient():
    n, d = 4, 3
    mats = jnp.asarray(RNG.normal(size=(n, d, d)) * 0.5)
    branch = lambda x, a: jnp.tanh(a @ x)

    def forward(x):
        xs = []
        for a in mats:
            xs.append(x)
            x = x + branch(x, a)
        return x, jnp.stack(xs)

    x0 = jnp.asarray(RNG.normal(size=d))
    loss = lambda x: jnp.sum(jnp.sin(forward(x)[0]))
    xn, xs = forward(x0)
    parts = analysis.path_gradients(branch, xs, jnp.cos(xn), mats)
    np.testing.assert_allclose(np.sum(parts, 0), jax.grad(loss)(x0), rtol=1e-10)
    np.testing.assert_allclose(parts[0], jnp.cos(xn), rtol=1e-12)  # the length-0 path: the skips alone


def test_stage_paths_of_a_model_start_from_the_gradient_at_its_output():
    """The length-0 path of a classifier's stage is the skips alone: |G_0| = |dL/dx_N|, computed here
    from the head."""
    model = tiny()
    (paths,) = analysis.stage_paths(model, X, Y)
    graphdef, state = nnx.split(model)

    @jax.jit
    def output_gradient(state, x):
        m = nnx.merge(graphdef, state, copy=True)
        return jax.grad(lambda f: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m.head(f), Y)))(
            m.features(x))

    g = output_gradient(state, X)
    assert paths.exact_norm[0] == pytest.approx(float(jnp.linalg.norm(g)), rel=1e-8)
    assert paths.exact_norm.shape == (4,) and np.all(np.isnan(paths.sampled_norm))


# -- lipschitz -------------------------------------------------------------------------------------------
def test_spectral_norm_of_a_linear_field_and_of_a_jacobian():
    a = jnp.asarray(RNG.normal(size=(6, 6)))
    sigma = analysis.spectral_norm(lambda x: a @ x, jnp.ones(6), iters=300)
    assert float(sigma) == pytest.approx(np.linalg.norm(np.asarray(a), 2), rel=1e-6)
    xb = jnp.asarray(RNG.normal(size=(4, 6)))
    f = lambda x: jnp.tanh(x @ a.T) * 0.5
    per = analysis.spectral_norm(f, xb, batched=True, iters=300)
    jacobians = jax.jit(jax.vmap(jax.jacobian(lambda v: jnp.tanh(a @ v) * 0.5)))(xb)
    exact = np.linalg.norm(np.asarray(jacobians), 2, axis=(1, 2))
    np.testing.assert_allclose(per, exact, rtol=1e-6)


def test_block_lipschitz_bounds_a_linear_resnet():
    """Fields F_k(x) = A_k x (MLP with identity activation): Lip(F_k) = |A_k|_2 exactly, and the
    Euler step's norm |I + h A_k| is at most 1 + h |A_k|."""
    model = tiny()
    field = model.stages[0].field
    field.activation = lambda z: z
    w1, w2 = field.hidden[0].kernel[...], field.out.kernel[...]
    (lip,) = analysis.block_lipschitz(model, X, iters=200)
    exact = [np.linalg.norm(np.asarray(w1[k] @ w2[k]), 2) for k in range(3)]  # x W1 W2: rows are states
    np.testing.assert_allclose(lip.field, exact, rtol=1e-6)
    steps = [np.linalg.norm(np.eye(4) + np.asarray(w1[k] @ w2[k]), 2) for k in range(3)]  # Euler, h = 1
    np.testing.assert_allclose(lip.step, steps, rtol=1e-6)
    assert np.all(lip.step <= lip.bound + 1e-9) and lip.product == pytest.approx(np.prod(1 + np.array(exact)))


# -- attacks --------------------------------------------------------------------------------------------
def test_fgsm_on_a_linear_classifier_is_the_closed_form_worst_case():
    """Two classes, logits W x + b: the worst L_inf perturbation lowers the margin by eps |w_y - w_o|_1;
    FGSM reaches it, and no vertex of the eps-box does better (brute force)."""
    d, eps = 4, 0.3
    w, b = jnp.asarray(RNG.normal(size=(2, d))), jnp.asarray(RNG.normal(size=2))
    logits = lambda x: x @ w.T + b
    x, y = jnp.asarray(RNG.normal(size=(5, d))), jnp.asarray(RNG.integers(0, 2, 5))
    margin = lambda z: (logits(z)[jnp.arange(5), y] - logits(z)[jnp.arange(5), 1 - y])
    adv = analysis.fgsm(logits, x, y, eps)
    dw = np.asarray(w[y] - w[1 - y])
    np.testing.assert_allclose(margin(adv), margin(x) - eps * np.abs(dw).sum(1), rtol=1e-10)
    vertices = np.array(list(itertools.product([-eps, eps], repeat=d)))
    worst = np.min([np.asarray(margin(x + v)) for v in vertices], 0)
    np.testing.assert_allclose(margin(adv), worst, rtol=1e-10)
    assert np.max(np.abs(np.asarray(adv - x))) == pytest.approx(eps)


def test_pgd_loss_is_at_least_fgsm_loss_and_accuracy_falls():
    w1, w2 = jnp.asarray(RNG.normal(size=(3, 16))), jnp.asarray(RNG.normal(size=(16, 3)))
    net = lambda z: jnp.tanh(z @ w1) @ w2
    x, y = jnp.asarray(RNG.normal(size=(64, 3))), jnp.asarray(RNG.integers(0, 3, 64))
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(net(z), y)
    eps = 0.3
    f, p = analysis.fgsm(net, x, y, eps), analysis.pgd(net, x, y, eps, alpha=eps / 4, steps=10)
    assert np.max(np.abs(np.asarray(p - x))) <= eps + 1e-12
    assert float(jnp.mean(ce(p))) >= float(jnp.mean(ce(f))) > float(jnp.mean(ce(x)))
    assert np.all(np.asarray(ce(p)) >= np.asarray(ce(x)) - 1e-12)  # the best iterate, x included


def test_attack_accuracy_of_a_model_never_rises_above_clean():
    x, y = jnp.asarray(RNG.normal(size=(64, 3))), jnp.asarray(RNG.integers(0, 3, 64))
    model = tiny()
    clean = float(np.mean(np.argmax(run(model, x), -1) == y))
    assert analysis.attack_accuracy(model, x, y, 0.0) == pytest.approx(clean)
    assert analysis.attack_accuracy(model, x, y, 0.5) <= clean


# -- prune ----------------------------------------------------------------------------------------------
def test_masked_training_keeps_pruned_weights_at_zero_and_the_kept_fraction():
    model = tiny()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    flags = [analysis.weights_only(p, v) for p, v in jax.tree_util.tree_leaves_with_path(params)]
    total = sum(np.size(v) for v, f in zip(jax.tree.leaves(params), flags) if f)
    masks = analysis.magnitude_masks(params, 0.2)
    masks = analysis.magnitude_masks(params, 0.2, masks)
    live = total - round(0.2 * total)
    live -= round(0.2 * live)
    assert analysis.kept_fraction(masks) == pytest.approx(live / total)
    # the pruned are the smallest: every pruned |w| <= every kept |w| (one global threshold)
    pruned = np.concatenate([np.abs(np.asarray(v))[np.asarray(m) == 0].ravel()
                             for v, m, f in zip(jax.tree.leaves(params), jax.tree.leaves(masks), flags) if f])
    kept = np.concatenate([np.abs(np.asarray(v))[np.asarray(m) == 1].ravel()
                           for v, m, f in zip(jax.tree.leaves(params), jax.tree.leaves(masks), flags) if f])
    assert pruned.max() <= kept.min()
    assert analysis.kept_fraction(analysis.random_masks(masks, seed=1)) == pytest.approx(live / total)
    tx = analysis.masked(optax.adamw(0.05, weight_decay=0.1), masks)
    state = tx.init(params)  # training starts from the unmasked weights: the wrapper zeroes them

    @jax.jit
    def step(params, state):
        loss = lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            nnx.merge(graphdef, p, rest, copy=True)(X), Y))
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    trained = params
    for _ in range(5):
        trained, state = step(trained, state)
    for v, m, v0 in zip(jax.tree.leaves(trained), jax.tree.leaves(masks), jax.tree.leaves(params)):
        assert np.all(np.asarray(v)[np.asarray(m) == 0] == 0.0)
        assert np.all(np.asarray(v)[np.asarray(m) == 1] != np.asarray(v0)[np.asarray(m) == 1])
    nonzero = jax.tree.map(lambda v: (v != 0).astype(v.dtype), trained)
    assert analysis.kept_fraction(nonzero) == pytest.approx(live / total)
    np.testing.assert_array_equal(jax.tree.leaves(analysis.rewind(params, masks))[1],
                                  jax.tree.leaves(params)[1] * jax.tree.leaves(masks)[1])


def test_masks_live_in_the_optimiser_state_one_compiled_step_trains_every_mask():
    """masked(tx, m).update reads the state's masks: a new mask is state._replace(masks=...), honoured by the
    same compiled step (no second compile); pruned weights are exactly 0 after a step under either mask."""
    graphdef, params, rest = nnx.split(shaped("resnet", 3), nnx.Param, ...)  # shapes only: values drawn here
    params = jax.tree.map(lambda a: jnp.asarray(RNG.normal(size=a.shape), a.dtype), params)
    rest = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), rest)
    first = analysis.magnitude_masks(params, 0.5)
    second = analysis.random_masks(first, seed=3)
    tx = analysis.masked(optax.adam(0.05), analysis.ones_like(params))

    @jax.jit
    def step(params, state):
        loss = lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            nnx.merge(graphdef, p, rest, copy=True)(X), Y))
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for masks in (first, second):
        trained, state = step(params, tx.init(params)._replace(masks=masks))
        for v, m in zip(jax.tree.leaves(trained), jax.tree.leaves(masks)):
            assert np.all(np.asarray(v)[np.asarray(m) == 0] == 0.0)
        assert analysis.kept_fraction(jax.tree.map(lambda v: (v != 0).astype(v.dtype), trained)) == pytest.approx(
            analysis.kept_fraction(masks))
    assert step._cache_size() == 1


def test_transfer_masks_moves_a_plain_ticket_onto_the_residual_net_and_refuses_other_shapes():
    """The plain and the resnet family of one stage have the same leaves in the same order: a mask moves leaf by
    leaf (values unchanged, the residual net's tree); a net of other shapes is refused, naming the shapes."""
    drawn = lambda shapes: jax.tree.map(lambda a: RNG.normal(size=a.shape).astype(a.dtype), shapes)
    plain = drawn(nnx.state(shaped("plain", 3), nnx.Param))  # shapes only: no model is initialised
    residual = nnx.state(shaped("resnet", 3), nnx.Param)
    masks = analysis.magnitude_masks(plain, 0.3)
    moved = analysis.transfer_masks(masks, residual)
    assert jax.tree.structure(moved) == jax.tree.structure(residual)
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(moved), strict=True):
        np.testing.assert_array_equal(a, b)
    assert analysis.kept_fraction(moved) == pytest.approx(analysis.kept_fraction(masks))
    with pytest.raises(ValueError, match=r"masks of leaf shapes .* do not fit parameters of leaf shapes"):
        analysis.transfer_masks(masks, nnx.state(shaped("resnet", 2), nnx.Param))
