"""The layer graph of a model and the shortest path a gradient can take from the loss to each layer.

Nodes are the states `gradient_flow` measures: x_0 ... x_L of every stage (the stage's input, then
the state after each layer). Edges are the ways a state feeds a later one, each of a kind:

    transform  through a parametrised layer (F_l, a plain layer, a dense layer H_k, a transition)
    identity   an unparametrised copy (a ResNet's skip x_l -> x_l + F_l; a dense concatenation)
    carry      a gated copy, (1 - g_l) x_l (a highway layer's carry path)

    resnet / momentum / other ODE blocks   x_l -> x_{l+1}: identity and transform
    highway                                x_l -> x_{l+1}: carry and transform
    plain                                  x_l -> x_{l+1}: transform
    densenet (Huang et al. 2017)           node l is the feature map layer l adds (node 0: the stage's
                                           input); h_j -> h_k (j < k): transform (layer k reads every
                                           earlier map); h_j -> concat, the transition's input: identity
    a stage gradient_flow counts as one layer: x_0 -> x_1, transform

Between stages a transition (transform) joins one stage's output to the next one's input; the
head reads the last stage's output. The loss's gradient reaches x_l along every path from x_l to
that output, so the shortest path is the fewest edges (`hops`: a ResNet's layer l is L - l away,
every dense layer 1: its map is concatenated straight into the transition's input) and the
fewest transforms on any path (`transforms`: 0 for a ResNet, a DenseNet and a highway net's carry
path, L - l for a plain net). The graph is read off the model's stages, the same per-layer
decomposition `gradient_flow` uses, so its nodes align with `GradFlow`'s entries.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import numpy as np

from odenets.analysis.gradflow import _layers
from odenets.fields.highway import HighwayField
from odenets.models import Classifier, ODEBlock
from odenets.models.stages import DenseBlock, PlainBlock

KINDS = ("transform", "identity", "carry")


class LayerGraph(NamedTuple):
    """A model's layers as a DAG (edges go from lower to higher node index).

    edges:  (E, 2) int, (source, target) node indices.
    kinds:  (E,) each edge's kind, one of KINDS.
    output: the node the head reads (the last stage's output).
    states: (M,) the node of each `GradFlow` entry, in its order (stage by stage, x_0 ... x_L); a dense
            stage's entry l is the node h_l, the map layer l adds (`GradFlow` measures the concatenation
            h_0 ... h_l there, whose newest part is h_l).
    stage, layer: (M,) the stage s and layer index l of each entry.
    """

    edges: np.ndarray
    kinds: np.ndarray
    output: int
    states: np.ndarray
    stage: np.ndarray
    layer: np.ndarray


class ShortestPaths(NamedTuple):
    """The shortest paths from each `GradFlow` state x_l to the head's input.

    hops:       (M,) the fewest edges on a path.
    transforms: (M,) the fewest transform edges on a path (identity and carry edges are free).
    stage, layer: (M,) as in `GradFlow`.
    """

    hops: np.ndarray
    transforms: np.ndarray
    stage: np.ndarray
    layer: np.ndarray


def _stage_edges(stage) -> tuple[int, list[tuple[int, int, str]], int]:
    """(L, edges between local nodes 0..L (a dense stage also L + 1, its concatenation), the stage's
    output node): the stage's layers as `gradient_flow` takes them."""
    layers = _layers(stage)
    n = layers.n
    if layers.whole:
        return 1, [(0, 1, "transform")], 1
    if isinstance(stage, DenseBlock):
        concat = n + 1
        edges = [(j, k, "transform") for k in range(1, n + 1) for j in range(k)]
        return n, edges + [(j, concat, "identity") for j in range(n + 1)], concat
    if isinstance(stage, PlainBlock):
        skip = None
    elif isinstance(stage, ODEBlock) and isinstance(stage.field, HighwayField):
        skip = "carry"
    else:
        skip = "identity"
    edges = [(k, k + 1, "transform") for k in range(n)]
    return n, edges + ([] if skip is None else [(k, k + 1, skip) for k in range(n)]), n


def layer_graph(model) -> LayerGraph:
    """The `LayerGraph` of a Classifier (stem -> stages with transitions -> head) or of one stage."""
    stages = list(model.stages) if isinstance(model, Classifier) else [model]
    edges, kinds, states, stage_of, layer_of = [], [], [], [], []
    offset, previous = 0, None
    for s, stage in enumerate(stages):
        n, local, out = _stage_edges(stage)
        if previous is not None:  # the transition: the last output to this stage's input
            edges.append((previous, offset))
            kinds.append("transform")
        for a, b, kind in local:
            edges.append((offset + a, offset + b))
            kinds.append(kind)
        states += [offset + k for k in range(n + 1)]
        stage_of += [s] * (n + 1)
        layer_of += list(range(n + 1))
        previous = offset + out
        offset += max(out, n) + 1
    output = cast(int, previous)  # set by the last stage (there is at least one)
    return LayerGraph(np.asarray(edges, int).reshape(-1, 2), np.asarray(kinds), output, np.asarray(states),
                      np.asarray(stage_of), np.asarray(layer_of))


def _distances(graph: LayerGraph, cost: np.ndarray) -> np.ndarray:
    """The least total cost from every node to the output (inf where none), by one backward sweep of the DAG."""
    size = int(max(graph.edges.max(initial=0), graph.output)) + 1
    dist = np.full(size, np.inf)
    dist[graph.output] = 0.0
    order = np.argsort(-graph.edges[:, 0], kind="stable")  # sources from the last node down
    for e in order:
        a, b = graph.edges[e]
        dist[a] = min(dist[a], cost[e] + dist[b])
    return dist


def shortest_paths(model_or_graph) -> ShortestPaths:
    """`ShortestPaths` from every layer state of a model (or a `LayerGraph`) to the head's input.

    Edges run forward (a ResNet's x_l -> x_{l+1}); the gradient flows back along them, so the
    shortest forward path from x_l to the output is the shortest gradient path from the loss to x_l.
    """
    graph = model_or_graph if isinstance(model_or_graph, LayerGraph) else layer_graph(model_or_graph)
    hops = _distances(graph, np.ones(len(graph.kinds)))
    transforms = _distances(graph, (graph.kinds == "transform").astype(float))
    pick = lambda d: d[graph.states].astype(int)
    return ShortestPaths(pick(hops), pick(transforms), graph.stage, graph.layer)
