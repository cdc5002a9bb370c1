"""RMSprop optimizer state from files saved by Keras, read without TensorFlow.

Two formats:

* a TF 2.x Keras (``tf_keras``) HDF5 model file, ``model.save("m.h5")`` with the optimizer
  included: group ``optimizer_weights``, whose attribute ``weight_names`` lists the optimizer's
  variables in ``get_weights()`` order (``RMSprop/iter:0``, then ``RMSprop/<var>/rms:0`` for every
  trainable variable, then ``.../momentum:0``, then ``.../mg:0``), each stored as a dataset under
  that name; attribute ``training_config`` (JSON) holds the optimizer's class and config;
* a Keras 3 ``.keras`` archive: a zip holding ``config.json`` (``compile_config.optimizer``: class
  and config) and ``model.weights.h5``, where ``optimizer/vars/0, 1, ...`` are the optimizer's
  variables in order: ``iteration``, ``learning_rate`` (when it is a number, not a schedule), then
  every ``velocity``, every ``momentum`` (when ``momentum > 0``), every ``average_gradient``
  (when centered). The datasets carry no names: the order and the config identify them.

Only numeric HDF5 datasets and JSON are read; nothing is unpickled or executed; no dataset is
read before its type, shape and storage are checked, nor an archive's member loaded whole. h5py
is needed (``pip install 'jrmsprop[h5]'``) and imported on first use.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src.transform import RMSpropState, slot_dtype_of
from jrmsprop._src.validation import INT32_MAX, slot_values
from jrmsprop._src.variable import exact_array

__all__ = [
    "keras2_h5_weights",
    "load_keras2_h5",
    "load_keras3_archive",
    "saved_optimizer_config",
    "state_from_keras2",
    "state_from_torch",
]

_KERAS2_SLOTS = ("rms", "momentum", "mg")
_KERAS2_COUNTERS = ("iter", "iterations")
# Variable names that mark the TF >= 2.11 / Keras 3 optimizer (a different arithmetic).
_NEW_OPTIMIZER_NAMES = ("iteration", "velocity", "average_gradient")
# How Keras 3 registers jrmsprop.keras.RMSprop (TF 2.x arithmetic, not Keras 3's RMSprop).
_JRMSPROP_KERAS = "jrmsprop>RMSprop"
# What a damaged file makes h5py / zipfile / zlib raise (our own errors are ValueError/TypeError).
_READ_ERRORS = (OSError, RuntimeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
# config.json is parsed whole; a model.weights.h5 member inflating past 4 GiB and 100x its size is
# a zip bomb (Keras 3 refuses it too); no compressed dataset expands past deflate's 1032x.
_MAX_CONFIG_BYTES, _MAX_FILTER_RATIO = 1 << 26, 1032
_MAX_INFLATED_BYTES, _MAX_INFLATION = 1 << 32, 100


# ---- file access ------------------------------------------------------------------------------


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching sys.modules
        raise ImportError(
            "Reading saved Keras files needs h5py, which is not installed: "
            "pip install 'jrmsprop[h5]'"
        ) from e
    return h5py


def _existing_file(path: Any, fn: str) -> Path:
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"{fn}: `path` must be a str or os.PathLike, got {type(path).__name__}"
        ) from None
    if not p.exists():
        raise FileNotFoundError(f"{fn}: no such file: {str(p)!r}")
    return p


@contextmanager
def _reading(where: str, what: str) -> Iterator[None]:
    """Turns the raw error of a damaged file (h5py's OSError, zipfile's BadZipFile, ...) into a
    ValueError naming the function and the file; the original is chained."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise ValueError(
            f"{where}: {what} could not be read (is the file truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from e


def _json_text(raw: Any, where: str, name: str) -> Any:
    try:
        return json.loads(raw.decode("utf8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(
            f"{where}: {name} is not valid JSON (is the file truncated or corrupt?): {e}"
        ) from e


def _is_zip(p: Path) -> bool:
    return p.is_file() and zipfile.is_zipfile(p)


def _read_name_list(group: Any, name: str, where: str) -> list[str]:
    """A list-of-names attribute as Keras writes it (split into ``name0``, ``name1``, ... when
    large)."""
    keys = [name] if name in group.attrs else []
    while name not in group.attrs and f"{name}{len(keys)}" in group.attrs:
        keys.append(f"{name}{len(keys)}")
    values = [group.attrs[k] for k in keys]
    if not all(isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "SUO" for v in values):
        raise ValueError(f"{where}: attribute {name!r} of {group.name!r} is not a list of names")
    raw = [n for v in values for n in v]
    return [n.decode("utf8", "replace") if isinstance(n, bytes) else str(n) for n in raw]


def _dataset(group: Any, key: str, where: str) -> Any:
    """Dataset ``key`` of ``group`` (not a link, not a group), unread."""
    h5py = _h5py()
    link = group.get(key, getlink=True)
    item = group.get(key) if isinstance(link, h5py.HardLink) else None
    if not isinstance(item, h5py.Dataset) or item.shape is None:
        what = "missing" if link is None else "a link" if item is None else "not a dataset"
        raise ValueError(f"{where}: {key!r} is listed but is {what} in {group.name!r}")
    return item


def _read_state(weights: Sequence[Any], n: int, where: str) -> list[np.ndarray]:
    """Reads ``[counter, *slots]`` (``n`` variables a slot) once each dataset is known to be an
    integer scalar / floats shaped as its variable's first slot, stored whole in the file."""
    for j, d in enumerate(weights):
        first = weights[1 + (j - 1) % n] if j else None
        kinds, shape = ("f", first.shape) if j else ("iu", ())
        if d.dtype.kind not in kinds or d.shape != shape:
            expected = f"floats shaped as {first.name!r}, {shape}" if j else "an integer scalar"
            raise ValueError(
                f"{where}: dataset {d.name!r} holds {d.dtype} data of shape {d.shape}; expected "
                f"{expected}"
            )
        declared = math.prod(d.shape) * d.dtype.itemsize
        stored = 0 if d.external or d.is_virtual else d.id.get_storage_size()
        if declared > stored * (_MAX_FILTER_RATIO if d.id.get_create_plist().get_nfilters() else 1):
            raise ValueError(
                f"{where}: dataset {d.name!r} declares shape {d.shape} ({declared} bytes) but the "
                f"file stores {stored} bytes of it (is the file damaged?)"
            )
    return [np.asarray(d[()]) for d in weights]


def _optimizer_entry(opt: Any, where: str, source: str) -> dict:
    """A saved optimizer ``{class_name, config, ...}``, its fields' types checked."""
    entry = opt if isinstance(opt, dict) else {}
    config = entry.get("config") or {}
    fields = config if isinstance(config, dict) else {}
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
            raise ValueError(
                f"{where}: the optimizer's {field} in {source} is damaged: {opt!r:.99}"
            )
    return {**entry, "config": config}


def _keras2_optimizer(f: Any, where: str) -> dict | None:
    """The optimizer entry in an ``.h5`` file's ``training_config`` (``None`` without one)."""
    raw, name = f.attrs.get("training_config"), "attribute 'training_config'"
    training = {} if raw is None else _json_text(raw, where, name)
    opt = training.get("optimizer_config") if isinstance(training, dict) else training
    return None if opt is None else _optimizer_entry(opt, where, name)


# ---- Keras 2 (.h5) ----------------------------------------------------------------------------


@contextmanager
def _keras2_h5(path: Any, fn: str) -> Iterator[tuple[list[str], list[Any], dict | None, str]]:
    """The optimizer's (names, datasets) in file order, its ``{class_name, config}`` and the
    ``"fn: 'path'"`` prefix of errors, while the file is open."""
    h5py = _h5py()
    p = _existing_file(path, fn)
    where = f"{fn}: {str(p)!r}"
    if p.is_dir() or not h5py.is_hdf5(p):
        hint = (
            " (it is a zip archive, e.g. a Keras 3 .keras file: use load_keras3_archive)"
            if _is_zip(p)
            else ""
        )
        raise ValueError(f"{where} is not an HDF5 file{hint}")
    with _reading(where, "the HDF5 file"), h5py.File(p, "r") as f:
        opt_config = _keras2_optimizer(f, where)
        group = f.get("optimizer_weights")
        if not isinstance(group, h5py.Group):
            raise ValueError(
                f"{where} holds no optimizer state (no 'optimizer_weights' group): it was "
                "saved with include_optimizer=False, by save_weights(), or before the model was "
                "compiled"
            )
        names = _read_name_list(group, "weight_names", where)
        if not names:
            raise ValueError(
                f"{where} has an empty optimizer state (the optimizer never ran a step)"
            )
        yield names, [_dataset(group, n, where) for n in names], opt_config, where


def _split_keras2(
    names: list[str], values: list[Any], opt_config: dict | None, where: str
) -> tuple[list[Any], list[str], bool, bool]:
    """Orders the Keras 2 RMSprop variables as ``get_weights()``; checks it is RMSprop's state.

    Returns ``(weights, variable names, has momentum slot, centered)``.
    """
    class_name = (opt_config or {}).get("class_name")
    config = (opt_config or {}).get("config") or {}
    parts = [n.split(":")[0].split("/") for n in names]
    if (
        any(part in _NEW_OPTIMIZER_NAMES for ps in parts for part in ps)
        or config.get("is_legacy_optimizer") is False
    ):
        if _registered_name(opt_config or {}) == _JRMSPROP_KERAS:
            raise ValueError(
                f"{where} was written by Keras 3 with jrmsprop.keras.RMSprop (registered as "
                f"{_JRMSPROP_KERAS!r}; variables {names[:3]}...), not by the TF 2.x (legacy) "
                "RMSprop that load_keras2_h5 reads. Its arithmetic is TF 2.x's, but its state is "
                "laid out the Keras 3 way: reload the model with keras.models.load_model after "
                "`import jrmsprop.keras`, or save it as .keras and read it with "
                "load_keras3_archive(path, params, jrmsprop_keras=True)"
            )
        raise ValueError(
            f"{where} holds the state of the TF >= 2.11 / Keras 3 optimizer (variables "
            f"{names[:3]}...), whose RMSprop puts epsilon inside the root always; "
            "load_keras2_h5 reads the TF 2.x (legacy) RMSprop state. For a Keras 3 model, save "
            "it as .keras and use load_keras3_archive"
        )
    if class_name is not None and class_name.split(">")[-1] != "RMSprop":
        slots = sorted({ps[-1] for ps in parts[1:]})
        raise ValueError(
            f"{where} holds the state of a {class_name} optimizer (slots {slots}), not RMSprop"
        )
    counter = [i for i, ps in enumerate(parts) if ps[-1] in _KERAS2_COUNTERS]
    if counter != [0]:
        raise ValueError(
            f"{where}: expected the iteration counter first and once, got variables {names}"
        )
    slots_by_var: dict[str, dict[str, Any]] = {}
    var_names: dict[str, str] = {}
    order: list[str] = []
    for name, ps, value in zip(names[1:], parts[1:], values[1:], strict=True):
        slot = ps[-1]
        if slot not in _KERAS2_SLOTS or len(ps) < 2:
            found = sorted({q[-1] for q in parts[1:]})
            raise ValueError(
                f"{where}: not RMSprop state: slot {slot!r} in {name!r} (slots found: {found}; "
                f"RMSprop has {list(_KERAS2_SLOTS)})"
            )
        key = "/".join(ps[:-1])
        if slot == "rms":
            if key in slots_by_var:
                raise ValueError(f"{where}: two 'rms' slots for variable {key!r}")
            slots_by_var[key] = {}
            order.append(key)
            # Drop the optimizer's name: 'RMSprop/dense/kernel' -> 'dense/kernel'.
            var_names[key] = "/".join(ps[1:-1]) if len(ps) > 2 else key
        elif key not in slots_by_var:
            raise ValueError(f"{where}: slot {name!r} of a variable without an 'rms' slot")
        if slot in slots_by_var[key]:
            raise ValueError(f"{where}: two {slot!r} slots for variable {key!r}")
        slots_by_var[key][slot] = value
    if not order:
        raise ValueError(f"{where}: no 'rms' slots (the optimizer never ran a step)")
    has = {s: [s in slots_by_var[k] for k in order] for s in _KERAS2_SLOTS}
    for s in ("momentum", "mg"):
        if any(has[s]) and not all(has[s]):
            missing = [var_names[k] for k, h in zip(order, has[s], strict=True) if not h]
            raise ValueError(f"{where}: variables {missing} lack a {s!r} slot that others have")
    momentum, centered = all(has["momentum"]), all(has["mg"])
    if "centered" in config and bool(config["centered"]) != centered:
        raise ValueError(
            f"{where}: the config says centered={config['centered']} but the file "
            f"{'has' if centered else 'has no'} 'mg' slots"
        )
    weights = [values[0]] + [slots_by_var[k][s] for s in _KERAS2_SLOTS for k in order if has[s][0]]
    return weights, [var_names[k] for k in order], momentum, centered


def _check_params(params: Any, datasets: Sequence[Any], var_names: Sequence[str], where: str):
    """Same number of leaves as saved variables, leaf by leaf the shape of the dataset."""
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    if len(leaves_with_path) != len(datasets):
        raise ValueError(
            f"{where}: `params` has {len(leaves_with_path)} leaves but the saved optimizer state "
            f"is for {len(datasets)} variables ({', '.join(var_names)}); `params` must hold the "
            "model's trainable weights, in model.trainable_weights order"
        )
    for i, ((kp, leaf), d, var) in enumerate(
        zip(leaves_with_path, datasets, var_names, strict=True)
    ):
        leaf_shape = tuple(np.shape(leaf))
        if leaf_shape != d.shape:
            raise ValueError(
                f"{where}: `params` leaf {i} ({jax.tree_util.keystr(kp) or 'the root'}) has shape "
                f"{leaf_shape}, but saved variable {i} ({var}) has shape {d.shape} (dataset "
                f"{d.name!r}); `params` leaves must follow model.trainable_weights order"
            )


def keras2_h5_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The TF 2.x Keras RMSprop state in an ``.h5`` file, as ``optimizer.get_weights()``.

    ``[iterations, rms(v0), rms(v1), ..., momentum(v0), ..., mg(v0), ...]`` (momentum only with a
    momentum slot, mg only when centered), ready for :meth:`jrmsprop.RMSprop.set_weights` or
    :func:`jrmsprop.compat.state_from_keras2`. No TensorFlow is imported.

    Args:
      path: a ``tf_keras`` ``model.save("m.h5")`` file (optimizer included), or any HDF5 file
        with an ``optimizer_weights`` group laid out the same way.

    Returns:
      The NumPy arrays (``iterations`` is int64, as Keras stores it).

    Example (``m.h5`` from ``model.save`` in TF 2.x; ``variables`` the model's trainable
    weights as :class:`jrmsprop.Variable`, in order)::

      config = saved_optimizer_config("m.h5")["config"]
      opt = jrmsprop.RMSprop.from_config(config)
      opt.build(variables)
      opt.set_weights(keras2_h5_weights("m.h5"))
    """
    with _keras2_h5(path, "keras2_h5_weights") as (names, datasets, opt_config, where):
        weights, var_names, _, _ = _split_keras2(names, datasets, opt_config, where)
        return _read_state(weights, len(var_names), where)


def load_keras2_h5(path: str | os.PathLike, params: Any) -> RMSpropState:
    """Reads the TF 2.x Keras RMSprop state from an ``.h5`` file, for :func:`jrmsprop.rmsprop`.

    The file's slots ``rms``, ``momentum``, ``mg`` and ``iterations`` become an
    :class:`jrmsprop.RMSpropState` (``momentum`` ``None`` without a momentum slot, ``mg`` ``None``
    when not centered, ``count`` int32). Build the transformation with the same
    hyperparameters (:func:`saved_optimizer_config` reads them); training then continues as the
    Keras optimizer would have, bit for bit on the same gradients. No TensorFlow is imported.

    Args:
      path: a ``tf_keras`` ``model.save("m.h5")`` file with the optimizer included (the legacy,
        TF <= 2.10 optimizer: ``tf_keras.optimizers.legacy.RMSprop``).
      params: the parameters, a pytree whose leaves (in ``jax.tree.leaves`` order -- a dict's
        keys sorted) are the model's trainable weights in ``model.trainable_weights`` order,
        with the same shapes. A list is the safest container.

    Returns:
      The state, shaped like ``params`` (slot dtypes follow the leaves).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: not an HDF5 file or a damaged one (a dataset of the wrong type or shape, or
        declaring more data than the file holds: refused before it is read), no optimizer state,
        another optimizer's state, or ``params`` with a different number of leaves or a
        different shape (the leaf is named).
      ImportError: h5py is not installed.

    Example (``m.h5`` from ``model.save`` in TF 2.x, ``RMSprop(0.01, momentum=0.9)``)::

      params = [kernel0, bias0, kernel1, bias1]  # model.trainable_weights order
      state = load_keras2_h5("m.h5", params)
      tx = jrmsprop.rmsprop(learning_rate=0.01, momentum=0.9)
      updates, state = tx.update(grads, state, params)
    """
    with _keras2_h5(path, "load_keras2_h5") as (names, datasets, opt_config, where):
        weights, var_names, momentum, centered = _split_keras2(names, datasets, opt_config, where)
        _check_params(params, weights[1 : 1 + len(var_names)], var_names, where)
        labels = [repr(d.name) for d in weights]
        values = _read_state(weights, len(var_names), where)
    return _state_from_keras2(values, params, momentum, centered, where, labels.__getitem__)


# ---- Keras 3 (.keras) -------------------------------------------------------------------------


def _keras3_archive(path: Any, fn: str) -> tuple[dict, Path]:
    """``(optimizer {class_name, config}, path)`` from a ``.keras`` archive or folder."""
    p = _existing_file(path, fn)
    where = f"{fn}: {str(p)!r}"
    if p.is_dir():  # model.save(..., zipped=False): the same files in a folder
        if not (p / "config.json").is_file():
            raise ValueError(f"{where} is a folder without config.json, not a Keras 3 model")
        if not (p / "model.weights.h5").is_file():
            raise ValueError(f"{where} is a folder without model.weights.h5")
        size = (p / "config.json").stat().st_size
        raw = (p / "config.json").read_bytes() if size <= _MAX_CONFIG_BYTES else b""
    elif _is_zip(p):
        with _reading(where, "the zip archive"), zipfile.ZipFile(p) as z:
            missing = {"config.json", "model.weights.h5"} - set(z.namelist())
            if missing:
                raise ValueError(
                    f"{where} is a zip archive without {sorted(missing)}, not a Keras 3 .keras file"
                )
            size = z.getinfo("config.json").file_size
            raw = z.read("config.json") if size <= _MAX_CONFIG_BYTES else b""
    else:
        h5py = _h5py()
        hint = (
            " (it is an HDF5 file, e.g. a TF 2.x Keras .h5 model: use load_keras2_h5)"
            if p.is_file() and h5py.is_hdf5(p)
            else ""
        )
        raise ValueError(f"{where} is not a zip archive (a Keras 3 .keras file){hint}")
    if size > _MAX_CONFIG_BYTES:
        raise ValueError(f"{where}: config.json has {size} bytes, too many for a model config")
    config = _json_text(raw, where, "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: config.json does not hold a model config")
    compile_config = config.get("compile_config") or {}
    opt = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if not isinstance(opt, dict):
        raise ValueError(
            f"{where} holds no optimizer state: the model was saved without being compiled "
            "with an optimizer"
        )
    return _optimizer_entry(opt, where, "config.json"), p


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of an open binary file, read in place (as h5py reads)."""

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


@contextmanager
def _keras3_weights(p: Path, where: str) -> Iterator[Any]:
    """``model.weights.h5`` of a ``.keras`` archive or folder open with h5py, read in place."""
    h5py = _h5py()
    with ExitStack() as stack, _reading(where, "model.weights.h5"):
        if p.is_dir():
            source: Any = p / "model.weights.h5"
        else:
            z = stack.enter_context(zipfile.ZipFile(p))
            info = z.getinfo("model.weights.h5")
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
                # As Keras writes it: the member's bytes sit in the archive, after a 30-byte
                # header and the name and extra field whose lengths end it.
                f = stack.enter_context(open(p, "rb"))
                f.seek(info.header_offset + 26)
                b = f.read(4)
                start = info.header_offset + 30 + int.from_bytes(b[:2], "little")
                start += int.from_bytes(b[2:], "little")
                source = _Window(f, start, info.file_size)
            elif info.file_size > max(_MAX_INFLATED_BYTES, _MAX_INFLATION * info.compress_size):
                raise ValueError(
                    f"{where}: model.weights.h5 inflates {info.file_size} bytes (a zip bomb?)"
                )
            else:
                # Random access to compressed data would inflate it again on every backward
                # seek: inflate it once, in chunks, into a temporary file (zeros as holes).
                source = stack.enter_context(tempfile.TemporaryFile())
                with z.open(info) as m:
                    for chunk in iter(lambda: m.read(1 << 20), b""):
                        if chunk.count(0) == len(chunk):
                            source.seek(len(chunk), os.SEEK_CUR)
                        else:
                            source.write(chunk)
                    source.truncate()
        yield stack.enter_context(h5py.File(source, "r"))


def _keras3_optimizer_vars(f: Any, where: str) -> list[Any]:
    """The optimizer's variables in order, unread. Under a ``mixed_float16`` policy Keras 3 wraps
    the optimizer in a ``LossScaleOptimizer``, whose own variables (loss scale, step counter) come
    first in ``optimizer/vars``; the wrapped optimizer's variables are in
    ``optimizer/inner_optimizer/vars``, in the usual order: those are read."""
    h5py = _h5py()
    group = f.get("optimizer/inner_optimizer/vars")
    if not isinstance(group, h5py.Group):
        group = f.get("optimizer/vars")
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{where} holds no optimizer state (no 'optimizer/vars' in the weights)")
    keys = [str(i) for i in range(len(group))]
    if set(group.keys()) != set(keys):
        raise ValueError(f"{where}: unexpected optimizer variables {list(group.keys())}")
    return [_dataset(group, k, where) for k in keys]


def _registered_name(opt: Mapping[str, Any]) -> str | None:
    """The name Keras registered the optimizer class under (``"jrmsprop>RMSprop"``); ``None``
    for Keras's own optimizers. Keras 3 writes it as ``registered_name`` in a ``.keras`` archive
    and as the ``class_name`` itself in an ``.h5`` file."""
    name = opt.get("registered_name")
    if isinstance(name, str) and name:
        return name
    class_name = opt.get("class_name")
    if isinstance(class_name, str) and ">" in class_name:
        return class_name
    module = opt.get("module")
    if isinstance(module, str) and module.split(".")[0] == "jrmsprop":
        return _JRMSPROP_KERAS
    return None


def load_keras3_archive(
    path: str | os.PathLike, params: Any, *, jrmsprop_keras: bool = False
) -> RMSpropState:
    """Reads the Keras 3 RMSprop state from a ``.keras`` file, for :func:`jrmsprop.compat.keras3`.

    The optimizer variables ``iteration``, ``velocity``, ``momentum`` and ``average_gradient``
    become an :class:`jrmsprop.RMSpropState` (``momentum`` ``None`` when ``momentum == 0``,
    ``mg`` ``None`` when not centered, ``count`` int32). Build ``compat.keras3`` with the same
    hyperparameters (:func:`saved_optimizer_config` reads them). No TensorFlow, Keras or PyTorch
    is imported.

    Args:
      path: a Keras 3 ``model.save("m.keras")`` archive (or the folder written with
        ``zipped=False``) of a model compiled with ``keras.optimizers.RMSprop``.
      params: the parameters, a pytree whose leaves (in ``jax.tree.leaves`` order) are the
        model's trainable variables in ``model.trainable_variables`` order, same shapes.
      jrmsprop_keras: ``True`` to read an archive written with :class:`jrmsprop.keras.RMSprop`
        (registered as ``"jrmsprop>RMSprop"``, TF 2.x arithmetic): the state is then for
        :func:`jrmsprop.rmsprop` with the saved ``decay``, not for ``compat.keras3``. Each kind
        of archive is refused under the other setting, so a state never meets the wrong
        arithmetic silently.

    Returns:
      The state, shaped like ``params``. A model trained under the ``mixed_float16`` policy
      (Keras wraps the optimizer in a ``LossScaleOptimizer``) gives the wrapped RMSprop's state;
      the loss scale is not part of it.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: not a ``.keras`` archive (or a damaged one), no optimizer state, another
        optimizer's state (``jrmsprop.keras.RMSprop``'s without ``jrmsprop_keras=True``), an
        optimizer option jrmsprop does not reproduce (``use_ema``, gradient accumulation), or
        ``params`` with a different number of leaves or a different shape (the leaf is named).
      ImportError: h5py is not installed.

    Example (``m.keras`` from Keras 3, ``RMSprop(0.01, momentum=0.9, centered=True)``)::

      state = load_keras3_archive("m.keras", params)
      tx = jrmsprop.compat.keras3(0.01, momentum=0.9, centered=True)
      updates, state = tx.update(grads, state, params)

    An archive of a model compiled with ``jrmsprop.keras.RMSprop(0.01, momentum=0.9,
    decay=1e-4)``::

      state = load_keras3_archive("m.keras", params, jrmsprop_keras=True)
      c = saved_optimizer_config("m.keras")["config"]
      tx = jrmsprop.rmsprop(c["learning_rate"], c["rho"], c["momentum"], c["epsilon"],
                            c["centered"], decay=c["decay"])
    """
    fn = "load_keras3_archive"
    if not isinstance(jrmsprop_keras, (bool, np.bool_)):
        raise TypeError(f"{fn}: `jrmsprop_keras` must be True or False, got {jrmsprop_keras!r}")
    opt, p = _keras3_archive(path, fn)
    where = f"{fn}: {str(p)!r}"
    class_name, config = opt["class_name"], opt["config"]
    registered = _registered_name(opt)
    if class_name.split(">")[-1] != "RMSprop":
        raise ValueError(f"{where} holds the state of a {class_name} optimizer, not RMSprop")
    if registered == _JRMSPROP_KERAS and not jrmsprop_keras:
        raise ValueError(
            f"{where} was saved with jrmsprop.keras.RMSprop (registered as "
            f"{_JRMSPROP_KERAS!r}), which has the TF 2.x arithmetic (epsilon outside the root "
            "without momentum, lr inside the momentum buffer, `decay`), not Keras 3's RMSprop "
            "that compat.keras3 reproduces. Read it with load_keras3_archive(path, params, "
            "jrmsprop_keras=True) and continue with jrmsprop.rmsprop(c['learning_rate'], "
            "c['rho'], c['momentum'], c['epsilon'], c['centered'], decay=c['decay']), "
            "c = saved_optimizer_config(path)['config'] (or reload the model with "
            "keras.models.load_model after `import jrmsprop.keras`)"
        )
    if registered is not None and registered != _JRMSPROP_KERAS:
        raise ValueError(
            f"{where} holds the state of a custom optimizer registered as {registered!r}, not "
            "Keras 3's RMSprop; its arithmetic is unknown"
        )
    if jrmsprop_keras and registered != _JRMSPROP_KERAS:
        raise ValueError(
            f"{where} holds the state of Keras 3's own keras.optimizers.RMSprop, not of "
            "jrmsprop.keras.RMSprop (jrmsprop_keras=True): read it without jrmsprop_keras and "
            "continue with compat.keras3"
        )
    for option in ("use_ema", "gradient_accumulation_steps"):
        if config.get(option):
            raise ValueError(
                f"{where}: the optimizer has {option}={config[option]!r}, which jrmsprop does not "
                "reproduce"
            )
    momentum = float(config.get("momentum") or 0.0) > 0
    centered = config.get("centered", False)
    # iteration, then learning_rate when it is a number (a schedule is not a variable).
    head = 2 if isinstance(config.get("learning_rate"), (int, float)) else 1
    blocks = 1 + int(momentum) + int(centered)
    with _keras3_weights(p, where) as f:
        values = _keras3_optimizer_vars(f, where)
        if len(values) <= head:
            raise ValueError(f"{where}: no slot variables (the optimizer never ran a step)")
        if (len(values) - head) % blocks:
            raise ValueError(
                f"{where}: {len(values) - head} slot variables cannot be {blocks} equal blocks "
                f"(momentum={config.get('momentum')}, centered={centered})"
            )
        n_saved = (len(values) - head) // blocks
        names = [f"velocity {i}" for i in range(n_saved)]
        _check_params(params, values[head : head + n_saved], names, where)
        # Keras 3 keeps Keras 2's layout (every velocity, every momentum, every
        # average_gradient), and the same slot dtypes: state_from_keras2 builds its state.
        weights = _read_state([values[0], *values[head:]], n_saved, where)
    # Saved variable k of the optimizer: weights[0] is variable 0, weights[j] variable head-1+j.
    return _state_from_keras2(
        weights,
        params,
        momentum,
        centered,
        where,
        lambda j: f"saved optimizer variable {j + head - 1 if j else 0}",
    )


def saved_optimizer_config(path: str | os.PathLike) -> dict[str, Any]:
    """The optimizer's class and config stored in a Keras ``.h5`` or ``.keras`` file.

    Args:
      path: a ``tf_keras`` ``.h5`` model file or a Keras 3 ``.keras`` archive.

    Returns:
      ``{"class_name": ..., "config": {...}, "registered_name": ...}`` as Keras wrote it (for
      RMSprop the config holds ``learning_rate``, ``rho``, ``momentum``, ``epsilon``,
      ``centered``, ...; float32 values appear as their exact doubles, e.g.
      ``0.009999999776482582``). ``registered_name`` is ``"jrmsprop>RMSprop"`` for
      :class:`jrmsprop.keras.RMSprop` (TF 2.x arithmetic, with ``decay``: continue with
      :func:`jrmsprop.rmsprop`), another ``"package>Class"`` for a custom optimizer, and
      ``None`` for Keras's own optimizers.
    """
    fn = "saved_optimizer_config"
    p = _existing_file(path, fn)
    if _is_zip(p) or p.is_dir():
        opt: dict | None = _keras3_archive(p, fn)[0]
    else:
        h5py = _h5py()
        if not h5py.is_hdf5(p):
            raise ValueError(f"{fn}: {str(p)!r} is neither an HDF5 file nor a .keras archive")
        with _reading(f"{fn}: {str(p)!r}", "the HDF5 file"), h5py.File(p, "r") as f:
            opt = _keras2_optimizer(f, f"{fn}: {str(p)!r}")
        if opt is None:
            raise ValueError(f"{fn}: {str(p)!r} holds no optimizer config (no 'training_config')")
    return {
        "class_name": opt["class_name"],
        "config": opt["config"],
        "registered_name": _registered_name(opt),
    }


# ---- states from get_weights() lists and torch state_dicts ------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _numbers(value: Any, what: str) -> np.ndarray:
    """``value`` (a torch tensor too) as a NumPy array of numbers; a ``TypeError`` starting with
    ``what`` for a ragged nested list, ``None``, strings and other objects
    (:func:`jrmsprop._src.variable.exact_array`, the wrapper's check of the same)."""
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(exact_array(value, what))


def _param_dtypes(params: Any, who: str) -> list[tuple[str, tuple[int, ...], jnp.dtype]]:
    """Per parameter leaf: ``(path, shape, dtype)``; a ``TypeError`` naming the leaf for
    anything that is not a floating-point (or complex) array or number."""
    out = []
    for i, (path, p) in enumerate(jax.tree_util.tree_flatten_with_path(params)[0]):
        where = jax.tree_util.keystr(path) or "<root>"
        p_dtype = None
        if not isinstance(p, (str, bytes)):  # jnp.result_type would read "float32" as a dtype
            try:
                p_dtype = jnp.dtype(jnp.result_type(p))
            except (TypeError, ValueError):
                pass
        if p_dtype is None:
            got = repr(p) if isinstance(p, (str, bytes)) and len(p) <= 40 else None
            got = got or f"of type {type(p).__name__}"
            raise TypeError(
                f"{who}: `params` leaf {i} (the parameter at {where}) is {got}; parameters must "
                "be arrays of floating-point (or complex) numbers"
            )
        if not jnp.issubdtype(p_dtype, jnp.inexact):
            raise TypeError(
                f"{who}: the parameter at {where} has dtype {p_dtype.name}; RMSprop needs "
                "floating-point (or complex) parameters (init refuses it too)"
            )
        out.append((where, tuple(np.shape(p)), p_dtype))
    return out


def _build_slot(
    params: Any,
    arrays: Sequence[Any],
    what: str,
    real: bool,
    complex_as_real: bool,
    sources: Sequence[str],
) -> Any:
    """One slot, leaf by leaf in ``init``'s dtype (saved values converted, never dropped).

    ``what`` names the slot (``"state_from_keras2: rms"``), ``sources[i]`` where array ``i``
    came from (``"`weights[1]`"``). A saved value is refused when its conversion would change
    it beyond rounding: a finite value beyond the slot dtype's range (it would become inf), and
    for ``rms`` (``real``) a negative one (a running average of squares; the next step would
    take its square root). NaN and inf are kept as saved: they are what a framework's state
    holds after a NaN or overflowing gradient, and jrmsprop continues from them as it would.
    """
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if len(arrays) != len(paths_and_leaves):
        raise ValueError(f"{what}: expected {len(paths_and_leaves)} arrays, got {len(arrays)}")
    out = []
    for i, ((path, p), a) in enumerate(zip(paths_and_leaves, arrays, strict=True)):
        where = jax.tree_util.keystr(path) or "<root>"
        label = f"{what}[{i}]: {sources[i]} (for the parameter at {where})"
        a = _numbers(a, label)
        p_shape, p_dtype = tuple(np.shape(p)), jnp.dtype(jnp.result_type(p))
        if a.shape != p_shape:
            raise ValueError(
                f"{what}[{i}]: shape {a.shape} does not match the parameter {p_shape} "
                f"({sources[i]}, the parameter at {where})"
            )
        dtype = slot_dtype_of(p_dtype, real, complex_as_real)
        if a.dtype.kind == "c" and not jnp.issubdtype(dtype, jnp.complexfloating):
            if np.any(a.imag != 0):
                raise ValueError(
                    f"{what}[{i}]: complex values with a non-zero imaginary part, but this slot "
                    f"is real ({dtype.name}) for a {p_dtype.name} parameter ({sources[i]}, the "
                    f"parameter at {where})"
                )
            a = a.real
        converted = slot_values(label, a, dtype, squares=real)
        out.append(jnp.asarray(converted, dtype=dtype))
    return treedef.unflatten(out)


def _count(step: Any, what: str) -> jax.Array:
    try:
        array = np.asarray(_to_numpy(step))
        value = float(array.reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number (a scalar), got {step!r}") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ValueError(f"{what} must be a non-negative integer, got {value}")
    exact = int(array.reshape(())) if array.dtype.kind in "iu" else int(value)
    if exact > INT32_MAX:
        raise ValueError(
            f"{what} must be at most {INT32_MAX} (the step count is int32; "
            f"RMSprop.set_weights refuses it too), got {exact}"
        )
    return jnp.asarray(exact, jnp.int32)


def state_from_keras2(
    weights: Sequence[Any], params: Any, *, momentum: bool, centered: bool
) -> RMSpropState:
    """Builds the functional state from a TF 2.x Keras optimizer's ``get_weights()``.

    Args:
      weights: ``[iterations, rms(v0), …, momentum(v0), …, mg(v0), …]`` as NumPy arrays (the
        momentum block only with a momentum slot, the mg block only when centered).
        ``iterations`` must be an integer in ``[0, 2**31 - 1]``; a slot value that would not
        survive the conversion to the slot's dtype (a finite value that overflows it, e.g.
        float64 1e39 for a float32 slot) and a negative ``rms`` are refused. NaN and inf are
        loaded as saved (a framework's state after a NaN or overflowing gradient).
      params: the parameters, a pytree whose leaves are in the Keras variable order.
      momentum: whether the Keras optimizer had a momentum slot.
      centered: whether it was centered.

    Returns:
      An :class:`jrmsprop.RMSpropState` that continues exactly where Keras stopped, with the
      structure and dtypes ``init`` gives (float32 slots for float16 parameters, a real ``rms``
      for complex ones).

    Raises:
      TypeError: ``weights`` is not a list, a weight is not an array of numbers (a ragged
        nested list, ``None``, a string) or a parameter leaf is not floating-point; the weight's
        index or the leaf is named.
      ValueError: a wrong number of weights, a shape that does not match its parameter, or a
        value refused as above (the weight's index, the slot and the leaf are named).
    """
    return _state_from_keras2(weights, params, momentum, centered, "state_from_keras2")


def _state_from_keras2(
    weights: Sequence[Any],
    params: Any,
    momentum: Any,
    centered: Any,
    fn: str,
    weight: Callable[[int], str] = "`weights[{}]`".format,
) -> RMSpropState:
    """:func:`state_from_keras2` for the caller ``fn`` (the prefix of every error), whose
    weight ``j`` is ``weight(j)`` in messages."""
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        raise TypeError(
            f"{fn}: `weights` must be a list of arrays (the optimizer's "
            f"get_weights()), got {type(weights).__name__}"
        )
    for name, flag in (("momentum", momentum), ("centered", centered)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{fn}: `{name}` must be True or False, got {flag!r}")
    momentum, centered = bool(momentum), bool(centered)
    _param_dtypes(params, fn)
    n = len(jax.tree.leaves(params))
    blocks = 1 + int(momentum) + int(centered)
    if len(weights) != 1 + blocks * n:
        raise ValueError(
            f"{fn}: `weights` must hold 1 + {blocks}·{n} = {1 + blocks * n} arrays "
            f"(iterations, then rms{', momentum' if momentum else ''}{', mg' if centered else ''}"
            f" for each of {n} variables), got {len(weights)}"
        )
    chunks = [weights[1 + k * n : 1 + (k + 1) * n] for k in range(blocks)]
    sources = [[weight(1 + k * n + i) for i in range(n)] for k in range(blocks)]
    count = _count(weights[0], f"{fn}: {weight(0)} (iterations)")
    rms = _build_slot(params, chunks[0], f"{fn}: rms", True, False, sources[0])
    mom = (
        _build_slot(params, chunks[1], f"{fn}: momentum", False, False, sources[1])
        if momentum
        else None
    )
    mg = (
        _build_slot(params, chunks[-1], f"{fn}: mg", False, False, sources[-1])
        if centered
        else None
    )
    return RMSpropState(count, rms, mom, mg)


def _torch_state_dict_parts(state_dict: Any) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    """``(param_groups, state)`` of a torch optimizer ``state_dict()``, checked for shape."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "state_from_torch: `state_dict` must be a torch optimizer's state_dict() (a mapping), "
            f"got {type(state_dict).__name__}"
        )
    if not {"state", "param_groups"} <= set(state_dict):
        got = sorted(map(str, state_dict))
        raise ValueError(
            "state_from_torch: `state_dict` must be a torch optimizer's state_dict(), a mapping "
            f"with 'state' and 'param_groups'; got {got}"
        )
    groups, per_param = state_dict["param_groups"], state_dict["state"]
    if not isinstance(per_param, Mapping):
        raise ValueError(
            "state_from_torch: `state_dict['state']` must be a mapping, got "
            f"{type(per_param).__name__}"
        )
    if not isinstance(groups, Sequence) or not all(
        isinstance(g, Mapping) and "params" in g for g in groups
    ):
        raise ValueError(
            "state_from_torch: `state_dict['param_groups']` must be a list of dicts, each with "
            "a 'params' list"
        )
    return list(groups), per_param


def _torch_index(key: Any, what: str) -> int:
    """A parameter index: an int, or its decimal string (a state_dict after JSON or YAML)."""
    if isinstance(key, (bool, np.bool_)):
        pass
    elif isinstance(key, numbers.Integral):
        return int(key)
    elif isinstance(key, str) and key.strip().isdecimal():
        return int(key)
    raise ValueError(f"state_from_torch: {what} must be a parameter index (an int), got {key!r}")


def _torch_flags(groups: list[Mapping[str, Any]]) -> tuple[bool, bool]:
    flags = set()
    for k, g in enumerate(groups):
        m = g.get("momentum", 0)
        if (
            isinstance(m, (bool, np.bool_))
            or not isinstance(m, numbers.Real)
            or not math.isfinite(float(m))
            or float(m) < 0
        ):
            raise ValueError(
                f"state_from_torch: `state_dict['param_groups'][{k}]['momentum']` must be a "
                f"non-negative number, got {m!r}"
            )
        c = g.get("centered", False)
        if not isinstance(c, (bool, np.bool_)):
            raise ValueError(
                f"state_from_torch: `state_dict['param_groups'][{k}]['centered']` must be True "
                f"or False, got {c!r}"
            )
        flags.add((float(m) > 0, bool(c)))
    _check_torch_groups_agree(groups)
    return flags.pop() if flags else (False, False)


# The hyperparameters of a torch.optim.RMSprop param group and torch's defaults (what a group
# that lacks the key uses). ``state_from_torch`` returns one state for one ``compat.torch``: the
# groups must agree on all of them.
_TORCH_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": 0.01,
    "alpha": 0.99,
    "eps": 1e-8,
    "weight_decay": 0,
    "momentum": 0,
    "centered": False,
    "maximize": False,
}


def _torch_group_value(value: Any) -> Any:
    """A group's hyperparameter as a comparable Python value (a tensor or NumPy scalar included;
    NaN equals NaN), or its ``repr`` when it is not a number."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return repr(value)
    return "nan" if math.isnan(number) else number


def _check_torch_groups_agree(groups: list[Mapping[str, Any]]) -> None:
    """Refuses param groups whose hyperparameters (see ``_TORCH_GROUP_DEFAULTS``) differ, naming
    the groups and the keys; a key a group lacks counts as torch's default."""
    if len(groups) < 2:
        return
    present = [key for key in _TORCH_GROUP_DEFAULTS if any(key in g for g in groups)]

    def value(group: Mapping[str, Any], key: str) -> Any:
        return _torch_group_value(group.get(key, _TORCH_GROUP_DEFAULTS[key]))

    differing = {
        k: [key for key in present if value(g, key) != value(groups[0], key)]
        for k, g in enumerate(groups)
    }
    keys = [key for key in present if any(key in d for d in differing.values())]
    if not keys:
        return
    shown = "; ".join(
        f"group {k} has " + json.dumps({key: value(g, key) for key in keys}, default=str)
        for k, g in enumerate(groups)
        if k == 0 or differing[k]
    )
    raise ValueError(
        f"state_from_torch: the param groups of `state_dict['param_groups']` differ in {keys} "
        f"({shown}; a missing key counts as torch's default); one compat.torch(...) state "
        "serves groups with equal hyperparameters only (split the state_dict into one per group "
        "and load each for its own compat.torch)"
    )


def state_from_torch(state_dict: Mapping[str, Any], params: Any) -> RMSpropState:
    """Builds the functional state from ``torch.optim.RMSprop.state_dict()``.

    Args:
      state_dict: the optimizer's ``state_dict()`` (tensors or NumPy arrays). One param group,
        or several whose hyperparameters agree: groups that differ in ``lr``, ``alpha``,
        ``eps``, ``weight_decay``, ``momentum``, ``centered`` or ``maximize`` (a key a group
        lacks counts as torch's default) raise a ``ValueError``, since one
        :func:`jrmsprop.compat.torch` cannot reproduce them. Parameter indices may be ints or
        their decimal strings (as after a JSON round trip). With momentum 0 the state has no
        momentum slot: a ``momentum_buffer`` entry (torch keeps one from an earlier run with
        momentum but never reads it at momentum 0) is ignored. ``step`` must be an integer in
        ``[0, 2**31 - 1]``; a finite slot value that would overflow the slot's dtype, and a
        negative ``square_avg`` (either part, for a complex parameter), are refused naming the
        entry and the leaf; NaN and inf load as saved (a state after a NaN or overflowing
        gradient).
      params: the JAX parameters, a pytree whose leaves are in the order of the torch
        optimizer's parameter list.

    Returns:
      An :class:`jrmsprop.RMSpropState` for :func:`jrmsprop.compat.torch` with the same
      hyperparameters, with the structure and dtypes its ``init`` gives (float32 slots for
      float16 parameters); parameters the torch optimizer never stepped get fresh (zero) slots.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> sd = {"state": {0: {"step": np.float32(3), "square_avg": np.ones(2, np.float32)}},
      ...       "param_groups": [{"params": [0], "momentum": 0, "centered": False}]}
      >>> compat.state_from_torch(sd, [jnp.zeros(2)]).count
      Array(3, dtype=int32)
    """
    groups, raw_state = _torch_state_dict_parts(state_dict)
    order = []
    for k, group in enumerate(groups):
        if isinstance(group["params"], (str, bytes)) or not isinstance(group["params"], Sequence):
            raise ValueError(
                f"state_from_torch: `state_dict['param_groups'][{k}]['params']` must be a list "
                f"of parameter indices, got {type(group['params']).__name__}"
            )
        for i in group["params"]:
            order.append(_torch_index(i, f"`state_dict['param_groups'][{k}]['params']` entry"))
    if len(set(order)) != len(order):
        twice = sorted({i for i in order if order.count(i) > 1})
        raise ValueError(
            f"state_from_torch: parameter indices {twice} appear more than once in "
            "`state_dict['param_groups']`"
        )
    per_param: dict[int, Any] = {}
    keys: dict[int, Any] = {}  # as written in the state_dict (an int, or its string)
    for key, entry in raw_state.items():
        i = _torch_index(key, f"`state_dict['state']` key {key!r}:")
        if i in per_param:
            raise ValueError(
                f"state_from_torch: `state_dict['state']` has two entries for parameter {i} "
                f"(keys {i!r} and {key!r})"
            )
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"state_from_torch: `state_dict['state'][{key!r}]` must be a mapping, got "
                f"{type(entry).__name__}"
            )
        per_param[i] = entry
        keys[i] = key
    unmatched = sorted(set(per_param) - set(order))
    if unmatched:
        raise ValueError(
            f"state_from_torch: `state_dict['state']` has entries for parameters {unmatched}, "
            f"which no param group lists (the groups list {order}); their state would be lost"
        )
    has_momentum, centered = _torch_flags(groups)
    leaves = jax.tree.leaves(params)
    if len(order) != len(leaves):
        raise ValueError(
            f"state_from_torch: the state_dict has {len(order)} parameters, `params` has "
            f"{len(leaves)}"
        )
    _param_dtypes(params, "state_from_torch")
    needed = ("step", "square_avg")
    needed += ("momentum_buffer",) if has_momentum else ()
    needed += ("grad_avg",) if centered else ()
    for i in order:
        if i not in per_param:  # a parameter never stepped has no entry
            continue
        missing = [k for k in needed if k not in per_param[i]]
        if missing:
            raise ValueError(
                f"state_from_torch: `state_dict['state'][{i!r}]` lacks {missing} (an RMSprop "
                f"state with momentum={has_momentum}, centered={centered} has {list(needed)})"
            )
    steps = {
        int(
            _count(
                per_param[i]["step"],
                f"state_from_torch: `state_dict['state'][{keys[i]!r}]['step']`",
            )
        )
        for i in order
        if i in per_param
    }
    if len(steps) > 1:
        raise ValueError(f"state_from_torch: parameters were stepped unequally ({sorted(steps)})")
    step = next(iter(steps)) if steps else 0

    def slot(name: str) -> list[Any]:
        return [
            per_param[i][name] if i in per_param else np.zeros(np.shape(p), np.float32)
            for i, p in zip(order, leaves, strict=True)
        ]

    def build(name: str, real: bool) -> Any:
        sources = [
            f"`state_dict['state'][{keys[i]!r}][{name!r}]`"
            if i in per_param
            else f"zeros (parameter {i} was never stepped)"
            for i in order
        ]
        return _build_slot(params, slot(name), f"state_from_torch: {name}", real, True, sources)

    return RMSpropState(
        count=jnp.asarray(step, jnp.int32),
        rms=build("square_avg", True),
        momentum=build("momentum_buffer", False) if has_momentum else None,
        mg=build("grad_avg", False) if centered else None,
    )
