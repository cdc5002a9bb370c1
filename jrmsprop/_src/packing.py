"""Packed parameters: a pytree stored as one flat buffer per dtype, its structure kept."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from typing import Any, TypeGuard

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jrmsprop._src import sparse
from jrmsprop._src.validation import abbreviated, tree_description


@dataclasses.dataclass(frozen=True, slots=True)
class PackedLayout:
    """Where each leaf lives in a :class:`PackedTree`'s buffers; hashable, compared by value."""

    treedef: Any  # the tree structure of the packed tree
    groups: tuple[str, ...]  # the buffers' keys: the leaves' dtype names, sorted
    sizes: tuple[int, ...]  # the number of elements of each group's buffer
    leaves: tuple[tuple[int, int, tuple[int, ...]], ...]  # per leaf: (group, offset, shape)
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # once: jit hashes its static arguments on every call
        object.__setattr__(
            self, "_hash", hash((self.treedef, self.groups, self.sizes, self.leaves))
        )

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:  # the hash is recomputed: str hashes vary by process
        return PackedLayout, (self.treedef, self.groups, self.sizes, self.leaves)

    @classmethod
    def of(cls, tree: Any) -> PackedLayout:
        """The layout of ``tree`` (arrays, Python numbers or ``jax.ShapeDtypeStruct`` leaves)."""
        is_sparse = lambda x: isinstance(x, sparse.IndexedSlices)
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_sparse)
        dtypes, shapes = [], []
        for path, leaf in paths_and_leaves:
            where = f"pack: `tree` at {_path_str(path)}"
            if is_sparse(leaf):
                raise TypeError(f"{where} is an IndexedSlices")
            if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
                try:
                    leaf = jnp.asarray(leaf)
                except TypeError as e:  # a string, an object: JAX's message names neither
                    what = f"{type(leaf).__name__} {abbreviated(repr(leaf), 60)}"
                    raise TypeError(f"{where} is {what}; it must be an array") from e
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise TypeError(
                    f"{where} has dtype {jnp.dtype(leaf.dtype).name}; RMSprop needs "
                    "floating-point (or complex) parameters"
                )
            dtypes.append(jnp.dtype(leaf.dtype).name)
            shapes.append(tuple(int(d) for d in leaf.shape))
        groups = tuple(sorted(set(dtypes)))
        sizes, leaves = [0] * len(groups), []
        for name, shape in zip(dtypes, shapes, strict=True):
            g = groups.index(name)
            leaves.append((g, sizes[g], shape))
            sizes[g] += _size(shape)
        return cls(treedef, groups, tuple(sizes), tuple(leaves))

    def __repr__(self) -> str:
        # JAX prints both layouts of mismatched trees: the digest tells them apart.
        groups = ", ".join(f"{n}[{s}]" for n, s in zip(self.groups, self.sizes, strict=True))
        leaves = ""
        if len(self.leaves) <= 4:
            leaves = ": " + ", ".join(
                f"{path} {self.groups[g]}{list(shape)}"
                for path, (g, _, shape) in zip(self.paths(), self.leaves, strict=True)
            )
        count = len(self.leaves)
        return f"PackedLayout({count} leaves -> {groups or 'nothing'}{leaves}; #{self.digest()})"

    def digest(self) -> str:
        """A short digest of the tree structure, dtypes and shapes, for messages."""
        text = repr((str(self.treedef), self.groups, self.sizes, self.leaves))
        return hashlib.blake2b(text.encode("utf8"), digest_size=4).hexdigest()

    def paths(self) -> list[str]:
        """The leaves' paths as strings, for messages."""
        tree = self.treedef.unflatten(range(len(self.leaves)))
        return [_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _path_str(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _is_array(x: Any) -> TypeGuard[Any]:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _is_packed(x: Any) -> bool:
    return isinstance(x, PackedTree)


_FLAX_PENDING = True


def _register_with_flax() -> None:
    """Registers PackedTree's buffers with flax.serialization, once flax is imported."""
    global _FLAX_PENDING
    flax = sys.modules.get("flax.serialization")
    if flax is None or not hasattr(flax, "register_serialization_state"):
        return
    _FLAX_PENDING = False
    if not flax.is_serializable(PackedTree):
        flax.register_serialization_state(
            PackedTree,
            lambda t: {n: flax.to_state_dict(t.buffers[n]) for n in t.layout.groups},
            lambda target, state: PackedTree(
                {n: flax.from_state_dict(b, state[n], name=n) for n, b in target.buffers.items()},
                target.layout,
            ),
        )


class PackedTree:
    """A pytree stored as one flat buffer per dtype (see :func:`jrmsprop.pack`).

    Attributes:
      buffers: dict ``{dtype name: flat array}``, the children (a slot's may have another dtype).
      layout: the :class:`PackedLayout` of the original tree, static auxiliary data.
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: dict[str, Any], layout: PackedLayout):
        self.buffers, self.layout = buffers, layout
        if _FLAX_PENDING:
            _register_with_flax()

    def unpack(self) -> Any:
        """The original tree (see :func:`jrmsprop.unpack`)."""
        return _unpack_tree(self, "PackedTree.unpack: `self`")

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}: {jnp.dtype(b.dtype).name}{list(b.shape)}"
            if _is_array(b)
            else f"{n}: {type(b).__name__}"
            for n, b in ((n, self.buffers.get(n)) for n in self.layout.groups)
        )
        return f"PackedTree({len(self.layout.leaves)} leaves; {parts or 'nothing'})"


jax.tree_util.register_pytree_with_keys(
    PackedTree,
    lambda t: (tuple((jax.tree_util.DictKey(n), t.buffers[n]) for n in t.layout.groups), t.layout),
    lambda layout, children: PackedTree(dict(zip(layout.groups, children, strict=True)), layout),
    flatten_func=lambda t: (tuple(t.buffers[n] for n in t.layout.groups), t.layout),
)
_register_with_flax()


@functools.partial(jax.jit, static_argnums=(1,))
def _pack_leaves(leaves: list[Any], layout: PackedLayout) -> dict[str, jax.Array]:
    """One concatenation per dtype group, whose leaves must share one dtype."""
    parts: list[list[jax.Array]] = [[] for _ in layout.groups]
    first: dict[int, int] = {}
    for i, (leaf, (g, _, _)) in enumerate(zip(leaves, layout.leaves, strict=True)):
        j = first.setdefault(g, i)
        if leaves[j].dtype != leaf.dtype:
            paths = layout.paths()
            raise TypeError(
                f"pack: `tree` at {paths[i]} has dtype {jnp.dtype(leaf.dtype).name} but `tree` at "
                f"{paths[j]} has {jnp.dtype(leaves[j].dtype).name}; `like` packs both into one "
                f"{layout.groups[g]} buffer"
            )
        parts[g].append(jnp.reshape(leaf, (-1,)))
    groups = zip(layout.groups, parts, strict=True)
    return {n: p[0] if len(p) == 1 else jnp.concatenate(p) for n, p in groups}


def _packed(leaves: list[Any], layout: PackedLayout) -> PackedTree:
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
        return PackedTree(jax.eval_shape(_pack_leaves, leaves, layout=layout), layout)
    return PackedTree(_pack_leaves(leaves, layout), layout)


@functools.lru_cache(maxsize=64)
def _device_offsets(layout: PackedLayout) -> tuple[jax.Array, ...]:
    """The leaves' offsets as int32 device scalars, one transfer for all of them."""
    return tuple(jax.device_put([np.int32(offset) for _, offset, _ in layout.leaves]))


@functools.partial(jax.jit, static_argnums=(2,))
def _unpack_eagerly(buffers: tuple, offsets: tuple, layout: PackedLayout) -> list[jax.Array]:
    """Each leaf cut at a runtime offset: leaves of one shape share one compiled kernel (static
    offsets would compile one per leaf, seconds per hundred leaves)."""
    out = []
    for (g, _, shape), offset in zip(layout.leaves, offsets, strict=True):
        buffer = buffers[g]
        if _size(shape) != buffer.shape[0]:
            buffer = jax.lax.dynamic_slice_in_dim(buffer, offset, _size(shape))
        out.append(jnp.reshape(buffer, shape))
    return out


def _cut(buffers: tuple[Any, ...], layout: PackedLayout) -> tuple[Any, ...]:
    """The leaves cut by ``lax.split``, whose transpose (the gradient) is one concatenation."""
    shapes: list[list[tuple[int, ...]]] = [[] for _ in layout.groups]
    for g, _, shape in layout.leaves:
        shapes[g].append(shape)
    cut = []
    for buffer, group_shapes in zip(buffers, shapes, strict=True):
        sizes = [_size(s) for s in group_shapes]
        parts = jax.lax.split(buffer, sizes) if len(sizes) > 1 else [buffer]
        cut.append(iter([jnp.reshape(p, s) for p, s in zip(parts, group_shapes, strict=True)]))
    return tuple(next(cut[g]) for g, _, _ in layout.leaves)


def _cut_traced(buffers: tuple[Any, ...], layout: PackedLayout) -> list[Any]:
    """The leaves inside a trace. On CPU the cut runs in a conditional of two equal branches, so
    XLA does not fuse it into each consumer (slower to compile at 512 leaves, and to run)."""
    probe = next((i for i, b in enumerate(buffers) if b.shape[0] > 0), None)
    if len(layout.leaves) < 2 or probe is None:
        return list(_cut(buffers, layout))
    cut = functools.partial(_cut, layout=layout)

    def separate(b: tuple[Any, ...]) -> tuple[Any, ...]:
        return jax.lax.cond(b[probe][0] == b[probe][0], cut, cut, b)

    return list(jax.lax.platform_dependent(buffers, cpu=separate, default=cut))


def _unpack_tree(tree: PackedTree, what: str) -> Any:
    layout, buffers = tree.layout, []
    for name, size in zip(layout.groups, layout.sizes, strict=True):
        buffer = tree.buffers.get(name)
        if not _is_array(buffer):
            raise TypeError(
                f"{what} holds {type(buffer).__name__} for its {name} buffer, not an array (or "
                "jax.ShapeDtypeStruct)"
            )
        if tuple(buffer.shape) != (size,):
            raise ValueError(
                f"{what}'s {name} buffer has shape {tuple(buffer.shape)}; its layout ({layout}) "
                f"expects ({size},)"
            )
        buffers.append(buffer)
    if any(isinstance(b, jax.ShapeDtypeStruct) for b in buffers):
        leaves = [jax.ShapeDtypeStruct(s, buffers[g].dtype) for g, _, s in layout.leaves]
    elif any(isinstance(b, jax.core.Tracer) for b in buffers):
        leaves = _cut_traced(tuple(buffers), layout)
    else:
        leaves = _unpack_eagerly(tuple(buffers), _device_offsets(layout), layout)
    return layout.treedef.unflatten(leaves)


def pack(tree: Any, like: PackedTree | None = None) -> Any:
    r"""Packs a tree of arrays into one flat buffer per dtype, a :class:`PackedTree`.

    An elementwise transformation steps the buffers, bit for bit the per-leaf numbers, and packs
    its state alike. The loss calls ``params.unpack()``; ``jax.grad`` returns a ``PackedTree``.
    With ``like``, the subtrees of ``tree`` shaped like ``like``'s tree (per-leaf gradients, a
    per-leaf state) are packed in its layout. Per-leaf shardings are not kept.

    Args:
      tree: a tree of floating-point or complex arrays (or ``jax.ShapeDtypeStruct``\ s); with
        ``like``, any pytree.
      like: a :class:`PackedTree` whose layout to pack the matching subtrees of ``tree`` in.

    Returns:
      A :class:`PackedTree`; with ``like``, ``tree`` with its matching subtrees packed.

    Example:
      >>> import jax, jax.numpy as jnp, jrmsprop, optax
      >>> params = jrmsprop.pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
      >>> params
      PackedTree(2 leaves; float32: float32[9])
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> loss = lambda p: jnp.sum(p.unpack()["w"]) + jnp.sum(p.unpack()["b"])
      >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params)
      >>> optax.apply_updates(params, updates).unpack()["b"]
      Array([-0.31622764, -0.31622764, -0.31622764], dtype=float32)
    """
    if like is not None:
        if not _is_packed(like):
            raise TypeError(f"pack: `like` must be a PackedTree, got {type(like).__name__}")
        return _pack_like(tree, like.layout)
    if _is_packed(tree):
        raise TypeError("pack: `tree` is already a PackedTree")
    if any(_is_packed(x) for x in jax.tree.leaves(tree, is_leaf=_is_packed)):
        raise TypeError("pack: `tree` contains a PackedTree (to pack a state, pass `like`)")
    layout = PackedLayout.of(tree)
    return _packed(layout.treedef.flatten_up_to(tree), layout)


def _misfit(layout: PackedLayout, x: Any) -> str | None:
    """None if ``x`` fits ``layout``; else why not ("" for another tree structure)."""
    if x is None or _is_packed(x) or isinstance(x, sparse.IndexedSlices):
        return ""
    if jax.tree.structure(x) != layout.treedef:
        return ""
    for i, (leaf, (g, _, shape)) in enumerate(
        zip(layout.treedef.flatten_up_to(x), layout.leaves, strict=True)
    ):
        if not _is_array(leaf):
            return f"holds {type(leaf).__name__} at {layout.paths()[i]}, not an array"
        dtype = jnp.dtype(leaf.dtype).name
        if tuple(leaf.shape) != shape:
            want = f"{layout.groups[g]}{list(shape)}"
            return f"has {dtype}{list(leaf.shape)} at {layout.paths()[i]}, where `like` has {want}"
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return f"has dtype {dtype} at {layout.paths()[i]}, and only floating-point is packed"
    return None


def _pack_like(tree: Any, layout: PackedLayout) -> Any:
    fits = lambda x: _is_packed(x) or _misfit(layout, x) is None
    pack_one = lambda x: x if _is_packed(x) else _packed(layout.treedef.flatten_up_to(x), layout)
    out = jax.tree.map(lambda x: pack_one(x) if fits(x) else x, tree, is_leaf=fits)
    if any(_is_packed(x) for x in jax.tree.leaves(out, is_leaf=_is_packed)):
        return out
    misses = jax.tree.leaves(tree, is_leaf=lambda x: bool(_misfit(layout, x)))
    why = next(filter(None, (_misfit(layout, x) for x in misses)), "")
    raise ValueError(
        f"pack: no subtree of `tree` has the {'structure and shapes' if why else 'tree structure'}"
        f" of `like` ({layout}, {tree_description(layout.treedef)}), so nothing was packed"
        + (f": the first subtree with its tree structure {why}" if why else "")
    )


def unpack(tree: Any) -> Any:
    """Replaces every :class:`PackedTree` in ``tree`` by the ordinary tree it stores.

    A packed state unpacks to the per-leaf state ``tx.init(params.unpack())`` would make;
    ``pack(state, like=params)`` is the inverse. The cuts' gradient is one concatenation.

    Args:
      tree: any pytree; its ``PackedTree`` nodes must hold arrays (or ``ShapeDtypeStruct``\\ s).

    Returns:
      ``tree`` with each ``PackedTree`` replaced by its original tree.

    Example:
      >>> import jax.numpy as jnp, jrmsprop
      >>> params = jrmsprop.pack([jnp.zeros(2), jnp.ones((1, 3))])
      >>> state = jrmsprop.rmsprop(momentum=0.9).init(params)
      >>> per_leaf = jrmsprop.unpack(state)  # = rmsprop(momentum=0.9).init(params.unpack())
      >>> [x.shape for x in per_leaf.momentum]
      [(2,), (1, 3)]
      >>> jrmsprop.pack(per_leaf, like=params).rms
      PackedTree(2 leaves; float32: float32[5])
    """
    unpack_one = lambda x: _unpack_tree(x, "unpack: `tree`") if _is_packed(x) else x
    return jax.tree.map(unpack_one, tree, is_leaf=_is_packed)
