"""One call that updates the slots and applies the step: the fused path of the functional API."""

from __future__ import annotations

import optax

from jrmsprop._src import transform, validation


def update_and_apply(
    tx: optax.GradientTransformation,
    grads: optax.Updates,
    state: optax.OptState | transform.RMSpropState,
    params: optax.Params,
    *,
    fused: bool = True,
) -> tuple[optax.Params, transform.RMSpropState]:
    r"""``tx.update`` and ``optax.apply_updates`` in one step, bit for bit.

    .. math::
        (p', s') = \text{update\_and\_apply}(tx, g, s, p) \iff
        u, s' = tx.\text{update}(g, s, p); \quad p' = p + u

    For :func:`jrmsprop.rmsprop` and the :mod:`jrmsprop.compat` presets. On CPU a dense float32
    leaf of a preset with the learning rate inside the momentum buffer (``rmsprop`` /
    ``compat.tf1``, ``compat.optax_rmsprop``) takes a one-pass C++ kernel
    that reads the gradient, the parameter and the slots once and writes the parameter and the
    slots in place: 20 / 28 / 28 / 36 bytes per parameter (plain / momentum / centered / both)
    where XLA:CPU's separate loops move 28 / 40 / 44 / 56. Other leaves (other dtypes, sparse,
    weight decay, the other presets), other platforms and programs that XLA partitions over
    several devices take the XLA path; all give the same bits as ``tx.update`` followed by
    ``optax.apply_updates``.

    Call it inside your ``jax.jit`` with ``params`` and ``state`` donated
    (``donate_argnums``): the kernel then writes into their buffers. Without donation XLA copies
    them first (same numbers, no saving). Called eagerly it runs one cached compiled call and
    leaves its inputs as they were. Derivatives (``jax.grad`` through the step, ``jax.jvp``) go
    through the XLA path; ``vmap`` runs the kernel once per batch element.

    Args:
      tx: a transformation made by :func:`jrmsprop.rmsprop` or a :mod:`jrmsprop.compat` preset,
        itself (clip or scale the gradients before the call: a transformation wrapped by
        ``optax.chain``, ``optax.inject_hyperparams``, ``optax.MultiSteps`` or
        ``optax.flatten`` has no fused step; use ``tx.update`` and
        ``optax.apply_updates`` for those). For hyperparameters that change at run
        time, build it inside the ``jit`` from traced values (one compilation serves them all).
      grads: the gradients, a pytree like ``params`` (dense arrays, :class:`jrmsprop.IndexedSlices`
        or None leaves), or a :class:`jrmsprop.PackedTree` for packed parameters.
      state: ``tx``'s state (``tx.init(params)``).
      params: the parameters; required (the step is added to them).
      fused: False keeps every leaf on the XLA path (same bits).

    Returns:
      ``(new_params, new_state)``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> @functools.partial(jax.jit, donate_argnums=(0, 1))
      ... def step(params, state, grads):
      ...     return jrmsprop.update_and_apply(tx, grads, state, params)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> params, state = step(params, state, {"w": jnp.ones(3)})
      >>> params["w"]  # 1 - 0.1·1 / (sqrt(0.1·1²) + 1e-7)
      Array([0.6837723, 0.6837723, 0.6837723], dtype=float32)
    """
    update = getattr(tx, "update", None)
    if not isinstance(update, transform.Update):
        raise TypeError(
            "update_and_apply: `tx` must be a transformation made by jrmsprop.rmsprop or a "
            "jrmsprop.compat preset, itself, not wrapped (optax.chain, inject_hyperparams, "
            f"MultiSteps, optax.flatten); got {validation.abbreviated(repr(tx), 200)}. For any "
            "other transformation use `updates, state = tx.update(grads, state, params)` and "
            "`optax.apply_updates(params, updates)`"
        )
    validation.check_bool("fused", fused)
    if params is None:
        raise ValueError("update_and_apply: `params` are required (the step is added to them)")
    return update.apply(grads, state, params, fused=fused)
