"""Write the optimizer-state checkpoints of ``tests/checkpoints`` (from the repository root)::

    .venv/bin/python tests/checkpoints/generate.py [name ...]

``<name>.msgpack`` is ``flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(s))``
of the state ``s`` after ``SAVE_AT`` jitted steps (``tx.update(g, s, params)``, then
``optax.apply_updates``) from ``params()`` on ``grads(0..2)``. ``<name>.npz`` holds ``factory``
(the call), ``params/*`` at the save point, ``grads/*`` (the next ``SAVE_AT`` gradients, stacked)
and ``expected_params/*`` and ``expected_state/*`` after them (state leaves keyed by their
``to_state_dict`` path; ``None`` slots have none). Files and the calls that write them::

    rmsprop: jrmsprop.rmsprop(learning_rate=0.1)
    rmsprop_momentum_centered: jrmsprop.rmsprop(learning_rate=0.1, momentum=0.9, centered=True)
    keras3_wd_momentum: compat.keras3(learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    torch_momentum_centered: compat.torch(lr=0.1, momentum=0.9, centered=True)
    tf1: compat.tf1(learning_rate=0.1)
    optax_rmsprop: compat.optax_rmsprop(learning_rate=0.1)
    inject_hyperparams: optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1, momentum=0.9)

``wrapper_<name>.npz`` holds ``factory``, ``variables/<i>`` and ``weights/<j>``
(``get_weights()``) after ``SAVE_AT`` ``apply_gradients`` steps on
``Variable(KERNEL, name="kernel")`` and ``Variable(BIAS, name="bias")``, then ``grads/<i>`` and
``expected_variables/*`` and ``expected_weights/*`` after ``SAVE_AT`` more::

    wrapper_plain: jrmsprop.RMSprop(learning_rate=0.1)
    wrapper_centered: jrmsprop.RMSprop(learning_rate=0.1, rho=0.8, momentum=0.9, centered=True)

Before writing, every case is checked to continue from its serialized form exactly as from the
uninterrupted run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import jrmsprop
from jrmsprop import compat

DIR = Path(__file__).resolve().parent
SAVE_AT = 3

CASES = {
    "rmsprop": "jrmsprop.rmsprop(learning_rate=0.1)",
    "rmsprop_momentum_centered": "jrmsprop.rmsprop(learning_rate=0.1, momentum=0.9, centered=True)",
    "keras3_wd_momentum": "compat.keras3(learning_rate=0.1, momentum=0.9, weight_decay=0.01)",
    "torch_momentum_centered": "compat.torch(lr=0.1, momentum=0.9, centered=True)",
    "tf1": "compat.tf1(learning_rate=0.1)",
    "optax_rmsprop": "compat.optax_rmsprop(learning_rate=0.1)",
    "inject_hyperparams": (
        "optax.inject_hyperparams(jrmsprop.rmsprop)(learning_rate=0.1, momentum=0.9)"
    ),
}
WRAPPERS = {
    "wrapper_plain": "jrmsprop.RMSprop(learning_rate=0.1)",
    "wrapper_centered": (
        "jrmsprop.RMSprop(learning_rate=0.1, rho=0.8, momentum=0.9, centered=True)"
    ),
}

KERNEL = np.array([[0.5, -1.25, 2.0], [-0.75, 1.5, 0.25]], np.float32)
BIAS = np.array([0.125, -0.5, 1.0], np.float32)
SCALE = np.array(-2.5, np.float32)


def build(call: str) -> Any:
    """The transformation or optimizer that a table entry names."""
    return eval(call, {"jrmsprop": jrmsprop, "compat": compat, "optax": optax})


def params() -> dict[str, np.ndarray]:
    return {"w": KERNEL, "b": BIAS, "s": SCALE}


def gradient(step: int, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """Exact float32 values in ``[-0.5, 0.5]``, different for every step and leaf."""
    n = np.arange(int(np.prod(shape)))
    return (((n * 5 + step * 3 + index) % 9 - 4) / 8).astype(np.float32).reshape(shape)


def grads(step: int) -> dict[str, np.ndarray]:
    return {k: gradient(step, i, v.shape) for i, (k, v) in enumerate(params().items())}


def wrapper_grads(step: int) -> list[np.ndarray]:
    return [gradient(step, i, v.shape) for i, v in enumerate((KERNEL, BIAS))]


def run(tx: optax.GradientTransformation, params: Any, state: Any, grads: list[Any]):
    """``params, state`` after one jitted update-and-apply per gradient."""

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, g)
    return params, state


def flat(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix/path: array}`` for a (state) dict's array leaves; ``None`` leaves are left out."""
    from flax.traverse_util import flatten_dict

    items = flatten_dict(tree, sep="/").items()
    return {f"{prefix}/{k}": np.asarray(v) for k, v in items if v is not None}


def run_wrapper(call: str, values: list[Any], weights: list[Any] | None, grads: list[list[Any]]):
    """``(variable values, get_weights())`` after one ``apply_gradients`` per entry of ``grads``,
    from ``values`` and, if given, the optimizer ``weights``."""
    opt = build(call)
    vs = [jrmsprop.Variable(v, name=n) for v, n in zip(values, ("kernel", "bias"), strict=True)]
    if weights is not None:
        opt.build(vs)
        opt.set_weights(weights)
    for g in grads:
        opt.apply_gradients(zip(g, vs, strict=True))
    return [v.numpy() for v in vs], opt.get_weights()


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def write_case(name: str, call: str) -> None:
    from flax import serialization

    tx = build(call)
    p, state = run(tx, params(), tx.init(params()), [grads(t) for t in range(SAVE_AT)])
    data = serialization.msgpack_serialize(serialization.to_state_dict(state))
    later = [grads(t) for t in range(SAVE_AT, 2 * SAVE_AT)]
    p_end, s_end = run(tx, p, state, later)
    restored = serialization.from_state_dict(tx.init(params()), serialization.msgpack_restore(data))
    p_alt, s_alt = run(tx, p, restored, later)
    assert_same(flat(p_alt, "p"), flat(p_end, "p"))
    to_dict = serialization.to_state_dict
    assert_same(flat(to_dict(s_alt), "s"), flat(to_dict(s_end), "s"))
    stacked = {k: np.stack([g[k] for g in later]) for k in later[0]}
    (DIR / f"{name}.msgpack").write_bytes(data)
    np.savez_compressed(
        DIR / f"{name}.npz",
        factory=np.array(call),
        **flat(p, "params"),
        **flat(stacked, "grads"),
        **flat(p_end, "expected_params"),
        **flat(serialization.to_state_dict(s_end), "expected_state"),
    )


def write_wrapper(name: str, call: str) -> None:
    first = [wrapper_grads(t) for t in range(SAVE_AT)]
    later = [wrapper_grads(t) for t in range(SAVE_AT, 2 * SAVE_AT)]
    values, weights = run_wrapper(call, [KERNEL, BIAS], None, first)
    end_values, end_weights = run_wrapper(call, [KERNEL, BIAS], None, first + later)
    alt_values, alt_weights = run_wrapper(call, values, weights, later)
    assert_same(dict(enumerate(alt_values)), dict(enumerate(end_values)))
    assert_same(dict(enumerate(alt_weights)), dict(enumerate(end_weights)))
    np.savez_compressed(
        DIR / f"{name}.npz",
        factory=np.array(call),
        **{f"variables/{i}": v for i, v in enumerate(values)},
        **{f"weights/{j}": w for j, w in enumerate(weights)},
        **{f"grads/{i}": np.stack([g[i] for g in later]) for i in range(len(values))},
        **{f"expected_variables/{i}": v for i, v in enumerate(end_values)},
        **{f"expected_weights/{j}": w for j, w in enumerate(end_weights)},
    )


def main(names: list[str]) -> None:
    for name, call in CASES.items():
        if not names or name in names:
            write_case(name, call)
    for name, call in WRAPPERS.items():
        if not names or name in names:
            write_wrapper(name, call)


if __name__ == "__main__":
    main(sys.argv[1:])
