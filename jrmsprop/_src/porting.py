"""A trained model's weights and optimizer state, read from Keras and PyTorch files by the
framework's own names, and placed by name into a flax nnx model, an equinox model or a dict.

Keras files are read through :mod:`jrmsprop._src.checkpoint`'s checked reader; torch
state_dicts from ``.npz`` (no pickle) or safetensors.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src import checkpoint as ck
from jrmsprop._src.transform import RMSpropState

__all__ = ["Saved", "place", "place_state", "read_keras", "read_torch", "state_from_torch"]

# Keras 3 stores a layer's variables as vars/0, vars/1, ...: the names of the common layers'.
_CONV = [f"Conv{n}D{t}" for n in "123" for t in ("", "Transpose")]
_KERAS3_VARS = {
    **dict.fromkeys(["Dense", "EinsumDense", *_CONV], ("kernel", "bias")),
    "Embedding": ("embeddings",),
    "LayerNormalization": ("gamma", "beta"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
# torch.optim.RMSprop's defaults of the hyperparameters its param groups must agree on.
_TORCH_DEFAULTS = dict(
    lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False
)
# The kernel layouts: "keras" (in, out) and HWIO, "torch" (out, in) and OIHW.
_OTHER = {"keras": "torch", "torch": "keras"}


class Saved(NamedTuple):
    """What :func:`read_keras` / :func:`read_torch` found, by the framework's own names."""

    weights: dict[str, np.ndarray]  # the model's: "conv/kernel" (Keras), "conv.weight" (torch)
    slots: dict[str, dict[str, np.ndarray]]  # per trainable weight: {slot name: array}
    step: int | None  # the optimizer's step count (None: no optimizer state saved)
    config: dict | None  # the optimizer's config (Keras) or first param group (torch)
    framework: str  # "keras2", "keras3" or "torch"

    @property
    def layout(self) -> str:
        return "torch" if self.framework == "torch" else "keras"


def read_keras(path: str | os.PathLike) -> Saved:
    """A ``tf_keras`` ``.h5`` or Keras 3 ``.keras`` model's weights and RMSprop state.

    Weights are named ``<layer>/<variable>`` (``conv/kernel``: tf_keras's name without ``:0``,
    Keras 3's ``variable.path`` without the model's name); the slots (``rms``, ``momentum``,
    ``mg``; Keras 3: ``velocity``, ``momentum``, ``average_gradient``) by their weight's name.
    """
    p, where, kind = ck._open(path, "read_keras")
    fw = "keras2" if kind == "h5" else "keras3"
    opt = ck._optimizer(p, where, kind) if kind == "h5" else None
    datasets, trainable = {}, []
    with ck._weights(p, where, kind) as f:
        if kind == "h5":
            top = f["model_weights"] if "model_weights" in f else f
            for layer in ck._names(top, "layer_names", where):
                names = ck._names(top[layer], "weight_names", where)
                found = ck._datasets(top[layer], names, where)
                datasets.update(zip([n.split(":")[0] for n in names], found, strict=True))
            if has_state := "optimizer_weights" in f:
                trainable = ck._keras2_layout(f, opt or {}, where)[1]
        else:
            used: dict[str, int] = {}
            for layer in ck._keras3_config(p, where).get("config", {}).get("layers", []):
                cls, config = layer.get("class_name", ""), layer.get("config", {})
                snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", cls)  # keras's to_snake_case
                key = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
                used[key] = n = used.get(key, -1) + 1
                group = f.get(f"layers/{key}{f'_{n}' if n else ''}/vars")
                if cls == "InputLayer" or group is None:
                    continue
                keys = sorted(group, key=int)
                names = _KERAS3_VARS.get(cls, keys)
                names = names if len(names) == len(keys) else keys
                for var, d in zip(names, ck._datasets(group, keys, where), strict=True):
                    datasets[f"{config['name']}/{var}"] = d
                    if config.get("trainable", True) and not var.startswith("moving_"):
                        trainable.append(f"{config['name']}/{var}")
            has_state = "optimizer/vars" in f or "optimizer/inner_optimizer/vars" in f
        found = list(datasets.values())
        arrays = ck._read(found, [("fciub", d.shape, "numbers") for d in found], where)
    weights, slots, step, config = dict(zip(datasets, arrays, strict=True)), {}, None, None
    if has_state:
        params = [jnp.zeros(weights[n].shape, weights[n].dtype) for n in trainable]
        state = (ck.load_keras2_h5 if kind == "h5" else ck.load_keras3_archive)(p, params)
        for slot, block in zip(ck._SLOTS[fw][1], state[1:], strict=True):
            for name, a in zip(trainable, jax.tree.leaves(block), strict=False):
                slots.setdefault(name, {})[slot] = np.asarray(a)
        step, config = int(state.count), ck.saved_optimizer_config(p)["config"]
    return Saved(weights, slots, step, config, fw)


def _numeric(name: str, a: Any, where: str) -> np.ndarray:
    if (a := np.asarray(a)).dtype.kind not in "fciub":
        raise ValueError(f"{where}: {name!r} holds {a.dtype} data, not numbers")
    return a


def read_torch(path: str | os.PathLike) -> Saved:
    """A torch model's and ``torch.optim.RMSprop``'s state_dicts from ``.npz`` or safetensors.

    The file holds ``model/<name>`` (``model.state_dict()``), ``optimizer/<parameter
    name>/<slot>`` (``optimizer.state_dict()["state"]`` with each index replaced by its
    parameter's name) and optionally the param groups as JSON in ``optimizer/param_groups`` (an
    npz string; a safetensors metadata entry). Neither torch nor pickle is used.
    """
    fn, p = "read_torch", os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{fn}: no such file: {p!r}")
    where, groups = f"{fn}: {p!r}", None
    with ck._reading(where, "the file"):
        if str(p).endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(p, "np") as f:
                groups = (f.metadata() or {}).get("optimizer/param_groups")
                arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        else:
            with open(p, "rb") as fh:  # closed also when np.load fails
                if not hasattr(z := np.load(fh, allow_pickle=False), "files"):
                    raise ValueError(f"{where} is one array (.npy), not an .npz of named arrays")
                with z:
                    arrays = {k: z[k] for k in z.files}
            if (raw := arrays.pop("optimizer/param_groups", None)) is not None:
                groups = str(raw)
    weights, slots, steps = {}, {}, set()
    for key, a in arrays.items():
        head, _, name = key.partition("/")
        if head == "model":
            weights[name] = _numeric(key, a, where)
        elif head == "optimizer" and "/" in name:
            param, slot = name.rsplit("/", 1)
            if slot == "step":
                steps.add(int(ck._count(a, f"{where}: {key!r}")))
            else:
                slots.setdefault(param, {})[slot] = _numeric(key, a, where)
        else:
            raise ValueError(
                f"{where}: {key!r} is neither model/<name> nor optimizer/<name>/<slot>"
            )
    if len(steps) > 1:
        raise ValueError(f"{where}: parameters were stepped unequally ({sorted(steps)})")
    config = ck._json(groups, where, "optimizer/param_groups")[0] if groups else None
    return Saved(weights, slots, steps.pop() if steps else None, config, "torch")


def _torch_index(key: Any, what: str) -> int:
    """A parameter index: an int, or its decimal string (a state_dict after JSON or YAML)."""
    if (isinstance(key, str) and key.strip().isdecimal()) or (
        isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_))
    ):
        return int(key)
    raise ValueError(f"state_from_torch: {what} must be a parameter index (an int), got {key!r}")


def _torch_value(group: Mapping, key: str) -> Any:
    """A group's hyperparameter (torch's default if absent), comparable: NaN equals NaN."""
    value = group.get(key, _TORCH_DEFAULTS[key])
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        return "nan" if math.isnan(number := float(value)) else number
    except (TypeError, ValueError, RuntimeError):
        return repr(value)


def state_from_torch(state_dict: Mapping[str, Any], params: Any) -> RMSpropState:
    """The state of a ``torch.optim.RMSprop.state_dict()``, for :func:`jrmsprop.compat.torch`.

    Args:
      state_dict: the optimizer's ``state_dict()`` (tensors or NumPy arrays; parameter indices
        ints or their decimal strings). Its param groups must agree on ``lr``, ``alpha``,
        ``eps``, ``weight_decay``, ``momentum``, ``centered`` and ``maximize``; at momentum 0 a
        ``momentum_buffer`` is ignored, as torch ignores it. NaN and inf load as saved.
      params: the parameters, their leaves in the torch optimizer's parameter order.

    Returns:
      The state, with ``init``'s structure and dtypes; parameters torch never stepped get fresh
      (zero) slots.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jrmsprop import compat
      >>> sd = {"state": {0: {"step": np.float32(3), "square_avg": np.ones(2, np.float32)}},
      ...       "param_groups": [{"params": [0], "momentum": 0, "centered": False}]}
      >>> compat.state_from_torch(sd, [jnp.zeros(2)]).count
      Array(3, dtype=int32)
    """
    fn, sd = "state_from_torch", "`state_dict"
    if not isinstance(state_dict, Mapping):
        got = type(state_dict).__name__
        raise TypeError(f"{fn}: {sd}` must be a torch state_dict() (a mapping), got {got}")
    if not {"state", "param_groups"} <= set(state_dict):
        got = sorted(map(str, state_dict))
        raise ValueError(f"{fn}: {sd}` must have 'state' and 'param_groups', got {got}")
    groups, raw = state_dict["param_groups"], state_dict["state"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{fn}: {sd}['state']` must be a mapping, got {type(raw).__name__}")
    if not isinstance(groups, Sequence) or not all(
        isinstance(g, Mapping) and "params" in g for g in groups
    ):
        raise ValueError(f"{fn}: {sd}['param_groups']` must be a list of dicts with 'params' lists")
    hyper = [{k: _torch_value(g, k) for k in _TORCH_DEFAULTS} for g in groups]
    if differ := [k for k in _TORCH_DEFAULTS if len({h[k] for h in hyper}) > 1]:
        shown = "; ".join(
            f"group {i} has " + json.dumps({k: h[k] for k in differ})
            for i, h in enumerate(hyper)
            if i == 0 or any(h[k] != hyper[0][k] for k in differ)
        )
        why = "a missing key is torch's default; split the state_dict into one per group"
        raise ValueError(
            f"{fn}: the param groups of {sd}['param_groups']` differ in {differ} ({shown}; {why})"
        )
    first = groups[0] if groups else {}
    m, c, at = first.get("momentum", 0), first.get("centered", False), f"{sd}['param_groups'][0]"
    if isinstance(m, (bool, np.bool_)) or not (
        isinstance(m, numbers.Real) and not m < 0 and m < math.inf
    ):
        raise ValueError(f"{fn}: {at}['momentum']` must be a non-negative number, got {m!r}")
    if not isinstance(c, (bool, np.bool_)):
        raise ValueError(f"{fn}: {at}['centered']` must be True or False, got {c!r}")
    order: list[int] = []
    for k, g in enumerate(groups):
        at = f"{sd}['param_groups'][{k}]['params']`"
        if isinstance(g["params"], (str, bytes)) or not isinstance(g["params"], Sequence):
            raise ValueError(f"{fn}: {at} must be a list of parameter indices")
        order += [_torch_index(i, f"{at} entry") for i in g["params"]]
    if twice := sorted({i for i in order if order.count(i) > 1}):
        raise ValueError(f"{fn}: parameter indices {twice} appear more than once in the groups")
    per_param: dict[int, Any] = {}  # index: (the key as written, the entry)
    for key, entry in raw.items():
        if (i := _torch_index(key, f"{sd}['state']` key {key!r}:")) in per_param:
            raise ValueError(f"{fn}: {sd}['state']` has two entries for parameter {i}")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{fn}: {sd}['state'][{key!r}]` must be a mapping")
        per_param[i] = key, entry
    if unmatched := sorted(set(per_param) - set(order)):
        why = f"which no param group lists (they list {order}); their state would be lost"
        raise ValueError(f"{fn}: {sd}['state']` has entries for parameters {unmatched}, {why}")
    if len(order) != len(leaves := jax.tree.leaves(params)):
        why = f"{len(order)} parameters, `params` has {len(leaves)}"
        raise ValueError(f"{fn}: the state_dict has {why}")
    present, ((counter,), names) = (True, m != 0, bool(c)), ck._SLOTS["torch"]
    needed = [counter, *(s for s, on in zip(names, present, strict=True) if on)]
    for key, entry in per_param.values():
        if missing := [k for k in needed if k not in entry]:
            raise ValueError(f"{fn}: {sd}['state'][{key!r}]` lacks {missing} (needs {needed})")
    what = f"{fn}: {sd}['state'][{{!r}}]['{counter}']`"
    steps = {int(ck._count(e[counter], what.format(k))) for k, e in per_param.values()}
    if len(steps) > 1:
        raise ValueError(f"{fn}: parameters were stepped unequally ({sorted(steps)})")

    def entry(i: int, p: Any, name: str) -> tuple[Any, str]:
        if i not in per_param:
            return np.zeros(np.shape(p), np.float32), f"zeros (parameter {i} never stepped)"
        return per_param[i][1][name], f"{sd}['state'][{per_param[i][0]!r}][{name!r}]`"

    slots = [
        [entry(i, p, s) for i, p in zip(order, leaves, strict=True)] if on else None
        for s, on in zip(names, present, strict=True)
    ]
    count = jnp.asarray(steps.pop() if steps else 0, jnp.int32)
    return ck._state(count, params, "torch", fn, slots)


def _key(name: str) -> str:
    """``conv/kernel:0``, ``conv.weight`` and nnx's ``conv.kernel`` all become ``conv/kernel``."""
    parts = name.split(":")[0].replace(".", "/").split("/")
    return "/".join(parts[:-1] + ["kernel" if parts[-1] == "weight" else parts[-1]])


def _convert(a: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A kernel from layout ``src`` to ``dst``: (out, in) <-> (in, out), OIHW <-> HWIO."""
    if src == dst or a.ndim < 2:
        return a
    n = a.ndim
    order = [*range(2, n), 1, 0] if src == "torch" else [n - 1, n - 2, *range(n - 2)]
    return np.ascontiguousarray(np.transpose(a, order))


def _match(arrays: Mapping, target: Any, layout: Any, names: Any, src: Any, fn: str) -> tuple:
    """``(params, {leaf path: saved name}, convert)``: the target's parameters, matched by name."""
    nnx = "flax.nnx" in sys.modules and isinstance(target, sys.modules["flax.nnx"].Module)
    eqx = "equinox" in sys.modules and isinstance(target, sys.modules["equinox"].Module)
    if nnx:
        from flax import nnx as flax_nnx

        params = flax_nnx.state(target, flax_nnx.Param)
    else:  # an equinox model's or a dict's float arrays; the rest None, as eqx.filter does
        is_param = lambda x: hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)  # noqa: E731
        params = jax.tree.map(lambda x: x if is_param(x) else None, target)
    dst = layout or ("keras" if nnx else "torch" if eqx else None) or src or "keras"
    src = src or dst
    if not {src, dst} <= set(_OTHER):
        raise ValueError(f"{fn}: layout must be one of {(*_OTHER,)}, got {dst!r} (saved: {src!r})")
    names = dict(names or {})
    by_key = {_key(names.get(n, n)): n for n in arrays if names.get(n, n) is not None}
    found, missing = {}, []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        name = "/".join(map(str, keys[:-1] if nnx else keys))  # nnx: no .value
        if _key(name) in by_key:
            found[path] = by_key[_key(name)]
        else:
            missing.append(name)
    unused = sorted(set(by_key.values()) - set(found.values()))
    if missing or unused:
        raise ValueError(
            f"{fn}: the target's {missing} have no saved array and the saved {unused} match no "
            f"target parameter (names compared as {sorted(by_key)}, with torch's 'weight' as "
            "'kernel'); pass names={saved name: target name}, or {saved name: None} to skip one"
        )

    def convert(leaf: Any, a: np.ndarray, what: str, dtype: bool = True) -> np.ndarray:
        b, want = _convert(a, src, dst), tuple(np.shape(leaf))
        if b.shape != want and a.ndim == 1 and a.size == np.prod(want):
            b = a.reshape(want)  # equinox's conv bias, (out, 1, 1)
        if b.shape != want:
            alt = _convert(a, src, _OTHER[src]) if b is a else a
            hint = "transposed" if alt is not a else "as saved, not transposed"
            hint = f": it matches {hint}: pass layout={_OTHER[dst]!r}" if alt.shape == want else ""
            raise ValueError(f"{fn}: {what} has shape {a.shape}, the target's {want}{hint}")
        if dtype and b.dtype != (dt := jnp.result_type(leaf)):
            raise ValueError(f"{fn}: {what} has dtype {b.dtype}, the target's is {dt}")
        return b

    return params, found, convert, nnx


def place(
    source: Saved | Mapping[str, Any],
    target: Any,
    *,
    layout: str | None = None,
    names: Mapping[str, str | None] | None = None,
    source_layout: str | None = None,
) -> Any:
    """``target`` with each parameter replaced by the saved array of the same name.

    Names compare with ``/`` and ``.`` alike, ``:0`` dropped and torch's ``weight`` read as
    ``kernel`` (``conv/kernel:0``, ``conv.weight`` and nnx's ``conv.kernel`` are one name). Every
    float parameter must be matched and every saved array used; dtypes must be equal.

    Args:
      source: a :func:`read_keras` / :func:`read_torch` result, or arrays by name (gradients).
      target: a flax ``nnx.Module`` (updated in place), an equinox ``Module`` or a dict of arrays.
      layout: the target's kernel layout, ``"keras"`` ((in, out), HWIO: flax's) or ``"torch"``
        ((out, in), OIHW: equinox's), transposed between; default: nnx ``"keras"``, equinox
        ``"torch"``, a dict the source's.
      names: ``{saved name: target name}`` renames, ``{saved name: None}`` leaves one out.
      source_layout: the layout of a plain mapping ``source`` (default: the target's).

    Returns:
      The model (nnx: the same object) or tree with the saved arrays in place.
    """
    arrays = source.weights if isinstance(source, Saved) else source
    src = source.layout if isinstance(source, Saved) else source_layout
    params, found, convert, nnx = _match(arrays, target, layout, names, src, "place")

    def put(path: Any, leaf: Any) -> Any:
        if path not in found:
            return leaf
        return jnp.asarray(convert(leaf, np.asarray(arrays[found[path]]), repr(found[path])))

    if not nnx:
        return jax.tree_util.tree_map_with_path(put, target)
    from flax import nnx as flax_nnx

    flax_nnx.update(target, jax.tree_util.tree_map_with_path(put, params))
    return target


def place_state(
    source: Saved,
    target: Any,
    *,
    optimizer: Any = None,
    layout: str | None = None,
    names: Mapping[str, str | None] | None = None,
) -> RMSpropState:
    """The :class:`~jrmsprop.RMSpropState` of the saved optimizer for ``target``'s parameters.

    The saved slots go where :func:`place` puts their weights (same names, same layout
    conversion). With ``optimizer``, a flax ``nnx.Optimizer`` over ``target``'s ``nnx.Param``,
    the state (and step) is also written into it. Continue with the matching preset:
    :func:`jrmsprop.rmsprop` (tf_keras), :func:`~jrmsprop.compat.keras3`,
    :func:`~jrmsprop.compat.torch`.
    """
    fn = "place_state"
    if not isinstance(source, Saved) or source.step is None:
        raise ValueError(f"{fn}: `source` holds no optimizer state (read_keras / read_torch)")
    params, found, convert, _ = _match(source.weights, target, layout, names, source.layout, fn)
    blocks = []
    for slot in ck._SLOTS[source.framework][1]:
        if not any(slot in s for s in source.slots.values()):
            blocks.append(None)
            continue
        block = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            name, what = found[path], f"slot {slot!r} of {found[path]!r}"
            if slot in source.slots.get(name, {}):
                block.append((convert(leaf, source.slots[name][slot], what, dtype=False), what))
            elif source.framework == "torch" and name not in source.slots:  # never stepped
                block.append((np.zeros(np.shape(leaf), np.float32), what))
            else:
                raise ValueError(f"{fn}: the saved optimizer state has no {what}")
        blocks.append(block)
    count = ck._count(source.step, f"{fn}: the step count")
    state = ck._state(count, params, source.framework, fn, blocks)
    if optimizer is not None:
        from flax import nnx

        is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
        old, new = (jax.tree.leaves(t, is_leaf=is_var) for t in (optimizer.opt_state, state))
        if len(old) != len(new):
            raise ValueError(f"{fn}: `optimizer` is not an nnx.Optimizer with a jrmsprop preset")
        pairs = [*zip(old, new, strict=True), (optimizer.step, count.astype(optimizer.step.dtype))]
        for var, value in pairs:  # flax >= 0.11: set_value; before: the .value setter
            value = value.get_value() if is_var(value) else value
            var.set_value(value) if hasattr(var, "set_value") else setattr(var, "value", value)
    return state
