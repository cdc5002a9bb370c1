"""The TF 2.x Keras RMSprop test suite's cases, re-derived in NumPy, run on ``jrmsprop.RMSprop``.

The cases follow ``tensorflow/python/keras/optimizer_v2/rmsprop_test.py`` and the relevant parts
of ``optimizer_v2_test.py`` (dense, centered, momentum, callable hyperparameters, learning-rate
decay, schedules, sparse updates, sparse ``minimize`` on an embedding lookup, slot counts, the
momentum range check, clipping, weights). The NumPy reference below is written from the Keras 2
rules (ε outside the root without momentum, inside with it), independently of jrmsprop's code,
in float64; results are compared
with the Keras suite's own tolerances per dtype (``assertAllCloseAccordingToType``).

The tests marked ``frameworks`` run the real ``tf_keras`` optimizer side by side.
"""

from __future__ import annotations

import math
import os
import warnings

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrmsprop._src.variable import compute_gradients
from jrmsprop._src.optimizer import RMSprop
from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.variable import Variable

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


class InverseTimeDecay:
    """Keras' ``InverseTimeDecay`` (non-staircase): ``lr / (1 + rate · step / decay_steps)``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate

    def __call__(self, step):
        lr = np.float32(self.initial_learning_rate)
        rate = np.float32(self.decay_rate)
        return lr / (np.float32(1) + rate * np.float32(step) / np.float32(self.decay_steps))

    def get_config(self):
        return dict(
            initial_learning_rate=self.initial_learning_rate,
            decay_steps=self.decay_steps,
            decay_rate=self.decay_rate,
        )


def test_dense_with_learning_rate_inverse_time_decay():
    _decay_case(dict(learning_rate=InverseTimeDecay(0.01, decay_steps=1.0, decay_rate=0.5)))


def test_dense_with_optax_schedule():
    _decay_case(
        dict(learning_rate=lambda count: 0.01 / (1.0 + 0.5 * jnp.asarray(count, jnp.float32)))
    )
    _decay_case(dict(learning_rate=optax.constant_schedule(0.01), decay=0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_sparse_read", [True, False])
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


def test_anchor_value():
    opt = RMSprop(learning_rate=0.1)
    var1 = Variable(10.0)
    opt.minimize(lambda: (var1**2) / 2.0, [var1])
    np.testing.assert_allclose(var1.numpy(), 9.683772, rtol=1e-7)


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


def test_invalid_clip_norm_and_kwargs():
    with pytest.raises(ValueError, match=">= 0"):
        RMSprop(learning_rate=1.0, clipnorm=-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        RMSprop(learning_rate=1.0, clipvalue=-1.0)
    with pytest.raises(ValueError, match="Cannot accept both"):
        RMSprop(learning_rate=1.0, clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(TypeError, match="Unexpected keyword argument"):
        RMSprop(learning_rate=1.0, invalidkwargs=1.0)


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
