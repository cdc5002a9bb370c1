"""Optimizer state read from files saved by the real Keras, then training continued in JAX.

The files in ``tests/saved/`` were written by ``tests/saved/generate_saved.py`` with tf_keras 2.21
(legacy RMSprop, ``model.save("*.h5")``) and Keras 3.15 (``model.save("*.keras")``). Beside each
one, an ``.npz`` holds the parameters at the time of saving, the gradients of the next ``M``
steps and the framework's parameters after each of them. Loading the state and feeding jrmsprop
those gradients must give the framework's parameters bit for bit.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("h5py")

import jrmsprop  # noqa: E402
from jrmsprop._src import saved_state  # noqa: E402
from jrmsprop._src.saved_state import (  # noqa: E402
    keras2_h5_weights,
    load_keras2_h5,
    load_keras3_archive,
    saved_optimizer_config,
)

SAVED = Path(__file__).resolve().parent / "saved"
KERAS2 = sorted(p.stem for p in SAVED.glob("keras2_*.npz"))
KERAS3 = sorted(p.stem for p in SAVED.glob("keras3_*.npz"))
SHAPES = [(4, 3), (3,), (3, 2), (2,)]  # Dense(3) kernel, bias, Dense(2) kernel, bias


def _case(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(SAVED / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def _params(arrays: dict[str, np.ndarray]) -> list[jax.Array]:
    return [jnp.asarray(arrays[f"p0_{i}"]) for i in range(len(SHAPES))]


def _continue(tx, params, state, arrays, m):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    traj = []
    for j in range(m):
        params, state = step(params, state, [jnp.asarray(arrays[f"g_{i}"][j]) for i in range(4)])
        traj.append([np.asarray(p) for p in params])
    return traj, state


def _assert_trajectory(traj, arrays, name):
    for j, params in enumerate(traj):
        for i, p in enumerate(params):
            np.testing.assert_array_equal(
                p, arrays[f"p_{i}"][j], err_msg=f"{name}: param {i} after step {j + 1}"
            )


def test_the_golden_set_is_there() -> None:
    assert KERAS2 == [
        "keras2_mom0",
        "keras2_mom0.9",
        "keras2_mom0.9_centered",
        "keras2_mom0_centered",
    ]
    assert KERAS3 == ["keras3_mom0.9_centered", "keras3_plain"]


# ---- Keras 2 (.h5) ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERAS2)
def test_keras2_h5_continues_bit_for_bit(name: str) -> None:
    tf_before = "tensorflow" in sys.modules
    meta, arrays = _case(name)
    path = SAVED / meta["saved"]
    params = _params(arrays)
    state = load_keras2_h5(path, params)
    if not tf_before:
        assert "tensorflow" not in sys.modules
    kw = meta["kwargs"]
    assert state.count.dtype == jnp.int32 and int(state.count) == meta["fit_steps"]
    assert (state.momentum is None) == (kw["momentum"] == 0)
    assert (state.mg is None) == (not kw["centered"])
    # The hyperparameters come from the file too.
    config = saved_optimizer_config(path)
    assert config["class_name"] == "RMSprop"
    c = config["config"]
    tx = jrmsprop.rmsprop(
        c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"], decay=c["decay"]
    )
    traj, state = _continue(tx, params, state, arrays, meta["m"])
    _assert_trajectory(traj, arrays, name)
    assert int(state.count) == int(arrays["iterations"]) == meta["fit_steps"] + meta["m"]
    for slot in ("rms", "momentum", "mg"):
        ours = getattr(state, slot)
        if ours is None:
            assert f"slot_{slot}_0" not in arrays
            continue
        for i, got in enumerate(ours):
            np.testing.assert_array_equal(got, arrays[f"slot_{slot}_{i}"], err_msg=f"{slot} {i}")


@pytest.mark.parametrize("name", KERAS2)
def test_keras2_h5_weights_through_the_wrapper(name: str) -> None:
    """``RMSprop.from_config`` + ``set_weights(keras2_h5_weights(path))``, then apply_gradients."""
    meta, arrays = _case(name)
    path = SAVED / meta["saved"]
    weights = keras2_h5_weights(path)
    kw = meta["kwargs"]
    blocks = 1 + int(kw["momentum"] > 0) + int(kw["centered"])
    assert len(weights) == 1 + blocks * 4
    assert int(weights[0]) == meta["fit_steps"]
    assert [w.shape for w in weights[1:]] == SHAPES * blocks
    opt = jrmsprop.RMSprop.from_config(saved_optimizer_config(path)["config"])
    variables = [jrmsprop.Variable(p) for p in _params(arrays)]
    opt.build(variables)
    opt.set_weights(weights)
    for mine, theirs in zip(opt.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    traj = []
    for j in range(meta["m"]):
        grads = [jnp.asarray(arrays[f"g_{i}"][j]) for i in range(4)]
        opt.apply_gradients(zip(grads, variables, strict=True))
        traj.append([v.numpy() for v in variables])
    _assert_trajectory(traj, arrays, f"{name} (wrapper)")
    assert int(opt.iterations.numpy()) == int(arrays["iterations"])


def test_keras2_h5_weights_match_the_functional_state() -> None:
    path = SAVED / "keras2_mom0.9_centered.h5"
    params = [jnp.zeros(s) for s in SHAPES]
    state = load_keras2_h5(path, params)
    w = keras2_h5_weights(path)
    flat = [state.rms, state.momentum, state.mg]
    for k, slot in enumerate(flat):
        for i in range(4):
            np.testing.assert_array_equal(slot[i], w[1 + 4 * k + i])


def test_keras2_params_as_a_dict_in_leaf_order() -> None:
    """Any pytree works when its leaves come in trainable-weights order."""
    path = SAVED / "keras2_mom0.9.h5"
    params = {
        "a_kernel": jnp.zeros((4, 3)),
        "b_bias": jnp.zeros(3),
        "c_kernel": jnp.zeros((3, 2)),
        "d_bias": jnp.zeros(2),
    }
    state = load_keras2_h5(path, params)
    w = keras2_h5_weights(path)
    np.testing.assert_array_equal(state.momentum["c_kernel"], w[5 + 2])
    assert state.mg is None


# ---- Keras 3 (.keras) -------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERAS3)
def test_keras3_archive_continues_bit_for_bit(name: str) -> None:
    tf_before = "tensorflow" in sys.modules
    meta, arrays = _case(name)
    path = SAVED / meta["saved"]
    params = _params(arrays)
    state = load_keras3_archive(path, params)
    if not tf_before:
        assert "tensorflow" not in sys.modules
    kw = meta["kwargs"]
    assert state.count.dtype == jnp.int32 and int(state.count) == meta["fit_steps"]
    assert (state.momentum is None) == (kw.get("momentum", 0.0) == 0)
    assert (state.mg is None) == (not kw.get("centered", False))
    c = saved_optimizer_config(path)["config"]
    tx = jrmsprop.compat.keras3(
        c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"]
    )
    traj, state = _continue(tx, params, state, arrays, meta["m"])
    _assert_trajectory(traj, arrays, name)
    assert int(state.count) == int(arrays["iterations"])
    names = {"rms": "velocity", "momentum": "momentum", "mg": "average_gradient"}
    for slot, theirs in names.items():
        ours = getattr(state, slot)
        if ours is None:
            assert f"slot_{theirs}_0" not in arrays
            continue
        for i, got in enumerate(ours):
            np.testing.assert_array_equal(got, arrays[f"slot_{theirs}_{i}"], err_msg=f"{slot} {i}")


def test_keras3_unzipped_folder(tmp_path: Path) -> None:
    """``model.save(..., zipped=False)`` writes the same files into a folder."""
    with zipfile.ZipFile(SAVED / "keras3_mom0.9_centered.keras") as z:
        z.extractall(tmp_path / "m.keras")
    params = [jnp.zeros(s) for s in SHAPES]
    a = load_keras3_archive(tmp_path / "m.keras", params)
    b = load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_loading_needs_no_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TensorFlow, tf_keras, Keras and PyTorch made unimportable, both formats still load."""
    blocked = ("tensorflow", "tf_keras", "keras", "torch")
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    p = [jnp.zeros(s) for s in SHAPES]
    assert int(load_keras2_h5(SAVED / "keras2_mom0.9_centered.h5", p).count) == 5
    assert len(keras2_h5_weights(SAVED / "keras2_mom0.h5")) == 5
    assert int(load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", p).count) == 5
    assert saved_optimizer_config(SAVED / "keras3_plain.keras")["class_name"] == "RMSprop"
    assert all(sys.modules[name] is None for name in blocked)


# ---- errors -----------------------------------------------------------------------------------


def _zeros():
    return [jnp.zeros(s) for s in SHAPES]


def test_error_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"load_keras2_h5: no such file: .*nope\.h5"):
        load_keras2_h5(missing, _zeros())
    with pytest.raises(FileNotFoundError, match=r"load_keras3_archive: no such file"):
        load_keras3_archive(tmp_path / "nope.keras", _zeros())
    with pytest.raises(FileNotFoundError, match=r"keras2_h5_weights: no such file"):
        keras2_h5_weights(missing)
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike, got int"):
        load_keras2_h5(3, _zeros())


def test_error_not_hdf5_or_zip(tmp_path: Path) -> None:
    text = tmp_path / "m.h5"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"load_keras2_h5: '.*m\.h5' is not an HDF5 file$"):
        load_keras2_h5(text, _zeros())
    with pytest.raises(ValueError, match=r"load_keras3_archive: '.*m\.h5' is not a zip archive"):
        load_keras3_archive(text, _zeros())
    with pytest.raises(
        ValueError,
        match=r"is not an HDF5 file \(it is a zip archive.*"
        r"use load_keras3_archive\)",
    ):
        load_keras2_h5(SAVED / "keras3_plain.keras", _zeros())
    with pytest.raises(ValueError, match=r"is not a zip archive .*HDF5.*use load_keras2_h5"):
        load_keras3_archive(SAVED / "keras2_mom0.h5", _zeros())
    other_zip = tmp_path / "x.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match=r"zip archive without \['config.json', 'model.weights"):
        load_keras3_archive(other_zip, _zeros())
    with pytest.raises(ValueError, match=r"neither an HDF5 file nor a .keras archive"):
        saved_optimizer_config(text)


def test_error_no_optimizer_state(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"keras2_no_optimizer\.h5' holds no optimizer state "
        r"\(no 'optimizer_weights' group\).*include_optimizer=False",
    ):
        load_keras2_h5(SAVED / "keras2_no_optimizer.h5", _zeros())
    # A Keras 3 archive of a model that was never compiled: drop compile_config.
    src = zipfile.ZipFile(SAVED / "keras3_plain.keras")
    target = tmp_path / "uncompiled.keras"
    with src, zipfile.ZipFile(target, "w") as z:
        for member in src.namelist():
            data = src.read(member)
            if member == "config.json":
                config = json.loads(data)
                config.pop("compile_config")
                data = json.dumps(config).encode()
            z.writestr(member, data)
    with pytest.raises(ValueError, match=r"uncompiled\.keras' holds no optimizer state"):
        load_keras3_archive(target, _zeros())


def test_error_another_optimizer() -> None:
    with pytest.raises(
        ValueError,
        match=r"keras2_adam\.h5' holds the state of a Adam optimizer "
        r"\(slots \['m', 'v'\]\), not RMSprop",
    ):
        load_keras2_h5(SAVED / "keras2_adam.h5", _zeros())
    with pytest.raises(ValueError, match=r"holds the state of a Adam optimizer"):
        keras2_h5_weights(SAVED / "keras2_adam.h5")
    with pytest.raises(
        ValueError,
        match=r"keras3_adam\.keras' holds the state of a Adam "
        r"optimizer, not RMSprop",
    ):
        load_keras3_archive(SAVED / "keras3_adam.keras", _zeros())
    with pytest.raises(
        ValueError,
        match=r"TF >= 2.11 / Keras 3 optimizer .*load_keras2_h5 reads"
        r" the TF 2.x \(legacy\) RMSprop state",
    ):
        load_keras2_h5(SAVED / "keras2_new_optimizer.h5", _zeros())


def test_error_adam_without_training_config(tmp_path: Path) -> None:
    """Without the class name in the file, the slot names still tell Adam from RMSprop."""
    import h5py

    target = tmp_path / "adam.h5"
    with h5py.File(SAVED / "keras2_adam.h5", "r") as src, h5py.File(target, "w") as dst:
        src.copy("optimizer_weights", dst)
    with pytest.raises(
        ValueError,
        match=r"not RMSprop state: slot 'm' in 'Adam/dense_\d+/kernel"
        r"/m:0' \(slots found: \['m', 'v'\]",
    ):
        load_keras2_h5(target, _zeros())


def test_weights_only_h5_with_optimizer_group(tmp_path: Path) -> None:
    """Any HDF5 file with Keras' ``optimizer_weights`` group loads (no training_config needed)."""
    import h5py

    target = tmp_path / "weights.h5"
    with h5py.File(SAVED / "keras2_mom0.9.h5", "r") as src, h5py.File(target, "w") as dst:
        src.copy("optimizer_weights", dst)
    for a, b in zip(
        keras2_h5_weights(target), keras2_h5_weights(SAVED / "keras2_mom0.9.h5"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_error_count_mismatch() -> None:
    with pytest.raises(
        ValueError,
        match=r"`params` has 3 leaves but the saved optimizer state is "
        r"for 4 variables \(dense_\d+/kernel, dense_\d+/bias, .*trainable_weights",
    ):
        load_keras2_h5(SAVED / "keras2_mom0.9.h5", _zeros()[:3])
    with pytest.raises(
        ValueError,
        match=r"`params` has 5 leaves but the saved optimizer state is "
        r"for 4 variables",
    ):
        load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", [*_zeros(), jnp.zeros(1)])


def test_error_shape_mismatch() -> None:
    params = {"w": [jnp.zeros((4, 3)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros(2)]}
    with pytest.raises(
        ValueError,
        match=r"`params` leaf 2 \(\['w'\]\[2\]\) has shape \(2, 3\), "
        r"but saved variable 2 \(dense_\d+/kernel\) has shape \(3, 2\)",
    ):
        load_keras2_h5(SAVED / "keras2_mom0_centered.h5", params)
    with pytest.raises(
        ValueError,
        match=r"`params` leaf 2 \(\['w'\]\[2\]\) has shape \(2, 3\), "
        r"but saved variable 2 \(velocity 2\) has shape \(3, 2\)",
    ):
        load_keras3_archive(SAVED / "keras3_plain.keras", params)


def test_error_without_h5py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"needs h5py.*pip install 'jrmsprop\[h5\]'"):
        load_keras2_h5(SAVED / "keras2_mom0.h5", _zeros())
    with pytest.raises(ImportError, match=r"pip install 'jrmsprop\[h5\]'"):
        load_keras3_archive(SAVED / "keras3_plain.keras", _zeros())


def test_module_exports() -> None:
    assert set(saved_state.__all__) == {
        "keras2_h5_weights",
        "load_keras2_h5",
        "load_keras3_archive",
        "saved_optimizer_config",
        "state_from_keras2",
        "state_from_torch",
    }


# ---- damaged files, optimizer identity ---------------------------------------------------------


def _rezip(src: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(target, "w") as zo:
        for member in zi.namelist():
            zo.writestr(member, edit(member, zi.read(member)))
    return target


def test_error_damaged_files_name_the_function_and_path(tmp_path: Path) -> None:
    """A truncated .h5, a broken config.json, a model.weights.h5 that is not HDF5: a ValueError
    naming the function and the file, the library's own error chained."""
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((SAVED / "keras2_mom0.9_centered.h5").read_bytes()[:3000])
    for fn in (
        lambda: load_keras2_h5(truncated, _zeros()),
        lambda: keras2_h5_weights(truncated),
        lambda: saved_optimizer_config(truncated),
    ):
        with pytest.raises(ValueError, match=r"truncated\.h5'.*truncated or corrupt") as e:
            fn()
        assert str(e.value).split(":")[0] in (
            "load_keras2_h5",
            "keras2_h5_weights",
            "saved_optimizer_config",
        )
        assert isinstance(e.value.__cause__, OSError)
    src = SAVED / "keras3_mom0.9_centered.keras"
    bad_config = _rezip(
        src, tmp_path / "bad_config.keras", lambda n, d: b"{oops" if n == "config.json" else d
    )
    for fn, name in (
        (lambda: load_keras3_archive(bad_config, _zeros()), "load_keras3_archive"),
        (lambda: saved_optimizer_config(bad_config), "saved_optimizer_config"),
    ):
        with pytest.raises(
            ValueError, match=rf"^{name}: .*bad_config\.keras': config\.json is not valid JSON"
        ) as e:
            fn()
        assert isinstance(e.value.__cause__, json.JSONDecodeError)
    bad_weights = _rezip(
        src,
        tmp_path / "bad_weights.keras",
        lambda n, d: b"garbage" if n == "model.weights.h5" else d,
    )
    with pytest.raises(
        ValueError,
        match=r"^load_keras3_archive: .*bad_weights\.keras': model\.weights\.h5 could not be read",
    ) as e:
        load_keras3_archive(bad_weights, _zeros())
    assert isinstance(e.value.__cause__, OSError)


def _with_optimizer_entry(tmp_path: Path, name: str, **entry) -> Path:
    def edit(member: str, data: bytes) -> bytes:
        if member != "config.json":
            return data
        config = json.loads(data)
        config["compile_config"]["optimizer"].update(entry)
        return json.dumps(config).encode()

    return _rezip(SAVED / "keras3_mom0.9_centered.keras", tmp_path / name, edit)


def test_saved_optimizer_config_reports_the_registered_name(tmp_path: Path) -> None:
    for path in (SAVED / "keras3_plain.keras", SAVED / "keras2_mom0.9.h5"):
        saved = saved_optimizer_config(path)
        assert saved["class_name"] == "RMSprop" and saved["registered_name"] is None
    jr = _with_optimizer_entry(
        tmp_path, "jr.keras", module="jrmsprop.keras", registered_name="jrmsprop>RMSprop"
    )
    assert saved_optimizer_config(jr)["registered_name"] == "jrmsprop>RMSprop"


def test_jrmsprop_keras_archive_is_not_read_as_keras3s_rmsprop(tmp_path: Path) -> None:
    """The state of jrmsprop.keras.RMSprop (TF 2.x arithmetic) is never silently handed to
    compat.keras3; ``jrmsprop_keras=True`` reads it and refuses Keras 3's own RMSprop."""
    jr = _with_optimizer_entry(
        tmp_path, "jr.keras", module="jrmsprop.keras", registered_name="jrmsprop>RMSprop"
    )
    with pytest.raises(
        ValueError,
        match=r"jr\.keras' was saved with jrmsprop\.keras\.RMSprop .*jrmsprop_keras=True"
        r".*jrmsprop\.rmsprop\(.*decay=c\['decay'\]\)",
    ):
        load_keras3_archive(jr, _zeros())
    a = load_keras3_archive(jr, _zeros(), jrmsprop_keras=True)
    b = load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", _zeros())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(
        ValueError, match=r"Keras 3's own keras\.optimizers\.RMSprop.*compat\.keras3"
    ):
        load_keras3_archive(SAVED / "keras3_plain.keras", _zeros(), jrmsprop_keras=True)
    custom = _with_optimizer_entry(
        tmp_path, "custom.keras", module=None, registered_name="mypkg>RMSprop"
    )
    with pytest.raises(ValueError, match=r"custom optimizer registered as 'mypkg>RMSprop'"):
        load_keras3_archive(custom, _zeros())
    with pytest.raises(TypeError, match=r"`jrmsprop_keras` must be True or False"):
        load_keras3_archive(jr, _zeros(), jrmsprop_keras="yes")


# ---- values the loaders refuse (state_from_keras2 / state_from_torch and the file loaders) ----


def _sd(square_avg=None, step=3, key=0) -> dict:
    sq = np.ones(2, np.float32) if square_avg is None else square_avg
    return {
        "state": {key: {"step": step, "square_avg": sq}},
        "param_groups": [{"params": [0], "momentum": 0, "centered": False}],
    }


def test_ragged_and_non_numeric_values_name_the_weight() -> None:
    p = [jnp.zeros(2), jnp.zeros((2, 2))]
    w = [np.int64(3), np.ones(2, np.float32), np.ones((2, 2), np.float32)]
    sfk = saved_state.state_from_keras2
    with pytest.raises(
        TypeError,
        match=r"^state_from_keras2: rms\[0\]: `weights\[1\]` \(for the parameter at \[0\]\) must "
        r"be an array of numbers, got a ragged nested list",
    ):
        sfk([w[0], [[1.0], [1.0, 2.0]], w[2]], p, momentum=False, centered=False)
    with pytest.raises(TypeError, match=r"rms\[1\]: `weights\[2\]` .* numbers, got None"):
        sfk([w[0], w[1], None], p, momentum=False, centered=False)
    with pytest.raises(TypeError, match=r"rms\[0\]: `weights\[1\]` .* numbers, got 'ab'"):
        sfk([w[0], "ab", w[2]], p, momentum=False, centered=False)
    for name in ("ab", "float32"):  # not read as a dtype
        with pytest.raises(
            TypeError,
            match=rf"^state_from_keras2: `params` leaf 0 \(the parameter at \[0\]\) is '{name}'; "
            "parameters must be arrays of floating-point",
        ):
            sfk(w, [name, jnp.zeros((2, 2))], momentum=False, centered=False)
    with pytest.raises(
        TypeError,
        match=r"^state_from_torch: square_avg\[0\]: `state_dict\['state'\]\[0\]\['square_avg'\]` "
        r".* got a ragged nested list",
    ):
        saved_state.state_from_torch(_sd([[1.0], [1.0, 2.0]]), [jnp.zeros(2)])
    with pytest.raises(TypeError, match=r"^state_from_torch: `params` leaf 0 .* is 'ab'"):
        saved_state.state_from_torch(_sd(), ["ab"])


def test_a_bfloat16_slot_is_numbers() -> None:
    p = [jnp.ones(2, jnp.bfloat16)]
    rms = np.asarray(jnp.asarray([0.5, 2.0], jnp.bfloat16))  # NumPy kind 'V'
    state = saved_state.state_from_keras2([1, rms], p, momentum=False, centered=False)
    np.testing.assert_array_equal(np.asarray(state.rms[0], np.float32), [0.5, 2.0])


def test_counts_beyond_int32_are_refused_not_clamped() -> None:
    """As RMSprop.set_weights: iterations / step must fit the int32 counter."""
    p = [jnp.zeros(2)]
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: `weights\[0\]` \(iterations\) must be at most 2147483647 "
        r".*got 1099511627776$",
    ):
        saved_state.state_from_keras2(
            [np.int64(2**40), np.ones(2)], p, momentum=False, centered=False
        )
    with pytest.raises(ValueError, match=r"`weights\[0\]` \(iterations\) .* got 2147483648$"):
        saved_state.state_from_keras2([2**31, np.ones(2)], p, momentum=False, centered=False)
    top = saved_state.state_from_keras2([2**31 - 1, np.ones(2)], p, momentum=False, centered=False)
    assert int(top.count) == 2**31 - 1
    for step, key in ((np.float32(2**40), 0), (2**40, "0")):
        with pytest.raises(
            ValueError,
            match=rf"^state_from_torch: `state_dict\['state'\]\[{key!r}\]\['step'\]` must be at "
            r"most 2147483647",
        ):
            saved_state.state_from_torch(_sd(step=step, key=key), p)


def test_slot_values_that_do_not_survive_the_conversion_are_refused() -> None:
    """A finite value beyond the slot dtype's range (it would become inf) and a negative rms are
    refused, naming the slot, the weight and the leaf; NaN and inf load as saved."""
    p = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    ones = [np.ones(2, np.float32), np.ones((2, 2), np.float32)]
    sfk = saved_state.state_from_keras2
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: rms\[0\]: `weights\[1\]` \(for the parameter at \['a'\]\) "
        r"holds 1e\+39 at index \[1\], beyond the range of the slot's dtype float32",
    ):
        sfk([1, np.array([1.0, 1e39]), ones[1]], p, momentum=False, centered=False)
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: momentum\[1\]: `weights\[4\]` \(for the parameter at "
        r"\['b'\]\) holds -1e\+39 at index \[0, 1\]",
    ):
        big = np.array([[0.0, -1e39], [0.0, 0.0]])
        sfk([1, *ones, ones[0], big], p, momentum=True, centered=False)
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: rms\[1\]: `weights\[2\]` \(for the parameter at \['b'\]\) "
        r"holds the negative value -0.5 at index \[1, 0\]; .* must be >= 0",
    ):
        sfk([1, ones[0], np.array([[1, 1], [-0.5, 1]])], p, momentum=False, centered=False)
    with pytest.raises(ValueError, match=r"rms\[0\]: .* the negative value -inf"):
        sfk([1, np.array([1, -np.inf]), ones[1]], p, momentum=False, centered=False)
    with pytest.raises(
        ValueError,
        match=r"^state_from_torch: square_avg\[0\]: `state_dict\['state'\]\[0\]\['square_avg'\]`"
        r" \(for the parameter at \[0\]\) holds the negative value -2.0",
    ):
        saved_state.state_from_torch(_sd(np.array([1.0, -2.0])), [jnp.zeros(2)])
    with pytest.raises(ValueError, match=r"square_avg\[0\]: .* holds 1e\+39 at index \[0\]"):
        saved_state.state_from_torch(_sd(np.array([1e39, 1.0])), [jnp.zeros(2)])
    # PyTorch keeps a complex parameter's square_avg as complex: both parts are averages.
    with pytest.raises(ValueError, match=r"square_avg\[0\]: .* negative value \(1-2j\)"):
        saved_state.state_from_torch(
            _sd(np.array([1 + 1j, 1 - 2j], np.complex64)), [jnp.zeros(2, jnp.complex64)]
        )
    # Momentum and mg may be negative; a framework's NaN / inf state loads as it is.
    state = sfk(
        [1, np.array([np.nan, np.inf]), ones[1], -ones[0], np.full((2, 2), -np.inf)],
        p,
        momentum=True,
        centered=False,
    )
    np.testing.assert_array_equal(np.asarray(state.rms["a"]), [np.nan, np.inf])
    np.testing.assert_array_equal(np.asarray(state.momentum["b"]), np.full((2, 2), -np.inf))
    sd = _sd(np.array([np.nan, np.inf], np.float32))
    np.testing.assert_array_equal(
        np.asarray(saved_state.state_from_torch(sd, [jnp.zeros(2)]).rms[0]), [np.nan, np.inf]
    )


def test_errors_while_loading_a_file_name_the_loader(tmp_path: Path) -> None:
    ints = [jnp.zeros(s, jnp.int32) for s in SHAPES]
    with pytest.raises(
        TypeError, match=r"^load_keras2_h5: '.*keras2_mom0\.h5': the parameter at \[0\] has dtype"
    ):
        load_keras2_h5(SAVED / "keras2_mom0.h5", ints)
    with pytest.raises(
        TypeError,
        match=r"^load_keras3_archive: '.*keras3_plain\.keras': the parameter at \[0\] has dtype",
    ):
        load_keras3_archive(SAVED / "keras3_plain.keras", ints)
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    path.write_bytes((SAVED / "keras2_mom0.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        f["optimizer_weights/RMSprop/iter:0"][()] = 2**40
    with pytest.raises(
        ValueError, match=r"^load_keras2_h5: '.*m\.h5': 'RMSprop/iter:0' \(iterations\) must be at"
    ):
        load_keras2_h5(path, _zeros())
    with h5py.File(path, "r+") as f:
        f["optimizer_weights/RMSprop/iter:0"][()] = 5
        f["optimizer_weights/RMSprop/dense/bias/rms:0"][1] = -1.0
    with pytest.raises(
        ValueError,
        match=r"^load_keras2_h5: '.*m\.h5': rms\[1\]: 'RMSprop/dense/bias/rms:0' \(for the "
        r"parameter at \[1\]\) holds the negative value -1.0 at index \[1\]",
    ):
        load_keras2_h5(path, _zeros())

    def negative_velocity(member: str, data: bytes) -> bytes:
        if member != "model.weights.h5":
            return data
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f:
            f["optimizer/vars/3"][0] = -4.0  # iteration, learning_rate, velocity 0, velocity 1
        return buffer.getvalue()

    archive = _rezip(SAVED / "keras3_plain.keras", tmp_path / "m.keras", negative_velocity)
    with pytest.raises(
        ValueError,
        match=r"^load_keras3_archive: '.*m\.keras': rms\[1\]: saved optimizer variable 3 \(for "
        r"the parameter at \[1\]\) holds the negative value -4.0 at index \[0\]",
    ):
        load_keras3_archive(archive, _zeros())
