"""odenets.analysis.highway_gates against a hand-written highway loop, and the gate bias's closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odenets as on
from odenets.analysis import highway_gates
from odenets.fields import field_at


def _filled(build, seed=0, gate_kernel=None):
    """The module `build()` makes, its float parameters drawn by numpy (N(0, 1 / fan_in) matrices, N(0, 0.1)
    vectors); the gates' kernels set to `gate_kernel` when given."""
    graphdef, state = nnx.split(nnx.eval_shape(build))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        names = [str(getattr(p, "key", "")) for p in path]
        if gate_kernel is not None and "gate" in names:
            return jnp.full(leaf.shape, gate_kernel if "kernel" in names else 4.0, leaf.dtype)
        scale = 1 / np.sqrt(leaf.shape[-2]) if leaf.ndim >= 2 and leaf.shape[-2] > 1 else 0.1
        return jnp.asarray(rng.standard_normal(leaf.shape) * scale, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _highway(depth=3, stages=2, **kw):
    return _filled(lambda: on.models.build("highway", input_shape=(5,), num_classes=3, width=4, depth=depth,
                                             stages=stages, rngs=nnx.Rngs(0)), **kw)


def test_gates_match_a_hand_written_highway_loop():
    depth, stages = 2, 2
    model = _highway(depth, stages)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 5)))
    gates = highway_gates(model, x)
    assert list(gates.stage) == [s for s in range(stages) for _ in range(depth)]
    assert list(gates.layer) == list(range(depth)) * stages and gates.samples.shape == (depth * stages, 6)
    h, expected = model.stem(x), []
    for s, block in enumerate(model.stages):
        h = model.transitions[s - 1](h) if s else h
        for k in range(depth):
            layer = field_at(block.field, k)
            g = jax.nn.sigmoid(layer.gate(h))
            expected.append(np.asarray(g))
            h = g * layer.field(jnp.float32(k), h) + (1 - g) * h
    np.testing.assert_allclose(gates.samples, [g.mean(-1) for g in expected], rtol=1e-5)
    np.testing.assert_allclose(gates.mean, [g.mean() for g in expected], rtol=1e-5)
    np.testing.assert_allclose(gates.std, [g.std() for g in expected], rtol=1e-4, atol=1e-7)
    carry = np.concatenate([np.cumprod(1 - gates.mean[s * depth:(s + 1) * depth]) for s in range(stages)])
    np.testing.assert_allclose(gates.carry, carry)
    lone = highway_gates(model.stages[0], model.stem(x))  # one block on its own input
    np.testing.assert_allclose(lone.mean, gates.mean[:depth], rtol=1e-6)


def test_zero_gate_kernels_give_sigmoid_of_the_bias_and_other_families_are_refused():
    model = _highway(gate_kernel=0.0)  # g = sigmoid(b) = sigmoid(4) at every layer, whatever the state
    gates = highway_gates(model, jnp.ones((2, 5)))
    np.testing.assert_allclose(gates.mean, 1 / (1 + np.exp(-4.0)), rtol=1e-6)
    np.testing.assert_allclose(gates.carry[-1], (1 - 1 / (1 + np.exp(-4.0))) ** 3, rtol=1e-5)
    assert np.all(gates.std < 1e-6)
    built = nnx.eval_shape(lambda: on.models.build("highway", input_shape=(5,), num_classes=3, width=4, depth=2,
                                                   gate_bias=-3.0))
    assert built.stages[0].field.gate_bias == -3.0  # the family's option reaches every layer's gate
    field = on.fields.HighwayField(lambda t, x: x, 3, 0, gate_bias=-3.0, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(field.gate.bias[...]), -3.0)
    resnet = nnx.eval_shape(lambda: on.models.build("resnet", input_shape=(5,), num_classes=3, width=4, depth=2))
    with pytest.raises(ValueError, match="needs highway stages"):
        highway_gates(resnet, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="gate_bias must be a finite number"):
        on.models.family("highway", gate_bias=float("nan"))
