"""Packed parameters (``jrmsprop.pack`` / ``jrmsprop.unpack`` / ``PackedTree``).

A training run over packed parameters -- gradients taken through ``PackedTree.unpack`` inside
the loss, the optimizer stepping the flat buffers -- must give the parameters, updates and
slots of the per-leaf run bit for bit, for every preset and option, in every calling style
(jitted, eager, ``inject_hyperparams``, ``MultiSteps``, abstract shapes). States convert both
ways (``unpack`` and ``pack(..., like=...)``), also from the ``jrmsprop.compat`` loaders.
"""

from __future__ import annotations

import pickle
import re

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop import compat
from jrmsprop._src.packed import PackedLayout
from jrmsprop._src.packed_tree import PackedTree, pack, unpack
from tests.numpy_reference import Reference, assert_same_trajectory, run
from tests.test_packed import CASES, _params, _same_bits, _same_trees


def _coefficients(params) -> dict:
    rng = np.random.default_rng(7)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape) * 0.5, p.dtype), params)


def _loss(tree, coefficients, step):
    """A loss whose per-leaf gradient is ``c * (cos(p) + step)``: different on every step."""
    terms = jax.tree.map(
        lambda p, c: jnp.sum(
            (c * (jnp.sin(p) + jnp.asarray(step, p.dtype) * p)).astype(jnp.float32)
        ),
        tree,
        coefficients,
    )
    return sum(jax.tree.leaves(terms), jnp.float32(0))


def _run_both(make_tx, params, steps: int = 4, jit: bool = True):
    """Per-leaf and packed parameters side by side; every update, parameter and slot compared.

    The packed run takes its gradients through ``PackedTree.unpack`` inside the loss; the
    per-leaf run is given the same gradients, unpacked, so any difference is the optimizer's.
    (Gradient and step are separate programs: inside one program XLA may keep a low-precision
    gradient in float32 where it is fused with its consumer, differently per fusion.)
    """
    tx = make_tx()
    coefficients = _coefficients(params)
    maybe_jit = jax.jit if jit else (lambda f: f)
    per_leaf_grad = maybe_jit(jax.grad(lambda p, k: _loss(p, coefficients, k)))
    packed_grad = maybe_jit(jax.grad(lambda q, k: _loss(q.unpack(), coefficients, k)))

    @maybe_jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), u, s

    p, s = params, tx.init(params)
    pp = pack(params)
    ps = tx.init(pp)
    for k in range(steps):
        pg = packed_grad(pp, jnp.float32(k))
        assert isinstance(pg, PackedTree)
        g = unpack(pg)
        chex.assert_trees_all_close(g, per_leaf_grad(p, jnp.float32(k)), rtol=1e-6, atol=0)
        p, u, s = step(p, s, g)
        pp, pu, ps = step(pp, ps, pg)
        assert isinstance(pu, PackedTree) and isinstance(pp, PackedTree)
        _same_trees(u, unpack(pu), f"updates step {k}")
        _same_trees(p, pp.unpack(), f"params step {k}")
    _same_trees(s, unpack(ps), "state")
    return p, s, pp, ps


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_bit_identical_to_per_leaf(name: str) -> None:
    _run_both(CASES[name], _params())


def test_eager_bit_identical_to_per_leaf() -> None:
    _run_both(CASES["keras2_momentum_centered_decay"], _params(), steps=2, jit=False)


def test_whole_training_step_in_one_program_float32() -> None:
    """Gradient, update and apply in one jitted step: per-leaf and packed agree bit for bit."""
    params = _params(bf16=False)
    coefficients = _coefficients(params)
    tx = compat.keras3(0.01, momentum=0.9, centered=True, weight_decay=0.01)

    def make_step(to_tree):
        @jax.jit
        def step(p, s, k):
            g = jax.grad(lambda q: _loss(to_tree(q), coefficients, k))(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        return step

    step, packed_step = make_step(lambda q: q), make_step(lambda q: q.unpack())
    p, s = params, tx.init(params)
    pp = pack(params)
    ps = tx.init(pp)
    for k in range(3):
        p, s = step(p, s, jnp.float32(k))
        pp, ps = packed_step(pp, ps, jnp.float32(k))
        _same_trees(p, pp.unpack(), f"params step {k}")
    _same_trees(s, unpack(ps), "state")


def test_matches_the_numpy_reference() -> None:
    """An anchor independent of jrmsprop: Keras 2 with momentum, centered, float32, bit for bit."""
    params = _params(bf16=False)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    pp = pack(params)
    state = tx.init(pp)
    rng = np.random.default_rng(3)
    grads, trajectory = [], []
    for _ in range(3):
        g = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), params)
        u, state = jax.jit(tx.update)(pack(g), state, pp)
        pp = optax.apply_updates(pp, u)
        grads.append(jax.tree.leaves(g))
        trajectory.append(jax.tree.leaves(pp.unpack()))
    ref = Reference("keras2", learning_rate=0.01, momentum=0.9, centered=True)
    assert_same_trajectory(trajectory, run(ref, jax.tree.leaves(params), grads))


@pytest.mark.slow
def test_mixed_float64_bfloat16_float32(x64) -> None:
    rng = np.random.default_rng(1)
    params = {
        "f64": jnp.asarray(rng.standard_normal((2, 3))),
        "f32": jnp.asarray(rng.standard_normal(4), jnp.float32),
        "bf16": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        "f64_b": jnp.asarray(rng.standard_normal(1)),
    }
    _, _, _, ps = _run_both(lambda: jrmsprop.rmsprop(0.01, momentum=0.9, centered=True), params)
    assert sorted(ps.rms.buffers) == ["bfloat16", "float32", "float64"]
    assert ps.rms.buffers["float64"].shape == (7,)


def test_layout_groups_and_buffers() -> None:
    params = {"a": jnp.zeros((2, 3)), "b": jnp.ones(4, jnp.bfloat16), "c": jnp.arange(5.0)}
    pp = pack(params)
    assert pp.layout == PackedLayout.of(params)
    assert jax.tree.leaves(pp)[0].dtype == jnp.bfloat16  # groups in sorted dtype-name order
    assert {k: v.shape for k, v in pp.buffers.items()} == {"bfloat16": (4,), "float32": (11,)}
    np.testing.assert_array_equal(pp.buffers["float32"], np.r_[np.zeros(6), np.arange(5.0)])
    _same_trees(pp.unpack(), params, "round trip")
    _same_trees(unpack(pp), params, "round trip")
    assert [str(k) for k, _ in jax.tree_util.tree_leaves_with_path(pp)] == [
        "(DictKey(key='bfloat16'),)",
        "(DictKey(key='float32'),)",
    ]
    assert repr(pp) == "PackedTree(3 leaves; bfloat16: bfloat16[4], float32: float32[11])"
    again = pickle.loads(pickle.dumps(jax.device_get(pp)))
    assert again.layout == pp.layout
    _same_trees(again.unpack(), params, "pickled")


def test_scalar_root_single_leaf_and_empty_leaves() -> None:
    for params in (jnp.float32(2.0), jnp.ones((3, 2)), [jnp.zeros((0, 2)), jnp.ones(2)], {}):
        _run_both(lambda: jrmsprop.rmsprop(0.1, momentum=0.5), params, steps=2)


def test_float16_parameters_get_float32_slots_in_their_own_buffer() -> None:
    params = {"h": jnp.ones(3, jnp.float16), "f": jnp.ones(2)}
    pp = pack(params)
    state = jrmsprop.rmsprop(0.1).init(pp)
    assert state.rms.buffers["float16"].dtype == jnp.float32
    _run_both(lambda: jrmsprop.rmsprop(0.1), params, steps=2)


# ---- gradients through unpack ------------------------------------------------------------------


def _primitives(jaxpr) -> list[tuple[str, int]]:
    """(primitive name, number of inputs) of every equation, sub-jaxprs (branches) included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append((eqn.primitive.name, len(eqn.invars)))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    out += _primitives(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    out += _primitives(sub)
    return out


def test_gradient_is_one_concatenation_per_dtype() -> None:
    params = [jnp.ones(4) for _ in range(20)] + [jnp.ones(3, jnp.bfloat16) for _ in range(5)]
    pp = pack(params)
    loss = lambda q: sum(jnp.sum(jnp.sin(x).astype(jnp.float32)) for x in q.unpack())  # noqa: E731
    primitives = _primitives(jax.make_jaxpr(jax.grad(loss))(pp).jaxpr)
    # Each branch of the (platform-dependent) cut transposes to one concatenation per dtype:
    # no cotangent is padded to the buffer's size and summed.
    assert {n for name, n in primitives if name == "concatenate"} == {5, 20}
    assert not {"pad", "dynamic_update_slice", "add_any"} & {name for name, _ in primitives}
    g = jax.grad(loss)(pp)
    _same_trees(unpack(g), jax.grad(lambda t: loss(pack(t)))(params), "grad")


def test_forward_mode_and_hessian_vector_products() -> None:
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, 0.2])}
    pp = pack(params)
    loss = lambda t: jnp.sum(jnp.tanh(t["w"] @ t["b"]) ** 2)  # noqa: E731
    tangent = pack(jax.tree.map(jnp.ones_like, params))
    out, dout = jax.jvp(lambda q: loss(q.unpack()), (pp,), (tangent,))
    ref_out, ref_dout = jax.jvp(loss, (params,), (tangent.unpack(),))
    _same_bits(out, ref_out, "jvp out")
    np.testing.assert_allclose(dout, ref_dout, rtol=1e-6)
    hvp = jax.jvp(jax.grad(lambda q: loss(q.unpack())), (pp,), (tangent,))[1]
    ref_hvp = jax.jvp(jax.grad(loss), (params,), (tangent.unpack(),))[1]
    chex.assert_trees_all_close(unpack(hvp), ref_hvp, rtol=1e-5)


def test_unpack_under_vmap() -> None:
    pp = pack({"a": jnp.ones(2), "b": jnp.ones((2, 2))})
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x, 3 * x]), pp)
    out = jax.vmap(lambda q: q.unpack()["b"].sum())(batch)
    np.testing.assert_array_equal(out, [4.0, 8.0, 12.0])


# ---- calling styles ----------------------------------------------------------------------------


def test_no_retrace_on_later_steps_and_one_update_per_dtype() -> None:
    params = [jnp.ones(8) for _ in range(48)] + [jnp.ones(4, jnp.bfloat16) for _ in range(16)]
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    pp = pack(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    s = tx.init(pp)
    for _ in range(3):
        pp, s = step(pp, s, pp)
    text = jax.jit(step.__wrapped__).lower(pp, s, pp).compile().as_text()
    assert len(re.findall(r"= \S+ sqrt\(", text)) == 2


def test_inject_hyperparams_matches_and_changes_take_effect() -> None:
    # (optax's inject_hyperparams finds one dtype for all parameters: no mixed dtypes here.)
    params = _params(bf16=False)
    make = lambda: optax.inject_hyperparams(jrmsprop.rmsprop)(  # noqa: E731
        learning_rate=0.01, rho=0.8, momentum=0.9, centered=True
    )
    p, s, pp, ps = _run_both(make, params, steps=2)
    assert isinstance(ps.inner_state.rms, PackedTree)
    ps.hyperparams["learning_rate"] = jnp.asarray(0.05)
    s.hyperparams["learning_rate"] = jnp.asarray(0.05)
    g = jax.tree.map(jnp.ones_like, params)
    u, _ = make().update(g, s, p)
    pu, _ = make().update(pack(g), ps, pp)
    _same_trees(u, unpack(pu), "after the change")


def test_multisteps_and_chain() -> None:
    make = lambda: optax.MultiSteps(  # noqa: E731
        optax.chain(optax.clip_by_global_norm(1.0), compat.torch(lr=0.01, momentum=0.9)), 2
    )
    with jax.numpy_dtype_promotion("standard"):  # optax's MultiSteps divides by an int32 count
        _run_both(make, _params(bf16=False), steps=4)


def test_state_stable_under_lax_cond() -> None:
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    pp = pack(_params())
    s = tx.init(pp)
    u, s1 = tx.update(pp, s, pp)
    out = jax.jit(lambda c: jax.lax.cond(c, lambda: s1, lambda: s))(True)
    assert jax.tree.structure(out) == jax.tree.structure(s1)


def test_shape_dtype_struct_params() -> None:
    params = _params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    pa = pack(abstract)
    assert all(isinstance(b, jax.ShapeDtypeStruct) for b in jax.tree.leaves(pa))
    assert pa.layout == pack(params).layout
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    state_shape = jax.eval_shape(tx.init, pa)
    assert jax.tree.structure(state_shape) == jax.tree.structure(tx.init(pack(params)))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), unpack(pa)) == jax.tree.map(
        lambda x: (x.shape, x.dtype), params
    )
    like = pack(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params), like=pa)
    assert like.buffers["bfloat16"].dtype == jnp.float32


def test_pack_inside_jit_and_on_numpy_and_python_numbers() -> None:
    params = {"a": np.ones(3, np.float32), "b": 2.0}
    pp = pack(params)
    assert pp.buffers["float32"].shape == (4,)
    jitted = jax.jit(lambda t: pack(t))(jax.tree.map(jnp.asarray, params))
    _same_trees(jitted, pp, "inside jit")


# ---- state conversion --------------------------------------------------------------------------


def test_state_round_trips_through_unpack_and_pack_like() -> None:
    params = _params()
    make = CASES["keras2_momentum_centered_decay"]
    p, s, pp, ps = _run_both(make, params, steps=3)
    repacked = pack(s, like=pp)
    _same_trees(repacked, ps, "pack(per-leaf state)")
    _same_trees(unpack(repacked), s, "unpack(pack(state))")
    # Continuing from the converted state is the same as continuing the packed run.
    g = pack(jax.tree.map(jnp.ones_like, params))
    u1, _ = make().update(g, repacked, pp)
    u2, _ = make().update(g, ps, pp)
    _same_trees(u1, u2, "continued")


def test_state_from_keras2_weights_then_packed_continues_like_per_leaf() -> None:
    params = {"w": jnp.asarray([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.asarray([0.5, -0.5])}
    # Keras 2 order: iterations, then every rms, then every momentum (leaf order: b, w).
    weights = [
        np.int64(5),
        np.full(2, 0.2, np.float32),
        np.full((2, 2), 0.3, np.float32),
        np.full(2, -0.01, np.float32),
        np.full((2, 2), 0.01, np.float32),
    ]
    state = compat.state_from_keras2(weights, params, momentum=True, centered=False)
    pp = pack(params)
    ps = pack(state, like=pp)
    assert isinstance(ps.rms, PackedTree) and isinstance(ps.momentum, PackedTree)
    np.testing.assert_array_equal(
        ps.rms.buffers["float32"], np.r_[np.full(2, 0.2), np.full(4, 0.3)].astype(np.float32)
    )
    assert int(ps.count) == 5
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    g = {"w": jnp.full((2, 2), 0.5), "b": jnp.asarray([1.0, -1.0])}
    u, s = tx.update(g, state, params)
    pu, ps = tx.update(pack(g), ps, pp)
    _same_trees(u, unpack(pu), "continued from keras weights")
    _same_trees(s, unpack(ps), "state")


# ---- bad inputs --------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument() -> None:
    pp = pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    with pytest.raises(TypeError, match=r"pack: `tree` is already a PackedTree"):
        pack(pp)
    with pytest.raises(TypeError, match=r"pack: `tree` contains a PackedTree"):
        pack({"p": pp})
    with pytest.raises(TypeError, match=r"pack: `tree` at \['a'\] has dtype int32"):
        pack({"a": jnp.arange(3)})
    with pytest.raises(TypeError, match=r"pack: `tree` at \['a'\]\[1\] is str 's'; it must be an"):
        jrmsprop.pack({"a": [1.0, "s"]})
    with pytest.raises(TypeError, match=r"packed: `params` at \['b'\] is object <object"):
        jrmsprop.packed(jrmsprop.rmsprop(0.1)).init({"a": jnp.ones(2), "b": object()})
    with pytest.raises(TypeError, match=r"pack: `tree` at \['g'\] is an IndexedSlices"):
        pack({"g": jrmsprop.IndexedSlices(jnp.ones((1, 2)), jnp.asarray([0]), (3, 2))})
    with pytest.raises(TypeError, match=r"pack: `like` must be a PackedTree, got dict"):
        pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, like={"w": 1})
    with pytest.raises(ValueError, match=r"pack: no subtree of `tree` has the structure"):
        pack({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}, like=pp)
    mixed = r"pack: `tree` at \['w'\] has dtype float32 but `tree` at \['b'\] has bfloat16"
    with pytest.raises(TypeError, match=mixed):
        pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)}, like=pp)
    cut = jax.tree.map(lambda x: x[:2], pp)
    with pytest.raises(ValueError, match=r"unpack: `tree`'s float32 buffer has shape \(2,\)"):
        unpack({"params": cut})
    with pytest.raises(ValueError, match=r"PackedTree.unpack: `self`'s float32 buffer"):
        cut.unpack()
    with pytest.raises(TypeError, match=r"unpack: `tree` holds NoneType for its float32 buffer"):
        unpack(PackedTree({"float32": None}, pp.layout))
    tx = jrmsprop.rmsprop(0.1)
    state = tx.init(pp)
    with pytest.raises(ValueError, match=r"rmsprop: `updates` do not have the tree structure"):
        tx.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, state, pp)
    # Nothing was changed by the failed calls.
    _same_trees(pp.unpack(), {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}, "untouched")


# ---- several devices (conftest: 8 simulated CPU devices) ----------------------------------------


def _linear_loss(tree, x, y):
    return jnp.mean((x @ tree["w"] + tree["b"][None, :] - y) ** 2)


def test_pmap_data_parallel_matches_one_device() -> None:
    n = jax.local_device_count()
    assert n >= 2, "conftest sets 8 simulated devices"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n * 4, 3)).astype(np.float32)
    y = rng.standard_normal((n * 4, 2)).astype(np.float32)
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    tx = jrmsprop.rmsprop(0.05, momentum=0.9, centered=True)

    p, s = pack(params), tx.init(pack(params))
    for _ in range(3):
        g = jax.grad(lambda q: _linear_loss(q.unpack(), x, y))(p)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)

    def pstep(p, s, x, y):
        g = jax.lax.pmean(jax.grad(lambda q: _linear_loss(q.unpack(), x, y))(p), "d")
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    pstep = jax.pmap(pstep, axis_name="d")
    replicate = lambda tree: jax.tree.map(lambda a: jnp.stack([a] * n), tree)  # noqa: E731
    pr, sr = replicate(pack(params)), replicate(tx.init(pack(params)))
    assert isinstance(pr, PackedTree) and pr.buffers["float32"].shape == (n, 8)
    for _ in range(3):
        pr, sr = pstep(pr, sr, x.reshape(n, 4, 3), y.reshape(n, 4, 2))
    for i in range(n):
        replica = jax.tree.map(lambda a, i=i: a[i], pr)
        chex.assert_trees_all_close(replica.unpack(), p.unpack(), rtol=2e-6, atol=1e-7)


def test_sharded_jit_buffer_split_over_devices() -> None:
    """The packed buffer itself sharded over the devices (each holds 1/n), state following."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from tests.test_rmsprop import _mesh

    mesh = _mesh()
    n = mesh.shape["data"]
    params = {"w": jnp.linspace(-1.0, 1.0, 6 * n).reshape(3 * n, 2), "b": jnp.ones(2 * n)}
    pp = pack(params)  # 8n elements: divisible by n
    split = NamedSharding(mesh, P("data"))
    sharded = jax.device_put(pp, split)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    state = tx.init(sharded)
    assert state.rms.buffers["float32"].sharding.is_equivalent_to(split, 1)
    x = jnp.ones((4, 3 * n))

    @jax.jit
    def step(p, s):
        loss = lambda q: jnp.sum(jnp.tanh(x @ q.unpack()["w"]) ** 2) + jnp.sum(q.unpack()["b"])  # noqa: E731
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    p1, s1 = step(sharded, state)
    host = jax.device_get(pp)
    p_ref, s_ref = step(host, tx.init(host))
    # The sharded matrix product sums in another order: float32 rounding apart, the same step
    # (each parameter moved by about 0.03 here).
    chex.assert_trees_all_close(p1.unpack(), p_ref.unpack(), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(unpack(s1), unpack(s_ref), rtol=1e-4, atol=1e-6)
    assert not np.allclose(p1.unpack()["w"], params["w"], atol=1e-3)
    assert p1.buffers["float32"].sharding.is_equivalent_to(split, 1)
    assert len(p1.buffers["float32"].addressable_shards[0].data) == 8


def test_flax_serialization_round_trip_of_packed_params_and_state() -> None:
    serialization = pytest.importorskip("flax.serialization")
    params = jrmsprop.pack({"w": jnp.arange(6.0).reshape(2, 3), "h": jnp.ones(2, jnp.bfloat16)})
    tx = jrmsprop.rmsprop(0.1, momentum=0.5)
    state = tx.init(params)
    grads = jax.tree.map(lambda b: jnp.full_like(b, 0.25), params)
    _, state = tx.update(grads, state, params)
    assert serialization.to_state_dict(params).keys() == {"bfloat16", "float32"}
    restored_params = serialization.from_bytes(params, serialization.to_bytes(params))
    restored_state = serialization.from_bytes(tx.init(params), serialization.to_bytes(state))
    assert restored_params.layout == params.layout
    for a, b in zip(
        jax.tree.leaves((params, state)),
        jax.tree.leaves((restored_params, restored_state)),
        strict=True,
    ):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    want, _ = tx.update(grads, state, params)
    got, _ = tx.update(grads, restored_state, restored_params)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_mismatched_packed_trees_name_their_layouts_differently() -> None:
    """``tx.update(pack(P2), tx.init(pack(P1)))``: JAX's "custom node data" mismatch shows the
    two layouts, which must differ in print (the leaf shapes for a few leaves, else a digest)."""
    tx = jrmsprop.rmsprop(0.1)
    p1 = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    p2 = {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}
    with pytest.raises(ValueError) as info:
        tx.update(pack(p2), tx.init(pack(p1)))
    message = str(info.value)
    assert repr(pack(p1).layout) in message and repr(pack(p2).layout) in message
    assert "['w'] float32[2, 3]" in message and "['w'] float32[3, 2]" in message
    many1 = [jnp.ones(i + 1) for i in range(6)]
    many2 = [jnp.ones(i + 1) for i in range(5)] + [jnp.ones(7)]
    with pytest.raises(ValueError) as info:
        tx.update(pack(many2), tx.init(pack(many1)))
    first, second = pack(many1).layout, pack(many2).layout
    assert first.digest() != second.digest()
    assert f"#{first.digest()}" in str(info.value) and f"#{second.digest()}" in str(info.value)


def test_pack_like_names_the_leaf_that_does_not_fit() -> None:
    like = pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    state = jrmsprop.rmsprop(0.1).init({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)})
    with pytest.raises(
        ValueError, match=r"float32\[3, 2\] at \['w'\], where `like` has float32\[2, 3\]"
    ):
        pack(state, like=like)
    ints = {"w": np.ones((2, 3), np.int32), "b": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"has dtype int32 at \['w'\], and only floating-point"):
        pack([ints], like=like)
    with pytest.raises(ValueError, match="no subtree of `tree` has the tree structure of `like`"):
        pack({"x": jnp.ones(2)}, like=like)
