"""Optimizer state saved by Keras, as a :class:`jrmsprop.RMSpropState`, and the checked
conversion of any framework's saved slots into one.

Keras files are read safely: numeric HDF5 datasets and JSON only, each dataset's dtype, shape
and storage checked before it is read, no zip member inflated into memory. h5py is imported on
first use (``pip install 'jrmsprop[h5]'``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src.transform import RMSpropState, slot_dtype_of
from jrmsprop._src.validation import INT32_MAX, check_bool, slot_values
from jrmsprop._src.variable import exact_array

__all__ = [
    "keras2_h5_weights",
    "load_keras2_h5",
    "load_keras3_archive",
    "saved_optimizer_config",
    "state_from_keras2",
]

# Each framework's (step counter names, slot names in RMSpropState order: rms, momentum, mg).
_SLOTS = {
    "keras2": (("iter", "iterations"), ("rms", "momentum", "mg")),
    "keras3": (("iteration",), ("velocity", "momentum", "average_gradient")),
    "torch": (("step",), ("square_avg", "momentum_buffer", "grad_avg")),
}
_KERAS3_ONLY = {*sum(_SLOTS["keras3"], ())} - {*sum(_SLOTS["keras2"], ())}
_JRMSPROP_KERAS = "jrmsprop>RMSprop"  # how Keras registers jrmsprop.keras.RMSprop
_KINDS = {
    "h5": ("an HDF5 file", "load_keras2_h5"),
    "keras": ("a zip archive", "load_keras3_archive"),
}
_MEMBERS = ("config.json", "model.weights.h5")  # of a .keras archive or folder
# What a damaged file makes h5py / zipfile / zlib raise.
_READ_ERRORS = (OSError, RuntimeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
# config.json is parsed whole; a member inflating past 4 GiB and 100x its size is a zip bomb
# (Keras 3 refuses it too); no compressed dataset expands past deflate's 1032x.
_MAX_CONFIG_BYTES, _MAX_FILTER_RATIO = 1 << 26, 1032
_MAX_INFLATED_BYTES, _MAX_INFLATION = 1 << 32, 100


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise ImportError("Reading Keras files needs h5py: pip install 'jrmsprop[h5]'") from e
    return h5py


def _open(path: Any, fn: str, want: str | None = None) -> tuple[Path, str, str]:
    """``(path, "fn: 'path'", kind)`` of an existing file of kind ``want`` (either if None)."""
    try:
        p = Path(os.fspath(path))
    except TypeError:
        got = type(path).__name__
        raise TypeError(f"{fn}: `path` must be a str or os.PathLike, got {got}") from None
    if not p.exists():
        raise FileNotFoundError(f"{fn}: no such file: {str(p)!r}")
    where = f"{fn}: {str(p)!r}"
    if (p.is_file() and zipfile.is_zipfile(p)) or (p.is_dir() and want != "h5"):
        kind = "keras"
    else:
        kind = "h5" if p.is_file() and _h5py().is_hdf5(p) else None
    if want not in (None, kind):
        use = f" (it is {_KINDS[kind][0]}: use {_KINDS[kind][1]})" if kind else ""
        raise ValueError(f"{where} is not {_KINDS[want][0]}{use}")
    if kind is None:
        raise ValueError(f"{where} is neither an HDF5 file nor a .keras archive")
    return p, where, kind


@contextlib.contextmanager
def _reading(where: str, what: str) -> Iterator[None]:
    """A damaged file's raw error (h5py's OSError, zipfile's BadZipFile, ...) as a ValueError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        why = f"(is the file truncated or corrupt?): {type(e).__name__}: {e}"
        raise ValueError(f"{where}: {what} could not be read {why}") from e


def _json(raw: Any, where: str, name: str) -> Any:
    try:
        return json.loads(raw.decode("utf8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{where}: {name} is not valid JSON (truncated or corrupt?): {e}") from e


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of an open binary file, read in place."""

    def __init__(self, f: Any, start: int, size: int):
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, pos + (0, self._pos, self._size)[whence])
        return self._pos

    def readinto(self, b: Any) -> int:
        self._f.seek(self._start + self._pos)
        n = self._f.readinto(memoryview(b)[: max(0, self._size - self._pos)])
        self._pos += n
        return n


@contextlib.contextmanager
def _member(p: Path, where: str, name: str) -> Iterator[Any]:
    """Member ``name`` of a ``.keras`` folder or archive, open for reading: in place when
    stored, else inflated once into a sparse temporary file."""
    with contextlib.ExitStack() as stack, _reading(where, "the zip archive"):
        z = None if p.is_dir() else stack.enter_context(zipfile.ZipFile(p))
        found = {m for m in _MEMBERS if (p / m).is_file()} if z is None else set(z.namelist())
        if missing := sorted(set(_MEMBERS) - found):
            what = "a folder" if z is None else "a zip archive"
            raise ValueError(f"{where} is {what} without {missing}, not a Keras 3 model")
        info = None if z is None else z.getinfo(name)
        size = (p / name).stat().st_size if info is None else info.file_size
        if name == _MEMBERS[0] and size > _MAX_CONFIG_BYTES:
            raise ValueError(f"{where}: {name} has {size} bytes, too many for a model config")
        if z is None or info is None:
            yield stack.enter_context(open(p / name, "rb"))
        elif info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
            f = stack.enter_context(open(p, "rb"))
            f.seek(info.header_offset + 26)  # the local header ends with two lengths, then data
            yield _Window(f, info.header_offset + 30 + sum(struct.unpack("<HH", f.read(4))), size)
        elif size > max(_MAX_INFLATED_BYTES, _MAX_INFLATION * info.compress_size):
            raise ValueError(f"{where}: {name} inflates {size} bytes (a zip bomb?)")
        else:
            out = stack.enter_context(tempfile.TemporaryFile())
            with z.open(info) as m:
                for chunk in iter(lambda: m.read(1 << 20), b""):
                    if chunk.count(0) == len(chunk):  # zeros: left as a hole
                        out.seek(len(chunk), os.SEEK_CUR)
                    else:
                        out.write(chunk)
                out.truncate()
            out.seek(0)
            yield out


@contextlib.contextmanager
def _weights(p: Path, where: str, kind: str) -> Iterator[Any]:
    """The weights open with h5py: the ``.h5`` file, or a ``.keras`` model's weights member."""
    with contextlib.ExitStack() as stack:
        source = p if kind == "h5" else stack.enter_context(_member(p, where, _MEMBERS[1]))
        with _reading(where, _MEMBERS[1] if kind == "keras" else "the HDF5 file"):
            yield stack.enter_context(_h5py().File(source, "r"))


def _keras3_config(p: Path, where: str) -> Any:
    with _member(p, where, _MEMBERS[0]) as f:
        return _json(f.read(), where, _MEMBERS[0])


def _optimizer(p: Path, where: str, kind: str) -> dict | None:
    """The saved optimizer ``{class_name, config, ...}``, checked (``None``: no training_config)."""
    if kind == "h5":
        source = "attribute 'training_config'"
        with _weights(p, where, kind) as f:
            raw = f.attrs.get("training_config")
        training = {} if raw is None else _json(raw, where, source)
        opt = training.get("optimizer_config") if isinstance(training, dict) else training
        if opt is None:
            return None
    else:
        source, model = _MEMBERS[0], _keras3_config(p, where)
        compiled = model.get("compile_config") if isinstance(model, dict) else None
        opt = compiled.get("optimizer") if isinstance(compiled, dict) else None
        if not isinstance(opt, dict):
            raise ValueError(f"{where} holds no optimizer state (not compiled with an optimizer)")
    entry = opt if isinstance(opt, dict) else {}
    fields = config if isinstance(config := entry.get("config") or {}, dict) else {}
    m = fields.get("momentum") or 0
    for field, ok in (
        ("entry", isinstance(opt, dict)),
        ("class_name", isinstance(entry.get("class_name"), str)),
        ("registered_name", isinstance(entry.get("registered_name") or "", str)),
        ("config", isinstance(config, dict)),
        ("momentum", type(m) in (int, float) and 0 <= m < math.inf),
        ("centered", isinstance(fields.get("centered", False), bool)),
    ):
        if not ok:
            why = f"the optimizer's {field} in {source} is damaged"
            raise ValueError(f"{where}: {why}: {opt!r:.99}")
    return {**entry, "config": config}


def _names(group: Any, attr: str, where: str) -> list[str]:
    """The names in attribute ``attr`` of ``group`` (split as ``attr0, attr1, ...`` when large)."""
    keys = [attr] if attr in group.attrs else []
    while attr not in group.attrs and f"{attr}{len(keys)}" in group.attrs:
        keys.append(f"{attr}{len(keys)}")
    names = []
    for v in (group.attrs[k] for k in keys):  # an empty list may be stored as floats
        if not (
            isinstance(v, np.ndarray) and v.ndim == 1 and (v.dtype.kind in "SUO" or not v.size)
        ):
            why = f"attribute {attr!r} of {group.name!r} is not a list of names"
            raise ValueError(f"{where}: {why}")
        names += [n.decode("utf8", "replace") if isinstance(n, bytes) else str(n) for n in v]
    return names


def _datasets(group: Any, keys: Sequence[str], where: str) -> list:
    """The datasets ``keys`` of ``group`` (not links, not groups), unread."""
    h5py, out = _h5py(), []
    for key in keys:
        link = group.get(key, getlink=True)
        out.append(group.get(key) if isinstance(link, h5py.HardLink) else None)
        if not isinstance(out[-1], h5py.Dataset) or out[-1].shape is None:
            what = "missing" if link is None else "a link" if out[-1] is None else "not a dataset"
            raise ValueError(f"{where}: {key!r} is listed but is {what} in {group.name!r}")
    return out


def _read(datasets: Sequence[Any], expected: Sequence[tuple], where: str) -> list[np.ndarray]:
    """The datasets' arrays, each read once its dtype kind and shape are as ``expected[j] =
    (kinds, shape, description)`` and the file stores the bytes it declares."""
    for d, (kinds, shape, want) in zip(datasets, expected, strict=True):
        at = f"{where}: dataset {d.name!r}"
        if d.dtype.kind not in kinds or d.shape != shape:
            raise ValueError(f"{at} holds {d.dtype} data of shape {d.shape}; expected {want}")
        declared = math.prod(d.shape) * d.dtype.itemsize
        stored = 0 if d.external or d.is_virtual else d.id.get_storage_size()
        if declared > stored * (_MAX_FILTER_RATIO if d.id.get_create_plist().get_nfilters() else 1):
            why = f"({declared} bytes) but the file stores {stored} bytes of it (damaged?)"
            raise ValueError(f"{at} declares shape {d.shape} {why}")
    return [np.asarray(d[()]) for d in datasets]


def _registered_name(opt: Mapping[str, Any]) -> str | None:
    """The name Keras registered the optimizer class under; ``None`` for Keras's own."""
    name, class_name, module = (opt.get(k) for k in ("registered_name", "class_name", "module"))
    if isinstance(name, str) and name:
        return name
    if isinstance(class_name, str) and ">" in class_name:
        return class_name
    return _JRMSPROP_KERAS if str(module).split(".")[0] == "jrmsprop" else None


def _keras2_layout(f: Any, opt: dict, where: str) -> tuple[list, list[str], bool, bool]:
    """The datasets (unread) in ``get_weights()`` order, the variables' names, and whether there
    are momentum and mg slots: ``optimizer_weights`` lists ``<optimizer>/<variable>/<slot>:0``."""
    if not isinstance(group := f.get("optimizer_weights"), _h5py().Group):
        why = "saved with include_optimizer=False, by save_weights() or before compiling"
        raise ValueError(f"{where} holds no optimizer state (no 'optimizer_weights' group): {why}")
    if len(names := _names(group, "weight_names", where)) < 2:
        raise ValueError(f"{where} has an empty optimizer state (the optimizer never ran a step)")
    datasets, config = _datasets(group, names, where), opt.get("config") or {}
    parts = [n.split(":")[0].rsplit("/", 1) for n in names]  # [variable, slot]
    words = {w for ps in parts for w in ps[0].split("/") + ps[-1:]}
    if words & _KERAS3_ONLY or config.get("is_legacy_optimizer") is False:
        ours = _registered_name(opt) == _JRMSPROP_KERAS
        what = (
            "jrmsprop.keras.RMSprop saved by Keras 3"
            if ours
            else (
                f"the TF >= 2.11 / Keras 3 optimizer ({names[:3]}...); load_keras2_h5 reads the TF "
                "2.x (legacy) RMSprop state"
            )
        )
        fix = "(path, params, jrmsprop_keras=True)" if ours else ""
        raise ValueError(
            f"{where} holds the state of {what}: save as .keras and use load_keras3_archive{fix}"
        )
    (counters, slot_names), found = _SLOTS["keras2"], sorted({ps[-1] for ps in parts[1:]})
    if opt.get("class_name", "RMSprop").split(">")[-1] != "RMSprop":
        why = f"holds the state of a {opt['class_name']} optimizer (slots {found}), not RMSprop"
        raise ValueError(f"{where} {why}")
    for name, ps in zip(names[1:], parts[1:], strict=True):
        if ps[-1] not in slot_names or len(ps) < 2:
            why = f"(slots found: {found}; RMSprop has {list(slot_names)})"
            raise ValueError(f"{where}: not RMSprop state: slot {ps[-1]!r} in {name!r} {why}")
    variables = [ps[0] for ps in parts if ps[-1] == "rms"]
    present = [s for s in slot_names if s in found]
    by_name = dict(zip(("/".join(ps) for ps in parts), datasets, strict=True))
    expected = [f"{v}/{s}" for s in present for v in variables]
    if parts[0][-1] not in counters or sorted(expected) != sorted([*by_name][1:]):
        why = "(a counter, one 'rms' per variable, each other slot for all or none)"
        raise ValueError(f"{where}: not RMSprop's layout {why}: {names}")
    if "centered" in config and bool(config["centered"]) != ("mg" in present):
        raise ValueError(f"{where}: its config says centered={config['centered']}, its slots not")
    short = [v.split("/", 1)[-1] for v in variables]  # without the optimizer's name
    return [datasets[0], *map(by_name.get, expected)], short, "momentum" in present, "mg" in present


def _keras3_layout(f: Any, where: str, head: int, blocks: int) -> tuple[list, list[str]]:
    """The datasets (unread) in tf_keras's order and the variables' names: ``optimizer/vars/0,
    1, ...`` are the iteration, the learning rate (``head == 2``), then each slot's block
    (under ``inner_optimizer/`` with mixed_float16)."""
    groups = [f.get(f"optimizer/{g}vars") for g in ("inner_optimizer/", "")]
    if (group := next((g for g in groups if isinstance(g, _h5py().Group)), None)) is None:
        raise ValueError(f"{where} holds no optimizer state (no 'optimizer/vars' in the weights)")
    keys = [str(i) for i in range(len(group))]
    if set(group.keys()) != set(keys):
        raise ValueError(f"{where}: unexpected optimizer variables {list(group.keys())}")
    datasets = _datasets(group, keys, where)
    if len(keys) <= head or (len(keys) - head) % blocks:
        raise ValueError(f"{where}: {len(keys) - head} slot variables, not {blocks} equal blocks")
    names = [f"{_SLOTS['keras3'][1][0]} {i}" for i in range((len(keys) - head) // blocks)]
    return [datasets[0], *datasets[head:]], names


def _read_state(datasets: list, names: list[str], where: str, params: Any) -> list[np.ndarray]:
    """``[counter, *slots]`` read: an integer scalar, then floats shaped as the first slot's
    (``len(names)`` variables a slot), which must be shaped as ``params`` (if given)."""
    n, leaves = len(names), jax.tree_util.tree_flatten_with_path(params)[0]
    follow = "`params` must follow model.trainable_weights"
    if params is not None and len(leaves) != n:
        got = f"has {len(leaves)} leaves but the saved optimizer state is for {n} variables"
        raise ValueError(f"{where}: `params` {got} ({', '.join(names)}); {follow}")
    for i, ((kp, leaf), d) in enumerate(zip(leaves, datasets[1:], strict=False)):
        if np.shape(leaf) != d.shape:
            got = f"({jax.tree_util.keystr(kp) or 'the root'}) has shape {np.shape(leaf)}"
            saved = f"saved variable {i} ({names[i]}) has shape {d.shape} (dataset {d.name!r})"
            raise ValueError(f"{where}: `params` leaf {i} {got}, but {saved}; {follow}")
    slots = [("f", d.shape, f"floats shaped as {d.name!r}, {d.shape}") for d in datasets[1 : n + 1]]
    counter = ("iu", (), "an integer scalar")
    return _read(datasets, [counter, *slots * ((len(datasets) - 1) // n)], where)


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x  # torch, without importing it


def _count(step: Any, what: str) -> jax.Array:
    """The step counter as int32: an integer in ``[0, 2**31 - 1]``."""
    try:
        array = np.asarray(_numpy(step))
        value = float(array.reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number (a scalar), got {step!r}") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ValueError(f"{what} must be a non-negative integer, got {value}")
    exact = int(array.reshape(())) if array.dtype.kind in "iu" else int(value)
    if exact > INT32_MAX:
        raise ValueError(f"{what} must be at most {INT32_MAX} (the int32 count), got {exact}")
    return jnp.asarray(exact, jnp.int32)


def _state(count: Any, params: Any, framework: str, fn: str, blocks: Sequence) -> RMSpropState:
    """The state from ``blocks[k] = [(array, source), ...]`` of slot ``k`` (rms, momentum, mg;
    ``None`` if absent), each array checked by ``slot_values`` and cast to ``init``'s dtype."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    at = [f"the parameter at {jax.tree_util.keystr(path) or '<root>'}" for path, _ in leaves]
    dtypes = []
    for i, (_, p) in enumerate(leaves):
        try:  # jnp.result_type would read the string "float32" as a dtype
            dtypes.append(jnp.dtype(jnp.result_type(p if not isinstance(p, (str, bytes)) else {})))
        except (TypeError, ValueError):
            got = f"{p!r:.40}" if isinstance(p, (str, bytes)) else f"of type {type(p).__name__}"
            why = "parameters must be arrays of floating-point (or complex) numbers"
            raise TypeError(f"{fn}: `params` leaf {i} ({at[i]}) is {got}; {why}") from None
        if not jnp.issubdtype(dtypes[i], jnp.inexact):
            why = "RMSprop needs floating-point (or complex) parameters"
            raise TypeError(f"{fn}: {at[i]} has dtype {dtypes[i]}; {why}")
    slots: list[Any] = [None, None, None]
    for k, (name, block) in enumerate(zip(_SLOTS[framework][1], blocks, strict=True)):
        if block is None:
            continue
        out = []
        for i, ((_, p), (a, source)) in enumerate(zip(leaves, block, strict=True)):
            what, label = f"{fn}: {name}[{i}]", f"{fn}: {name}[{i}]: {source} (for {at[i]})"
            a = np.asarray(exact_array(_numpy(a), label))
            if a.shape != np.shape(p):
                why = f"shape {a.shape} does not match the parameter {np.shape(p)}"
                raise ValueError(f"{what}: {why} ({source}, {at[i]})")
            dtype = slot_dtype_of(dtypes[i], k == 0, framework == "torch")
            if a.dtype.kind == "c" and dtype.kind != "c":
                if np.any(np.imag(a) != 0):
                    why = "complex values with a non-zero imaginary part, but this slot is real"
                    raise ValueError(f"{what}: {why} for a {dtypes[i]} parameter ({at[i]})")
                a = np.real(a)
            out.append(jnp.asarray(slot_values(label, a, dtype, squares=k == 0), dtype=dtype))
        slots[k] = treedef.unflatten(out)
    return RMSpropState(count, *slots)


def _from_keras2(
    weights: Any, params: Any, momentum: Any, centered: Any, fn: str, weight: Callable | None = None
) -> RMSpropState:
    """:func:`state_from_keras2` for the caller ``fn``, whose weight ``j`` is ``weight(j)``."""
    weight = weight or "`weights[{}]`".format
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        got = type(weights).__name__
        raise TypeError(f"{fn}: `weights` must be a list of arrays (get_weights()), got {got}")
    present = (True, check_bool("momentum", momentum), check_bool("centered", centered))
    n, blocks = len(jax.tree.leaves(params)), sum(present)
    if len(weights) != 1 + blocks * n:
        slots = ", ".join(s for s, on in zip(_SLOTS["keras2"][1], present, strict=True) if on)
        want = f"1 + {blocks}·{n} = {1 + blocks * n} arrays (iterations, then {slots} for each)"
        raise ValueError(f"{fn}: `weights` must hold {want}, got {len(weights)}")
    count = _count(weights[0], f"{fn}: {weight(0)} (iterations)")
    starts = [1 + n * sum(present[:k]) for k in range(3)]
    block = lambda s: [(weights[j], weight(j)) for j in range(s, s + n)]  # noqa: E731
    slots = [block(s) if on else None for s, on in zip(starts, present, strict=True)]
    return _state(count, params, "keras2", fn, slots)


def state_from_keras2(
    weights: Sequence[Any], params: Any, *, momentum: bool, centered: bool
) -> RMSpropState:
    """The state of a TF 2.x Keras RMSprop's ``get_weights()``, for :func:`jrmsprop.rmsprop`.

    Args:
      weights: ``[iterations, rms(v0), ..., momentum(v0), ..., mg(v0), ...]`` (momentum only
        with a momentum slot, mg only when centered). NaN and inf load as saved.
      params: the parameters, their leaves in the Keras variable order.
      momentum: whether the Keras optimizer had a momentum slot.
      centered: whether it was centered.

    Returns:
      The state, with ``init``'s structure and dtypes, that continues where Keras stopped.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> weights = [np.int64(3), np.ones(2, np.float32)]
      >>> compat.state_from_keras2(weights, [jnp.zeros(2)], momentum=False, centered=False).count
      Array(3, dtype=int32)
    """
    return _from_keras2(weights, params, momentum, centered, "state_from_keras2")


def _keras2(path: Any, fn: str, params: Any = None) -> Any:
    """:func:`keras2_h5_weights` (``params`` None) and :func:`load_keras2_h5`."""
    p, where, _ = _open(path, fn, "h5")
    opt = _optimizer(p, where, "h5") or {}
    with _weights(p, where, "h5") as f:
        datasets, variables, momentum, centered = _keras2_layout(f, opt, where)
        labels = [repr(d.name) for d in datasets]
        values = _read_state(datasets, variables, where, params)
    if params is None:
        return values
    return _from_keras2(values, params, momentum, centered, where, labels.__getitem__)


def keras2_h5_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The TF 2.x Keras RMSprop state of an ``.h5`` file, as ``optimizer.get_weights()``.

    Args:
      path: a ``tf_keras`` ``model.save("m.h5")`` file (optimizer included), or any HDF5 file
        with an ``optimizer_weights`` group laid out the same way.

    Returns:
      ``[iterations, rms(v0), ..., momentum(v0), ..., mg(v0), ...]``, NumPy arrays.

    Example::

      opt = jrmsprop.RMSprop.from_config(saved_optimizer_config("m.h5")["config"])
      opt.build(variables)  # the model's trainable weights, as jrmsprop.Variable, in order
      opt.set_weights(keras2_h5_weights("m.h5"))
    """
    return _keras2(path, "keras2_h5_weights")


def load_keras2_h5(path: str | os.PathLike, params: Any) -> RMSpropState:
    """The TF 2.x Keras RMSprop state of an ``.h5`` file, for :func:`jrmsprop.rmsprop`.

    Args:
      path: a ``tf_keras`` ``model.save("m.h5")`` file, optimizer included (TF <= 2.10's
        ``RMSprop``, later ``tf_keras.optimizers.legacy.RMSprop``).
      params: the parameters; their leaves the model's ``trainable_weights``, in order.

    Returns:
      The state; with the saved hyperparameters the next steps are Keras's, bit for bit.
    """
    return _keras2(path, "load_keras2_h5", params)


def load_keras3_archive(
    path: str | os.PathLike, params: Any, *, jrmsprop_keras: bool = False
) -> RMSpropState:
    """The Keras 3 RMSprop state of a ``.keras`` file, for :func:`jrmsprop.compat.keras3`.

    Args:
      path: a Keras 3 ``model.save("m.keras")`` archive (or its ``zipped=False`` folder) of a
        model compiled with ``keras.optimizers.RMSprop``.
      params: the parameters; their leaves the model's ``trainable_variables``, in order.
      jrmsprop_keras: read the state of :class:`jrmsprop.keras.RMSprop` instead, for
        :func:`jrmsprop.rmsprop` with the saved ``decay``.

    Returns:
      The state (under ``mixed_float16``, the RMSprop's inside the ``LossScaleOptimizer``).
    """
    jrmsprop_keras = check_bool("jrmsprop_keras", jrmsprop_keras)
    p, where, _ = _open(path, "load_keras3_archive", "keras")
    opt = _optimizer(p, where, "keras")
    assert opt is not None  # a .keras file without an optimizer raised
    registered, config, class_name = _registered_name(opt), opt["config"], opt["class_name"]
    if class_name.split(">")[-1] != "RMSprop":
        raise ValueError(f"{where} holds the state of a {class_name} optimizer, not RMSprop")
    if registered == _JRMSPROP_KERAS and not jrmsprop_keras:
        fix = "jrmsprop.rmsprop(..., decay=c['decay']), c = saved_optimizer_config(path)['config']"
        raise ValueError(
            f"{where} was saved with jrmsprop.keras.RMSprop (TF 2.x arithmetic), not Keras 3's "
            f"RMSprop: read it with jrmsprop_keras=True and continue with {fix}"
        )
    if registered not in (None, _JRMSPROP_KERAS):
        why = "not Keras 3's RMSprop; its arithmetic is unknown"
        raise ValueError(f"{where} holds a custom optimizer registered as {registered!r}, {why}")
    if jrmsprop_keras and registered != _JRMSPROP_KERAS:
        raise ValueError(
            f"{where} holds Keras 3's own keras.optimizers.RMSprop, not jrmsprop.keras.RMSprop "
            "(jrmsprop_keras=True): read it without jrmsprop_keras and continue with compat.keras3"
        )
    for option in ("use_ema", "gradient_accumulation_steps"):
        if config.get(option):
            why = f"the optimizer's {option}={config[option]!r}"
            raise ValueError(f"{where}: {why} is not reproduced")
    momentum, centered = (config.get("momentum") or 0) > 0, config.get("centered", False)
    head = 2 if isinstance(config.get("learning_rate"), (int, float)) else 1
    with _weights(p, where, "keras") as f:
        datasets, variables = _keras3_layout(f, where, head, 1 + momentum + centered)
        values = _read_state(datasets, variables, where, params)
    label = lambda j: f"saved optimizer variable {j + head - 1 if j else 0}"  # noqa: E731
    return _from_keras2(values, params, momentum, centered, where, label)


def saved_optimizer_config(path: str | os.PathLike) -> dict[str, Any]:
    """The optimizer's class and config stored in a Keras ``.h5`` or ``.keras`` file.

    Args:
      path: a ``tf_keras`` ``.h5`` model file or a Keras 3 ``.keras`` archive.

    Returns:
      ``{"class_name", "config", "registered_name"}`` as Keras wrote them; ``registered_name``
      is ``"jrmsprop>RMSprop"`` for :class:`jrmsprop.keras.RMSprop`, ``None`` for Keras's own.

    Example::

      c = saved_optimizer_config("m.keras")["config"]
      tx = compat.keras3(c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"])
    """
    p, where, kind = _open(path, "saved_optimizer_config")
    if (opt := _optimizer(p, where, kind)) is None:
        raise ValueError(f"{where} holds no optimizer config (no 'training_config')")
    names = {"class_name": opt["class_name"], "config": opt["config"]}
    return {**names, "registered_name": _registered_name(opt)}
