"""The functional core against an independent NumPy re-derivation, and the optax battery."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy_reference import Reference

import jrmsprop
from jrmsprop import compat

SHAPES = [(), (3,), (2, 5)]
STEPS = 25


def _problem(seed: int, scales=(1e-3, 1.0, 10.0)):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [
        [
            (scale * rng.standard_normal(s)).astype(np.float32)
            for s, scale in zip(SHAPES, scales, strict=True)
        ]
        for _ in range(STEPS)
    ]
    return params, grads


def _piecewise(t):
    """lr 0.1 for t < 10, 0.05 until 20, then 0.01 (works on ints and traced counts)."""
    return jnp.where(t < 10, 0.1, jnp.where(t < 20, 0.05, 0.01)).astype(jnp.float32)


def _piecewise_np(t: int) -> float:
    return float(np.float32(0.1 if t < 10 else 0.05 if t < 20 else 0.01))


GRID = [
    dict(momentum=m, centered=c, epsilon=e, rho=r)
    for m in (0.0, 0.9)
    for c in (False, True)
    for e in (1e-7, 1e-3, 1.0)
    for r in (0.9, 0.5)
]


def _run_jrmsprop(tx, params, grads, jit=True):
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step) if jit else step
    trajectory = []
    for g in grads:
        params, state = step(params, state, g)
        trajectory.append([np.asarray(x) for x in params])
    return trajectory, state


def _run_reference(ref, params, grads):
    trajectory = []
    for g in grads:
        params = ref.apply_dense(g, params)
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("config", GRID, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_matches_numpy_keras2_reference_bitwise(config):
    params, grads = _problem(seed=hash(tuple(config.values())) % 2**31)
    ref = _run_reference(Reference(rule="keras2", learning_rate=0.01, **config), params, grads)
    tx = jrmsprop.rmsprop(learning_rate=0.01, **config)
    got, state = _run_jrmsprop(tx, params, grads)
    for step_got, step_ref in zip(got, ref, strict=True):
        for a, b in zip(step_got, step_ref, strict=True):
            np.testing.assert_array_equal(a, b)
    assert int(state.count) == STEPS


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_schedule_and_decay_match_reference(momentum):
    params, grads = _problem(seed=7)
    ref = Reference(rule="keras2", learning_rate=_piecewise_np, momentum=momentum, decay=0.05)
    expected = _run_reference(ref, params, grads)
    tx = jrmsprop.rmsprop(learning_rate=_piecewise, momentum=momentum, decay=0.05)
    got, _ = _run_jrmsprop(tx, params, grads)
    for step_got, step_ref in zip(got, expected, strict=True):
        for a, b in zip(step_got, step_ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_eps_moves_inside_the_root_with_momentum():
    """Keras 2's rule: one step from zero slots, g=1, ρ=0.9 → rms = 0.1."""
    g, eps, lr = jnp.array(1.0), 1.0, 1.0
    outside = jrmsprop.rmsprop(lr, epsilon=eps)
    inside = jrmsprop.rmsprop(lr, momentum=0.5, epsilon=eps)
    u_out, _ = outside.update(g, outside.init(g))
    u_in, _ = inside.update(g, inside.init(g))
    np.testing.assert_allclose(u_out, -1 / (np.sqrt(0.1) + 1), rtol=1e-6)
    np.testing.assert_allclose(u_in, -1 / np.sqrt(1.1), rtol=1e-6)
    # Keras 3 keeps ε inside without momentum too (its 1 − ρ is 0.1 rounded from double)
    keras3 = jrmsprop.compat.keras3(lr, epsilon=eps)
    np.testing.assert_allclose(keras3.update(g, keras3.init(g))[0], -1 / np.sqrt(1.1), rtol=1e-6)


def test_state_has_only_the_slots_the_configuration_needs():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    plain = jrmsprop.rmsprop().init(params)
    assert plain.momentum is None and plain.mg is None
    assert plain.count.dtype == jnp.int32 and plain.count.shape == ()
    full = jrmsprop.rmsprop(momentum=0.9, centered=True).init(params)
    chex.assert_trees_all_equal_shapes(full.rms, full.momentum, full.mg, params)
    assert jrmsprop.rmsprop(momentum=lambda t: 0.0).init(params).momentum is not None
    tf1 = jrmsprop.compat.tf1(0.1).init(params)
    np.testing.assert_array_equal(tf1.rms["w"], np.ones((2, 3)))


def test_update_is_pure():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)
    params = jnp.arange(4.0)
    state = tx.init(params)
    before = jax.tree.map(np.array, state)
    grads = jnp.ones(4)
    tx.update(grads, state, params)
    chex.assert_trees_all_equal(state, before)
    np.testing.assert_array_equal(grads, np.ones(4))


# --------------------------------------------------------------------------- jit / eager / pmap


def test_no_recompilation_between_steps():
    tx = jrmsprop.rmsprop(_piecewise, momentum=0.9, centered=True, decay=0.01)
    params = {"a": jnp.ones(3), "b": jnp.zeros((2, 2))}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s):
        u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    for _ in range(4):
        params, state = step(params, state)
    assert int(state.count) == 4


def test_eager_update_compiles_once():
    from jrmsprop._src import transform

    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    params = {"a": jnp.ones(3), "b": jnp.zeros((2, 2))}
    state = tx.init(params)
    tx.update(params, state)
    size = transform._update._cache_size()
    for lr in (0.1, 0.2):  # a new value of a number hyperparameter is an argument, not a constant
        tx = jrmsprop.rmsprop(lr, momentum=0.9)
        for _ in range(3):
            _, state = tx.update(params, state)
    assert transform._update._cache_size() == size


# Every preset whose update ends in a product or mixes constants: a caller's jit sees the
# hyperparameters as constants and the parameter add in the same program, where XLA may
# reassociate constant factors and LLVM contract a product into p + update.
STYLE_PRESETS = {
    "keras2": lambda: jrmsprop.rmsprop(0.1),
    "keras2-momentum-centered-decay": lambda: jrmsprop.rmsprop(
        0.1, momentum=0.9, centered=True, decay=0.01
    ),
    "keras3-wd": lambda: jrmsprop.compat.keras3(0.1, weight_decay=0.1),
    "keras3-wd-momentum": lambda: jrmsprop.compat.keras3(0.1, weight_decay=0.1, momentum=0.9),
    "torch": lambda: jrmsprop.compat.torch(lr=0.1),
    "torch-momentum": lambda: jrmsprop.compat.torch(lr=0.1, momentum=0.9),
    "torch-all": lambda: jrmsprop.compat.torch(
        lr=0.1, momentum=0.9, centered=True, weight_decay=0.1, maximize=True
    ),
    "tf1-centered": lambda: jrmsprop.compat.tf1(0.1, momentum=0.9, centered=True),
    "optax": lambda: jrmsprop.compat.optax_rmsprop(0.1, momentum=0.9),
}


@pytest.mark.parametrize("preset", list(STYLE_PRESETS))
@pytest.mark.slow
def test_every_preset_gives_the_same_bits_in_every_calling_style(preset):
    """Eager update then apply, jit(update) then apply, jit(update + apply) and a lax.scan of
    steps: bit for bit the same parameters and slots."""
    tx = STYLE_PRESETS[preset]()
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.standard_normal(1024), jnp.float32)}
    grads = [
        {"w": jnp.asarray(rng.standard_normal(1024) * 10.0 ** rng.integers(-3, 3), jnp.float32)}
        for _ in range(3)
    ]

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    def split(p, s, g):
        u, s = jax.jit(tx.update)(g, s, p)
        return optax.apply_updates(p, u), s

    def scanned(p, s, gs):
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *gs)
        return jax.jit(
            lambda p, s: jax.lax.scan(lambda c, g: (step(*c, g), None), (p, s), stacked)[0]
        )(p, s)

    results = {}
    for name, fn in {"eager": step, "jit(update)": split, "jit(step)": jax.jit(step)}.items():
        p, s = params, tx.init(params)
        for g in grads:
            p, s = fn(p, s, g)
        results[name] = (p, s)
    results["scan"] = scanned(params, tx.init(params), grads)
    for name, result in results.items():
        chex.assert_trees_all_equal(result, results["eager"], custom_message=name)


def test_same_shaped_leaves_are_traced_once():
    """A tree of many leaves lowers one function per leaf signature (fast to compile), and the
    compiled program still updates every leaf."""
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    params = [jnp.full((4, 3), i + 1.0) for i in range(40)] + [jnp.ones(5, jnp.bfloat16)] * 8

    def step(p, s):
        u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
        return optax.apply_updates(p, u), s

    lowered = jax.jit(step).lower(params, tx.init(params))
    assert lowered.as_text().count("stablehlo.sqrt") == 2  # (4, 3) float32 and (5,) bfloat16
    compiled = lowered.compile().as_text()
    assert len(re.findall(r"= \S+ sqrt\(", compiled)) == 48
    new_params, _ = jax.jit(step)(params, tx.init(params))
    for p, q in zip(params, new_params, strict=True):
        assert bool(jnp.all(q < p))  # every leaf moved against its gradient


STREAMING_PRESETS = {
    "keras2": lambda: jrmsprop.rmsprop(1e-3),
    "keras2-momentum": lambda: jrmsprop.rmsprop(1e-3, momentum=0.9),
    "keras2-centered": lambda: jrmsprop.rmsprop(1e-3, centered=True),
    "keras2-both": lambda: jrmsprop.rmsprop(1e-3, momentum=0.9, centered=True),
    "tf1": lambda: jrmsprop.compat.tf1(1e-3, momentum=0.9),
    "keras3-momentum-wd": lambda: jrmsprop.compat.keras3(1e-3, momentum=0.9, weight_decay=0.01),
    "torch-momentum": lambda: jrmsprop.compat.torch(lr=1e-3, momentum=0.9),
    "optax-momentum": lambda: jrmsprop.compat.optax_rmsprop(1e-3, momentum=0.9),
}


@pytest.mark.parametrize("preset", list(STREAMING_PRESETS))
def test_the_donated_step_streams_without_a_temporary(preset):
    """The jitted, donated ``update`` + ``apply_updates`` needs no buffer besides its donated
    inputs: every intermediate stays inside XLA's loops. (An exactness guard once gave the
    momentum step a second user of the division, and XLA wrote it to a leaf-sized temporary:
    12 more bytes per parameter, the step up to twice as slow.)"""
    assert _temporary_bytes_of_donated_step(STREAMING_PRESETS[preset]()) == 0


def _temporary_bytes_of_donated_step(tx) -> int:
    """XLA's scratch memory for ``tx``'s jitted step (update + apply, params and state donated)
    on one float32 leaf of 65536 elements."""
    params = [jnp.ones(1 << 16, jnp.float32)]

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_coupled_weight_decay_needs_no_more_scratch_than_optax(momentum, centered):
    """PyTorch's ``g + wd·p`` feeds every loop of the step. With momentum, XLA:CPU writes it to a
    leaf-sized temporary instead of recomputing it in each loop, as it does for optax's own
    ``add_decayed_weights`` chain (which needs it even without momentum): never more scratch
    memory than optax. (XLA's cost analysis, for the record: 56 / 72 B/param with momentum
    against optax's 52 / 68, 32 / 52 without against 40 / 56; not asserted here.)"""
    ours = jrmsprop.compat.torch(lr=1e-3, momentum=momentum, centered=centered, weight_decay=0.01)
    theirs = optax.chain(
        optax.add_decayed_weights(0.01),
        optax.scale_by_rms(0.99, 1e-8, eps_in_sqrt=False, initial_scale=0.0)
        if not centered
        else optax.scale_by_stddev(0.99, 1e-8, eps_in_sqrt=False),
        *([optax.trace(momentum)] if momentum else []),
        optax.scale(-1e-3),
    )
    optax_bytes = _temporary_bytes_of_donated_step(theirs)
    assert optax_bytes == 4 << 16  # one leaf: optax keeps g + wd·p in a temporary
    ours_bytes = _temporary_bytes_of_donated_step(ours)
    assert ours_bytes <= optax_bytes
    if not momentum:
        assert ours_bytes == 0


@pytest.mark.slow
def test_pmap_matches_single_device_on_the_whole_batch():
    n = jax.local_device_count()
    assert n >= 2, "conftest sets 8 simulated devices"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n * 4, 3)).astype(np.float32)
    y = rng.standard_normal((n * 4,)).astype(np.float32)
    tx = jrmsprop.rmsprop(0.05, momentum=0.9, centered=True)

    def loss(w, x, y):
        return jnp.mean((x @ w - y) ** 2)

    w0 = jnp.zeros(3)
    w, s = w0, tx.init(w0)
    for _ in range(5):
        u, s = tx.update(jax.grad(loss)(w, x, y), s)
        w = optax.apply_updates(w, u)

    def pstep(w, s, x, y):
        g = jax.lax.pmean(jax.grad(loss)(w, x, y), "d")
        u, s = tx.update(g, s)
        return optax.apply_updates(w, u), s

    pstep = jax.pmap(pstep, axis_name="d")

    def replicate(tree):
        return jax.tree.map(lambda x: jnp.stack([x] * n), tree)

    wr, sr = replicate(w0), replicate(tx.init(w0))
    xs, ys = x.reshape(n, 4, 3), y.reshape(n, 4)
    for _ in range(5):
        wr, sr = pstep(wr, sr, xs, ys)
    for i in range(n):
        np.testing.assert_allclose(wr[i], w, rtol=2e-6, atol=1e-7)


def _mesh():
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None:  # jax < 0.5: every mesh axis is automatic
        return jax.make_mesh((jax.device_count(),), ("data",))
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(axis_type.Auto,))


def test_sharded_jit_data_parallel_state_follows_params():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = _mesh()
    n = mesh.shape["data"]
    params = {"w": jnp.arange(n * 6.0).reshape(n * 2, 3), "b": jnp.ones(3)}
    param_sharding = {"w": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P())}
    params = jax.device_put(params, param_sharding)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9)
    state = tx.init(params)  # eager init: every slot takes its parameter's sharding
    assert state.rms["w"].sharding.is_equivalent_to(param_sharding["w"], 2)
    assert state.momentum["w"].sharding.is_equivalent_to(param_sharding["w"], 2)

    @jax.jit
    def step(p, s):
        g = jax.tree.map(lambda x: jnp.cos(x), p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p1, s1 = step(params, state)
    host = jax.tree.map(np.asarray, params)
    p_ref, s_ref = step(host, tx.init(host))  # unsharded
    chex.assert_trees_all_close(p1, p_ref, rtol=0, atol=0)
    assert p1["w"].sharding.is_equivalent_to(param_sharding["w"], 2)
    assert s1.rms["w"].sharding.is_equivalent_to(param_sharding["w"], 2)


def test_sharded_jit_zero1_state_sharded_params_replicated():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = _mesh()
    n = mesh.shape["data"]
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P("data"))
    params = jax.device_put(jnp.linspace(-1.0, 1.0, n * 4), replicated)
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    state_sharding = jrmsprop.RMSpropState(count=replicated, rms=split, momentum=split, mg=split)
    state = jax.jit(tx.init, out_shardings=state_sharding)(params)
    assert state.rms.sharding.is_equivalent_to(split, 1)
    assert len(state.rms.addressable_shards[0].data) == 4  # each device holds 1/n of the slot

    def step(p, s):
        u, s = tx.update(jnp.sin(3 * p), s, p)
        return optax.apply_updates(p, u), s

    sharded_step = jax.jit(step, out_shardings=(replicated, state_sharding), donate_argnums=(1,))
    p, s = params, state
    p_ref, s_ref = np.asarray(params), tx.init(np.asarray(params))
    for _ in range(3):
        p, s = sharded_step(p, s)
        p_ref, s_ref = jax.jit(step)(p_ref, s_ref)
    np.testing.assert_array_equal(p, p_ref)
    assert p.sharding.is_equivalent_to(replicated, 1)
    assert s.momentum.sharding.is_equivalent_to(split, 1)


# --------------------------------------------------------------------------- optax composition


def _train(tx, steps=30, params=None):
    params = (
        params if params is not None else {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    )

    def loss(p):
        return jnp.sum((p["w"] - 1.5) ** 2) + (p["b"] + 1.0) ** 2

    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return params, state, loss(params)


@pytest.mark.parametrize(
    "config",
    [dict(), dict(momentum=0.9), dict(centered=True), dict(momentum=0.5, centered=True)],
)
@pytest.mark.slow
def test_converges(config):
    _, _, loss = _train(jrmsprop.rmsprop(0.05, **config), steps=300)
    assert loss < 1e-2


@pytest.mark.slow
def test_chain_with_clipping_and_weight_decay():
    rms = jrmsprop.rmsprop(0.01)
    chained = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-2), rms)
    p, _, _ = _train(chained, steps=3)
    # the same by hand
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    clip, wd = optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-2)
    cs, ws, rs = clip.init(params), wd.init(params), rms.init(params)
    for _ in range(3):
        g = {"w": 2 * (params["w"] - 1.5), "b": 2 * (params["b"] + 1.0)}
        g, cs = clip.update(g, cs, params)
        g, ws = wd.update(g, ws, params)
        g, rs = rms.update(g, rs, params)
        params = optax.apply_updates(params, g)
    chex.assert_trees_all_close(p, params, rtol=1e-6)


# One row per preset: values exact in float32, so that "the same values" are the same whether
# they reach the factory as Python numbers or (optax.inject_hyperparams) as float32 arrays.
OPTAX_BATTERY = {
    "rmsprop": (jrmsprop.rmsprop, dict(learning_rate=0.03125)),
    "rmsprop-mom-centered": (
        jrmsprop.rmsprop,
        dict(learning_rate=0.03125, momentum=0.875, centered=True, rho=0.75),
    ),
    "rmsprop-decay": (jrmsprop.rmsprop, dict(learning_rate=0.25, decay=0.0625, rho=0.75)),
    "keras3": (compat.keras3, dict(learning_rate=0.125, rho=0.75, weight_decay=0.0625)),
    "keras3-mom": (compat.keras3, dict(rho=0.75, momentum=0.5, centered=True)),
    "torch": (compat.torch, dict(lr=0.0625, alpha=0.75)),
    "torch-mom": (
        compat.torch,
        dict(lr=0.0625, alpha=0.75, momentum=0.5, weight_decay=0.125, centered=True),
    ),
    "tf1": (compat.tf1, dict(learning_rate=0.125)),
    "tf1-mom": (compat.tf1, dict(learning_rate=0.125, momentum=0.5, centered=True)),
    "optax": (compat.optax_rmsprop, dict(learning_rate=0.125, eps=1.0, initial_scale=0.5)),
    "optax-mom": (compat.optax_rmsprop, dict(learning_rate=0.125, momentum=0.5)),
}
BATTERY_PARAMS = [-jnp.ones((2, 3)), jnp.arange(20.0).reshape(2, 5, 2) / 7]
BATTERY_GRADS = [jnp.full((2, 3), 0.375), jnp.sin(jnp.arange(20.0)).reshape(2, 5, 2)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", list(OPTAX_BATTERY))
@pytest.mark.slow
def test_inject_hyperparams_equals_the_plain_transformation(name, jit):
    """optax's contract (alias_test, inject_test): every numeric argument injected, defaults
    included, gives the plain transformation's state (structure and values) and updates."""
    factory, kwargs = OPTAX_BATTERY[name]
    plain, injected = factory(**kwargs), optax.inject_hyperparams(factory)(**kwargs)
    wrap = jax.jit if jit else (lambda f: f)
    state, state_inj = wrap(plain.init)(BATTERY_PARAMS), wrap(injected.init)(BATTERY_PARAMS)
    assert set(state_inj.hyperparams) >= {k for k, v in kwargs.items() if k != "centered"}
    assert jax.tree.structure(state_inj.inner_state) == jax.tree.structure(state)
    chex.assert_trees_all_equal(state_inj.inner_state, state)
    params = BATTERY_PARAMS
    for step in range(3):
        grads = jax.tree.map(lambda g, s=step: g * (s + 1), BATTERY_GRADS)
        updates, state = wrap(plain.update)(grads, state, params)
        updates_inj, state_inj = wrap(injected.update)(grads, state_inj, params)
        chex.assert_trees_all_equal(updates_inj, updates)
        chex.assert_trees_all_equal(state_inj.inner_state, state)
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", list(OPTAX_BATTERY))
def test_abstract_init_gives_the_state_structure(name):
    """``jax.eval_shape(tx.init, ...)`` on abstract params: how a sharded state is laid out."""
    factory, kwargs = OPTAX_BATTERY[name]
    tx = optax.inject_hyperparams(factory)(**kwargs)
    abstract = jax.eval_shape(
        tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), BATTERY_PARAMS)
    )
    concrete = tx.init(BATTERY_PARAMS)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(abstract)] == [
        (x.shape, x.dtype) for x in jax.tree.leaves(concrete)
    ]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("name", list(OPTAX_BATTERY))
@pytest.mark.slow
def test_updates_come_back_in_the_gradients_dtype(name, dtype):
    """optax's test_preserve_dtype, with and without ``params`` (float16 gets float32 slots)."""
    factory, kwargs = OPTAX_BATTERY[name]
    tx = factory(**kwargs)
    params = jnp.array([1.0, 2.0], dtype)
    grads = jax.grad(lambda p: jnp.sum(p.astype(jnp.float32) ** 2).astype(dtype))(params)
    state = tx.init(params)
    assert tx.update(grads, state, params)[0].dtype == dtype
    if "weight_decay" not in kwargs:
        assert tx.update(grads, state)[0].dtype == dtype


def test_bfloat16_params_with_float32_slots_get_bfloat16_updates():
    tx = jrmsprop.rmsprop(0.1, slot_dtype=jnp.float32)
    params = jnp.array([1.0, 2.0], jnp.bfloat16)
    state = tx.init(params)
    assert state.rms.dtype == jnp.float32
    updates, _ = tx.update(params, state)
    reference, _ = jrmsprop.rmsprop(0.1).update(params.astype(jnp.float32), tx.init(params))
    np.testing.assert_array_equal(updates, reference.astype(jnp.bfloat16))


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.99, 1])
def test_a_decay_that_looks_like_rho_warns_naming_rho(decay):
    with pytest.warns(UserWarning, match=r"`decay`=.* inverse-time .*pass that as `rho`"):
        jrmsprop.rmsprop(0.01, decay=decay)


def test_inject_hyperparams_can_change_learning_rate_without_retracing():
    tx = optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1, momentum=0.9)
    p = jnp.ones(3)
    s = tx.init(p)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s):
        u, s = tx.update(p, s)
        return optax.apply_updates(p, u), s

    p, s = step(p, s)
    mom = s.inner_state.momentum
    s.hyperparams["learning_rate"] = jnp.asarray(0.0, jnp.float32)
    p2, s = step(p, s)  # lr 0: only the momentum buffer moves the parameters
    np.testing.assert_allclose(p2, p - 0.9 * mom, rtol=1e-6)


def test_multisteps_accumulates():
    with jax.numpy_dtype_promotion("standard"):  # optax's MultiSteps divides by an int32 count
        _multisteps_accumulates()


def _multisteps_accumulates():
    tx = optax.MultiSteps(jrmsprop.rmsprop(0.1, momentum=0.9), every_k_schedule=3)
    p = jnp.array([1.0, 2.0])
    s = tx.init(p)
    grads = [jnp.array([1.0, -1.0]), jnp.array([3.0, 1.0]), jnp.array([2.0, 0.0])]
    for g in grads[:2]:
        u, s = tx.update(g, s, p)
        np.testing.assert_array_equal(u, np.zeros(2))
        p = optax.apply_updates(p, u)
    u, s = tx.update(grads[2], s, p)
    direct = jrmsprop.rmsprop(0.1, momentum=0.9)
    mean = sum(grads) / 3
    u_ref, _ = direct.update(mean, direct.init(p), p)
    np.testing.assert_allclose(u, u_ref, rtol=1e-6)


def test_apply_if_finite_skips_nan_steps():
    tx = optax.apply_if_finite(jrmsprop.rmsprop(0.1), max_consecutive_errors=5)
    p = jnp.array([1.0, 2.0])
    s = tx.init(p)
    u, s = tx.update(jnp.array([jnp.nan, 1.0]), s, p)
    np.testing.assert_array_equal(u, np.zeros(2))
    assert int(s.inner_state.count) == 0
    u, s = tx.update(jnp.array([1.0, 1.0]), s, p)
    direct = jrmsprop.rmsprop(0.1)  # the skipped step left no trace in the slots
    u_ref, s_ref = direct.update(jnp.array([1.0, 1.0]), direct.init(p), p)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(s.inner_state.rms, s_ref.rms)
    assert int(s.inner_state.count) == 1


def test_multi_transform_and_masked():
    params = {"emb": jnp.ones(4), "head": jnp.ones(2)}
    tx = optax.multi_transform(
        {"rms": jrmsprop.rmsprop(0.1), "frozen": optax.set_to_zero()},
        {"emb": "frozen", "head": "rms"},
    )
    u, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(u["emb"], np.zeros(4))
    direct = jrmsprop.rmsprop(0.1)
    u_head, _ = direct.update(params["head"], direct.init(params["head"]))
    np.testing.assert_array_equal(u["head"], u_head)
    masked = optax.masked(jrmsprop.rmsprop(0.1), {"emb": False, "head": True})
    u2, _ = masked.update(params, masked.init(params), params)
    np.testing.assert_array_equal(u2["emb"], params["emb"])  # passed through unchanged
    np.testing.assert_array_equal(u2["head"], u["head"])


def test_none_gradient_leaves_pass_through():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    s = tx.init(params)
    u, s2 = tx.update({"a": jnp.ones(2), "b": None}, s, params)
    assert u["b"] is None
    np.testing.assert_array_equal(s2.rms["b"], s.rms["b"])
    np.testing.assert_array_equal(s2.momentum["b"], s.momentum["b"])
    assert not np.array_equal(s2.rms["a"], s.rms["a"])
    # None parameters (empty subtrees) are fine too
    tx.update({"a": jnp.ones(2), "none": None}, tx.init({"a": jnp.ones(2), "none": None}))


def test_state_is_stable_under_lax_cond():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True, slot_dtype=jnp.float32)
    params = {"w": jnp.ones(3, jnp.bfloat16), "v": jnp.ones(2)}
    state = tx.init(params)

    @jax.jit
    def maybe_step(flag, p, s):
        def go(s):
            return tx.update(jax.tree.map(jnp.ones_like, p), s, p)[1]

        return jax.lax.cond(flag, go, lambda s: s, s)

    s1 = maybe_step(True, params, state)
    s0 = maybe_step(False, params, state)
    chex.assert_trees_all_equal_dtypes(s0, s1, state)
    chex.assert_trees_all_equal(s0, state)
    _, stepped = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    chex.assert_trees_all_equal(s1, stepped)
    assert int(s1.count) == 1 and int(s0.count) == 0


def test_count_saturates():
    tx = jrmsprop.rmsprop()
    s = tx.init(jnp.ones(1))._replace(count=jnp.asarray(np.iinfo(np.int32).max, jnp.int32))
    _, s = tx.update(jnp.ones(1), s)
    assert int(s.count) == np.iinfo(np.int32).max


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_computes_in_float32(dtype):
    """ε = 1e-7 underflows in bf16/f16 arithmetic; the step is computed in float32."""
    p = jnp.array([1.0, -1.0], dtype)
    g = jnp.array([1e-4, 0.0], dtype)
    tx = jrmsprop.rmsprop(0.1, epsilon=1e-7)
    s = tx.init(p)
    # slots follow a bfloat16 parameter, as in Keras; float16 ones get float32 slots (range)
    slot_dtype = jnp.float32 if dtype == jnp.float16 else dtype
    assert s.rms.dtype == slot_dtype
    u, s = tx.update(g, s, p)
    assert u.dtype == dtype and s.rms.dtype == slot_dtype
    g32 = np.asarray(g, np.float32)
    rms = np.float32(0.1) * g32 * g32
    expected = -(np.float32(0.1) * g32) / (np.sqrt(rms) + np.float32(1e-7))
    np.testing.assert_array_equal(
        np.asarray(u, np.float32), expected.astype(dtype).astype(np.float32)
    )
    assert np.all(np.isfinite(np.asarray(u, np.float32)))


def test_slot_dtype_keeps_float32_slots_for_bf16_params():
    p = jnp.ones(4, jnp.bfloat16)
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True, slot_dtype=jnp.float32)
    s = tx.init(p)
    assert s.rms.dtype == s.momentum.dtype == s.mg.dtype == jnp.float32
    u, s = tx.update(jnp.full(4, 3e-3, jnp.bfloat16), s, p)
    assert u.dtype == jnp.bfloat16 and s.rms.dtype == jnp.float32
    g = np.float32(np.asarray(jnp.bfloat16(3e-3), np.float32))
    one_minus_rho = np.float32(1) - np.float32(0.9)
    np.testing.assert_array_equal(np.asarray(s.rms), np.full(4, one_minus_rho * (g * g)))


def test_complex_parameters_use_abs_squared():
    p = jnp.array([1.0 + 1.0j, 2.0 - 1.0j], jnp.complex64)
    g = jnp.array([3.0 + 4.0j, 0.0 + 1.0j], jnp.complex64)
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)
    s = tx.init(p)
    assert s.rms.dtype == jnp.float32 and s.momentum.dtype == jnp.complex64
    u, s = tx.update(g, s, p)
    g_np = np.asarray(g)
    rms = 0.1 * np.abs(g_np) ** 2
    mg = 0.1 * g_np
    expected = -(0.1 * g_np) / np.sqrt(rms - np.abs(mg) ** 2 + 1e-7)
    np.testing.assert_allclose(u, expected, rtol=1e-5)
    np.testing.assert_allclose(s.rms, rms, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_and_boolean_inputs_raise_type_error(dtype):
    tx = jrmsprop.rmsprop()
    with pytest.raises(TypeError, match=r"\['w'\].*dtype"):
        tx.init({"w": jnp.ones(3, dtype)})
    s = tx.init({"w": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"gradient at \['w'\]"):
        tx.update({"w": jnp.ones(3, dtype)}, s)


# --------------------------------------------------------------------------- errors


def test_state_from_another_configuration_is_rejected():
    params = jnp.ones(3)
    with pytest.raises(ValueError, match="momentum slot"):
        jrmsprop.rmsprop(momentum=0.9).update(params, jrmsprop.rmsprop().init(params))
    with pytest.raises(ValueError, match="`mg` slot"):
        jrmsprop.rmsprop(centered=True).update(params, jrmsprop.rmsprop().init(params))
    with pytest.raises(ValueError, match="weight decay needs `params`"):
        tx = jrmsprop.compat.torch(weight_decay=0.1)
        tx.update(params, tx.init(params))


def test_traced_hyperparameters_are_not_validated_but_work():
    @jax.jit
    def f(lr):
        tx = jrmsprop.rmsprop(lr)
        p = jnp.array(10.0)
        return tx.update(p, tx.init(p))[0]

    np.testing.assert_allclose(f(jnp.float32(0.1)), 9.683772 - 10.0, rtol=1e-6)


def test_keras_legacy_lr_replaces_learning_rate_with_keras_warning():
    with pytest.warns(UserWarning, match=r"The `lr` argument is deprecated, use `learning_rate`"):
        tx = jrmsprop.rmsprop(0.001, lr=0.5)
    p = jnp.array([2.0])
    np.testing.assert_array_equal(
        tx.update(p, tx.init(p))[0], jrmsprop.rmsprop(0.5).update(p, tx.init(p))[0]
    )
    with pytest.raises(ValueError, match=r"`lr` must be finite and >= 0"):
        jrmsprop.rmsprop(lr=-1.0)
