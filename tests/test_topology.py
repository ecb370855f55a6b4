"""odenets.analysis.topology: the shortest gradient paths of each family's layer graph in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import odenets as on
from odenets.analysis import layer_graph, shortest_paths


def _model(family, depth=4, stages=1, **kw):
    return nnx.eval_shape(lambda: on.models.build(family, input_shape=(6,), num_classes=3, width=4, depth=depth,
                                                  stages=stages, **kw))


@pytest.mark.parametrize("family, hops, transforms", [
    ("resnet", [4, 3, 2, 1, 0], [0] * 5),  # L - l hops, all through the identity
    ("highway", [4, 3, 2, 1, 0], [0] * 5),  # the same, through the gated carry
    ("plain", [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]),  # every hop a transform
    ("densenet", [1] * 5, [0] * 5),  # every map concatenated straight into the transition's input
    ("momentum", [4, 3, 2, 1, 0], [0] * 5),
])
def test_shortest_paths_of_one_stage(family, hops, transforms):
    paths = shortest_paths(_model(family))
    np.testing.assert_array_equal(paths.hops, hops)
    np.testing.assert_array_equal(paths.transforms, transforms)
    np.testing.assert_array_equal(paths.layer, range(5))
    graph = layer_graph(_model(family))
    assert set(graph.kinds) <= {"transform", "identity", "carry"}
    assert ("carry" in graph.kinds) == (family == "highway")
    assert np.all(graph.edges[:, 0] < graph.edges[:, 1])  # a DAG in node order


def test_later_stages_and_whole_stages_add_their_own_shortest_path():
    """Two stages of L = 3: stage 0's x_l is (L - l) + 1 (the transition) + L hops from the head (resnet),
    1 + 1 + 1 (densenet: its concatenation, the transition, the next stage's input to its concatenation);
    a Hamiltonian stage is one layer (one transform)."""
    res = shortest_paths(_model("resnet", depth=3, stages=2))
    np.testing.assert_array_equal(res.hops, [7, 6, 5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(res.transforms, [1, 1, 1, 1, 0, 0, 0, 0])
    dense = shortest_paths(_model("densenet", depth=3, stages=2))
    np.testing.assert_array_equal(dense.hops, [3] * 4 + [1] * 4)
    np.testing.assert_array_equal(dense.stage, [0] * 4 + [1] * 4)
    ham = shortest_paths(_model("hamiltonian", depth=3, stages=2))
    np.testing.assert_array_equal(ham.hops, [3, 2, 1, 0])
    np.testing.assert_array_equal(ham.transforms, [3, 2, 1, 0])
