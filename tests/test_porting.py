"""jrmsprop.compat.read_keras / read_torch / place / place_state: a trained model's weights and
optimizer state, from files written by the real frameworks, into flax nnx, equinox or a dict.

``tests/saved/porting/`` was written by ``tests/saved/generate_porting.py`` (tf_keras 2.21 ``.h5``,
Keras 3.15 ``.keras``, torch 2.13 state_dicts as ``.npz`` and ``.safetensors``): a 3x3 Conv2D
``conv`` (1 -> 2 channels) and a Dense / Linear ``fc`` (32 -> 3), trained with RMSprop(momentum=0.9,
centered=True). ``<framework>_next.npz`` holds the gradients of the next steps and the
framework's parameters after each. Placed and continued, jrmsprop gives those parameters: bit
for bit for Keras, to torch's tolerance for torch (its CPU sqrt is not correctly rounded).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("h5py")
eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

import jrmsprop  # noqa: E402
from jrmsprop import compat  # noqa: E402
from tests.golden_io import RTOL, atol_for  # noqa: E402

DIR = Path(__file__).resolve().parent / "saved" / "porting"
FILES = ["keras2.h5", "keras3.keras", "torch.npz", "torch.safetensors"]


def _read(file: str) -> compat.Saved:
    return (compat.read_torch if file.startswith("torch") else compat.read_keras)(DIR / file)


def _preset(saved: compat.Saved):
    c = saved.config
    if saved.framework == "torch":
        return compat.torch(**c)
    args = c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"]
    if saved.framework == "keras2":
        return jrmsprop.rmsprop(*args, decay=c["decay"])
    return compat.keras3(*args)


def _next(framework: str) -> list[tuple[dict, dict]]:
    """``[(gradients, parameters after the step)]`` by the framework's names."""
    with np.load(DIR / f"{framework}_next.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    if framework == "keras3":  # variable.path: "sequential/conv/kernel"
        arrays = {k.split("/", 1)[0] + "/" + k.split("/", 2)[2]: v for k, v in arrays.items()}
    steps = sorted({int(k.split("/")[0][1:]) for k in arrays})
    pick = lambda h: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(h + "/")}
    return [(pick(f"g{j}"), pick(f"p{j}")) for j in steps]


class NnxNet(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.conv = nnx.Conv(1, 2, (3, 3), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(32, 3, rngs=rngs)


class EqxNet(eqx.Module):
    conv: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self):
        k1, k2 = jax.random.split(jax.random.key(0))
        self.conv, self.fc = eqx.nn.Conv2d(1, 2, 3, key=k1), eqx.nn.Linear(32, 3, key=k2)


def _dict(saved: compat.Saved) -> dict:
    """A plain dict shaped as the saved weights, nested by layer: {"conv": {"kernel": ...}}."""
    out: dict = {}
    for name, a in saved.weights.items():
        layer, var = name.replace(".", "/").split("/")
        out.setdefault(layer, {})[var] = jnp.zeros(a.shape, a.dtype)
    return out


def _leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]


def _assert_equal(framework: str, got, want, what: str) -> None:
    for g, w in zip(_leaves(got), _leaves(want), strict=True):
        if framework == "torch":
            atol = atol_for("torch") * float(np.max(np.abs(w)))
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=atol, err_msg=what)
        else:
            np.testing.assert_array_equal(g, w, err_msg=what)


@pytest.mark.parametrize("target", ["nnx", "equinox", "dict"])
@pytest.mark.parametrize("file", FILES)
@pytest.mark.slow
def test_port_and_continue(file: str, target: str) -> None:
    """Weights and state placed by name; the next steps are the framework's."""
    saved = _read(file)
    fw, layout, tx = saved.framework, saved.layout, _preset(saved)
    assert saved.step == 3 and sorted(saved.weights) == sorted(saved.slots)
    make = {"nnx": NnxNet, "equinox": EqxNet, "dict": lambda: _dict(saved)}[target]
    model = compat.place(saved, make())
    _assert_equal(fw, model, compat.place(saved.weights, make(), source_layout=layout), "placed")
    if target == "nnx":
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        state = compat.place_state(saved, model, optimizer=opt)
        assert int(opt.step[...]) == int(state.count) == 3
    else:
        state = compat.place_state(saved, model)
    for j, (grads, after) in enumerate(_next(fw)):
        g = compat.place(grads, make(), source_layout=layout)
        if target == "nnx":
            opt.update(model, nnx.state(g, nnx.Param))
        else:
            params = eqx.filter(model, eqx.is_inexact_array)
            updates, state = tx.update(eqx.filter(g, eqx.is_inexact_array), state, params)
            model = eqx.apply_updates(model, updates)
        want = compat.place(after, make(), source_layout=layout)
        _assert_equal(fw, model, want, f"{file} -> {target}, after step {j + 1}")


def test_torch_files_agree() -> None:
    a, b = _read("torch.npz"), _read("torch.safetensors")
    assert a.config == b.config and a.step == b.step and sorted(a.weights) == sorted(b.weights)
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name])
        for slot in a.slots[name]:
            np.testing.assert_array_equal(a.slots[name][slot], b.slots[name][slot])


def test_names_layouts_and_dtypes() -> None:
    saved = _read("torch.npz")
    nested = _dict(saved)  # torch layout, torch names ("weight")
    keras_like = {
        k: {"kernel": v["weight"].T if k == "fc" else v["weight"], "bias": v["bias"]}
        for k, v in nested.items()
    }
    # a name with no match: both sides named
    with pytest.raises(
        ValueError,
        match=r"target's \['head/bias', 'head/weight'\] .* saved \['fc.bias', 'fc.weight'\]",
    ):
        compat.place(saved, {"conv": nested["conv"], "head": nested["fc"]})
    # renamed, it places
    placed = compat.place(
        saved,
        {"conv": nested["conv"], "head": nested["fc"]},
        names={"fc.weight": "head.weight", "fc.bias": "head.bias"},
    )
    np.testing.assert_array_equal(placed["head"]["weight"], saved.weights["fc.weight"])
    # a flax-layout kernel in a dict (layout: the source's) matches only transposed: said so
    keras_like["conv"]["kernel"] = jnp.zeros((3, 3, 1, 2))
    with pytest.raises(
        ValueError,
        match=r"'conv.weight' has shape \(2, 1, 3, 3\), the target's "
        r"\(3, 3, 1, 2\): it matches transposed: pass layout='keras'",
    ):
        compat.place(saved, keras_like)
    placed = compat.place(saved, keras_like, layout="keras")  # converted: (in, out), HWIO
    np.testing.assert_array_equal(placed["fc"]["kernel"], saved.weights["fc.weight"].T)
    np.testing.assert_array_equal(
        placed["conv"]["kernel"], saved.weights["conv.weight"].transpose(2, 3, 1, 0)
    )
    # and the other way: equinox (torch layout) told it is keras layout
    with pytest.raises(ValueError, match="as saved, not transposed: pass layout='torch'"):
        compat.place(saved, EqxNet(), layout="keras")
    # a dtype that differs is refused, not cast
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nested)
    with pytest.raises(ValueError, match="has dtype float32, the target's is bfloat16"):
        compat.place(saved, bf16)
    with pytest.raises(ValueError, match="layout must be one of"):
        compat.place(saved, nested, layout="channels_last")
    with pytest.raises(ValueError, match="no optimizer state"):
        compat.place_state(saved._replace(step=None), nested)
    # a missing slot is named
    slots = {**saved.slots, "fc.bias": {"square_avg": saved.slots["fc.bias"]["square_avg"]}}
    with pytest.raises(ValueError, match="no slot 'momentum_buffer' of 'fc.bias'"):
        compat.place_state(saved._replace(slots=slots), nested)


def test_read_torch_bad_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", **{"model/w": np.zeros(2), "stray": np.zeros(1)})
    with pytest.raises(ValueError, match="'stray' is neither model/<name>"):
        compat.read_torch(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", **{"model/w": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        compat.read_torch(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", **{"model/w": np.array(["a"])})
    with pytest.raises(ValueError, match="'model/w' holds <U1 data, not numbers"):
        compat.read_torch(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        compat.read_torch(tmp_path / "missing.npz")
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        compat.read_torch(tmp_path / "d.npz")
