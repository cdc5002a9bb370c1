"""jrmsprop._src.checkpoint: optimizer state read from files the real frameworks saved.

The files in ``tests/saved/`` were written by ``tests/saved/generate_saved.py`` with tf_keras 2.21
(legacy RMSprop, ``model.save("*.h5")``) and Keras 3.15 (``model.save("*.keras")``). Beside each
one, an ``.npz`` holds the parameters at the time of saving, the gradients of the next ``M``
steps and the framework's parameters after each of them. Loading the state and feeding jrmsprop
those gradients must give the framework's parameters bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

h5py = pytest.importorskip("h5py")

import jrmsprop  # noqa: E402
from jrmsprop._src import checkpoint  # noqa: E402
from jrmsprop._src.checkpoint import (  # noqa: E402
    keras2_h5_weights,
    load_keras2_h5,
    load_keras3_archive,
    saved_optimizer_config,
    state_from_keras2,
)
from jrmsprop._src.porting import state_from_torch  # noqa: E402

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


def _zeros():
    return [jnp.zeros(s) for s in SHAPES]


def _grads(arrays, j):
    return [jnp.asarray(arrays[f"g_{i}"][j]) for i in range(len(SHAPES))]


def _assert_trajectory(traj, arrays, name):
    for j, params in enumerate(traj):
        for i, p in enumerate(params):
            np.testing.assert_array_equal(
                p, arrays[f"p_{i}"][j], err_msg=f"{name}: param {i} after step {j + 1}"
            )


def _assert_same_leaves(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _rezip(src: Path, target: Path, edit) -> Path:
    """``src`` with each member's bytes passed through ``edit(name, data)``."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(target, "w") as zo:
        for member in zi.namelist():
            zo.writestr(member, edit(member, zi.read(member)))
    return target


def test_the_golden_set_is_there() -> None:
    assert KERAS2 == [
        "keras2_mom0",
        "keras2_mom0.9",
        "keras2_mom0.9_centered",
        "keras2_mom0_centered",
    ]
    assert KERAS3 == ["keras3_mom0.9_centered", "keras3_plain"]


def test_module_exports() -> None:
    assert set(checkpoint.__all__) == {
        "keras2_h5_weights",
        "load_keras2_h5",
        "load_keras3_archive",
        "saved_optimizer_config",
        "state_from_keras2",
    }


# ---- saved files continued bit for bit ---------------------------------------------------------

# framework: (loader, the preset from the saved config, the framework's slot names)
FRAMEWORKS = {
    "keras2": (
        load_keras2_h5,
        lambda c: jrmsprop.rmsprop(
            c["learning_rate"],
            c["rho"],
            c["momentum"],
            c["epsilon"],
            c["centered"],
            decay=c["decay"],
        ),
        {"rms": "rms", "momentum": "momentum", "mg": "mg"},
    ),
    "keras3": (
        load_keras3_archive,
        lambda c: jrmsprop.compat.keras3(
            c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"]
        ),
        {"rms": "velocity", "momentum": "momentum", "mg": "average_gradient"},
    ),
}


@pytest.mark.parametrize("name", KERAS2 + KERAS3)
@pytest.mark.slow
def test_saved_state_continues_bit_for_bit(name: str) -> None:
    """Loaded without TensorFlow, continued with the saved hyperparameters: the framework's
    parameters after every step, its step count and slots at the end."""
    tf_before = "tensorflow" in sys.modules
    meta, arrays = _case(name)
    load, preset, slot_names = FRAMEWORKS[meta["framework"]]
    path = SAVED / meta["saved"]
    params = _params(arrays)
    state = load(path, params)
    if not tf_before:
        assert "tensorflow" not in sys.modules
    kw = meta["kwargs"]
    assert state.count.dtype == jnp.int32 and int(state.count) == meta["fit_steps"]
    assert (state.momentum is None) == (kw.get("momentum", 0.0) == 0)
    assert (state.mg is None) == (not kw.get("centered", False))
    config = saved_optimizer_config(path)
    assert config["class_name"] == "RMSprop"
    tx = preset(config["config"])

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    traj = []
    for j in range(meta["m"]):
        params, state = step(params, state, _grads(arrays, j))
        traj.append([np.asarray(p) for p in params])
    _assert_trajectory(traj, arrays, name)
    assert int(state.count) == int(arrays["iterations"]) == meta["fit_steps"] + meta["m"]
    for slot, theirs in slot_names.items():
        ours = getattr(state, slot)
        if ours is None:
            assert f"slot_{theirs}_0" not in arrays
            continue
        for i, got in enumerate(ours):
            np.testing.assert_array_equal(got, arrays[f"slot_{theirs}_{i}"], err_msg=f"{slot} {i}")


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
        opt.apply_gradients(zip(_grads(arrays, j), variables, strict=True))
        traj.append([v.numpy() for v in variables])
    _assert_trajectory(traj, arrays, f"{name} (wrapper)")
    assert int(opt.iterations.numpy()) == int(arrays["iterations"])


def test_keras2_h5_weights_match_the_functional_state() -> None:
    path = SAVED / "keras2_mom0.9_centered.h5"
    state = load_keras2_h5(path, _zeros())
    w = keras2_h5_weights(path)
    for k, slot in enumerate([state.rms, state.momentum, state.mg]):
        for i in range(4):
            np.testing.assert_array_equal(slot[i], w[1 + 4 * k + i])


def test_keras2_params_as_a_dict_in_leaf_order() -> None:
    """Any pytree works when its leaves come in trainable-weights order."""
    path = SAVED / "keras2_mom0.9.h5"
    params = dict(zip(["a_kernel", "b_bias", "c_kernel", "d_bias"], _zeros(), strict=True))
    state = load_keras2_h5(path, params)
    np.testing.assert_array_equal(state.momentum["c_kernel"], keras2_h5_weights(path)[5 + 2])
    assert state.mg is None


def test_weights_only_h5_with_optimizer_group(tmp_path: Path) -> None:
    """Any HDF5 file with Keras' ``optimizer_weights`` group loads (no training_config needed)."""
    target = tmp_path / "weights.h5"
    with h5py.File(SAVED / "keras2_mom0.9.h5", "r") as src, h5py.File(target, "w") as dst:
        src.copy("optimizer_weights", dst)
    for a, b in zip(
        keras2_h5_weights(target), keras2_h5_weights(SAVED / "keras2_mom0.9.h5"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_keras3_unzipped_folder_and_compressed_archives(tmp_path: Path) -> None:
    """``model.save(..., zipped=False)`` writes the same files into a folder; deflated, bzip2 and
    lzma members load as stored ones."""
    src = SAVED / "keras3_mom0.9_centered.keras"
    expected = load_keras3_archive(src, _zeros())
    with zipfile.ZipFile(src) as z:
        z.extractall(tmp_path / "m.keras")
    _assert_same_leaves(load_keras3_archive(tmp_path / "m.keras", _zeros()), expected)
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        target = tmp_path / f"m{method}.keras"
        with zipfile.ZipFile(src) as zi, zipfile.ZipFile(target, "w", method) as zo:
            for member in zi.namelist():
                zo.writestr(member, zi.read(member))
        _assert_same_leaves(load_keras3_archive(target, _zeros()), expected)


def test_loading_needs_no_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TensorFlow, tf_keras, Keras and PyTorch made unimportable, both formats still load."""
    blocked = ("tensorflow", "tf_keras", "keras", "torch")
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    p = _zeros()
    assert int(load_keras2_h5(SAVED / "keras2_mom0.9_centered.h5", p).count) == 5
    assert len(keras2_h5_weights(SAVED / "keras2_mom0.h5")) == 5
    assert int(load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", p).count) == 5
    assert saved_optimizer_config(SAVED / "keras3_plain.keras")["class_name"] == "RMSprop"
    assert all(sys.modules[name] is None for name in blocked)


# ---- the optimizer's identity: another optimizer, jrmsprop.keras.RMSprop ----------------------


def _with_optimizer_entry(tmp_path: Path, name: str, **entry) -> Path:
    def edit(member: str, data: bytes) -> bytes:
        if member != "config.json":
            return data
        config = json.loads(data)
        config["compile_config"]["optimizer"].update(entry)
        return json.dumps(config).encode()

    return _rezip(SAVED / "keras3_mom0.9_centered.keras", tmp_path / name, edit)


def _jr(tmp_path: Path) -> Path:
    """keras3_mom0.9_centered.keras as if saved with jrmsprop.keras.RMSprop."""
    return _with_optimizer_entry(
        tmp_path, "jr.keras", module="jrmsprop.keras", registered_name="jrmsprop>RMSprop"
    )


def test_saved_optimizer_config_reports_the_registered_name(tmp_path: Path) -> None:
    for path in (SAVED / "keras3_plain.keras", SAVED / "keras2_mom0.9.h5"):
        saved = saved_optimizer_config(path)
        assert saved["class_name"] == "RMSprop" and saved["registered_name"] is None
    assert saved_optimizer_config(_jr(tmp_path))["registered_name"] == "jrmsprop>RMSprop"


def test_jrmsprop_keras_archive_is_read_with_jrmsprop_keras_only(tmp_path: Path) -> None:
    """``jrmsprop_keras=True`` reads the state of jrmsprop.keras.RMSprop (TF 2.x arithmetic),
    which is never silently handed to compat.keras3 (see IDENTITY for the refusals)."""
    a = load_keras3_archive(_jr(tmp_path), _zeros(), jrmsprop_keras=True)
    _assert_same_leaves(a, load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", _zeros()))


def test_another_optimizers_state_is_refused(tmp_path: Path) -> None:
    """Another optimizer, TF >= 2.11's RMSprop in an .h5 file, a custom one; jrmsprop.keras's
    state is never silently handed to compat.keras3, and Keras 3's own never read as it."""
    with pytest.raises(
        ValueError,
        match=r"keras2_adam\.h5' holds the state of a Adam optimizer "
        r"\(slots \['m', 'v'\]\), not RMSprop",
    ):
        load_keras2_h5(SAVED / "keras2_adam.h5", _zeros())
    with pytest.raises(ValueError, match=r"holds the state of a Adam optimizer"):
        keras2_h5_weights(SAVED / "keras2_adam.h5")
    with pytest.raises(
        ValueError, match=r"keras3_adam\.keras' holds the state of a Adam optimizer, not RMSprop"
    ):
        load_keras3_archive(SAVED / "keras3_adam.keras", _zeros())
    with pytest.raises(
        ValueError,
        match=r"TF >= 2.11 / Keras 3 optimizer .*load_keras2_h5 reads"
        r" the TF 2.x \(legacy\) RMSprop state",
    ):
        load_keras2_h5(SAVED / "keras2_new_optimizer.h5", _zeros())
    with pytest.raises(
        ValueError,
        match=r"jr\.keras' was saved with jrmsprop\.keras\.RMSprop .*jrmsprop_keras=True"
        r".*jrmsprop\.rmsprop\(.*decay=c\['decay'\]\)",
    ):
        load_keras3_archive(_jr(tmp_path), _zeros())
    with pytest.raises(
        ValueError, match=r"Keras 3's own keras\.optimizers\.RMSprop.*compat\.keras3"
    ):
        load_keras3_archive(SAVED / "keras3_plain.keras", _zeros(), jrmsprop_keras=True)
    custom = _with_optimizer_entry(
        tmp_path, "c.keras", module=None, registered_name="mypkg>RMSprop"
    )
    with pytest.raises(ValueError, match=r"custom optimizer registered as 'mypkg>RMSprop'"):
        load_keras3_archive(custom, _zeros())
    with pytest.raises(TypeError, match=r"`jrmsprop_keras` must be True or False"):
        load_keras3_archive(_jr(tmp_path), _zeros(), jrmsprop_keras="yes")


def test_adam_without_training_config_is_told_by_its_slots(tmp_path: Path) -> None:
    target = tmp_path / "adam.h5"
    with h5py.File(SAVED / "keras2_adam.h5", "r") as src, h5py.File(target, "w") as dst:
        src.copy("optimizer_weights", dst)
    with pytest.raises(
        ValueError,
        match=r"not RMSprop state: slot 'm' in 'Adam/dense_\d+/kernel/m:0' \(slots found: "
        r"\['m', 'v'\]",
    ):
        load_keras2_h5(target, _zeros())


# ---- files refused: missing, of the wrong kind, without optimizer state, other params -----------


def test_missing_files_and_files_of_another_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"load_keras2_h5: no such file: .*nope\.h5"):
        load_keras2_h5(tmp_path / "nope.h5", _zeros())
    with pytest.raises(FileNotFoundError, match=r"load_keras3_archive: no such file"):
        load_keras3_archive(tmp_path / "nope.keras", _zeros())
    with pytest.raises(FileNotFoundError, match=r"keras2_h5_weights: no such file"):
        keras2_h5_weights(tmp_path / "nope.h5")
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike, got int"):
        load_keras2_h5(3, _zeros())
    text = tmp_path / "m.h5"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"load_keras2_h5: '.*m\.h5' is not an HDF5 file$"):
        load_keras2_h5(text, _zeros())
    with pytest.raises(ValueError, match=r"load_keras3_archive: '.*m\.h5' is not a zip archive"):
        load_keras3_archive(text, _zeros())
    with pytest.raises(ValueError, match=r"neither an HDF5 file nor a .keras archive"):
        saved_optimizer_config(text)
    with pytest.raises(ValueError, match=r"not an HDF5 file \(it is a zip archive.*load_keras3_a"):
        load_keras2_h5(SAVED / "keras3_plain.keras", _zeros())
    with pytest.raises(ValueError, match=r"is not a zip archive .*HDF5.*use load_keras2_h5"):
        load_keras3_archive(SAVED / "keras2_mom0.h5", _zeros())
    with zipfile.ZipFile(tmp_path / "x.keras", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match=r"zip archive without \['config.json', 'model.weights"):
        load_keras3_archive(tmp_path / "x.keras", _zeros())


def test_files_without_optimizer_state_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"keras2_no_optimizer\.h5' holds no optimizer state "
        r"\(no 'optimizer_weights' group\).*include_optimizer=False",
    ):
        load_keras2_h5(SAVED / "keras2_no_optimizer.h5", _zeros())

    def uncompiled(member: str, data: bytes) -> bytes:  # a model never compiled
        if member != "config.json":
            return data
        config = json.loads(data)
        config.pop("compile_config")
        return json.dumps(config).encode()

    target = _rezip(SAVED / "keras3_plain.keras", tmp_path / "uncompiled.keras", uncompiled)
    with pytest.raises(ValueError, match=r"uncompiled\.keras' holds no optimizer state"):
        load_keras3_archive(target, _zeros())


def test_params_unlike_the_saved_variables_are_refused() -> None:
    """Another number of leaves, a leaf of another shape or not floating-point: refused naming
    the leaf and the saved variable."""
    with pytest.raises(
        ValueError,
        match=r"`params` has 3 leaves but the saved optimizer state is "
        r"for 4 variables \(dense_\d+/kernel, dense_\d+/bias, .*trainable_weights",
    ):
        load_keras2_h5(SAVED / "keras2_mom0.9.h5", _zeros()[:3])
    with pytest.raises(
        ValueError, match=r"`params` has 5 leaves but the saved optimizer state is for 4 variables"
    ):
        load_keras3_archive(SAVED / "keras3_mom0.9_centered.keras", [*_zeros(), jnp.zeros(1)])
    params = {"w": [jnp.zeros((4, 3)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros(2)]}
    for load, path, variable in (
        (load_keras2_h5, "keras2_mom0_centered.h5", r"dense_\d+/kernel"),
        (load_keras3_archive, "keras3_plain.keras", r"velocity 2"),
    ):
        with pytest.raises(
            ValueError,
            match=r"`params` leaf 2 \(\['w'\]\[2\]\) has shape \(2, 3\), "
            rf"but saved variable 2 \({variable}\) has shape \(3, 2\)",
        ):
            load(SAVED / path, params)
        ints = [jnp.zeros(s, jnp.int32) for s in SHAPES]
        with pytest.raises(
            TypeError,
            match=rf"^{load.__name__}: '.*{path}': the parameter at \[0\] has dtype",
        ):
            load(SAVED / path, ints)


def test_error_without_h5py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"needs h5py.*pip install 'jrmsprop\[h5\]'"):
        load_keras2_h5(SAVED / "keras2_mom0.h5", _zeros())
    with pytest.raises(ImportError, match=r"pip install 'jrmsprop\[h5\]'"):
        load_keras3_archive(SAVED / "keras3_plain.keras", _zeros())


# ---- damaged files: refused naming the function, the file and the part ------------------------


def test_error_damaged_files_name_the_function_and_path(tmp_path: Path) -> None:
    """A truncated .h5, a broken config.json, a model.weights.h5 that is not HDF5: a ValueError
    naming the function and the file, the library's own error chained."""
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((SAVED / "keras2_mom0.9_centered.h5").read_bytes()[:3000])
    for fn, args in (
        (load_keras2_h5, (truncated, _zeros())),
        (keras2_h5_weights, (truncated,)),
        (saved_optimizer_config, (truncated,)),
    ):
        with pytest.raises(ValueError, match=r"truncated\.h5'.*truncated or corrupt") as e:
            fn(*args)
        assert str(e.value).split(":")[0] == fn.__name__
        assert isinstance(e.value.__cause__, OSError)
    src = SAVED / "keras3_mom0.9_centered.keras"
    bad_config = _rezip(
        src, tmp_path / "bad_config.keras", lambda n, d: b"{oops" if n == "config.json" else d
    )
    for fn, args in (
        (load_keras3_archive, (bad_config, _zeros())),
        (saved_optimizer_config, (bad_config,)),
    ):
        with pytest.raises(
            ValueError,
            match=rf"^{fn.__name__}: .*bad_config\.keras': config\.json is not valid JSON",
        ) as e:
            fn(*args)
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


def _optimizer_config(**config) -> str:
    return json.dumps({"optimizer_config": {"class_name": "RMSprop", "config": config}})


def _attribute(group: str, name: str, value):
    def edit(f):
        f[group].attrs[name] = value

    return edit


def _edited_h5(tmp_path: Path, edit) -> Path:
    path = tmp_path / "edited.h5"
    path.write_bytes((SAVED / "keras2_mom0.9.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _edited_keras3(tmp_path: Path, edit, src: str = "keras3_mom0.9_centered") -> Path:
    """``src``.keras with its model.weights.h5 passed through ``edit(file)``."""

    def weights(member: str, data: bytes) -> bytes:
        if member != "model.weights.h5":
            return data
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f:
            edit(f)
        return buffer.getvalue()

    return _rezip(SAVED / f"{src}.keras", tmp_path / "edited.keras", weights)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{oops", r"attribute 'training_config' is not valid JSON"),
        (np.int64(5), r"attribute 'training_config' is not valid JSON .*not int64"),
        ("[1, 2]", r"the optimizer's entry in attribute 'training_config' is damaged: \[1, 2\]"),
        (json.dumps({"optimizer_config": {"class_name": 5}}), r"optimizer's class_name in "),
        (json.dumps({"optimizer_config": {"class_name": "R", "config": [1]}}), r"'s config in "),
        (_optimizer_config(centered="no"), r"optimizer's centered in attribute 'training_config'"),
        (_optimizer_config(momentum=-1), r"optimizer's momentum in attribute 'training_config'"),
    ],
    ids=["not JSON", "not text", "a list", "class_name", "config", "centered", "momentum"],
)
def test_a_damaged_training_config_is_reported(tmp_path: Path, value, expected: str) -> None:
    """Not JSON, or an optimizer entry with fields of the wrong type: every loader reports a
    damaged file naming the attribute (no silent load without the config)."""
    path = _edited_h5(tmp_path, _attribute("/", "training_config", value))
    for fn, args in (
        (load_keras2_h5, (path, _zeros())),
        (keras2_h5_weights, (path,)),
        (saved_optimizer_config, (path,)),
    ):
        with pytest.raises(ValueError, match=rf"^{fn.__name__}: '.*edited\.h5': .*{expected}"):
            fn(*args)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"class_name": 5}, "class_name"),
        ({"registered_name": 5}, "registered_name"),
        ({"config": [1]}, "config"),
        ({"config": {"momentum": "abc"}}, "momentum"),
        ({"config": {"momentum": float("nan")}}, "momentum"),
        ({"config": {"centered": "false"}}, "centered"),
    ],
    ids=["class_name", "registered_name", "config", "momentum", "NaN momentum", "centered"],
)
def test_a_damaged_keras3_optimizer_config_is_reported(
    tmp_path: Path, entry: dict, field: str
) -> None:
    path = _with_optimizer_entry(tmp_path, "damaged.keras", **entry)
    for fn, args in ((load_keras3_archive, (path, _zeros())), (saved_optimizer_config, (path,))):
        with pytest.raises(
            ValueError,
            match=rf"^{fn.__name__}: .*damaged\.keras': the optimizer's {field} in config\.json "
            "is damaged",
        ):
            fn(*args)


def test_an_oversized_config_json_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "_MAX_CONFIG_BYTES", 1000)
    with pytest.raises(ValueError, match=r"config\.json has \d+ bytes, too many for a model"):
        load_keras3_archive(SAVED / "keras3_plain.keras", _zeros())


def test_saved_slot_values_are_checked_naming_the_dataset(tmp_path: Path) -> None:
    """A count beyond int32 or a negative rms in a file: refused as by state_from_keras2, naming
    the dataset (Keras 2) or the optimizer variable (Keras 3)."""
    path = tmp_path / "m.h5"
    path.write_bytes((SAVED / "keras2_mom0.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        f["optimizer_weights/RMSprop/iter:0"][()] = 2**40
    with pytest.raises(
        ValueError,
        match=r"^load_keras2_h5: '.*m\.h5': '/optimizer_weights/RMSprop/iter:0' \(iterations\) "
        r"must be at",
    ):
        load_keras2_h5(path, _zeros())
    with h5py.File(path, "r+") as f:
        f["optimizer_weights/RMSprop/iter:0"][()] = 5
        f["optimizer_weights/RMSprop/dense/bias/rms:0"][1] = -1.0
    with pytest.raises(
        ValueError,
        match=r"^load_keras2_h5: '.*m\.h5': rms\[1\]: '/optimizer_weights/RMSprop/dense/bias/"
        r"rms:0' \(for the parameter at \[1\]\) holds the negative value -1.0 at index \[1\]",
    ):
        load_keras2_h5(path, _zeros())

    def negative_velocity(f):
        f["optimizer/vars/3"][0] = -4.0  # iteration, learning_rate, velocity 0, velocity 1

    archive = _edited_keras3(tmp_path, negative_velocity, "keras3_plain")
    with pytest.raises(
        ValueError,
        match=r"^load_keras3_archive: '.*edited\.keras': rms\[1\]: saved optimizer variable 3 "
        r"\(for the parameter at \[1\]\) holds the negative value -4.0 at index \[0\]",
    ):
        load_keras3_archive(archive, _zeros())


# ---- hostile and huge files: refused before any large allocation ------------------------------

HUGE = 2**36  # floats: 256 GiB if a loader read them
CHUNKED = {"shape": (HUGE,), "dtype": "f4", "chunks": (1024,)}  # declared, never written
RMS0 = r"'/optimizer_weights/RMSprop/dense_\d+/kernel/rms:0'"  # the first variable's rms slot


def _replacing(suffix: str, put):
    """An edit of an ``.h5`` file: the first optimizer dataset named ``...suffix`` is deleted and
    ``put(group, name)`` puts something else in its place."""

    def edit(f):
        group, names = f["optimizer_weights/RMSprop"], []
        group.visit(names.append)
        name = next(n for n in names if n.endswith(suffix))
        del group[name]
        put(group, name)

    return edit


def _replaced(suffix: str, **dataset):
    """``create_dataset(**dataset)`` in place of the dataset (a group without arguments)."""
    return _replacing(
        suffix, lambda g, n: g.create_dataset(n, **dataset) if dataset else g.create_group(n)
    )


def _linked(target):
    return _replacing("kernel/rms:0", lambda g, n: g.__setitem__(n, target))


def _virtual():
    layout = h5py.VirtualLayout(shape=(4, 3), dtype="f4")
    layout[:] = h5py.VirtualSource("elsewhere.h5", "x", shape=(4, 3))
    return _replacing("kernel/rms:0", lambda g, n: g.create_virtual_dataset(n, layout, fillvalue=0))


def _keras3_var(key: str, **dataset):
    def edit(f):
        del f[f"optimizer/vars/{key}"]
        if dataset:
            f.create_dataset(f"optimizer/vars/{key}", **dataset)
        else:
            f.create_group(f"optimizer/vars/{key}")

    return edit


def test_a_huge_declared_slot_is_refused_by_its_shape(tmp_path: Path) -> None:
    """An rms slot declaring 2**36 floats, chunked and never written: refused naming the dataset
    and both shapes before any read (which would try to allocate 256 GiB)."""
    path = _edited_h5(tmp_path, _replaced("kernel/rms:0", **CHUNKED))
    with pytest.raises(
        ValueError,
        match=r"^load_keras2_h5: .* `params` leaf 0 \(\[0\]\) has shape \(4, 3\), but saved "
        rf"variable 0 \(dense_\d+/kernel\) has shape \({HUGE},\) \(dataset {RMS0}\)",
    ):
        load_keras2_h5(path, _zeros())
    # Without `params`, the file bounds the read: it stores none of the declared bytes.
    with pytest.raises(
        ValueError,
        match=rf"^keras2_h5_weights: .*: dataset {RMS0} declares shape \({HUGE},\) "
        rf"\({4 * HUGE} bytes\) but the file stores 0 bytes of it",
    ):
        keras2_h5_weights(path)


@pytest.mark.parametrize(
    ("suffix", "dataset", "expected"),
    [
        (
            "kernel/momentum:0",
            CHUNKED,
            rf"holds float32 data of shape \({HUGE},\); expected floats shaped as {RMS0}, \(4, 3\)",
        ),
        (
            "kernel/momentum:0",
            {**CHUNKED, "compression": "gzip"},
            rf"holds float32 data of shape \({HUGE},\); expected floats shaped as {RMS0}",
        ),
        (
            "iter:0",
            {**CHUNKED, "dtype": "i8"},
            rf"holds int64 data of shape \({HUGE},\); expected an integer scalar",
        ),
    ],
    ids=["momentum", "gzip momentum", "counter"],
)
def test_huge_declared_momentum_and_counter_are_refused(
    tmp_path: Path, suffix: str, dataset: dict, expected: str
) -> None:
    path = _edited_h5(tmp_path, _replaced(suffix, **dataset))
    for fn, args in ((load_keras2_h5, (path, _zeros())), (keras2_h5_weights, (path,))):
        with pytest.raises(
            ValueError, match=rf"^{fn.__name__}: .*: dataset '/optimizer_weights/.*{expected}"
        ):
            fn(*args)


def test_huge_declared_keras3_variables_are_refused(tmp_path: Path) -> None:
    """Velocity (vars/2), momentum (vars/6), average_gradient (vars/10) and the iteration count
    (vars/0) of a Keras 3 archive, each declaring 2**36 values."""
    with pytest.raises(
        ValueError,
        match=rf"leaf 0 \(\[0\]\) has shape \(4, 3\), but saved variable 0 \(velocity 0\) has "
        rf"shape \({HUGE},\) \(dataset '/optimizer/vars/2'\)",
    ):
        load_keras3_archive(_edited_keras3(tmp_path, _keras3_var("2", **CHUNKED)), _zeros())
    for key in ("6", "10"):
        with pytest.raises(
            ValueError,
            match=rf"^load_keras3_archive: .*: dataset '/optimizer/vars/{key}' holds float32 data "
            rf"of shape \({HUGE},\); expected floats shaped as '/optimizer/vars/2', \(4, 3\)$",
        ):
            load_keras3_archive(_edited_keras3(tmp_path, _keras3_var(key, **CHUNKED)), _zeros())
    counter = _keras3_var("0", **{**CHUNKED, "dtype": "i8"})
    with pytest.raises(ValueError, match=r"'/optimizer/vars/0' holds int64 .* an integer scalar$"):
        load_keras3_archive(_edited_keras3(tmp_path, counter), _zeros())


UNSTORED = r"declares shape \(4, 3\) \(48 bytes\) but the file stores 0 bytes of it"
HOSTILE_H5 = {
    "strings": (_replaced("kernel/rms:0", data=np.full((4, 3), b"ab")), r"holds \|S2 data of"),
    "ints": (_replaced("kernel/rms:0", data=np.ones((4, 3), "i4")), r"holds int32 data of"),
    "bools": (_replaced("kernel/rms:0", data=np.ones((4, 3), bool)), r"holds bool data of"),
    "complex": (_replaced("kernel/rms:0", data=np.ones((4, 3), "c8")), r"holds complex64 da"),
    "float count": (_replaced("iter:0", data=np.float32(5)), r"iter:0' holds float32 data"),
    "vector count": (_replaced("iter:0", data=np.array([5, 6])), r"shape \(2,\); expected an"),
    "no dataspace": (_replaced("kernel/rms:0", data=h5py.Empty("f4")), r"rms:0' is .* not a dat"),
    "a group": (_replaced("kernel/rms:0"), r"rms:0' is listed but is not a dataset in '/optim"),
    "soft link": (_linked(h5py.SoftLink("/model_weights")), r"rms:0' is listed but is a link"),
    "external link": (_linked(h5py.ExternalLink("x.h5", "/y")), r"rms:0' is listed but is a l"),
    "never written": (_replaced("kernel/rms:0", shape=(4, 3), dtype="f4"), UNSTORED),
    "virtual": (_virtual(), UNSTORED),
    "external data": (
        _replaced("kernel/rms:0", shape=(4, 3), dtype="f4", external=[("secret.bin", 0, 48)]),
        UNSTORED,
    ),
    "names not a list": (
        _attribute("optimizer_weights", "weight_names", 5),
        r"attribute 'weight_names' of '/optimizer_weights' is not a list of names",
    ),
    "names as numbers": (
        _attribute("optimizer_weights", "weight_names", np.arange(3)),
        r"attribute 'weight_names' of '/optimizer_weights' is not a list of names",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_H5)
def test_a_hostile_h5_file_is_refused_naming_the_part(tmp_path: Path, case: str) -> None:
    """Wrong dataset types or shapes, links, groups, data outside the file or never written,
    malformed names: a ValueError naming the dataset or attribute from both loaders."""
    (tmp_path / "secret.bin").write_bytes(np.arange(12, dtype="f4").tobytes())
    edit, expected = HOSTILE_H5[case]
    path = _edited_h5(tmp_path, edit)
    for fn, args in ((load_keras2_h5, (path, _zeros())), (keras2_h5_weights, (path,))):
        with pytest.raises(ValueError, match=rf"^{fn.__name__}: '.*edited\.h5': .*{expected}"):
            fn(*args)


def _unexpected_var(f):
    f["optimizer/vars/²"] = np.zeros(1)


def _no_optimizer(f):
    del f["optimizer"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_keras3_var("3", data=np.array([b"a"] * 3)), r"'/optimizer/vars/3' holds \|S1 data"),
        (_keras3_var("3", data=np.ones(3, "i4")), r"'/optimizer/vars/3' holds int32 data"),
        (_keras3_var("3"), r"'3' is listed but is not a dataset in '/optimizer/vars'"),
        (_keras3_var("3", data=h5py.Empty("f4")), r"'3' is listed but is not a dataset"),
        (_unexpected_var, r"unexpected optimizer variables \['0', '1', '10', .*'²'\]"),
        (_no_optimizer, r"holds no optimizer state \(no 'optimizer/vars' in the weights\)"),
    ],
    ids=["strings", "ints", "a group", "no dataspace", "unexpected name", "no optimizer"],
)
def test_a_hostile_keras3_archive_is_refused_naming_the_part(
    tmp_path: Path, edit, expected: str
) -> None:
    with pytest.raises(ValueError, match=rf"^load_keras3_archive: '.*edited\.keras'.*{expected}"):
        load_keras3_archive(_edited_keras3(tmp_path, edit), _zeros())


def test_archive_members_are_read_by_name_only(tmp_path: Path) -> None:
    """A member named ``../x`` is neither extracted nor read; one named ``../model.weights.h5``
    is not the weights; an unknown compression method is a damaged archive."""
    src = SAVED / "keras3_mom0.9_centered.keras"
    extra = tmp_path / "extra.keras"
    shutil.copy(src, extra)
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("../escaped.txt", b"x")
    assert int(load_keras3_archive(extra, _zeros()).count) == 5
    assert not (tmp_path.parent / "escaped.txt").exists()
    moved = tmp_path / "moved.keras"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(moved, "w") as zo:
        for member in zi.namelist():
            zo.writestr(member.replace("model.weights", "../model.weights"), zi.read(member))
    with pytest.raises(ValueError, match=r"zip archive without \['model\.weights\.h5'\]"):
        load_keras3_archive(moved, _zeros())
    raw = bytearray(src.read_bytes())
    for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # every member's method
        i = raw.find(signature)
        while i >= 0:
            raw[i + at : i + at + 2] = (99).to_bytes(2, "little")
            i = raw.find(signature, i + 4)
    unknown = tmp_path / "unknown.keras"
    unknown.write_bytes(bytes(raw))
    with pytest.raises(
        ValueError, match=r"the zip archive could not be read .*compression method is not support"
    ):
        load_keras3_archive(unknown, _zeros())


# Loads a small archive (JAX and h5py warm), then each big one, printing the growth of the peak
# RSS in MiB over each.
_PEAK_RSS = """
import resource, sys
import jax.numpy as jnp
from jrmsprop._src.checkpoint import load_keras3_archive

params = [jnp.zeros(s) for s in [(4, 3), (3,), (3, 2), (2,)]]
small = load_keras3_archive(sys.argv[1], params)
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state = load_keras3_archive(path, params)
    assert int(state.count) == int(small.count)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def _archive_with_a_big_layer(tmp_path: Path, size: int, compression: int) -> Path:
    """keras3_plain.keras whose model.weights.h5 holds a layer of ``size`` bytes of zeros before
    the optimizer state (a zip bomb when deflated, or a big model with a small trained part)."""
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(SAVED / "keras3_plain.keras") as z:
        config, saved = z.read("config.json"), z.read("model.weights.h5")
    with h5py.File(io.BytesIO(saved), "r") as src, h5py.File(weights, "w") as dst:
        # One element written: the space is allocated (sparse on disk) ahead of the state.
        dst.create_dataset("layers/big/vars/0", shape=(size // 4,), dtype="f4")[-1] = 0.0
        src.copy("optimizer", dst)
    target = tmp_path / f"big_{compression}.keras"
    with zipfile.ZipFile(target, "w", compression, compresslevel=1) as z:
        z.writestr("config.json", config)
        with weights.open("rb") as src, z.open("model.weights.h5", "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    weights.unlink()
    return target


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.slow
def test_a_big_weights_member_is_read_in_place(tmp_path: Path) -> None:
    """A model.weights.h5 inflating to 256 MiB from ~1 MB (deflated: a zip bomb) and one of
    128 MiB stored as Keras writes it, each holding a few hundred bytes of optimizer state:
    loading either raises the peak RSS by far less than the member (reading it whole took
    twice the member; 1 GiB behaves the same, only slower to build)."""
    deflated = _archive_with_a_big_layer(tmp_path, 256 << 20, zipfile.ZIP_DEFLATED)
    assert deflated.stat().st_size < 2 << 20
    stored = _archive_with_a_big_layer(tmp_path, 128 << 20, zipfile.ZIP_STORED)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(SAVED / "keras3_plain.keras"), deflated, stored],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(SAVED.parents[1])},
    )
    assert out.returncode == 0, out.stderr
    growth_mib = [int(line) for line in out.stdout.split()]
    assert len(growth_mib) == 2 and max(growth_mib) < 32, growth_mib


def test_a_zip_bomb_beyond_keras_limits_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed member inflating past 4 GiB and 100x its size is refused, as Keras 3 does
    (the 4 GiB scaled down to 1 MiB here)."""
    monkeypatch.setattr(checkpoint, "_MAX_INFLATED_BYTES", 1 << 20)
    bomb = _archive_with_a_big_layer(tmp_path, 8 << 20, zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match=r"model\.weights\.h5 inflates 8\d{6} bytes \(a zip bomb"):
        load_keras3_archive(bomb, _zeros())


# ---- state_from_keras2 / state_from_torch: values refused, values kept -------------------------


def _sd(square_avg=None, step=3, key=0) -> dict:
    sq = np.ones(2, np.float32) if square_avg is None else square_avg
    return {
        "state": {key: {"step": step, "square_avg": sq}},
        "param_groups": [{"params": [0], "momentum": 0, "centered": False}],
    }


def _sfk(weights, params, momentum=False):  # state_from_keras2 without mg
    return state_from_keras2(weights, params, momentum=momentum, centered=False)


_D = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
_ONES = [np.ones(2, np.float32), np.ones((2, 2), np.float32)]


def test_ragged_and_non_numeric_values_name_the_weight() -> None:
    p = [jnp.zeros(2), jnp.zeros((2, 2))]
    w = [np.int64(3), np.ones(2, np.float32), np.ones((2, 2), np.float32)]
    with pytest.raises(
        TypeError,
        match=r"^state_from_keras2: rms\[0\]: `weights\[1\]` \(for the parameter at \[0\]\) must "
        r"be an array of numbers, got a ragged nested list",
    ):
        _sfk([w[0], [[1.0], [1.0, 2.0]], w[2]], p)
    with pytest.raises(TypeError, match=r"rms\[1\]: `weights\[2\]` .* numbers, got None"):
        _sfk([w[0], w[1], None], p)
    with pytest.raises(TypeError, match=r"rms\[0\]: `weights\[1\]` .* numbers, got 'ab'"):
        _sfk([w[0], "ab", w[2]], p)
    for name in ("ab", "float32"):  # not read as a dtype
        with pytest.raises(
            TypeError,
            match=rf"^state_from_keras2: `params` leaf 0 \(the parameter at \[0\]\) is '{name}'; "
            "parameters must be arrays of floating-point",
        ):
            _sfk(w, [name, jnp.zeros((2, 2))])
    with pytest.raises(
        TypeError,
        match=r"^state_from_torch: square_avg\[0\]: `state_dict\['state'\]\[0\]\['square_avg'\]` "
        r".* got a ragged nested list",
    ):
        state_from_torch(_sd([[1.0], [1.0, 2.0]]), [jnp.zeros(2)])
    with pytest.raises(TypeError, match=r"^state_from_torch: `params` leaf 0 .* is 'ab'"):
        state_from_torch(_sd(), ["ab"])


def test_counts_beyond_int32_are_refused_not_clamped() -> None:
    """As RMSprop.set_weights: iterations / step must fit the int32 counter."""
    p = [jnp.zeros(2)]
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: `weights\[0\]` \(iterations\) must be at most 2147483647 "
        r".*got 1099511627776$",
    ):
        _sfk([np.int64(2**40), np.ones(2)], p)
    with pytest.raises(ValueError, match=r"`weights\[0\]` \(iterations\) .* got 2147483648$"):
        _sfk([2**31, np.ones(2)], p)
    for step, key in ((np.float32(2**40), 0), (2**40, "0")):
        with pytest.raises(
            ValueError,
            match=rf"^state_from_torch: `state_dict\['state'\]\[{key!r}\]\['step'\]` must be at "
            r"most 2147483647",
        ):
            state_from_torch(_sd(step=step, key=key), p)


def test_slot_values_that_do_not_survive_the_conversion_are_refused() -> None:
    """A finite value beyond the slot dtype's range (it would become inf) and a negative rms are
    refused, naming the slot, the weight and the leaf."""
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: rms\[0\]: `weights\[1\]` \(for the parameter at \['a'\]\) "
        r"holds 1e\+39 at index \[1\], beyond the range of the slot's dtype float32",
    ):
        _sfk([1, np.array([1.0, 1e39]), _ONES[1]], _D)
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: momentum\[1\]: `weights\[4\]` \(for the parameter at "
        r"\['b'\]\) holds -1e\+39 at index \[0, 1\]",
    ):
        _sfk([1, *_ONES, _ONES[0], np.array([[0.0, -1e39], [0.0, 0.0]])], _D, momentum=True)
    with pytest.raises(
        ValueError,
        match=r"^state_from_keras2: rms\[1\]: `weights\[2\]` \(for the parameter at \['b'\]\) "
        r"holds the negative value -0.5 at index \[1, 0\]; .* must be >= 0",
    ):
        _sfk([1, _ONES[0], np.array([[1, 1], [-0.5, 1]])], _D)
    with pytest.raises(ValueError, match=r"rms\[0\]: .* the negative value -inf"):
        _sfk([1, np.array([1, -np.inf]), _ONES[1]], _D)
    with pytest.raises(
        ValueError,
        match=r"^state_from_torch: square_avg\[0\]: `state_dict\['state'\]\[0\]\['square_avg'\]`"
        r" \(for the parameter at \[0\]\) holds the negative value -2.0",
    ):
        state_from_torch(_sd(np.array([1.0, -2.0])), [jnp.zeros(2)])
    with pytest.raises(ValueError, match=r"square_avg\[0\]: .* holds 1e\+39 at index \[0\]"):
        state_from_torch(_sd(np.array([1e39, 1.0])), [jnp.zeros(2)])
    # PyTorch keeps a complex parameter's square_avg as complex: both parts are averages.
    with pytest.raises(ValueError, match=r"square_avg\[0\]: .* negative value \(1-2j\)"):
        state_from_torch(
            _sd(np.array([1 + 1j, 1 - 2j], np.complex64)), [jnp.zeros(2, jnp.complex64)]
        )


def test_values_the_loaders_keep() -> None:
    """The largest int32 count; a bfloat16 slot (NumPy kind 'V'); momentum and mg may be
    negative; a framework's NaN / inf state loads as it is."""
    top = _sfk([2**31 - 1, np.ones(2)], [jnp.zeros(2)])
    assert int(top.count) == 2**31 - 1
    rms = np.asarray(jnp.asarray([0.5, 2.0], jnp.bfloat16))
    state = _sfk([1, rms], [jnp.ones(2, jnp.bfloat16)])
    np.testing.assert_array_equal(np.asarray(state.rms[0], np.float32), [0.5, 2.0])
    state = _sfk(
        [1, np.array([np.nan, np.inf]), _ONES[1], -_ONES[0], np.full((2, 2), -np.inf)], _D, True
    )
    np.testing.assert_array_equal(np.asarray(state.rms["a"]), [np.nan, np.inf])
    np.testing.assert_array_equal(np.asarray(state.momentum["b"]), np.full((2, 2), -np.inf))
    sd = _sd(np.array([np.nan, np.inf], np.float32))
    np.testing.assert_array_equal(
        np.asarray(state_from_torch(sd, [jnp.zeros(2)]).rms[0]), [np.nan, np.inf]
    )
