"""The fused CPU kernel (jrmsprop/_src/cpu_kernel.py) equals the XLA path bit for bit.

The reference is ``arithmetic.rmsprop_step`` compiled by XLA:CPU -- the path the kernel replaces
-- on the same inputs; every output is compared as raw float32 bits (so ±0 and flushed denormals
count), except that a NaN only has to be a NaN: when two NaNs meet in a sum, which one (and so
which sign bit) comes out depends on the order in which the compiler put the operands of the
machine instruction, which neither path controls.
"""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrmsprop
from jrmsprop._src import arithmetic, cpu_kernel

needs_kernel = pytest.mark.skipif(
    not cpu_kernel.available() or jax.default_backend() != "cpu",
    reason=f"CPU kernel not available: {cpu_kernel.unavailable_reason()}",
)

# The Keras 2 variants: (momentum slot, centered) -> ε inside the root and TF's fused order exactly
# when there is a momentum slot. TF1 is the momentum rows (it always keeps the slot).
KERAS2 = {
    "plain": (False, False),
    "momentum": (True, False),
    "centered": (False, True),
    "centered_momentum": (True, True),
}


def variant_for(momentum: bool, eps_in_sqrt: bool | None = None, fused: bool | None = None):
    base = arithmetic.Rule().variant(has_momentum_slot=momentum)
    return base._replace(
        eps_in_sqrt=base.eps_in_sqrt if eps_in_sqrt is None else eps_in_sqrt,
        fused_order=base.fused_order if fused is None else fused,
    )


def scalars(lr=0.01, rho=0.9, mu=0.9, eps=1e-7, decay=0.01, step=3):
    hp = arithmetic.Hyperparams(
        *(jnp.asarray(v, jnp.float32) for v in (lr, rho, mu, eps, decay, 0.0)),
        step=jnp.asarray(step, jnp.int32),
    )
    return arithmetic.resolve(hp, None, jnp.float32, arithmetic.Rule())


def xla_step(g, rms, mom, mg, sc, variant):
    return jax.jit(
        lambda g, rms, mom, mg, sc: arithmetic.rmsprop_step(
            g, None, rms, mom, mg, sc, variant, jnp.float32
        )
    )(g, rms, mom, mg, sc)


def fused_step(g, rms, mom, mg, sc, variant, *, param=None, **kw):
    """One leaf through ``cpu_kernel.fused_steps``: ``(first, rms, mom, mg)``."""
    one = lambda x: None if x is None else [x]
    out = cpu_kernel.fused_steps(
        [g], [rms], one(mom), one(mg), sc, variant, params=one(param), **kw
    )
    return tuple(None if x is None else x[0] for x in out)


def kernel_step(g, rms, mom, mg, sc, variant, **kw):
    return jax.jit(lambda g, rms, mom, mg, sc: fused_step(g, rms, mom, mg, sc, variant, **kw))(
        g, rms, mom, mg, sc
    )


def bits(x) -> np.ndarray:
    """The float32 bit patterns, every NaN mapped to one pattern."""
    x = np.asarray(x, np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), x).view(np.uint32)


def assert_same_bits(got, want, what=""):
    got, want = bits(got), bits(want)
    assert got.shape == want.shape
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} elements differ, first at {bad[0]}: "
        f"{got.view(np.float32)[bad[0]]!r} vs {want.view(np.float32)[bad[0]]!r}"
    )


def assert_outputs_equal(got, want):
    for name, a, b in zip(("delta", "rms", "mom", "mg"), got, want, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            assert_same_bits(a, b, name)


def random_inputs(n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal(n) * scale).astype(np.float32)
    rms = rng.random(n).astype(np.float32) * np.float32(scale * scale)
    mom = (rng.standard_normal(n) * 0.01).astype(np.float32)
    mg = (rng.standard_normal(n) * 0.1 * scale).astype(np.float32)
    return g, rms, mom, mg


def slots(momentum, centered, mom, mg):
    return (mom if momentum else None), (mg if centered else None)


def test_builds_here():
    """Where a C++ compiler exists (and the kernel is not disabled), the kernel must build."""
    if os.environ.get(cpu_kernel.DISABLE_ENV):
        pytest.skip(f"{cpu_kernel.DISABLE_ENV} is set")
    if not any(shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on this machine")
    assert cpu_kernel.available(), cpu_kernel.unavailable_reason()
    assert cpu_kernel.unavailable_reason() is None


def test_a_jax_without_ffi_keeps_the_xla_path_and_says_why(monkeypatch):
    """A jax without ``jax.ffi`` (before 0.5.0, below the declared floor but installable with
    ``--no-deps``): the kernel is unavailable, for that reason."""
    monkeypatch.delenv(cpu_kernel.DISABLE_ENV, raising=False)
    monkeypatch.setattr(cpu_kernel, "_state", {})
    monkeypatch.delattr(jax, "ffi", raising=False)
    assert not cpu_kernel.available()
    assert cpu_kernel.unavailable_reason() == (
        f"RuntimeError: the kernel needs jax.ffi (jax >= 0.5.0); this is jax {jax.__version__}"
    )


def test_instruction_set_is_part_of_the_cache_key(monkeypatch):
    """An AVX2 build is cached under another name than a baseline build, so a cache directory
    shared with a CPU without AVX2 never hands that CPU the AVX2 library."""
    cxx = shutil.which("c++") or "c++"
    monkeypatch.setattr(cpu_kernel, "isa_flags", lambda: ("-mavx2",))
    with_avx2 = cpu_kernel._library_path(cxx)
    monkeypatch.setattr(cpu_kernel, "isa_flags", lambda: ())
    assert cpu_kernel._library_path(cxx) != with_avx2
    monkeypatch.undo()
    flags = cpu_kernel.isa_flags()
    assert flags in ((), ("-mavx2",))
    if flags:  # only offered where the CPU says it has it
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            assert "avx2" in f.read().split()


@needs_kernel
def test_hand_computed_values():
    """One element by hand: g = 10, rms = 0, lr = 0.1, ρ = 0.9, ε = 1e-7 (outside the root)."""
    sc = scalars(lr=0.1, decay=0.0, step=0)
    g = jnp.array([10.0, -2.0], jnp.float32)
    delta, rms, mom, mg = fused_step(
        g, jnp.zeros(2, jnp.float32), None, None, sc, variant_for(False)
    )
    omr = np.float32(1) - np.float32(0.9)  # 1 − 0.9f = 0.10000002
    rms_want = omr * np.float32([100.0, 4.0])
    root = np.sqrt(rms_want)
    delta_want = (np.float32(0.1) * np.float32([10.0, -2.0])) / (root + np.float32(1e-7))
    assert_same_bits(rms, rms_want, "rms")
    assert_same_bits(delta, delta_want, "delta")
    assert mom is None and mg is None
    np.testing.assert_allclose(
        np.asarray(delta), [0.1 / np.sqrt(0.1)] * 2 * np.sign([10, -2]), rtol=1e-6
    )


@needs_kernel
@pytest.mark.parametrize("name", list(KERAS2))
@pytest.mark.parametrize("n", [1, 7, 1023, (1 << 20) + 3])
@pytest.mark.slow
def test_keras2_variants_bit_identical(name, n):
    momentum, centered = KERAS2[name]
    g, rms, mom, mg = random_inputs(n, seed=n)
    mom, mg = slots(momentum, centered, mom, mg)
    sc, variant = scalars(), variant_for(momentum)
    want = xla_step(g, rms, mom, mg, sc, variant)
    got = kernel_step(g, rms, mom, mg, sc, variant)
    assert_outputs_equal(got, want)


@needs_kernel
@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("eps_in_sqrt", [False, True])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.slow
def test_every_placement_and_order(momentum, centered, eps_in_sqrt, fused):
    """All 16 combinations (ε inside/outside × fused/op order × slots), ε = 1 and ρ = 0.5."""
    g, rms, mom, mg = random_inputs(4099, seed=7, scale=3.0)
    mom, mg = slots(momentum, centered, mom, mg)
    sc, variant = (
        scalars(lr=0.3, rho=0.5, mu=0.5, eps=1.0),
        variant_for(momentum, eps_in_sqrt, fused),
    )
    assert_outputs_equal(
        kernel_step(g, rms, mom, mg, sc, variant), xla_step(g, rms, mom, mg, sc, variant)
    )


def special_inputs(n_repeat: int):
    """Zeros, ±0, denormals, the smallest normals, huge values, ±inf and NaN in every operand."""
    tiny = np.finfo(np.float32).tiny
    values = np.array(
        [0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39, tiny, -tiny, 1e-20, 1e-19, 1.0, -1.0,
         3e19, 1e30, -1e30, 3e38, np.inf, -np.inf, np.nan],
        np.float32,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    m = values.size
    # every (grad, rms) pair once, then random picks for the other slots; tiled n_repeat times
    g = np.repeat(values, m)
    rms = np.abs(np.tile(values, m))
    rms = np.where(np.isnan(rms), np.float32(0.5), rms)  # rms ≥ 0 (NaN rms kept below)
    rms[::37] = np.nan
    mom = rng.choice(values, g.size)
    mg = rng.choice(values, g.size)
    return tuple(np.tile(x, n_repeat) for x in (g, rms, mom, mg))


@needs_kernel
@pytest.mark.parametrize("name", list(KERAS2))
@pytest.mark.parametrize("n_repeat", [1, 800])  # 800: 288,800 elements, several threads' chunks
def test_special_values(name, n_repeat):
    momentum, centered = KERAS2[name]
    g, rms, mom, mg = special_inputs(n_repeat)
    mom, mg = slots(momentum, centered, mom, mg)
    sc, variant = scalars(), variant_for(momentum)
    want = xla_step(g, rms, mom, mg, sc, variant)
    got = kernel_step(g, rms, mom, mg, sc, variant)
    assert_outputs_equal(got, want)


@needs_kernel
@pytest.mark.parametrize("n", [5, 1 << 19])
def test_denormals_are_flushed_like_xla(n):
    """XLA:CPU flushes denormal inputs and results to zero; the kernel's threads do too.

    rms = 1e-39 (a denormal) decays to ρ·rms = 9e-40 in exact arithmetic (NumPy keeps it); XLA
    reads it as 0. With g = 1e-20, g² = 1e-40 is flushed as well, so the new rms is exactly 0.
    Spread over 2¹⁹ elements, this covers the chunks that run on the thread pool.
    """
    g = np.full(n, 1e-20, np.float32)
    g[::2] = 0.0
    rms = np.full(n, 1e-39, np.float32)
    sc, variant = scalars(), variant_for(False)
    want = xla_step(g, rms, None, None, sc, variant)
    assert np.all(bits(want[1]) == 0), "XLA:CPU no longer flushes denormals: revisit the kernel"
    assert np.asarray(sc.rho) * rms[0] != 0  # NumPy does not flush: the test is not vacuous
    got = kernel_step(g, rms, None, None, sc, variant)
    assert_outputs_equal(got, want)


@needs_kernel
@pytest.mark.parametrize("name", list(KERAS2))
def test_several_steps_donated(name):
    """Six steps in a donated jit loop (slots updated in place) track the XLA path exactly."""
    momentum, centered = KERAS2[name]
    n = (1 << 18) + 5
    _, rms0, mom0, mg0 = random_inputs(n, seed=3)
    variant = variant_for(momentum)
    mom0, mg0 = slots(momentum, centered, mom0, mg0)

    ref = jax.jit(
        lambda g, r, m, c, sc: arithmetic.rmsprop_step(g, None, r, m, c, sc, variant, jnp.float32)
    )
    fused = jax.jit(
        lambda g, r, m, c, sc: fused_step(g, r, m, c, sc, variant),
        donate_argnums=(1, 2, 3),
    )
    state_ref = (jnp.asarray(rms0), None if mom0 is None else jnp.asarray(mom0),
                 None if mg0 is None else jnp.asarray(mg0))  # fmt: skip
    state_k = tuple(None if x is None else jnp.array(x, copy=True) for x in state_ref)
    rng = np.random.default_rng(5)
    for step in range(6):
        g = jnp.asarray(rng.standard_normal(n).astype(np.float32))
        if step == 2:
            g = jnp.zeros_like(g)  # a zero gradient step
        sc = scalars(step=step)
        want = ref(g, *state_ref, sc)
        got = fused(g, *state_k, sc)
        assert_outputs_equal(got, want)
        state_ref, state_k = want[1:], got[1:]


@needs_kernel
def test_inputs_not_overwritten_without_donation():
    """Without donation XLA copies the aliased slots: the caller's arrays keep their values."""
    g, rms, mom, mg = (jnp.asarray(x) for x in random_inputs(1 << 18, seed=9))
    before = [np.array(x) for x in (rms, mom, mg)]
    out = fused_step(g, rms, mom, mg, scalars(), variant_for(True))
    jax.block_until_ready(out)
    for x, x0 in zip((rms, mom, mg), before, strict=True):
        assert_same_bits(x, x0, "input slot")
    assert not np.array_equal(np.asarray(out[1]), before[0])


@needs_kernel
@pytest.mark.parametrize("name", list(KERAS2))
@pytest.mark.slow
def test_update_and_param_outputs(name):
    """``output="update"`` is −delta and ``output="param"`` is ``optax.apply_updates``'s p + u."""
    momentum, centered = KERAS2[name]
    n = 300_001
    g, rms, mom, mg = random_inputs(n, seed=11)
    p = np.random.default_rng(12).standard_normal(n).astype(np.float32)
    mom, mg = slots(momentum, centered, mom, mg)
    sc, variant = scalars(), variant_for(momentum)
    delta, *slots_want = xla_step(g, rms, mom, mg, sc, variant)
    u = kernel_step(g, rms, mom, mg, sc, variant, output="update")
    assert_same_bits(u[0], -delta, "update")
    assert_outputs_equal((None, *u[1:]), (None, *slots_want))
    p_new = jax.jit(
        lambda p, *a: fused_step(*a, sc, variant, output="param", param=p),
        donate_argnums=0,
    )(jnp.asarray(p), g, rms, mom, mg)
    want_p = jax.jit(lambda p, d: p + (-d))(p, delta)  # optax.apply_updates
    assert_same_bits(p_new[0], want_p, "param")
    assert_outputs_equal((None, *p_new[1:]), (None, *slots_want))
    # the update written over the gradient: a gradient made inside the jit, and a caller's
    # gradient (not donated: XLA copies it first, the caller's array keeps its values)
    g_dev = jnp.asarray(g)
    for output, want_first in (("update", -delta), ("delta", delta)):
        inside = jax.jit(
            lambda w, *a, output=output: fused_step(
                a[0] * w, *a[1:], sc, variant, output=output, overwrite_grad=True
            )
        )(jnp.float32(1.0), g_dev, rms, mom, mg)
        assert_outputs_equal(inside, (want_first, *slots_want))
        outside = kernel_step(g_dev, rms, mom, mg, sc, variant, output=output, overwrite_grad=True)
        assert_outputs_equal(outside, (want_first, *slots_want))
    assert_same_bits(g_dev, g, "caller's gradient")


@needs_kernel
def test_single_thread_and_vmap(monkeypatch):
    """The one-thread path and ``vmap`` (one call per batch element) give the same bits."""
    g, rms, mom, mg = random_inputs(3 * 70_001, seed=13)
    shape = (3, 70_001)
    g, rms, mom, mg = (x.reshape(shape) for x in (g, rms, mom, mg))
    sc, variant = scalars(), variant_for(True)
    want = xla_step(g, rms, mom, mg, sc, variant)
    batched = jax.jit(jax.vmap(lambda g, r, m, c: fused_step(g, r, m, c, sc, variant)))(
        g, rms, mom, mg
    )
    assert_outputs_equal(batched, want)
    monkeypatch.setenv(cpu_kernel.THREADS_ENV, "1")
    big = random_inputs(1 << 19, seed=14)
    assert_outputs_equal(kernel_step(*big, sc, variant), xla_step(*big, sc, variant))


# ---- many leaves in one call -----------------------------------------------------------------

# Leaf sizes: empty, one element, odd sizes below a chunk (2**16), one chunk plus one, several
# chunks; 1.1M elements in all, so the call splits its work over the pool's threads.
MULTI_SIZES = (0, 1, 7, 256, 4097, (1 << 16) + 1, 3 * (1 << 16) + 5, 800_001)


def multi_inputs(sizes, seed):
    leaves = [random_inputs(n, seed=seed + i) for i, n in enumerate(sizes)]
    params = [np.random.default_rng(seed + 100 + i).standard_normal(n).astype(np.float32)
              for i, n in enumerate(sizes)]  # fmt: skip
    return [list(column) for column in zip(*leaves, strict=True)], params


@needs_kernel
@pytest.mark.parametrize("name", list(KERAS2))
@pytest.mark.parametrize("output", ["delta", "update", "param"])
@pytest.mark.slow
def test_many_leaves_in_one_call_equal_the_xla_path_leaf_by_leaf(name, output):
    """``fused_steps`` over leaves of mixed sizes: each leaf's outputs are the XLA step's bits."""
    momentum, centered = KERAS2[name]
    (gs, rmss, moms, mgs), ps = multi_inputs(MULTI_SIZES, seed=20)
    moms, mgs = slots(momentum, centered, moms, mgs)
    sc, variant = scalars(), variant_for(momentum)
    params = ps if output == "param" else None
    call = jax.jit(
        lambda gs, rmss, moms, mgs, params: cpu_kernel.fused_steps(
            gs, rmss, moms, mgs, sc, variant, output=output, params=params
        )
    )
    lowered = call.lower(gs, rmss, moms, mgs, params).compile().as_text()
    assert lowered.count(f'custom_call_target="{cpu_kernel.TARGET}"') == 1
    firsts, new_rms, new_moms, new_mgs = call(gs, rmss, moms, mgs, params)
    for i in range(len(MULTI_SIZES)):
        delta, *want_slots = xla_step(
            gs[i], rmss[i], None if moms is None else moms[i], None if mgs is None else mgs[i],
            sc, variant,
        )  # fmt: skip
        want_first = {"delta": delta, "update": -delta, "param": ps[i] + (-delta)}[output]
        got = (
            firsts[i],
            new_rms[i],
            None if new_moms is None else new_moms[i],
            None if new_mgs is None else new_mgs[i],
        )
        assert_outputs_equal(got, (want_first, *want_slots))


@needs_kernel
@pytest.mark.slow
def test_many_leaves_one_thread_and_many_small_leaves(monkeypatch):
    """Many leaves smaller than a chunk (each one segment, 700K elements in all: threaded), and
    the same call on one thread, give the bits of the XLA path."""
    sizes = [8000 + 37 * i for i in range(75)]
    (gs, rmss, moms, mgs), _ = multi_inputs(sizes, seed=40)
    sc, variant = scalars(), variant_for(True)
    # The XLA step is elementwise: one call on the concatenated leaves, cut back into leaves,
    # gives each leaf's bits (and compiles once instead of once per leaf size).
    whole = xla_step(*(jnp.concatenate(c) for c in (gs, rmss, moms, mgs)), sc, variant)
    cuts = np.cumsum(sizes)[:-1]
    want = list(zip(*(jnp.split(x, cuts) for x in whole), strict=True))
    for threads in ("", "1"):
        monkeypatch.setenv(cpu_kernel.THREADS_ENV, threads)
        firsts, new_rms, new_moms, new_mgs = jax.jit(
            lambda *a: cpu_kernel.fused_steps(*a, sc, variant)
        )(gs, rmss, moms, mgs)
        for i, w in enumerate(want):
            assert_outputs_equal((firsts[i], new_rms[i], new_moms[i], new_mgs[i]), w)


@needs_kernel
def test_many_leaves_bad_arguments_name_the_leaf():
    g = jnp.zeros(4, jnp.float32)
    sc, variant = scalars(), variant_for(False)
    with pytest.raises(ValueError, match=r"fused_steps: `rms` has 1 leaves, `grads` has 2"):
        cpu_kernel.fused_steps([g, g], [g], None, None, sc, variant)
    with pytest.raises(ValueError, match=r"`rms\[1\]` has shape \(5,\), `grads\[1\]` has shape"):
        cpu_kernel.fused_steps([g, g], [g, jnp.zeros(5, jnp.float32)], None, None, sc, variant)
    with pytest.raises(TypeError, match=r"`grads\[0\]` must be float32, got bfloat16"):
        cpu_kernel.fused_steps([g.astype(jnp.bfloat16), g], [g, g], None, None, sc, variant)
    with pytest.raises(TypeError, match=r"`params\[1\]` must be float32, got bfloat16"):
        cpu_kernel.fused_steps(
            [g, g], [g, g], None, None, sc, variant, output="param",
            params=[g, g.astype(jnp.bfloat16)],
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"`params` are needed exactly when output='param'"):
        cpu_kernel.fused_steps([g], [g], None, None, sc, variant, output="param")
    assert cpu_kernel.fused_steps([], [], None, None, sc, variant) == ([], [], None, None)


@needs_kernel
def test_bad_arguments_name_the_argument():
    g = jnp.zeros(4, jnp.float32)
    sc, variant = scalars(), variant_for(False)
    with pytest.raises(TypeError, match=r"`grads\[0\]` must be float32"):
        fused_step(g.astype(jnp.bfloat16), g, None, None, sc, variant)
    with pytest.raises(ValueError, match=r"`rms\[0\]` has shape"):
        fused_step(g, jnp.zeros(5, jnp.float32), None, None, sc, variant)
    with pytest.raises(ValueError, match=r"`mom\[0\]` has shape"):
        fused_step(g, g, jnp.zeros((2, 2), jnp.float32), None, sc, variant)
    with pytest.raises(ValueError, match="`output`"):
        fused_step(g, g, None, None, sc, variant, output="params")
    with pytest.raises(ValueError, match="`params`"):
        fused_step(g, g, None, None, sc, variant, output="param")
    with pytest.raises(ValueError, match="`overwrite_grad`"):
        fused_step(g, g, None, None, sc, variant, output="param", param=g,
                              overwrite_grad=True)  # fmt: skip
    with pytest.raises(ValueError, match="does not compute"):
        fused_step(g, g, None, None, sc, variant._replace(maximize=True))
    assert not cpu_kernel.supports(variant._replace(lr_in_momentum=False))
    assert cpu_kernel.supports(variant)
    with pytest.raises(TypeError, match="scalars.lr"):
        fused_step(g, g, None, None, sc._replace(lr=jnp.ones(2)), variant)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernel.DISABLE_ENV, "1")
    assert not cpu_kernel.available()
    assert cpu_kernel.DISABLE_ENV in cpu_kernel.unavailable_reason()
    g = jnp.zeros(3, jnp.float32)
    with pytest.raises(RuntimeError, match="not available"):
        fused_step(g, g, None, None, scalars(), variant_for(False))


def test_failed_build_falls_back(monkeypatch, tmp_path):
    """A compiler that fails (here ``false``) makes ``available()`` False, without raising."""
    if not shutil.which("false"):
        pytest.skip("no `false` command")
    monkeypatch.delenv(cpu_kernel.DISABLE_ENV, raising=False)
    monkeypatch.setenv("CXX", shutil.which("false"))
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cpu_kernel, "_state", {})
    assert cpu_kernel.available() is False
    assert "failed" in cpu_kernel.unavailable_reason()
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind
    with pytest.raises(RuntimeError, match="failed"):
        cpu_kernel.build()


# ---- wired into the core's update-and-apply path (used by the stateful wrapper) ---------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.slow
def test_core_apply_path_takes_the_kernel_and_matches_the_xla_path(momentum, centered):
    if not cpu_kernel.available():
        pytest.skip(cpu_kernel.unavailable_reason())
    tx = jrmsprop.rmsprop(0.01, momentum=momentum, centered=centered, decay=0.01)
    rng = np.random.default_rng(7)
    params = {
        "w": jnp.asarray(rng.normal(size=(33, 7)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=7), jnp.float32),
        "h": jnp.asarray(rng.normal(size=5), jnp.bfloat16),  # not float32: the XLA path
    }
    fused = jax.jit(lambda g, s, p: jrmsprop.update_and_apply(tx, g, s, p, fused=True))
    plain = jax.jit(lambda g, s, p: jrmsprop.update_and_apply(tx, g, s, p, fused=False))
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    hlo = fused.lower(grads, state, params).as_text()
    assert "jrmsprop_rmsprop_f32" in hlo  # the kernel is really called
    assert "jrmsprop_rmsprop_f32" not in plain.lower(grads, state, params).as_text()
    p1, s1, p2, s2 = params, state, params, state
    for _ in range(5):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        p1, s1 = fused(grads, s1, p1)
        p2, s2 = plain(grads, s2, p2)
        u, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, u)
    for a, b, c in zip(
        jax.tree.leaves((p1, s1)),
        jax.tree.leaves((p2, s2)),
        jax.tree.leaves((params, state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(c, np.float32))


def test_wrapper_keeps_the_sharding_of_variables_laid_out_over_devices():
    """The kernel would gather a sharded array: the wrapper keeps the XLA path for those."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.array(jax.devices()[:2])
    if devices.size < 2:
        pytest.skip("needs 2 devices")
    sharding = NamedSharding(Mesh(devices, ("d",)), PartitionSpec("d"))
    value = jax.device_put(jnp.arange(8, dtype=jnp.float32), sharding)
    var = jrmsprop.Variable(value, name="w")
    plain = jrmsprop.Variable(jnp.arange(8, dtype=jnp.float32), name="p")
    opt = jrmsprop.RMSprop(0.1, momentum=0.9)
    ref = jrmsprop.RMSprop(0.1, momentum=0.9)
    for _ in range(3):
        opt.apply_gradients([(jnp.ones(8) * 0.5, var)])
        ref.apply_gradients([(jnp.ones(8) * 0.5, plain)])
    assert var.value.sharding == sharding
    np.testing.assert_array_equal(np.asarray(var.value), np.asarray(plain.value))


@needs_kernel
def test_wrapper_takes_the_kernel_only_for_arrays_on_one_device(monkeypatch):
    """The wrapper's compiled step calls the kernel for variables on one device, and keeps the
    XLA path as soon as one variable spans several (decided when the step is lowered)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jrmsprop._src import optimizer as optimizer_lib

    devices = np.array(jax.devices()[:2])
    if devices.size < 2:
        pytest.skip("needs 2 devices")
    sharding = NamedSharding(Mesh(devices, ("d",)), PartitionSpec("d"))
    calls = []
    step = optimizer_lib._step

    def recording_step(*args, **kwargs):
        calls.append(step.lower(*args, **kwargs).compile().as_text())
        return step(*args, **kwargs)

    monkeypatch.setattr(optimizer_lib, "_step", recording_step)
    for layout in (None, sharding):
        values = [jnp.arange(8, dtype=jnp.float32), jnp.ones(8, jnp.float32)]
        if layout is not None:
            values[1] = jax.device_put(values[1], layout)
        variables = [jrmsprop.Variable(v, name=f"v{i}") for i, v in enumerate(values)]
        jrmsprop.RMSprop(0.1, momentum=0.9).apply_gradients(
            [(jnp.full(8, 0.5, jnp.float32), v) for v in variables]
        )
    single, spanning = calls
    assert single.count(f'custom_call_target="{cpu_kernel.TARGET}"') == 1  # both variables
    assert cpu_kernel.TARGET not in spanning


def test_a_branch_closing_over_a_traced_value_still_lowers_alone():
    """``where_kernel_runs`` with branches that close over a value of the enclosing ``jit``: the
    value becomes an operand, and only the branch taken is lowered. Markers: the "kernel" takes a
    sine, the fallback a cosine."""

    def f(a, x):
        return cpu_kernel.where_kernel_runs(lambda a: jnp.sin(a * x), lambda a: jnp.cos(a * x), a)

    a = jnp.arange(4.0, dtype=jnp.float32)
    xs = jnp.array([1.0, 2.0], jnp.float32)
    text = jax.jit(f).lower(a, 2.0).as_text()
    assert "sine" in text and "cosine" not in text
    np.testing.assert_array_equal(jax.jit(f)(a, 2.0), jnp.sin(a * 2.0))
    batched = jax.jit(jax.vmap(f, in_axes=(None, 0)))
    assert "cosine" not in batched.lower(a, xs).as_text()
    np.testing.assert_array_equal(batched(a, xs), jnp.sin(a[None] * xs[:, None]))
    # derivatives go through the fallback (the kernel, a foreign call, has none)
    _, tangent = jax.jvp(lambda x: f(a, x), (2.0,), (1.0,))
    np.testing.assert_allclose(tangent, -a * jnp.sin(a * 2.0), rtol=1e-6)
