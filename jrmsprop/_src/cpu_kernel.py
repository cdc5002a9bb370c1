"""The optional fused CPU kernel: one pass of C++ (``csrc/rmsprop_cpu.cc``) through ``jax.ffi``.

XLA:CPU re-reads a fusion's inputs once per output; the kernel reads them once and computes the
bits of :func:`arithmetic.rmsprop_step` (same order, no FMA, denormals flushed as XLA flushes).
It is compiled on first use (about 5 s) and cached in :func:`cache_dir`. Without a compiler,
after a failed build or with ``JRMSPROP_DISABLE_CPU_KERNEL=1``, :func:`available` is False and
callers keep the XLA path.
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
import threading
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
CXXFLAGS = tuple(
    "-O3 -std=c++17 -fno-fast-math -ffp-contract=off -fno-math-errno -fPIC -shared -pthread".split()
)

_OUTPUT = {"delta": 0, "update": 1, "param": 2}  # the kernel's codes; +3: written over the grad
_SCALARS = ("lr", "rho", "one_minus_rho", "momentum", "epsilon")  # the kernel's float32[5]

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "error": why the library did not load (None: it did); {}: not tried


@functools.cache
def isa_flags() -> tuple[str, ...]:
    """``("-mavx2",)`` on an x86-64 Linux CPU with AVX2 (part of the cache key), else ``()``."""
    # AVX2 rounds as SSE2 does and FMA stays off (same bits); the centered step then keeps up
    # with memory (0.70x the SSE2 build's time on a 16M leaf).
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ()
    return ("-mavx2",) if "avx2" in flags.split() else ()


def cache_dir() -> Path:
    """Where the library is cached: ``$JRMSPROP_CACHE_DIR``, else ``$XDG_CACHE_HOME/jrmsprop``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jrmsprop"


def _library_path(cxx: str) -> Path:
    import jaxlib.version

    compiler = f"{cxx} {os.stat(cxx).st_mtime_ns}"  # an upgraded compiler builds anew
    parts = (" ".join(CXXFLAGS + isa_flags()), compiler, jaxlib.version.__version__)
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update("\0".join((*parts, sys.platform, platform.machine())).encode())
    return cache_dir() / f"rmsprop_cpu-{key.hexdigest()[:20]}.so"


def build() -> Path:
    """Compiles ``csrc/rmsprop_cpu.cc`` into :func:`cache_dir` (unless there) and returns its path.

    Raises:
      RuntimeError: no ``jax.ffi`` (jax < 0.5.0), no C++ compiler, or the compilation failed.
    """
    if getattr(jax, "ffi", None) is None:
        version = jax.__version__
        raise RuntimeError(f"the kernel needs jax.ffi (jax >= 0.5.0); this is jax {version}")
    names = (os.environ.get("CXX"), "c++", "g++", "clang++")
    cxx = next((shutil.which(name) for name in names if name and shutil.which(name)), None)
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++ or clang++)")
    path = _library_path(cxx)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    cmd = [cxx, *CXXFLAGS, *isa_flags(), "-isystem", jax.ffi.include_dir(), "-o", str(tmp)]
    cmd.append(str(SOURCE))
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
        tmp.unlink(missing_ok=True)
    return path


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return f"disabled by {DISABLE_ENV}"
    with _lock:  # build, load and register once per process
        if not _state:
            try:
                lib = ctypes.cdll.LoadLibrary(str(build()))
                capsule = jax.ffi.pycapsule(lib.JrmspropRmspropF32)
                jax.ffi.register_ffi_target(TARGET, capsule, platform="cpu")
                _state["error"] = None
            except Exception as e:  # noqa: BLE001 -- any failure means "use the XLA path"
                _state["error"] = f"{type(e).__name__}: {e}"
    return _state["error"]


def available() -> bool:
    """Whether :func:`fused_steps` can run; never raises, reads ``$JRMSPROP_DISABLE_CPU_KERNEL``."""
    return unavailable_reason() is None


def _max_threads() -> int:
    value = os.environ.get(THREADS_ENV, "").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"${THREADS_ENV} must be an integer >= 0 (0: XLA's pool), got {value!r}")
    return int(value)


def supports(variant: arithmetic.Variant) -> bool:
    """Whether the kernel computes ``variant``: ``lr`` inside the momentum buffer, dense order, no
    weight decay, no ``maximize`` (TF 2.x Keras and TF1), ε anywhere, either evaluation order."""
    excluded = variant.decoupled_weight_decay or variant.maximize or variant.sparse_fused_order
    return variant.lr_in_momentum and not excluded


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
) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array] | None, list[jax.Array] | None]:
    """One RMSprop step on dense float32 leaves in one pass: :func:`arithmetic.rmsprop_step`.

    For the variants of :func:`supports`, leaf by leaf bit for bit the XLA path::

      rms ← ρ·rms + (1−ρ)·g²                fused order: rms + (g² − rms)·(1−ρ)
      mg  ← ρ·mg + (1−ρ)·g   (centered)     fused order: mg + (g − mg)·(1−ρ)
      v = rms − mg² (centered) or rms ;  denom = sqrt(v + ε) (eps_in_sqrt) or sqrt(v) + ε
      delta = lr·g / denom ;  with momentum: mom ← μ·mom + delta, delta = mom

    The leaves may differ in shape; the kernel cuts them into tasks of up to 64 Ki elements for
    XLA's thread pool and updates the slots in place (no copy when the jit donates them).

    Args:
      grads: the gradients, float32; each leaf's other arrays have its shape and dtype.
      rms: the ``rms`` slots.
      mom: the momentum slots, or None.
      mg: the ``mg`` slots (centered), or None.
      sc: the step's float32 scalars (:func:`arithmetic.resolve`); ``weight_decay`` is not read.
      variant: the formula (:meth:`arithmetic.Rule.variant`); must satisfy :func:`supports`.
      output: the first result: ``"delta"`` (as ``rmsprop_step``), ``"update"`` (``−delta``, the
        optax update) or ``"param"`` (``param − delta``, written over ``params``).
      params: the parameters, exactly with ``output="param"``.
      overwrite_grad: write ``"delta"`` or ``"update"`` over the gradient's buffer: no fresh
        buffer when the gradient is dead after the step.

    Returns:
      ``(first, rms, mom, mg)``: lists leaf by leaf of the ``output`` and the new slots (or None).
    """
    if output not in _OUTPUT:
        raise ValueError(f"fused_steps: `output` must be one of {sorted(_OUTPUT)}, got {output!r}")
    if (params is None) != (output != "param"):
        raise ValueError("fused_steps: `params` are needed exactly when output='param'")
    if overwrite_grad and output == "param":
        raise ValueError("fused_steps: `overwrite_grad` needs output='delta' or 'update'")
    if not isinstance(variant, arithmetic.Variant) or not supports(variant):
        raise ValueError(f"fused_steps: the CPU kernel does not compute {variant} (see `supports`)")
    if not available():
        raise RuntimeError(f"fused_steps: the CPU kernel is not available ({unavailable_reason()})")
    for name in _SCALARS:
        x = getattr(sc, name)
        if jnp.shape(x) != () or jnp.result_type(x) != jnp.float32:
            got = f"{jnp.result_type(x).name}{list(jnp.shape(x))}"
            raise TypeError(f"fused_steps: scalars.{name} must be a float32 scalar, got {got}")
    given = {"grads": grads, "rms": rms, "mom": mom, "mg": mg, "params": params}
    columns = {name: list(column) for name, column in given.items() if column is not None}
    n = len(columns["grads"])
    for name, column in columns.items():
        if len(column) != n:
            raise ValueError(f"fused_steps: `{name}` has {len(column)} leaves, `grads` has {n}")
    if not n:
        return [], [], None if mom is None else [], None if mg is None else []

    # Per leaf, operands: grad, rms, [mom], [mg], [param]; results: first, rms, [mom], [mg].
    per_leaf = len(columns) - (params is not None)
    operands: list[Any] = [jnp.stack([jnp.asarray(getattr(sc, name)) for name in _SCALARS])]
    results: list[jax.ShapeDtypeStruct] = []
    aliases: dict[int, int] = {}
    for i in range(n):
        shape = columns["grads"][i].shape
        for name, column in columns.items():
            x = column[i]
            if x.dtype != jnp.float32:
                raise TypeError(f"fused_steps: `{name}[{i}]` must be float32, got {x.dtype}")
            if x.shape != shape:
                raise ValueError(
                    f"fused_steps: `{name}[{i}]` has shape {x.shape}, "
                    f"`grads[{i}]` has shape {shape}"
                )
        at, out_at = len(operands), len(results)
        aliases.update({at + k: out_at + k for k in range(1, per_leaf)})  # the slots
        if overwrite_grad or params is not None:  # the first result over the grad or the param
            aliases[at if overwrite_grad else at + per_leaf] = out_at
        operands += [column[i] for column in columns.values()]
        results += [jax.ShapeDtypeStruct(shape, jnp.float32)] * per_leaf
    call = jax.ffi.ffi_call(TARGET, results, input_output_aliases=aliases, vmap_method="sequential")
    outs = call(
        *operands,
        leaves=np.int32(n),
        momentum=np.int32(mom is not None),
        centered=np.int32(mg is not None),
        eps_in_sqrt=np.int32(bool(variant.eps_in_sqrt)),
        tf_kernel=np.int32(bool(variant.fused_order)),
        output=np.int32(_OUTPUT[output] + (3 if overwrite_grad else 0)),
        max_threads=np.int32(_max_threads()),
    )
    out_columns = iter([list(outs[k::per_leaf]) for k in range(per_leaf)])
    firsts, new_rms = next(out_columns), next(out_columns)
    new_mom, new_mg = (None if x is None else next(out_columns) for x in (mom, mg))
    return firsts, new_rms, new_mom, new_mg


# ---- where the kernel runs: chosen by a lowering rule ------------------------------------------
# The kernel has no sharding rule (in a program partitioned over devices it would gather its
# operands), and the devices are only known when lowering. Only the branch chosen is lowered: XLA
# would otherwise inline both and pay for the one not taken.


def _one_program_per_device(ctx: Any) -> bool:
    context = ctx.module_context.axis_context
    if getattr(context, "num_devices", None) is not None:  # jit: the devices the program runs on
        return context.num_devices == 1
    if getattr(context, "manual_axes", None) is not None:  # shard_map: manual over every axis?
        return set(context.mesh.axis_names) <= set(context.manual_axes)
    return type(context).__name__ == "ReplicaAxisContext"  # pmap: one program per device


def _lowering(ctx: Any, *flat: Any, kernel: Any, fallback: Any) -> Any:
    platforms = tuple(getattr(ctx, "platforms", None) or ctx.module_context.platforms)
    kernel_fn, fallback_fn = jaxpr_as_fun(kernel), jaxpr_as_fun(fallback)
    if "cpu" not in platforms or not _one_program_per_device(ctx):
        chosen = fallback_fn
    elif platforms == ("cpu",):
        chosen = kernel_fn
    else:  # one module for several platforms (jax.export): the kernel where it runs on CPU
        chosen = functools.partial(jax.lax.platform_dependent, cpu=kernel_fn, default=fallback_fn)
    return mlir.lower_fun(chosen, multiple_results=True)(ctx, *flat)


def _impl(*flat: Any, kernel: Any, fallback: Any) -> Any:  # eager: the default device alone
    return jaxpr_as_fun(kernel if jax.default_backend() == "cpu" else fallback)(*flat)


def _jvp(primals: Any, tangents: Any, *, kernel: Any, fallback: Any) -> Any:
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(jaxpr_as_fun(fallback), tuple(primals), tangents)


def _batch(flat: Any, dims: Any, *, kernel: Any, fallback: Any) -> Any:
    def batched(closed: Any) -> Any:
        return jax.make_jaxpr(jax.vmap(jaxpr_as_fun(closed), in_axes=tuple(dims)))(*flat)

    outs = _kernel_or_fallback_p.bind(*flat, kernel=batched(kernel), fallback=batched(fallback))
    return outs, [0] * len(outs)


_kernel_or_fallback_p = Primitive("jrmsprop_cpu_kernel_or_fallback")
_kernel_or_fallback_p.multiple_results = True
_kernel_or_fallback_p.def_abstract_eval(lambda *avals, kernel, fallback: fallback.out_avals)
_kernel_or_fallback_p.def_impl(_impl)
mlir.register_lowering(_kernel_or_fallback_p, _lowering)
ad.primitive_jvps[_kernel_or_fallback_p] = _jvp
batching.primitive_batchers[_kernel_or_fallback_p] = _batch


def where_kernel_runs(kernel: Callable[..., Any], fallback: Callable[..., Any], *args: Any) -> Any:
    """``kernel(*args)`` where the program runs on CPU, one device per program; else ``fallback``.

    The kernel runs in a program on one CPU device, under ``pmap`` and in a ``shard_map`` manual
    over every mesh axis; ``fallback`` elsewhere. Both must compute the same values; derivatives
    go through ``fallback``, and ``vmap`` batches both.
    """
    closed, outs = [], []
    for fn in (lambda *ops: _varying_like(kernel(*ops), ops), fallback):
        jaxpr, out = jax.make_jaxpr(fn, return_shape=True)(*args)
        closed.append(jaxpr)
        outs.append((jax.tree.structure(out), [(x.shape, x.dtype) for x in jax.tree.leaves(out)]))
    if outs[0] != outs[1]:
        raise TypeError(f"where_kernel_runs: `kernel` returns {outs[0]}, `fallback` {outs[1]}")
    flat = jax.tree.leaves(args)
    if any(isinstance(c, jax.core.Tracer) for j in closed for c in j.consts):
        closed, flat = _consts_as_operands(closed, flat)
    results = _kernel_or_fallback_p.bind(*flat, kernel=closed[0], fallback=closed[1])
    return jax.tree.unflatten(outs[1][0], results)


def _consts_as_operands(closed: list[Any], flat: list[Any]) -> tuple[list[Any], list[Any]]:
    """The branches taking their constants as leading operands: a primitive's parameters cannot
    hold a traced value (of an enclosing ``jit``, ``vmap`` or ``jvp``)."""
    ends = np.cumsum([0] + [len(j.consts) for j in closed])
    operands = [*closed[0].consts, *closed[1].consts, *flat]

    def taking_consts(i: int) -> Callable[..., list[Any]]:
        def run(*ops: Any) -> list[Any]:
            own = ClosedJaxpr(closed[i].jaxpr, list(ops[ends[i] : ends[i + 1]]))
            return jaxpr_as_fun(own)(*ops[ends[-1] :])

        return run

    return [jax.make_jaxpr(taking_consts(i))(*operands) for i in (0, 1)], operands


def _varying_like(outputs: Any, operands: Any) -> Any:
    """``outputs`` varying over the manual mesh axes of ``operands``, as the fallback's would."""
    typeof, pcast = getattr(jax, "typeof", None), getattr(jax.lax, "pcast", None)
    if typeof is None or pcast is None:
        return outputs

    def varying(x: Any) -> frozenset:
        aval = typeof(x)
        manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; before: aval.vma
        return manual.varying if manual is not None else getattr(aval, "vma", frozenset())

    axes = frozenset().union(*map(varying, jax.tree.leaves(operands)))

    def cast(x: Any) -> Any:
        missing = tuple(sorted(axes - varying(x)))
        return pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, outputs) if axes else outputs


# ---- the fused apply of a tree's leaves (the transformation's update-and-apply) ---------------

#: Leaves per kernel call: faster to compile than a call per leaf (512 leaves of 32768 without
#: momentum: 0.7x), while one call for all 512 compiles in 6.8 s instead of 1.4 s.
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
    dense = hasattr(g, "shape") and not hasattr(g, "indices")
    float32 = all(x is None or x.dtype == jnp.float32 for x in (g, param, rms, mom, mg))
    return dense and float32 and supports(variant) and available()


def apply_leaves(leaves: list[Leaf], sc: arithmetic.Scalars, variant) -> list[tuple]:
    """The new ``(param, rms, mom, mg)`` of each leaf, in kernel calls of up to :data:`GROUP`
    leaves each (XLA leaf by leaf where the kernel does not run)."""
    groups = (zip(*leaves[i : i + GROUP], strict=True) for i in range(0, len(leaves), GROUP))
    return [leaf for group in groups for leaf in _apply_columns_with_kernel(*group, sc, variant)]


# Traced once per group signature (the groups of same-shaped leaves share one); XLA inlines it.
@functools.partial(jax.jit, static_argnums=6)
def _apply_columns_with_kernel(gs, ps, rmss, moms, mgs, sc, variant):
    def kernel(gs, ps, rmss, moms, mgs, sc):
        mom, mg = (None if column[0] is None else column for column in (moms, mgs))  # all or none
        new = fused_steps(gs, rmss, mom, mg, sc, variant, output="param", params=ps)
        return list(zip(new[0], new[1], new[2] or moms, new[3] or mgs, strict=True))

    def xla(gs, ps, rmss, moms, mgs, sc):
        leaves = zip(gs, ps, rmss, moms, mgs, strict=True)
        return [_xla_apply_leaf(*leaf, sc, variant) for leaf in leaves]

    return where_kernel_runs(kernel, xla, gs, ps, rmss, moms, mgs, sc)


@functools.partial(jax.jit, static_argnums=6)
def _xla_apply_leaf(g, p, rms, mom, mg, sc, variant):
    """The kernel's leaf update through XLA (traced once per leaf signature)."""
    new = arithmetic.rmsprop_step(g, None, rms, mom, mg, sc, variant, jnp.float32, negate=True)
    return (p + new[0]).astype(p.dtype), *new[1:]


def main() -> int:
    """``python -m jrmsprop._src.cpu_kernel``: builds the library now and says where it is."""
    reason = unavailable_reason()
    print("jrmsprop CPU kernel:", f"not available ({reason})" if reason else build())
    return int(reason is not None)


if __name__ == "__main__":
    raise SystemExit(main())
