"""Packed parameters (``jrmsprop.pack`` / ``unpack`` / ``PackedTree``) and ``optax.flatten``.

Training over packed parameters gives the per-leaf run's parameters, updates and slots bit for
bit, for every preset and option, whether the gradients come through ``PackedTree.unpack`` in the
loss or are per-leaf gradients packed ``like`` the parameters, in every calling style. States
convert both ways (``unpack``, ``pack(state, like=params)``), also from the ``jrmsprop.compat``
loaders and a tf_keras save file. ``optax.flatten(jrmsprop.rmsprop(...))``, optax's wrapper that
packs the state alone, is bit for bit the per-leaf transformation on a tree of one dtype.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop import compat
from jrmsprop._src.packing import PackedLayout, PackedTree, pack, unpack
from tests.numpy_reference import Reference, assert_same_trajectory, run

SAVED = Path(__file__).resolve().parent / "saved"

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

# How a packed run gets its parameters, gradients and state (beside the per-leaf run):
# "loss": packed parameters, gradients through ``PackedTree.unpack`` in the loss;
# "like": packed parameters, per-leaf gradients packed ``like`` them;
# "flatten": per-leaf parameters and gradients, ``optax.flatten(tx)`` (one dtype only).
# "loss" and "like" share one per-leaf run (and its compilation); "flatten" needs one dtype.
WAYS = {"loss+like": ("loss", "like"), "flatten": ("flatten",)}


def _params(bf16: bool = True) -> dict:
    rng = np.random.default_rng(0)
    tree = {
        "dense": {"w": jnp.asarray(rng.standard_normal((3, 4), dtype=np.float32))},
        "scale": jnp.asarray(np.float32(1.5)),
        "empty": jnp.zeros((0, 3), jnp.float32),
        "layers": [jnp.asarray(rng.standard_normal(2, dtype=np.float32))],
    }
    if bf16:
        tree["emb"] = jnp.asarray(rng.standard_normal((5, 2), dtype=np.float32), jnp.bfloat16)
    return tree


def _grads(params, step: int):
    rng = np.random.default_rng(100 + step)

    def draw(p):
        if jnp.iscomplexobj(p):
            return jnp.asarray(
                rng.standard_normal(p.shape) + 1j * rng.standard_normal(p.shape), p.dtype
            )
        return jnp.asarray(rng.standard_normal(p.shape) * 0.5, p.dtype)

    return jax.tree.map(draw, params)


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


# The gradients, compiled once per tree structure and shared by every transformation.
_GRADS = {
    False: jax.grad(_loss),
    True: jax.grad(lambda q, coefficients, step: _loss(q.unpack(), coefficients, step)),
}
_JIT_GRADS = {packed: jax.jit(grad) for packed, grad in _GRADS.items()}


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


def _flat_slots(state):
    """A per-leaf state with each slot concatenated: the state ``optax.flatten`` keeps."""

    def flat(s):
        if not isinstance(s, jrmsprop.RMSpropState):
            return s
        slots = {k: getattr(s, k) for k in ("rms", "momentum", "mg") if getattr(s, k) is not None}
        return s._replace(
            **{
                k: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(v)])
                for k, v in slots.items()
            }
        )

    return jax.tree.map(flat, state, is_leaf=lambda s: isinstance(s, jrmsprop.RMSpropState))


def _run_both(make_tx, params, steps=3, ways=("loss",), jit=True, grads=_grads, zero_sign=True):
    """A per-leaf run and packed runs (one per way in ``ways``, see ``WAYS``) side by side: every
    update and parameter compared on every step, the states at the end. The per-leaf run is given
    the packed runs' gradients, so any difference is the optimizer's. (Gradient and step are
    separate programs: inside one, XLA may keep a low-precision gradient in float32 where it
    fuses it.) With ``zero_sign=False`` an update of -0.0 counts as +0.0. Returns the per-leaf
    parameters and state and the packed ones of the first way."""
    tx = make_tx()
    coefficients = jax.tree.map(
        lambda p: jnp.asarray(np.random.default_rng(7).standard_normal(p.shape) * 0.5, p.dtype),
        params,
    )
    maybe_jit = jax.jit if jit else (lambda f: f)
    grad = _JIT_GRADS if jit else _GRADS

    def stepper(t):
        @maybe_jit
        def step(p, s, g):
            u, s = t.update(g, s, p)
            return optax.apply_updates(p, u), u, s

        return step

    step = stepper(tx)  # one function for the per-leaf and the packed runs of ``tx``
    runs = {}
    for way in ways:
        ptx = optax.flatten(make_tx()) if way == "flatten" else tx
        pp = params if way == "flatten" else pack(params)
        runs[way] = [stepper(ptx) if way == "flatten" else step, pp, ptx.init(pp)]
    p, s = params, tx.init(params)
    same_zero = (lambda t: t) if zero_sign else (lambda t: jax.tree.map(lambda x: x + 0, t))
    for k in range(steps):
        if "loss" in runs:
            loss_grad = grad[True](runs["loss"][1], coefficients, jnp.float32(k))
            assert isinstance(loss_grad, PackedTree)
            g = unpack(loss_grad)
            want = grad[False](p, coefficients, jnp.float32(k))
            chex.assert_trees_all_close(g, want, rtol=1e-6, atol=0)
        else:
            g = grads(params, k)
        p, u, s = step(p, s, g)
        for way, packed in runs.items():
            pstep, pp, ps = packed
            pg = loss_grad if way == "loss" else pack(g, like=pp) if way == "like" else g
            pp, pu, ps = pstep(pp, ps, pg)
            packed[1:] = pp, ps
            tree = (lambda x: x) if way == "flatten" else unpack
            if way != "flatten":
                assert isinstance(pu, PackedTree) and isinstance(pp, PackedTree)
            _same_trees(same_zero(u), same_zero(tree(pu)), f"{way}: updates step {k}")
            _same_trees(p, tree(pp), f"{way}: params step {k}")
    for way, (_, _, ps) in runs.items():
        _same_trees(_flat_slots(s) if way == "flatten" else s, unpack(ps), f"{way}: state")
    return p, s, *runs[ways[0]][1:]


@pytest.mark.parametrize("ways", list(WAYS))
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_training_bit_identical_to_per_leaf(name: str, ways: str) -> None:
    params = _params(bf16=ways != "flatten")  # optax.flatten casts every leaf to one dtype
    p, _, _, ps = _run_both(CASES[name], params, ways=WAYS[ways])
    assert not np.array_equal(np.asarray(p["dense"]["w"]), np.asarray(params["dense"]["w"]))
    if ways == "flatten":
        assert ps.rms.shape == (12 + 1 + 0 + 2,)
        return
    assert sorted(ps.rms.buffers) == ["bfloat16", "float32"]
    assert ps.rms.buffers["float32"].shape == (12 + 1 + 0 + 2,)
    assert ps.rms.buffers["bfloat16"].shape == (10,)
    assert ps.rms.buffers["bfloat16"].dtype == jnp.bfloat16


@pytest.mark.parametrize("ways", list(WAYS))
@pytest.mark.slow
def test_eager_bit_identical_to_per_leaf(ways: str) -> None:
    params = {k: v for k, v in _params(bf16=ways != "flatten").items() if k in ("dense", "emb")}
    _run_both(CASES["keras2_momentum_centered_decay"], params, 2, WAYS[ways], jit=False)


@pytest.mark.parametrize("way", ["pack", "optax.flatten"])
def test_matches_the_numpy_reference(way: str) -> None:
    """An anchor independent of jrmsprop: Keras 2 with momentum, centered, float32, bit for bit."""
    params = _params(bf16=False)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    to, back = (pack, unpack) if way == "pack" else ((lambda t: t), (lambda t: t))
    if way == "optax.flatten":
        tx = optax.flatten(tx)
    p = to(params)
    state = tx.init(p)
    grads, trajectory = [], []
    for k in range(3):
        g = _grads(params, k)
        u, state = jax.jit(tx.update)(to(g), state, p)
        p = optax.apply_updates(p, u)
        grads.append(jax.tree.leaves(g))
        trajectory.append(jax.tree.leaves(back(p)))
    ref = Reference("keras2", learning_rate=0.01, momentum=0.9, centered=True)
    assert_same_trajectory(trajectory, run(ref, jax.tree.leaves(params), grads))


@pytest.mark.slow
@pytest.mark.parametrize("complex_leaf", [False, True])
def test_mixed_float64_bfloat16_float32_and_complex(x64, complex_leaf: bool) -> None:
    rng = np.random.default_rng(1)
    params = {
        "f64": jnp.asarray(rng.standard_normal((2, 3))),
        "f32": jnp.asarray(rng.standard_normal(4), jnp.float32),
        "bf16": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        "f64_b": jnp.asarray(rng.standard_normal(1)),
    }
    groups = ["bfloat16", "float32", "float64"]
    if complex_leaf:  # (the test loss is real: complex gradients are given, packed like params)
        params["c64"] = jnp.asarray(rng.standard_normal(3) + 1j * rng.standard_normal(3))
        params["c64"] = params["c64"].astype(jnp.complex64)
        groups.insert(1, "complex64")
    for make in (
        lambda: jrmsprop.rmsprop(0.01, momentum=0.9, centered=True),
        lambda: compat.torch(lr=0.01, momentum=0.5, weight_decay=0.1, centered=True),
    ):
        _, _, _, ps = _run_both(make, params, ways=("like",) if complex_leaf else ("loss",))
        assert sorted(ps.rms.buffers) == groups
        assert ps.rms.buffers["float64"].shape == (7,)
        assert ps.rms.buffers["float64"].dtype == jnp.float64


SMALL_TREES = {
    "scalar root": lambda: jnp.float32(2.0),
    "one leaf": lambda: jnp.ones((3, 2)),
    "empty leaf": lambda: [jnp.zeros((0, 2)), jnp.ones(2)],
    "empty dict": lambda: {},
    "empty list": lambda: [],
    "empty tuple": lambda: (),
}


@pytest.mark.parametrize("tree", list(SMALL_TREES))
@pytest.mark.slow
def test_scalar_root_single_leaf_and_empty_trees(tree: str) -> None:
    params = SMALL_TREES[tree]()
    _, s, _, ps = _run_both(
        lambda: jrmsprop.rmsprop(0.1, momentum=0.5), params, 2, WAYS["loss+like"]
    )
    assert int(ps.count) == 2
    _same_trees(unpack(ps), s, "state")


def test_python_number_parameter() -> None:
    tx = jrmsprop.rmsprop(0.1)
    params = pack(1.0)
    u, _ = tx.update(pack(2.0), tx.init(params), params)
    want, _ = tx.update(2.0, tx.init(1.0))
    _same_bits(u.unpack(), want, "update")
    np.testing.assert_allclose(np.asarray(want), -0.1 * 2 / (np.sqrt(0.1 * 4) + 1e-7), rtol=1e-6)


@pytest.mark.slow
def test_float16_parameters_get_float32_slots_in_their_own_buffer() -> None:
    params = {"h": jnp.ones(3, jnp.float16), "f": jnp.ones(2), "h2": jnp.full(2, 2.0, jnp.float16)}
    _, s, _, ps = _run_both(lambda: jrmsprop.rmsprop(0.01, momentum=0.9), params, steps=2)
    assert {k: v.dtype for k, v in ps.rms.buffers.items()} == {
        "float16": jnp.float32,
        "float32": jnp.float32,
    }
    assert ps.rms.buffers["float16"].shape == (5,)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s.rms))


def test_layout_buffers_repr_and_pickle() -> None:
    params = {"a": jnp.zeros((2, 3)), "b": jnp.ones(4, jnp.bfloat16), "c": jnp.arange(5.0)}
    layout = PackedLayout.of(params)
    assert (layout.groups, layout.sizes) == (("bfloat16", "float32"), (4, 11))
    assert layout.leaves == ((1, 0, (2, 3)), (0, 0, (4,)), (1, 6, (5,)))
    assert layout == PackedLayout.of(jax.tree.map(lambda x: x + 1, params))
    assert hash(layout) == hash(PackedLayout.of(params))
    assert layout != PackedLayout.of({**params, "a": jnp.zeros((3, 2))})
    pp = pack(params)
    assert pp.layout == layout
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
    assert again.layout == pp.layout and again.layout is not pp.layout
    assert repr(again.layout) == repr(layout) and again.layout.digest() == layout.digest()
    _same_trees(again.unpack(), params, "pickled")


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


def test_mismatched_packed_trees_name_their_layouts_differently() -> None:
    """``tx.update(pack(P2), tx.init(pack(P1)))``: JAX's "custom node data" mismatch shows the
    two layouts, which differ in print (the leaf shapes for a few leaves, else a digest)."""
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
    params = [jnp.ones(4) for _ in range(6)] + [jnp.ones(3, jnp.bfloat16) for _ in range(3)]
    pp = pack(params)
    loss = lambda q: sum(jnp.sum(jnp.sin(x).astype(jnp.float32)) for x in q.unpack())
    primitives = _primitives(jax.make_jaxpr(jax.grad(loss))(pp).jaxpr)
    # Each branch of the (platform-dependent) cut transposes to one concatenation per dtype:
    # no cotangent is padded to the buffer's size and summed.
    assert {n for name, n in primitives if name == "concatenate"} == {3, 6}
    assert not {"pad", "dynamic_update_slice", "add_any"} & {name for name, _ in primitives}
    _same_trees(unpack(jax.grad(loss)(pp)), jax.grad(lambda t: loss(pack(t)))(params), "grad")


def test_forward_mode_and_hessian_vector_products() -> None:
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, 0.2])}
    pp = pack(params)
    loss = lambda t: jnp.sum(jnp.tanh(t["w"] @ t["b"]) ** 2)
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


def test_one_update_per_dtype_no_retrace_and_pickled_layouts_hit_the_cache() -> None:
    """16 leaves: 16 square roots per-leaf, one per dtype packed, in the optimized program."""
    params = [jnp.ones(8) for _ in range(12)] + [jnp.ones(4, jnp.bfloat16) for _ in range(4)]
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for tree, sqrts in ((params, 16), (pack(params), 2)):
        text = jax.jit(step).lower(tree, tx.init(tree), tree).compile().as_text()
        assert len(re.findall(r"= \S+ sqrt\(", text)) == sqrts
    traced = jax.jit(chex.assert_max_traces(n=1)(step))
    pp = pack(params)
    s = tx.init(pp)
    for _ in range(3):
        pp, s = traced(pp, s, pp)
    # A state that went through pickle (an equal, not identical, layout) hits the same cache.
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.rms.layout == s.rms.layout and s2.rms.layout is not s.rms.layout
    traced(pp, s2, pp)


@pytest.mark.slow
def test_inject_hyperparams_matches_and_changes_take_effect() -> None:
    params = _params(bf16=False)  # inject_hyperparams finds one dtype for all parameters
    make = lambda: optax.inject_hyperparams(jrmsprop.rmsprop)(
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


def _nan_at_step_1(params, k):
    g = _grads(params, k)
    if k == 1:
        g["scale"] = jnp.asarray(np.float32(np.nan))
    return g


# name: (make_tx, bfloat16 leaves, way, gradients, check of the packed state after 4 steps).
# optax.MultiSteps multiplies the updates by its 0/1 `emit` flag, and XLA simplifies that product
# differently for a scalar leaf and for a buffer: a skipped step's zeros may differ in sign (only
# those; the parameters and the state do not).
WRAPPERS = {
    "chain_inside": (
        lambda: optax.chain(jrmsprop.rmsprop(0.01), optax.scale(0.5)),
        True,
        "like",
        _grads,
        lambda ps: int(ps[0].count) == 4,
    ),
    "multisteps": (
        lambda: optax.MultiSteps(jrmsprop.rmsprop(0.01, momentum=0.9), every_k_schedule=2),
        True,
        "like",
        _grads,
        lambda ps: int(ps.inner_opt_state.count) == 2,
    ),
    "multisteps_chain_clip": (
        lambda: optax.MultiSteps(
            optax.chain(optax.clip_by_global_norm(1.0), compat.torch(lr=0.01, momentum=0.9)), 2
        ),
        False,  # optax's global norm adds the float32 and bfloat16 norms
        "loss",
        _grads,
        lambda ps: int(ps.inner_opt_state[1].count) == 2,
    ),
    "apply_if_finite": (
        lambda: optax.apply_if_finite(jrmsprop.rmsprop(0.01, momentum=0.9), 3),
        False,
        "like",
        _nan_at_step_1,
        lambda ps: int(ps.notfinite_count) == 0 and int(ps.total_notfinite) == 1,
    ),
}


@pytest.mark.parametrize("name", list(WRAPPERS))
@pytest.mark.slow
def test_optax_wrappers_bit_identical(name: str) -> None:
    make, bf16, way, grads, check = WRAPPERS[name]
    # optax's MultiSteps divides by an int32 count
    multisteps = name.startswith("multisteps")
    with jax.numpy_dtype_promotion("standard" if multisteps else "strict"):
        _, _, _, ps = _run_both(
            make, _params(bf16), 4, (way,), grads=grads, zero_sign=not multisteps
        )
    assert check(ps)


def test_global_norm_clipping_on_packed_gradients() -> None:
    """A reduction over leaves (the global norm) sums in another order on one buffer: the same
    clipped step to float32 rounding of the norm."""
    params = _params(bf16=False)
    tx = optax.chain(optax.clip_by_global_norm(0.5), jrmsprop.rmsprop(0.01, momentum=0.9))
    pp = pack(params)
    s, ps = tx.init(params), tx.init(pp)
    for k in range(3):
        g = jax.tree.map(lambda x: x * 10, _grads(params, k))  # clipped
        u, s = jax.jit(tx.update)(g, s, params)
        pu, ps = jax.jit(tx.update)(pack(g, like=pp), ps, pp)
        chex.assert_trees_all_close(unpack(pu), u, rtol=1e-5, atol=1e-8)
    chex.assert_trees_all_close(unpack(ps), s, rtol=1e-5, atol=1e-8)


def test_state_stable_under_lax_cond() -> None:
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    pp = pack(_params())
    s = tx.init(pp)
    _, s1 = tx.update(pp, s, pp)
    out = jax.jit(lambda c: jax.lax.cond(c, lambda: s1, lambda: s))(True)
    assert jax.tree.structure(out) == jax.tree.structure(s1)


def test_shape_dtype_struct_params_and_eval_shape() -> None:
    params = _params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    pa = pack(abstract)
    assert all(isinstance(b, jax.ShapeDtypeStruct) for b in jax.tree.leaves(pa))
    assert pa.layout == pack(params).layout
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    state_shape = jax.eval_shape(tx.init, pa)
    assert jax.tree.structure(state_shape) == jax.tree.structure(tx.init(pack(params)))
    _same_trees(tx.init(pa), tx.init(pack(params)), "init of ShapeDtypeStructs")
    assert jax.tree.map(lambda x: (x.shape, x.dtype), unpack(pa)) == jax.tree.map(
        lambda x: (x.shape, x.dtype), params
    )
    like = pack(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params), like=pa)
    assert like.buffers["bfloat16"].dtype == jnp.float32


def test_pack_inside_jit_and_on_numpy_and_python_numbers() -> None:
    params = {"a": np.ones(3, np.float32), "b": 2.0}
    pp = pack(params)
    assert pp.buffers["float32"].shape == (4,)
    _same_trees(jax.jit(pack)(jax.tree.map(jnp.asarray, params)), pp, "inside jit")


# ---- the per-leaf state: checkpoints, get_weights, the compat loaders ---------------------------


def _keras2_weights(params, rng) -> list:
    """A get_weights()-style list: iterations, then every rms, then every momentum."""
    slots = [np.abs(rng.standard_normal(np.shape(p))).astype(np.float32) for p in params]
    moms = [rng.standard_normal(np.shape(p)).astype(np.float32) for p in params]
    return [np.int64(7), *slots, *moms]


def _torch_state_dict(params, rng) -> dict:
    return {
        "state": {
            i: {
                "step": np.float32(5),
                "square_avg": np.abs(rng.standard_normal(np.shape(p))).astype(np.float32),
                "momentum_buffer": rng.standard_normal(np.shape(p)).astype(np.float32),
            }
            for i, p in enumerate(params)
        },
        "param_groups": [{"params": list(range(len(params))), "momentum": 0.5, "centered": False}],
    }


def _trained(make, params):
    tx, s = make(), make().init(params)
    for k in range(2):
        _, s = tx.update(_grads(params, k), s, params)
    return s


_LISTED = [jnp.ones((2, 3)), jnp.linspace(-1.0, 1.0, 3), jnp.ones((3, 1))]
_INJECT = lambda: optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.01, momentum=0.9)
_MOMENTUM = CASES["keras2_momentum_centered_decay"]
_TORCH = lambda: compat.torch(lr=0.01, momentum=0.5, weight_decay=0.01)

# name: (make_tx, params, the per-leaf state of those params)
STATES = {
    "trained": (_MOMENTUM, _params, lambda p: _trained(_MOMENTUM, p)),
    "inject_hyperparams": (_INJECT, lambda: _params(False), lambda p: _trained(_INJECT, p)),
    "keras2_weights": (
        lambda: jrmsprop.rmsprop(0.01, momentum=0.9),
        lambda: _LISTED,
        lambda p: compat.state_from_keras2(
            _keras2_weights(p, np.random.default_rng(3)), p, momentum=True, centered=False
        ),
    ),
    "torch_state_dict": (
        _TORCH,
        lambda: _LISTED,
        lambda p: compat.state_from_torch(_torch_state_dict(p, np.random.default_rng(4)), p),
    ),
}


@pytest.mark.parametrize("name", list(STATES))
@pytest.mark.slow
def test_per_leaf_state_packs_unpacks_and_continues(name: str) -> None:
    make, make_params, make_state = STATES[name]
    params = make_params()
    state = make_state(params)
    pp = pack(params)
    ps = pack(state, like=pp)
    slots = jax.tree.leaves(ps, is_leaf=lambda x: isinstance(x, PackedTree))
    assert sum(isinstance(x, PackedTree) for x in slots) >= 2  # rms and momentum at least
    _same_trees(unpack(ps), state, "unpack(pack(state))")
    _same_trees(pack(unpack(ps), like=pp), ps, "pack(unpack(packed state))")
    _same_trees(pickle.loads(pickle.dumps(ps)), ps, "pickle")
    tx, s, p = make(), state, params
    for k in range(3):
        g = _grads(params, 10 + k)
        u, s = tx.update(g, s, p)
        pu, ps = tx.update(pack(g, like=pp), ps, pp)
        p, pp = optax.apply_updates(p, u), optax.apply_updates(pp, pu)
        _same_trees(u, unpack(pu), f"continued, step {k}")
    _same_trees(unpack(ps), s, "state")


def test_get_weights_list_round_trip() -> None:
    """A get_weights()-style list -> per-leaf state -> packed state, and back to the list."""
    weights = _keras2_weights(_LISTED, np.random.default_rng(3))
    state = compat.state_from_keras2(weights, _LISTED, momentum=True, centered=False)
    ps = pack(state, like=pack(_LISTED))
    np.testing.assert_array_equal(
        ps.rms.buffers["float32"], np.concatenate([s.ravel() for s in weights[1:4]])
    )
    back = unpack(ps)
    out = [np.asarray(back.count), *map(np.asarray, back.rms), *map(np.asarray, back.momentum)]
    for got, want in zip(out, weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_load_keras2_h5_then_packed_matches_keras() -> None:
    """State saved by tf_keras, packed, continued in JAX: Keras's own parameters bit for bit."""
    pytest.importorskip("h5py")
    with np.load(SAVED / "keras2_mom0.9_centered.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    params = pack([jnp.asarray(arrays[f"p0_{i}"]) for i in range(4)])
    state = pack(compat.load_keras2_h5(SAVED / meta["saved"], params.unpack()), like=params)
    c = compat.saved_optimizer_config(SAVED / meta["saved"])["config"]
    tx = jrmsprop.rmsprop(
        c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"], decay=c["decay"]
    )
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    for j in range(meta["m"]):
        grads = pack([jnp.asarray(arrays[f"g_{i}"][j]) for i in range(4)], like=params)
        params, state = step(params, state, grads)
        for i, p in enumerate(params.unpack()):
            np.testing.assert_array_equal(np.asarray(p), arrays[f"p_{i}"][j])
    assert int(state.count) == int(arrays["iterations"])


# ---- bad inputs --------------------------------------------------------------------------------

_PP = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
_SLICES = jrmsprop.IndexedSlices(jnp.ones((1, 2)), jnp.asarray([0]), (3, 2))

# name: (call with the packed `pp` of _PP, error, message)
BAD = {
    "already packed": (lambda pp: pack(pp), TypeError, r"pack: `tree` is already a PackedTree"),
    "contains packed": (lambda pp: pack({"p": pp}), TypeError, r"`tree` contains a PackedTree"),
    "int leaf": (
        lambda pp: pack({"a": jnp.arange(3)}),
        TypeError,
        r"pack: `tree` at \['a'\] has dtype int32",
    ),
    "str leaf": (
        lambda pp: pack({"a": [1.0, "s"]}),
        TypeError,
        r"pack: `tree` at \['a'\]\[1\] is str 's'; it must be an array",
    ),
    "object leaf": (
        lambda pp: pack({"a": jnp.ones(2), "b": object()}),
        TypeError,
        r"pack: `tree` at \['b'\] is object <object",
    ),
    "sparse leaf": (
        lambda pp: pack({"g": _SLICES}),
        TypeError,
        r"pack: `tree` at \['g'\] is an IndexedSlices",
    ),
    "like not packed": (
        lambda pp: pack(_PP, like={"w": 1}),
        TypeError,
        r"pack: `like` must be a PackedTree, got dict",
    ),
    "like: other shape": (
        lambda pp: pack({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}, like=pp),
        ValueError,
        r"no subtree of `tree` has the structure.*float32\[3, 2\] at \['w'\], where `like` has "
        r"float32\[2, 3\]",
    ),
    "like: int subtree": (
        lambda pp: pack([{"w": np.ones((2, 3), np.int32), "b": np.zeros(3, np.float32)}], like=pp),
        ValueError,
        r"has dtype int32 at \['w'\], and only floating-point",
    ),
    "like: other tree": (
        lambda pp: pack({"x": jnp.ones(2)}, like=pp),
        ValueError,
        "no subtree of `tree` has the tree structure of `like`",
    ),
    "like: sparse gradient": (
        lambda pp: pack({"w": _SLICES, "b": jnp.zeros(3)}, like=pp),
        ValueError,
        "no subtree of `tree` has the tree structure of `like`",
    ),
    "like: None gradient": (
        lambda pp: pack({"w": None, "b": jnp.zeros(3)}, like=pp),
        ValueError,
        "no subtree of `tree` has the tree structure of `like`",
    ),
    "like: two dtypes in a group": (
        lambda pp: pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)}, like=pp),
        TypeError,
        r"pack: `tree` at \['w'\] has dtype float32 but `tree` at \['b'\] has bfloat16",
    ),
    "unpack: short buffer": (
        lambda pp: unpack({"params": jax.tree.map(lambda x: x[:2], pp)}),
        ValueError,
        r"unpack: `tree`'s float32 buffer has shape \(2,\)",
    ),
    "PackedTree.unpack: short buffer": (
        lambda pp: jax.tree.map(lambda x: x[:2], pp).unpack(),
        ValueError,
        r"PackedTree.unpack: `self`'s float32 buffer",
    ),
    "unpack: no array": (
        lambda pp: unpack(PackedTree({"float32": None}, pp.layout)),
        TypeError,
        r"unpack: `tree` holds NoneType for its float32 buffer",
    ),
    "update: per-leaf gradients": (
        lambda pp: jrmsprop.rmsprop(0.1).update(_PP, jrmsprop.rmsprop(0.1).init(pp), pp),
        ValueError,
        r"rmsprop: `updates` do not have the tree structure",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_name_the_argument(name: str) -> None:
    call, error, message = BAD[name]
    pp = pack(_PP)
    with pytest.raises(error, match=message):
        call(pp)
    _same_trees(pp.unpack(), {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}, "untouched")


# ---- several devices (conftest: 8 simulated CPU devices) ----------------------------------------


def _linear_loss(tree, x, y):
    return jnp.mean((x @ tree["w"] + tree["b"][None, :] - y) ** 2)


@pytest.mark.slow
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
    replicate = lambda tree: jax.tree.map(lambda a: jnp.stack([a] * n), tree)
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
        loss = lambda q: jnp.sum(jnp.tanh(x @ q.unpack()["w"]) ** 2) + jnp.sum(q.unpack()["b"])
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


# ---- flax: serialization, nnx.Optimizer ----------------------------------------------------------


def test_flax_serialization_round_trip_continues_bit_identically() -> None:
    serialization = pytest.importorskip("flax.serialization")
    params = pack(_params())
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    state = tx.init(params)
    for k in range(2):
        _, state = tx.update(pack(_grads(_params(), k), like=params), state, params)
    assert serialization.to_state_dict(params).keys() == {"bfloat16", "float32"}
    assert serialization.to_state_dict(state)["rms"].keys() == {"bfloat16", "float32"}
    restored_params = serialization.from_bytes(params, serialization.to_bytes(params))
    restored = serialization.from_bytes(tx.init(params), serialization.to_bytes(state))
    assert restored_params.layout == params.layout and restored.rms.layout == params.layout
    _same_trees(restored_params, params, "restored params")
    _same_trees(restored, state, "restored state")
    grads = pack(_grads(_params(), 5), like=params)
    want, _ = tx.update(grads, state, params)
    got, _ = tx.update(grads, restored, restored_params)
    _same_trees(want, got, "updates after restoring")


@pytest.mark.slow
def test_flax_imported_after_jrmsprop_still_registers() -> None:
    pytest.importorskip("flax")
    code = (
        "import jax.numpy as jnp, jrmsprop\n"
        "import flax.serialization as s\n"
        "params = jrmsprop.pack({'a': jnp.ones(2)})\n"
        "print(sorted(s.to_state_dict(params)))\n"
        "print(type(s.from_bytes(params, s.to_bytes(params))).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["['float32']", "PackedTree"], out.stderr


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


@pytest.mark.slow
def test_nnx_optimizer_with_optax_flatten_is_bit_identical_to_plain_rmsprop() -> None:
    """flax's nnx.Optimizer inits on nnx.Param-wrapped leaves and updates with bare arrays;
    optax.flatten ravels both alike."""
    nnx = pytest.importorskip("flax.nnx")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 3), dtype=np.float32))
    y = jnp.asarray(np.random.default_rng(2).standard_normal((8, 2), dtype=np.float32))

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    def train(tx, jit: bool) -> tuple[list, object]:
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

        def step(model, opt):
            opt.update(model, nnx.grad(loss)(model))

        step = nnx.jit(step) if jit else step
        for _ in range(2):
            step(model, opt)
        return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))], opt

    make = lambda: jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    for jit in (False, True):
        (plain, _), (flat, opt) = train(make(), jit), train(optax.flatten(make()), jit)
        for a, b in zip(plain, flat, strict=True):
            _same_bits(a, b, f"nnx params (jit={jit})")
        state = _as_pure(nnx, opt.opt_state)
        assert int(state.count) == 2 and state.rms.shape == (3 * 2 + 2,)
