"""``jrmsprop.update_and_apply``: ``tx.update`` + ``optax.apply_updates`` in one call, bit for
bit, with the one-pass CPU kernel where it may run (one device, float32, dense, Keras 2 / TF1
arithmetic) and the XLA path everywhere else."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jrmsprop
from jrmsprop._src import cpu_kernel

KERNEL = cpu_kernel.TARGET


def _apply_updates(params, updates):
    """``optax.apply_updates``, leaving a parameter whose update is None (no gradient) alone."""
    return jax.tree.map(
        lambda p, u: p if u is None else optax.apply_updates(p, u),
        params,
        updates,
        is_leaf=lambda x: x is None,
    )


needs_kernel = pytest.mark.skipif(
    not cpu_kernel.available() or jax.default_backend() != "cpu",
    reason=f"CPU kernel not available: {cpu_kernel.unavailable_reason()}",
)

# (factory, whether its float32 dense leaves take the kernel)
PRESETS = {
    "keras2": (lambda: jrmsprop.rmsprop(0.1), True),
    "keras2-momentum": (lambda: jrmsprop.rmsprop(0.1, momentum=0.9), True),
    "keras2-centered-decay": (lambda: jrmsprop.rmsprop(0.1, centered=True, decay=0.01), True),
    "keras2-all": (lambda: jrmsprop.rmsprop(0.1, momentum=0.9, centered=True, decay=0.01), True),
    "keras2-schedule": (
        lambda: jrmsprop.rmsprop(optax.exponential_decay(0.1, 2, 0.5), momentum=0.5),
        True,
    ),
    "tf1-centered": (lambda: jrmsprop.compat.tf1(0.1, momentum=0.9, centered=True), True),
    "keras3-wd": (lambda: jrmsprop.compat.keras3(0.1, weight_decay=0.1, momentum=0.9), False),
    "torch-all": (
        lambda: jrmsprop.compat.torch(
            lr=0.1, momentum=0.9, centered=True, weight_decay=0.1, maximize=True
        ),
        False,
    ),
    "optax": (lambda: jrmsprop.compat.optax_rmsprop(0.1, momentum=0.9), True),
}


def make_params(rng, dtype=jnp.float32):
    return {
        "w": jnp.asarray(rng.standard_normal((33, 7)), dtype),
        "b": jnp.asarray(rng.standard_normal(7), dtype),
    }


def make_grads(rng, params, n):
    return [
        jax.tree.map(
            lambda p: jnp.asarray(
                rng.standard_normal(p.shape) * 10.0 ** rng.integers(-3, 3), p.dtype
            ),
            params,
        )
        for _ in range(n)
    ]


def reference(tx, params, grads):
    """The separate calls, eagerly: update, then apply."""
    p, s = params, tx.init(params)
    for g in grads:
        u, s = tx.update(g, s, p)
        p = _apply_updates(p, u)
    return p, s


def takes_kernel(fn, *args) -> bool:
    return KERNEL in jax.jit(fn).lower(*args).compile().as_text()


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.slow
def test_same_bits_as_update_then_apply_in_every_calling_style(preset):
    factory, kernel = PRESETS[preset]
    tx = factory()
    rng = np.random.default_rng(3)
    params = make_params(rng)
    grads = make_grads(rng, params, 4)
    want = reference(tx, params, grads)

    def step(p, s, g, fused=True):
        return jrmsprop.update_and_apply(tx, g, s, p, fused=fused)

    donated = jax.jit(step, donate_argnums=(0, 1))
    styles = {
        "eager": step,
        "jit": jax.jit(step),
        "jit, donated": lambda p, s, g: donated(
            jax.tree.map(jnp.copy, p), jax.tree.map(jnp.copy, s), g
        ),
        "jit, fused=False": jax.jit(functools.partial(step, fused=False)),
    }
    for name, fn in styles.items():
        p, s = params, tx.init(params)
        for g in grads:
            p, s = fn(p, s, g)
        chex.assert_trees_all_equal((p, s), want, custom_message=name)

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *grads)
    scanned = jax.jit(
        lambda p, s: jax.lax.scan(lambda c, g: (step(*c, g), None), (p, s), stacked)[0]
    )(params, tx.init(params))
    chex.assert_trees_all_equal(scanned, want, custom_message="scan")

    if cpu_kernel.available() and jax.default_backend() == "cpu":
        state = tx.init(params)
        assert takes_kernel(step, params, state, grads[0]) == kernel
        assert not takes_kernel(functools.partial(step, fused=False), params, state, grads[0])


def test_eager_call_leaves_its_inputs_as_they_were():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    params = {"w": jnp.arange(6.0)}
    state = tx.init(params)
    kept = jax.tree.map(np.array, (params, state))
    new_params, new_state = jrmsprop.update_and_apply(tx, {"w": jnp.ones(6)}, state, params)
    chex.assert_trees_all_equal((params, state), kept)  # still readable, unchanged
    assert not np.array_equal(np.asarray(new_params["w"]), kept[0]["w"])
    assert int(new_state.count) == 1


@needs_kernel
@pytest.mark.slow
def test_mixed_tree_each_leaf_on_its_path():
    """float32 leaves take the kernel; bfloat16, float64-free, sparse and None leaves the XLA
    path; the result is the separate calls' bit for bit."""
    tx = jrmsprop.rmsprop(0.05, momentum=0.9, centered=True)
    rng = np.random.default_rng(0)
    params = {
        "dense": jnp.asarray(rng.standard_normal((16, 4)), jnp.float32),
        "half": jnp.asarray(rng.standard_normal(5), jnp.bfloat16),
        "table": jnp.asarray(rng.standard_normal((10, 3)), jnp.float32),
        "frozen": jnp.ones(2, jnp.float32),
    }

    def grads(seed):
        r = np.random.default_rng(seed)
        return {
            "dense": jnp.asarray(r.standard_normal((16, 4)), jnp.float32),
            "half": jnp.asarray(r.standard_normal(5), jnp.bfloat16),
            "table": jrmsprop.IndexedSlices(
                jnp.asarray(r.standard_normal((4, 3)), jnp.float32),
                jnp.array([1, 7, 1, 9]),
                (10, 3),
            ),
            "frozen": None,
        }

    step = jax.jit(lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p))
    p, s = params, tx.init(params)
    want_p, want_s = params, tx.init(params)
    for seed in range(3):
        p, s = step(p, s, grads(seed))
        u, want_s = tx.update(grads(seed), want_s, want_p)
        want_p = _apply_updates(want_p, u)
    chex.assert_trees_all_equal((p, s), (want_p, want_s))
    hlo = jax.jit(step).lower(params, tx.init(params), grads(0)).compile().as_text()
    assert hlo.count(f'custom_call_target="{KERNEL}"') == 1  # the one dense float32 leaf


@needs_kernel
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.slow
def test_the_float32_leaves_of_a_tree_share_kernel_calls(momentum):
    """The 36 float32 leaves of a tree of mixed shapes (a scalar, an empty array, leaves above
    the kernel's chunk) are updated by one kernel call per group of ``_KERNEL_GROUP`` leaves, bit
    for bit the separate calls; a bfloat16 leaf and a None gradient stay on their own paths."""

    tx = jrmsprop.rmsprop(0.05, momentum=momentum, centered=True, decay=0.01)
    rng = np.random.default_rng(6)
    shapes = [(), (0,), (3,), (17, 5), (70_001,), (300, 400)] + [(8, 8)] * 30
    params = {f"p{i:02d}": jnp.asarray(rng.standard_normal(s), jnp.float32)
              for i, s in enumerate(shapes)}  # fmt: skip
    params["half"] = jnp.asarray(rng.standard_normal(5), jnp.bfloat16)
    params["frozen"] = jnp.ones(4, jnp.float32)
    grads = make_grads(rng, params, 3)
    for g in grads:
        g["frozen"] = None
    step = jax.jit(lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p), donate_argnums=(0, 1))
    hlo = step.lower(params, tx.init(params), grads[0]).compile().as_text()
    calls = -(-36 // cpu_kernel.GROUP)
    assert 1 < calls < 36  # several groups, not one call per leaf
    assert hlo.count(f'custom_call_target="{KERNEL}"') == calls
    p, s = jax.tree.map(jnp.copy, params), tx.init(params)
    for g in grads:
        p, s = step(p, s, g)
    chex.assert_trees_all_equal((p, s), reference(tx, params, grads))


def test_packed_parameters():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    tree = make_params(rng)
    grads = make_grads(rng, tree, 3)
    params = jrmsprop.pack(tree)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p), donate_argnums=(0, 1))
    for g in grads:
        params, state = step(params, state, jrmsprop.pack(g, like=params))
    want_p, want_s = reference(tx, tree, grads)
    chex.assert_trees_all_equal(params.unpack(), want_p)
    chex.assert_trees_all_equal(jrmsprop.unpack(state), want_s)


def test_abstract_parameters():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)
    params = {"w": jax.ShapeDtypeStruct((3, 2), jnp.float32)}
    state = jax.eval_shape(tx.init, params)
    out = jax.eval_shape(
        lambda g, s, p: jrmsprop.update_and_apply(tx, g, s, p), params, state, params
    )
    assert out[0]["w"].shape == (3, 2) and out[0]["w"].dtype == jnp.float32
    assert out[1].momentum["w"].shape == (3, 2)


def loss_after_step(params, grads, lr, combined, centered):
    """Σ p² after one step with learning rate ``lr``: through ``update_and_apply`` (``combined``)
    or the separate ``tx.update`` + ``apply_updates``."""
    tx = jrmsprop.rmsprop(lr, momentum=0.9, centered=centered)
    state = tx.init(params)
    if combined:
        p, _ = jrmsprop.update_and_apply(tx, grads, state, params)
    else:
        u, _ = tx.update(grads, state, params)
        p = _apply_updates(params, u)
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(p))


@pytest.mark.slow
def test_derivatives_go_through_the_xla_path():
    """jax.grad of a loss after one step (a learning-rate sensitivity, say) equals that of the
    separate calls, eager and jitted; forward mode too."""
    rng = np.random.default_rng(2)
    params = make_params(rng)
    (grads,) = make_grads(rng, params, 1)
    after_step = functools.partial(loss_after_step, params, grads, centered=True)

    want = jax.grad(after_step)(0.01, False)
    assert jax.grad(after_step)(0.01, True) == want
    assert float(want) != 0.0
    jitted = jax.jit(jax.grad(after_step), static_argnums=1)
    assert jitted(0.01, True) == jitted(0.01, False)

    def forward(combined):
        return jax.jvp(lambda lr: after_step(lr, combined), (0.01,), (1.0,))[1]

    assert forward(True) == forward(False)


@needs_kernel
@pytest.mark.slow
def test_derivatives_over_several_kernel_groups():
    """With more leaves than one kernel call takes, forward mode still equals the separate calls
    bit for bit; reverse mode sums the leaves' contributions to the shared learning rate group
    by group, so it agrees to float32 rounding of that sum, not bit for bit."""

    rng = np.random.default_rng(3)
    shapes = [(3,), (40,), (5, 7)] * 15
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    assert len(params) > cpu_kernel.GROUP
    after_step = functools.partial(loss_after_step, params, grads, centered=False)

    assert after_step(0.01, True) == after_step(0.01, False)
    tangent = [jax.jvp(lambda lr, c=c: after_step(lr, c), (0.01,), (1.0,))[1] for c in (1, 0)]
    assert tangent[0] == tangent[1]
    got, want = (jax.grad(after_step)(0.01, c) for c in (True, False))
    assert float(want) != 0.0
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_vmap_over_a_batch_of_gradients():
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    rng = np.random.default_rng(4)
    params = make_params(rng)
    state = tx.init(params)
    batch = make_grads(rng, params, 3)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *batch)
    got = jax.jit(jax.vmap(lambda g: jrmsprop.update_and_apply(tx, g, state, params)))(stacked)
    for i, g in enumerate(batch):
        want = reference(tx, params, [g])
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], got), want)


def _sharded(tree, sharding):
    """Every array laid out by ``sharding``; scalars (the step count) replicated."""
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, sharding if jnp.ndim(x) else replicated), tree)


def lowered_paths(fn, *args) -> tuple[bool, bool]:
    """Whether the program lowered for ``fn`` holds (the kernel, the XLA step of a kernel leaf),
    read before XLA compiles it (and would discard a branch not taken)."""
    text = jax.jit(fn).lower(*args).as_text()
    return KERNEL in text, "_xla_apply_leaf" in text


@needs_kernel
def test_only_the_path_that_runs_is_lowered():
    """The kernel-or-XLA choice is made while lowering, and the path not taken is not lowered at
    all (XLA would inline it, then discard it: compile time for nothing): a program on one
    device holds the kernel alone, under vmap too; a program partitioned over several devices
    holds the XLA step alone, so does a module exported for GPU; one exported for CPU and GPU
    holds both. Derivatives lower both (they go through the XLA path)."""
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)
    rng = np.random.default_rng(7)
    params = make_params(rng)
    state = tx.init(params)
    (grads,) = make_grads(rng, params, 1)

    def step(p, s, g):
        return jrmsprop.update_and_apply(tx, g, s, p)

    assert lowered_paths(step, params, state, grads) == (True, False)
    batch = jax.tree.map(lambda x: jnp.stack([x, -x]), grads)
    per_example = jax.vmap(lambda g: step(params, state, g))
    assert lowered_paths(per_example, batch) == (True, False)
    for i, sign in enumerate((1, -1)):
        want = reference(tx, params, [jax.tree.map(lambda x, s=sign: s * x, grads)])
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], per_example(batch)), want)

    def loss(lr):
        tx_lr = jrmsprop.rmsprop(lr, momentum=0.9, centered=True)
        p, _ = jrmsprop.update_and_apply(tx_lr, grads, state, params)
        return sum(jnp.sum(x * x) for x in jax.tree.leaves(p))

    assert lowered_paths(jax.grad(loss), 0.1)[1]
    for platforms, want in ((("cuda",), (False, True)), (("cpu", "cuda"), (True, True))):
        exported = export.export(
            jax.jit(step),
            platforms=platforms,
            disabled_checks=[export.DisabledSafetyCheck.custom_call(KERNEL)],
        )(params, state, grads)
        text = exported.mlir_module()
        assert (KERNEL in text, "_xla_apply_leaf" in text) == want, platforms
    devices = np.array(jax.devices()[:8])
    if devices.size < 2:
        pytest.skip("needs several devices")
    sharding = NamedSharding(Mesh(devices, ("d",)), PartitionSpec("d"))
    wide = {"w": jnp.ones(8 * devices.size, jnp.float32)}
    sharded = [_sharded(x, sharding) for x in (wide, tx.init(wide), wide)]
    assert lowered_paths(step, *sharded) == (False, True)


def test_a_program_over_several_devices_keeps_the_xla_path_and_the_sharding():
    devices = np.array(jax.devices()[:8])
    if devices.size < 2:
        pytest.skip("needs several devices")
    sharding = NamedSharding(Mesh(devices, ("d",)), PartitionSpec("d"))
    tx = jrmsprop.rmsprop(0.1, momentum=0.9, centered=True)
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.standard_normal((8 * devices.size,)), jnp.float32)}
    grads = make_grads(rng, params, 2)
    want = reference(tx, params, grads)
    step = jax.jit(lambda p, s, g: jrmsprop.update_and_apply(tx, g, s, p))
    p, s = _sharded(params, sharding), _sharded(tx.init(params), sharding)
    assert not takes_kernel(step, p, s, _sharded(grads[0], sharding))
    for g in grads:
        p, s = step(p, s, _sharded(g, sharding))
    assert p["w"].sharding == sharding
    assert s.rms["w"].sharding == sharding
    chex.assert_trees_all_equal((p, s), want)


@needs_kernel
def test_each_device_runs_the_kernel_on_its_own_shard():
    """pmap and a shard_map that is manual over every mesh axis run one program per device: the
    kernel runs there; a shard_map that leaves an axis to XLA keeps the XLA path."""
    n = jax.local_device_count()
    if n < 4:
        pytest.skip("needs 4 devices")
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.standard_normal((n, 6)), jnp.float32)}
    (grads,) = make_grads(rng, params, 1)
    state = tx.init(params)
    want = reference(tx, params, [grads])

    def step(p, s, g):
        return jrmsprop.update_and_apply(tx, g, s, p)

    per_device = state._replace(count=jnp.zeros(n, jnp.int32))
    got = jax.pmap(step)(params, per_device, grads)
    chex.assert_trees_all_equal(got[0], want[0])
    lowered = jax.pmap(step).lower(params, per_device, grads)
    assert KERNEL in lowered.compile().as_text()
    assert "_xla_apply_leaf" not in lowered.as_text()  # only the path taken is lowered

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        pytest.skip("jax.shard_map needs a newer jax")
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("a", "b"))
    params4 = {"w": params["w"][:4]}
    grads4 = {"w": grads["w"][:4]}
    state4 = tx.init(params4)
    spec = PartitionSpec(("a", "b"))
    specs = (
        {"w": spec},
        jax.tree.map(lambda _: PartitionSpec(), state4)._replace(
            rms={"w": spec}, momentum={"w": spec}
        ),
        {"w": spec},
    )
    manual = jax.jit(shard_map(step, mesh=mesh, in_specs=specs, out_specs=specs[:2]))
    assert takes_kernel(manual, params4, state4, grads4)
    assert lowered_paths(manual, params4, state4, grads4) == (True, False)
    chex.assert_trees_all_equal(manual(params4, state4, grads4), reference(tx, params4, [grads4]))
    half_specs = jax.tree.map(
        lambda s: PartitionSpec(*[("a" if x == ("a", "b") else x) for x in s]),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )
    partial = jax.jit(
        shard_map(step, mesh=mesh, in_specs=half_specs, out_specs=half_specs[:2], axis_names={"a"})
    )
    assert not takes_kernel(partial, params4, state4, grads4)
    assert lowered_paths(partial, params4, state4, grads4) == (False, True)


BAD_TX = {
    "optax.adam": lambda: optax.adam(0.1),
    "chain": lambda: optax.chain(optax.clip(1.0), jrmsprop.rmsprop(0.1)),
    "inject_hyperparams": lambda: optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1),
    "MultiSteps": lambda: optax.MultiSteps(jrmsprop.rmsprop(0.1), 2),
    "optax.flatten": lambda: optax.flatten(jrmsprop.rmsprop(0.1)),
    "a string": lambda: "rmsprop",
    "the factory": lambda: jrmsprop.rmsprop,
    "the wrapper": lambda: jrmsprop.RMSprop(0.1),
}


@pytest.mark.parametrize("what", list(BAD_TX))
def test_a_transformation_it_cannot_fuse_is_refused_naming_tx(what):
    with pytest.raises(TypeError, match=r"update_and_apply: `tx` must be a transformation made"):
        jrmsprop.update_and_apply(BAD_TX[what](), {"w": jnp.ones(2)}, None, {"w": jnp.ones(2)})


def test_a_rebuilt_transformation_is_still_recognised():
    tx = jrmsprop.rmsprop(0.1)
    again = optax.GradientTransformationExtraArgs(tx.init, tx.update)
    params = {"w": jnp.ones(2)}
    got = jrmsprop.update_and_apply(again, params, tx.init(params), params)
    chex.assert_trees_all_equal(got, reference(tx, params, [params]))


@pytest.mark.parametrize("fused", ["yes", 1, None])
def test_fused_must_be_a_bool(fused):
    tx = jrmsprop.rmsprop(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="`fused` must be True or False"):
        jrmsprop.update_and_apply(tx, params, tx.init(params), params, fused=fused)


def test_bad_arguments_name_the_argument():
    tx = jrmsprop.rmsprop(0.1)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="`params` are required"):
        jrmsprop.update_and_apply(tx, params, state, None)
    with pytest.raises(ValueError, match="`grads` do not have the tree structure"):
        jrmsprop.update_and_apply(tx, {"v": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match="parameter at .*'w'.* has shape"):
        jrmsprop.update_and_apply(tx, params, state, {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="gradient at .*'w'.* has shape"):
        jrmsprop.update_and_apply(tx, {"w": jnp.ones(3)}, state, params)


def test_hyperparameters_that_change_at_run_time():
    """In place of optax.inject_hyperparams: build the transformation inside the jit from traced
    values; one compilation serves every value, with the numbers of a constant of that value."""
    params = {"w": jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32)}
    grads = {"w": jnp.linspace(2.0, -3.0, 8, dtype=jnp.float32)}
    state = jrmsprop.rmsprop(0.1, momentum=0.9).init(params)

    @jax.jit
    def step(p, s, g, lr, rho):
        return jrmsprop.update_and_apply(jrmsprop.rmsprop(lr, rho, momentum=0.9), g, s, p)

    for lr, rho in ((0.1, 0.9), (0.02, 0.8)):
        got = step(params, state, grads, jnp.float32(lr), jnp.float32(rho))
        want = reference(jrmsprop.rmsprop(lr, rho, momentum=0.9), params, [grads])
        chex.assert_trees_all_equal(got, want)
    assert step._cache_size() == 1


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("jit", [False, True])
def test_a_none_parameter_leaf_with_a_gradient_is_refused_naming_params(fused, jit):
    """tx.update takes a None parameter leaf; update_and_apply has nothing to add the step to:
    a ValueError naming `params` and the leaf, before anything runs (not the kernel's or
    apply_updates's internal error)."""
    tx = jrmsprop.rmsprop(0.1, momentum=0.9)
    params = {"w": jnp.ones(2), "layers": [jnp.ones(3), jnp.ones((2, 2))]}
    state = tx.update(params, tx.init(params), params)[1]  # not all zeros
    snapshot = jax.tree.map(np.array, (params, state))
    bad = {**params, "layers": [params["layers"][0], None]}

    def call(g, s, p):
        return jrmsprop.update_and_apply(tx, g, s, p, fused=fused)

    fn = jax.jit(call) if jit else call
    with pytest.raises(ValueError) as info:
        fn(params, state, bad)
    message = str(info.value)
    assert message.startswith("update_and_apply: `params` at ['layers'][1] is None"), message
    chex.assert_trees_all_equal((params, state), snapshot)  # nothing changed
    # a None gradient there too is a leaf that is not trained: it passes through
    grads = {**params, "layers": [params["layers"][0], None]}
    got_p, got_s = fn(grads, state, bad)
    assert got_p["layers"][1] is None
    want_u, want_s = tx.update(grads, state, bad)
    chex.assert_trees_all_equal(got_s, want_s)
    chex.assert_trees_all_equal(got_p["w"], optax.apply_updates(params["w"], want_u["w"]))


def test_a_none_parameter_leaf_of_the_sweep_is_refused():
    tx = jrmsprop.rmsprop(0.1)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"`params` at \['w'\] is None"):
        jrmsprop.update_and_apply(tx, {"w": jnp.ones(2)}, state, {"w": None})
