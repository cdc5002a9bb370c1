"""``jrmsprop.Variable`` and the conversion of the wrapper's step inputs.

TF's dtype rules, conversions, arithmetic and assignment; values a dtype cannot represent are
refused (as by ``tf.Variable``) and leave the variable unchanged; repeated donated buffers are
copied before the step.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.variable import Variable, distinct_donations

NAN, INF = float("nan"), float("inf")


# ---- Variable ---------------------------------------------------------------------------------


def test_dtypes_follow_tf():
    assert Variable(1.0).dtype == np.float32
    assert Variable(1).dtype == np.int32
    assert Variable([1.0, 2.0]).dtype == np.float32
    assert Variable(np.zeros(2, np.float16)).dtype == np.float16
    assert Variable(1, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    assert Variable(lambda: np.ones(3)).shape == (3,)


def test_properties_and_conversions():
    v = Variable([[1.0, 2.0], [3.0, 4.0]], name="w", trainable=False)
    assert (v.name, v.shape, v.ndim, v.size, v.trainable) == ("w", (2, 2), 2, 4, False)
    assert len(v) == 2
    np.testing.assert_array_equal(np.asarray(v), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(jnp.asarray(v), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(v.numpy(), [[1, 2], [3, 4]])
    assert "jrmsprop.Variable 'w'" in repr(v)
    assert float(Variable(2.5)) == 2.5 and int(Variable(3)) == 3


def test_arithmetic():
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


def test_assign():
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


def test_initial_value_and_assigned_values_are_copied():
    x = jnp.ones(3)
    v = Variable(x)
    y = jnp.full(3, 2.0)
    w = Variable(jnp.zeros(3))
    w.assign(y)
    opt = RMSprop(0.1)
    opt.apply_gradients([(jnp.ones(3), v), (jnp.ones(3), w)])
    assert not x.is_deleted() and not y.is_deleted()
    np.testing.assert_array_equal(x, 1.0)


def test_distinct_donations_copies_repeated_buffers():
    a, b = jnp.ones(2), jnp.zeros(2)
    groups, others = distinct_donations([[a, b], None, [a]], ({"g": b, "k": 1},))
    assert groups[0][0] is a and groups[0][1] is b and groups[1] is None
    assert groups[2][0] is not a and others[0]["g"] is not b and others[0]["k"] == 1
    np.testing.assert_array_equal(groups[2][0], a)
    np.testing.assert_array_equal(others[0]["g"], b)
    groups, others = distinct_donations([[a], [b]], (jnp.ones(2),))
    assert groups[0][0] is a and groups[1][0] is b  # nothing repeated: no copies


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(initial_value=None), TypeError, "`initial_value`"),
        (dict(initial_value="abc"), TypeError, "`initial_value`"),
        (dict(initial_value=[[1.0], [2.0, 3.0]]), TypeError, "`initial_value`"),
        (dict(initial_value=1.0, dtype="floaty"), TypeError, "`dtype`"),
        (dict(initial_value=1.0, trainable="no"), TypeError, "`trainable`"),
        (dict(initial_value=1.0, trainable=1), TypeError, "`trainable`"),
        (dict(initial_value=1.0, name=3), TypeError, "`name`"),
        (dict(initial_value=1.0, aggregation="max"), ValueError, "`aggregation`"),
        (dict(initial_value=1.0, synchronization="sometimes"), ValueError, "`synchronization`"),
    ],
)
def test_variable_constructor_refuses(kwargs, error, words):
    with pytest.raises(error, match=words):
        Variable(**kwargs)


def test_variable_trainable_none_follows_tf():
    """TF: ``trainable=None`` is True, except for a variable synchronised on read."""
    assert Variable(1.0, trainable=None).trainable is True
    assert Variable(1.0, trainable=None, synchronization="on_read").trainable is False
    # The default is None, as tf.Variable's: a variable synchronised on read is not trainable
    # unless asked, and tf.Variable accepts asking (only add_weight refuses it).
    assert Variable(1.0).trainable is True
    assert Variable(1.0, synchronization="on_read").trainable is False
    assert Variable(1.0, trainable=True, synchronization="on_read").trainable is True
    assert Variable(1.0, trainable=np.bool_(False)).trainable is False


# ---- Variable: values its dtype cannot represent are refused ----------------------------------

# (constructor arguments, error type, words: the variable's name and the value)
UNREPRESENTABLE = [
    (dict(initial_value=2**40), ValueError, "'v'.*1099511627776.*int32"),
    (dict(initial_value=[1, 2**40]), ValueError, "'v'.*1099511627776"),
    (dict(initial_value=np.array([2**40])), ValueError, "'v'.*1099511627776"),
    (dict(initial_value=2**70), ValueError, "'v'.*1180591620717411303424"),
    (dict(initial_value=300, dtype="int8"), ValueError, r"'v'.*300.*\[-128, 127\]"),
    (dict(initial_value=-1, dtype="uint8"), ValueError, "'v'.*-1.*uint8"),
    (dict(initial_value=1 + 2j, dtype="float32"), TypeError, "'v'.*complex.*float32"),
    (dict(initial_value=np.array([1j]), dtype="float32"), TypeError, "'v'.*complex"),
    (dict(initial_value=NAN, dtype="int32"), ValueError, "'v'.*nan.*int32"),
    (dict(initial_value=[1.0, INF], dtype="int32"), ValueError, "'v'.*inf"),
    (dict(initial_value=jnp.float32(-INF), dtype="int32"), ValueError, "'v'.*-inf"),
    (dict(initial_value=1.5, dtype="int32"), ValueError, "'v'.*1.5"),
    (dict(initial_value=np.float32(2**31), dtype="int32"), ValueError, "'v'.*2147483648"),
    (dict(initial_value=2, dtype="bool"), ValueError, "'v'.*2.*bool"),
    (dict(initial_value=100000, dtype="float16"), ValueError, "'v'.*100000.*float16"),
    (dict(initial_value=2**200, dtype="float32"), ValueError, "'v'.*float32"),
]


@pytest.mark.parametrize("kwargs, error, words", UNREPRESENTABLE, ids=lambda x: repr(x)[:40])
def test_variable_refuses_values_its_dtype_cannot_represent(kwargs, error, words):
    """As ``tf.Variable``: no silent wrapping, truncation or dropped imaginary parts."""
    with pytest.raises(error, match=words):
        Variable(name="v", **kwargs)


@pytest.mark.parametrize(
    "kwargs, dtype, expected",
    [
        (dict(initial_value=np.float64(0.1), dtype="float32"), np.float32, np.float32(0.1)),
        (dict(initial_value=np.array([0.1, 1e-50])), np.float32, [np.float32(0.1), 0.0]),
        (dict(initial_value=2**40, dtype="float32"), np.float32, np.float32(2**40)),
        (dict(initial_value=2**70, dtype="float32"), np.float32, np.float32(2**70)),
        (dict(initial_value=7), np.int32, 7),
        (dict(initial_value=[2**31 - 1, -(2**31)]), np.int32, [2**31 - 1, -(2**31)]),
        (dict(initial_value=True, dtype="int32"), np.int32, 1),
        (dict(initial_value=[True, False], dtype="float32"), np.float32, [1.0, 0.0]),
        (dict(initial_value=3.0, dtype="int32"), np.int32, 3),
        (dict(initial_value=127, dtype="int8"), np.int8, 127),
        (dict(initial_value=1, dtype="bool"), np.bool_, True),
        (dict(initial_value=1, dtype=jnp.bfloat16), jnp.bfloat16, 1.0),
        (dict(initial_value=1 + 2j), np.complex64, 1 + 2j),
        (dict(initial_value=np.int64(5)), np.int32, 5),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_variable_keeps_lossless_and_rounding_conversions(kwargs, dtype, expected):
    v = Variable(**kwargs)
    assert v.dtype == dtype
    np.testing.assert_array_equal(v.numpy(), np.asarray(expected, dtype))


# (variable, action, error type, words)
UNREPRESENTABLE_ASSIGN = [
    (lambda: Variable(0, name="i"), lambda v: v.assign(2**40), ValueError, "'i'.*1099511627776"),
    (lambda: Variable(0, name="i"), lambda v: v.assign(2**70), ValueError, "'i'.*11805916"),
    (lambda: Variable(0, name="i"), lambda v: v.assign(np.uint64(2**63)), ValueError, "'i'"),
    (lambda: Variable(2**31 - 1, name="i"), lambda v: v.assign_add(1), ValueError, "'i'.*sum"),
    (lambda: Variable(-(2**31), name="i"), lambda v: v.assign_sub(1), ValueError, "'i'.*diff"),
    (lambda: Variable(5, name="i"), lambda v: v.assign_sub(-(2**63)), ValueError, "'i'"),
    (lambda: Variable(0, name="i8", dtype="int8"), lambda v: v.assign(300), ValueError, "300"),
    (lambda: Variable(0, name="u8", dtype="uint8"), lambda v: v.assign(-1), ValueError, "'u8'"),
    (lambda: Variable(0, name="u8", dtype="uint8"), lambda v: v.assign_sub(1), ValueError, "-1"),
    (
        lambda: Variable(np.zeros(2, np.float16), name="h"),
        lambda v: v.assign([100000, 1]),
        ValueError,
        "'h'.*100000.*float16",
    ),
    (
        lambda: Variable([1.0, 2.0], name="w"),
        lambda v: v.assign([[1.0], [1.0, 2.0]]),
        TypeError,
        "'w'.*ragged",
    ),
    (lambda: Variable([1.0, 2.0], name="w"), lambda v: v.assign(None), TypeError, "'w'.*None"),
    (lambda: Variable([1.0, 2.0], name="w"), lambda v: v.assign("ab"), TypeError, "'w'.*'ab'"),
    (
        lambda: Variable([1.0, 2.0], name="w"),
        lambda v: v.assign_add([[1.0], [1.0, 2.0]]),
        TypeError,
        "'w'.*ragged",
    ),
]


@pytest.mark.parametrize(
    "make, action, error, words",
    UNREPRESENTABLE_ASSIGN,
    ids=[f"{i}-{r[3]}" for i, r in enumerate(UNREPRESENTABLE_ASSIGN)],
)
def test_variable_assign_refuses_and_changes_nothing(make, action, error, words):
    v = make()
    before = v.numpy()
    with pytest.raises(error, match=words):
        action(v)
    assert v.numpy().dtype == before.dtype
    np.testing.assert_array_equal(v.numpy(), before)


def test_variable_assign_keeps_lossless_conversions():
    i = Variable(0, name="i")
    i.assign(np.int64(2**31 - 1))
    i.assign_sub(2**31 - 1)
    i.assign(True)
    i.assign_add(np.int64(-3))
    assert int(i) == -2 and i.dtype == np.int32
    w = Variable([1.0, 2.0])
    w.assign(np.array([0.1, 2.0**70]))  # float64 rounded to float32
    w.assign_add([1, 2])  # Python ints into float32
    np.testing.assert_array_equal(w.numpy(), np.float32([0.1, 2**70]) + np.float32([1, 2]))
    w.assign([0.5, 2**70])  # a float and an int beyond 64 bits
    np.testing.assert_array_equal(w.numpy(), np.float32([0.5, 2**70]))
