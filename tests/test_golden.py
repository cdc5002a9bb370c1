"""jrmsprop against golden trajectories recorded from the real frameworks.

Every ``tests/golden/*.npz`` holds >= 100 steps of ``tf_keras.optimizers.legacy.RMSprop`` (Keras
2), ``keras.optimizers.RMSprop`` (Keras 3), ``torch.optim.RMSprop`` or
``tf.compat.v1.train.RMSPropOptimizer`` on fixed random gradients (see
``tests/golden/README.md``).  Here the matching ``jrmsprop.compat`` preset, built from the same
constructor arguments, is fed the same gradients through one jitted update: Keras 2, TF1 and
Keras 3 without weight decay must agree bit for bit, every case to float32 rounding
(``golden_io.RTOL`` / ``golden_io.atol_for``).  The NumPy reference that the property tests use
is checked against the same files.  No framework is needed to run these tests.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from golden_io import (
    GoldenCase,
    assert_close,
    atol_for,
    build_transform,
    golden_files,
    grads_at,
    load_case,
    replay,
    state_slots,
    transform_kwargs,
)
from numpy_reference import Reference

import jrmsprop

FILES = golden_files()


@functools.cache
def _case(path) -> GoldenCase:
    return load_case(path)


@functools.cache
def _replayed(path) -> tuple[list[np.ndarray], object]:
    """jrmsprop's trajectory and final state on the case's gradients (computed once)."""
    return replay(_case(path))


def _bit_exact_expected(case: GoldenCase) -> bool:
    """TF 2.x Keras, TF1 and Keras 3 (without weight decay) are reproduced bit for bit.

    Keras 3's decoupled weight decay is its own rounded step, which an additive update can only
    reproduce where ``p − p_new`` is exact (Sterbenz); PyTorch's CPU ``sqrt`` is not correctly
    rounded. Those two are held to the float32-rounding tolerance of ``test_trajectory``.
    """
    if case.framework in ("keras2", "tf1"):
        return True
    return case.framework == "keras3" and not case.kwargs.get("weight_decay")


EXACT = [p for p in FILES if _bit_exact_expected(_case(p))]


def _ids(paths) -> list[str]:
    return [p.stem for p in paths]


def test_golden_set_is_complete() -> None:
    """The golden set covers every framework and every required configuration."""
    cases = [_case(p) for p in FILES]
    by_fw: dict[str, list[GoldenCase]] = {}
    for c in cases:
        by_fw.setdefault(c.framework, []).append(c)
        assert c.steps >= 100
        assert [] in c.meta["shapes"], "every case has a scalar parameter"
        assert len(c.meta["shapes"]) >= 4
        for g in c.grads:
            arr = g[0] if isinstance(g, tuple) else g
            assert arr.dtype == np.float32 and arr.shape[0] == c.steps
    assert {len(v) for v in by_fw.values()} and set(by_fw) == {"keras2", "keras3", "torch", "tf1"}

    def grid(fw: str, *keys: str) -> set[tuple]:
        return {tuple(c.kwargs.get(k) for k in keys) for c in by_fw[fw]}

    assert {(m, c, e) for m in (0.0, 0.9) for c in (False, True) for e in (1e-7, 1e-3, 1.0)} <= (
        grid("keras2", "momentum", "centered", "epsilon")
    )
    assert {(m, c, e) for m in (0.0, 0.9) for c in (False, True) for e in (1e-7, 1.0)} <= (
        grid("keras3", "momentum", "centered", "epsilon")
    )
    assert {(m, c, e) for m in (0.0, 0.9) for c in (False, True) for e in (1e-8, 1e-3, 1.0)} <= (
        grid("torch", "momentum", "centered", "eps")
    )
    assert {(m, c, e) for m in (0.0, 0.9) for c in (False, True) for e in (1e-10, 1e-3)} <= (
        grid("tf1", "momentum", "centered", "epsilon")
    )
    k2 = by_fw["keras2"]
    assert any(c.meta["schedule"] for c in k2)
    assert any(c.kwargs.get("decay") for c in k2)
    assert {(c.kwargs["momentum"], c.kwargs["centered"]) for c in k2 if any(c.meta["sparse"])} == {
        (m, ce) for m in (0.0, 0.9) for ce in (False, True)
    }
    assert any(c.tfw is not None for c in k2)
    assert any(c.kwargs.get("weight_decay") for c in by_fw["keras3"])
    assert any(c.kwargs["weight_decay"] for c in by_fw["torch"])
    assert any(c.kwargs["maximize"] for c in by_fw["torch"])
    assert any(c.torch_state is not None for c in by_fw["torch"])
    assert sum(p.stat().st_size for p in FILES) < 5 * 2**20


@pytest.mark.parametrize("path", EXACT, ids=_ids(EXACT))
@pytest.mark.slow
def test_bit_exact_where_the_framework_allows(path) -> None:
    """Keras 2, TF1 and Keras 3 trajectories and slots are identical to the last bit."""
    case = _case(path)
    traj, state = _replayed(path)
    for ref, got in zip(case.traj, traj, strict=True):
        np.testing.assert_array_equal(got, ref, err_msg=f"{case.name}: params")
    ours = state_slots(state)
    compared = 0
    for name, theirs in case.slots.items():
        if ours[name] is None:
            continue
        for ref, got in zip(theirs, ours[name], strict=True):
            np.testing.assert_array_equal(got, ref, err_msg=f"{case.name}: {name}")
            compared += 1
    assert compared >= len(case.p0)  # at least the rms slot of every parameter


def test_the_exact_set_is_what_the_readme_claims() -> None:
    """The files not bit-exact are exactly the torch and Keras 3 weight-decay ones."""
    inexact = {_case(p).name for p in FILES} - {_case(p).name for p in EXACT}
    assert inexact and all(n.startswith("torch_") or n.startswith("keras3_wd") for n in inexact), (
        sorted(inexact)
    )
    assert {_case(p).framework for p in EXACT} == {"keras2", "keras3", "tf1"}


def _assert_continues_like_the_framework(
    case_: GoldenCase, k: int, traj: list[np.ndarray], state: object
) -> None:
    """After a transfer at step ``k``: the rest of the trajectory and the final slots match."""
    __tracebackhide__ = True
    atol = atol_for(case_.framework)
    assert_close(
        [t[k:] for t in case_.traj], traj, f"{case_.name}: params after transfer", atol=atol
    )
    ours = state_slots(state)
    for name, theirs in case_.slots.items():
        assert_close(theirs, ours[name], f"{case_.name}: {name} slot after transfer", atol=atol)


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
@pytest.mark.slow
def test_trajectory(path) -> None:
    """The parameters after every step match the framework's to float32 rounding."""
    case = _case(path)
    traj, _ = _replayed(path)
    assert_close(case.traj, traj, f"{case.name}: params", atol=atol_for(case.framework))


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_final_slots(path) -> None:
    """The final rms / momentum / mg slots match the framework's (canonical names)."""
    case = _case(path)
    _, state = _replayed(path)
    assert int(state.count) == case.steps
    ours = state_slots(state)
    for name in ("rms", "momentum", "mg"):
        theirs = case.slots.get(name)
        if theirs is None:
            assert ours[name] is None, f"{case.name}: jrmsprop has a {name} slot, framework not"
        elif ours[name] is None:
            # Only TF1 keeps a momentum slot with momentum=0: there it holds the last step, which
            # no later step reads; jrmsprop does not spend the memory.
            assert case.framework == "tf1" and name == "momentum"
            assert case.kwargs["momentum"] == 0.0
        else:
            assert_close(
                theirs, ours[name], f"{case.name}: {name} slot", atol=atol_for(case.framework)
            )


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_numpy_reference_reproduces_the_framework(path) -> None:
    """``tests/numpy_reference.py`` replays the recording: bit for bit except torch's sqrt.

    This is what makes the reference a trustworthy oracle for ``test_properties.py``.
    """
    case = _case(path)
    kwargs = transform_kwargs(case)
    schedule = kwargs.get("learning_rate")
    if callable(schedule):
        kwargs["learning_rate"] = lambda t: float(np.asarray(schedule(np.int32(t))))
    ref = Reference.from_kwargs(case.framework, kwargs)
    params = case.p0
    traj = [np.empty_like(t) for t in case.traj]
    for t in range(case.steps):
        step = [(g[0][t], g[1][t]) if isinstance(g, tuple) else g[t] for g in case.grads]
        params = ref.apply(step, params)
        for i, p in enumerate(params):
            traj[i][t] = p
    if case.framework == "torch":
        assert_close(case.traj, traj, f"{case.name}: reference", atol=atol_for("torch"))
    else:
        for ref_traj, got in zip(case.traj, traj, strict=True):
            np.testing.assert_array_equal(got, ref_traj, err_msg=case.name)


def _transfer_cases(framework: str) -> list[GoldenCase]:
    cases = [_case(p) for p in FILES]
    return [c for c in cases if c.framework == framework and c.transfer_at is not None]


@pytest.mark.parametrize("case_", _transfer_cases("keras2"), ids=lambda c: c.name)
def test_keras2_state_transfer_functional(case_: GoldenCase) -> None:
    """``compat.state_from_keras2(get_weights())`` continues exactly where Keras 2 stopped."""
    k = case_.transfer_at
    params = [jnp.asarray(t[k - 1]) for t in case_.traj]
    kw = case_.kwargs
    state = jrmsprop.compat.state_from_keras2(
        case_.tfw, params, momentum=kw["momentum"] > 0, centered=kw["centered"]
    )
    assert int(state.count) == k
    traj, state = replay(case_, start=k, params=params, state=state)
    _assert_continues_like_the_framework(case_, k, traj, state)


def _variable_value(v: object) -> np.ndarray:
    for attr in ("numpy", "value"):
        if hasattr(v, attr):
            val = getattr(v, attr)
            return np.asarray(val() if callable(val) else val)
    return np.asarray(v)


@pytest.mark.parametrize("case_", _transfer_cases("keras2"), ids=lambda c: c.name)
def test_keras2_state_transfer_wrapper(case_: GoldenCase) -> None:
    """``jrmsprop.RMSprop.set_weights(tf_optimizer.get_weights())`` then ``apply_gradients``."""
    k = case_.transfer_at
    variables = [jrmsprop.Variable(jnp.asarray(t[k - 1])) for t in case_.traj]
    opt = jrmsprop.RMSprop(**case_.kwargs)
    opt.build(variables)
    opt.set_weights(case_.tfw)
    assert int(np.asarray(_variable_value(opt.iterations))) == k
    for mine, theirs in zip(opt.get_weights(), case_.tfw, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), theirs)
    traj = [np.empty((case_.steps - k, *p.shape), np.float32) for p in case_.p0]
    for t in range(k, case_.steps):
        opt.apply_gradients(zip(grads_at(case_, t), variables, strict=True))
        for i, v in enumerate(variables):
            traj[i][t - k] = _variable_value(v)
    assert int(np.asarray(_variable_value(opt.iterations))) == case_.steps
    assert_close(
        [t[k:] for t in case_.traj],
        traj,
        f"{case_.name}: wrapper params",
        atol=atol_for(case_.framework),
    )


@pytest.mark.parametrize("case_", _transfer_cases("torch"), ids=lambda c: c.name)
def test_torch_state_transfer(case_: GoldenCase) -> None:
    """``compat.state_from_torch(optimizer.state_dict())`` continues exactly where torch stopped."""
    k = case_.transfer_at
    params = [jnp.asarray(t[k - 1]) for t in case_.traj]
    sd = case_.torch_state_dict()
    assert all(float(s["step"]) == k for s in sd["state"].values())
    state = jrmsprop.compat.state_from_torch(sd, params)
    assert int(state.count) == k
    traj, state = replay(case_, build_transform(case_), start=k, params=params, state=state)
    _assert_continues_like_the_framework(case_, k, traj, state)
