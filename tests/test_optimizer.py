"""``jrmsprop.RMSprop``: the wrapper against the functional core, NumPy and tf_keras.

The wrapper owns no numerics, so most tests compare it with the core bit for bit; the Keras
behaviours (slots, weights, config, clipping, warnings) with NumPy re-derivations of the TF 2.x
Keras rules (``rmsprop_test.py`` / ``optimizer_v2_test.py``'s cases, in float64, with Keras's
tolerances per dtype). Bad inputs come in tables: each asserts the error type, that the message
names the argument and, on a trained optimizer, that nothing changed. Tests marked
``frameworks`` run the real ``tf_keras`` optimizer side by side.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrmsprop._src import clipping
from jrmsprop._src import optimizer as optimizer_lib
from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.sparse import IndexedSlices, apply_updates
from jrmsprop._src.transform import RMSpropState, rmsprop
from jrmsprop._src.variable import Variable, compute_gradients
from tests.numpy_reference import Reference

NAN, INF = float("nan"), float("inf")

SHAPES = [(4, 3), (3,), (2, 2, 2)]


def _grads(rng: np.random.Generator, shapes=SHAPES, dtype=np.float32) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.fixture
def compiles(monkeypatch):
    """Counts the traces of the wrapper's compiled step since the test began: its body builds
    the transformations (``optimizer._transforms``) once per trace, and only there."""
    optimizer_lib._step.clear_cache()
    traces = []
    build = optimizer_lib._transforms

    def counted(*args, **kwargs):
        if isinstance(args[0]["learning_rate"], jax.core.Tracer):  # inside _step's trace
            traces.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(optimizer_lib, "_transforms", counted)
    return lambda: len(traces)


def _equal_trees(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb, strict=True)
    )


# ---- the wrapper against the functional core, bit for bit ------------------------------------


CORE_CONFIGS = [
    dict(),
    dict(momentum=0.9),
    dict(centered=True),
    dict(momentum=0.5, centered=True),
    dict(decay=0.25),
    dict(momentum=0.3, decay=0.25, centered=True),
]


@pytest.mark.parametrize("config", CORE_CONFIGS)
@pytest.mark.slow
def test_dense_matches_core_bit_for_bit(config, compiles):
    rng = np.random.default_rng(1)
    init = _grads(rng)
    variables = [Variable(x) for x in init]
    keras_kwargs = dict(config)
    decay = keras_kwargs.pop("decay", 0.0)
    opt = RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-6, decay=decay, **keras_kwargs)
    tx = rmsprop(learning_rate=0.01, rho=0.8, epsilon=1e-6, decay=decay, **keras_kwargs)
    params = tuple(jnp.asarray(x) for x in init)
    state = tx.init(params)
    for _ in range(6):
        grads = _grads(rng)
        opt.apply_gradients(zip(grads, variables, strict=True))
        updates, state = tx.update(tuple(jnp.asarray(g) for g in grads), state, params)
        params = apply_updates(params, updates)
    assert _equal_trees([v.value for v in variables], params)
    assert _equal_trees(opt.state, state)
    assert int(opt.iterations) == 6 and compiles() == 1


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.slow
def test_sparse_matches_core_bit_for_bit(momentum, centered):
    rng = np.random.default_rng(2)
    table0 = rng.standard_normal((6, 3)).astype(np.float32)
    dense0 = rng.standard_normal(4).astype(np.float32)
    table, dense = Variable(table0), Variable(dense0)
    opt = RMSprop(learning_rate=0.05, momentum=momentum, centered=centered)
    tx = rmsprop(learning_rate=0.05, momentum=momentum, centered=centered)
    params = (jnp.asarray(table0), jnp.asarray(dense0))
    state = tx.init(params)
    for indices in ([0, 2, 2], [5, 1, 0], [3, 3, 3]):
        sparse = IndexedSlices(
            jnp.asarray(rng.standard_normal((3, 3)).astype(np.float32)),
            jnp.asarray(indices, jnp.int32),
            (6, 3),
        )
        g = jnp.asarray(rng.standard_normal(4).astype(np.float32))
        opt.apply_gradients([(sparse, table), (g, dense)])
        updates, state = tx.update((sparse, g), state, params)
        params = apply_updates(params, updates)
    assert _equal_trees([table.value, dense.value], params)
    assert _equal_trees(opt.state, state)


def test_sparse_gradient_of_any_form_gives_the_same_step():
    """A JAX IndexedSlices of the variable's dtype goes to the step as it is; NumPy parts,
    int64 indices, a list dense_shape and a tf.IndexedSlices lookalike are converted first:
    all give the same bits."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, 2)).astype(np.float32)
    indices = np.array([3, 0, 3], np.int32)

    class Lookalike:  # tf.IndexedSlices' attributes
        def __init__(self, values, indices, dense_shape):
            self.values, self.indices, self.dense_shape = values, indices, dense_shape

    forms = [
        IndexedSlices(jnp.asarray(values), jnp.asarray(indices), (4, 2)),
        IndexedSlices(values, indices, (4, 2)),
        IndexedSlices(jnp.asarray(values), jnp.asarray(indices, jnp.int32), [4, 2]),
        IndexedSlices(values.astype(np.float64), indices.astype(np.int64), (4, 2)),
        Lookalike(values, indices, None),
    ]
    results = []
    for grad in forms:
        var = Variable(jnp.arange(8.0, dtype=jnp.float32).reshape(4, 2))
        opt = RMSprop(learning_rate=0.1, momentum=0.9)
        opt.apply_gradients([(grad, var)])
        opt.apply_gradients([(grad, var)])
        results.append((var.value, opt.get_weights()))
    for other in results[1:]:
        assert _equal_trees(other, results[0])


def test_sparse_gradient_rebuilt_by_a_tree_utility_is_still_range_checked():
    """An IndexedSlices made by tree_unflatten never ran its constructor's checks: the step
    still refuses its out-of-range rows, before any state changes."""
    good = IndexedSlices(jnp.ones((2, 2)), jnp.array([0, 3]), (4, 2))
    rebuilt = jax.tree.unflatten(jax.tree.structure(good), [good.values, jnp.array([0, 4])])
    var = Variable(jnp.ones((4, 2)))
    opt = RMSprop(learning_rate=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 4\) .*got 4"):
        opt.apply_gradients([(rebuilt, var)])
    assert int(opt.iterations) == 0 and opt.variables() == [opt.iterations]
    np.testing.assert_array_equal(var.value, np.ones((4, 2)))
    negative = jax.tree.map(lambda x: x, good)
    negative.indices = jnp.array([-1, 0])
    with pytest.raises(ValueError, match=r"got -1"):
        opt.apply_gradients([(negative, var)])
    opt.apply_gradients([(good, var)])
    assert int(opt.iterations) == 1


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.complex64])
@pytest.mark.slow
def test_other_dtypes_match_core(dtype):
    rng = np.random.default_rng(8)

    def draw(shape):
        x = rng.standard_normal(shape)
        if dtype == jnp.complex64:
            x = x + 1j * rng.standard_normal(shape)
        return jnp.asarray(x, dtype)

    init = (draw((3, 2)), draw(4))
    variables = [Variable(x) for x in init]
    opt = RMSprop(0.01, momentum=0.5, centered=True)
    tx = rmsprop(0.01, momentum=0.5, centered=True)
    params, state = init, tx.init(init)
    for _ in range(3):
        grads = (draw((3, 2)), draw(4))
        opt.apply_gradients(zip(grads, variables, strict=True))
        updates, state = tx.update(grads, state, params)
        params = apply_updates(params, updates)
    assert _equal_trees([v.value for v in variables], params)
    assert _equal_trees(opt.state, state)
    assert opt.get_slot(variables[0], "rms").dtype == tx.init(init).rms[0].dtype


def test_float64_uses_keras_hyperparameter_precision(x64):
    """float64 variables: lr/rho/momentum/decay are float32 values (Keras' float32 hyper
    variables, tf.cast of the decay), epsilon keeps Python precision (convert_to_tensor)."""
    g = np.array([0.3, -1.7, 2.5])
    v = Variable(np.array([1.0, 2.0, 3.0]))
    assert v.dtype == np.float64
    opt = RMSprop(learning_rate=0.1, rho=0.9, momentum=0.3, epsilon=1e-7, decay=0.1)
    lr, rho, mu, decay = (float(np.float32(x)) for x in (0.1, 0.9, 0.3, 0.1))
    p, rms, mom = np.array([1.0, 2.0, 3.0]), np.zeros(3), np.zeros(3)
    for t in range(3):
        opt.apply_gradients([(g, v)])
        lr_t = lr / (1.0 + decay * t)
        rms = rho * rms + (1.0 - rho) * (g * g)
        mom = mu * mom + lr_t * g / np.sqrt(rms + 1e-7)
        p = p - mom
    np.testing.assert_allclose(v.numpy(), p, rtol=1e-15)
    assert opt.get_slot(v, "rms").dtype == np.float64


def test_schedule_and_callables_match_core(compiles):
    """Schedules get the pre-increment step; callables are called at every step."""
    schedule = optax.exponential_decay(0.1, transition_steps=2, decay_rate=0.5)
    box = {"rho": 0.9}
    v = Variable(np.linspace(-1, 1, 5, dtype=np.float32))
    opt = RMSprop(learning_rate=schedule, rho=lambda: box["rho"], momentum=0.2)
    p = jnp.linspace(-1, 1, 5, dtype=jnp.float32)
    tx_state = None
    for t in range(5):
        box["rho"] = 0.9 - 0.1 * t
        g = jnp.sin(p * (t + 1.0))
        opt.apply_gradients([(g, v)])
        tx = rmsprop(learning_rate=schedule(t), rho=np.float32(box["rho"]), momentum=0.2)
        tx_state = tx.init((p,)) if tx_state is None else tx_state
        u, tx_state = tx.update((g,), tx_state)
        (p,) = apply_updates((p,), u)
    np.testing.assert_array_equal(v.numpy(), np.asarray(p))
    assert compiles() == 1


# ---- compilation ------------------------------------------------------------------------------


def test_changing_hyperparameters_does_not_recompile(compiles):
    lr = {"value": 0.1}
    opt = RMSprop(
        learning_rate=lambda: lr["value"],
        momentum=lambda: 0.5,
        epsilon=lambda: 1e-6,
        rho=0.9,
        decay=0.01,
        clipnorm=1.0,
    )
    v = Variable(jnp.ones((3, 2)))
    w = Variable(jnp.ones(2))
    for step in range(5):
        lr["value"] = 0.1 / (step + 1)
        opt.rho = 0.9 - 0.01 * step
        opt.clipnorm = 1.0 + step
        opt.apply_gradients([(jnp.ones((3, 2)), v), (jnp.ones(2), w)])
    assert compiles() == 1
    for value in (jnp.asarray(0.05), jnp.float32(0.04), np.float32(0.03)):  # weak, strong, NumPy
        lr["value"] = value
        opt.apply_gradients([(jnp.ones((3, 2)), v), (jnp.ones(2), w)])
    assert jnp.asarray(0.05).weak_type and compiles() == 1
    opt.learning_rate = 0.5  # replaces the callable by a float32 Variable: same dtype, no trace
    opt.apply_gradients([(jnp.ones((3, 2)), v), (jnp.ones(2), w)])
    assert compiles() == 1
    opt.apply_gradients([(jnp.ones(2), w)])  # a different tree: one new trace
    assert compiles() == 2


def test_optax_schedule_does_not_recompile(compiles):
    opt = RMSprop(learning_rate=optax.linear_schedule(0.1, 0.01, 10))
    v = Variable(jnp.ones(3))
    for _ in range(4):
        opt.apply_gradients([(jnp.ones(3), v)])
    assert compiles() == 1


# ---- donation ---------------------------------------------------------------------------------


def test_old_buffers_are_donated():
    v = Variable(jnp.ones((8, 4)))
    w = Variable(jnp.ones(4))
    opt = RMSprop(0.01, momentum=0.9, centered=True)
    opt.apply_gradients([(jnp.ones((8, 4)), v), (jnp.ones(4), w)])
    old = [v.value, w.value] + [s.value for s in opt.weights[1:]]
    count = opt.iterations.value
    opt.apply_gradients([(jnp.ones((8, 4)), v), (jnp.ones(4), w)])
    assert all(a.is_deleted() for a in old)
    assert not count.is_deleted() and int(count) == 1  # the scalar counter is not donated


def test_gradient_aliasing_a_donated_buffer():
    v = Variable(jnp.array([10.0]))
    opt = RMSprop(0.1)
    opt.apply_gradients([(v.value, v)])  # loss p²/2: the gradient is p itself
    np.testing.assert_allclose(v.numpy(), [9.683772], rtol=1e-7)


def test_gradient_aliasing_another_variable_and_a_shared_gradient():
    v, w, u = Variable(jnp.array([10.0])), Variable(jnp.array([4.0])), Variable(jnp.array([2.0]))
    opt = RMSprop(0.1, momentum=0.5)
    opt.apply_gradients([(jnp.ones(1), v), (jnp.ones(1), w), (jnp.ones(1), u)])  # build slots
    g = jnp.array([3.0])
    # v's gradient is w's buffer (donated in the same call); w and u share one gradient array.
    opt.apply_gradients([(w.value, v), (g, w), (g, u)])
    ref = Reference("keras2", learning_rate=0.1, momentum=0.5)
    start = [np.float32([10.0]), np.float32([4.0]), np.float32([2.0])]
    want = ref.apply([np.ones(1, np.float32)] * 3, start)
    want = ref.apply([want[1], np.float32([3.0]), np.float32([3.0])], want)
    for var, expected in zip((v, w, u), want, strict=True):
        np.testing.assert_array_equal(var.numpy(), expected)
    assert float(g[0]) == 3.0  # a gradient is never donated


# ---- None gradients, validation ---------------------------------------------------------------


def test_none_gradient_warns_and_is_skipped():
    v, w = Variable([1.0]), Variable([2.0], name="frozen")
    opt = RMSprop(0.1)
    with pytest.warns(UserWarning, match="frozen"):
        opt.apply_gradients([(jnp.ones(1), v), (None, w)])
    assert float(w[0]) == 2.0 and float(v[0]) != 1.0
    assert len(opt.weights) == 2  # iterations + rms(v): no slot for w


# ---- iterations -------------------------------------------------------------------------------


def test_iterations_assignment_drives_decay_and_schedules():
    v = Variable([1.0, 2.0])
    opt = RMSprop(learning_rate=lambda: 0.1, decay=0.25, momentum=0.5)
    opt.build([v])
    opt.iterations.assign(5)
    opt.apply_gradients([(jnp.array([0.3, -0.2]), v)])
    tx = rmsprop(0.1, decay=0.25, momentum=0.5)
    p = (jnp.array([1.0, 2.0]),)
    state = tx.init(p)._replace(count=jnp.int32(5))
    u, state = tx.update((jnp.array([0.3, -0.2]),), state)
    np.testing.assert_array_equal(v.numpy(), np.asarray(apply_updates(p, u)[0]))
    assert int(opt.iterations) == 6
    opt.iterations = 2  # a number assigns (jrmsprop convenience)
    assert int(opt.iterations) == 2
    with pytest.raises(RuntimeError, match="Cannot set `iterations`"):
        opt.iterations = Variable(0)


def test_iterations_variable_before_creation():
    opt = RMSprop(0.1)
    counter = Variable(3, name="my_iter")
    opt.iterations = counter
    assert opt.iterations is counter and opt.weights[0] is counter
    result = opt.apply_gradients([(jnp.ones(1), Variable([1.0]))])
    assert result is counter and int(counter) == 4


# ---- weights, slots ---------------------------------------------------------------------------


def test_weights_order_and_slots():
    a, b = Variable(jnp.ones((2, 3)), name="a"), Variable(jnp.ones(3), name="b")
    opt = RMSprop(0.1, momentum=0.9, centered=True)
    assert opt.weights == []
    opt.build([a, b])
    names = [w.name for w in opt.weights]
    assert names == [
        "RMSprop/iter",
        "RMSprop/a/rms",
        "RMSprop/b/rms",
        "RMSprop/a/momentum",
        "RMSprop/b/momentum",
        "RMSprop/a/mg",
        "RMSprop/b/mg",
    ]
    assert opt.variables() == opt.weights
    assert opt.get_slot_names() == ["rms", "momentum", "mg"]
    assert opt.get_slot(b, "mg") is opt.weights[6]
    with pytest.raises(KeyError):
        opt.get_slot(b, "nope")
    assert opt.var_list == [a, b]


def test_add_slot_and_add_weight():
    v = Variable(jnp.ones(3), name="v")
    opt = RMSprop(0.1)
    s = opt.add_slot(v, "extra", initializer="ones")
    assert opt.add_slot(v, "extra") is s and s.name == "RMSprop/v/extra"
    np.testing.assert_array_equal(s.numpy(), [1, 1, 1])
    s2 = opt.add_slot(v, "scaled", initializer=lambda shape, dtype: np.full(shape, 2.0, dtype))
    np.testing.assert_array_equal(s2.numpy(), [2, 2, 2])
    assert opt.weights == [s, s2]  # like Keras: add_slot appends, iterations not yet created
    w = opt.add_weight(
        "counter",
        shape=[2],
        dtype=jnp.int32,
        initializer=4,
        synchronization="ON_READ",
        aggregation="SUM",
    )
    assert (w.name, w.dtype, w.trainable, w.synchronization, w.aggregation) == (
        "RMSprop/counter",
        np.int32,
        False,
        "on_read",
        "sum",
    )
    np.testing.assert_array_equal(w.numpy(), [4, 4])
    assert w not in opt.weights  # Keras 2: add_weight does not add to `weights`

    class Enum:  # the TF enums are matched by their .name
        name = "ONLY_FIRST_REPLICA"

    assert opt.add_weight("x", [], aggregation=Enum()).aggregation == "only_first_replica"
    assert opt.add_weight("y", []).trainable is True
    with pytest.raises(ValueError, match="ON_READ only for non-trainable"):
        opt.add_weight("z", [], trainable=True, synchronization="on_read")
    with pytest.raises(ValueError, match="aggregation"):
        opt.add_weight("z", [], aggregation="max")


# ---- get_weights / set_weights ----------------------------------------------------------------


def _trained_steps(momentum=0.9, centered=True, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    variables = [Variable(x) for x in _grads(rng)]
    opt = RMSprop(0.01, momentum=momentum, centered=centered)
    for _ in range(steps):
        opt.apply_gradients(zip(_grads(rng), variables, strict=True))
    return opt, variables


def test_get_set_weights_round_trip():
    opt, variables = _trained_steps()
    weights = opt.get_weights()
    assert len(weights) == 1 + 3 * len(variables)
    assert int(weights[0]) == 3
    rng = np.random.default_rng(5)
    clones = [Variable(v.numpy() + 0) for v in variables]
    opt2 = RMSprop(0.01, momentum=0.9, centered=True)
    opt2.build(clones)
    opt2.set_weights(weights)
    assert _equal_trees(opt2.get_weights(), weights)
    g = _grads(rng)
    opt.apply_gradients(zip(g, variables, strict=True))
    opt2.apply_gradients(zip(g, clones, strict=True))
    assert _equal_trees([v.value for v in variables], [v.value for v in clones])
    assert _equal_trees(opt.get_weights(), opt2.get_weights())


def test_set_weights_accepts_tf_layout_and_missing_iterations():
    opt, _ = _trained_steps()
    weights = opt.get_weights()
    weights[0] = np.int64(weights[0])  # TF's iterations are int64
    weights[1:] = [w.astype(np.float64) for w in weights[1:]]  # values are cast
    opt.set_weights(weights)
    assert int(opt.iterations) == 3
    opt.set_weights(weights[1:])  # Keras' RMSprop: no iterations -> reset to 0
    assert int(opt.iterations) == 0


# ---- config -----------------------------------------------------------------------------------


class InverseTimeDecay:
    """A Keras-like schedule: a class with __call__(step), get_config and from_config."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate

    def __call__(self, step):
        step = np.float32(step)
        return np.float32(self.initial_learning_rate) / (
            np.float32(1) + np.float32(self.decay_rate) * step / np.float32(self.decay_steps)
        )

    def get_config(self):
        return dict(
            initial_learning_rate=self.initial_learning_rate,
            decay_steps=self.decay_steps,
            decay_rate=self.decay_rate,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_config_keys_and_round_trip():
    opt = RMSprop(
        learning_rate=0.1,
        rho=0.8,
        momentum=0.5,
        epsilon=1e-6,
        centered=True,
        name="opt",
        decay=0.01,
        clipnorm=2.0,
        clipvalue=3.0,
    )
    config = opt.get_config()
    assert config == {
        "name": "opt",
        "clipnorm": 2.0,
        "clipvalue": 3.0,
        "learning_rate": 0.1,
        "decay": 0.01,
        "rho": 0.8,
        "momentum": 0.5,
        "epsilon": 1e-6,
        "centered": True,
    }
    assert list(config) == list(RMSprop.from_config(config).get_config())
    assert RMSprop.from_config(config).get_config() == config
    minimal = RMSprop().get_config()
    assert minimal == {
        "name": "RMSprop",
        "learning_rate": 0.001,
        "decay": 0.0,
        "rho": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-7,
        "centered": False,
    }
    opt.learning_rate.assign(0.25)
    assert opt.get_config()["learning_rate"] == 0.25
    opt.learning_rate = 0.3  # stored in float32, as Keras
    assert opt.get_config()["learning_rate"] == 0.3


def test_config_with_schedule_and_callables():
    opt = RMSprop(
        learning_rate=InverseTimeDecay(0.1, 1.0, 0.5), momentum=lambda: 0.25, global_clipnorm=1.0
    )
    config = opt.get_config()
    assert config["learning_rate"]["class_name"] == "InverseTimeDecay"
    assert config["learning_rate"]["config"] == {
        "initial_learning_rate": 0.1,
        "decay_steps": 1.0,
        "decay_rate": 0.5,
    }
    assert config["momentum"] == 0.25 and config["global_clipnorm"] == 1.0
    # a class outside Keras is never imported from a config: it comes from custom_objects
    with pytest.raises(ValueError, match="custom_objects"):
        RMSprop.from_config(config)
    restored = RMSprop.from_config(config, custom_objects={"InverseTimeDecay": InverseTimeDecay})
    assert isinstance(restored.learning_rate, InverseTimeDecay)
    assert restored.get_config() == config
    by_name = dict(
        config,
        learning_rate={
            "class_name": "InverseTimeDecay",
            "config": config["learning_rate"]["config"],
        },
    )
    custom = RMSprop.from_config(by_name, custom_objects={"InverseTimeDecay": InverseTimeDecay})
    assert isinstance(custom.learning_rate, InverseTimeDecay)
    old = RMSprop.from_config({"lr": 0.5, "name": "x"})
    assert float(old.learning_rate) == 0.5


class _Recorder:
    """A class with from_config that a config must never reach: it records being called."""

    calls: list = []

    def __init__(self, **config):
        _Recorder.calls.append(config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@pytest.mark.parametrize(
    "entry",
    [
        # a module outside Keras / tf_keras / TensorFlow is not even imported
        {"module": "subprocess", "class_name": "Popen", "config": {"args": ["false"]}},
        {"module": "os", "class_name": "system", "config": {}},
        {"module": __name__, "class_name": "_Recorder", "config": {"x": 1}},
        {"module": "never_imported_module_xyz", "class_name": "A", "config": {}},
        # inside them, only LearningRateSchedule classes
        {"module": "keras.src.layers", "class_name": "Dense", "config": {"units": 1}},
        {"module": "keras", "class_name": "Variable", "config": {}},
    ],
    ids=["subprocess", "os.system", "own-class", "unknown-module", "keras-layer", "keras-var"],
)
def test_from_config_imports_only_keras_schedules(entry):
    """A config read from a saved file names what is imported and called: from_config imports a
    class only from Keras, tf_keras or TensorFlow, and only a LearningRateSchedule there."""
    _Recorder.calls.clear()
    modules = set(sys.modules)
    with pytest.raises(ValueError, match="custom_objects"):
        RMSprop.from_config({"name": "x", "learning_rate": entry})
    assert _Recorder.calls == []
    if entry["module"].split(".")[0] not in ("keras", "tf_keras", "tensorflow"):
        assert entry["module"] == __name__ or entry["module"] not in set(sys.modules) - modules


def test_from_config_loads_a_keras_schedule():
    """A Keras learning-rate schedule named by its public module is rebuilt (Keras 3 here; the
    tf_keras one in the live tests)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"  # must precede the first import of keras
    keras = pytest.importorskip("keras")
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    entry = {
        "module": "keras.optimizers.schedules",
        "class_name": "ExponentialDecay",
        "config": schedule.get_config(),
        "registered_name": None,
    }
    opt = RMSprop.from_config({"name": "x", "learning_rate": entry})
    assert type(opt.learning_rate).__name__ == "ExponentialDecay"
    assert float(opt._current("learning_rate", 4)) == pytest.approx(0.025)


def test_config_rejects_plain_function_schedules():
    opt = RMSprop(learning_rate=optax.constant_schedule(0.1))
    with pytest.raises(ValueError, match="get_config"):
        opt.get_config()


def test_tensor_or_callable_momentum_keeps_a_slot():
    """Keras: a tensor or callable momentum always has a momentum slot (epsilon inside)."""
    for momentum in (jnp.asarray(0.0), lambda: 0.0):
        v = Variable([1.0])
        opt = RMSprop(0.1, momentum=momentum, epsilon=1.0)
        opt.apply_gradients([(jnp.array([2.0]), v)])
        assert opt.get_slot_names() == ["rms", "momentum"]
        np.testing.assert_allclose(v.numpy(), [1.0 - 0.1 * 2.0 / np.sqrt(0.4 + 1.0)], rtol=1e-6)
    assert RMSprop(momentum=np.float64(0.0))._momentum is False


def test_hyperparameter_attributes():
    opt = RMSprop(learning_rate=0.1, rho=0.8, momentum=0.5, epsilon=0.0)
    assert float(opt.lr) == pytest.approx(0.1) and float(opt.rho) == pytest.approx(0.8)
    assert float(opt.momentum) == 0.5 and opt.epsilon == 1e-7  # Keras: `epsilon or 1e-7`
    opt.lr = 0.2
    assert float(opt.learning_rate) == pytest.approx(0.2)
    opt.rho = lambda: 0.5
    assert callable(opt.rho)


# ---- clipping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(clipvalue=0.05),
        dict(clipnorm=0.1),
        dict(global_clipnorm=0.2),
        dict(clipvalue=0.05, clipnorm=0.07),
    ],
)
@pytest.mark.slow
def test_optimizer_clipping_matches_clip_then_core(kwargs):
    rng = np.random.default_rng(4)
    init = _grads(rng)
    variables = [Variable(x) for x in init]
    opt = RMSprop(0.01, momentum=0.5, **kwargs)
    clip = clipping.keras_clipping(**kwargs)
    tx = rmsprop(0.01, momentum=0.5)
    params = tuple(jnp.asarray(x) for x in init)
    state = tx.init(params)
    for _ in range(3):
        grads = tuple(jnp.asarray(g) for g in _grads(rng))
        opt.apply_gradients(zip(grads, variables, strict=True))
        clipped, _ = clip.update(grads, clip.init(params))
        updates, state = tx.update(clipped, state, params)
        params = apply_updates(params, updates)
    assert _equal_trees([v.value for v in variables], params)
    transformation = opt.transformation  # the same thing, as one optax chain
    assert isinstance(transformation, optax.GradientTransformation)


# ---- minimize ---------------------------------------------------------------------------------


def test_minimize_anchor():
    opt = RMSprop(learning_rate=0.1)
    var1 = Variable(10.0)
    step = opt.minimize(lambda: (var1**2) / 2.0, [var1])
    assert step is opt.iterations and int(step.numpy()) == 1
    np.testing.assert_allclose(var1.numpy(), 9.683772, rtol=1e-7)


def test_minimize_matches_jax_grad():
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    b0 = rng.standard_normal(2).astype(np.float32)
    x = jnp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    w, b = Variable(w0), Variable(b0)
    opt = RMSprop(0.01, momentum=0.9)
    opt.minimize(lambda: jnp.mean(jnp.tanh(x @ w.value + b.value[None, :]) ** 2), [w, b])

    def loss(params):
        return jnp.mean(jnp.tanh(x @ params[0] + params[1][None, :]) ** 2)

    params = (jnp.asarray(w0), jnp.asarray(b0))
    tx = rmsprop(0.01, momentum=0.9)
    updates, _ = tx.update(jax.grad(loss)(params), tx.init(params))
    expected = apply_updates(params, updates)
    assert _equal_trees([w.value, b.value], expected)


def test_minimize_non_scalar_loss_grad_loss_and_callable_var_list():
    v = Variable([1.0, 2.0])
    opt = RMSprop(1.0)
    grads = compute_gradients(lambda: 3.0 * v, [v])
    np.testing.assert_array_equal(grads[0][0], [3.0, 3.0])  # summed, as tape.gradient
    grads = compute_gradients(lambda: 3.0 * v, [v], grad_loss=jnp.array([1.0, -2.0]))
    np.testing.assert_array_equal(grads[0][0], [3.0, -6.0])
    created = []

    def loss():
        if not created:
            created.append(Variable([0.5], name="late"))
        return jnp.sum(created[0].value ** 2)

    opt.minimize(loss, lambda: created)
    assert created[0].numpy()[0] != 0.5


def test_minimize_unread_variable_gets_none():
    v, unused = Variable([1.0]), Variable([5.0], name="unused")
    opt = RMSprop(0.1)
    with pytest.warns(UserWarning, match="unused"):
        opt.minimize(lambda: jnp.sum(v.value), [v, unused])
    assert float(unused[0]) == 5.0
    with pytest.raises(ValueError, match="No gradients provided"):
        opt.minimize(lambda: jnp.float32(1.0), [v])


def test_minimize_errors_and_restores_values():
    v = Variable([1.0])
    opt = RMSprop(0.1)
    with pytest.raises(ValueError, match="callable"):
        opt.minimize(jnp.float32(1.0), [v])
    with pytest.raises(NotImplementedError, match="tape"):
        opt.minimize(lambda: v.value[0], [v], tape=object())

    def failing():
        _ = v.value * 2
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.minimize(failing, [v])
    assert isinstance(v.value, jax.Array) and float(v[0]) == 1.0


@pytest.mark.slow
def test_minimize_sparse_read_gives_indexed_slices():
    table = Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
    opt = RMSprop(0.1, momentum=0.9)
    ids = jnp.array([[0, 2], [2, 2]])
    grads = compute_gradients(lambda: jnp.sum(table.sparse_read(ids) ** 2), [table])
    g = grads[0][0]
    assert isinstance(g, IndexedSlices)
    np.testing.assert_array_equal(g.indices, [0, 2, 2, 2])
    dense = jax.grad(lambda t: jnp.sum(t[ids] ** 2))(table.value)
    np.testing.assert_array_equal(g.to_dense(), dense)
    # read densely too: one dense gradient
    grads = compute_gradients(
        lambda: jnp.sum(table.sparse_read(ids) ** 2) + jnp.sum(table.value), [table]
    )
    np.testing.assert_array_equal(grads[0][0], dense + 1.0)
    # momentum + sparse: rows not looked up do not move (lazy rows)
    before = table.numpy()
    opt.minimize(lambda: jnp.sum(table.sparse_read(jnp.array([1])) ** 2), [table])
    after = table.numpy()
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    assert not np.array_equal(after[1], before[1])


# ---- the functional view ----------------------------------------------------------------------


def test_state_and_transformation_round_trip():
    opt, variables = _trained_steps(momentum=0.5, centered=True)
    state = jax.tree.map(jnp.copy, opt.state)
    assert isinstance(state, RMSpropState) and int(state.count) == 3
    params = tuple(jnp.copy(v.value) for v in opt.var_list)
    tx = opt.transformation
    g = tuple(jnp.ones(v.shape) for v in opt.var_list)
    updates, new_state = tx.update(g, state, params)
    expected = apply_updates(params, updates)
    opt.apply_gradients(zip(g, opt.var_list, strict=True))
    assert _equal_trees([v.value for v in opt.var_list], expected)
    assert _equal_trees(opt.state, new_state)
    opt.state = state  # load the earlier state back
    assert _equal_trees(opt.state, state)
    with pytest.raises(ValueError):
        opt.state = state._replace(mg=None)


def test_transformation_keeps_momentum_slot_for_callable_momentum():
    opt = RMSprop(0.1, momentum=lambda: 0.0)
    state = opt.transformation.init((jnp.ones(2),))
    assert state.momentum is not None


# ---- Keras rules: zero-argument callables, the fixed decay, Variable momentum ----------------


def test_is_step_schedule_needs_a_required_positional_argument():
    import functools

    from jrmsprop._src.optimizer import is_step_schedule

    assert is_step_schedule(optax.constant_schedule(0.1))
    assert is_step_schedule(lambda count: 0.1)
    assert is_step_schedule(lambda count, scale=1.0: 0.1 * scale)
    assert is_step_schedule(functools.partial(lambda base, count: base, 0.1))
    # callable without arguments: Keras's zero-argument callables
    assert not is_step_schedule(lambda: 0.1)
    assert not is_step_schedule(lambda v=0.05: v)
    assert not is_step_schedule(lambda *args: 0.1)
    assert not is_step_schedule(functools.partial(lambda base, factor=1.0: base * factor, 0.05))
    assert not is_step_schedule(Variable(0.1))


def _three_steps(opt, grad=(0.3, -0.1, 0.2, 0.4)):
    v = Variable(np.array([1.0, -2.0, 3.0, 0.5], np.float32))
    for _ in range(3):
        opt.apply_gradients([(jnp.asarray(grad, jnp.float32), v)])
    return v.numpy()


@pytest.mark.parametrize(
    "make",
    [
        lambda: lambda v=0.05: v,
        lambda: __import__("functools").partial(lambda base, factor=1.0: base * factor, 0.05),
    ],
    ids=["default-arg lambda", "partial with defaults"],
)
def test_callable_with_default_arguments_is_called_without_arguments(make):
    """Keras calls a (non-schedule) callable with no arguments, so ``lambda v=0.05: v`` is the
    constant 0.05 (it used to be called with the step: lr 0, 1, 2, ...)."""
    calls = []

    def rho(r=0.8):
        calls.append(r)
        return r

    opt = RMSprop(learning_rate=make(), rho=rho, momentum=lambda m=0.0: m)
    expected = _three_steps(RMSprop(0.05, rho=0.8, momentum=lambda: 0.0))
    np.testing.assert_array_equal(_three_steps(opt), expected)
    assert calls == [0.8] * 3
    config = opt.get_config()  # Keras: a callable is serialised by calling it
    assert (config["learning_rate"], config["rho"], config["momentum"]) == (0.05, 0.8, 0.0)
    assert opt.get_slot_names() == ["rms", "momentum"]  # a callable momentum keeps its slot


def test_decay_is_fixed_at_construction():
    """Keras: the steps and get_config use ``_initial_decay``; ``opt.decay`` is a float32
    Variable that can be read, set and assigned without effect on training."""
    reference = _three_steps(RMSprop(0.1, decay=0.1))
    opt = RMSprop(0.1, decay=0.1)
    assert isinstance(opt.decay, Variable) and opt.decay.dtype == np.float32
    decay_variable = opt.decay
    opt.decay = 0.5
    assert opt.decay is decay_variable and float(opt.decay) == 0.5
    opt.decay.assign(0.7)
    assert float(opt.decay) == pytest.approx(0.7)
    np.testing.assert_array_equal(_three_steps(opt), reference)
    assert opt.get_config()["decay"] == 0.1
    with pytest.raises(ValueError, match="decay"):
        opt.decay.assign(-1.0)
    # no decay at construction: setting one later does not start decaying either
    opt = RMSprop(0.1)
    opt.decay = 0.5
    np.testing.assert_array_equal(_three_steps(opt), _three_steps(RMSprop(0.1)))
    assert opt.get_config()["decay"] == 0.0
    assert RMSprop.from_config(opt.get_config()).get_config() == opt.get_config()


@pytest.mark.parametrize("value, slot", [(0.0, False), (0.5, True)])
def test_variable_momentum_gets_a_slot_by_its_value(value, slot):
    """Keras: ``isinstance(momentum, tf.Tensor) or callable(momentum) or momentum > 0``; a
    Variable is not a tensor there, so a Variable momentum of 0 keeps ε outside the root."""
    opt = RMSprop(0.1, momentum=Variable(value))
    reference = RMSprop(0.1, momentum=value)
    np.testing.assert_array_equal(_three_steps(opt), _three_steps(reference))
    assert opt.get_slot_names() == reference.get_slot_names()
    assert ("momentum" in opt.get_slot_names()) == slot
    # an array momentum is a tensor: a slot whatever its value (Keras's tf.Tensor)
    assert RMSprop(0.1, momentum=jnp.asarray(0.0))._momentum


# ---- the constructor --------------------------------------------------------------------------

# (argument, bad value, error type). Every hyperparameter: out of range, NaN, inf, a boolean.
CONSTRUCTOR = [
    ("learning_rate", -1.0, ValueError),
    ("learning_rate", NAN, ValueError),
    ("learning_rate", INF, ValueError),
    ("learning_rate", True, TypeError),
    ("learning_rate", "0.1", TypeError),
    ("learning_rate", None, TypeError),
    ("learning_rate", jnp.ones(2), ValueError),
    ("lr", -1.0, ValueError),
    ("rho", -0.1, ValueError),
    ("rho", 1.5, ValueError),
    ("rho", NAN, ValueError),
    ("rho", True, TypeError),
    ("momentum", -1.0, ValueError),
    ("momentum", 1.5, ValueError),
    ("momentum", NAN, ValueError),
    ("momentum", INF, ValueError),
    ("momentum", True, TypeError),
    ("momentum", jnp.float32(2.0), ValueError),
    ("epsilon", -1.0, ValueError),
    ("epsilon", NAN, ValueError),
    ("epsilon", INF, ValueError),
    ("epsilon", True, TypeError),
    ("decay", -1.0, ValueError),
    ("decay", NAN, ValueError),
    ("decay", INF, ValueError),
    ("decay", True, TypeError),
    ("clipvalue", -1.0, ValueError),
    ("clipvalue", NAN, ValueError),
    ("clipvalue", True, TypeError),
    ("clipnorm", -1.0, ValueError),
    ("clipnorm", NAN, ValueError),
    ("clipnorm", INF, ValueError),
    ("clipnorm", True, TypeError),
    ("global_clipnorm", -1.0, ValueError),
    ("global_clipnorm", INF, ValueError),
    ("global_clipnorm", "1", TypeError),
    ("centered", "no", TypeError),
    ("centered", 1, TypeError),
    ("centered", None, TypeError),
    ("name", 3, TypeError),
    ("foo", 1.0, TypeError),
]


@pytest.mark.parametrize("arg, value, error", CONSTRUCTOR, ids=lambda x: repr(x)[:20])
def test_constructor_refuses(arg, value, error):
    with pytest.raises(error, match=f"`?{arg}`?"):
        RMSprop(**{arg: value})


def test_constructor_refuses_both_norm_clips():
    with pytest.raises(ValueError, match="`clipnorm`.*`global_clipnorm`"):
        RMSprop(clipnorm=1.0, global_clipnorm=1.0)


# (arguments, tf_keras.optimizers.legacy.RMSprop's own message): jrmsprop raises Keras's
# ValueError with Keras's text first (verified live in test_live_frameworks.py).
KERAS_ERRORS = [
    (
        dict(momentum=2.5),
        "`momentum` must be between [0, 1]. Received: momentum=2.5 (of type <class 'float'>).",
    ),
    (
        dict(momentum=-1),
        "`momentum` must be between [0, 1]. Received: momentum=-1 (of type <class 'int'>).",
    ),
    (dict(lr=-1), "Expected lr >= 0, received: -1"),
    (dict(decay=-1), "Expected decay >= 0, received: -1"),
    (dict(clipnorm=-1), "Expected clipnorm >= 0, received: -1"),
    (dict(clipvalue=-0.5), "Expected clipvalue >= 0, received: -0.5"),
    (dict(global_clipnorm=-2), "Expected global_clipnorm >= 0, received: -2"),
    (
        dict(clipnorm=1.0, global_clipnorm=1.0),
        "Cannot accept both `clipnorm` and "
        "`global_clipnorm`. Received: `clipnorm`=1.0, `global_clipnorm`=1.0.",
    ),
    (dict(foo=1), "Unexpected keyword argument passed to optimizer: foo."),
]


@pytest.mark.parametrize("kwargs, message", KERAS_ERRORS, ids=lambda x: str(x)[:30])
def test_constructor_raises_keras_message(kwargs, message):
    error = TypeError if "foo" in kwargs else ValueError
    with pytest.raises(error) as info:
        RMSprop(**kwargs)
    assert str(info.value).startswith(message)


# Values Keras accepts but jrmsprop refuses: jrmsprop's own message alone.
KERAS_STRICTER = [
    (dict(momentum=NAN), "`momentum` must be in [0, 1], got nan"),
    (dict(lr=INF), "`lr` must be finite and >= 0, got inf"),
    (dict(rho=-0.5), "`rho` must be in [0, 1], got -0.5"),
    (dict(clipnorm=NAN), "`clipnorm` must be finite and >= 0, got nan"),
]


@pytest.mark.parametrize("kwargs, message", KERAS_STRICTER, ids=lambda x: str(x)[:30])
def test_stricter_checks_keep_jrmsprops_message(kwargs, message):
    with pytest.raises(ValueError) as info:
        RMSprop(**kwargs)
    assert str(info.value) == message


def test_lr_is_keras_deprecated_alias():
    """Keras 2's rule: ``lr`` replaces ``learning_rate``, with Keras's warning."""
    with pytest.warns(UserWarning) as record:
        opt = RMSprop(learning_rate=0.5, lr=0.1)
    assert [str(w.message) for w in record] == [
        "The `lr` argument is deprecated, use `learning_rate` instead."
    ]
    assert record[0].filename == __file__  # the warning points at the caller
    assert opt.get_config()["learning_rate"] == 0.1


def test_keras3_optimizer_raises_keras_messages():
    """``jrmsprop.keras.RMSprop`` has TF 2.x's ``momentum``, ``decay`` and ``lr``."""
    jk = pytest.importorskip("jrmsprop.keras")
    if jk.keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    for kwargs, message in KERAS_ERRORS[:4]:
        with pytest.raises(ValueError) as info:
            jk.RMSprop(**kwargs)
        assert str(info.value).startswith(message)
    with pytest.warns(UserWarning, match="^The `lr` argument is deprecated"):
        opt = jk.RMSprop(lr=0.25)
    assert float(opt.learning_rate.value) == 0.25


def test_accepted_edge_values():
    """The ranges' ends are valid, and Keras's ``epsilon or 1e-7`` still holds."""
    opt = RMSprop(learning_rate=0.0, rho=1.0, momentum=1.0, epsilon=0, decay=0.0, clipnorm=0.0)
    assert opt.epsilon == 1e-7
    assert RMSprop(rho=0.0, epsilon=None).epsilon == 1e-7
    opt.epsilon = 0  # after construction, as in Keras: 0 is 0
    assert opt.epsilon == 0 and opt.get_config()["epsilon"] == 0


# ---- a trained optimizer: each bad input leaves it exactly as it was -------------------------


def _trained():
    rng = np.random.default_rng(0)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt = RMSprop(0.01, momentum=0.5, centered=True, clipvalue=1.0)
    for _ in range(2):
        opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    return opt, a, b


def _snapshot(opt, *variables, config=True):
    return dict(
        names=[w.name for w in opt.weights],
        weights=opt.get_weights(),
        slots=opt.get_slot_names(),
        var_list=[v.name for v in opt.var_list],
        variables=[v.numpy() for v in variables],
        config=opt.get_config() if config else None,
    )


def _assert_unchanged(before, after):
    assert before["names"] == after["names"]
    assert before["slots"] == after["slots"] and before["var_list"] == after["var_list"]
    assert before["config"] == after["config"]
    for x, y in zip(
        before["weights"] + before["variables"], after["weights"] + after["variables"], strict=True
    ):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _set(attr, value):
    return lambda opt, a, b, new: setattr(opt, attr, value)


# (entry point, action(opt, a, b, new_variable), error type, the name the message must contain)
STATEFUL = [
    # property setters
    ("setter", _set("rho", 2), ValueError, "rho"),
    ("setter", _set("learning_rate", -1), ValueError, "learning_rate"),
    ("setter", _set("lr", NAN), ValueError, "learning_rate"),
    ("setter", _set("momentum", 1.5), ValueError, "momentum"),
    ("setter", _set("momentum", True), TypeError, "momentum"),
    ("setter", _set("epsilon", INF), ValueError, "epsilon"),
    ("setter", _set("epsilon", "small"), TypeError, "epsilon"),
    ("setter", _set("epsilon", None), TypeError, "epsilon"),  # only the constructor maps None
    ("setter", _set("decay", -0.5), ValueError, "decay"),
    ("setter", _set("clipvalue", -1.0), ValueError, "clipvalue"),
    ("setter", _set("clipnorm", INF), ValueError, "clipnorm"),
    ("setter", _set("global_clipnorm", NAN), ValueError, "global_clipnorm"),
    ("setter", _set("centered", "no"), TypeError, "centered"),
    # the hyperparameter Variables and iterations
    ("assign", lambda o, a, b, n: o.learning_rate.assign(-1.0), ValueError, "learning_rate"),
    ("assign", lambda o, a, b, n: o.rho.assign(2.0), ValueError, "rho"),
    ("assign", lambda o, a, b, n: o.momentum.assign(NAN), ValueError, "momentum"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(-1), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_sub(5), ValueError, "iterations"),
    ("iterations", _set("iterations", -3), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(1.5), TypeError, "iter"),
    # out of int32's range: refused before the value is narrowed (it used to wrap to 5 / 0)
    ("iterations", lambda o, a, b, n: o.iterations.assign(2**32 + 5), ValueError, "iterations"),
    ("iterations", _set("iterations", 2**32), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign(np.int64(2**40)), ValueError, "iterat"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_add(2**32), ValueError, "iterations"),
    ("iterations", lambda o, a, b, n: o.iterations.assign_sub(2**32), ValueError, "iterations"),
    # ragged values for the hyperparameter Variables
    (
        "assign",
        lambda o, a, b, n: o.learning_rate.assign([[1.0], [1.0, 2.0]]),
        TypeError,
        "'RMSprop/learning_rate'.*ragged",
    ),
    # apply_gradients naming a variable seen for the first time: no slot may appear
    ("apply", lambda o, a, b, n: o.apply_gradients([(jnp.ones(3), n)]), ValueError, "new"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2, jnp.int32), n)]),
        TypeError,
        "new",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(np.array(["x", "y"]), n)]), TypeError, "new"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), Variable([1, 2], name="i"))]),
        TypeError,
        "'i'",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), n), (jnp.ones(2), n)]),
        ValueError,
        r"'new' appears more than once .* TF 2\.x Keras",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones(2), jnp.ones(2))]),
        TypeError,
        "Variable",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(jnp.ones(2),)]), TypeError, "pairs"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients(
            [(IndexedSlices(jnp.ones((1, 2)), jnp.array([0]), (5, 2)), n)]
        ),
        ValueError,
        "new",
    ),
    ("apply", lambda o, a, b, n: o.apply_gradients([(None, n)]), ValueError, "new"),
    ("apply", lambda o, a, b, n: o.apply_gradients(None), TypeError, "`grads_and_vars`"),
    ("apply", lambda o, a, b, n: o.apply_gradients(3), TypeError, "`grads_and_vars`"),
    ("apply", lambda o, a, b, n: o.apply_gradients("ab"), TypeError, "`grads_and_vars`"),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([([[1.0], [1.0, 2.0]], n)]),
        TypeError,
        "'new'.*ragged",
    ),
    (
        "apply",
        lambda o, a, b, n: o.apply_gradients([(jnp.ones((3, 2)), a), ([[1.0], [1.0, 2.0]], b)]),
        TypeError,
        "'b'.*ragged",
    ),
]


@pytest.mark.parametrize(
    "entry, action, error, name",
    STATEFUL,
    ids=[f"{r[0]}-{r[3]}-{i}" for i, r in enumerate(STATEFUL)],
)
def test_bad_input_changes_nothing(entry, action, error, name):
    opt, a, b = _trained()
    new = Variable(np.zeros(2, np.float32), name="new")
    before = _snapshot(opt, a, b, new)
    with pytest.raises(error, match=name):
        action(opt, a, b, new)
    _assert_unchanged(before, _snapshot(opt, a, b, new))
    # and the optimizer still trains normally afterwards
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    assert int(opt.iterations) == int(before["weights"][0]) + 1
    assert all(np.isfinite(v.numpy()).all() for v in (a, b))


# hyperparameter values that only show when evaluated: callables and schedules
EVALUATED = [
    ("learning_rate", lambda: -1.0, ValueError),
    ("learning_rate", lambda: NAN, ValueError),
    ("learning_rate", lambda: "x", TypeError),
    ("learning_rate", lambda: None, TypeError),
    ("learning_rate", lambda: jnp.ones(2), ValueError),
    ("learning_rate", optax.constant_schedule(-0.5), ValueError),
    ("rho", lambda: 1.5, ValueError),
    ("momentum", lambda: INF, ValueError),
    ("epsilon", lambda: -1e-7, ValueError),
]


@pytest.mark.parametrize("arg, value, error", EVALUATED)
def test_bad_evaluated_value_changes_nothing(arg, value, error):
    """A callable's value is checked when evaluated, before any slot is created."""
    opt, a, b = _trained()
    new = Variable(np.zeros(2, np.float32), name="new")
    setattr(opt, arg, value)  # a callable cannot be checked before it is called
    before = _snapshot(opt, a, b, new, config=False)
    with pytest.raises(error, match=arg):
        opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.ones(2), new)])
    after = _snapshot(opt, a, b, new, config=False)
    _assert_unchanged(before, after)


def test_bad_decay_callable_is_evaluated_from_the_constructor():
    """``decay`` is fixed at construction (Keras's ``_initial_decay``): a bad callable given
    there fails the step, naming it, and creates nothing; one set later is never evaluated."""
    opt = RMSprop(0.1, decay=lambda: True)
    v = Variable([1.0, 2.0])
    with pytest.raises(TypeError, match="decay"):
        opt.apply_gradients([(jnp.ones(2), v)])
    assert opt.weights == [] and opt.get_slot_names() == []
    opt = RMSprop(0.1)
    opt.decay = lambda: True
    opt.apply_gradients([(jnp.ones(2), v)])
    assert int(opt.iterations) == 1


@pytest.mark.parametrize(
    "slot_kwargs, error, words",
    [
        (dict(shape=[7]), ValueError, r"'rms' of variable 'v' has shape \(7,\)"),
        (dict(dtype="int32"), TypeError, "'rms' of variable 'v' has dtype int32"),
        (dict(dtype="complex64"), TypeError, "'rms' of variable 'v' has dtype complex64"),
    ],
)
@pytest.mark.parametrize("trained", [False, True])
def test_bad_existing_slot_fails_the_step_and_changes_nothing(slot_kwargs, error, words, trained):
    """A slot made by ``add_slot`` with the wrong shape or dtype: the step names it and creates
    nothing (no ``iterations``, no other slot), on a fresh or a trained optimizer."""
    v = Variable(np.ones(4, np.float32), name="v")
    if trained:
        opt, a, b = _trained()
    else:
        opt, a, b = RMSprop(0.1, momentum=0.9, centered=True), v, v
    opt.add_slot(v, "rms", **slot_kwargs)
    before = _snapshot(opt, a, b, v)
    for action in (
        lambda: opt.apply_gradients([(jnp.ones(4), v)]),
        lambda: opt.minimize(lambda: jnp.sum(v.value**2), [v]),
        lambda: opt.build([v]),
    ):
        with pytest.raises(error, match=words):
            action()
        _assert_unchanged(before, _snapshot(opt, a, b, v))
    assert ("RMSprop/iter" in before["names"]) == trained


def test_bad_existing_momentum_slot_is_named():
    v = Variable(np.ones(3, np.float32), name="v")
    opt = RMSprop(0.1, momentum=0.5)
    opt.build([v])
    opt._slots[v]["momentum"] = Variable(np.zeros(2, np.float32))  # a corrupted slot
    with pytest.raises(ValueError, match="'momentum' of variable 'v' has shape"):
        opt.apply_gradients([(jnp.ones(3), v)])
    assert int(opt.iterations) == 0


def test_bad_callable_on_a_fresh_optimizer_creates_nothing():
    opt = RMSprop(learning_rate=lambda: -1.0)
    v = Variable([1.0, 2.0])
    with pytest.raises(ValueError, match="learning_rate"):
        opt.apply_gradients([(jnp.ones(2), v)])
    assert opt.weights == [] and opt.get_slot_names() == []
    opt.learning_rate = 0.1
    opt.apply_gradients([(jnp.ones(2), v)])
    assert len(opt.weights) == 2 and int(opt.iterations) == 1


# ---- set_weights ------------------------------------------------------------------------------

SET_WEIGHTS = [
    (lambda w: w[:-2], ValueError, "length"),
    (lambda w: w + [np.zeros(2)], ValueError, "length"),
    (lambda w: [w[0], np.zeros((9, 9), np.float32)] + w[2:], ValueError, "RMSprop/a/rms"),
    (lambda w: [w[0], w[1].astype(np.complex64)] + w[2:], TypeError, "RMSprop/a/rms"),
    (lambda w: [np.int64(-1)] + w[1:], ValueError, "RMSprop/iter"),
    (lambda w: [np.int64(2**40)] + w[1:], ValueError, "RMSprop/iter"),
    (lambda w: [np.float32(2.0)] + w[1:], TypeError, "RMSprop/iter"),
    (lambda w: "weights", TypeError, "weights"),
    (
        lambda w: w[:3] + [np.array(["x"] * w[3].size).reshape(w[3].shape)] + w[4:],
        TypeError,
        "weight 3",
    ),
    # a value that is not an array of numbers: named by its index (and the weight)
    (lambda w: [w[0], None] + w[2:], TypeError, r"weight 1 \('RMSprop/a/rms'\).*got None"),
    (lambda w: [w[0], "abc"] + w[2:], TypeError, r"weight 1 \('RMSprop/a/rms'\).*'abc'"),
    (lambda w: w[:3] + [[[1.0], [1.0, 2.0]]] + w[4:], TypeError, "weight 3.*ragged"),
    (lambda w: [None] + w[2:], TypeError, r"weight 0 \('RMSprop/a/rms'\)"),  # no iterations
    (lambda w: [[1, [2]]] + w[1:], TypeError, r"weight 0 \('RMSprop/iter'\).*ragged"),
]


@pytest.mark.parametrize("corrupt, error, name", SET_WEIGHTS)
def test_set_weights_refuses(corrupt, error, name):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=name):
        opt.set_weights(corrupt(opt.get_weights()))
    _assert_unchanged(before, _snapshot(opt, a, b))


def test_set_weights_before_build_says_to_build():
    opt = RMSprop()
    with pytest.raises(ValueError, match=r"call `build\(var_list\)`"):
        opt.set_weights([np.array(1), np.zeros(3, np.float32)])
    v = Variable(np.ones(3, np.float32))
    opt.build([v])
    opt.set_weights([np.array(1), np.full(3, 2.0, np.float32)])
    assert int(opt.iterations) == 1
    np.testing.assert_array_equal(opt.get_slot(v, "rms").numpy(), [2.0, 2.0, 2.0])


# ---- add_slot / add_weight / build ------------------------------------------------------------

SLOTS_AND_WEIGHTS = [
    (lambda o, a: o.add_slot(np.zeros(2), "s"), TypeError, "var"),
    (lambda o, a: o.add_slot(a, 3), TypeError, "slot_name"),
    (lambda o, a: o.add_slot(a, "s", initializer="bogus"), ValueError, "initializer"),
    (lambda o, a: o.add_slot(a, "s", initializer=np.ones(7)), ValueError, "initializer"),
    (lambda o, a: o.add_slot(a, "s", shape=[-1]), ValueError, "shape"),
    (lambda o, a: o.add_slot(a, "s", dtype="nope"), TypeError, "dtype"),
    (lambda o, a: o.add_weight(3, []), TypeError, "name"),
    (lambda o, a: o.add_weight("w", "ab"), TypeError, "shape"),
    (lambda o, a: o.add_weight("w", [2], dtype="nope"), TypeError, "dtype"),
    (lambda o, a: o.add_weight("w", [2], trainable="yes"), TypeError, "trainable"),
    (lambda o, a: o.add_weight("w", [2], aggregation="max"), ValueError, "aggregation"),
    (lambda o, a: o.add_weight("w", [2], synchronization="x"), ValueError, "synchronization"),
    (lambda o, a: o.build([a, "b"]), TypeError, "var_list"),
    (lambda o, a: o.build([Variable([1, 2], name="ints")]), TypeError, "ints"),
]


@pytest.mark.parametrize("action, error, name", SLOTS_AND_WEIGHTS)
def test_slots_and_weights_refuse(action, error, name):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=name):
        action(opt, a)
    _assert_unchanged(before, _snapshot(opt, a, b))


# ---- from_config ------------------------------------------------------------------------------

FROM_CONFIG = [
    (["learning_rate", 0.1], TypeError, "config"),
    ({"learning_rate": -1.0}, ValueError, "learning_rate"),
    ({"rho": 1.5}, ValueError, "rho"),
    ({"lr": NAN}, ValueError, "learning_rate"),
    ({"centered": "yes"}, TypeError, "centered"),
    ({"clipnorm": INF}, ValueError, "clipnorm"),
    ({"foo": 1.0}, TypeError, "foo"),
    ({"learning_rate": {"class_name": "Nope", "config": {}}}, ValueError, "Nope"),
]


@pytest.mark.parametrize("config, error, name", FROM_CONFIG)
def test_from_config_refuses(config, error, name):
    with pytest.raises(error, match=name):
        RMSprop.from_config(config)


# ---- pickle and deepcopy ----------------------------------------------------------------------


class HalvingSchedule:
    """A picklable Keras-style schedule (a class with get_config)."""

    def __init__(self, initial):
        self.initial = initial

    def __call__(self, step):
        return np.float32(self.initial) / np.float32(2.0) ** np.float32(step)

    def get_config(self):
        return {"initial": self.initial}


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("learning_rate", [0.01, HalvingSchedule(0.05)], ids=["number", "schedule"])
def test_round_trip_continues_bit_for_bit(how, learning_rate):
    rng = np.random.default_rng(3)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt = RMSprop(learning_rate, rho=0.8, momentum=0.5, centered=True, decay=0.1, clipnorm=2.0)
    grads = [
        (rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32))
        for _ in range(4)
    ]
    for ga, gb in grads[:2]:
        opt.apply_gradients([(ga, a), (gb, b)])
    if how == "pickle":
        opt2, a2, b2 = pickle.loads(pickle.dumps((opt, a, b)))
    else:
        opt2, a2, b2 = copy.deepcopy((opt, a, b))
    assert opt2.get_config() == opt.get_config()
    assert int(opt2.iterations) == 2 and opt2.var_list == [a2, b2]
    assert [w.name for w in opt2.weights] == [w.name for w in opt.weights]
    for x, y in zip(opt2.get_weights(), opt.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    for ga, gb in grads[2:]:
        opt.apply_gradients([(ga, a), (gb, b)])
        opt2.apply_gradients([(ga, a2), (gb, b2)])
    for x, y in zip(
        [a2.numpy(), b2.numpy()] + opt2.get_weights(),
        [a.numpy(), b.numpy()] + opt.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    assert len(opt2.weights) == len(opt.weights)  # the copies' slots were found, none added
    with pytest.raises(ValueError, match="learning_rate"):  # the checks survive the copy
        opt2.learning_rate.assign(-1.0) if how == "pickle" and learning_rate == 0.01 else (
            setattr(opt2, "learning_rate", -1.0)
        )
    with pytest.raises(ValueError, match="iterations"):
        opt2.iterations.assign(-1)


# ---- a Variable (or NumPy array) given as a hyperparameter: checked at every step --------------

# (hyperparameter, a valid value, a bad value assigned later, error type)
VARIABLE_HYPERS = [
    ("learning_rate", 0.01, -1.0, ValueError),
    ("learning_rate", 0.01, NAN, ValueError),
    ("learning_rate", 0.01, INF, ValueError),
    ("rho", 0.9, 1.5, ValueError),
    ("momentum", 0.5, 5.0, ValueError),
    ("momentum", 0.5, -0.5, ValueError),
    ("epsilon", 1e-7, -1.0, ValueError),
    ("decay", 0.1, -1.0, ValueError),
]


def _with_variable_hyper(arg, good):
    hyper = Variable(good, name="hyper")
    opt = RMSprop(**{"learning_rate": 0.01, arg: hyper})
    rng = np.random.default_rng(1)
    a = Variable(rng.standard_normal((3, 2)).astype(np.float32), name="a")
    b = Variable(rng.standard_normal(4).astype(np.float32), name="b")
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    return opt, hyper, a, b


@pytest.mark.parametrize("arg, good, bad, error", VARIABLE_HYPERS)
def test_variable_hyperparameter_is_checked_at_every_step(arg, good, bad, error):
    """A Variable the user passed may be assigned after it was checked: the step checks its
    value now, names the hyperparameter and changes nothing (it used to ascend with lr = -1 and
    use momentum 5 as is)."""
    opt, hyper, a, b = _with_variable_hyper(arg, good)
    new = Variable(np.zeros(2, np.float32), name="new")
    hyper.assign(bad)  # the user's own Variable: not checked on assign
    before = _snapshot(opt, a, b, new, config=False)
    for action in (
        lambda: opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.ones(2), new)]),
        lambda: opt.minimize(lambda: jnp.sum(a.value**2), [a]),
        lambda: opt.transformation,
    ):
        with pytest.raises(error, match=f"`{arg}`"):
            action()
        _assert_unchanged(before, _snapshot(opt, a, b, new, config=False))
    hyper.assign(good)  # a good value again: the step runs
    opt.apply_gradients([(jnp.ones((3, 2)), a), (jnp.full(4, 0.5), b)])
    assert int(opt.iterations) == 2


def test_variable_learning_rate_assigned_is_used():
    """A good value assigned to the user's Variable is what the next step uses."""
    lr = Variable(0.1)
    opt = RMSprop(learning_rate=lr)
    v = Variable([1.0, 1.0])
    lr.assign(0.0)
    opt.apply_gradients([(jnp.ones(2), v)])
    np.testing.assert_array_equal(v.numpy(), [1.0, 1.0])


def test_numpy_array_epsilon_is_checked_at_every_step():
    """``epsilon`` is stored as given: a NumPy array can be changed in place afterwards."""
    eps = np.array(1e-7)
    opt = RMSprop(0.1, epsilon=eps)
    v = Variable([1.0, 1.0])
    opt.apply_gradients([(jnp.ones(2), v)])
    eps[...] = -1.0
    before = _snapshot(opt, v)
    with pytest.raises(ValueError, match="`epsilon`"):
        opt.apply_gradients([(jnp.ones(2), v)])
    _assert_unchanged(before, _snapshot(opt, v))


def test_own_hyperparameter_variables_still_check_on_assign():
    opt = RMSprop(0.1, momentum=0.5)
    with pytest.raises(ValueError, match="`momentum`"):
        opt.momentum.assign(5.0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        opt.learning_rate.assign(-1.0)
    assert float(opt.momentum) == 0.5 and float(opt.learning_rate) == np.float32(0.1)


# ---- iterations: out of int32's range is refused, never wrapped --------------------------------


def test_iterations_overflow_by_assign_add_is_refused():
    opt, a, b = _trained()
    opt.iterations.assign(2**31 - 1)
    before = _snapshot(opt, a, b)
    with pytest.raises(ValueError, match="`iterations`.*got 2147483648"):  # not wrapped
        opt.iterations.assign_add(1)
    with pytest.raises(ValueError, match="`iterations`"):
        opt.iterations.assign(2**31)
    _assert_unchanged(before, _snapshot(opt, a, b))
    assert int(opt.iterations) == 2**31 - 1
    opt.iterations.assign(np.int64(5))  # in range: fine, whatever the integer type
    assert int(opt.iterations) == 5 and opt.iterations.dtype == np.int32


# ---- from_config: custom_objects ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{"learning_rate": 0.1}, {"learning_rate": {"class_name": "Halving", "config": {}}}],
)
@pytest.mark.parametrize("custom_objects", [[HalvingSchedule], ("Halving",), "Halving", 3])
def test_from_config_refuses_custom_objects_that_are_not_a_dict(config, custom_objects):
    with pytest.raises(TypeError, match="`custom_objects`.*must be a dict"):
        RMSprop.from_config(config, custom_objects=custom_objects)


# ---- state: leaves that are not arrays of numbers ----------------------------------------------


@pytest.mark.parametrize(
    "replace, words",
    [
        (dict(count=None), "`state.count`.*None"),
        (dict(rms=(np.zeros((3, 2), np.float32), [[1.0], [1.0, 2.0]])), r"`state.rms\[1\]`"),
        (dict(mg=("abc", np.zeros(4, np.float32))), r"`state.mg\[0\]`.*'abc'"),
    ],
)
def test_state_setter_names_a_leaf_that_is_not_numbers(replace, words):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(TypeError, match=words):
        opt.state = opt.state._replace(**replace)
    _assert_unchanged(before, _snapshot(opt, a, b))


# ---- impossible shapes (F13), iterations beyond 64 bits, a loss that is not a real number -------

# XLA aborts the interpreter (it does not raise) for a shape whose size in bytes overflows a
# signed 64-bit integer: these must be refused before any array is made.
IMPOSSIBLE_SHAPES = [
    ([2**62], ValueError, r"`shape` \(4611686018427387904,\) is too large"),
    ([2**61], ValueError, "`shape`.*too large .*float32"),  # 2**63 bytes of float32
    ([2**31, 2**31, 2], ValueError, "`shape`.*too large"),
    ([2**62, 2**62, 0], ValueError, "`shape`.*too large"),
    ([2**64], ValueError, "`shape`.*too large"),
    ([-1, 3], ValueError, "`shape` must not have negative sizes"),
    ([True], TypeError, "`shape`.*boolean"),
    ([np.True_, 2], TypeError, "`shape`.*boolean"),
    ([2.5], TypeError, "`shape`.*float"),  # was truncated to 2
    (["3"], TypeError, "`shape`.*str"),  # was parsed as 3
    ([None], TypeError, "`shape`"),
    (3, TypeError, "`shape`"),
]


@pytest.mark.parametrize("where", ["add_weight", "add_slot"])
@pytest.mark.parametrize("shape, error, words", IMPOSSIBLE_SHAPES)
def test_impossible_shapes_are_refused_and_create_nothing(where, shape, error, words):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(error, match=words):
        if where == "add_weight":
            opt.add_weight("w", shape)
        else:
            opt.add_slot(a, "s", shape=shape)
    _assert_unchanged(before, _snapshot(opt, a, b))
    with pytest.raises(KeyError):
        opt.get_slot(a, "s")


def test_large_but_possible_shapes_and_integer_sizes_still_work():
    opt, a, _ = _trained()
    assert opt.add_weight("w", np.array([2, 3])).shape == (2, 3)  # NumPy integers
    assert opt.add_weight("e", [0, 2**40, 2**20]).shape == (0, 2**40, 2**20)  # 2**62 bytes
    assert opt.add_slot(a, "s", shape=(jnp.int32(2), 1)).shape == (2, 1)
    assert opt.add_weight("scalar", []).shape == ()


@pytest.mark.parametrize("action", ["assign", "assign_add", "assign_sub"])
@pytest.mark.parametrize("value", [2**70, -(2**70), 2**64])
def test_iterations_beyond_64_bits_names_iterations(action, value):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(ValueError, match=r"`iterations` must be in \[0, 2147483647\]") as info:
        getattr(opt.iterations, action)(value if action != "assign_sub" else -value)
    assert "RMSprop/iter" not in str(info.value)
    _assert_unchanged(before, _snapshot(opt, a, b))
    assert int(opt.iterations) == 2


def test_iterations_check_survives_pickle_and_deepcopy():
    opt, a, b = _trained()
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        with pytest.raises(ValueError, match="`iterations`"):
            other.iterations.assign(2**70)
        other.iterations.assign(7)
        assert int(other.iterations) == 7
    assert int(opt.iterations) == 2


@pytest.mark.parametrize(
    "loss, got",
    [
        (lambda a: "x", "'x'"),
        (lambda a: None, "None"),
        (lambda a: 3, "int32"),
        (lambda a: jnp.sum(a.value) > 0, "bool"),
        (lambda a: jnp.sum(a.value).astype(jnp.int32), "int32"),
        (lambda a: object(), "object"),
    ],
)
def test_minimize_refuses_a_loss_that_is_not_floating_point_or_complex(loss, got):
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    with pytest.raises(TypeError, match=f"`loss` must return a floating-point or complex.*{got}"):
        opt.minimize(lambda: loss(a), [a])
    _assert_unchanged(before, _snapshot(opt, a, b))


def test_minimize_still_takes_floating_point_losses():
    opt, a, b = _trained()
    opt.minimize(lambda: jnp.sum(a.value**2).astype(jnp.bfloat16), [a])
    opt.minimize(lambda: [jnp.sum(a.value), jnp.sum(a.value)], [a])  # non-scalar: summed
    opt.minimize(lambda: jnp.sum(a.value**2).astype(jnp.complex64), [a])  # TF: the real part's
    assert int(opt.iterations) == 5


@pytest.mark.parametrize(
    "slot, value, words",
    [
        ("rms", 1e39, "beyond the range of the slot's dtype float32"),
        ("momentum", -1e39, "beyond the range of the slot's dtype float32"),
        ("rms", -1.0, "negative"),
        ("rms", -np.inf, "negative"),
    ],
)
@pytest.mark.parametrize("route", ["set_weights", "state"])
def test_loading_slot_values_the_slot_cannot_hold_changes_nothing(slot, value, words, route):
    """As the saved-state loaders: a finite value that would become inf in the slot's dtype, and
    a negative rms, are refused naming the slot; NaN and inf still load (a framework's state
    after a NaN gradient)."""
    opt, a, b = _trained()
    before = _snapshot(opt, a, b)
    weights = opt.get_weights()
    index = [w.name for w in opt.weights].index(f"RMSprop/a/{slot}")
    weights[index] = np.full_like(weights[index], value, dtype=np.float64)
    with pytest.raises(ValueError, match=rf"RMSprop/a/{slot}.*{words}"):
        if route == "set_weights":
            opt.set_weights(weights)
        else:
            state = opt.state
            leaves = getattr(state, slot)
            leaves = [weights[index], *leaves[1:]]
            opt.state = state._replace(**{slot: leaves})
    _assert_unchanged(before, _snapshot(opt, a, b))
    weights[index] = np.full_like(weights[index], np.nan)
    opt.set_weights(weights)
    assert np.isnan(opt.get_weights()[index]).all()


@pytest.mark.parametrize("name", ["learning_rate", "rho", "momentum", "decay"])
def test_float32_hyperparameters_must_fit_float32_also_with_x64(x64, name):
    """TF 2.x Keras holds these four as float32 whatever the variables' dtype: 1e39 would be inf
    even for float64 variables, so the wrapper refuses it with x64 on too (ε, converted to the
    variable's dtype, may exceed float32's range then)."""
    with pytest.raises(ValueError, match=rf"`{name}`.*largest float32|`{name}` must be in"):
        RMSprop(**{name: 1e39})  # rho and momentum are also out of [0, 1]
    opt = RMSprop(epsilon=1e39)
    assert opt.epsilon == 1e39


# learning_rate, rho, momentum, epsilon, centered (Keras' _TEST_PARAM_VALUES)
TEST_PARAM_VALUES = [
    (0.05, 0.9, 0.0, 1e-3, True),
    (0.05, 0.9, 0.0, 1e-3, False),
    (0.1, 0.9, 0.0, 1e-3, True),
    (0.01, 0.9, 0.0, 1e-5, True),
    (0.01, 0.9, 0.9, 1e-5, True),
    (0.01, 0.9, 0.9, 1e-5, False),  # momentum without centering, for completeness
]
DTYPES = [np.float16, np.float32]
TOLERANCE = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-6}  # rtol = atol, as Keras


def assert_close_according_to_type(expected, actual, atol=None):
    actual = np.asarray(actual)
    tol = TOLERANCE[np.dtype(actual.dtype)]
    np.testing.assert_allclose(
        actual.astype(np.float64),
        np.asarray(expected, np.float64),
        rtol=tol,
        atol=tol if atol is None else atol,
    )


# ---- the NumPy reference (float64, Keras 2 semantics) -----------------------------------------


def np_rmsprop(var, g, mg, rms, mom, lr, rho, momentum, epsilon, centered, momentum_slot=None):
    """One dense Keras 2 RMSprop step. Returns (var, mg, rms, mom)."""
    momentum_slot = momentum > 0 if momentum_slot is None else momentum_slot
    rms = rho * rms + (1 - rho) * g * g
    if centered:
        mg = rho * mg + (1 - rho) * g
        denom = rms - mg * mg
    else:
        denom = rms
    if momentum_slot:
        mom = momentum * mom + lr * g / np.sqrt(denom + epsilon)
        var = var - mom
    else:
        var = var - lr * g / (np.sqrt(denom) + epsilon)
    return var, mg, rms, mom


def np_sparse_rmsprop(var, indices, values, mg, rms, mom, lr, rho, momentum, epsilon, centered):
    """One sparse Keras 2 step: duplicates summed; lazy rows with momentum, else every row of
    rms/mg decays while only the named rows of var move."""
    var, mg, rms, mom = (np.array(x, np.float64) for x in (var, mg, rms, mom))
    rows = sorted(set(int(i) for i in indices))
    summed = {r: sum(values[k] for k, i in enumerate(indices) if int(i) == r) for r in rows}
    if momentum <= 0:
        rms = rms * rho
        mg = mg * rho
    for r in rows:
        g = np.asarray(summed[r], np.float64)
        if momentum > 0:
            rms[r] = rho * rms[r] + (1 - rho) * g * g
            mg[r] = rho * mg[r] + (1 - rho) * g
        else:
            rms[r] = rms[r] + (1 - rho) * g * g
            mg[r] = mg[r] + (1 - rho) * g
        denom = rms[r] - mg[r] * mg[r] if centered else rms[r]
        if momentum > 0:
            mom[r] = momentum * mom[r] + lr * g / np.sqrt(denom + epsilon)
            var[r] = var[r] - mom[r]
        else:
            var[r] = var[r] - lr * g / (np.sqrt(denom) + epsilon)
    return var, mg, rms, mom


def _slot_or_none(opt, var, name):
    try:
        return opt.get_slot(var, name)
    except KeyError:
        return None


# ---- rmsprop_test.py --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lr, rho, momentum, epsilon, centered", TEST_PARAM_VALUES)
@pytest.mark.slow
def test_dense(dtype, lr, rho, momentum, epsilon, centered):
    var0 = Variable(np.array([1.0, 2.0], dtype))
    var1 = Variable(np.array([3.0, 4.0], dtype))
    grads0 = np.array([0.1, 0.2], dtype)
    grads1 = np.array([0.01, 0.2], dtype)
    opt = RMSprop(learning_rate=lr, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)
    ref = [
        [np.array([1.0, 2.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
        [np.array([3.0, 4.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
    ]
    for _ in range(3):
        opt.apply_gradients(
            zip([jnp.asarray(grads0), jnp.asarray(grads1)], [var0, var1], strict=True)
        )
        for state, g in zip(ref, (grads0, grads1), strict=True):
            state[:] = np_rmsprop(
                *state[:1], g.astype(np.float64), *state[1:], lr, rho, momentum, epsilon, centered
            )
        for var, (v_np, mg_np, rms_np, mom_np) in zip((var0, var1), ref, strict=True):
            assert (_slot_or_none(opt, var, "mg") is not None) == centered
            assert (_slot_or_none(opt, var, "momentum") is not None) == (momentum > 0)
            assert_close_according_to_type(rms_np, opt.get_slot(var, "rms").value)
            if centered:
                assert_close_according_to_type(mg_np, opt.get_slot(var, "mg").value)
            if momentum > 0:
                assert_close_according_to_type(mom_np, opt.get_slot(var, "momentum").value)
            assert_close_according_to_type(v_np, var.value)


def _decay_case(opt_kwargs, steps=4):
    var0 = Variable(np.array([1.0, 2.0], np.float32))
    var1 = Variable(np.array([3.0, 4.0], np.float32))
    grads0 = np.array([0.1, 0.2])
    grads1 = np.array([0.01, 0.2])
    learning_rate, rho, epsilon, decay = 0.01, 0.9, 1e-7, 0.5
    opt = RMSprop(rho=rho, momentum=0.0, epsilon=epsilon, centered=False, **opt_kwargs)
    ref = [
        [np.array([1.0, 2.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
        [np.array([3.0, 4.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
    ]
    for t in range(steps):
        opt.apply_gradients(zip([grads0, grads1], [var0, var1], strict=True))
        lr = learning_rate / (1 + decay * t)
        for state, g in zip(ref, (grads0, grads1), strict=True):
            state[:] = np_rmsprop(state[0], g, *state[1:], lr, rho, 0.0, epsilon, False)
        for var, (v_np, _, rms_np, _) in zip((var0, var1), ref, strict=True):
            assert_close_according_to_type(rms_np, opt.get_slot(var, "rms").value)
            assert_close_according_to_type(v_np, var.value)
    return opt


def test_dense_with_learning_rate_decay():
    _decay_case(dict(learning_rate=0.01, decay=0.5))


def test_dense_with_learning_rate_inverse_time_decay():
    _decay_case(dict(learning_rate=InverseTimeDecay(0.01, decay_steps=1.0, decay_rate=0.5)))


def test_dense_with_optax_schedule():
    _decay_case(
        dict(learning_rate=lambda count: 0.01 / (1.0 + 0.5 * jnp.asarray(count, jnp.float32)))
    )
    _decay_case(dict(learning_rate=optax.constant_schedule(0.01), decay=0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_sparse_read", [True, False])
@pytest.mark.slow
def test_minimize_sparse_resource_variable(dtype, use_sparse_read):
    for centered, epsilon, expected in ((False, 0.0, [[0.0, 1.0]]), (True, 1.0, [[-111, -138]])):
        var0 = Variable(np.array([[1.0, 2.0]], dtype))
        x = jnp.asarray(np.array([[4.0], [5.0]], dtype))

        def loss(var0=var0, x=x):
            rows = var0.sparse_read([0]) if use_sparse_read else var0.value[jnp.array([0])]
            pred = rows @ x
            return pred * pred

        opt = RMSprop(learning_rate=1.0, rho=0.0, momentum=0.0, epsilon=epsilon, centered=centered)
        opt.minimize(loss, var_list=[var0])
        assert_close_according_to_type(expected, var0.value, atol=0.01)


# tf_keras.optimizers.legacy.RMSprop(learning_rate=1.0, rho=0.0, momentum=0.0, epsilon=epsilon,
# centered=centered).minimize(loss, var_list=[var0]) with TF 2.21 on the case above with complex
# variables (the loss is complex; embedding_lookup and a dense read give the same). epsilon=0
# means 1e-7, which complex128 resolves.
COMPLEX_MINIMIZE_TF = [
    (np.complex64, False, 0.0, [[0.0, 1.0]]),
    (np.complex64, True, 1.0, [[-111.0, -138.0]]),
    (np.complex128, False, 0.0, [[8.9285712157050057e-10, 1.0000000007142855]]),
    (np.complex128, True, 1.0, [[-111.0, -138.0]]),
]


@pytest.mark.parametrize("use_sparse_read", [True, False])
@pytest.mark.parametrize("dtype, centered, epsilon, expected", COMPLEX_MINIMIZE_TF)
@pytest.mark.slow
def test_minimize_sparse_resource_variable_complex(
    x64, dtype, centered, epsilon, expected, use_sparse_read
):
    var0 = Variable(np.array([[1.0, 2.0]], dtype))
    x = jnp.asarray(np.array([[4.0], [5.0]], dtype))

    def loss():
        rows = var0.sparse_read([0]) if use_sparse_read else var0.value
        return (rows @ x) * (rows @ x)

    opt = RMSprop(learning_rate=1.0, rho=0.0, momentum=0.0, epsilon=epsilon, centered=centered)
    opt.minimize(loss, var_list=[var0])
    assert var0.dtype == dtype
    tol = 1e-6 if dtype == np.complex64 else 1e-15
    np.testing.assert_allclose(var0.numpy(), np.asarray(expected, dtype), rtol=tol, atol=tol)


# Complex gradients, where TF's convention shows: var0 = [[1+0.5j, 2-1j]], x = [[4-1j], [5+2j]]
# (pred = rows @ x = 16.5). ``expected`` is TF 2.21's tape.gradient(loss, var0,
# output_gradients=grad_loss), the same for a dense read and for embedding_lookup (IndexedSlices):
# dL/dRe + i·dL/dIm for a real loss, the conjugate of jax.grad's.
COMPLEX_GRAD_X = np.array([[4 - 1j], [5 + 2j]], np.complex64)
COMPLEX_GRADIENT_TF = {
    "complex": (lambda r, x: (r @ x) * (r @ x), None, [[132 + 33j, 165 - 66j]]),
    "complex_grad_loss": (
        lambda r, x: (r @ x) * (r @ x),
        [[0.5 - 2j]],
        [[132 - 247.5j, -49.5 - 363j]],
    ),
    "real": (lambda r, x: abs(r @ x - 1j) ** 2, None, [[134 + 25j, 161 - 76j]]),
}


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("name", sorted(COMPLEX_GRADIENT_TF))
def test_minimize_complex_gradient_follows_tf(name, sparse):
    fn, grad_loss, expected = COMPLEX_GRADIENT_TF[name]
    var, x = Variable(np.array([[1 + 0.5j, 2 - 1j]], np.complex64)), jnp.asarray(COMPLEX_GRAD_X)

    def loss():
        return fn(var.sparse_read([0]) if sparse else var.value, x)

    ((grad, _),) = compute_gradients(loss, [var], grad_loss=grad_loss)
    assert isinstance(grad, IndexedSlices) == sparse
    values = grad.values if sparse else grad
    np.testing.assert_allclose(np.asarray(values), np.asarray(expected), rtol=1e-6)
    # minimize applies that gradient (with jrmsprop's |g|² rms, see README "Complex parameters")
    other = Variable(var.numpy())
    opt, ref = RMSprop(0.1), RMSprop(0.1)
    opt.minimize(loss, [var], grad_loss=grad_loss)
    ref.apply_gradients([(jnp.asarray(np.asarray(expected, np.complex64)), other)])
    np.testing.assert_allclose(var.numpy(), other.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lr, rho, momentum, epsilon, centered", TEST_PARAM_VALUES)
@pytest.mark.slow
def test_sparse(dtype, lr, rho, momentum, epsilon, centered):
    var0 = Variable(np.array([1.0, 2.0], dtype))
    var1 = Variable(np.array([3.0, 4.0], dtype))
    grads0 = IndexedSlices(jnp.asarray(np.array([0.1], dtype)), jnp.array([0]), (2,))
    grads1 = IndexedSlices(jnp.asarray(np.array([0.01], dtype)), jnp.array([1]), (2,))
    opt = RMSprop(learning_rate=lr, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)
    ref = [
        [np.array([1.0, 2.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
        [np.array([3.0, 4.0]), np.zeros(2), np.zeros(2), np.zeros(2)],
    ]
    for _ in range(3):
        opt.apply_gradients(zip([grads0, grads1], [var0, var1], strict=True))
        for state, g in zip(ref, (grads0, grads1), strict=True):
            values = np.asarray(g.values, np.float64)
            v, mg, rms, mom = np_sparse_rmsprop(
                state[0],
                np.asarray(g.indices),
                values,
                *state[1:],
                lr,
                rho,
                momentum,
                epsilon,
                centered,
            )
            state[:] = [v, mg, rms, mom]
        for var, (v_np, mg_np, rms_np, mom_np) in zip((var0, var1), ref, strict=True):
            assert_close_according_to_type(rms_np, opt.get_slot(var, "rms").value)
            if centered:
                assert_close_according_to_type(mg_np, opt.get_slot(var, "mg").value)
            if momentum > 0:
                assert_close_according_to_type(mom_np, opt.get_slot(var, "momentum").value)
            assert_close_according_to_type(v_np, var.value)


def test_sparse_duplicate_indices_and_untouched_rows():
    table = Variable(np.arange(8, dtype=np.float32).reshape(4, 2))
    opt = RMSprop(learning_rate=0.1, rho=0.5, momentum=0.0, epsilon=1e-3)
    ref = [np.arange(8.0).reshape(4, 2), np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2))]
    for indices, values in (
        ([1, 1, 3], [[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]),
        ([0], [[2.0, -1.0]]),
    ):
        g = IndexedSlices(jnp.asarray(values, jnp.float32), jnp.asarray(indices), (4, 2))
        opt.apply_gradients([(g, table)])
        ref = list(
            np_sparse_rmsprop(
                ref[0], indices, np.asarray(values), *ref[1:], 0.1, 0.5, 0.0, 1e-3, False
            )
        )
        assert_close_according_to_type(ref[2], opt.get_slot(table, "rms").value)
        assert_close_according_to_type(ref[0], table.value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_params(dtype):
    var0 = Variable(np.array([1.0, 2.0], dtype))
    var1 = Variable(np.array([3.0, 4.0], dtype))
    grads0 = jnp.asarray(np.array([0.1, 0.1], dtype))
    grads1 = jnp.asarray(np.array([0.01, 0.01], dtype))
    opt = RMSprop(lambda: 2.0, lambda: 0.9, lambda: 0.0, 1.0)
    opt.apply_gradients(zip([grads0, grads1], [var0, var1], strict=True))
    # a callable momentum means a momentum slot: epsilon inside the root
    s0, s1 = 0.1 * 2.0 / math.sqrt(0.001 + 1.0), 0.01 * 2.0 / math.sqrt(0.00001 + 1.0)
    assert_close_according_to_type([1.0 - s0, 2.0 - s0], var0.value)
    assert_close_according_to_type([3.0 - s1, 4.0 - s1], var1.value)
    opt.apply_gradients(zip([grads0, grads1], [var0, var1], strict=True))
    t0 = 0.1 * 2.0 / math.sqrt(0.001 * 0.9 + 0.001 + 1.0)
    t1 = 0.01 * 2.0 / math.sqrt(0.00001 * 0.9 + 1e-5 + 1.0)
    assert_close_according_to_type([1.0 - s0 - t0, 2.0 - s0 - t0], var0.value)
    assert_close_according_to_type([3.0 - s1 - t1, 4.0 - s1 - t1], var1.value)


def test_construct_rmsprop_with_lr():
    with pytest.warns(UserWarning, match="deprecated"):
        opt = RMSprop(lr=1.0)
    with pytest.warns(UserWarning, match="deprecated"):
        opt_2 = RMSprop(learning_rate=0.1, lr=1.0)
    opt_3 = RMSprop(learning_rate=0.1)
    for o in (opt, opt_2, opt_3):
        assert isinstance(o.lr, Variable)
    assert float(opt.lr) == 1.0 and float(opt_2.lr) == 1.0
    np.testing.assert_allclose(float(opt_3.lr), 0.1, rtol=1e-7)


@pytest.mark.parametrize(
    "momentum, centered, count", [(0.0, False, 3), (0.2, False, 5), (0.2, True, 7)]
)
def test_slots_unique(momentum, centered, count):
    v1, v2 = Variable(1.0), Variable(1.0)
    opt = RMSprop(learning_rate=1.0, momentum=momentum, centered=centered)
    opt.minimize(lambda: v1 + v2, var_list=[v1, v2])
    assert len({id(v) for v in opt.variables()}) == count
    assert int(opt.variables()[0]) == int(opt.iterations) == 1


@pytest.mark.parametrize(
    "momentum, centered, count", [(0.0, False, 3), (0.2, False, 5), (0.2, True, 7)]
)
def test_dense_layer_weights_count(momentum, centered, count):
    """get_weights of one Dense layer's kernel + bias: iterations + 1, 2 or 3 slots each."""
    rng = np.random.default_rng(0)
    kernel = Variable(rng.standard_normal((20, 10)).astype(np.float32), name="dense/kernel")
    bias = Variable(np.zeros(10, np.float32), name="dense/bias")
    data = jnp.asarray(np.arange(100, dtype=np.float32).reshape(5, 20))
    labels = jnp.zeros((5, 10))
    opt = RMSprop(momentum=momentum, centered=centered)
    opt.minimize(
        lambda: jnp.mean((data @ kernel.value + bias.value[None, :] - labels) ** 2), [kernel, bias]
    )
    weights = opt.get_weights()
    assert len(weights) == count
    assert [w.shape for w in weights] == [()] + [(20, 10), (10,)] * ((count - 1) // 2)


def test_momentum_proper_value():
    """Keras: "`momentum` must be between [0, 1]. Received: momentum=2.5 ..."; jrmsprop words
    every range error the same way for all its entry points (the core's check)."""
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\], got 2.5"):
        RMSprop(1.0, momentum=2.5, centered=False)


def test_minimize_decreases_all_variables():
    """SlotColocationTest: one step on 5·var0 + 3·var1 with decay, momentum and epsilon 1."""
    var0, var1 = Variable([1.0, 2.0]), Variable([3.0, 4.0])
    opt = RMSprop(learning_rate=1.0, decay=0.9, momentum=0.5, epsilon=1.0)
    opt.minimize(lambda: 5 * var0 + 3 * var1, [var0, var1])
    assert all(v < 0.0 for v in var0.numpy()) and all(v < 2.0 for v in var1.numpy())
    # and exactly: momentum slot -> eps inside: 1·g/sqrt(0.1·g² + 1)
    expected0 = np.array([1.0, 2.0]) - 5 / np.sqrt(0.1 * 25 + 1)
    assert_close_according_to_type(expected0, var0.value)


# ---- optimizer_v2_test.py (adapted to RMSprop) ------------------------------------------------


def test_no_gradients_for_any_variable():
    var = Variable([1.0, 2.0])
    opt = RMSprop(3.0)
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.minimize(lambda: jnp.float32(5.0), var_list=[var])
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.apply_gradients([(None, var)])


def _one_step(grads_after_clip, var_init, lr=1.0):
    out = []
    for g, v in zip(grads_after_clip, var_init, strict=True):
        g = np.asarray(g, np.float64)
        out.append(np_rmsprop(np.asarray(v, np.float64), g, 0, 0, 0, lr, 0.9, 0.0, 1e-7, False)[0])
    return out


def test_grad_clip_value():
    var = Variable([1.0, 2.0])
    opt = RMSprop(learning_rate=1.0, clipvalue=1.0)
    opt.minimize(lambda: 5 * var[0] + 3 * var[1], var_list=[var])  # grads [5, 3] -> [1, 1]
    assert_close_according_to_type(_one_step([[1.0, 1.0]], [[1.0, 2.0]])[0], var.value)


def test_grad_clip_norm():
    var = Variable([1.0])
    opt = RMSprop(learning_rate=1.0, clipnorm=1.0)
    opt.minimize(lambda: 5 * var[0], var_list=[var])  # grad 5 -> 1
    assert_close_according_to_type(_one_step([[1.0]], [[1.0]])[0], var.value)


def test_grad_global_clip_norm():
    v1, v2 = Variable([1.0]), Variable([2.0])
    opt = RMSprop(learning_rate=1.0, global_clipnorm=2.0)
    opt.minimize(lambda: 3 * v1 + 4 * v2, var_list=[v1, v2])  # norm 5 -> scale 0.4
    e1, e2 = _one_step([[1.2], [1.6]], [[1.0], [2.0]])
    assert_close_according_to_type(e1, v1.value)
    assert_close_according_to_type(e2, v2.value)


def test_weights():
    """testWeights: set_weights carries state over; a mismatched list raises."""
    opt1 = RMSprop(learning_rate=1.0, momentum=0.5)
    var1 = Variable([1.0, 2.0])
    opt1.minimize(lambda: 3 * var1, [var1])
    opt2 = RMSprop.from_config(opt1.get_config())
    var2 = Variable([1.0, 2.0])
    opt2.minimize(lambda: 3 * var2, [var2])
    opt2.set_weights(opt1.get_weights())
    var2.assign(var1)
    opt1.minimize(lambda: 3 * var1, [var1])
    opt2.minimize(lambda: 3 * var2, [var2])
    np.testing.assert_array_equal(var1.numpy(), var2.numpy())
    assert int(opt1.iterations) == int(opt2.iterations) == 2

    var3, var4 = Variable([1.0, 2.0, 3.0]), Variable([4.0, 5.0, 6.0])
    opt1.minimize(lambda: 3 * var3 + 5 * var4, [var3, var4])
    with pytest.raises(ValueError, match="but the optimizer was"):
        opt2.set_weights(opt1.get_weights())
    var5, var6 = Variable([1.0, 2.0, 3.0]), Variable([4.0, 5.0, 6.0])
    opt2.minimize(lambda: 3 * var5 + 5 * var6, [var5, var6])
    opt2.set_weights(opt1.get_weights())
    var5.assign(var3)
    var6.assign(var4)
    opt1.minimize(lambda: 3 * var3 + 5 * var4, [var3, var4])
    opt2.minimize(lambda: 3 * var5 + 5 * var6, [var5, var6])
    np.testing.assert_array_equal(var3.numpy(), var5.numpy())
    np.testing.assert_array_equal(var4.numpy(), var6.numpy())


def test_getting_and_setting_hyperparameters():
    opt = RMSprop(learning_rate=1.0)
    var = Variable([1.0, 2.0])
    opt.minimize(lambda: 3 * var, [var])
    assert float(opt.lr) == 1.0
    opt.lr = 3.0
    assert float(opt.learning_rate) == 3.0
    before = var.numpy()
    opt.minimize(lambda: 3 * var, [var])
    # rms = 0.9·0.9 + 0.1·9 ... step with lr 3 (eps outside the root)
    rms = 0.9 * (0.1 * 9.0) + 0.1 * 9.0
    assert_close_according_to_type(before - 3.0 * 3.0 / (np.sqrt(rms) + 1e-7), var.value)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_epsilon_zero_set_after_construction(momentum):
    """Keras maps ``epsilon=0`` to 1e-7 in the constructor only: ``opt.epsilon = 0`` later makes
    the next steps divide by ``sqrt(v)`` (plus 0), so a zero gradient gives NaN."""
    opt = RMSprop(learning_rate=0.1, momentum=momentum, epsilon=0)
    assert opt.epsilon == 1e-7
    init, g = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1e-3, 0.0])
    var = Variable(init.astype(np.float32))
    expected, mg, rms, mom = init, np.zeros(3), np.zeros(3), np.zeros(3)
    for epsilon in (1e-7, 0.0, 0.0):
        opt.epsilon = epsilon
        opt.apply_gradients([(jnp.asarray(g, jnp.float32), var)])
        with np.errstate(invalid="ignore"):  # 0/0 where the gradient is 0
            expected, mg, rms, mom = np_rmsprop(
                expected, g, mg, rms, mom, 0.1, 0.9, momentum, epsilon, centered=False
            )
    assert np.isnan(var.numpy()[2]) and np.isnan(expected[2])
    assert_close_according_to_type(expected[:2], var.numpy()[:2])
    assert opt.get_config()["epsilon"] == 0


def test_callable_var_list():
    opt = RMSprop(learning_rate=1.0)
    holder = []

    def loss():
        if not holder:
            holder.append(Variable([1.0, 2.0]))
        return 3 * holder[0]

    opt.minimize(loss, lambda: holder)
    assert_close_according_to_type(_one_step([[3.0, 3.0]], [[1.0, 2.0]])[0], holder[0].value)


def test_config_round_trip_with_schedule():
    opt = RMSprop(
        learning_rate=InverseTimeDecay(0.01, 1.0, 0.5),
        rho=0.8,
        momentum=0.1,
        epsilon=1e-5,
        centered=True,
        clipvalue=0.5,
    )
    config = opt.get_config()
    restored = RMSprop.from_config(config, custom_objects={"InverseTimeDecay": InverseTimeDecay})
    assert restored.get_config() == config
    assert set(config) == {
        "name",
        "clipvalue",
        "learning_rate",
        "decay",
        "rho",
        "momentum",
        "epsilon",
        "centered",
    }


# ---- live comparisons with tf_keras -----------------------------------------------------------


@pytest.fixture(scope="module")
def tf_modules():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = pytest.importorskip("tensorflow")
        tf_keras = pytest.importorskip("tf_keras")
    return tf, tf_keras


LIVE_CONFIGS = {
    "dense": dict(learning_rate=0.01),
    "momentum": dict(learning_rate=0.01, momentum=0.9),
    "centered": dict(learning_rate=0.01, centered=True),
    "momentum_centered": dict(learning_rate=0.01, momentum=0.5, centered=True, rho=0.8),
    "decay": dict(learning_rate=0.05, decay=0.1, epsilon=1e-4),
    "clipvalue": dict(learning_rate=0.01, clipvalue=0.5),
    "clipnorm": dict(learning_rate=0.01, clipnorm=1.0, momentum=0.3),
    "global_clipnorm": dict(learning_rate=0.01, global_clipnorm=1.5),
    "clip_both": dict(learning_rate=0.01, clipvalue=0.6, clipnorm=1.0, centered=True),
}


def _live_inputs(seed, steps, sparse):
    rng = np.random.default_rng(seed)
    init = [
        rng.standard_normal((6, 3)).astype(np.float32),
        rng.standard_normal(5).astype(np.float32),
    ]
    grads = []
    for _ in range(steps):
        g0 = rng.standard_normal((6, 3)).astype(np.float32) * 2
        if sparse:
            idx = rng.integers(0, 6, size=4).astype(np.int32)
            g0 = (rng.standard_normal((4, 3)).astype(np.float32) * 2, idx)
        grads.append((g0, rng.standard_normal(5).astype(np.float32)))
    return init, grads


def _run_tf(tf, tf_keras, config, init, grads, sparse):
    opt = tf_keras.optimizers.legacy.RMSprop(**config)
    variables = [tf.Variable(x) for x in init]
    trajectory = []
    for g0, g1 in grads:
        if sparse:
            g0 = tf.IndexedSlices(tf.constant(g0[0]), tf.constant(g0[1]), tf.constant([6, 3]))
        opt.apply_gradients(zip([g0, tf.constant(g1)], variables, strict=True))
        trajectory.append([v.numpy() for v in variables])
    return opt, variables, trajectory


def _run_jrmsprop(config, init, grads, sparse, opt=None, variables=None):
    opt = opt or RMSprop(**config)
    variables = variables or [Variable(x) for x in init]
    trajectory = []
    for g0, g1 in grads:
        if sparse:
            g0 = IndexedSlices(jnp.asarray(g0[0]), jnp.asarray(g0[1]), (6, 3))
        opt.apply_gradients(zip([g0, g1], variables, strict=True))
        trajectory.append([v.numpy() for v in variables])
    return opt, variables, trajectory


# Configurations whose float32 trajectories equal TF's bit for bit (elementwise arithmetic only).
# Norm clipping sums with XLA's order (TF: Eigen's), and the sparse momentum path differs from
# TF's sparse kernel by an ulp or two: those are compared with a tolerance.
BIT_EXACT = {
    (name, False)
    for name in ("dense", "momentum", "centered", "momentum_centered", "decay", "clipvalue")
} | {(name, True) for name in ("dense", "centered", "decay", "clipvalue")}


def _assert_same_config(ours, theirs):
    """The same keys in the same order; floats within float32 rounding, the rest equal."""
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if isinstance(value, (float, np.floating)):
            assert ours[key] == pytest.approx(float(value), rel=1e-7), key
        else:
            assert ours[key] == value, key


def _assert_trajectories(ours, theirs, rtol, exact=False):
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for x, y in zip(a, b, strict=True):
            if exact:
                np.testing.assert_array_equal(x, y, err_msg=f"step {step}")
            else:
                np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, err_msg=f"step {step}")


@pytest.mark.frameworks
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("name", sorted(LIVE_CONFIGS))
def test_live_trajectory_matches_tf_keras(tf_modules, name, sparse):
    tf, tf_keras = tf_modules
    config = LIVE_CONFIGS[name]
    init, grads = _live_inputs(7, 8, sparse)
    tf_opt, _, theirs = _run_tf(tf, tf_keras, config, init, grads, sparse)
    opt, _, ours = _run_jrmsprop(config, init, grads, sparse)
    _assert_trajectories(ours, theirs, rtol=2e-6, exact=(name, sparse) in BIT_EXACT)
    ours_w, theirs_w = opt.get_weights(), tf_opt.get_weights()
    assert len(ours_w) == len(theirs_w)
    assert int(ours_w[0]) == int(theirs_w[0])
    for x, y in zip(ours_w[1:], theirs_w[1:], strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-6, atol=2e-6)
    _assert_same_config(opt.get_config(), tf_opt.get_config())


@pytest.mark.frameworks
@pytest.mark.parametrize("name", ["dense", "momentum_centered", "clipnorm"])
def test_live_set_weights_from_tf_then_continue(tf_modules, name):
    tf, tf_keras = tf_modules
    config = LIVE_CONFIGS[name]
    init, grads = _live_inputs(11, 10, sparse=False)
    tf_opt, tf_vars, theirs = _run_tf(tf, tf_keras, config, init, grads, sparse=False)
    # Load TF's state after 5 steps, then continue in jrmsprop with the remaining gradients.
    tf_opt5, tf_vars5, _ = _run_tf(tf, tf_keras, config, init, grads[:5], sparse=False)
    variables = [Variable(v.numpy()) for v in tf_vars5]
    opt = RMSprop(**config)
    opt.build(variables)
    opt.set_weights(tf_opt5.get_weights())
    assert int(opt.iterations) == 5
    _, _, ours = _run_jrmsprop(config, init, grads[5:], sparse=False, opt=opt, variables=variables)
    _assert_trajectories(ours, theirs[5:], rtol=2e-6, exact=(name, False) in BIT_EXACT)


@pytest.mark.frameworks
def test_live_schedule_and_config_from_tf(tf_modules):
    tf, tf_keras = tf_modules
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
    config = dict(learning_rate=schedule, momentum=0.2)
    init, grads = _live_inputs(3, 6, sparse=False)
    tf_opt, _, theirs = _run_tf(tf, tf_keras, config, init, grads, sparse=False)
    _, _, ours = _run_jrmsprop(config, init, grads, sparse=False)
    _assert_trajectories(ours, theirs, rtol=2e-6)
    # a TF config (schedule dict with module/class_name) loads through from_config
    restored = RMSprop.from_config(tf_opt.get_config())
    value = restored._current("learning_rate", jnp.int32(4))
    np.testing.assert_allclose(np.asarray(value), 0.05 * 0.5 ** (4 / 3), rtol=1e-6)


@pytest.mark.frameworks
def test_live_minimize_embedding_lookup(tf_modules):
    tf, tf_keras = tf_modules
    table0 = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    ids = np.array([0, 4, 4], np.int32)
    tf_table = tf.Variable(table0)
    tf_opt = tf_keras.optimizers.legacy.RMSprop(0.1, momentum=0.5)
    table = Variable(table0)
    opt = RMSprop(0.1, momentum=0.5)
    for _ in range(3):
        tf_opt.minimize(
            lambda: tf.reduce_sum(tf.nn.embedding_lookup(tf_table, ids) ** 2), [tf_table]
        )
        opt.minimize(lambda: jnp.sum(table.sparse_read(ids) ** 2), [table])
    np.testing.assert_allclose(table.numpy(), tf_table.numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(table.numpy()[[1, 2, 3, 5]], table0[[1, 2, 3, 5]])


@pytest.mark.frameworks
@pytest.mark.parametrize("name", ["dense", "momentum_centered", "decay", "clipvalue"])
def test_live_float64_trajectory(tf_modules, x64, name):
    """float64 variables: Keras' float32 hyperparameters (and decay), Python-precision epsilon."""
    tf, tf_keras = tf_modules
    config = LIVE_CONFIGS[name]
    init, grads = _live_inputs(5, 6, sparse=False)
    init = [x.astype(np.float64) for x in init]
    grads = [tuple(g.astype(np.float64) for g in pair) for pair in grads]
    _, _, theirs = _run_tf(tf, tf_keras, config, init, grads, sparse=False)
    _, variables, ours = _run_jrmsprop(config, init, grads, sparse=False)
    assert variables[0].dtype == np.float64
    _assert_trajectories(ours, theirs, rtol=1e-14, exact=True)


def _live_steps(tf, tf_keras, config, steps=4, grad=(0.3, -0.1, 0.2, 0.004), before=None):
    """``steps`` steps of tf_keras's and jrmsprop's RMSprop on the same vector; ``before(opt,
    step)`` runs on both before each step. Returns (tf_opt, tf_var, opt, var)."""
    init = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
    tf_opt, tf_var = tf_keras.optimizers.legacy.RMSprop(**config()), tf.Variable(init)
    opt, var = RMSprop(**config()), Variable(init)
    for step in range(steps):
        if before is not None:
            before(tf_opt, step)
            before(opt, step)
        tf_opt.apply_gradients([(tf.constant(grad, tf.float32), tf_var)])
        opt.apply_gradients([(jnp.asarray(grad, jnp.float32), var)])
    return tf_opt, tf_var, opt, var


@pytest.mark.frameworks
@pytest.mark.parametrize(
    "config",
    [
        lambda: dict(learning_rate=lambda v=0.05: v),
        lambda: dict(
            learning_rate=__import__("functools").partial(lambda b, factor=1.0: b * factor, 0.05)
        ),
        lambda: dict(learning_rate=0.05, rho=lambda r=0.8: r, momentum=lambda m=0.0: m),
    ],
    ids=["lambda-default", "partial-default", "rho-momentum-default"],
)
def test_live_callables_with_default_arguments(tf_modules, config):
    """tf_keras calls a callable hyperparameter with no arguments, defaulted parameters or not."""
    tf, tf_keras = tf_modules
    tf_opt, tf_var, opt, var = _live_steps(tf, tf_keras, config)
    np.testing.assert_array_equal(var.numpy(), tf_var.numpy())
    assert [w.name for w in opt.weights] == [w.name.split(":")[0] for w in tf_opt.weights]
    _assert_same_config(opt.get_config(), tf_opt.get_config())


@pytest.mark.frameworks
@pytest.mark.parametrize("initial", [0.0, 0.1])
def test_live_decay_set_after_construction(tf_modules, initial):
    """tf_keras trains with, and reports, the constructor's decay (``_initial_decay``);
    ``opt.decay = x`` and ``opt.decay.assign(x)`` only change the hyper Variable."""
    tf, tf_keras = tf_modules

    def before(opt, step):
        if step == 1:
            opt.decay = 0.5
        if step == 2:
            opt.decay.assign(0.25)

    tf_opt, tf_var, opt, var = _live_steps(
        tf, tf_keras, lambda: dict(learning_rate=0.1, decay=initial), before=before
    )
    np.testing.assert_array_equal(var.numpy(), tf_var.numpy())
    assert float(opt.decay) == float(tf_opt.decay.numpy()) == 0.25
    assert opt.get_config()["decay"] == tf_opt.get_config()["decay"] == initial


@pytest.mark.frameworks
@pytest.mark.parametrize("value", [0.0, 0.5])
@pytest.mark.parametrize("kind", ["tf.Variable", "jrmsprop.Variable"])
def test_live_variable_momentum_slot(tf_modules, value, kind):
    """A ``tf.Variable`` momentum is not a ``tf.Tensor``: tf_keras makes a momentum slot only when
    its value is > 0. A jrmsprop.Variable follows the same rule."""
    tf, tf_keras = tf_modules
    init = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
    grad = (0.3, -0.1, 0.2, 0.004)
    tf_opt = tf_keras.optimizers.legacy.RMSprop(0.1, momentum=tf.Variable(value))
    momentum = tf.Variable(value) if kind == "tf.Variable" else Variable(value)
    opt = RMSprop(0.1, momentum=momentum)
    tf_var, var = tf.Variable(init), Variable(init)
    for _ in range(3):
        tf_opt.apply_gradients([(tf.constant(grad, tf.float32), tf_var)])
        opt.apply_gradients([(jnp.asarray(grad, jnp.float32), var)])
    np.testing.assert_array_equal(var.numpy(), tf_var.numpy())
    assert [w.name for w in opt.weights] == [w.name.split(":")[0] for w in tf_opt.weights]
    assert ("momentum" in opt.get_slot_names()) == (value > 0)
    opt.set_weights(tf_opt.get_weights())


@pytest.mark.frameworks
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_live_epsilon_zero_set_after_construction(tf_modules, momentum):
    """tf_keras maps ``epsilon=0`` to 1e-7 in the constructor only (``epsilon or
    backend.epsilon()``); ``opt.epsilon = 0`` later is used as 0: a zero gradient then gives NaN
    (0/0) and a tiny one infinity, in both. ``get_config`` reports the 0."""
    tf, tf_keras = tf_modules

    def before(opt, step):
        if step == 1:
            opt.epsilon = 0

    tf_opt, tf_var, opt, var = _live_steps(
        tf,
        tf_keras,
        lambda: dict(learning_rate=0.1, momentum=momentum, epsilon=0),
        grad=(0.3, -0.1, 0.0, 1e-20),
        before=before,
    )
    np.testing.assert_array_equal(var.numpy(), tf_var.numpy())
    # g = 0: 0/0; g = 1e-20: its square underflows, so lr·g/0 = inf (in both)
    assert np.isnan(var.numpy()[2]) and np.isinf(var.numpy()[3])
    assert np.isfinite(var.numpy()[:2]).all()
    assert opt.get_config()["epsilon"] == tf_opt.get_config()["epsilon"] == 0


@pytest.mark.frameworks
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("name", sorted(COMPLEX_GRADIENT_TF))
def test_live_complex_gradient(tf_modules, name, sparse):
    """TF's tape.gradient of ``COMPLEX_GRADIENT_TF``'s losses: its literals, and jrmsprop's."""
    tf, _ = tf_modules
    fn, grad_loss, expected = COMPLEX_GRADIENT_TF[name]
    init = np.array([[1 + 0.5j, 2 - 1j]], np.complex64)
    tf_var, var = tf.Variable(init), Variable(init)
    with tf.GradientTape() as tape:
        out = fn(tf.nn.embedding_lookup(tf_var, [0]) if sparse else tf_var, COMPLEX_GRAD_X)
    ct = None if grad_loss is None else tf.constant(grad_loss, tf.complex64)
    theirs = tape.gradient(out, tf_var, output_gradients=ct)
    ((ours, _),) = compute_gradients(
        lambda: fn(var.sparse_read([0]) if sparse else var.value, jnp.asarray(COMPLEX_GRAD_X)),
        [var],
        grad_loss=grad_loss,
    )
    if sparse:
        np.testing.assert_array_equal(np.asarray(ours.indices), theirs.indices.numpy())
        ours, theirs = ours.values, theirs.values
    np.testing.assert_allclose(theirs.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-6)


@pytest.mark.frameworks
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype, centered, epsilon, expected", COMPLEX_MINIMIZE_TF)
def test_live_minimize_sparse_resource_variable_complex(
    tf_modules, x64, dtype, centered, epsilon, expected, sparse
):
    """tf_keras's ``testMinimizeSparseResourceVariable`` with complex variables, in both."""
    tf, tf_keras = tf_modules
    config = dict(learning_rate=1.0, rho=0.0, momentum=0.0, epsilon=epsilon, centered=centered)
    init, x0 = np.array([[1.0, 2.0]], dtype), np.array([[4.0], [5.0]], dtype)
    tf_var, var, x = tf.Variable(init), Variable(init), jnp.asarray(x0)

    def tf_loss():
        rows = tf.nn.embedding_lookup([tf_var], [0]) if sparse else tf_var
        return tf.matmul(rows, x0) * tf.matmul(rows, x0)

    tf_keras.optimizers.legacy.RMSprop(**config).minimize(tf_loss, var_list=[tf_var])
    RMSprop(**config).minimize(
        lambda: ((var.sparse_read([0]) if sparse else var.value) @ x) ** 2, var_list=[var]
    )
    np.testing.assert_array_equal(tf_var.numpy(), np.asarray(expected, dtype))
    tol = 1e-6 if dtype == np.complex64 else 1e-15
    np.testing.assert_allclose(var.numpy(), tf_var.numpy(), rtol=tol, atol=tol)
