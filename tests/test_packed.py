"""Packed slot storage (``jrmsprop.packed``): same numbers as the per-leaf layout, fewer ops.

The packed transformation must give the updates and slots of the unpacked one bit for bit (the
arithmetic is elementwise), for every preset and option, over trees with mixed dtypes, scalars,
empty leaves and empty trees; convert its state to and from the per-leaf layout; and compose with
jit, optax.chain, inject_hyperparams and MultiSteps without retracing.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop import compat
from jrmsprop._src.packed import PackedLayout, PackedState, pack_state, packed, unpack_state
from tests.numpy_reference import Reference, assert_same_trajectory, run

SAVED = Path(__file__).resolve().parent / "saved"


def _params(bf16: bool = True) -> dict:
    rng = np.random.default_rng(0)
    tree = {
        "dense": {
            "w": jnp.asarray(rng.standard_normal((3, 4), dtype=np.float32)),
            "b": jnp.asarray(rng.standard_normal(4, dtype=np.float32)),
        },
        "scale": jnp.asarray(np.float32(1.5)),
        "empty": jnp.zeros((0, 3), jnp.float32),
        "layers": [jnp.asarray(rng.standard_normal(2, dtype=np.float32)) for _ in range(3)],
    }
    if bf16:
        tree["emb"] = jnp.asarray(rng.standard_normal((5, 2), dtype=np.float32), jnp.bfloat16)
    return tree


def _grads(params, step: int):
    rng = np.random.default_rng(100 + step)
    return jax.tree.map(
        lambda p: (
            jnp.asarray(rng.standard_normal(p.shape) * 0.5, p.dtype)
            if not jnp.iscomplexobj(p)
            else jnp.asarray(
                rng.standard_normal(p.shape) + 1j * rng.standard_normal(p.shape), p.dtype
            )
        ),
        params,
    )


def _same_bits(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), f"{what}: {a} != {b}"


def _same_trees(a, b, what: str) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        _same_bits(x, y, what + jax.tree_util.keystr(path))


def _run_both(make_tx, params, steps: int = 4):
    """The unpacked and the packed transformation side by side; every update compared."""
    tx, ptx = make_tx(), packed(make_tx())

    def stepper(t):
        @jax.jit
        def step(p, s, g):
            u, s = t.update(g, s, p)
            return optax.apply_updates(p, u), u, s

        return step

    step, pstep = stepper(tx), stepper(ptx)
    p, s = params, tx.init(params)
    pp, ps = params, ptx.init(params)
    for k in range(steps):
        g = _grads(params, k)
        p, u, s = step(p, s, g)
        pp, pu, ps = pstep(pp, ps, g)
        _same_trees(u, pu, f"updates step {k}")
        _same_trees(p, pp, f"params step {k}")
    _same_trees(s, unpack_state(ps, params), "state")
    return p, s, ps


CASES = {
    "keras2": lambda: jrmsprop.rmsprop(0.01),
    "keras2_momentum_centered_decay": lambda: jrmsprop.rmsprop(
        0.01, momentum=0.9, centered=True, decay=0.01
    ),
    "keras2_schedule": lambda: jrmsprop.rmsprop(
        optax.exponential_decay(0.01, 1, 0.9), momentum=0.5
    ),
    "keras3_weight_decay": lambda: compat.keras3(0.01, momentum=0.9, weight_decay=0.05),
    "keras3_centered": lambda: compat.keras3(0.01, centered=True, weight_decay=0.01),
    "torch_all": lambda: compat.torch(
        lr=0.01, weight_decay=0.1, momentum=0.5, centered=True, maximize=True
    ),
    "torch_plain": lambda: compat.torch(lr=0.01),
    "tf1": lambda: compat.tf1(0.01, momentum=0.9, centered=True),
    "optax_rmsprop": lambda: compat.optax_rmsprop(0.01, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_identical_to_unpacked(name: str) -> None:
    params = _params()
    p, s, ps = _run_both(CASES[name], params)
    assert not np.array_equal(np.asarray(p["dense"]["w"]), np.asarray(params["dense"]["w"]))
    # One buffer per dtype and slot; the layout is fixed.
    assert sorted(ps.inner.rms) == ["bfloat16", "float32"]
    assert ps.inner.rms["float32"].shape == (12 + 4 + 1 + 0 + 6,)
    assert ps.inner.rms["bfloat16"].shape == (10,)
    assert ps.inner.rms["bfloat16"].dtype == jnp.bfloat16


def test_matches_the_numpy_reference() -> None:
    """An anchor independent of jrmsprop: Keras 2 with momentum, centered, float32."""
    params = _params(bf16=False)
    ptx = packed(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True))
    state = ptx.init(params)
    grads, trajectory, p = [], [], params
    for k in range(3):
        g = _grads(params, k)
        u, state = jax.jit(ptx.update)(g, state, p)
        p = optax.apply_updates(p, u)
        grads.append(jax.tree.leaves(g))
        trajectory.append(jax.tree.leaves(p))
    ref = Reference("keras2", learning_rate=0.01, momentum=0.9, centered=True)
    assert_same_trajectory(trajectory, run(ref, jax.tree.leaves(params), grads))


@pytest.mark.slow
def test_mixed_float64_bfloat16_float32_and_complex(x64) -> None:
    rng = np.random.default_rng(1)
    params = {
        "f64": jnp.asarray(rng.standard_normal((2, 3))),
        "f32": jnp.asarray(rng.standard_normal(4), jnp.float32),
        "bf16": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        "c64": jnp.asarray(rng.standard_normal(3) + 1j * rng.standard_normal(3), jnp.complex64),
        "f64_b": jnp.asarray(rng.standard_normal(1)),
    }
    for make in (
        lambda: jrmsprop.rmsprop(0.01, momentum=0.9, centered=True),
        lambda: compat.torch(lr=0.01, momentum=0.5, weight_decay=0.1, centered=True),
    ):
        _, _, ps = _run_both(make, params)
        assert sorted(ps.inner.rms) == ["bfloat16", "complex64", "float32", "float64"]
        assert ps.inner.rms["float64"].shape == (7,)
        assert ps.inner.rms["float64"].dtype == jnp.float64


def test_float16_parameters_keep_float32_slots() -> None:
    params = [jnp.ones(3, jnp.float16), jnp.full((2,), 2.0, jnp.float16)]
    _, s, ps = _run_both(lambda: jrmsprop.rmsprop(0.01, momentum=0.9), params)
    assert ps.inner.rms["float16"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in s.rms)


def test_scalar_root_and_empty_trees() -> None:
    _run_both(lambda: jrmsprop.rmsprop(0.1, momentum=0.9), jnp.asarray(np.float32(3.0)))
    for empty in ({}, [], ()):
        ptx = packed(jrmsprop.rmsprop(0.1))
        state = ptx.init(empty)
        assert state.offsets == () and state.inner.rms == {}
        updates, state2 = ptx.update(empty, state, empty)
        assert updates == empty
        assert int(state2.inner.count) == 1
        assert unpack_state(state2, empty).rms == empty


def test_python_number_parameter() -> None:
    ptx, tx = packed(jrmsprop.rmsprop(0.1)), jrmsprop.rmsprop(0.1)
    u, _ = ptx.update(2.0, ptx.init(1.0))
    want, _ = tx.update(2.0, tx.init(1.0))
    _same_bits(u, want, "update")
    np.testing.assert_allclose(np.asarray(u), -0.1 * 2 / (np.sqrt(0.1 * 4) + 1e-7), rtol=1e-6)


def test_eager_update_and_donation_free_reuse() -> None:
    """Eager calls (no user jit) give the same numbers and do not consume the inputs."""
    params = _params()
    tx, ptx = jrmsprop.rmsprop(0.01, momentum=0.9), packed(jrmsprop.rmsprop(0.01, momentum=0.9))
    s, ps = tx.init(params), ptx.init(params)
    g = _grads(params, 0)
    u, s = tx.update(g, s, params)
    pu, ps2 = ptx.update(g, ps, params)
    _same_trees(u, pu, "eager")
    pu2, _ = ptx.update(g, ps, params)  # the old state still works
    _same_trees(pu, pu2, "again")


def test_layout_and_offsets() -> None:
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4, jnp.bfloat16), "c": jnp.zeros(5)}
    layout = PackedLayout.of(params)
    assert layout.groups == ("bfloat16", "float32")
    assert layout.sizes == (4, 11)
    assert layout.leaves == ((1, 0, (2, 3)), (0, 0, (4,)), (1, 6, (5,)))
    state = packed(jrmsprop.rmsprop()).init(params)
    assert [int(o) for o in state.offsets] == [0, 0, 6]
    assert all(o.dtype == jnp.int32 for o in state.offsets)
    assert layout == PackedLayout.of(jax.tree.map(lambda x: x + 1, params))
    assert hash(layout) == hash(PackedLayout.of(params))
    assert layout != PackedLayout.of({"a": jnp.zeros((3, 2)), "b": params["b"], "c": params["c"]})
    assert "3 leaves" in repr(layout)


# ---- fewer operations --------------------------------------------------------------------------


def _step_hlo(tx, params) -> str:
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(step).lower(params, tx.init(params), params).compile().as_text()


def test_one_update_per_dtype_in_the_compiled_step() -> None:
    """64 leaves: 64 square roots unpacked, one per dtype packed (in the optimized program)."""
    params = [jnp.ones(8) for _ in range(48)] + [jnp.ones(4, jnp.bfloat16) for _ in range(16)]
    count = lambda text: len(re.findall(r"= \S+ sqrt\(", text))  # noqa: E731
    assert count(_step_hlo(jrmsprop.rmsprop(0.1), params)) == 64
    assert count(_step_hlo(packed(jrmsprop.rmsprop(0.1)), params)) == 2


# ---- composition -------------------------------------------------------------------------------


def test_no_retrace_on_later_steps() -> None:
    params = _params()
    ptx = packed(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True))
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s, g):
        traces.append(1)
        u, s = ptx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, ptx.init(params)
    for k in range(4):
        p, s = step(p, s, _grads(params, k))
    assert len(traces) == 1
    # A state that went through pickle (an equal, not identical, layout) hits the same cache.
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.layout == s.layout and s2.layout is not s.layout
    p, s = step(p, s2, _grads(params, 5))
    assert len(traces) == 1


def test_chain_inside_packed() -> None:
    """Elementwise stages may be packed with the optimizer."""
    params = _params()
    inner = lambda: optax.chain(jrmsprop.rmsprop(0.01), optax.scale(0.5))  # noqa: E731
    _run_both(inner, params, steps=2)


def test_chain_around_packed() -> None:
    """Stages that reduce over leaves (a global norm) go outside the packed wrapper: packed,
    their sum would run in another order."""
    params = _params(bf16=False)  # optax's global norm adds float32 and bfloat16 norms
    clip = lambda: optax.clip_by_global_norm(0.5)  # noqa: E731
    tx = optax.chain(clip(), jrmsprop.rmsprop(0.01, momentum=0.9))
    ptx = optax.chain(clip(), packed(jrmsprop.rmsprop(0.01, momentum=0.9)))
    s, ps = tx.init(params), ptx.init(params)
    for k in range(3):
        g = jax.tree.map(lambda x: x * 10, _grads(params, k))  # clipped
        u, s = jax.jit(tx.update)(g, s, params)
        pu, ps = jax.jit(ptx.update)(g, ps, params)
        _same_trees(u, pu, f"step {k}")
    _same_trees(s[1], unpack_state(ps[1], params), "state")


def test_inject_hyperparams_inside_and_outside() -> None:
    params = _params(bf16=False)  # optax's inject_hyperparams promotes the params' dtypes
    inject = optax.inject_hyperparams(jrmsprop.rmsprop)
    tx = inject(learning_rate=0.01, momentum=0.9)
    inside = packed(inject(learning_rate=0.01, momentum=0.9))
    outside = optax.inject_hyperparams(
        lambda learning_rate, momentum: packed(jrmsprop.rmsprop(learning_rate, momentum=momentum))
    )(learning_rate=0.01, momentum=0.9)
    s, si, so = tx.init(params), inside.init(params), outside.init(params)
    for k in range(3):
        g = _grads(params, k)
        lr = jnp.asarray(0.01 / (k + 1), jnp.float32)
        s.hyperparams["learning_rate"] = lr
        si.inner.hyperparams["learning_rate"] = lr
        so.hyperparams["learning_rate"] = lr
        u, s = jax.jit(tx.update)(g, s, params)
        ui, si = jax.jit(inside.update)(g, si, params)
        uo, so = jax.jit(outside.update)(g, so, params)
        _same_trees(u, ui, f"inside step {k}")
        _same_trees(u, uo, f"outside step {k}")
    unpacked = unpack_state(si, params)
    assert isinstance(unpacked, type(s))
    _same_trees(s, unpacked, "inject state")
    _same_trees(pack_state(s, params), si, "pack_state of an inject state")


@pytest.mark.slow
def test_multisteps() -> None:
    params = _params()
    tx = optax.MultiSteps(jrmsprop.rmsprop(0.01, momentum=0.9), every_k_schedule=2)
    ptx = optax.MultiSteps(packed(jrmsprop.rmsprop(0.01, momentum=0.9)), every_k_schedule=2)
    s, ps = tx.init(params), ptx.init(params)
    step, pstep = jax.jit(tx.update), jax.jit(ptx.update)
    for k in range(5):
        g = _grads(params, k)
        with jax.numpy_dtype_promotion("standard"):  # optax's MultiSteps divides by an int
            u, s = step(g, s, params)
            pu, ps = pstep(g, ps, params)
        _same_trees(u, pu, f"step {k}")
    assert int(ps.inner_opt_state.inner.count) == 2
    _same_trees(s.inner_opt_state, unpack_state(ps.inner_opt_state, params), "inner state")


def test_apply_if_finite_skips_the_nan_step() -> None:
    params = _params(bf16=False)
    make = lambda: jrmsprop.rmsprop(0.01, momentum=0.9)  # noqa: E731
    tx, ptx = optax.apply_if_finite(make(), 3), optax.apply_if_finite(packed(make()), 3)
    s, ps = tx.init(params), ptx.init(params)
    for k in range(3):
        g = _grads(params, k)
        if k == 1:
            g["scale"] = jnp.asarray(np.float32(np.nan))
        u, s = jax.jit(tx.update)(g, s, params)
        pu, ps = jax.jit(ptx.update)(g, ps, params)
        _same_trees(u, pu, f"step {k}")
    assert int(ps.notfinite_count) == 0 and int(ps.total_notfinite) == 1


def test_eval_shape_and_shape_dtype_struct_params() -> None:
    params = _params()
    ptx = packed(jrmsprop.rmsprop(0.01, centered=True))
    abstract = jax.eval_shape(ptx.init, params)
    concrete = ptx.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    structs = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    from_structs = ptx.init(structs)
    _same_trees(from_structs, concrete, "init from ShapeDtypeStruct")


# ---- per-leaf state in and out ----------------------------------------------------------------


def test_state_round_trips() -> None:
    params = _params()
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    ptx = packed(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True))
    s = tx.init(params)
    for k in range(2):
        _, s = tx.update(_grads(params, k), s, params)
    ps = pack_state(s, params)
    assert isinstance(ps, PackedState)
    _same_trees(unpack_state(ps, params), s, "unpack(pack(s))")
    _same_trees(pack_state(unpack_state(ps, params), params), ps, "pack(unpack(ps))")
    # Continuing from the packed state = continuing from the per-leaf one.
    g = _grads(params, 7)
    u, _ = tx.update(g, s, params)
    pu, _ = ptx.update(g, ps, params)
    _same_trees(u, pu, "continued")
    # pickle / deepcopy of the packed state
    again = pickle.loads(pickle.dumps(ps))
    _same_trees(again, ps, "pickle")


def test_state_from_keras2_weights_list() -> None:
    """A get_weights()-style list -> per-leaf state -> packed state, and back to the list."""
    params = [jnp.ones((2, 3)), jnp.ones(3), jnp.ones((3, 1))]
    rng = np.random.default_rng(3)
    slots = [np.abs(rng.standard_normal(np.shape(p))).astype(np.float32) for p in params]
    moms = [rng.standard_normal(np.shape(p)).astype(np.float32) for p in params]
    weights = [np.int64(7), *slots, *moms]
    state = compat.state_from_keras2(weights, params, momentum=True, centered=False)
    ps = pack_state(state, params)
    np.testing.assert_array_equal(
        np.asarray(ps.inner.rms["float32"]), np.concatenate([s.ravel() for s in slots])
    )
    back = unpack_state(ps, params)
    out = [np.asarray(back.count), *map(np.asarray, back.rms), *map(np.asarray, back.momentum)]
    for got, want in zip(out, weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_state_from_torch_continues_identically() -> None:
    params = [jnp.asarray(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)), jnp.ones(2)]
    rng = np.random.default_rng(4)
    sd = {
        "state": {
            i: {
                "step": np.float32(5),
                "square_avg": np.abs(rng.standard_normal(np.shape(p))).astype(np.float32),
                "momentum_buffer": rng.standard_normal(np.shape(p)).astype(np.float32),
            }
            for i, p in enumerate(params)
        },
        "param_groups": [{"params": [0, 1], "momentum": 0.5, "centered": False}],
    }
    state = compat.state_from_torch(sd, params)
    make = lambda: compat.torch(lr=0.01, momentum=0.5, weight_decay=0.01)  # noqa: E731
    tx, ptx = make(), packed(make())
    ps = pack_state(state, params)
    s = state
    for k in range(3):
        g = [jnp.asarray(rng.standard_normal(np.shape(p)).astype(np.float32)) for p in params]
        u, s = tx.update(g, s, params)
        pu, ps = ptx.update(g, ps, params)
        _same_trees(u, pu, f"step {k}")
    assert int(ps.inner.count) == 8


def test_load_keras2_h5_then_packed_matches_keras() -> None:
    """State saved by tf_keras, packed, continued in JAX: Keras's own parameters bit for bit."""
    pytest.importorskip("h5py")
    import json

    with np.load(SAVED / "keras2_mom0.9_centered.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    params = [jnp.asarray(arrays[f"p0_{i}"]) for i in range(4)]
    state = pack_state(compat.load_keras2_h5(SAVED / meta["saved"], params), params)
    c = compat.saved_optimizer_config(SAVED / meta["saved"])["config"]
    ptx = packed(
        jrmsprop.rmsprop(
            c["learning_rate"],
            c["rho"],
            c["momentum"],
            c["epsilon"],
            c["centered"],
            decay=c["decay"],
        )
    )
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*ptx.update(g, s, p))
    )
    for j in range(meta["m"]):
        grads = [jnp.asarray(arrays[f"g_{i}"][j]) for i in range(4)]
        params, state = step(params, state, grads)
        for i, p in enumerate(params):
            np.testing.assert_array_equal(np.asarray(p), arrays[f"p_{i}"][j])
    assert int(state.inner.count) == int(arrays["iterations"])


# ---- bad inputs --------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument() -> None:
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2), "h": jnp.zeros(2, jnp.bfloat16)}
    ptx = packed(jrmsprop.rmsprop(0.1))
    state = ptx.init(params)
    ok = jax.tree.map(jnp.ones_like, params)

    with pytest.raises(TypeError, match="`tx` must be an optax GradientTransformation"):
        packed(jrmsprop.rmsprop)
    with pytest.raises(TypeError, match=r"`updates` at \['b'\] is an IndexedSlices"):
        ptx.update({**ok, "b": jrmsprop.IndexedSlices(jnp.ones((1,)), jnp.array([0]), (2,))}, state)
    with pytest.raises(TypeError, match=r"`updates` at \['a'\] is None"):
        ptx.update({**ok, "a": None}, state)
    with pytest.raises(TypeError, match=r"\['b'\] has dtype bfloat16 but `updates` at \['a'\]"):
        ptx.update({**ok, "b": jnp.ones(2, jnp.bfloat16)}, state)
    with pytest.raises(ValueError, match=r"`updates` at \['a'\] has shape \(4,\)"):
        ptx.update({**ok, "a": jnp.ones(4)}, state)
    with pytest.raises(ValueError, match="`updates` do not have the tree structure"):
        ptx.update({"a": ok["a"]}, state)
    with pytest.raises(ValueError, match=r"`params` at \['h'\] .* dtype float32"):
        ptx.update(ok, state, {**params, "h": jnp.zeros(2)})
    with pytest.raises(TypeError, match="`state` must be the PackedState"):
        ptx.update(ok, jrmsprop.rmsprop(0.1).init(params))
    with pytest.raises(TypeError, match=r"`params` at \['a'\] has dtype int32"):
        ptx.init({"a": jnp.zeros(3, jnp.int32)})
    with pytest.raises(TypeError, match="IndexedSlices"):
        ptx.init({"a": jrmsprop.IndexedSlices(jnp.ones((1,)), jnp.array([0]), (2,))})
    with pytest.raises(TypeError, match="`state` must be a PackedState"):
        unpack_state(jrmsprop.rmsprop(0.1).init(params), params)
    with pytest.raises(ValueError, match="`params` .* do not match the packed state's layout"):
        unpack_state(state, {"a": jnp.zeros(3)})
    with pytest.raises(TypeError, match="holds no jrmsprop RMSpropState"):
        pack_state(optax.rmsprop(0.1).init(params), params)
    with pytest.raises(TypeError, match="already a PackedState"):
        pack_state(state, params)
    wrong = jrmsprop.rmsprop(0.1).init({"a": jnp.zeros(4), "b": jnp.zeros(2), "h": params["h"]})
    with pytest.raises(ValueError, match=r"`state.rms` at \['a'\] has shape \(4,\)"):
        pack_state(wrong, params)
    bad_offsets = PackedState(state.inner, state.offsets[:1], state.layout)
    with pytest.raises(ValueError, match="`state.offsets` must hold 3 integer scalars"):
        ptx.update(ok, bad_offsets)
    # a failed call changes nothing: the state still works
    u, _ = ptx.update(ok, state)
    assert u["a"].shape == (3,)


# ---- flax nnx.Optimizer: init on nnx.Param-wrapped leaves, update on bare arrays ----------------


def _as_pure(nnx, tree):
    """``nnx.as_pure`` where flax has it (else spelled out): every nnx Variable replaced by its
    value."""
    if hasattr(nnx, "as_pure"):
        return nnx.as_pure(tree)
    variable = (nnx.Variable, getattr(nnx, "VariableState", nnx.Variable))
    return jax.tree.map(
        lambda v: v.value if isinstance(v, variable) else v,
        tree,
        is_leaf=lambda v: isinstance(v, variable),
    )


def test_nnx_optimizer_training_is_bit_identical_to_plain_rmsprop() -> None:
    nnx = pytest.importorskip("flax.nnx")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 3), dtype=np.float32))
    y = jnp.asarray(np.random.default_rng(2).standard_normal((8, 2), dtype=np.float32))

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    def train(tx, jit: bool) -> list:
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

        def step(model, opt):
            opt.update(model, nnx.grad(loss)(model))

        step = nnx.jit(step) if jit else step
        for _ in range(4):
            step(model, opt)
        return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))], opt

    for jit in (False, True):
        plain, _ = train(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True), jit)
        got, opt = train(packed(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)), jit)
        for a, b in zip(plain, got, strict=True):
            _same_bits(a, b, f"nnx params (jit={jit})")
        assert int(_as_pure(nnx, opt.opt_state).inner.count) == 4


def test_wrapper_nodes_are_matched_but_other_mismatches_refused() -> None:
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    wrapped = nnx.state(model, nnx.Param)
    bare = _as_pure(nnx, wrapped)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), bare)
    tx, ptx = jrmsprop.rmsprop(0.1, momentum=0.5), packed(jrmsprop.rmsprop(0.1, momentum=0.5))
    want, s = tx.update(grads, tx.init(bare), bare)
    state = ptx.init(wrapped)
    # bare grads and params against the wrapped layout: the updates have the grads' structure
    got, pstate = ptx.update(grads, state, bare)
    assert jax.tree.structure(got) == jax.tree.structure(grads)
    _same_trees(want, got, "updates")
    _same_trees(s, unpack_state(pstate, bare), "state (bare params)")
    # wrapped grads give wrapped updates
    wrapped_grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), wrapped)
    got_wrapped, _ = ptx.update(wrapped_grads, state, wrapped)
    assert jax.tree.structure(got_wrapped) == jax.tree.structure(wrapped_grads)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got_wrapped), strict=True):
        _same_bits(a, b, "wrapped updates")
    # genuinely different trees are still refused, whatever their shapes
    state = ptx.init({"a": jnp.zeros(2), "b": jnp.zeros(2)})
    with pytest.raises(ValueError, match="`updates` do not have the tree structure"):
        ptx.update({"b": jnp.ones(2), "c": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match="`updates` do not have the tree structure"):
        ptx.update([jnp.ones(2), jnp.ones(2)], state)
    state = ptx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="`updates` do not have the tree structure"):
        ptx.update([jnp.ones(2)], state)


# ---- flax.serialization ------------------------------------------------------------------------


def test_flax_serialization_round_trip_continues_bit_identically() -> None:
    serialization = pytest.importorskip("flax.serialization")
    params = _params()
    ptx = packed(jrmsprop.rmsprop(0.01, momentum=0.9, centered=True))
    state = ptx.init(params)
    for k in range(2):
        _, state = ptx.update(_grads(params, k), state, params)
    as_dict = serialization.to_state_dict(state)
    assert set(as_dict) == {"inner"} and set(as_dict["inner"]["rms"]) == {"bfloat16", "float32"}
    restored = serialization.from_bytes(ptx.init(params), serialization.to_bytes(state))
    assert isinstance(restored, PackedState) and restored.layout == state.layout
    _same_trees(state, restored, "restored state")
    want, _ = ptx.update(_grads(params, 5), state, params)
    got, _ = ptx.update(_grads(params, 5), restored, params)
    _same_trees(want, got, "updates after restoring")


def test_flax_imported_after_jrmsprop_still_registers() -> None:
    pytest.importorskip("flax")
    import subprocess
    import sys

    code = (
        "import jax.numpy as jnp, jrmsprop\n"
        "import flax.serialization as s\n"
        "tx = jrmsprop.packed(jrmsprop.rmsprop(0.1))\n"
        "state = tx.init({'a': jnp.ones(2)})\n"
        "print(sorted(s.to_state_dict(state)['inner']['rms']))\n"
        "print(type(s.from_bytes(state, s.to_bytes(state))).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["['float32']", "PackedState"], out.stderr


def test_unpack_state_names_the_first_differing_leaf() -> None:
    """A mismatch names the leaf (path) and both shapes/dtypes, not two alike layouts."""
    tx = packed(jrmsprop.rmsprop(0.1))
    p1 = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    state = tx.init(p1)
    cases = [
        (
            {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)},
            r"the leaf at \['w'\] is float32\[3, 2\] in `params` but float32\[2, 3\] in the "
            r"packed state",
        ),
        (
            {"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)},
            r"the leaf at \['b'\] is bfloat16\[3\] in `params` but float32\[3\] in the packed",
        ),
        (
            {"w": jnp.ones((2, 3)), "c": jnp.zeros(3)},
            r"the leaf at \['c'\] is in `params` but not in the packed state; the leaf at "
            r"\['b'\] is in the packed state but not in `params`",
        ),
    ]
    for p2, words in cases:
        with pytest.raises(ValueError, match=r"^unpack_state: `params` .*" + words):
            unpack_state(state, p2)
    listed = tx.init([jnp.ones(2), jnp.ones(3)])
    with pytest.raises(ValueError, match=r"the tree structures differ: PyTreeDef\(\(\*, \*\)\)"):
        unpack_state(listed, (jnp.ones(2), jnp.ones(3)))
    many = tx.init([jnp.ones(i + 1) for i in range(6)])
    with pytest.raises(ValueError, match=r"the leaf at \[5\] is float32\[7\] in `params` but"):
        unpack_state(many, [jnp.ones(i + 1) for i in range(5)] + [jnp.ones(7)])
    assert unpack_state(state, p1).rms["w"].shape == (2, 3)  # nothing changed


def test_layout_repr_tells_different_layouts_apart() -> None:
    """JAX prints the layouts of two mismatched trees: different layouts never print alike."""
    a = PackedLayout.of({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    b = PackedLayout.of({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)})
    assert repr(a) != repr(b)
    assert "['w'] float32[2, 3]" in repr(a) and "['w'] float32[3, 2]" in repr(b)
    listed = PackedLayout.of([jnp.ones(2), jnp.ones(3)])
    assert repr(listed) != repr(PackedLayout.of((jnp.ones(2), jnp.ones(3))))
    big = [PackedLayout.of([jnp.ones(i + 1) for i in range(5)] + [jnp.ones(n)]) for n in (6, 7)]
    assert repr(big[0]) != repr(big[1]) and "leaves -> float32[21]; #" in repr(big[0])
    same = pickle.loads(pickle.dumps(a))
    assert same == a and repr(same) == repr(a) and same.digest() == a.digest()
