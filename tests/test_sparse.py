"""Sparse IndexedSlices gradients against the NumPy re-derivation of TF 2.x Keras's rules."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy_reference import Reference

import jrmsprop

ROWS, DIM, STEPS = 12, 3, 20


def _sparse_problem(seed: int):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    batches = []
    for step in range(STEPS):
        # rows 0-3 only early on (then left alone), duplicates on purpose
        pool = 4 if step < 5 else ROWS
        idx = rng.integers(0, pool, size=6).astype(np.int32)
        idx[1] = idx[0]
        vals = rng.standard_normal((6, DIM)).astype(np.float32)
        batches.append((vals, idx))
    return table, batches


CONFIGS = [
    dict(momentum=m, centered=c, epsilon=e)
    for m in (0.0, 0.9)
    for c in (False, True)
    for e in (1e-7, 1.0)
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_sparse_matches_numpy_reference(config):
    table, batches = _sparse_problem(seed=int(config["momentum"] * 10) + 2 * config["centered"])
    ref = Reference(rule="keras2", learning_rate=0.05, **config)
    expected = table
    tx = jrmsprop.rmsprop(0.05, **config)
    params = {"emb": jnp.asarray(table)}
    state = tx.init(params)

    @jax.jit
    def step(p, s, vals, idx):
        g = {"emb": jrmsprop.IndexedSlices(vals, idx, (ROWS, DIM))}
        u, s = tx.update(g, s, p)
        return jrmsprop.apply_updates(p, u), s

    for vals, idx in batches:
        (expected,) = ref.apply([(vals, idx)], [expected])
        params, state = step(params, state, vals, idx)
        # float32 rounding: duplicate rows are summed in another order than tf.unique's
        np.testing.assert_allclose(params["emb"], expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(state.rms["emb"], ref.slots[("rms", 0)], rtol=2e-6, atol=1e-12)
    if config["momentum"]:
        np.testing.assert_allclose(
            state.momentum["emb"], ref.slots[("momentum", 0)], rtol=2e-6, atol=1e-12
        )


def test_lazy_rows_with_momentum_and_decay_everywhere_without():
    table = jnp.ones((5, 2))
    g = jrmsprop.IndexedSlices(jnp.ones((1, 2)), jnp.array([2]), (5, 2))
    for momentum in (0.0, 0.9):
        tx = jrmsprop.rmsprop(0.1, momentum=momentum)
        state = tx.init(table)._replace(rms=jnp.full((5, 2), 4.0))
        u, s = tx.update(g, state)
        new = jrmsprop.apply_updates(table, u)
        untouched = np.array([0, 1, 3, 4])
        np.testing.assert_array_equal(np.asarray(new)[untouched], 1.0)  # only row 2 moves
        assert np.all(np.asarray(new)[2] < 1.0)
        expected_rms = 4.0 if momentum else np.float32(0.9) * np.float32(4.0)
        np.testing.assert_array_equal(np.asarray(s.rms)[untouched], expected_rms)


def test_sparse_equals_dense_when_every_row_is_touched_once():
    rng = np.random.default_rng(0)
    vals = rng.standard_normal((4, 3)).astype(np.float32)
    perm = np.array([2, 0, 3, 1], np.int32)
    dense = np.zeros((4, 3), np.float32)
    dense[perm] = vals
    for config in CONFIGS:
        tx = jrmsprop.rmsprop(0.1, **config)
        p = jnp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
        s = tx.init(p)
        u_sparse, s_sparse = tx.update(jrmsprop.IndexedSlices(vals, perm, (4, 3)), s)
        u_dense, s_dense = tx.update(jnp.asarray(dense), s)
        # with momentum, TF's sparse kernel orders the float operations its own way
        tol = dict(rtol=1e-6, atol=1e-7) if config["momentum"] else dict(rtol=0, atol=0)
        np.testing.assert_allclose(
            jrmsprop.apply_updates(p, u_sparse), optax.apply_updates(p, u_dense), **tol
        )
        np.testing.assert_allclose(s_sparse.rms, s_dense.rms, **tol)


def test_indexed_slices_is_a_pytree_and_densifies_with_duplicates():
    g = jrmsprop.IndexedSlices(jnp.array([[1.0], [2.0], [4.0]]), jnp.array([0, 0, 2]), (3, 1))
    leaves, treedef = jax.tree.flatten(g)
    assert len(leaves) == 2
    again = jax.tree.unflatten(treedef, leaves)
    np.testing.assert_array_equal(again.to_dense(), [[3.0], [0.0], [4.0]])
    assert g.shape == (3, 1) and g.dtype == jnp.float32


@pytest.mark.parametrize(
    "values, indices, shape, error",
    [
        (np.ones((2, 3)), np.array([0]), (4, 3), ValueError),
        (np.ones((2, 3)), np.array([[0, 1]]), (4, 3), ValueError),
        (np.ones((2, 3)), np.array([0.0, 1.0]), (4, 3), TypeError),
        (np.ones((2, 2)), np.array([0, 1]), (4, 3), ValueError),
        (np.ones((1, 3)), np.array([0]), (-2, 3), ValueError),  # negative dense_shape
        (np.ones((1, 3)), np.array([0]), (2.5, 3), TypeError),  # not integers (not truncated)
        (np.ones((1, 3)), np.array([0]), "ab", TypeError),
    ],
)
def test_indexed_slices_validation(values, indices, shape, error):
    with pytest.raises(error, match="IndexedSlices"):
        jrmsprop.IndexedSlices(values, indices, shape)


def test_sparse_shape_mismatch_and_apply_updates_errors():
    tx = jrmsprop.rmsprop()
    state = tx.init(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        tx.update(jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([0]), (5, 3)), state)
    with pytest.raises(ValueError, match="dense_shape"):
        jrmsprop.apply_updates(
            jnp.ones((4, 3)), jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([0]), (5, 3))
        )
    with pytest.raises(ValueError, match="structure"):
        jrmsprop.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_sparse_momentum_path_touches_only_named_rows_in_place_under_donation():
    """With donated buffers the update is a scatter: the compiled step has no full-size copy."""
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    table = jnp.zeros((1000, 8))

    def step(p, s, vals, idx):
        u, s = tx.update(jrmsprop.IndexedSlices(vals, idx, (1000, 8)), s)
        return jrmsprop.apply_updates(p, u), s

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(table, tx.init(table), jnp.ones((4, 8)), jnp.arange(4))
        .compile()
    )
    text = compiled.as_text()
    full_copies = [line for line in text.splitlines() if "copy(" in line and "f32[1000,8]" in line]
    assert not full_copies, full_copies
    assert "scatter" in text


def test_apply_updates_wrong_shape_names_the_leaf():
    params = {"a": jnp.ones(2), "layers": [jnp.ones(3), jnp.ones((2, 2))]}
    ok = {"a": jnp.full(2, 0.5), "layers": [jnp.full(3, -1.0), jnp.full((2, 2), 2.0)]}
    for bad, where, shape in [
        ({**ok, "layers": [jnp.ones(4), ok["layers"][1]]}, r"\['layers'\]\[0\]", r"\(4,\)"),
        # optax would broadcast the parameter up to (3, 2, 2); the parameter keeps its shape
        (
            {**ok, "layers": [ok["layers"][0], jnp.ones((3, 2, 2))]},
            r"\[.layers.\]\[1\]",
            r"\(3, 2, 2\)",
        ),
    ]:
        with pytest.raises(ValueError, match=rf"update at {where} has shape {shape}"):
            jrmsprop.apply_updates(params, bad)
        with pytest.raises(ValueError, match=rf"update at {where}"):
            jax.jit(jrmsprop.apply_updates)(params, bad)
    with pytest.raises(ValueError, match=r"IndexedSlices update at <root> has dense_shape"):
        jrmsprop.apply_updates(
            jnp.ones((4, 3)), jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([0]), (5, 3))
        )
    # same shapes and broadcasts that keep the parameter's shape: exactly optax's result
    for updates in (ok, {**ok, "a": jnp.float32(0.25), "layers": [jnp.ones(1), jnp.ones((1, 2))]}):
        got, want = jrmsprop.apply_updates(params, updates), optax.apply_updates(params, updates)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert x.shape == y.shape and np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_traced_negative_index_is_the_same_row_as_its_positive_twin(momentum):
    """Under jit a negative index counts from the end, so [-1, 3] on 4 rows is [3, 3]: its two
    values are summed before squaring (not squared apart, or one lost in the scatter), and an
    index still negative after that (-5) is out of range, dropped like 4."""
    table = {"e": jnp.arange(12.0).reshape(4, 3)}
    tx = jrmsprop.rmsprop(0.1, momentum=momentum)
    state = tx.init(table)
    step = jax.jit(
        lambda i: tx.update({"e": jrmsprop.IndexedSlices(jnp.ones((2, 3)), i, (4, 3))}, state)
    )

    def run(indices):
        updates, new = step(jnp.asarray(indices, jnp.int32))
        return jrmsprop.apply_updates(table, updates), new

    chex.assert_trees_all_equal(run([-1, 3]), run([3, 3]))
    chex.assert_trees_all_equal(run([-5, 3]), run([4, 3]))
    one_minus_rho = np.float32(1) - np.float32(0.9)  # TF's 1 − ρ, in float32
    assert float(run([-1, 3])[1].rms["e"][3, 0]) == one_minus_rho * np.float32(2.0) ** 2


def test_indices_and_values_may_be_python_lists():
    g = jrmsprop.IndexedSlices([[1.0, 2.0]], [1], (3, 2))
    dense = jrmsprop.IndexedSlices(np.asarray([[1.0, 2.0]], np.float32), np.asarray([1]), (3, 2))
    tx = jrmsprop.rmsprop(0.1)
    t = jnp.zeros((3, 2))
    chex.assert_trees_all_equal(tx.update(g, tx.init(t))[0], tx.update(dense, tx.init(t))[0])
    with pytest.raises(ValueError, match="indices"):
        jrmsprop.IndexedSlices([[1.0, 2.0]], [3], (3, 2))
