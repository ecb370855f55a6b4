"""Plain and residual classifiers on MNIST-1D at many depths, trained in memory by odenets' own train step
(`odenets.train.loop.setup` / `make_steps`): shared by the gradient_flow, degradation, lesion, lottery_ticket
(`masked_steps`, `train_masked`: training under pruning masks) and width_depth studies."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from odenets import cli
from odenets import data as datasets
from odenets._abstract import final
from odenets.fields import HighwayField
from odenets.models import ODEBlock, Trajectory
from odenets.train import loop
from odenets.train.config import RunConfig, build_model


@final
@dataclasses.dataclass(frozen=True)
class Net:
    """A classifier after `epochs` epochs: its training and test error, the loss per epoch, seconds (in all,
    and per epoch: the first includes compiling the train step)."""

    model: Any
    setup: Any
    train_error: float | None
    test_error: float | None
    losses: list[float]
    seconds: float
    epoch_seconds: tuple[float, ...] = ()

    @property
    def data(self):
        """The dataset it was trained on (as `_trained.Trained.data`)."""
        return self.setup.data


MNIST1D = ("data=mnist1d",)  # the data group's overrides unless a study names others


def overrides(family: str, depth: int, width: int, kind: str, preact: bool = False) -> list[str]:
    """The model group of a `family` net of `depth` layers of `width` channels (one stage)."""
    over = [f"model={family}", f"model.kind={kind}", f"model.width={width}", f"model.depth={depth}"]
    return over + (["model.preact=true"] if preact else [])


def error(eval_step, state, x, y, chunk: int = 1000) -> float:
    """The classification error of the net in `state` on (x, y), by the run's own eval step."""
    correct = 0.0
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        correct += float(eval_step(state, xb, yb, jnp.ones(len(xb)))["correct"])
    return 1.0 - correct / len(x)


def setup(over: list[str], *, epochs: int, batch_size: int, lr: float, seed: int,
          n_train: int | None, data: tuple[str, ...] = MNIST1D, init=None) -> loop.Setup:
    """`loop.setup` of the config, with the parameters drawn by `initialise` and then passed through
    `init` (a function from the model to a model of the same structure, e.g. `analysis.smooth_depth`;
    None: as drawn) (epochs=0: no optimiser state, the state's third entry is None)."""
    cfg = cli.compose([*data, *over, f"optim.epochs={max(epochs, 1)}", f"optim.batch_size={batch_size}",
                       f"optim.lr={lr}", f"seed={seed}", "train.progress=false"])
    run = RunConfig.parse(cfg)
    data = _data(run.data, run.seed)
    if n_train is not None:
        data = dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train])
    abstract = nnx.eval_shape(lambda: build_model(run, data.input_shape, data.output_dim))
    model = initialise(abstract, seed)
    graphdef, params, rest = nnx.split(model if init is None else init(model), nnx.Param, ...)
    steps_per_epoch = len(data.x_train) // batch_size
    total = steps_per_epoch * max(epochs, 1)
    tx = run.optim.transform(total)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    opt_state = _opt_init(tx, run.optim.name, params) if epochs else None
    return loop.Setup(run.to_dict(), run, data, graphdef, (params, rest, opt_state), tx, mesh,
                      steps_per_epoch, total, n_params)


ZERO_STATE = ("adam", "adamw", "sgd")  # optimisers whose optax state starts as zeros (moments, step counts)


def _opt_init(tx, name: str, params):
    """tx.init(params): zeros of its structure for the optimisers whose state starts at zero (eagerly,
    optax's init compiles one small program per leaf), else tx.init under jit."""
    if name not in ZERO_STATE:
        return jax.jit(tx.init)(params)
    return jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), jax.eval_shape(tx.init, params))


@functools.cache
def _data(spec, seed):
    return datasets.load(spec, seed=seed)


STACKED = ("field", "fields")  # the per-step stacks of resnet and plain stages: a leading step axis


def initialise(abstract: nnx.Module, seed: int, stream: int = 7) -> nnx.Module:
    """The model with the distributions of its initialisers, drawn by numpy (compiling the models'
    own initialisers takes seconds per model on a CPU): every kernel LeCun normal (a normal truncated at
    two standard deviations, variance 1 / fan_in, fan_in = all axes but the last, and but the step axis of
    a per-step stack; a shared ODE field (node, anode, a Trajectory model's) has none), biases 0 (but a
    highway gate's: its
    constant `gate_bias`), norm scales 1; counters -1;
    raw key data (unsigned ints: an RNODE block's Hutchinson key) uniform, from a stream of its own.
    A second statement of the initialisers' rule: tests/test_gradflow.py compares it leaf by leaf with the
    library's own draw."""
    graphdef, state = nnx.split(abstract)
    shared = [tuple(str(k) for k in path) for path, module in nnx.iter_graph(abstract)  # one field for all steps
              if isinstance(module, (ODEBlock, Trajectory)) and getattr(module, "params", "shared") != "per_step"]
    rng = np.random.default_rng([seed, stream])  # stream: a study's own draws for the same seed
    keys = np.random.default_rng([seed, 8])  # its own stream: a model with keys draws the same kernels as without

    def draw(path, leaf):
        names = [str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path]
        names = [n for n in names if n != "value"]
        if jnp.issubdtype(leaf.dtype, jnp.unsignedinteger):  # raw key data (an RNODE block's NoiseKey)
            top = np.iinfo(leaf.dtype).max
            return jnp.asarray(keys.integers(0, top, leaf.shape, dtype=leaf.dtype, endpoint=True))
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(np.full(leaf.shape, -1, leaf.dtype))
        if names[-1] == "scale":
            return jnp.asarray(np.ones(leaf.shape, leaf.dtype))
        if names[-1] != "kernel":
            return jnp.asarray(np.zeros(leaf.shape, leaf.dtype))
        stacked = any(n in STACKED for n in names) and not any(tuple(names[: len(p)]) == p for p in shared)
        fan_in = int(np.prod(leaf.shape[1 if stacked else 0: -1]))
        z = rng.standard_normal(leaf.shape)
        while np.any(bad := np.abs(z) > 2):
            z[bad] = rng.standard_normal(int(bad.sum()))
        return jnp.asarray(z * np.sqrt(1.0 / fan_in) / 0.87962566103423978, leaf.dtype)

    model = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))
    for _, module in nnx.iter_graph(model):
        if isinstance(module, HighwayField):  # constant bias initialiser (a stacked field: every step)
            bias = module.gate.bias
            bias[...] = jnp.full(bias.shape, module.gate_bias, bias.dtype)
    return model


def train(over: list[str], *, epochs: int, batch_size: int, lr: float, seed: int, n_train: int | None = None,
          evaluate: bool = True, data: tuple[str, ...] = MNIST1D, init=None) -> Net:
    """`epochs` epochs of the run's optimiser on MNIST-1D (or the `data` group's overrides; the first
    `n_train` training signals, all when None), by the run's jitted train step. The training error is the
    running error over the last epoch's mini-batches (He et al.'s training curves); evaluate=True adds the
    test error (the run's eval step). `init`: as `setup`'s.
    epochs=0: the initial parameters."""
    s = setup(over, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, n_train=n_train, data=data, init=init)
    state, start, losses = s.state, time.perf_counter(), []
    train_error = test_error = None
    epoch_seconds = []
    if epochs:
        train_step, eval_step = loop.make_steps(s)
        tick = time.perf_counter()
        for _, state, loss, train_error in run_epochs(s, s.state, train_step, range(epochs), seed=seed):  # noqa: B007
            losses.append(loss)  # a float: the epoch's last step has finished
            epoch_seconds.append(time.perf_counter() - tick)
            tick = time.perf_counter()
        if evaluate:
            test_error = error(eval_step, state, s.data.x_test, s.data.y_test)
    return Net(model_of(s, state), s, train_error, test_error, losses, time.perf_counter() - start,
               tuple(epoch_seconds))


def run_epochs(s: loop.Setup, state, train_step, epochs: Iterable[int], *, seed: int
               ) -> Iterator[tuple[int, Any, float, float]]:
    """Train epoch by epoch: after each epoch of `epochs` (their indices pick the mini-batch order,
    `datasets.batches(..., seed=seed, epoch=epoch)`), yields (epoch, state, mean loss over its
    mini-batches, running training error over them). `train_step` is `loop.make_steps(s)[0]` (or
    that of a setup with another optimiser); `train` is this loop to the end. Between epochs the
    caller may measure the model (`model_of(s, state)`) or change the state (a new optimiser mask)."""
    x, y = s.data.x_train, s.data.y_train
    for epoch in epochs:
        loss, accuracy = [], []
        for idx in datasets.batches(len(x), s.run.optim.batch_size, seed=seed, epoch=epoch):
            state, metrics = train_step(state, x[idx], y[idx])
            loss.append(metrics["loss"])
            accuracy.append(metrics["accuracy"])
        yield epoch, state, float(np.mean(np.asarray(loss))), 1.0 - float(np.mean(np.asarray(accuracy)))


def run_steps(s: loop.Setup, state, train_step, epochs: Iterable[int], *, seed: int,
              keys: tuple[str, ...] = ("loss", "accuracy")) -> Iterator[tuple[int, Any, dict[str, np.ndarray]]]:
    """Train epoch by epoch as `run_epochs`, but keep every step's record: after each epoch, yields
    (epoch, state, {key: the epoch's per-step values, shape (steps_per_epoch,)}) for each of `keys` among the
    train step's metrics (`loop.make_steps`: loss, accuracy, grad_norm, nfe, nfe_backward, rnode where
    regularised). Values stay on the device during the epoch and come to the host once at its end."""
    x, y = s.data.x_train, s.data.y_train
    for epoch in epochs:
        records = []
        for idx in datasets.batches(len(x), s.run.optim.batch_size, seed=seed, epoch=epoch):
            state, metrics = train_step(state, x[idx], y[idx])
            records.append({key: metrics[key] for key in keys})
        records = jax.device_get(records)
        yield epoch, state, {key: np.asarray([r[key] for r in records]) for key in keys}


def model_of(s: loop.Setup, state) -> nnx.Module:
    """The model of a train state (params, rest, optimiser state) of setup s."""
    params, rest, _ = state
    return nnx.merge(s.graphdef, params, rest)


def probe_batch(s, n: int) -> tuple[Any, Any]:
    """The first n training signals and labels (the batch on which gradients are measured)."""
    return s.data.x_train[:n], s.data.y_train[:n]


@final
@dataclasses.dataclass(frozen=True)
class Masked:
    """Nets trained under pruning masks (`train_masked`), V variants at once: parameters with a leading
    variant axis, each variant's training and test error, the parameters after `rewind_at` steps."""

    params: Any
    train_error: np.ndarray
    test_error: np.ndarray | None
    at_rewind: Any
    seconds: float


def masked_steps(s: loop.Setup, *, vmap: bool = True):
    """(s', train_step, eval_step, vmap) for training under pruning masks: s' is s with its optimiser wrapped by
    `odenets.analysis.masked` (pruned weights stay exactly zero). vmap=True: both steps vmapped over a leading
    variant axis of the state (V nets on one batch), one program for V nets (whose compile takes about twice
    the plain step's); vmap=False: the run's own steps, the V nets trained one after the other. Either way
    the masks are data of the optimiser state, so every mask of a pruning run trains with one compiled step."""
    from odenets.analysis import masked, ones_like

    params, rest, _ = s.state
    s = dataclasses.replace(s, tx=masked(s.tx, ones_like(params)))
    train_step, eval_step = loop.make_steps(s)
    if not vmap:
        return s, train_step, eval_step, False
    return (s, jax.jit(jax.vmap(train_step, in_axes=(0, None, None))),
            jax.jit(jax.vmap(eval_step, in_axes=(0, None, None, None))), True)


def train_masked(steps, params, masks, *, seed: int, rewind_at: int | None = None,
                 evaluate: bool = True) -> Masked:
    """V variants (steps: `masked_steps(s)`): params and masks with a leading variant axis, each net
    m * theta trained from theta = params by the run's optimiser (its schedule restarted) for the run's
    epochs on the same batches; pruned weights stay zero. `rewind_at`: also return the parameters after that
    many steps (the rewind point of Frankle et al. 2020). The training error is the running error of the last
    epoch's mini-batches, the test error the run's eval step."""
    s, train_step, eval_step, vmapped = steps
    start = time.perf_counter()
    host = lambda tree: jax.tree.map(np.asarray, tree)  # numpy on the host: no small eager programs to compile
    params, masks = host(params), host(masks)
    n = len(jax.tree.leaves(params)[0])
    if vmapped:
        run = _train_masked(s, train_step, eval_step, params, masks, n, seed, rewind_at, evaluate)
        params, train_error, test_error, at_rewind = run
    else:  # one net after the other, stacked
        pick = lambda tree, i: jax.tree.map(lambda a: a[i], tree)
        stack = lambda trees: None if trees[0] is None else jax.tree.map(lambda *a: np.stack(a), *trees)
        runs = [_train_masked(s, train_step, eval_step, pick(params, i), pick(masks, i), None, seed, rewind_at,
                              evaluate) for i in range(n)]
        params, train_error, test_error, at_rewind = (stack(list(r)) for r in zip(*runs))
    params, at_rewind = host(params), None if at_rewind is None else host(at_rewind)
    return Masked(params, train_error, test_error, at_rewind, time.perf_counter() - start)


def _train_masked(s, train_step, eval_step, params, masks, n, seed, rewind_at, evaluate):
    """One (n=None) or n vmapped masked nets: (params, train error, test error or None, params at rewind_at)."""
    from odenets.analysis import MaskedState, apply_masks

    _, rest, _ = s.state
    shape = () if n is None else (n,)
    if s.run.optim.name in ZERO_STATE:  # zeros of the inner state's structure (see _opt_init)
        shapes = jax.eval_shape(s.tx.init, s.state[0]).inner
        inner = jax.tree.map(lambda a: jnp.asarray(np.zeros((*shape, *a.shape), a.dtype)), shapes)
    else:
        inner = (jax.jit(jax.vmap(s.tx.init)) if n else jax.jit(s.tx.init))(params).inner
    rest = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (*shape, *np.shape(a))), rest)
    state = (apply_masks(params, masks), rest, MaskedState(inner, masks))
    x, y = s.data.x_train, s.data.y_train
    at_rewind, step, accuracy = None, 0, []
    for epoch in range(s.run.optim.epochs):
        accuracy = []
        for idx in datasets.batches(len(x), s.run.optim.batch_size, seed=seed, epoch=epoch):
            if step == rewind_at:
                at_rewind = state[0]
            state, metrics = train_step(state, x[idx], y[idx])
            accuracy.append(metrics["accuracy"])
            step += 1
    train_error = 1.0 - np.mean(np.asarray(accuracy), axis=0)
    test_error = None
    if evaluate:
        xt, yt = s.data.x_test, s.data.y_test
        correct = sum(np.asarray(eval_step(state, xt[i:i + 1000], yt[i:i + 1000], jnp.ones(len(xt[i:i + 1000])))
                                 ["correct"]) for i in range(0, len(xt), 1000))
        test_error = 1.0 - correct / len(xt)
    return state[0], train_error, test_error, at_rewind
