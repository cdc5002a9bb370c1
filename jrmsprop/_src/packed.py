"""Packed slot storage: one flat buffer per slot and dtype instead of one per parameter.

:func:`packed` wraps an elementwise transformation (:func:`jrmsprop.rmsprop` or a
:mod:`jrmsprop.compat` preset). Its state keeps each slot (``rms``, ``momentum``, ``mg``) as one
flat vector per parameter dtype; the gradients (and the parameters, when given) are
concatenated into the same layout on the way in and the updates are cut back into the user's
tree on the way out. The optimizer's own arithmetic then costs O(number of dtypes) elementwise
operations instead of O(number of leaves), which is what dominates -- in compile time and in
per-step dispatch -- a model with thousands of small parameters.

The arithmetic is elementwise, so the packed updates are bit for bit those of the unpacked
transformation. :func:`unpack_state` and :func:`pack_state` convert between the packed state and
the ordinary per-leaf :class:`jrmsprop.RMSpropState` (for ``get_weights``-style lists, the
:mod:`jrmsprop.compat` loaders and checkpoints in the per-leaf layout).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrmsprop._src import sparse
from jrmsprop._src.transform import RMSpropState
from jrmsprop._src.validation import abbreviated, tree_description


class PackedLayout:
    """Where each parameter lives in the packed buffers (static: part of the state's treedef).

    Hashable and compared by value, so that equal layouts (e.g. after pickling) share one
    compiled step.

    Attributes:
      treedef: the tree structure of the parameters.
      groups: the packed buffers' keys: the parameters' dtype names, sorted.
      sizes: the number of elements in each group's buffer.
      leaves: per parameter leaf (in ``treedef`` order): ``(group index, offset, shape)``.
    """

    __slots__ = ("treedef", "groups", "sizes", "leaves", "_hash")

    def __init__(
        self,
        treedef: Any,
        groups: tuple[str, ...],
        sizes: tuple[int, ...],
        leaves: tuple[tuple[int, int, tuple[int, ...]], ...],
    ):
        self.treedef = treedef
        self.groups = groups
        self.sizes = sizes
        self.leaves = leaves
        self._hash = hash((treedef, groups, sizes, leaves))

    @classmethod
    def of(cls, params: Any, what: str = "params", who: str = "packed") -> PackedLayout:
        """The layout of ``params`` (arrays, Python numbers or ``jax.ShapeDtypeStruct`` leaves)."""
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(
            params, is_leaf=lambda x: isinstance(x, sparse.IndexedSlices)
        )
        dtypes, shapes = [], []
        for path, leaf in paths_and_leaves:
            if isinstance(leaf, sparse.IndexedSlices):
                raise TypeError(f"{who}: `{what}` at {_path_str(path)} is an IndexedSlices")
            if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
                try:
                    leaf = jnp.asarray(leaf)
                except TypeError as e:  # a string, an object: JAX's message names neither
                    raise TypeError(
                        f"{who}: `{what}` at {_path_str(path)} is {type(leaf).__name__} "
                        f"{abbreviated(repr(leaf), 60)}; it must be an array"
                    ) from e
            dtype = jnp.dtype(leaf.dtype)
            if not jnp.issubdtype(dtype, jnp.inexact):
                raise TypeError(
                    f"{who}: `{what}` at {_path_str(path)} has dtype {dtype.name}; RMSprop needs "
                    "floating-point (or complex) parameters"
                )
            dtypes.append(dtype.name)
            shapes.append(tuple(int(d) for d in leaf.shape))
        groups = tuple(sorted(set(dtypes)))
        sizes = [0] * len(groups)
        leaves = []
        for name, shape in zip(dtypes, shapes, strict=True):
            g = groups.index(name)
            leaves.append((g, sizes[g], shape))
            sizes[g] += int(np.prod(shape, dtype=np.int64))
        return cls(treedef, groups, tuple(sizes), tuple(leaves))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, PackedLayout) or self._hash != other._hash:
            return False
        return (self.treedef, self.groups, self.sizes, self.leaves) == (
            other.treedef,
            other.groups,
            other.sizes,
            other.leaves,
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.treedef, self.groups, self.sizes, self.leaves)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __repr__(self) -> str:
        # Shown by JAX when two trees' layouts differ ("Mismatch custom node data: A != B"):
        # the leaves themselves when they are few, and always a digest of the whole layout, so
        # that different layouts never print alike.
        groups = ", ".join(f"{n}[{s}]" for n, s in zip(self.groups, self.sizes, strict=True))
        leaves = ""
        if len(self.leaves) <= _REPR_LEAVES:
            try:
                paths = self.paths()
            except Exception:  # pragma: no cover - a custom node that cannot be rebuilt
                paths = [f"leaf {i}" for i in range(len(self.leaves))]
            leaves = ": " + ", ".join(
                f"{path} {_leaf_str(shape, dtype)}"
                for path, (shape, dtype) in zip(paths, self.shapes_dtypes(), strict=True)
            )
        return (
            f"PackedLayout({len(self.leaves)} leaves -> {groups or 'nothing'}{leaves}; "
            f"#{self.digest()})"
        )

    def digest(self) -> str:
        """A short digest of the layout (tree structure, dtypes and shapes) for messages."""
        text = repr((str(self.treedef), self.groups, self.sizes, self.leaves))
        return hashlib.blake2b(text.encode("utf8"), digest_size=4).hexdigest()

    def paths(self) -> list[str]:
        """The leaves' paths as strings (for error messages)."""
        tree = self.treedef.unflatten(range(len(self.leaves)))
        return [_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]

    def shapes_dtypes(self) -> list[tuple[tuple[int, ...], str]]:
        return [(shape, self.groups[g]) for g, _, shape in self.leaves]


# PackedLayout's repr lists the leaves of layouts with at most this many.
_REPR_LEAVES = 4


def _path_str(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _leaf_str(shape: tuple[int, ...], dtype: str) -> str:
    return f"{dtype}{list(shape)}"


def _layout_difference(got: PackedLayout, want: PackedLayout, got_name: str, want_name: str) -> str:
    """Where two layouts first differ, for an error message: a leaf (by path) that only one has,
    the tree structure, or the first leaf whose shape or dtype differs, with both values."""
    if not (got.treedef == want.treedef or _same_modulo_wrappers(got.treedef, want.treedef)):
        got_paths, want_paths = got.paths(), set(want.paths())
        only_got = [p for p in got_paths if p not in want_paths]
        only_want = [p for p in want.paths() if p not in set(got_paths)]
        if only_got or only_want:
            parts = []
            for only, inside, outside in (
                (only_got, got_name, want_name),
                (only_want, want_name, got_name),
            ):
                if only:
                    more = f" (and {len(only) - 1} more)" if len(only) > 1 else ""
                    parts.append(f"the leaf at {only[0]}{more} is in {inside} but not in {outside}")
            return "; ".join(parts)
        return (
            f"the tree structures differ: {tree_description(got.treedef)} in {got_name}, "
            f"{tree_description(want.treedef)} in {want_name}"
        )
    if len(got.leaves) == len(want.leaves):
        paths = got.paths()
        pairs = zip(paths, got.shapes_dtypes(), want.shapes_dtypes(), strict=True)
        for path, (got_shape, got_dtype), (want_shape, want_dtype) in pairs:
            if (got_shape, got_dtype) != (want_shape, want_dtype):
                return (
                    f"the leaf at {path} is {_leaf_str(got_shape, got_dtype)} in {got_name} but "
                    f"{_leaf_str(want_shape, want_dtype)} in {want_name}"
                )
    return f"{got!r} in {got_name}, {want!r} in {want_name}"  # pragma: no cover


# flax.serialization (to_state_dict, to_bytes, ...) handles NamedTuples such as RMSpropState
# but needs a registration for other node types. jrmsprop does not depend on flax: the types
# below are registered when flax is already imported (at import of jrmsprop, else when the
# first PackedState / PackedTree is built after flax's import).
_FLAX_PENDING: dict[type, tuple[Callable[..., Any], Callable[..., Any]]] = {}


def _register_with_flax(
    cls: type | None = None,
    to_state_dict: Callable[..., Any] | None = None,
    from_state_dict: Callable[..., Any] | None = None,
) -> None:
    if cls is not None:
        _FLAX_PENDING[cls] = (to_state_dict, from_state_dict)  # type: ignore[assignment]
    serialization = sys.modules.get("flax.serialization")
    if serialization is None or not hasattr(serialization, "register_serialization_state"):
        return
    for ty, (to_fn, from_fn) in list(_FLAX_PENDING.items()):
        if not serialization.is_serializable(ty):
            serialization.register_serialization_state(ty, to_fn, from_fn)
        del _FLAX_PENDING[ty]


def _flax() -> Any:
    return sys.modules["flax.serialization"]


class PackedState:
    """State of :func:`packed`: the wrapped transformation's state over packed buffers.

    A pytree with the children ``inner`` and ``offsets``; the :class:`PackedLayout` is static
    (treedef auxiliary data), so it never becomes a traced value.

    Attributes:
      inner: the wrapped transformation's state (for ``jrmsprop.rmsprop``: an
        :class:`jrmsprop.RMSpropState` whose ``rms``, ``momentum`` and ``mg`` are dicts
        ``{dtype name: flat vector}``).
      offsets: one int32 scalar per parameter leaf: where the leaf starts in its dtype's buffer.
        They are runtime values on purpose: a constant offset would make XLA compile one kernel
        per leaf for cutting the updates apart (seconds per hundred leaves); with runtime
        offsets all leaves of one shape share one kernel. Never change them.
      layout: the :class:`PackedLayout` of the parameters.
    """

    __slots__ = ("inner", "offsets", "layout")

    def __init__(self, inner: Any, offsets: tuple[Any, ...], layout: PackedLayout):
        self.inner = inner
        self.offsets = tuple(offsets)
        self.layout = layout
        if _FLAX_PENDING:
            _register_with_flax()

    def __repr__(self) -> str:
        return f"PackedState(inner={self.inner!r}, layout={self.layout!r})"

    def __getstate__(self) -> tuple[Any, tuple[Any, ...], PackedLayout]:
        return (self.inner, self.offsets, self.layout)

    def __setstate__(self, state: tuple[Any, tuple[Any, ...], PackedLayout]) -> None:
        self.inner, self.offsets, self.layout = state


jax.tree_util.register_pytree_with_keys(
    PackedState,
    lambda s: (
        (
            (jax.tree_util.GetAttrKey("inner"), s.inner),
            (jax.tree_util.GetAttrKey("offsets"), s.offsets),
        ),
        s.layout,
    ),
    lambda layout, children: PackedState(children[0], children[1], layout),
    flatten_func=lambda s: ((s.inner, s.offsets), s.layout),
)


# The state dict holds the wrapped state only: the offsets and the layout are the target's
# (``from_state_dict(tx.init(params), ...)``), as they follow from the parameters alone.
_register_with_flax(
    PackedState,
    lambda s: {"inner": _flax().to_state_dict(s.inner)},
    lambda target, state: PackedState(
        _flax().from_state_dict(target.inner, state["inner"], name="inner"),
        target.offsets,
        target.layout,
    ),
)


def _offsets(layout: PackedLayout) -> tuple[jax.Array, ...]:
    """The leaves' offsets as int32 device scalars (one transfer for all of them)."""
    return tuple(jax.device_put([np.int32(offset) for _, offset, _ in layout.leaves]))


def _is_wrapper(node_type: type) -> bool:
    """A custom pytree node that only wraps one value (e.g. flax ``nnx.Param``)."""
    return not issubclass(node_type, (list, tuple, dict)) and node_type is not type(None)


@functools.lru_cache(maxsize=256)
def _same_modulo_wrappers(a: Any, b: Any) -> bool:
    """Whether two treedefs are equal once single-child wrapper nodes are skipped.

    flax's ``nnx.Optimizer`` calls ``init`` on parameters whose leaves are wrapped in
    ``nnx.Param`` nodes (one child each) and ``update`` on the bare arrays: the two trees have the
    same containers, keys and leaves, and differ only by those wrappers. Lists, tuples
    (namedtuples), dicts and None are containers, never wrappers: ``[x]`` does not match ``x``.
    """
    if a == b:
        return True
    a_leaf = a.num_nodes == 1 and a.num_leaves == 1
    b_leaf = b.num_nodes == 1 and b.num_leaves == 1
    if a_leaf and b_leaf:
        return True
    a_data = None if a_leaf else a.node_data()
    b_data = None if b_leaf else b.node_data()
    if a_data is not None and b_data is not None and a_data == b_data:
        a_children, b_children = a.children(), b.children()
        if len(a_children) == len(b_children):
            return all(
                _same_modulo_wrappers(x, y) for x, y in zip(a_children, b_children, strict=True)
            )
    if a_data is not None and _is_wrapper(a_data[0]) and len(a.children()) == 1:
        if _same_modulo_wrappers(a.children()[0], b):
            return True
    if b_data is not None and _is_wrapper(b_data[0]) and len(b.children()) == 1:
        return _same_modulo_wrappers(a, b.children()[0])
    return False


def _compatible(a: PackedLayout, b: PackedLayout) -> bool:
    """The same layout, up to wrapper nodes in the tree structure (see above)."""
    return a == b or (
        (a.groups, a.sizes, a.leaves) == (b.groups, b.sizes, b.leaves)
        and _same_modulo_wrappers(a.treedef, b.treedef)
    )


def _flatten(
    layout: PackedLayout, tree: Any, what: str, who: str = "packed"
) -> tuple[list[Any], Any]:
    """``tree``'s leaves in the layout's order, and the treedef to rebuild ``tree`` with.

    ``tree`` may differ from the layout's structure by wrapper nodes only (flax ``nnx.Param``
    around the leaves on one side, as ``nnx.Optimizer`` does); anything else is refused.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if treedef == layout.treedef or (
        len(leaves) == len(layout.leaves) and _same_modulo_wrappers(layout.treedef, treedef)
    ):
        return leaves, treedef
    try:  # e.g. a None or IndexedSlices where a leaf is: refused, by leaf, in _check_leaves
        leaves = layout.treedef.flatten_up_to(tree)
        for leaf in leaves:
            if not (leaf is None or isinstance(leaf, sparse.IndexedSlices)):
                sub = jax.tree.structure(leaf)
                if not (sub.num_nodes == 1 and sub.num_leaves == 1):
                    raise ValueError(f"a subtree {sub} where a leaf is")
        return leaves, layout.treedef
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{who}: `{what}` do not have the tree structure of the packed state "
            f"(expected {tree_description(layout.treedef)}; wrapper nodes such as flax "
            f"nnx.Param around the leaves aside): {abbreviated(e)}"
        ) from e


def _check_leaves(
    layout: PackedLayout, leaves: list[Any], what: str, same_dtype: bool, who: str = "packed"
) -> None:
    """Shapes (and, for ``params``, dtypes) against the layout; one dtype per group."""
    paths = None
    seen: dict[int, tuple[str, str]] = {}  # group -> (dtype, first path)
    for i, (leaf, (g, _, shape)) in enumerate(zip(leaves, layout.leaves, strict=True)):
        if leaf is None or isinstance(leaf, sparse.IndexedSlices):
            paths = paths or layout.paths()
            kind = "None" if leaf is None else "an IndexedSlices (sparse) gradient"
            raise TypeError(
                f"{who}: `{what}` at {paths[i]} is {kind}; packed slots need a dense array for "
                "every leaf (use the unpacked transformation for sparse or missing gradients)"
            )
        dtype = jnp.dtype(leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype)
        leaf_shape = tuple(jnp.shape(leaf))
        if leaf_shape != shape or (same_dtype and dtype.name != layout.groups[g]):
            paths = paths or layout.paths()
            raise ValueError(
                f"{who}: `{what}` at {paths[i]} has shape {leaf_shape} and dtype {dtype.name}; "
                f"the packed state expects shape {shape}"
                + (f" and dtype {layout.groups[g]}" if same_dtype else "")
            )
        first = seen.setdefault(g, (dtype.name, str(i)))
        if first[0] != dtype.name:
            paths = paths or layout.paths()
            raise TypeError(
                f"{who}: `{what}` at {paths[i]} has dtype {dtype.name} but `{what}` at "
                f"{paths[int(first[1])]} has {first[0]}; both parameters are "
                f"{layout.groups[g]} and share one packed buffer, so `{what}` must have one "
                "dtype there"
            )


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _pack_leaves(
    leaves: list[Any], layout: PackedLayout, what: str, same_dtype: bool, who: str = "packed"
) -> dict[str, jax.Array]:
    """Checks (while tracing only: a cached call pays for none), then a concatenation per dtype."""
    _check_leaves(layout, leaves, what, same_dtype, who)
    parts: list[list[jax.Array]] = [[] for _ in layout.groups]
    for leaf, (g, _, _) in zip(leaves, layout.leaves, strict=True):
        parts[g].append(jnp.reshape(jnp.asarray(leaf), (-1,)))
    return {
        name: part[0] if len(part) == 1 else jnp.concatenate(part)
        for name, part in zip(layout.groups, parts, strict=True)
    }


@functools.partial(jax.jit, static_argnums=(2,))
def _unpack_leaves(
    flat: dict[str, jax.Array], offsets: tuple[jax.Array, ...], layout: PackedLayout
) -> list[jax.Array]:
    """Each leaf cut out of its buffer at its (runtime) offset."""
    if len(offsets) != len(layout.leaves) or any(
        jnp.shape(o) != () or not jnp.issubdtype(jnp.result_type(o), jnp.integer) for o in offsets
    ):
        raise ValueError(
            f"packed: `state.offsets` must hold {len(layout.leaves)} integer scalars (one per "
            f"parameter leaf), got {len(offsets)} of shapes {[jnp.shape(o) for o in offsets][:4]}"
        )
    out = []
    for (g, _, shape), offset in zip(layout.leaves, offsets, strict=True):
        buffer = flat[layout.groups[g]]
        size = int(np.prod(shape, dtype=np.int64))
        if size == buffer.shape[0]:
            out.append(jnp.reshape(buffer, shape))
        else:
            out.append(jnp.reshape(jax.lax.dynamic_slice_in_dim(buffer, offset, size), shape))
    return out


def _pack(
    layout: PackedLayout, tree: Any, what: str, same_dtype: bool, who: str = "packed"
) -> dict[str, jax.Array]:
    return _pack_with_treedef(layout, tree, what, same_dtype, who)[0]


def _pack_with_treedef(
    layout: PackedLayout, tree: Any, what: str, same_dtype: bool, who: str = "packed"
) -> tuple[dict[str, jax.Array], Any]:
    leaves, treedef = _flatten(layout, tree, what, who)
    return _pack_leaves(leaves, layout, what, same_dtype, who), treedef


def _unpack(
    layout: PackedLayout,
    flat: Any,
    offsets: tuple[Any, ...],
    what: str,
    who: str = "packed",
    treedef: Any = None,
) -> Any:
    if not isinstance(flat, dict) or set(flat) != set(layout.groups):
        raise ValueError(
            f"{who}: `{what}` must be a dict with the keys {list(layout.groups)} (one flat "
            f"buffer per parameter dtype), got {jax.tree.structure(flat)}"
        )
    for name, size in zip(layout.groups, layout.sizes, strict=True):
        if tuple(jnp.shape(flat[name])) != (size,):
            raise ValueError(
                f"{who}: `{what}[{name!r}]` has shape {tuple(jnp.shape(flat[name]))}; the "
                f"layout expects ({size},)"
            )
    treedef = layout.treedef if treedef is None else treedef
    return treedef.unflatten(_unpack_leaves(flat, tuple(offsets), layout))


def packed(
    tx: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    r"""Packed slot storage: ``tx`` over one flat buffer per parameter dtype.

    The state holds each slot as one flat vector per dtype; gradients (and parameters, when
    passed) are concatenated into that layout, ``tx`` runs once per dtype, and the updates are
    cut back into the gradients' tree. For an elementwise ``tx`` (:func:`jrmsprop.rmsprop`, every
    :mod:`jrmsprop.compat` preset, with or without momentum, centering or weight decay) the
    updates are bit for bit those of ``tx`` itself:

    .. math::

      \mathrm{packed}(tx)(g, s, p) = \mathrm{split}\big(tx(\mathrm{concat}(g),
        \mathrm{concat}(s), \mathrm{concat}(p))\big)

    The optimizer arithmetic compiles to O(number of dtypes) operations instead of
    O(number of leaves); the concatenation and the split remain O(leaves) (cheap copies that
    XLA fuses with their producers and consumers). For the fastest step keep the parameters
    flat yourself (``jax.flatten_util.ravel_pytree``) and use ``tx`` directly: then nothing is
    copied at all.

    Not supported: ``IndexedSlices`` (sparse) and ``None`` gradient leaves, and gradients of two
    dtypes for parameters of one dtype (each raises, naming the leaf). Leaves of one dtype are
    concatenated, so sharded parameters are gathered: use the per-leaf layout for those.

    Args:
      tx: an elementwise gradient transformation (e.g. ``jrmsprop.rmsprop(...)``, a
        ``jrmsprop.compat`` preset, or ``optax.inject_hyperparams(jrmsprop.rmsprop)(...)``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`PackedState`
      (convert with :func:`unpack_state` / :func:`pack_state`). ``update(updates, state,
      params=None)`` returns updates in the tree of ``updates``.

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.packed(jrmsprop.rmsprop(learning_rate=0.1))
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.array(10.0)}
      >>> state = tx.init(params)
      >>> state.inner.rms["float32"].shape  # one buffer for all five elements
      (5,)
      >>> updates, state = tx.update(params, state, params)
      >>> updates["b"]
      Array(-0.31622773, dtype=float32)
    """
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(
            f"packed: `tx` must be an optax GradientTransformation, got {type(tx).__name__}"
        )
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        inner_update = tx.update
    else:
        inner_update = lambda u, s, p=None, **_: tx.update(u, s, p)  # noqa: E731

    def init_fn(params: optax.Params) -> PackedState:
        layout = PackedLayout.of(params)
        leaves = layout.treedef.flatten_up_to(params)
        if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
            flat: Any = {
                n: jax.ShapeDtypeStruct((s,), jnp.dtype(n))
                for n, s in zip(layout.groups, layout.sizes, strict=True)
            }
        else:
            flat = _pack_leaves(leaves, layout, "params", True, "packed")
        return PackedState(tx.init(flat), _offsets(layout), layout)

    def update_fn(
        updates: optax.Updates,
        state: PackedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, PackedState]:
        if not isinstance(state, PackedState):
            raise TypeError(
                "packed: `state` must be the PackedState of this transformation's init, got "
                f"{type(state).__name__} (convert a per-leaf state with jrmsprop.pack_state)"
            )
        layout = state.layout
        grads, treedef = _pack_with_treedef(layout, updates, "updates", same_dtype=False)
        flat_params = None if params is None else _pack(layout, params, "params", True)
        flat_updates, inner = inner_update(grads, state.inner, flat_params, **extra_args)
        out = _unpack(
            layout,
            flat_updates,
            state.offsets,
            "updates returned by the wrapped transformation",
            treedef=treedef,
        )
        return out, PackedState(inner, state.offsets, layout)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_SLOTS = ("rms", "momentum", "mg")


def _is_rmsprop_state(x: Any) -> bool:
    return isinstance(x, RMSpropState)


def unpack_state(state: PackedState, params: Any) -> Any:
    """The per-leaf state of a :func:`packed` state: ``rms``, ``momentum``, ``mg`` as trees.

    Every :class:`jrmsprop.RMSpropState` inside ``state.inner`` (itself, or inside e.g. an
    ``optax.inject_hyperparams`` state) gets its slots cut back into the tree of ``params``;
    the rest of the state is returned as it is.

    Args:
      state: a :class:`PackedState`.
      params: the parameters (or anything with their tree, shapes and dtypes, such as
        ``jax.ShapeDtypeStruct`` leaves).

    Returns:
      The wrapped transformation's state in the ordinary per-leaf layout (for a packed
      ``jrmsprop.rmsprop``: an :class:`jrmsprop.RMSpropState` like ``rmsprop(...).init(params)``
      gives).

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> params = [jnp.zeros(2), jnp.zeros(3)]
      >>> state = jrmsprop.packed(jrmsprop.rmsprop()).init(params)
      >>> [x.shape for x in jrmsprop.unpack_state(state, params).rms]
      [(2,), (3,)]
    """
    if not isinstance(state, PackedState):
        raise TypeError(f"unpack_state: `state` must be a PackedState, got {type(state).__name__}")
    layout = PackedLayout.of(params, who="unpack_state")
    if not _compatible(layout, state.layout):
        difference = _layout_difference(layout, state.layout, "`params`", "the packed state")
        raise ValueError(
            f"unpack_state: `params` ({layout}) do not match the packed state's layout "
            f"({state.layout}): {difference}"
        )

    offsets = _offsets(layout)
    treedef = layout.treedef  # the tree of `params` (wrapper nodes may differ from the state's)

    def unpack(s: Any) -> Any:
        if not _is_rmsprop_state(s):
            return s
        return s._replace(
            **{
                name: _unpack(
                    state.layout, getattr(s, name), offsets, f"state.{name}", treedef=treedef
                )
                for name in _SLOTS
                if getattr(s, name) is not None
            }
        )

    return jax.tree.map(unpack, state.inner, is_leaf=_is_rmsprop_state)


def pack_state(state: Any, params: Any) -> PackedState:
    """The :func:`packed` state holding a per-leaf state (the inverse of :func:`unpack_state`).

    Every :class:`jrmsprop.RMSpropState` inside ``state`` gets its slots concatenated into one
    flat buffer per parameter dtype; slot dtypes are kept (all slots of one parameter dtype
    must share a dtype).

    Args:
      state: a per-leaf state, e.g. ``jrmsprop.rmsprop(...).init(params)``,
        ``jrmsprop.compat.state_from_keras2(...)``, ``jrmsprop.compat.load_keras2_h5(...)`` or a
        restored checkpoint (also an ``optax.inject_hyperparams`` state around one).
      params: the parameters (their tree, shapes and dtypes decide the layout).

    Returns:
      A :class:`PackedState` for ``jrmsprop.packed(tx)``, where ``tx`` is the transformation
      whose state ``state`` is.

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> params = [jnp.zeros(2), jnp.zeros(3)]
      >>> state = jrmsprop.pack_state(jrmsprop.rmsprop().init(params), params)
      >>> state.inner.rms["float32"].shape
      (5,)
    """
    layout = PackedLayout.of(params, who="pack_state")
    found = []

    def pack(s: Any) -> Any:
        if not _is_rmsprop_state(s):
            return s
        found.append(s)
        slots = {}
        for name in _SLOTS:
            tree = getattr(s, name)
            if tree is None:
                continue
            slots[name] = _pack(layout, tree, f"state.{name}", same_dtype=False)
        return s._replace(**slots)

    if isinstance(state, PackedState):
        raise TypeError("pack_state: `state` is already a PackedState")
    inner = jax.tree.map(pack, state, is_leaf=_is_rmsprop_state)
    if not found:
        raise TypeError(
            f"pack_state: `state` ({type(state).__name__}) holds no jrmsprop RMSpropState to pack"
        )
    return PackedState(inner, _offsets(layout), layout)
