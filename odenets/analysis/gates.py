"""The gates of a highway net, layer by layer (Srivastava, Greff & Schmidhuber 2015).

A highway layer is x_{l+1} = g_l F_l(x_l) + (1 - g_l) x_l with the transform gate
g_l = sigmoid(W_l x_l + b_l) (odenets: one Euler step, h = 1, of the field g (F - x), a
`HighwayField`). g_l -> 0 carries x_l through (the layer is the identity), g_l -> 1 closes the
carry path (the layer is the plain layer F_l). Its Jacobian is

    dx_{l+1}/dx_l = (1 - g_l) I + g_l dF_l/dx + (F_l - x_l) dg_l/dx

so the identity reaches the gradient only through the carry (1 - g_l), a factor below 1 at every
layer: over L layers the carry path alone passes prod_l (1 - g_l) of it.

`highway_gates(model, x)` runs a model on a batch and reads g_l at the state x_l entering every
highway layer (the stage's own states: `odeint`'s save="all" of the block, through the stem and
the stages before it).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odenets.analysis._field import Merged
from odenets.analysis.steps import ode_stages
from odenets.fields.highway import HighwayField
from odenets.models import Classifier, ODEBlock
from odenets.perstep import PerStep
from odenets.solve import odeint


class Gates(NamedTuple):
    """The transform gates g_l of every highway layer of a model on a batch (M layers in all).

    samples: (M, B) the mean of g_l over its channels (and positions) for each sample.
    mean:    (M,) the mean of g_l over batch and channels (0: carry, 1: transform).
    std:     (M,) its std over batch and channels.
    carry:   (M,) prod_{k <= l} (1 - mean_k) within each stage: the scale of the carry path from the
             stage's input to x_{l+1} (with the batch-mean gates).
    stage, layer: (M,) the stage s of each layer and its index l in 0..L_s - 1.
    """

    samples: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    carry: np.ndarray
    stage: np.ndarray
    layer: np.ndarray


def _is_highway(block: ODEBlock) -> bool:
    return isinstance(block.field, HighwayField)


def _block_gates(block: ODEBlock, x) -> jax.Array:
    """(L, B, ..., C) g_l at the states x_l of one highway ODE block on input x."""
    graphdef, state = nnx.split(block.field)
    per_step = block.params == "per_step"
    args = PerStep(state) if per_step else state
    xs = odeint(Merged(graphdef), x, block.t0, block.t1, block.steps, integrator=block.integrator, args=args,
                save="all").xs[:-1]
    gate_def, gate_state = nnx.split(cast(HighwayField, block.field).gate)  # a highway block
    gate = lambda p, xk: jax.nn.sigmoid(nnx.merge(gate_def, p)(xk))
    if per_step:
        return jax.vmap(gate)(gate_state, xs)
    return jax.vmap(lambda xk: gate(gate_state, xk))(xs)


@functools.partial(jax.jit, static_argnums=0)
def _gates(graphdef, state, x):
    model = nnx.merge(graphdef, state, copy=True)
    if isinstance(model, ODEBlock):
        return [(0, _block_gates(model, x))]
    return [(s, _block_gates(block, x_in)) for s, block, x_in in ode_stages(model, x) if _is_highway(block)]


def highway_gates(model: Classifier | ODEBlock, x) -> Gates:
    """`Gates`: g_l = sigmoid(gate_l(x_l)) at every highway layer of a model on a batch x (B, ...).

    model: a `Classifier` with highway stages (the `highway` family, built or restored from a run's
           checkpoint) run from its stem, or one highway `ODEBlock` (whose field is a `HighwayField`)
           on its input x. Other stages are run through, not read; a model without a highway stage
           is refused.
    """
    if isinstance(model, ODEBlock):
        found = _is_highway(model)
    elif isinstance(model, Classifier):
        found = any(isinstance(stage, ODEBlock) and _is_highway(stage) for stage in model.stages)
    else:
        raise TypeError(f"highway_gates takes a Classifier or an ODEBlock, got {type(model).__name__}")
    if not found:
        name = getattr(model, "family", type(model).__name__)
        raise ValueError(f"highway_gates needs highway stages (ODE blocks of HighwayFields, model=highway); "
                         f"{name!r} has none")
    graphdef, state = nnx.split(model)
    per_stage = _gates(graphdef, state, jnp.asarray(x))
    samples, mean, std, carry, stage, layer = [], [], [], [], [], []
    for s, g in per_stage:
        g = np.asarray(g, np.float64)
        flat = g.reshape(g.shape[0], -1)
        samples.append(g.reshape(g.shape[0], g.shape[1], -1).mean(-1))
        mean.append(flat.mean(-1))
        std.append(flat.std(-1))
        carry.append(np.cumprod(1.0 - flat.mean(-1)))
        stage.append(np.full(g.shape[0], s))
        layer.append(np.arange(g.shape[0]))
    cat = np.concatenate
    return Gates(cat(samples), cat(mean), cat(std), cat(carry), cat(stage), cat(layer))
