"""Packed parameters: a whole parameter tree as one flat buffer per dtype.

:func:`pack` turns a parameter tree into a :class:`PackedTree`: a pytree node whose only
children are one flat vector per parameter dtype, with the original tree structure, shapes and
offsets kept as static data. Every elementwise transformation (:func:`jrmsprop.rmsprop`, the
:mod:`jrmsprop.compat` presets, most of optax) then sees a handful of flat arrays instead of
thousands of leaves: its state is made of ``PackedTree`` nodes too, its step is the flat step,
and a jitted training step passes one buffer per dtype (not one per leaf) in and out. Inside
the loss, :meth:`PackedTree.unpack` gives the model its ordinary tree; its derivative is one
concatenation per dtype, so ``jax.grad`` with respect to a ``PackedTree`` returns a
``PackedTree`` at no extra cost.

:func:`unpack` replaces every ``PackedTree`` node in any pytree (a state, a tree of updates) by
its ordinary tree, and ``pack(tree, like=packed_params)`` goes the other way for per-leaf states
(``jrmsprop.compat.state_from_*``, per-leaf checkpoints). The arithmetic is elementwise, so a
packed run is bit for bit the per-leaf run.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrmsprop._src import sparse
from jrmsprop._src.packed import (
    _FLAX_PENDING,
    PackedLayout,
    _flax,
    _offsets,
    _pack,
    _pack_leaves,
    _register_with_flax,
    _unpack_leaves,
)
from jrmsprop._src.validation import tree_description


class PackedTree:
    """A pytree stored as one flat buffer per parameter dtype (see :func:`jrmsprop.pack`).

    Its children (what ``jax.tree.map``, optax and ``jax.jit`` see) are the buffers, one per
    dtype group, in the order of ``layout.groups``; the :class:`PackedLayout` (the original
    tree structure, each leaf's shape, group and offset) is static auxiliary data. Mapping a
    function over a ``PackedTree`` therefore gives another ``PackedTree`` of the same layout:
    that is how an optimizer's slots (``rms``, ``momentum``, ``mg``) and its updates come out
    packed too. A buffer's dtype may differ from its group's name (e.g. float32 slots of
    bfloat16 parameters); its shape is always ``(layout.sizes[i],)``.

    Attributes:
      buffers: dict ``{dtype name: flat array}`` of the parameters' dtype groups.
      layout: the :class:`PackedLayout` of the original tree.
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: dict[str, Any], layout: PackedLayout):
        self.buffers = buffers
        self.layout = layout
        if _FLAX_PENDING:
            _register_with_flax()

    def unpack(self) -> Any:
        """The original tree: each leaf cut out of its buffer and reshaped (see :func:`unpack`)."""
        return _unpack_tree(self)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {_describe(self.buffers.get(name))}" for name in self.layout.groups
        )
        return f"PackedTree({len(self.layout.leaves)} leaves; {parts or 'nothing'})"

    def __getstate__(self) -> tuple[dict[str, Any], PackedLayout]:
        return (self.buffers, self.layout)

    def __setstate__(self, state: tuple[dict[str, Any], PackedLayout]) -> None:
        self.buffers, self.layout = state


def _describe(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{jnp.dtype(x.dtype).name}{list(x.shape)}"
    return type(x).__name__


jax.tree_util.register_pytree_with_keys(
    PackedTree,
    lambda t: (
        tuple((jax.tree_util.DictKey(name), t.buffers[name]) for name in t.layout.groups),
        t.layout,
    ),
    lambda layout, children: PackedTree(dict(zip(layout.groups, children, strict=True)), layout),
    flatten_func=lambda t: (tuple(t.buffers[name] for name in t.layout.groups), t.layout),
)


# flax.serialization: the buffers by dtype name; the layout is the target's.
_register_with_flax(
    PackedTree,
    lambda t: {name: _flax().to_state_dict(t.buffers[name]) for name in t.layout.groups},
    lambda target, state: PackedTree(
        {
            name: _flax().from_state_dict(target.buffers[name], state[name], name=name)
            for name in target.layout.groups
        },
        target.layout,
    ),
)


def _is_packed(x: Any) -> bool:
    return isinstance(x, PackedTree)


def _check_buffers(tree: PackedTree, who: str, what: str) -> list[Any]:
    layout = tree.layout
    out = []
    for name, size in zip(layout.groups, layout.sizes, strict=True):
        buffer = tree.buffers.get(name)
        if not (hasattr(buffer, "shape") and hasattr(buffer, "dtype")):
            raise TypeError(
                f"{who}: `{what}` holds {type(buffer).__name__} for its {name} buffer; a "
                "PackedTree to unpack must hold arrays (or jax.ShapeDtypeStruct)"
            )
        if tuple(buffer.shape) != (size,):
            raise ValueError(
                f"{who}: `{what}`'s {name} buffer has shape {tuple(buffer.shape)}; its layout "
                f"({layout}) expects ({size},)"
            )
        out.append(buffer)
    return out


def _cut(buffers: tuple[Any, ...], layout: PackedLayout) -> tuple[Any, ...]:
    """Every leaf cut out of its buffer by ``lax.split`` (static sizes), in the tree's order.

    ``lax.split`` is linear with a concatenation as its transpose, so the gradient with respect
    to the buffers is one concatenation per dtype (not a padded copy per leaf summed up), and
    forward-mode differentiation works too.
    """
    shapes: list[list[tuple[int, ...]]] = [[] for _ in layout.groups]
    for g, _, shape in layout.leaves:
        shapes[g].append(shape)
    cut = []
    for buffer, group_shapes in zip(buffers, shapes, strict=True):
        sizes = [int(np.prod(s, dtype=np.int64)) for s in group_shapes]
        parts = jax.lax.split(buffer, sizes) if len(sizes) > 1 else [buffer]
        cut.append(iter([jnp.reshape(p, s) for p, s in zip(parts, group_shapes, strict=True)]))
    return tuple(next(cut[g]) for g, _, _ in layout.leaves)


def _split_traced(buffers: tuple[Any, ...], layout: PackedLayout) -> list[Any]:
    """The leaves, inside a trace (a jitted loss, ``jax.grad``).

    On CPU the cuts run inside a conditional whose two branches are the same cut (the
    predicate, ``x == x`` on one element, only keeps XLA from removing it). A conditional's
    branches are separate computations, so XLA:CPU cannot fuse each cut into the leaf's
    consumers: without it every consumer would read the big buffer at its own constant offset
    and become a distinct kernel, while per-leaf parameters share one compiled kernel between
    all leaves of one shape -- at 512 leaves that is seconds of extra compilation and a slower
    step. Other platforms fuse the cuts as usual.
    """
    probe = next((i for i, b in enumerate(buffers) if b.shape[0] > 0), None)
    if len(layout.leaves) < 2 or probe is None:
        return list(_cut(buffers, layout))

    def cut(b: tuple[Any, ...]) -> tuple[Any, ...]:
        return _cut(b, layout)

    def separate_computation(b: tuple[Any, ...]) -> tuple[Any, ...]:
        first = b[probe][0]
        return jax.lax.cond(first == first, cut, cut, b)

    return list(jax.lax.platform_dependent(buffers, cpu=separate_computation, default=cut))


@functools.lru_cache(maxsize=64)
def _device_offsets(layout: PackedLayout) -> tuple[jax.Array, ...]:
    return _offsets(layout)


def _unpack_tree(tree: PackedTree, who: str = "PackedTree.unpack", what: str = "self") -> Any:
    layout = tree.layout
    buffers = _check_buffers(tree, who, what)
    if any(isinstance(b, jax.ShapeDtypeStruct) for b in buffers):
        leaves: list[Any] = [
            jax.ShapeDtypeStruct(shape, buffers[g].dtype) for g, _, shape in layout.leaves
        ]
    elif any(isinstance(b, jax.core.Tracer) for b in buffers):
        leaves = _split_traced(tuple(buffers), layout)
    else:
        # Eagerly: one compiled call whose offsets are runtime values, so that all leaves of
        # one shape share one kernel (static offsets compile one kernel per leaf).
        flat = dict(zip(layout.groups, buffers, strict=True))
        leaves = _unpack_leaves(flat, _device_offsets(layout), layout)
    return layout.treedef.unflatten(leaves)


def _matches(layout: PackedLayout, x: Any) -> bool:
    """Whether ``x`` is a tree with ``layout``'s structure, shapes and floating leaves."""
    if x is None or _is_packed(x) or isinstance(x, sparse.IndexedSlices):
        return False
    try:
        leaves = layout.treedef.flatten_up_to(x)
    except (ValueError, TypeError):
        return False
    if jax.tree.structure(x) != layout.treedef:
        return False
    for leaf, (_, _, shape) in zip(leaves, layout.leaves, strict=True):
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            return False
        if tuple(leaf.shape) != shape or not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return False
    return True


def pack(tree: Any, like: PackedTree | None = None) -> Any:
    r"""Packs a parameter tree into one flat buffer per dtype (a :class:`PackedTree`).

    .. math::

      \mathrm{pack}(\{w_1, \dots, w_n\}) = \big(\mathrm{concat}(\mathrm{vec}(w_i) : w_i
        \text{ of dtype } d)\big)_{d}

    Optimize the packed parameters instead of the tree: with :func:`jrmsprop.rmsprop` (or a
    :mod:`jrmsprop.compat` preset, or any elementwise optax transformation) the state's slots
    are ``PackedTree``\ s of the same layout and the step costs what a single flat parameter
    costs, bit for bit the per-leaf result. In the loss, call ``params.unpack()`` to get the
    model's tree back; ``jax.grad`` with respect to the ``PackedTree`` returns a ``PackedTree``.

    With ``like``, ``tree`` is any pytree (an optimizer state, a checkpoint) and every subtree
    of it that has the structure and shapes of ``like``'s original tree (and floating-point
    leaves) is packed in ``like``'s layout -- e.g. a per-leaf state from
    ``jrmsprop.compat.state_from_keras2`` or ``rmsprop(...).init(params)`` becomes the state of
    the packed parameters. Each such subtree must have one dtype per group of ``like``.

    Leaves are concatenated, so per-leaf shardings are not kept (a packed buffer can be sharded
    itself, e.g. split over a data axis). ``IndexedSlices`` (sparse) gradients cannot be packed.

    Args:
      tree: a tree of floating-point (or complex) arrays, or ``jax.ShapeDtypeStruct`` leaves
        (then the buffers are ``ShapeDtypeStruct``\ s too); with ``like``, any pytree.
      like: a :class:`PackedTree` whose layout to use for the subtrees of ``tree``.

    Returns:
      A :class:`PackedTree` (or, with ``like``, ``tree`` with its matching subtrees packed).

    Raises:
      TypeError: ``tree`` is already packed, holds integer or sparse leaves, or ``like`` is
        not a ``PackedTree``.
      ValueError: with ``like``, no subtree of ``tree`` has ``like``'s structure and shapes.

    Example:
      >>> import jax, jax.numpy as jnp, jrmsprop, optax
      >>> params = jrmsprop.pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
      >>> params
      PackedTree(2 leaves; float32: float32[9])
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> state = tx.init(params)
      >>> loss = lambda p: jnp.sum(jnp.ones(2) @ p.unpack()["w"] + p.unpack()["b"])
      >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> params.unpack()["b"]
      Array([-0.31622764, -0.31622764, -0.31622764], dtype=float32)
    """
    if like is not None:
        if not _is_packed(like):
            raise TypeError(f"pack: `like` must be a PackedTree, got {type(like).__name__}")
        return _pack_like(tree, like.layout)
    if _is_packed(tree):
        raise TypeError("pack: `tree` is already a PackedTree")
    if any(_is_packed(x) for x in jax.tree.leaves(tree, is_leaf=_is_packed)):
        raise TypeError(
            "pack: `tree` contains a PackedTree; to pack a state like packed parameters, "
            "pass them as `like`"
        )
    layout = PackedLayout.of(tree, "tree", "pack")
    leaves = layout.treedef.flatten_up_to(tree)
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
        buffers: dict[str, Any] = {
            n: jax.ShapeDtypeStruct((s,), jnp.dtype(n))
            for n, s in zip(layout.groups, layout.sizes, strict=True)
        }
    else:
        buffers = _pack_leaves(leaves, layout, "tree", True, "pack")
    return PackedTree(buffers, layout)


def _pack_like(tree: Any, layout: PackedLayout) -> Any:
    found = []

    def is_leaf(x: Any) -> bool:
        return _is_packed(x) or _matches(layout, x)

    def pack_one(x: Any) -> Any:
        if not _matches(layout, x):
            return x
        found.append(x)
        leaves = layout.treedef.flatten_up_to(x)
        if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
            shapes = {}
            for leaf, (g, _, _) in zip(leaves, layout.leaves, strict=True):
                shapes.setdefault(g, leaf.dtype)
            return PackedTree(
                {
                    n: jax.ShapeDtypeStruct((s,), shapes[g])
                    for g, (n, s) in enumerate(zip(layout.groups, layout.sizes, strict=True))
                },
                layout,
            )
        return PackedTree(_pack(layout, x, "tree", same_dtype=False, who="pack"), layout)

    out = jax.tree.map(pack_one, tree, is_leaf=is_leaf)
    if not found and not any(_is_packed(x) for x in jax.tree.leaves(tree, is_leaf=_is_packed)):
        miss = _nearest_miss(tree, layout)
        raise ValueError(
            f"pack: no subtree of `tree` has the structure and shapes of `like` ({layout}, "
            f"{tree_description(layout.treedef)}), so nothing was packed{miss}"
        )
    return out


def _nearest_miss(tree: Any, layout: PackedLayout) -> str:
    """For the error of :func:`_pack_like`: the first subtree of ``tree`` with ``layout``'s tree
    structure and the first of its leaves that does not fit, or that there is no such subtree."""

    def same_structure(x: Any) -> bool:
        if x is None or _is_packed(x) or isinstance(x, sparse.IndexedSlices):
            return False
        try:
            return jax.tree.structure(x) == layout.treedef
        except Exception:  # pragma: no cover - a node JAX cannot flatten
            return False

    candidates = [x for x in jax.tree.leaves(tree, is_leaf=same_structure) if same_structure(x)]
    if not candidates:
        return "; no subtree of `tree` has the tree structure of `like`"
    paths = layout.paths()
    leaves = layout.treedef.flatten_up_to(candidates[0])
    for path, leaf, (g, _, shape) in zip(paths, leaves, layout.leaves, strict=True):
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            return (
                f"; the first subtree with its tree structure holds {type(leaf).__name__} at "
                f"{path}, not an array"
            )
        leaf_shape, dtype = tuple(leaf.shape), jnp.dtype(leaf.dtype)
        if leaf_shape != shape:
            return (
                f"; the first subtree with its tree structure has {dtype.name}{list(leaf_shape)} "
                f"at {path}, where `like` has {layout.groups[g]}{list(shape)}"
            )
        if not jnp.issubdtype(dtype, jnp.inexact):
            return (
                f"; the first subtree with its tree structure has dtype {dtype.name} at {path}, "
                "and only floating-point (or complex) subtrees are packed"
            )
    return ""  # pragma: no cover - such a subtree would have been packed


def unpack(tree: Any) -> Any:
    """Replaces every :class:`PackedTree` in ``tree`` by the ordinary tree it stores.

    For a ``PackedTree`` this is :meth:`PackedTree.unpack`; for an optimizer state or a tree of
    updates over packed parameters it gives the per-leaf view (``rms``, ``momentum`` and ``mg``
    as trees of the parameters' shape), e.g. for ``jrmsprop.compat`` exporters or a per-leaf
    checkpoint. Inside a trace (a jitted or differentiated function) the cuts are static and
    differentiable, with one concatenation per dtype as their gradient; eagerly they run as one
    compiled call.

    Args:
      tree: any pytree; its ``PackedTree`` nodes must hold arrays (or ``ShapeDtypeStruct``).

    Returns:
      ``tree`` with each ``PackedTree`` node replaced by its original tree structure.

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> params = jrmsprop.pack([jnp.zeros(2), jnp.ones((1, 3))])
      >>> state = jrmsprop.rmsprop().init(params)
      >>> [x.shape for x in jrmsprop.unpack(state).rms]
      [(2,), (1, 3)]
    """
    return jax.tree.map(
        lambda x: _unpack_tree(x, "unpack", "tree") if _is_packed(x) else x,
        tree,
        is_leaf=_is_packed,
    )
