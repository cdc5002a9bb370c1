"""Gradients for ``jrmsprop.RMSprop.minimize``: ``loss()`` of Variables, differentiated by JAX.

Keras's ``minimize(loss, var_list)`` takes a callable of no arguments that reads ``tf.Variable``\\ s
and records the reads on a gradient tape. JAX differentiates functions, so :func:`compute_gradients`
runs ``loss`` under ``jax.vjp`` with each Variable of ``var_list`` temporarily holding a tracer
instead of its array (restored afterwards, also on error). A :class:`ReadRecorder`, installed for
the duration, notes which Variables the loss reads and how:

* a Variable never read gets a ``None`` gradient (skipped with a warning by the optimizer);
* a Variable read *only* through :meth:`jrmsprop.Variable.sparse_read` gets an
  :class:`jrmsprop.IndexedSlices` gradient, like TF's gather gradient: the loss is evaluated a
  second time with one zero "row input" added to every such read, and the gradients of those
  inputs are the rows' gradients.

Gradients follow TF's convention for complex numbers, the conjugate of JAX's: for a real loss of
a complex ``z``, TF's gradient is ``dL/dRe(z) + i·dL/dIm(z)`` (the ascent direction) where
``jax.grad`` gives its conjugate, and a complex loss is differentiated with ``grad_loss`` (ones by
default) as TF's ``output_gradients``. So the cotangent and the gradients are conjugated around
``jax.vjp`` (a no-op for real values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from jrmsprop._src import validation
from jrmsprop._src import variable as variable_lib
from jrmsprop._src.sparse import IndexedSlices
from jrmsprop._src.variable import Variable, as_array

__all__ = ["compute_gradients", "flatten_variables"]


class ReadRecorder:
    """Collects which Variables a loss reads (densely, or row-wise through ``sparse_read``).

    Args:
      sparse_deltas: ``None`` on the first (discovery) evaluation; on the second, for each
        ``id(variable)``, the queue of zero row inputs to add to its successive sparse reads.
    """

    def __init__(self, sparse_deltas: dict[int, list[jax.Array]] | None = None):
        self.dense: set[int] = set()  # id(variable) of densely read variables
        self.sparse: dict[int, list[tuple[int, ...]]] = {}  # id -> index shapes of sparse reads
        self.sparse_deltas = sparse_deltas
        self.used_deltas: dict[int, list[Any]] = {}  # id -> flat indices of the consumed inputs

    def read(self, var: Variable) -> None:
        """A dense read of ``var`` (``var.value``)."""
        self.dense.add(id(var))

    def sparse_read(self, var: Variable, indices: jax.Array) -> jax.Array:
        """Rows ``indices`` of ``var``, recorded (and, on the second pass, perturbed)."""
        key = id(var)
        value = var._value
        flat = indices.reshape(-1)
        row_shape = tuple(value.shape[1:])
        if self.sparse_deltas is None:  # discovery: a plain gather, differentiated densely
            self.sparse.setdefault(key, []).append(tuple(flat.shape))
            return jnp.take(value, indices, axis=0)
        queue = self.sparse_deltas.get(key, [])
        used = self.used_deltas.setdefault(key, [])
        if len(used) < len(queue) and queue[len(used)].shape == (*flat.shape, *row_shape):
            delta = queue[len(used)]
            used.append(flat)
            rows = jnp.take(jax.lax.stop_gradient(value), flat, axis=0) + delta
            return rows.reshape((*indices.shape, *row_shape))
        self.dense.add(key)  # no matching row input: differentiate it densely
        return jnp.take(value, indices, axis=0)


@contextlib.contextmanager
def record_reads(recorder: ReadRecorder) -> Iterator[ReadRecorder]:
    """While active (in this thread), every read of a Variable is reported to ``recorder``."""
    previous = variable_lib._recorder()
    variable_lib._local.recorder = recorder
    try:
        yield recorder
    finally:
        variable_lib._local.recorder = previous


def flatten_variables(var_list: Any) -> list[Variable]:
    """A Variable, or a (nested) list/tuple/dict of them, as a flat list (else a TypeError)."""
    if isinstance(var_list, Variable):
        return [var_list]
    if isinstance(var_list, dict):
        var_list = list(var_list.values())
    if isinstance(var_list, (str, bytes)) or not isinstance(var_list, Iterable):
        raise TypeError(f"`var_list` must be a list of jrmsprop.Variable, got {var_list!r}")
    out: list[Variable] = []
    for item in var_list:
        if isinstance(item, (list, tuple, dict)):
            out.extend(flatten_variables(item))
        elif isinstance(item, Variable):
            out.append(item)
        else:
            raise TypeError(
                f"Expected jrmsprop.Variable objects in `var_list`, got {type(item).__name__}: "
                f"{item!r}"
            )
    return out


def _loss_array(out: Any) -> jax.Array:
    """The value ``loss()`` returned as an array, which must be floating point or complex (a
    scalar, or an array that is summed). Checked from its dtype (while ``jax.vjp`` traces the
    loss), so that a string, an integer or a boolean loss is refused naming `loss` instead of
    failing inside JAX."""
    got = None
    if out is None or isinstance(out, (str, bytes)):
        got = repr(out)
    else:
        try:
            array = out if isinstance(out, jax.Array) else jnp.asarray(out)
        except (TypeError, ValueError):
            got = type(out).__name__
        else:
            if not jnp.issubdtype(array.dtype, jnp.inexact):
                got = f"dtype {jnp.dtype(array.dtype).name}"
    if got is not None:
        raise TypeError(
            "`loss` must return a floating-point or complex scalar (or such an array, which is "
            f"summed), got {validation.abbreviated(got, 80)}"
        )
    return array


def compute_gradients(
    loss: Callable[[], Any], var_list: Any, grad_loss: Any = None, tape: Any = None
) -> list[tuple[Any, Variable]]:
    """The ``(gradient, variable)`` pairs of ``loss()`` for ``var_list`` (see the module doc).

    Args:
      loss: callable of no arguments returning the loss, floating point or complex (a
        non-scalar loss is summed, as ``tape.gradient`` does, unless ``grad_loss`` is given).
      var_list: Variables, or a callable returning them (called after ``loss`` has run once, so
        the loss may create them).
      grad_loss: optional cotangent of the loss, shaped like the loss.
      tape: must be None (JAX has no gradient tape).

    Returns:
      One pair per variable: a ``jax.Array``, an :class:`IndexedSlices` or ``None``.

    Example:
      >>> import jrmsprop
      >>> from jrmsprop._src.minimize import compute_gradients
      >>> v = jrmsprop.Variable([1.0, 2.0])
      >>> [g.tolist() for g, _ in compute_gradients(lambda: (v.value ** 2).sum(), [v])]
      [[2.0, 4.0]]
    """
    if tape is not None:
        raise NotImplementedError(
            "minimize(tape=...) is TF-only: JAX has no gradient tape. Pass `loss` as a "
            "callable of no arguments, or compute gradients and call apply_gradients."
        )
    if not callable(loss) or isinstance(loss, Variable):
        raise ValueError(
            "`loss` must be a callable of no arguments (JAX differentiates functions, not "
            f"tensors). Received: loss={loss!r}."
        )
    if callable(var_list) and not isinstance(var_list, Variable):
        loss()
        var_list = var_list()
    variables = flatten_variables(var_list)
    values = [v._value for v in variables]

    def evaluate(vals: list[jax.Array], recorder: ReadRecorder) -> jax.Array:
        saved = [v._value for v in variables]
        try:
            for var, x in zip(variables, vals, strict=True):
                var._value = x
            with record_reads(recorder):
                out = loss()
        finally:
            for var, x in zip(variables, saved, strict=True):
                var._value = x
        if isinstance(out, Variable):
            out = out._value
        return _loss_array(out)

    def cotangent(out: jax.Array) -> jax.Array:
        if grad_loss is None:
            return jnp.ones_like(out)
        ct = as_array(grad_loss, out.dtype, copy=False)
        if ct.shape != out.shape:
            raise ValueError(f"`grad_loss` has shape {ct.shape} but the loss has shape {out.shape}")
        return jnp.conj(ct)  # TF's convention (module doc); the gradients are conjugated back

    first = ReadRecorder()
    out, vjp = jax.vjp(lambda vals: evaluate(vals, first), values)
    dense = [jnp.conj(g) for g in vjp(cotangent(out))[0]]
    keys = [id(v) for v in variables]
    sparse_only = [i for i, k in enumerate(keys) if k in first.sparse and k not in first.dense]
    grads: list[Any] = [
        dense[i] if (k in first.dense or k in first.sparse) else None for i, k in enumerate(keys)
    ]
    if not sparse_only:
        return list(zip(grads, variables, strict=True))

    # Second evaluation: a zero row input per sparse read, whose gradient is the rows'.
    plan = {
        keys[i]: [
            jnp.zeros((*shape, *variables[i].shape[1:]), variables[i].dtype)
            for shape in first.sparse[keys[i]]
        ]
        for i in sparse_only
    }

    def evaluate_rows(vals, deltas):
        second = ReadRecorder(sparse_deltas=deltas)
        out = evaluate(vals, second)
        used = {k: list(second.used_deltas.get(k, [])) for k in deltas}
        return out, (used, sorted(second.dense))

    out, vjp, (used, dense_keys) = jax.vjp(evaluate_rows, values, plan, has_aux=True)
    dense, row_grads = vjp(cotangent(out))
    dense = [jnp.conj(g) for g in dense]
    dense_keys = set(dense_keys)
    for i in sparse_only:
        key, var = keys[i], variables[i]
        n = len(used[key])
        if n:
            indices = jnp.concatenate([jnp.asarray(ix, jnp.int32) for ix in used[key]])
            rows = jnp.conj(jnp.concatenate(row_grads[key][:n], axis=0))
        if key in dense_keys:  # also read densely (or a read without its row input)
            grad = dense[i]
            if n:
                grad = grad.at[indices].add(rows.astype(grad.dtype))
            grads[i] = grad
        elif n:
            grads[i] = IndexedSlices(rows, indices, var.shape)
        else:
            grads[i] = None
    return list(zip(grads, variables, strict=True))
