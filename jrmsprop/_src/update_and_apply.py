"""The fused step of the functional API: update the slots and apply the update in one call."""

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
    r"""``tx.update`` and ``optax.apply_updates`` in one call, bit for bit.

    On CPU, dense float32 leaves of the Keras 2, TF1 and optax presets take a C++ kernel, in
    place when ``params`` and ``state`` are donated.

    Args:
      tx: a transformation of :func:`jrmsprop.rmsprop` or a :mod:`jrmsprop.compat` preset.
      grads: the gradients, like ``params`` (:class:`jrmsprop.IndexedSlices` and None leaves too).
      state: ``tx``'s state.
      params: the parameters the step is added to.
      fused: False keeps every leaf on the XLA path.

    Returns:
      ``(new_params, new_state)``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jrmsprop
      >>> tx = jrmsprop.rmsprop(learning_rate=0.1)
      >>> @functools.partial(jax.jit, donate_argnums=(0, 1))
      ... def step(params, state, grads):
      ...     return jrmsprop.update_and_apply(tx, grads, state, params)
      >>> params = {"w": jnp.ones(3)}
      >>> params, state = step(params, tx.init(params), {"w": jnp.ones(3)})
      >>> params["w"]  # 1 - 0.1·1 / (sqrt(0.1·1²) + 1e-7)
      Array([0.6837723, 0.6837723, 0.6837723], dtype=float32)
    """
    if not isinstance(update := getattr(tx, "update", None), transform.Update):
        raise TypeError(
            "update_and_apply: `tx` must be a transformation made by jrmsprop (not wrapped), got "
            + validation.abbreviated(repr(tx), 200)
        )
    if params is None:
        raise ValueError("update_and_apply: `params` are required (the step is added to them)")
    return update.apply(grads, state, params, fused=validation.check_bool("fused", fused))
