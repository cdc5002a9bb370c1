"""The stateful Keras-style wrapper: ``jrmsprop.Variable`` and ``jrmsprop.RMSprop``.

The wrapper owns no numerics, so most tests compare it with the functional core bit for bit;
the Keras behaviours (slots, weights, config, clipping, warnings) are checked against NumPy and
against the TF 2.x Keras rules. Live comparisons with tf_keras are in ``test_keras_cases.py``.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrmsprop._src import clipping
from jrmsprop._src import optimizer as optimizer_lib
from jrmsprop._src.variable import compute_gradients
from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.sparse import IndexedSlices, apply_updates
from jrmsprop._src.transform import RMSpropState, rmsprop
from jrmsprop._src.variable import Variable, distinct_donations
from tests.numpy_reference import Reference

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


# ---- Variable ---------------------------------------------------------------------------------


class TestVariable:
    def test_dtypes_follow_tf(self):
        assert Variable(1.0).dtype == np.float32
        assert Variable(1).dtype == np.int32
        assert Variable([1.0, 2.0]).dtype == np.float32
        assert Variable(np.zeros(2, np.float16)).dtype == np.float16
        assert Variable(1, dtype=jnp.bfloat16).dtype == jnp.bfloat16
        assert Variable(lambda: np.ones(3)).shape == (3,)

    def test_properties_and_conversions(self):
        v = Variable([[1.0, 2.0], [3.0, 4.0]], name="w", trainable=False)
        assert (v.name, v.shape, v.ndim, v.size, v.trainable) == ("w", (2, 2), 2, 4, False)
        assert len(v) == 2
        np.testing.assert_array_equal(np.asarray(v), [[1, 2], [3, 4]])
        np.testing.assert_array_equal(jnp.asarray(v), [[1, 2], [3, 4]])
        np.testing.assert_array_equal(v.numpy(), [[1, 2], [3, 4]])
        assert "jrmsprop.Variable 'w'" in repr(v)
        assert float(Variable(2.5)) == 2.5 and int(Variable(3)) == 3

    def test_arithmetic(self):
        v = Variable([1.0, 2.0])
        w = Variable([3.0, 5.0])
        np.testing.assert_array_equal(v + w, [4, 7])
        np.testing.assert_array_equal(2.0 * v, [2, 4])
        np.testing.assert_array_equal(1.0 - v, [0, -1])
        np.testing.assert_array_equal(v / 2.0, [0.5, 1])
        np.testing.assert_array_equal(v**2, [1, 4])
        np.testing.assert_array_equal(-v, [-1, -2])
        np.testing.assert_array_equal(v < 1.5, [True, False])
        assert float(v @ w) == 13.0
        np.testing.assert_array_equal(v[1], 2.0)
        # == is identity, so Variables are usable as dict keys
        assert v == v and v != Variable([1.0, 2.0]) and len({v: 1, w: 2}) == 2

    def test_assign(self):
        v = Variable([1.0, 2.0])
        assert v.assign([5.0, 6.0]) is v
        v.assign_add(np.array([1.0, 1.0]))
        v.assign_sub(jnp.array([0.5, 0.5]))
        np.testing.assert_array_equal(v.numpy(), [5.5, 6.5])
        assert v.dtype == np.float32
        with pytest.raises(ValueError, match="shape"):
            v.assign([1.0, 2.0, 3.0])
        with pytest.raises(TypeError, match="dtype"):
            v.assign(np.array([1 + 1j, 2j]))
        i = Variable(0)
        i.assign(np.int64(7))
        assert int(i) == 7 and i.dtype == np.int32
        with pytest.raises(TypeError):
            i.assign(1.5)

    def test_initial_value_and_assigned_values_are_copied(self):
        x = jnp.ones(3)
        v = Variable(x)
        y = jnp.full(3, 2.0)
        w = Variable(jnp.zeros(3))
        w.assign(y)
        opt = RMSprop(0.1)
        opt.apply_gradients([(jnp.ones(3), v), (jnp.ones(3), w)])
        assert not x.is_deleted() and not y.is_deleted()
        np.testing.assert_array_equal(x, 1.0)

    def test_invalid_enum(self):
        with pytest.raises(ValueError, match="synchronization"):
            Variable(1.0, synchronization="sometimes")


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


def test_distinct_donations_copies_repeated_buffers():
    a, b = jnp.ones(2), jnp.zeros(2)
    groups, others = distinct_donations([[a, b], None, [a]], ({"g": b, "k": 1},))
    assert groups[0][0] is a and groups[0][1] is b and groups[1] is None
    assert groups[2][0] is not a and others[0]["g"] is not b and others[0]["k"] == 1
    np.testing.assert_array_equal(groups[2][0], a)
    np.testing.assert_array_equal(others[0]["g"], b)
    groups, others = distinct_donations([[a], [b]], (jnp.ones(2),))
    assert groups[0][0] is a and groups[1][0] is b  # nothing repeated: no copies


# ---- None gradients, validation ---------------------------------------------------------------


def test_none_gradient_warns_and_is_skipped():
    v, w = Variable([1.0]), Variable([2.0], name="frozen")
    opt = RMSprop(0.1)
    with pytest.warns(UserWarning, match="frozen"):
        opt.apply_gradients([(jnp.ones(1), v), (None, w)])
    assert float(w[0]) == 2.0 and float(v[0]) != 1.0
    assert len(opt.weights) == 2  # iterations + rms(v): no slot for w


def test_all_none_gradients_raise():
    v = Variable([1.0], name="a")
    opt = RMSprop(0.1)
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.apply_gradients([(None, v)])


def test_bad_inputs():
    v = Variable([1.0, 2.0])
    opt = RMSprop(0.1)
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([(jnp.ones(3), v)])
    with pytest.raises(TypeError, match="jrmsprop.Variable"):
        opt.apply_gradients([(jnp.ones(2), jnp.ones(2))])
    w = Variable([3.0, 4.0], name="w")
    with pytest.raises(ValueError, match=r"variable 'w' appears more than once .* TF 2\.x Keras"):
        opt.apply_gradients([(jnp.ones(2), v), (jnp.ones(2), w), (jnp.ones(2), w)])
    with pytest.raises(TypeError, match="floating"):
        opt.apply_gradients([(jnp.ones(2), Variable([1, 2]))])
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_constructor_validation():
    with pytest.raises(TypeError, match="Unexpected keyword argument passed to optimizer: foo"):
        RMSprop(foo=1)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\]"):
        RMSprop(momentum=2.5)
    with pytest.raises(ValueError, match="`clipnorm` must be finite and >= 0"):
        RMSprop(clipnorm=-1.0)
    with pytest.raises(ValueError, match="Cannot accept both `clipnorm` and `global_clipnorm`"):
        RMSprop(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.warns(UserWarning, match="`lr` argument is deprecated"):
        opt = RMSprop(learning_rate=0.1, lr=1.0)
    assert float(opt.lr) == 1.0


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


def _trained(momentum=0.9, centered=True, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    variables = [Variable(x) for x in _grads(rng)]
    opt = RMSprop(0.01, momentum=momentum, centered=centered)
    for _ in range(steps):
        opt.apply_gradients(zip(_grads(rng), variables, strict=True))
    return opt, variables


def test_get_set_weights_round_trip():
    opt, variables = _trained()
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
    opt, _ = _trained()
    weights = opt.get_weights()
    weights[0] = np.int64(weights[0])  # TF's iterations are int64
    weights[1:] = [w.astype(np.float64) for w in weights[1:]]  # values are cast
    opt.set_weights(weights)
    assert int(opt.iterations) == 3
    opt.set_weights(weights[1:])  # Keras' RMSprop: no iterations -> reset to 0
    assert int(opt.iterations) == 0


@pytest.mark.parametrize(
    "corrupt, error",
    [
        (lambda w: w[:-2], ValueError),
        (lambda w: w + [np.zeros(1)], ValueError),
        (lambda w: w[:3] + [np.zeros((9, 9), np.float32)] + w[4:], ValueError),
        (lambda w: w[:3] + [w[3].astype(np.complex64)] + w[4:], TypeError),
        (lambda w: w[:3] + [np.array(["x"] * w[3].size).reshape(w[3].shape)] + w[4:], TypeError),
        (lambda w: [np.float32(3.5)] + w[1:], TypeError),
        (lambda w: [np.int64(-1)] + w[1:], ValueError),
        (lambda w: [np.int64(2**40)] + w[1:], ValueError),
    ],
)
def test_set_weights_rejects_bad_input_and_changes_nothing(corrupt, error):
    opt, _ = _trained()
    before = opt.get_weights()
    bad = corrupt([np.ones_like(w) for w in before])
    with pytest.raises(error):
        opt.set_weights(bad)
    assert _equal_trees(opt.get_weights(), before)


def test_set_weights_before_build_is_an_error():
    with pytest.raises(ValueError, match="but the optimizer was expecting 0 weights"):
        RMSprop().set_weights([np.array(1), np.zeros(3)])


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


def _np_clip_by_norm(g, c):
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * c / max(norm, c)


def test_clipping_transforms_against_numpy():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4)).astype(np.float32) * 3
    b = rng.standard_normal(5).astype(np.float32)
    tree = {"a": jnp.asarray(a), "b": jnp.asarray(b), "none": None}
    out, _ = clipping.keras_clipping(clipvalue=1.0).update(tree, optax.EmptyState())
    np.testing.assert_array_equal(out["a"], np.clip(a, -1, 1))
    assert out["none"] is None
    out, _ = clipping.keras_clipping(clipnorm=1.5).update(tree, optax.EmptyState())
    np.testing.assert_allclose(out["a"], _np_clip_by_norm(a, 1.5), rtol=1e-6)
    np.testing.assert_allclose(out["b"], _np_clip_by_norm(b, 1.5), rtol=1e-6)
    small, _ = clipping.keras_clipping(clipnorm=100.0).update(tree, optax.EmptyState())
    np.testing.assert_allclose(small["a"], a, rtol=1e-6)
    zero, _ = clipping.keras_clipping(clipnorm=1.0).update({"z": jnp.zeros(3)}, optax.EmptyState())
    np.testing.assert_array_equal(zero["z"], 0.0)
    out, _ = clipping.keras_clipping(global_clipnorm=2.0).update(tree, optax.EmptyState())
    total = np.sqrt(np.sum(a.astype(np.float64) ** 2) + np.sum(b.astype(np.float64) ** 2))
    np.testing.assert_allclose(out["a"], a * 2.0 / total, rtol=1e-6)
    np.testing.assert_allclose(out["b"], b * 2.0 / total, rtol=1e-6)
    nan, _ = clipping.keras_clipping(global_clipnorm=2.0).update([jnp.array([np.inf, 1.0])], None)
    assert np.isnan(np.asarray(nan[0])).all()  # TF: a non-finite norm gives NaN


def test_clipping_indexed_slices_uses_values_as_given():
    values = np.array([[3.0, 4.0], [1.0, 1.0]], np.float32)
    g = IndexedSlices(jnp.asarray(values), jnp.array([2, 2]), (3, 2))
    (out,), _ = clipping.keras_clipping(clipnorm=1.0).update((g,), None)
    assert isinstance(out, IndexedSlices) and out.dense_shape == (3, 2)
    np.testing.assert_allclose(out.values, values / np.sqrt(27.0), rtol=1e-6)
    np.testing.assert_array_equal(out.indices, [2, 2])
    (out,), _ = clipping.keras_clipping(clipvalue=2.0).update((g,), None)
    np.testing.assert_array_equal(out.values, np.clip(values, -2, 2))
    (out, d), _ = clipping.keras_clipping(global_clipnorm=1.0).update((g, jnp.array([0.0, 0.0])), None)
    np.testing.assert_allclose(out.values, values / np.sqrt(27.0), rtol=1e-6)


def test_keras_clipping_order_and_errors():
    g = np.array([10.0, -1.0, 0.5], np.float32)
    tx = clipping.keras_clipping(clipvalue=1.0, clipnorm=1.0)
    (out,), _ = tx.update((jnp.asarray(g),), tx.init(None))
    np.testing.assert_allclose(out, _np_clip_by_norm(np.clip(g, -1, 1), 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="Cannot accept both"):
        clipping.keras_clipping(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        clipping.keras_clipping(clipvalue=-1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(clipvalue=0.05),
        dict(clipnorm=0.1),
        dict(global_clipnorm=0.2),
        dict(clipvalue=0.05, clipnorm=0.07),
    ],
)
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
    opt, variables = _trained(momentum=0.5, centered=True)
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
