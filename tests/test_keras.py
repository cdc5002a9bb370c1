"""``jrmsprop.keras.RMSprop``: TF 2.x Keras RMSprop arithmetic inside Keras 3 (JAX backend).

References, all independent of the code under test:

* golden files ``tests/golden/keras3_backend_*.npz``, recorded from the real
  ``tf_keras.optimizers.legacy.RMSprop`` by ``tests/golden/generate_keras3_backend.py``
  (parameters after every step, slots after the last), replayed here through the Keras 3
  optimizer's ``apply_gradients`` and ``stateless_apply``: equal bit for bit;
* :func:`jrmsprop.rmsprop` driven by hand with the same gradients (``fit``, gradient
  accumulation, save/load): equal bit for bit.

Needs Keras 3; skipped without it, or when Keras was already imported with another backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"  # must precede the first import of keras
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip(
        f"keras was already imported with the {keras.backend.backend()!r} backend",
        allow_module_level=True,
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jrmsprop  # noqa: E402
from jrmsprop.keras import RMSprop  # noqa: E402

pytestmark = [
    # Keras 3.15's Variable.numpy() (used by its get_config/saving) trips NumPy 2's copy warning.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

GOLDEN = sorted((Path(__file__).resolve().parent / "golden").glob("keras3_backend_*.npz"))
SLOTS = ("rms", "momentum", "mg")


class Case:
    """One golden file: TF 2.x (tf_keras legacy) RMSprop on fixed gradients."""

    def __init__(self, path: Path):
        with np.load(path) as data:
            self.meta = json.loads(str(data["meta"]))
            n = len(self.meta["shapes"])
            self.p0 = [data[f"p0_{i}"] for i in range(n)]
            self.grads = [data[f"g_{i}"] for i in range(n)]
            self.traj = [data[f"p_{i}"] for i in range(n)]
            self.slots = {s: [data[f"{s}_{i}"] for i in range(n)] for s in self.meta["slots"]}
            self.iterations = int(data["iterations"])
        self.kwargs = self.meta["kwargs"]
        self.steps = self.meta["steps"]

    def grads_at(self, step: int) -> list[jax.Array]:
        return [jnp.asarray(g[step]) for g in self.grads]


@pytest.fixture(params=GOLDEN, ids=lambda p: p.stem.removeprefix("keras3_backend_"))
def case(request) -> Case:
    return Case(request.param)


def test_golden_files_present():
    names = {p.stem for p in GOLDEN}
    assert len(names) == 8, names
    # the configurations the files must cover: momentum 0 / 0.9, centered, decay, large ε
    kinds = [Case(p).kwargs for p in GOLDEN]
    assert {k["momentum"] for k in kinds} == {0.0, 0.9}
    assert {k["centered"] for k in kinds} == {False, True}
    assert any(k.get("decay", 0.0) > 0 for k in kinds)
    assert any(k["epsilon"] >= 1.0 for k in kinds)


def _slot_values(opt: RMSprop, n: int) -> dict[str, list[np.ndarray]]:
    """The slots from ``opt.variables``, checking TF 2.x's names and block order."""
    variables = opt.variables
    assert variables[0].path.endswith("iteration")
    assert variables[1].path.endswith("learning_rate")
    names = [
        s
        for s in SLOTS
        if s == "rms" or (s == "momentum" and opt.momentum > 0) or (s == "mg" and opt.centered)
    ]
    assert len(variables) == 2 + n * len(names)
    out = {}
    for k, name in enumerate(names):
        block = variables[2 + k * n : 2 + (k + 1) * n]
        assert all(v.path.endswith(f"_{name}") for v in block), [v.path for v in block]
        out[name] = [np.asarray(v.value) for v in block]
    return out


def _functional_run(case: Case):
    """The same run through ``jrmsprop.rmsprop`` (jitted step): trajectory and final state."""
    tx = jrmsprop.rmsprop(**case.kwargs)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = [jnp.asarray(p) for p in case.p0]
    state = tx.init(params)
    traj = []
    for t in range(case.steps):
        params, state = step(params, state, case.grads_at(t))
        traj.append([np.asarray(p) for p in params])
    return traj, state


@pytest.mark.slow
def test_apply_gradients_matches_tf_keras_bit_for_bit(case: Case):
    variables = [keras.Variable(p) for p in case.p0]
    opt = RMSprop(**case.kwargs)
    functional, state = _functional_run(case)
    for t in range(case.steps):
        opt.apply_gradients(list(zip(case.grads_at(t), variables, strict=True)))
        for i, v in enumerate(variables):
            np.testing.assert_array_equal(np.asarray(v.value), case.traj[i][t], f"step {t} p{i}")
            np.testing.assert_array_equal(np.asarray(v.value), functional[t][i])
    slots = _slot_values(opt, len(variables))
    assert sorted(slots) == sorted(case.slots)
    for name, values in slots.items():
        for i, value in enumerate(values):
            np.testing.assert_array_equal(value, case.slots[name][i], f"slot {name} p{i}")
            np.testing.assert_array_equal(value, np.asarray(getattr(state, name)[i]))
    assert int(opt.iterations.value) == case.iterations == case.steps


def test_stateless_apply_matches_tf_keras_bit_for_bit(case: Case):
    variables = [keras.Variable(p) for p in case.p0]
    opt = RMSprop(**case.kwargs)
    opt.build(variables)
    opt_values = [v.value for v in opt.variables]
    params = [v.value for v in variables]
    step = jax.jit(opt.stateless_apply)
    for t in range(case.steps):
        params, opt_values = step(opt_values, case.grads_at(t), params)
        for i, p in enumerate(params):
            np.testing.assert_array_equal(np.asarray(p), case.traj[i][t], f"step {t} p{i}")
    # stateless: the Keras variables themselves did not move
    for v, p0 in zip(variables, case.p0, strict=True):
        np.testing.assert_array_equal(np.asarray(v.value), p0)
    assert int(opt_values[0]) == case.steps
    n = len(variables)
    for k, name in enumerate(case.meta["slots"]):
        for i in range(n):
            np.testing.assert_array_equal(
                np.asarray(opt_values[2 + k * n + i]), case.slots[name][i], f"slot {name} p{i}"
            )


@pytest.fixture
def keras_promotion():
    """Keras's own layers broadcast (bias add) and mix dtypes: relax the suite's strict JAX."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def _regression_data(seed: int = 0, n: int = 64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]], np.float32)
    y = (np.tanh(x @ w) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def _tiny_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(v.value) for v in model.trainable_variables]


@pytest.mark.slow
@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, True)])
def test_fit_equals_a_manual_jrmsprop_loop(momentum, centered, keras_promotion, monkeypatch):
    """``compile``/``fit`` trains exactly as ``jrmsprop.rmsprop`` on Keras's own gradients; its
    step goes through ``update_and_apply``, so on CPU the float32 variables take the one-pass
    kernel, and the numbers are still those of ``tx.update`` + ``apply_updates``."""
    from jrmsprop._src import cpu_kernel, transform

    kernel_calls = []
    fused_steps = cpu_kernel.fused_steps

    def counting_fused_steps(*args, **kwargs):
        kernel_calls.append(1)
        return fused_steps(*args, **kwargs)

    monkeypatch.setattr(cpu_kernel, "fused_steps", counting_fused_steps)
    # traced anew, whatever ran before in this process
    transform._leaf_step.clear_cache()
    cpu_kernel._apply_columns_with_kernel.clear_cache()
    x, y = _regression_data()
    hyper = dict(
        learning_rate=0.01, rho=0.9, momentum=momentum, epsilon=1e-7, centered=centered, decay=0.01
    )
    model = _tiny_model()
    model.compile(optimizer=RMSprop(**hyper), loss="mse")
    w0 = _weights(model)

    # Manual loop: the gradient of the compiled loss (Keras's own stateless loss), jrmsprop step.
    tx = jrmsprop.rmsprop(**hyper)
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)

    @jax.jit
    def step(params, state, xb, yb):
        (loss, _), grads = grad_fn(params, non_trainable, metrics, xb, yb, None)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params = [jnp.asarray(w) for w in w0]
    state = tx.init(params)
    batch, epochs = 16, 3
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            params, state, _ = step(params, state, x[s : s + batch], y[s : s + batch])

    assert not kernel_calls  # the manual loop's tx.update never takes the kernel
    history = model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    if cpu_kernel.available() and jax.default_backend() == "cpu":
        assert kernel_calls  # traced into Keras's train step
    opt = model.optimizer
    assert isinstance(opt, RMSprop)
    assert int(opt.iterations.value) == epochs * len(x) // batch == int(state.count)
    for got, want in zip(_weights(model), params, strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))
    n = len(params)
    slots = _slot_values(opt, n)
    assert ("momentum" in slots) == (momentum > 0) and ("mg" in slots) == centered
    for name, values in slots.items():
        for got, want in zip(values, getattr(state, name), strict=True):
            np.testing.assert_array_equal(got, np.asarray(want))


@pytest.mark.slow
def test_gradient_accumulation_counts_real_updates():
    """With ``gradient_accumulation_steps``, ``decay`` uses t = updates applied, not micro-steps."""
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(6)]
    hyper = dict(learning_rate=0.1, momentum=0.9, centered=True, decay=0.25)
    v = keras.Variable(p0)
    opt = RMSprop(**hyper, gradient_accumulation_steps=2)
    for g in grads:
        opt.apply_gradients([(jnp.asarray(g), v)])
    assert int(opt.iterations) == 3  # real updates (Keras divides its micro-step counter)

    tx = jrmsprop.rmsprop(**hyper)
    params = [jnp.asarray(p0)]
    state = tx.init(params)
    for k in range(0, 6, 2):  # Keras averages as (g_new + accumulated) / steps
        mean = (jnp.asarray(grads[k + 1]) + jnp.asarray(grads[k])) / 2
        updates, state = tx.update([mean], state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(v.value), np.asarray(params[0]))
    # and the decay really matters here: without it the result differs
    tx0 = jrmsprop.rmsprop(**{**hyper, "decay": 0.0})
    params0, state0 = [jnp.asarray(p0)], tx0.init([jnp.asarray(p0)])
    for k in range(0, 6, 2):
        mean = (jnp.asarray(grads[k + 1]) + jnp.asarray(grads[k])) / 2
        updates, state0 = tx0.update([mean], state0, params0)
        params0 = optax.apply_updates(params0, updates)
    assert not np.array_equal(np.asarray(params0[0]), np.asarray(params[0]))


def test_weight_decay_is_keras3s_decoupled_step_before_the_tf2_update():
    """``weight_decay`` (a Keras 3 option): ``p ← p − p·wd·lr`` by Keras, then the TF 2.x step."""
    rng = np.random.default_rng(7)
    p0 = rng.normal(size=(6,)).astype(np.float32)
    grads = [rng.normal(size=(6,)).astype(np.float32) for _ in range(5)]
    v = keras.Variable(p0)
    opt = RMSprop(0.05, momentum=0.9, weight_decay=0.1)
    for g in grads:
        opt.apply_gradients([(jnp.asarray(g), v)])

    tx = jrmsprop.rmsprop(0.05, momentum=0.9)
    params = [jnp.asarray(p0)]
    state = tx.init(params)
    lr, wd = jnp.float32(0.05), jnp.float32(0.1)
    for g in grads:
        params = [params[0] - params[0] * wd * lr]
        updates, state = tx.update([jnp.asarray(g)], state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(v.value), np.asarray(params[0]))


def test_config_round_trip_and_registration():
    given = dict(
        learning_rate=0.02,
        rho=0.8,
        momentum=0.5,
        epsilon=1e-4,
        centered=True,
        decay=0.01,
        clipnorm=1.0,
        name="my_rms",
    )
    opt = RMSprop(**given)
    config = opt.get_config()
    for key, value in given.items():
        want = pytest.approx(value, rel=1e-7) if isinstance(value, float) else value
        assert config[key] == want, key
    again = RMSprop.from_config(config)
    assert again.get_config() == config

    serialized = keras.optimizers.serialize(opt)
    assert serialized["registered_name"] == "jrmsprop>RMSprop"
    restored = keras.optimizers.deserialize(json.loads(json.dumps(serialized)))
    assert type(restored) is RMSprop
    assert restored.get_config() == config

    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    with_schedule = RMSprop(schedule, momentum=0.9)
    again = RMSprop.from_config(with_schedule.get_config())
    assert again.get_config() == with_schedule.get_config()


def test_schedule_is_evaluated_at_the_update_count():
    """A Keras schedule gives lr(t), t = updates applied, as TF 2.x did (then ``decay``)."""
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(4,)).astype(np.float32)
    grads = [rng.normal(size=(4,)).astype(np.float32) for _ in range(4)]
    v = keras.Variable(p0)
    opt = RMSprop(schedule, momentum=0.9, decay=0.1)
    for g in grads:
        opt.apply_gradients([(jnp.asarray(g), v)])

    tx = jrmsprop.rmsprop(
        # Keras's PiecewiseConstantDecay: values[0] while t <= boundaries[0]
        lambda t: jnp.where(t <= 2, jnp.float32(0.1), jnp.float32(0.01)),
        momentum=0.9,
        decay=0.1,
    )
    params = [jnp.asarray(p0)]
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update([jnp.asarray(g)], state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(v.value), np.asarray(params[0]))


@pytest.mark.slow
def test_save_and_load_model_continues_identically(tmp_path, keras_promotion):
    x, y = _regression_data(seed=1)
    model = _tiny_model(seed=1)
    model.compile(optimizer=RMSprop(0.01, momentum=0.9, centered=True, decay=0.01), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert type(loaded.optimizer) is RMSprop
    assert loaded.optimizer.get_config() == model.optimizer.get_config()

    # same variables in the same order (the layer-name prefixes of the paths may differ)
    def kinds(opt):
        return [(v.path.rsplit("_", 1)[-1], v.shape) for v in opt.variables]

    assert kinds(loaded.optimizer) == kinds(model.optimizer)
    assert [k for k, _ in kinds(model.optimizer)][2:] == ["rms"] * 4 + ["momentum"] * 4 + ["mg"] * 4
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    assert int(loaded.optimizer.iterations.value) == 4

    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(_weights(loaded), _weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        (dict(momentum=2.0), ValueError, "momentum"),
        (dict(momentum=-0.1), ValueError, "momentum"),
        (dict(epsilon=-1.0), ValueError, "epsilon"),
        (dict(centered="no"), TypeError, "centered"),
        (dict(centered=1), TypeError, "centered"),
        (dict(rho=1.5), ValueError, "rho"),
        (dict(decay=-0.1), ValueError, "decay"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(learning_rate="fast"), TypeError, "learning_rate"),
        (dict(momentum=lambda: 0.9), TypeError, "momentum"),
        (dict(epsilon="small"), TypeError, "epsilon"),
        (dict(weight_decay=-0.01), ValueError, "weight_decay"),
        (dict(clipnorm=float("nan")), ValueError, "clipnorm"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        RMSprop(**kwargs)


def test_integer_learning_rate_is_accepted_as_in_tf2():
    opt = RMSprop(learning_rate=1)
    assert opt.get_config()["learning_rate"] == 1.0


def test_other_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=jax"):
        RMSprop()


@pytest.mark.slow
def test_jrmsprop_import_does_not_need_keras():
    """``import jrmsprop`` never imports keras; without it, ``jrmsprop.keras`` says what to do."""
    code = (
        "import sys\n"
        "import jrmsprop\n"
        "assert 'keras' not in sys.modules, 'import jrmsprop imported keras'\n"
        "sys.modules['keras'] = None  # as if keras were not installed\n"
        "try:\n"
        "    import jrmsprop.keras\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout
    assert "pip install 'jrmsprop[keras]'" in out.stdout


def test_epsilon_none_or_zero_means_1e_7_as_in_tf2():
    """TF 2.x: ``self.epsilon = epsilon or backend.epsilon()``; get_config reports 1e-7."""
    for eps in (None, 0, 0.0):
        opt = RMSprop(0.1, epsilon=eps)
        assert opt.epsilon == 1e-7 and opt.get_config()["epsilon"] == 1e-7, eps
        assert RMSprop.from_config(opt.get_config()).get_config() == opt.get_config()
    # the step is that of epsilon=1e-7 (and of jrmsprop.rmsprop(epsilon=None))
    w0, w1 = (
        keras.Variable(np.array([1e-4], np.float32)),
        keras.Variable(np.array([1e-4], np.float32)),
    )
    RMSprop(0.1, epsilon=None).apply_gradients([(jnp.asarray([1e-6], jnp.float32), w0)])
    RMSprop(0.1, epsilon=1e-7).apply_gradients([(jnp.asarray([1e-6], jnp.float32), w1)])
    np.testing.assert_array_equal(np.asarray(w0.value), np.asarray(w1.value))


def test_epsilon_none_or_zero_config_matches_tf_keras():
    tf_keras = pytest.importorskip("tf_keras")
    for eps in (None, 0.0):
        theirs = tf_keras.optimizers.legacy.RMSprop(0.1, epsilon=eps).get_config()["epsilon"]
        assert RMSprop(0.1, epsilon=eps).get_config()["epsilon"] == theirs == 1e-7


# ---- .keras / .h5 files written by Keras 3, read back by jrmsprop.compat ----------------------


def _saved_model(tmp_path, opt, filename, seed=4):
    x, y = _regression_data(seed=seed, n=16)
    model = _tiny_model(seed=seed)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / filename
    model.save(path)
    return model, path


def _random_grads(model, seed, steps):
    rng = np.random.default_rng(seed)
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    return [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(steps)]


def _continue_functional(tx, params, state, grads):
    step = jax.jit(
        lambda p, s, g: (lambda u, s2: (optax.apply_updates(p, u), s2))(*tx.update(g, s, p))
    )
    for g in grads:
        params, state = step(params, state, [jnp.asarray(a) for a in g])
    return params, state


def _assert_continues_like(optimizer, model, tx, params, state, grads):
    """``tx`` from the loaded state, and ``optimizer`` on the model's variables, on the same
    gradients: bit for bit the same parameters. Returns the functional state."""
    params, state = _continue_functional(tx, params, state, grads)
    for g in grads:
        optimizer.apply_gradients(
            zip([jnp.asarray(a) for a in g], model.trainable_variables, strict=True)
        )
    for ours, v in zip(params, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(v.value))
    return state


@pytest.mark.slow
@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, True)])
def test_jrmsprop_keras_archive_loads_for_jrmsprop_rmsprop(
    tmp_path, keras_promotion, momentum, centered
):
    """A .keras archive of jrmsprop.keras.RMSprop is refused as Keras 3's RMSprop state, and with
    ``jrmsprop_keras=True`` continues under jrmsprop.rmsprop(..., decay) as Keras does."""
    from jrmsprop import compat

    opt = RMSprop(0.01, momentum=momentum, centered=centered, decay=0.05)
    model, path = _saved_model(tmp_path, opt, "jr.keras")
    saved = compat.saved_optimizer_config(path)
    assert saved["class_name"] == "RMSprop" and saved["registered_name"] == "jrmsprop>RMSprop"
    params = [jnp.asarray(v.value) for v in model.trainable_variables]
    with pytest.raises(ValueError, match=r"jrmsprop\.keras\.RMSprop.*jrmsprop_keras=True") as e:
        compat.load_keras3_archive(path, params)
    assert str(path) in str(e.value)
    state = compat.load_keras3_archive(path, params, jrmsprop_keras=True)
    assert int(state.count) == 4
    c = saved["config"]
    tx = jrmsprop.rmsprop(
        c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"], decay=c["decay"]
    )
    state = _assert_continues_like(
        model.optimizer, model, tx, params, state, _random_grads(model, 7, 3)
    )
    np.testing.assert_array_equal(state.rms[0], np.asarray(model.optimizer._rms[0].value))


@pytest.mark.slow
def test_keras3_h5_of_jrmsprop_keras_is_refused_with_the_right_reason(tmp_path, keras_promotion):
    from jrmsprop import compat

    _, path = _saved_model(tmp_path, RMSprop(0.01, momentum=0.9), "jr.h5")
    assert compat.saved_optimizer_config(path)["registered_name"] == "jrmsprop>RMSprop"
    for call in (
        lambda: compat.load_keras2_h5(path, [np.zeros(s) for s in [(3, 4), (4,), (4, 1), (1,)]]),
        lambda: compat.keras2_h5_weights(path),
    ):
        with pytest.raises(ValueError, match=r"jrmsprop\.keras\.RMSprop") as e:
            call()
        assert "inside the root always" not in str(e.value)
        assert "load_keras3_archive(path, params, jrmsprop_keras=True)" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("jr", [False, True])
def test_mixed_precision_archive_reads_the_inner_optimizer(tmp_path, keras_promotion, jr):
    """mixed_float16: Keras wraps RMSprop in a LossScaleOptimizer; its state is the inner one."""
    from jrmsprop import compat

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        opt = RMSprop(0.01, momentum=0.9) if jr else keras.optimizers.RMSprop(0.01, momentum=0.9)
        model, path = _saved_model(tmp_path, opt, "mixed.keras")
    finally:
        keras.config.set_dtype_policy(before)
    lso = model.optimizer
    assert type(lso).__name__ == "LossScaleOptimizer"
    params = [jnp.asarray(v.value) for v in model.trainable_variables]
    state = compat.load_keras3_archive(path, params, jrmsprop_keras=jr)
    inner = [np.asarray(v.value) for v in lso.inner_optimizer.variables]
    assert int(state.count) == int(inner[0])
    for ours, theirs in zip([*state.rms, *state.momentum], inner[2:], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    c = compat.saved_optimizer_config(path)["config"]
    if jr:
        tx = jrmsprop.rmsprop(
            c["learning_rate"],
            c["rho"],
            c["momentum"],
            c["epsilon"],
            c["centered"],
            decay=c["decay"],
        )
    else:
        tx = compat.keras3(c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"])
    # Keras's own continuation: the wrapped optimizer's eager step on the unscaled gradients
    # (the LossScaleOptimizer divides loss-scaled gradients by a power of 2, exactly; it is not
    # called itself because its eager apply fails on JAX, and its stateless_apply is one XLA
    # computation, which rounds Keras 3's RMSprop step differently from its eager step)
    _assert_continues_like(
        lso.inner_optimizer, model, tx, params, state, _random_grads(model, 8, 3)
    )
