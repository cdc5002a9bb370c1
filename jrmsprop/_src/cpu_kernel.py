"""A fused one-pass float32 RMSprop step for XLA:CPU, through ``jax.ffi`` (optional).

XLA:CPU emits one loop per output of a fusion, so the jitted dense step re-reads the gradient and
the slots once for every output it writes. :func:`fused_step` runs the same arithmetic as
:func:`jrmsprop._src.arithmetic.rmsprop_step` -- same order, same roundings, no fused
multiply-add, ``a / sqrt(b)`` kept a division, denormals flushed as XLA:CPU flushes them -- in one
pass written in C++ (``csrc/rmsprop_cpu.cc``), so its results equal the XLA path's bit for bit.

The shared library is compiled lazily, on first use, with the system C++ compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``) against the XLA FFI headers that ship with jaxlib, and cached in
``$JRMSPROP_CACHE_DIR`` (default ``$XDG_CACHE_HOME/jrmsprop``, i.e. ``~/.cache/jrmsprop``) under a
name keyed by the source, the flags, the compiler and the jaxlib version. A lazy build (about 5 s
once) keeps the package pure Python: a wheel needs no compiler, and the library always matches the
jaxlib that loads it. When there is no compiler, the build fails or
``JRMSPROP_DISABLE_CPU_KERNEL=1`` is set, :func:`available` returns False and callers keep the
XLA path; nothing raises.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Primitive, jaxpr_as_fun
from jax.interpreters import ad, batching, mlir

from jrmsprop._src import arithmetic

TARGET = "jrmsprop_rmsprop_f32"
SOURCE = Path(__file__).with_name("csrc") / "rmsprop_cpu.cc"
DISABLE_ENV = "JRMSPROP_DISABLE_CPU_KERNEL"
CACHE_ENV = "JRMSPROP_CACHE_DIR"
THREADS_ENV = "JRMSPROP_CPU_KERNEL_THREADS"  # at most this many threads (default: XLA's pool)

#: No FMA contraction, no fast-math; -fno-math-errno only lets ``sqrt`` vectorise (same results).
CXXFLAGS = (
    "-O3",
    "-std=c++17",
    "-fno-fast-math",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fPIC",
    "-shared",
    "-pthread",
)


@functools.cache
def isa_flags() -> tuple[str, ...]:
    """``("-mavx2",)`` on an x86-64 Linux CPU that has AVX2, else ``()`` (read once).

    Eight floats per instruction instead of four: the square root and the division then keep up
    with memory (measured: the centered step 0.70x the SSE2 build's time on a 16M leaf). AVX2's
    add, multiply, divide and square root round exactly as SSE2's, and FMA stays off, so the
    results are the same bits. The flag is part of the cache key, so a cache shared with a
    machine without AVX2 never hands it this build.
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ()
    return ("-mavx2",) if "avx2" in flags.split() else ()


def compile_flags() -> tuple[str, ...]:
    """The compiler flags of the build: :data:`CXXFLAGS` and this CPU's :func:`isa_flags`."""
    return CXXFLAGS + isa_flags()


_OUTPUT = {"delta": 0, "update": 1, "param": 2}

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "ok": bool, "error": str | None, "path": Path | None


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cache_dir() -> Path:
    """Where the compiled library is kept (``$JRMSPROP_CACHE_DIR`` or ``~/.cache/jrmsprop``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jrmsprop"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_id(cxx: str) -> str:
    try:
        proc = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return proc.stdout.splitlines()[0] if proc.stdout else cxx
    except (OSError, subprocess.SubprocessError):
        return cxx


def _library_path(cxx: str) -> Path:
    import jaxlib.version

    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(compile_flags()).encode(),
        _compiler_id(cxx).encode(),
        jaxlib.version.__version__.encode(),
        sys.platform.encode(),
        os.uname().machine.encode() if hasattr(os, "uname") else b"",
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"rmsprop_cpu-{key.hexdigest()[:20]}.so"


def build(force: bool = False) -> Path:
    """Compiles ``csrc/rmsprop_cpu.cc`` into the cache (if not there yet) and returns its path.

    Raises:
      RuntimeError: no C++ compiler, a jax without ``jax.ffi`` (before 0.5.0), or the
        compilation failed (with the compiler's message).
    """
    if getattr(jax, "ffi", None) is None:
        version = jax.__version__
        raise RuntimeError(f"the kernel needs jax.ffi (jax >= 0.5.0); this is jax {version}")
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++ or clang++)")
    if not SOURCE.is_file():
        raise RuntimeError(f"the kernel source {SOURCE} is not installed with the package")
    path = _library_path(cxx)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + "-", suffix=".so.tmp", dir=path.parent)
    os.close(fd)
    cmd = [cxx, *compile_flags(), "-isystem", jax.ffi.include_dir(), "-o", tmp, str(SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}"
            )
        os.replace(tmp, path)  # atomic: concurrent builders (pytest-xdist) never see half a file
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"compiling {SOURCE.name} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _load() -> None:
    """Builds, loads and registers the FFI target once per process; records why not if it fails."""
    with _lock:
        if _state:
            return
        if _disabled():
            _state.update(ok=False, error=f"disabled by {DISABLE_ENV}", path=None)
            return
        try:
            path = build()
            lib = ctypes.cdll.LoadLibrary(str(path))
            jax.ffi.register_ffi_target(
                TARGET, jax.ffi.pycapsule(lib.JrmspropRmspropF32), platform="cpu"
            )
        except Exception as e:  # noqa: BLE001 -- any failure means "use the XLA path"
            _state.update(ok=False, error=f"{type(e).__name__}: {e}", path=None)
            return
        _state.update(ok=True, error=None, path=path)


def available() -> bool:
    """Whether :func:`fused_step` can be used (compiled, loaded and not disabled).

    Never raises: without a C++ compiler, with a failed build, or with
    ``JRMSPROP_DISABLE_CPU_KERNEL=1``, it returns False (:func:`unavailable_reason` says why).
    The environment variable is read on every call, so it can be set after import.
    """
    if _disabled():
        return False
    _load()
    return bool(_state["ok"])


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    if _disabled():
        return f"disabled by {DISABLE_ENV}"
    _load()
    return _state["error"]


def _max_threads() -> int:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return 0
    try:
        threads = int(value)
    except ValueError as e:
        raise ValueError(f"${THREADS_ENV} must be an integer, got {value!r}") from e
    if threads < 0:
        raise ValueError(f"${THREADS_ENV} must be >= 0 (0: XLA's pool size), got {threads}")
    return threads


def scalar_vector(sc: arithmetic.Scalars, who: str = "fused_step") -> jax.Array:
    """``float32[5]``: ``(lr, rho, one_minus_rho, momentum, epsilon)`` as the kernel reads them."""
    parts = (sc.lr, sc.rho, sc.one_minus_rho, sc.momentum, sc.epsilon)
    for name, x in zip(("lr", "rho", "one_minus_rho", "momentum", "epsilon"), parts, strict=True):
        if jnp.shape(x) != () or jnp.result_type(x) != jnp.float32:
            raise TypeError(
                f"{who}: scalars.{name} must be a float32 scalar, got "
                f"{jnp.result_type(x).name}{list(jnp.shape(x))}"
            )
    return jnp.stack([jnp.asarray(x) for x in parts])


def _check_leaf(who: str, name: str, x: Any, shape: tuple[int, ...], grad_name: str) -> None:
    """``x`` (named ``name``) is float32 of the gradient's ``shape`` (named ``grad_name``)."""
    if jnp.result_type(x) != jnp.float32:
        raise TypeError(f"{who}: `{name}` must be float32, got {jnp.result_type(x).name}")
    if tuple(jnp.shape(x)) != shape:
        raise ValueError(
            f"{who}: `{name}` has shape {tuple(jnp.shape(x))}, `{grad_name}` has shape {shape}"
        )


def supports(variant: arithmetic.Variant) -> bool:
    """Whether the kernel computes ``variant`` (lr inside the momentum buffer, dense, no weight
    decay, no ``maximize``: TF 2.x Keras and TF1); any ε placement and evaluation order."""
    return (
        variant.lr_in_momentum
        and not variant.decoupled_weight_decay
        and not variant.maximize
        and not variant.sparse_fused_order
    )


#: The argument names of :func:`fused_step` for the columns of :func:`fused_steps`.
_SINGULAR = {"grads": "grad", "rms": "rms", "mom": "mom", "mg": "mg", "params": "param"}


def fused_step(
    grad: jax.Array,
    rms: jax.Array,
    mom: jax.Array | None,
    mg: jax.Array | None,
    sc: arithmetic.Scalars,
    variant: arithmetic.Variant,
    *,
    output: str = "delta",
    param: jax.Array | None = None,
    overwrite_grad: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """One RMSprop step on a dense float32 leaf in one pass: :func:`arithmetic.rmsprop_step`.

    For the variants of :func:`supports` (TF 2.x Keras and TF1: ``lr`` inside the momentum
    buffer, no weight decay, no ``maximize``), bit for bit equal to the XLA path::

      rms ← ρ·rms + (1−ρ)·g²                fused order: rms + (g² − rms)·(1−ρ)
      mg  ← ρ·mg + (1−ρ)·g   (centered)     fused order: mg + (g − mg)·(1−ρ)
      v = rms − mg² (centered) or rms ;  denom = sqrt(v + ε) (eps_in_sqrt) or sqrt(v) + ε
      delta = lr·g / denom ;  with momentum: mom ← μ·mom + delta, delta = mom

    The slots are updated in place (``input_output_aliases``): inside a ``jit`` whose state
    arguments are donated no memory is copied; otherwise XLA copies each slot first.

    Args:
      grad: the gradient, float32.
      rms: the ``rms`` slot, float32, the shape of ``grad``.
      mom: the momentum slot, or None when there is none.
      mg: the ``mg`` slot (centered), or None.
      sc: the step's float32 scalars (:func:`arithmetic.resolve`); ``weight_decay`` is not read.
      variant: the formula (:meth:`arithmetic.Rule.variant`); must satisfy :func:`supports`.
      output: what the first result is: ``"delta"`` (the amount to subtract, as
        ``rmsprop_step``), ``"update"`` (``−delta``, the optax update) or ``"param"``
        (``param − delta``, the new parameter, written in place of ``param``).
      param: the parameter, float32, only with ``output="param"``.
      overwrite_grad: write the first result (``"delta"`` or ``"update"``) into the gradient's
        buffer (aliased). Saves a fresh buffer when the gradient is dead after the step (computed
        in the same ``jit``, or donated); otherwise XLA copies the gradient first.

    Returns:
      ``(first, rms, mom, mg)``: the ``output`` and the new slots (None where absent).

    Example:
      >>> import jax.numpy as jnp
      >>> from jrmsprop._src import arithmetic, cpu_kernel
      >>> hp = arithmetic.Hyperparams(*(jnp.float32(v) for v in (0.1, 0.9, 0, 1e-7, 0, 0)),
      ...                             step=jnp.int32(0))
      >>> sc = arithmetic.resolve(hp, None, jnp.float32, arithmetic.Rule())
      >>> variant = arithmetic.Rule().variant(has_momentum_slot=False)
      >>> g, rms = jnp.array([10.0], jnp.float32), jnp.zeros(1, jnp.float32)
      >>> if cpu_kernel.available():  # else the same numbers from the XLA path
      ...     out = cpu_kernel.fused_step(g, rms, None, None, sc, variant)
      ... else:
      ...     out = arithmetic.rmsprop_step(g, None, rms, None, None, sc, variant, jnp.float32)
      >>> print(out[0], out[1])  # delta = 0.1·10 / (sqrt(0.10000002·100) + 1e-7), rms
      [0.31622773] [10.000002]
    """
    if (param is None) != (output != "param"):
        raise ValueError("fused_step: `param` is needed exactly when output='param'")
    firsts, rmss, moms, mgs = fused_steps(
        [grad],
        [rms],
        None if mom is None else [mom],
        None if mg is None else [mg],
        sc,
        variant,
        output=output,
        params=None if param is None else [param],
        overwrite_grad=overwrite_grad,
        who="fused_step",
        _one_leaf=True,
    )
    return firsts[0], rmss[0], None if moms is None else moms[0], None if mgs is None else mgs[0]


def fused_steps(
    grads: list[jax.Array],
    rms: list[jax.Array],
    mom: list[jax.Array] | None,
    mg: list[jax.Array] | None,
    sc: arithmetic.Scalars,
    variant: arithmetic.Variant,
    *,
    output: str = "delta",
    params: list[jax.Array] | None = None,
    overwrite_grad: bool = False,
    who: str = "fused_steps",
    _one_leaf: bool = False,
) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array] | None, list[jax.Array] | None]:
    """:func:`fused_step` on many leaves in one kernel call: the same numbers, leaf by leaf.

    The leaves may differ in shape (each leaf's arrays share one); they share the scalars and the
    formula. The kernel cuts them into tasks of at most 64 Ki elements (a smaller leaf is one
    task) and spreads the tasks over XLA's thread pool. A call over a few dozen leaves compiles
    faster than one call per leaf; XLA's compile time grows much faster than the operands of one
    call, so a caller with hundreds of leaves makes several calls (see ``transform``).

    Args:
      grads, rms: lists of float32 arrays, leaf by leaf (each leaf's arrays of one shape).
      mom, mg: lists like ``rms``, or None when the slot is absent.
      sc, variant, output, overwrite_grad: as for :func:`fused_step`, shared by every leaf.
      params: the parameters (a list like ``rms``), only with ``output="param"``.
      who: the name that starts error messages.
      _one_leaf: name the arguments as :func:`fused_step` does (``grad``, not ``grads[0]``).

    Returns:
      ``(firsts, rms, mom, mg)``: lists, leaf by leaf (None for an absent slot).
    """
    if output not in _OUTPUT:
        raise ValueError(f"{who}: `output` must be one of {sorted(_OUTPUT)}, got {output!r}")
    if (params is None) != (output != "param"):
        raise ValueError(f"{who}: `params` are needed exactly when output='param'")
    if not isinstance(overwrite_grad, (bool, np.bool_)):
        raise TypeError(f"{who}: `overwrite_grad` must be True or False, got {overwrite_grad!r}")
    if overwrite_grad and output == "param":
        raise ValueError(f"{who}: `overwrite_grad` needs output='delta' or 'update'")
    if not isinstance(variant, arithmetic.Variant):
        raise TypeError(f"{who}: `variant` must be an arithmetic.Variant, got {variant!r}")
    if not supports(variant):
        raise ValueError(
            f"{who}: the CPU kernel does not compute {variant} (it needs lr_in_momentum, "
            "no decoupled weight decay, no maximize, dense order)"
        )
    if not available():
        raise RuntimeError(f"{who}: the CPU kernel is not available ({unavailable_reason()})")
    columns = {"grads": list(grads), "rms": list(rms)}
    for name, column in (("mom", mom), ("mg", mg), ("params", params)):
        if column is not None:
            columns[name] = list(column)
    n_leaves = len(columns["grads"])
    for name, column in columns.items():
        if len(column) != n_leaves:
            raise ValueError(f"{who}: `{name}` has {len(column)} leaves, `grads` has {n_leaves}")
    operands: list[Any] = [scalar_vector(sc, who)]
    results: list[jax.ShapeDtypeStruct] = []
    aliases: dict[int, int] = {}
    for i in range(n_leaves):
        shape = tuple(jnp.shape(columns["grads"][i]))
        for name, column in columns.items():
            label, reference = (
                (_SINGULAR[name], "grad") if _one_leaf else (f"{name}[{i}]", f"grads[{i}]")
            )
            _check_leaf(who, label, column[i], shape, reference)
        first = len(results)
        if overwrite_grad:
            aliases[len(operands)] = first
        operands += [columns["grads"][i], columns["rms"][i]]
        aliases[len(operands) - 1] = first + 1
        results += [jax.ShapeDtypeStruct(shape, jnp.float32)] * 2
        for name in ("mom", "mg"):
            if name in columns:
                aliases[len(operands)] = len(results)
                operands.append(columns[name][i])
                results.append(jax.ShapeDtypeStruct(shape, jnp.float32))
        if "params" in columns:
            aliases[len(operands)] = first
            operands.append(columns["params"][i])
    if not n_leaves:
        return [], [], None if mom is None else [], None if mg is None else []
    call = jax.ffi.ffi_call(TARGET, results, input_output_aliases=aliases, vmap_method="sequential")
    outs = call(
        *operands,
        leaves=np.int32(n_leaves),
        momentum=np.int32(mom is not None),
        centered=np.int32(mg is not None),
        eps_in_sqrt=np.int32(bool(variant.eps_in_sqrt)),
        tf_kernel=np.int32(bool(variant.fused_order)),
        output=np.int32(_OUTPUT[output] + (3 if overwrite_grad else 0)),
        max_threads=np.int32(_max_threads()),
    )
    per_leaf = 2 + (mom is not None) + (mg is not None)
    rows = [outs[k : k + per_leaf] for k in range(0, len(outs), per_leaf)]
    firsts = [row[0] for row in rows]
    rms_new = [row[1] for row in rows]
    mom_new = [row[2] for row in rows] if mom is not None else None
    mg_new = [row[-1] for row in rows] if mg is not None else None
    return firsts, rms_new, mom_new, mg_new


# ---- where the kernel may run -----------------------------------------------------------------
#
# The kernel has no sharding rule: in a program that XLA partitions over several devices it would
# gather its operands onto every device (same bits, replicated results, the layout lost). How many
# devices a program runs on is only known when it is lowered, after tracing, so the choice is made
# by a lowering rule (:func:`_kernel_index`: 0, the kernel, where each device runs a program of
# its own; 1, the fallback, elsewhere), with the platform. The step goes through
# ``_kernel_or_fallback_p``, whose lowering rule lowers only the branch it picks (both, behind
# ``platform_dependent``, in a module exported for CPU and other platforms at once). A ``switch``
# on the index as a constant (``_kernel_index_p``, inside ``platform_dependent``) would lower
# both, and XLA would pay for the branch not taken -- one call of the XLA step per leaf, inlined
# before the ``case`` is folded away: 512 leaves with momentum compiled in 1.63 s instead of
# 1.25 s (and jax before 0.10 lowers ``platform_dependent``'s default branch too). Derivatives go
# through that ``switch`` (the JVP rule), and ``vmap`` re-binds the primitive over both branches
# batched.


def _kernel_index(ctx: Any) -> int:
    """0 where the program being lowered runs the kernel (one device per program), else 1."""
    context = ctx.module_context.axis_context
    num_devices = getattr(context, "num_devices", None)  # jit: the devices the program runs on
    manual_axes = getattr(context, "manual_axes", None)  # shard_map: manual over these axes
    if num_devices is not None:
        return int(num_devices != 1)
    if manual_axes is not None:  # each device runs on its own shard unless an axis is auto
        return int(not set(context.mesh.axis_names) <= set(manual_axes))
    # pmap's replica context: one program per device; anything else: the fallback
    return int(type(context).__name__ != "ReplicaAxisContext")


def _kernel_index_lowering(ctx: Any) -> list[Any]:
    return [mlir.ir_constant(np.int32(_kernel_index(ctx)))]


_kernel_index_p = Primitive("jrmsprop_cpu_kernel_index")
_kernel_index_p.def_abstract_eval(lambda: jax.core.ShapedArray((), jnp.int32))
_kernel_index_p.def_impl(lambda: jnp.int32(0))  # eager (jax.disable_jit): one device
mlir.register_lowering(_kernel_index_p, _kernel_index_lowering)


def _switched(kernel: Callable[..., Any], fallback: Callable[..., Any], *args: Any) -> Any:
    """``kernel`` or ``fallback`` through a ``switch`` on :data:`_kernel_index_p` on CPU: both
    branches are lowered and XLA folds the one not taken away (after it has inlined its calls)."""

    def cpu(*operands: Any) -> Any:
        return jax.lax.switch(_kernel_index_p.bind(), [kernel, fallback], *operands)

    return jax.lax.platform_dependent(*args, cpu=cpu, default=fallback)


def _run(closed: Any) -> Callable[..., list[Any]]:
    return lambda *flat: jaxpr_as_fun(closed)(*flat)


def _kernel_or_fallback_lowering(ctx: Any, *flat: Any, kernel: Any, fallback: Any) -> Any:
    platforms = tuple(getattr(ctx, "platforms", None) or ctx.module_context.platforms)
    if _kernel_index(ctx) or "cpu" not in platforms:
        chosen = _run(fallback)
    elif platforms == ("cpu",):
        chosen = _run(kernel)
    else:  # one module for several platforms (jax.export): the kernel where it runs on CPU

        def chosen(*operands: Any) -> Any:
            return jax.lax.platform_dependent(*operands, cpu=_run(kernel), default=_run(fallback))

    return mlir.lower_fun(chosen, multiple_results=True)(ctx, *flat)


def _kernel_or_fallback_impl(*flat: Any, kernel: Any, fallback: Any) -> Any:
    """Eager (``jax.disable_jit``): one device, the default back end's."""
    return _run(kernel if jax.default_backend() == "cpu" else fallback)(*flat)


def _kernel_or_fallback_jvp(primals: Any, tangents: Any, *, kernel: Any, fallback: Any) -> Any:
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    switched = lambda *flat: _switched(_run(kernel), _run(fallback), *flat)  # noqa: E731
    return jax.jvp(switched, tuple(primals), tangents)


def _kernel_or_fallback_batch(flat: Any, dims: Any, *, kernel: Any, fallback: Any) -> Any:
    def batched(closed: Any) -> Any:
        return jax.make_jaxpr(jax.vmap(_run(closed), in_axes=tuple(dims)))(*flat)

    outs = _kernel_or_fallback_p.bind(*flat, kernel=batched(kernel), fallback=batched(fallback))
    return outs, [0] * len(outs)


_kernel_or_fallback_p = Primitive("jrmsprop_cpu_kernel_or_fallback")
_kernel_or_fallback_p.multiple_results = True
_kernel_or_fallback_p.def_abstract_eval(lambda *avals, kernel, fallback: fallback.out_avals)
_kernel_or_fallback_p.def_impl(_kernel_or_fallback_impl)
mlir.register_lowering(_kernel_or_fallback_p, _kernel_or_fallback_lowering)
ad.primitive_jvps[_kernel_or_fallback_p] = _kernel_or_fallback_jvp
batching.primitive_batchers[_kernel_or_fallback_p] = _kernel_or_fallback_batch


def _kernel_or_fallback(
    kernel: Callable[..., Any], fallback: Callable[..., Any], *args: Any
) -> Any:
    """:func:`_switched`, with only the branch taken lowered (``_kernel_or_fallback_p``)."""
    flat, in_tree = jax.tree.flatten(args)
    out_trees = []

    def flat_fn(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
        def run(*leaves: Any) -> list[Any]:
            out, out_tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, leaves)))
            out_trees.append(out_tree)
            return out

        return run

    closed = [jax.make_jaxpr(flat_fn(fn))(*flat) for fn in (kernel, fallback)]
    types = [[(a.shape, a.dtype) for a in j.out_avals] for j in closed]
    if out_trees[0] != out_trees[1] or types[0] != types[1]:
        return _switched(kernel, fallback, *args)  # the branches disagree: the switch says how
    if any(isinstance(c, jax.core.Tracer) for j in closed for c in j.consts):
        closed, flat = _consts_as_operands(closed, flat)
    outs = _kernel_or_fallback_p.bind(*flat, kernel=closed[0], fallback=closed[1])
    return jax.tree.unflatten(out_trees[1], outs)


def _consts_as_operands(closed: list[Any], flat: list[Any]) -> tuple[list[Any], list[Any]]:
    """``closed`` (the kernel's and the fallback's jaxprs) taking their constants as leading
    operands, and those operands: a branch that closes over a traced value (a value of an
    enclosing ``jit``, ``vmap`` or ``jvp``) cannot be a parameter of the primitive."""
    consts = [list(j.consts) for j in closed]
    ends = np.cumsum([0] + [len(c) for c in consts])
    operands = [*consts[0], *consts[1], *flat]

    def taking_all(j: Any, begin: int, end: int) -> Callable[..., list[Any]]:
        return lambda *ops: jaxpr_as_fun(ClosedJaxpr(j.jaxpr, list(ops[begin:end])))(
            *ops[ends[-1] :]
        )

    converted = [
        jax.make_jaxpr(taking_all(j, ends[i], ends[i + 1]))(*operands) for i, j in enumerate(closed)
    ]
    return converted, operands


def where_kernel_runs(kernel: Callable[..., Any], fallback: Callable[..., Any], *args: Any) -> Any:
    """``kernel(*args)`` where the program runs on CPU, one device per array; else ``fallback``.

    The choice is made when the program is lowered: the kernel runs on CPU in a program on one
    device, in each device's program under ``pmap``, and on each device's own shard under a
    ``shard_map`` that is manual over every mesh axis; ``fallback`` runs on other platforms and
    in programs that XLA partitions over several devices (a ``jit`` over sharded arrays), where
    the kernel would gather its operands. Both must compute the same values. Only the branch
    chosen is lowered.
    """

    def kernel_varying(*operands: Any) -> Any:
        return _varying_like(kernel(*operands), operands)

    return _kernel_or_fallback(kernel_varying, fallback, *args)


def _varying_like(outputs: Any, operands: Any) -> Any:
    """``outputs`` typed as varying over the manual mesh axes that ``operands`` vary over.

    Inside a ``shard_map`` JAX types each value with the mesh axes it varies over, and the
    branches of a ``switch`` must agree; a foreign call's results carry no such axes, while the
    fallback's results vary as its operands do. (Nothing to do before jax had these types.)
    """
    typeof, pcast = getattr(jax, "typeof", None), getattr(jax.lax, "pcast", None)
    if typeof is None or pcast is None:
        return outputs

    def varying(x: Any) -> frozenset:
        aval = typeof(x)
        manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; before: aval.vma
        return manual.varying if manual is not None else getattr(aval, "vma", frozenset())

    axes = frozenset().union(*map(varying, jax.tree.leaves(operands)))
    if not axes:
        return outputs

    def cast(x: Any) -> Any:
        missing = tuple(sorted(axes - varying(x)))
        return pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, outputs)


# ---- the fused apply of a tree's leaves (the transformation's update-and-apply)

#: Leaves per call of the CPU kernel. One call for a group of leaves instead of one per leaf
#: steps as fast (XLA's runtime runs independent calls side by side anyway) and, without
#: momentum, compiles faster (512 leaves of 32768: about 0.7x; with momentum no consistent
#: difference was measured); XLA's compile time grows much faster than the operands of one call
#: (one call for all 512 leaves: 6.8 s against 1.4 s), so the groups stay small.
GROUP = 32


class Leaf(NamedTuple):
    """A checked leaf that the CPU kernel may take: updated with the others in one call."""

    g: jax.Array
    param: jax.Array
    rms: jax.Array
    mom: jax.Array | None
    mg: jax.Array | None


def takes(g, param, rms, mom, mg, variant: arithmetic.Variant) -> TypeGuard[jax.Array]:
    """Whether a checked leaf without weight decay may take the kernel (where it runs, see
    :func:`where_kernel_runs`): dense, every array float32, a formula the kernel computes."""
    return (
        hasattr(g, "shape")
        and not hasattr(g, "indices")
        and all(x is None or x.dtype == jnp.float32 for x in (g, param, rms, mom, mg))
        and supports(variant)
        and available()
    )


def apply_leaves(leaves: list[Leaf], sc: arithmetic.Scalars, variant) -> list[tuple]:
    """The new ``(param, rms, mom, mg)`` of each leaf, in kernel calls of up to :data:`GROUP`
    leaves each (XLA leaf by leaf where the kernel does not run)."""
    out = []
    for start in range(0, len(leaves), GROUP):
        out += _apply_with_kernel(leaves[start : start + GROUP], sc, variant)
    return out


def _apply_with_kernel(leaves: list[Leaf], sc: arithmetic.Scalars, variant):
    """The new ``(param, rms, mom, mg)`` of a group of leaves the kernel may take: one kernel
    call for them all where it runs (:func:`cpu_kernel.where_kernel_runs`), else XLA leaf by
    leaf. Columns of leaves go in (``None`` entries where a slot is absent)."""
    gs, ps, rmss, moms, mgs = (list(c) for c in zip(*leaves, strict=True))
    return _apply_columns_with_kernel(gs, ps, rmss, moms, mgs, sc, variant)


# Traced and lowered once per group signature, as :func:`_leaf_step` once per leaf signature (the
# groups of a tree of same-shaped leaves share one); XLA inlines the calls.
@functools.partial(jax.jit, static_argnums=6)
def _apply_columns_with_kernel(gs, ps, rmss, moms, mgs, sc, variant):
    return where_kernel_runs(
        lambda *args: _kernel_apply(*args, variant),
        lambda *args: _xla_apply(*args, variant=variant),
        gs,
        ps,
        rmss,
        moms,
        mgs,
        sc,
    )


@functools.partial(jax.jit, static_argnums=6)
def _xla_apply_leaf(g, p, rms, mom, mg, sc, variant):
    """What :func:`_leaf_step` computes for a leaf the CPU kernel can take (dense float32, no
    weight decay, no traced momentum switch): the new parameter and slots, through XLA. Traced
    once per leaf signature, as :func:`_leaf_step`."""
    update, rms, mom, mg = arithmetic.rmsprop_step(
        g, None, rms, mom, mg, sc, variant, jnp.float32, negate=True
    )
    return (p + update).astype(p.dtype), rms, mom, mg


def _xla_apply(gs, ps, rmss, moms, mgs, sc, variant):
    """:func:`_xla_apply_leaf` on columns of leaves: a list of ``(param, rms, mom, mg)``."""
    return [
        _xla_apply_leaf(*leaf, sc, variant) for leaf in zip(gs, ps, rmss, moms, mgs, strict=True)
    ]


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _kernel_apply(gs, ps, rmss, moms, mgs, sc, variant):
    """:func:`_xla_apply` in one pass of the CPU kernel over every leaf; differentiated through
    the XLA path (the kernel is a foreign call without derivatives; both compute the same
    values)."""
    has_mom, has_mg = moms[0] is not None, mgs[0] is not None  # a slot is in every leaf or none
    new_ps, new_rms, new_moms, new_mgs = fused_steps(
        gs,
        rmss,
        moms if has_mom else None,
        mgs if has_mg else None,
        sc,
        variant,
        output="param",
        params=ps,
        who="update_and_apply",
    )
    return list(zip(new_ps, new_rms, new_moms or moms, new_mgs or mgs, strict=True))


@_kernel_apply.defjvp
def _kernel_apply_jvp(variant, primals, tangents):
    return jax.jvp(lambda *args: _xla_apply(*args, variant=variant), primals, tangents)


def main(argv: list[str] | None = None) -> int:
    """``python -m jrmsprop._src.cpu_kernel``: builds the library now and reports where it is."""
    del argv
    try:
        path = build()
    except RuntimeError as e:
        print(f"jrmsprop CPU kernel: not built: {e}", file=sys.stderr)
        return 1
    print(f"jrmsprop CPU kernel: {path}")
    print("available:", available(), "" if available() else f"({unavailable_reason()})")
    return 0


if __name__ == "__main__":
    warnings.simplefilter("default")
    raise SystemExit(main())
