"""Committed optimizer-state checkpoints (``tests/checkpoints``) restore and continue bit for bit.

The state's pytree is a file format: a checkpoint written by an earlier version is restored with
``flax.serialization`` into ``tx.init(params)`` (the wrapper's ``get_weights()`` with
``set_weights``) and must continue exactly as the version that wrote it did. A failure here means
the format or the arithmetic changed; see ``tests/checkpoints/README.md``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
import pytest
from checkpoints import generate as gen

import jrmsprop

serialization = pytest.importorskip("flax.serialization")


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(gen.DIR / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def _section(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in data.items() if k.split("/")[0] == prefix}


def _tree(data: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.split("/", 1)[1]: v for k, v in _section(data, prefix).items()}


def _list(data: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    tree = _tree(data, prefix)
    return [tree[str(i)] for i in range(len(tree))]


def restore(tx: optax.GradientTransformation, params: Any, data: bytes) -> Any:
    """``from_state_dict(tx.init(params), msgpack_restore(data))``, refusing a checkpoint whose
    slots are not those of ``tx`` by name (flax itself keeps an extra slot silently, as a dict
    under a ``None`` target, and fails on a missing one with an ``AttributeError``)."""
    target = tx.init(params)
    raw = serialization.msgpack_restore(data)
    want = gen.flat(serialization.to_state_dict(target), "state")
    got = gen.flat(raw, "state")
    if want.keys() != got.keys():
        raise ValueError(
            "checkpoint does not match this transformation's state: missing "
            f"{sorted(want.keys() - got.keys())}, unexpected {sorted(got.keys() - want.keys())}"
        )
    return serialization.from_state_dict(target, raw)


def _restored(name: str) -> tuple[optax.GradientTransformation, dict[str, Any], Any, Any]:
    tx = gen.build(gen.CASES[name])
    data = _load(name)
    params = _tree(data, "params")
    state = restore(tx, params, (gen.DIR / f"{name}.msgpack").read_bytes())
    return tx, data, params, state


def test_files_match_the_table():
    names = set(gen.CASES) | set(gen.WRAPPERS)
    assert {p.stem for p in gen.DIR.glob("*.npz")} == names
    assert {p.stem for p in gen.DIR.glob("*.msgpack")} == set(gen.CASES)
    for name, call in {**gen.CASES, **gen.WRAPPERS}.items():
        assert f"{name}: {call}" in gen.__doc__
        assert str(_load(name)["factory"]) == call, name


@pytest.mark.parametrize("name", gen.CASES)
def test_restored_structure(name):
    tx, _, params, state = _restored(name)
    assert jax.tree.structure(state) == jax.tree.structure(tx.init(params))
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(tx.init(params)), strict=True):
        assert (got.dtype, got.shape) == (want.dtype, want.shape)


@pytest.mark.parametrize("name", gen.CASES)
@pytest.mark.slow
def test_restores_and_continues_bit_for_bit(name):
    tx, data, params, state = _restored(name)
    raw = serialization.msgpack_restore((gen.DIR / f"{name}.msgpack").read_bytes())
    gen.assert_same(gen.flat(serialization.to_state_dict(state), "s"), gen.flat(raw, "s"))
    grads = _tree(data, "grads")
    steps = [{k: v[t] for k, v in grads.items()} for t in range(gen.SAVE_AT)]
    params, state = gen.run(tx, params, state, steps)
    gen.assert_same(gen.flat(params, "expected_params"), _section(data, "expected_params"))
    gen.assert_same(
        gen.flat(serialization.to_state_dict(state), "expected_state"),
        _section(data, "expected_state"),
    )


@pytest.mark.parametrize(
    ("saved", "into", "slot"),
    [
        ("rmsprop_momentum_centered", "rmsprop", "unexpected .*'state/momentum/b'"),
        ("rmsprop", "rmsprop_momentum_centered", "missing .*'state/momentum/b'"),
        ("tf1", "optax_rmsprop", "unexpected .*'state/momentum/w'"),
    ],
)
def test_mismatched_slot_is_named(saved, into, slot):
    tx = gen.build(gen.CASES[into])
    with pytest.raises(ValueError, match=slot):
        restore(tx, gen.params(), (gen.DIR / f"{saved}.msgpack").read_bytes())


def test_other_state_type_is_named():
    tx = gen.build(gen.CASES["rmsprop"])
    data = (gen.DIR / "inject_hyperparams.msgpack").read_bytes()
    with pytest.raises(ValueError, match="hyperparams"):
        restore(tx, gen.params(), data)


@pytest.mark.parametrize("name", gen.WRAPPERS)
def test_wrapper_restores_and_continues_bit_for_bit(name):
    data = _load(name)
    opt = gen.build(gen.WRAPPERS[name])
    values = _list(data, "variables")
    variables = [
        jrmsprop.Variable(v, name=n) for v, n in zip(values, ("kernel", "bias"), strict=True)
    ]
    opt.build(variables)
    weights = _list(data, "weights")
    layout = [(w.dtype, w.shape) for w in weights]
    assert [(w.dtype, w.shape) for w in opt.get_weights()] == layout
    opt.set_weights(weights)
    gen.assert_same(dict(enumerate(opt.get_weights())), dict(enumerate(weights)))
    grads = _list(data, "grads")
    for t in range(gen.SAVE_AT):
        opt.apply_gradients(zip([g[t] for g in grads], variables, strict=True))
    gen.assert_same(
        {f"expected_variables/{i}": v.numpy() for i, v in enumerate(variables)},
        _section(data, "expected_variables"),
    )
    gen.assert_same(
        {f"expected_weights/{j}": w for j, w in enumerate(opt.get_weights())},
        _section(data, "expected_weights"),
    )
