"""odenets.analysis.freeze: block masks over per-step stacks, and an optimiser that holds frozen
entries exactly fixed (Adam's moments would move them if only the gradient were masked)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import odenets as on
from odenets.analysis import block_mask, frozen, with_mask
from odenets.analysis.prune import MaskedState


def tiny(depth=3, stages=1):
    """A small residual classifier with normal(0, 0.5) parameters (drawn by numpy: no compiled initialisers)."""
    abstract = nnx.eval_shape(lambda: on.models.build("resnet", input_shape=(3,), num_classes=3, width=4,
                                                      depth=depth, stages=stages, kind="mlp", rngs=1))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)
    draw = lambda v: jnp.asarray(0.5 * rng.standard_normal(v.shape) if jnp.issubdtype(v.dtype, jnp.floating)
                                 else np.zeros(v.shape), v.dtype)
    return nnx.merge(graphdef, jax.tree.map(draw, state))


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_block_mask_opens_the_named_slices_and_top_level_groups():
    model = tiny(depth=3, stages=2)
    mask = _flat(block_mask(model, [(0, 1), (1, 2)], also=("head",)))
    for key, m in mask.items():
        if "'stages'" in key:
            stage = 0 if "[0]" in key.split("'stages'")[1][:5] else 1
            expect = np.zeros(3)
            expect[1 if stage == 0 else 2] = 1
            rows = m.reshape(3, -1)
            assert np.array_equal(rows.max(1), expect) and np.array_equal(rows.min(1), expect)
        else:
            assert np.all(m == (1.0 if "'head'" in key else 0.0)), key
    with pytest.raises(ValueError, match=r"\(0, 3\).*not in blocks"):
        block_mask(model, [(0, 3)])
    with pytest.raises(ValueError, match="also=.*'tail'.*valid choices: head, stages, stem, transitions"):
        block_mask(model, [], also=("tail",))


def test_frozen_adam_holds_frozen_entries_and_swaps_masks_without_recompiling():
    model = tiny(depth=3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
    y = jnp.arange(8) % 3
    tx = frozen(optax.adam(1e-2), block_mask(model, [(0, 0)], also=("head", "stem")))
    traces = []

    @jax.jit
    def step(params, opt_state):
        traces.append(1)
        loss = lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            nnx.merge(graphdef, p, rest, copy=True)(x), y))
        g = jax.grad(loss)(params)
        u, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, u), opt_state

    opt_state = tx.init(params)
    p = params
    for _ in range(3):
        p, opt_state = step(p, opt_state)
    # against Adam written out by hand (numpy) on the masked gradient: trainable entries follow it exactly,
    # frozen ones (mask 0: zero gradient, zero update) stay put
    loss = lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        nnx.merge(graphdef, q, rest, copy=True)(x), y))
    mask = jax.tree.map(np.asarray, block_mask(model, [(0, 0)], also=("head", "stem")))
    hand = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    m1 = jax.tree.map(np.zeros_like, hand)
    m2 = jax.tree.map(np.zeros_like, hand)
    for t in range(1, 4):
        g = jax.tree.map(lambda v, k: np.asarray(v, np.float64) * k,
                         jax.grad(loss)(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), hand)), mask)
        m1 = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m1, g)
        m2 = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, m2, g)
        adam = lambda v, a, b, k: v - k * 1e-2 * (a / (1 - 0.9**t)) / (np.sqrt(b / (1 - 0.999**t)) + 1e-8)
        hand = jax.tree.map(adam, hand, m1, m2, mask)
    for key, value in _flat(p).items():
        np.testing.assert_allclose(value, _flat(hand)[key], rtol=1e-4, atol=1e-6, err_msg=key)
    before, after = _flat(params), _flat(p)
    for key in before:
        moved = np.abs(after[key] - before[key])
        if "'stages'" in key:
            assert np.all(moved.reshape(3, -1)[1:] == 0) and np.any(moved.reshape(3, -1)[0] > 0), key
        else:
            assert np.any(moved > 0), key  # stem and head train
    # block 0 frozen, block 2 opened: block 0 stays exactly where it is although Adam's moments hold its past
    opt_state = with_mask(opt_state, block_mask(model, [(0, 2)], also=("head",)))
    q = p
    for _ in range(2):
        q, opt_state = step(q, opt_state)
    a, b = _flat(p), _flat(q)
    for key in a:
        moved = np.abs(b[key] - a[key])
        if "'stages'" in key:
            rows = moved.reshape(3, -1)
            assert np.all(rows[:2] == 0) and np.any(rows[2] > 0), key
        elif "'stem'" in key:
            assert np.all(moved == 0), key
    assert len(traces) == 1  # the mask is state: one compilation
    assert isinstance(opt_state, MaskedState)
    with pytest.raises(TypeError, match="with_mask takes the state of frozen"):
        with_mask(opt_state.inner, opt_state.masks)
