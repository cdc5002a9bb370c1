"""Sparse IndexedSlices gradients against the NumPy re-derivation of TF 2.x Keras's rules."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy_reference import Reference, summed_rows

import jrmsprop
from jrmsprop._src import sparse

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
        return optax.apply_updates(p, u), s

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
        new = optax.apply_updates(table, u)
        untouched = np.array([0, 1, 3, 4])
        np.testing.assert_array_equal(np.asarray(new)[untouched], 1.0)  # only row 2 moves
        assert np.all(np.asarray(new)[2] < 1.0)
        expected_rms = 4.0 if momentum else np.float32(0.9) * np.float32(4.0)
        np.testing.assert_array_equal(np.asarray(s.rms)[untouched], expected_rms)


@pytest.mark.slow
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
            optax.apply_updates(p, u_sparse), optax.apply_updates(p, u_dense), **tol
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
        sparse.apply_updates(
            jnp.ones((4, 3)), jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([0]), (5, 3))
        )
    with pytest.raises(ValueError, match="structure"):
        sparse.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_sparse_momentum_path_touches_only_named_rows_in_place_under_donation():
    """With donated buffers the update is a scatter: the compiled step has no full-size copy."""
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    table = jnp.zeros((1000, 8))

    def step(p, s, vals, idx):
        u, s = tx.update(jrmsprop.IndexedSlices(vals, idx, (1000, 8)), s)
        return optax.apply_updates(p, u), s

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
            sparse.apply_updates(params, bad)
        with pytest.raises(ValueError, match=rf"update at {where}"):
            jax.jit(sparse.apply_updates)(params, bad)
    with pytest.raises(ValueError, match=r"IndexedSlices update at <root> has dense_shape"):
        sparse.apply_updates(
            jnp.ones((4, 3)), jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([0]), (5, 3))
        )
    # same shapes and broadcasts that keep the parameter's shape: exactly optax's result
    for updates in (ok, {**ok, "a": jnp.float32(0.25), "layers": [jnp.ones(1), jnp.ones((1, 2))]}):
        got, want = sparse.apply_updates(params, updates), optax.apply_updates(params, updates)
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
        return optax.apply_updates(table, updates), new

    chex.assert_trees_all_equal(run([-1, 3]), run([3, 3]))
    chex.assert_trees_all_equal(run([-5, 3]), run([4, 3]))
    one_minus_rho = np.float32(1) - np.float32(0.9)  # TF's 1 − ρ, in float32
    assert float(run([-1, 3])[1].rms["e"][3, 0]) == one_minus_rho * np.float32(2.0) ** 2


def _numpy_deduplicate(values: np.ndarray, indices: np.ndarray, num_rows: int):
    """TF's ``unique`` + ``unsorted_segment_sum``, re-derived: negative indices count from the
    end (still negative: out of range, ``num_rows``), unique rows ascending and padded with
    ``num_rows``, each row's values added one by one in input order, starting from 0."""
    rows = np.where(indices < 0, indices + num_rows, indices)
    rows = np.where(rows < 0, num_rows, rows)
    unique = np.full(len(rows), num_rows, np.int32)
    summed = np.zeros_like(values)
    for k, (row, total) in enumerate(sorted(summed_rows(values, rows, values.dtype).items())):
        unique[k], summed[k] = row, total
    return unique, summed


@pytest.mark.parametrize("num_rows", [1, 7, 50, 2**31 - 1], ids=lambda r: f"rows{r}")
@pytest.mark.slow
def test_deduplicate_sums_repeated_rows_in_input_order_bit_for_bit(num_rows):
    """Traced indices (with repeats, negatives and out-of-range rows) against the NumPy
    re-derivation, bit for bit. 2³¹−1 rows take the (index, position) pair sort, the others the
    packed 32-bit keys."""
    from jrmsprop._src.sparse import deduplicate

    rng = np.random.default_rng(num_rows % 1000)
    for n in (1, 2, 5, 33, 64):
        dedup = jax.jit(lambda v, i: deduplicate(jrmsprop.IndexedSlices(v, i, (num_rows, 3))))
        for _ in range(4):
            pool = min(num_rows, 10)
            indices = rng.integers(-pool - 2, pool + 2, n).astype(np.int32)
            indices[rng.integers(0, n)] = indices[0]
            values = rng.standard_normal((n, 3)).astype(np.float32) * 10.0 ** rng.integers(
                -3, 4, (n, 1)
            ).astype(np.float32)
            got_rows, got_sums = dedup(values, indices)
            want_rows, want_sums = _numpy_deduplicate(values, indices, num_rows)
            np.testing.assert_array_equal(got_rows, want_rows)
            assert np.asarray(got_sums).tobytes() == want_sums.tobytes(), (indices, got_sums)


def test_deduplicate_of_no_indices_is_empty():
    from jrmsprop._src.sparse import deduplicate

    rows, sums = jax.jit(lambda v, i: deduplicate(jrmsprop.IndexedSlices(v, i, (5, 2))))(
        jnp.zeros((0, 2)), jnp.zeros((0,), jnp.int32)
    )
    assert rows.shape == (0,) and sums.shape == (0, 2)


def test_indices_and_values_may_be_python_lists():
    g = jrmsprop.IndexedSlices([[1.0, 2.0]], [1], (3, 2))
    dense = jrmsprop.IndexedSlices(np.asarray([[1.0, 2.0]], np.float32), np.asarray([1]), (3, 2))
    tx = jrmsprop.rmsprop(0.1)
    t = jnp.zeros((3, 2))
    chex.assert_trees_all_equal(tx.update(g, tx.init(t))[0], tx.update(dense, tx.init(t))[0])
    with pytest.raises(ValueError, match="indices"):
        jrmsprop.IndexedSlices([[1.0, 2.0]], [3], (3, 2))


# ---- apply_updates refuses updates the parameter's dtype cannot hold ---------------------------


@pytest.mark.parametrize(
    "param, update, words",
    [
        (jnp.zeros(2), jnp.array([1j, 1j]), ["['w']", "complex", "imaginary", "`updates`"]),
        (jnp.zeros(2, jnp.bfloat16), jnp.ones(2, jnp.complex64), ["['w']", "imaginary"]),
        (jnp.array([1, 2]), jnp.array([0.9, 0.9]), ["['w']", "float32", "int32", "truncate"]),
        (jnp.array([1, 2]), 0.5, ["['w']", "truncate"]),  # a Python float
        (jnp.array([1, 2]), jnp.ones(2, jnp.complex64), ["['w']", "complex"]),
        (jnp.array([True, False]), jnp.ones(2), ["['w']", "truncate"]),
        (
            jnp.zeros((3, 2)),
            jrmsprop.IndexedSlices(jnp.full((1, 2), 1j), jnp.array([1]), (3, 2)),
            ["['w']", "IndexedSlices update", "imaginary"],
        ),
        (
            jnp.zeros((3, 2), jnp.int32),
            jrmsprop.IndexedSlices(jnp.full((1, 2), 0.5), jnp.array([1]), (3, 2)),
            ["['w']", "IndexedSlices update", "truncate"],
        ),
    ],
)
def test_apply_updates_refuses_updates_the_parameter_cannot_hold(param, update, words):
    """optax.apply_updates drops the imaginary part of a complex update on a real parameter and
    truncates a float update on an integer one; jrmsprop's refuses, naming the leaf."""
    params = {"b": jnp.ones(2), "w": param}
    for fn in (sparse.apply_updates, jax.jit(sparse.apply_updates)):
        with pytest.raises(TypeError, match="apply_updates") as info:
            fn(params, {"b": jnp.ones(2), "w": update})
        for word in words:
            assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "param, update",
    [
        (jnp.zeros(2, jnp.bfloat16), jnp.full(2, 0.3, jnp.float32)),  # rounded down, as in optax
        (jnp.zeros(2, jnp.float16), jnp.full(2, 0.3, jnp.float32)),
        (jnp.zeros(2, jnp.float32), np.full(2, 0.3, np.float64)),
        (jnp.zeros(2), jnp.array([2, 3])),  # integer update on a float parameter
        (jnp.zeros(2), 2),
        (jnp.zeros(2, jnp.complex64), jnp.full(2, 0.3)),  # real update on a complex parameter
        (jnp.zeros(2, jnp.complex64), jnp.full(2, 0.3 + 1j, jnp.complex64)),
        (jnp.array([1, 2]), jnp.array([3, 4])),  # integers on integers
        (jnp.array([1, 2], jnp.int8), jnp.array([3, 4], jnp.int32)),
    ],
)
def test_apply_updates_keeps_optax_results_for_lossless_kinds(param, update):
    params, updates = {"w": param, "n": None}, {"w": update, "n": None}
    with jax.numpy_dtype_promotion("standard"):  # the suite is strict; users' code is not
        got, want = sparse.apply_updates(params, updates), optax.apply_updates(params, updates)
    assert got["n"] is None
    assert got["w"].dtype == param.dtype == want["w"].dtype
    np.testing.assert_array_equal(got["w"], want["w"])
    # a None update leaves any parameter alone, whatever its dtype
    assert sparse.apply_updates({"w": param}, {"w": None})["w"] is param


# ---- IndexedSlices checks what a user builds, not what JAX rebuilds ---------------------------


@pytest.mark.parametrize(
    "values, indices, shape, error, words",
    [
        (None, [0], (4, 3), TypeError, "`values` must be an array, got None"),
        (np.ones((1, 3)), None, (4, 3), TypeError, "`indices` must be an array, got None"),
        (np.ones((1, 3)), 0, (4, 3), ValueError, r"`indices` must be 1-D, got shape \(\)"),
        (np.ones((1, 3)), np.int32(0), (4, 3), ValueError, "`indices` must be 1-D"),
        ("abc", [0], (4, 3), TypeError, "`values` must be an array, got 'abc'"),
        (np.array(["a", "b"]), [0, 1], (4,), TypeError, "`values` must be a numeric array"),
        ([["a", "b", "c"]], [0], (4, 3), TypeError, "`values` must be a numeric array"),
        ([[1.0, 2.0], [1.0]], [0, 1], (4, 2), ValueError, "`values` must be an array"),
        (object(), [0], (4, 3), TypeError, "`values` must be an array, got <object"),
        (np.ones((1, 3)), "0", (4, 3), TypeError, "`indices` must be an array"),
        (np.ones((1, 3)), [0], (True, 3), TypeError, "`dense_shape` must be a tuple of ints"),
        (np.ones((1, 3)), [0], (4, np.bool_(True)), TypeError, "is a boolean"),
        (np.ones((1, 3)), [0], True, TypeError, "`dense_shape` must be a tuple of ints"),
        (np.ones((1, 3)), [0], ((4,), 3), ValueError, "`dense_shape` must be a flat tuple"),
        (np.ones((1, 3)), [0], [[4, 3]], ValueError, "`dense_shape` must be a flat tuple"),
        (np.ones((1, 3)), [0], np.array([[4, 3]]), ValueError, r"\(1-D\)"),
        (np.ones((1, 3)), [0], None, TypeError, "`dense_shape` must be a tuple of ints"),
        (np.ones((1, 3)), [0], (4, None), TypeError, "`dense_shape` must be a tuple of ints"),
        (np.ones((1, 3)), [0], (2**64, 3), ValueError, "`dense_shape` .* more elements"),
        (np.ones((1, 3)), [0], (2**62, 3), ValueError, "`dense_shape` .* more elements"),
        (np.ones((1, 3)), [0], (-(2**64), 3), ValueError, "`dense_shape` must not be negative"),
    ],
)
def test_indexed_slices_refuses_bad_parts_naming_them(values, indices, shape, error, words):
    with pytest.raises(error, match=rf"IndexedSlices: .*{words}|IndexedSlices: {words}"):
        jrmsprop.IndexedSlices(values, indices, shape)


@pytest.mark.parametrize(
    "shape", [(4, 3), [4, 3], np.array([4, 3]), jnp.array([4, 3]), (np.int64(4), jnp.int32(3))]
)
def test_indexed_slices_dense_shape_may_be_any_flat_sequence_of_ints(shape):
    g = jrmsprop.IndexedSlices(jnp.ones((1, 3)), jnp.array([1]), shape)
    assert g.dense_shape == (4, 3) and all(type(d) is int for d in g.dense_shape)


def test_indexed_slices_checks_run_on_construction_only_not_on_unflattening():
    """JAX rebuilds the node through tree_unflatten with tracers, None or placeholder objects:
    none of that goes through the constructor's checks."""
    g = jrmsprop.IndexedSlices(jnp.ones((2, 3)), jnp.array([0, 2]), (4, 3))
    as_none = jax.tree.map(lambda x: None, g)
    assert isinstance(as_none, jrmsprop.IndexedSlices) and as_none.values is None
    marker = object()
    assert jax.tree.map(lambda x: marker, g).indices is marker
    treedef = jax.tree.structure(g)
    assert jax.tree.unflatten(treedef, ["not", "arrays"]).values == "not"
    # traced inside jit, vmap and eval_shape
    dense = jax.jit(lambda v, i: jrmsprop.IndexedSlices(v, i, (4, 3)).to_dense())(
        g.values, g.indices
    )
    np.testing.assert_array_equal(dense, g.to_dense())
    batched = jax.vmap(lambda v: jrmsprop.IndexedSlices(v, g.indices, (4, 3)).to_dense())(
        jnp.stack([g.values, 2 * g.values])
    )
    np.testing.assert_array_equal(batched[1], 2 * g.to_dense())
    shapes = jax.eval_shape(lambda: jrmsprop.IndexedSlices(g.values, g.indices, (4, 3)))
    assert shapes.values.shape == (2, 3) and shapes.dense_shape == (4, 3)
    # abstract parts are accepted as given
    abstract = jrmsprop.IndexedSlices(
        jax.ShapeDtypeStruct((2, 3), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32), (4, 3)
    )
    assert abstract.shape == (4, 3)
    # a dense_shape that is traced cannot be static
    with pytest.raises(TypeError, match="`dense_shape` must be static"):
        jax.jit(lambda n: jrmsprop.IndexedSlices(g.values, g.indices, (n, 3)))(4)
    # densify / to_dense of a rebuilt node without arrays say so, instead of an AttributeError
    with pytest.raises(TypeError, match=r"to_dense: `values` is None, not an array"):
        jrmsprop.densify({"e": as_none})


def test_indexed_slices_built_with_bad_parts_never_reaches_update():
    """The reproducers of the sweep: these failed deep inside update / densify before."""
    tx = jrmsprop.rmsprop(0.1)
    state = tx.init({"e": jnp.zeros((4, 3))})
    for values, indices in ((jnp.ones((1, 3)), 0), (None, [0]), (jnp.ones((1, 3)), None)):
        with pytest.raises((TypeError, ValueError), match="IndexedSlices: `(values|indices)`"):
            tx.update({"e": jrmsprop.IndexedSlices(values, indices, (4, 3))}, state)


def test_to_dense_refuses_a_shape_beyond_the_addressable_bytes():
    """2**61 float32 elements fit the element count but not 2**63 - 1 bytes: XLA aborted the
    interpreter on the zeros; it is a ValueError naming dense_shape instead."""
    s = jrmsprop.IndexedSlices(jnp.ones((1, 1), jnp.float32), jnp.array([0]), (2**61, 1))
    with pytest.raises(ValueError, match="dense_shape"):
        s.to_dense()
