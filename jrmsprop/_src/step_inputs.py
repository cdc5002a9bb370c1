"""The inputs of ``jrmsprop.RMSprop``'s compiled step: checked pairs, gradients, donated buffers.

``apply_gradients`` takes Keras's ``grads_and_vars``: an iterable of ``(gradient, Variable)``
pairs. :func:`split_pairs` checks them as Keras does -- a pair whose gradient is ``None`` is
skipped (:func:`warn_missing` says which, with Keras's text), all ``None`` is an error -- and
refuses a variable given twice (its gradients must be summed first).
:func:`as_gradients` brings every gradient to its variable's shape and dtype.

The step donates the variables' and slots' buffers to XLA, which updates them in place. A donated
buffer must appear once among the call's arguments: :func:`distinct_donations` copies every array
that appears a second time (a gradient that *is* its parameter: ``loss = p**2 / 2``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jrmsprop._src.validation import abbreviated
from jrmsprop._src.variable import Variable, as_gradient

__all__ = ["as_gradients", "distinct_donations", "split_pairs", "warn_missing"]


def split_pairs(
    grads_and_vars: Iterable[tuple[Any, Variable]],
) -> tuple[list[tuple[Any, Variable]], list[str]]:
    """Checks ``apply_gradients``' pairs.

    Args:
      grads_and_vars: iterable of ``(gradient, jrmsprop.Variable)``.

    Returns:
      ``(kept, missing)``: the pairs that have a gradient, in order, and the names of the
      variables whose gradient is ``None``.

    Raises:
      TypeError: for an item that is not a pair, or whose second element is not a Variable.
      ValueError: when there are pairs but none has a gradient, or when a variable appears in
        more than one pair that has a gradient.
    """
    pairs = []
    for pair in grads_and_vars:
        try:
            grad, var = pair
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`grads_and_vars` must contain (gradient, variable) pairs, got {pair!r}"
            ) from e
        if not isinstance(var, Variable):
            raise TypeError(
                f"apply_gradients: expected a jrmsprop.Variable, got {type(var).__name__}"
            )
        pairs.append((grad, var))
    kept = [(g, v) for g, v in pairs if g is not None]
    if pairs and not kept:
        raise ValueError(
            f"No gradients provided for any variable: "
            f"{abbreviated([v.name for _, v in pairs])}. "
            f"Provided `grads_and_vars` is {abbreviated(pairs)}."
        )
    seen: set[Variable] = set()
    for _, var in kept:
        if var in seen:
            raise ValueError(
                f"apply_gradients: variable {var.name!r} appears more than once in "
                "`grads_and_vars`. TF 2.x Keras would apply its gradients one after the other "
                "in one step, sharing one slot (and list an unused copy of that slot in its "
                "weights); jrmsprop does not reproduce that. Pass each variable once (e.g. with "
                "its gradients summed, which is a different step)"
            )
        seen.add(var)
    return kept, [v.name for g, v in pairs if g is None]


def as_gradients(pairs: Sequence[tuple[Any, Variable]]) -> tuple[Any, ...]:
    """Each pair's gradient for its variable: a JAX array of the variable's shape and dtype as
    it is, anything else through :func:`jrmsprop._src.variable.as_gradient` (which converts
    arrays and sparse gradients, and raises an error naming the variable for a bad one)."""
    # Fast path (this runs once per variable and step): a gradient of the same concrete array
    # type as the variable's own value is a jax.Array (an exact type test avoids the abstract
    # base class check of ``isinstance(g, jax.Array)``), and equal abstract values mean equal
    # shapes and dtypes (one comparison, five times cheaper than comparing both). Anything
    # else, weak-typed or differently sharded gradients included, takes ``as_gradient``.
    out = []
    for g, v in pairs:
        value = v._value
        if type(g) is type(value) and g.aval == value.aval:
            out.append(g)
        else:
            out.append(as_gradient(g, v))
    return tuple(out)


def warn_missing(names: Sequence[str], stacklevel: int) -> None:
    """Keras's warning for variables without a gradient (none when ``names`` is empty).

    ``stacklevel`` counts from the caller, as if the caller had called ``warnings.warn``.
    """
    if names:
        warnings.warn(
            f"Gradients do not exist for variables {list(names)} when minimizing the loss. If "
            "you're using `model.compile()`, did you forget to provide a `loss` argument?",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def distinct_donations(
    donated: Sequence[Sequence[jax.Array] | None], others: Any
) -> tuple[list[tuple[jax.Array, ...] | None], Any]:
    """Copies arrays so that no donated buffer appears twice among a call's arguments.

    Variables copy what they are given, so two arguments share a buffer only when they are the
    same array object: identity is the test.

    Args:
      donated: groups of arrays that the call donates (``None`` for an absent group).
      others: a tree of the call's other arguments.

    Returns:
      ``(donated, others)``, each group as a tuple, with a copy in place of every array that
      already appeared in an earlier (donated) position.
    """
    present = [group for group in donated if group is not None]
    seen: set[int] = set(map(id, itertools.chain.from_iterable(present)))
    if len(seen) == sum(map(len, present)) and seen.isdisjoint(map(id, jax.tree.leaves(others))):
        # The usual case, checked at C speed: every buffer appears once.
        return [None if group is None else tuple(group) for group in donated], others
    seen = set()
    groups = []
    for group in donated:
        if group is None:
            groups.append(None)
            continue
        arrays = []
        for array in group:
            if id(array) in seen:
                array = jnp.array(array, copy=True)
            seen.add(id(array))
            arrays.append(array)
        groups.append(tuple(arrays))

    def unalias(x: Any) -> Any:
        return jnp.array(x, copy=True) if isinstance(x, jax.Array) and id(x) in seen else x

    return groups, jax.tree.map(unalias, others)
