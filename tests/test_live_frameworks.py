"""Live parity: jrmsprop against the installed TensorFlow / tf_keras / Keras 3 / PyTorch.

Random shapes, seeds and hyper-parameters that are *not* in the golden files (10 configurations
per framework, 30 steps each), run on the real optimizer and on the matching ``jrmsprop.compat``
preset with the same gradients, compared with the golden tolerance (``golden_io.RTOL`` /
``golden_io.ATOL``).  Needs the frameworks (``pip install .[frameworks]``); skipped without them.
Run with ``pytest -m frameworks tests/test_live_frameworks.py``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_io import GoldenCase, assert_close, atol_for, replay, state_slots

pytestmark = [
    pytest.mark.frameworks,
    # TensorFlow, Keras and torch emit their own deprecation chatter while running.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _module in ("tensorflow", "tf_keras", "keras", "torch"):
        pytest.importorskip(_module)


def _load_generator() -> Any:
    """``tests/golden/generate.py`` (its framework runners), imported by path."""
    name = "jrmsprop_golden_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parent / "golden" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()

N_CONFIGS = 10
STEPS = 30
FRAMEWORKS = ("keras2", "keras3", "torch", "tf1")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(math.log(lo), math.log(hi))))


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def random_spec(framework: str, index: int) -> Any:
    """A reproducible random configuration and problem for ``framework``."""
    seed = 7_000_003 + 1000 * FRAMEWORKS.index(framework) + index
    rng = np.random.default_rng(seed)
    lr = _round(_log_uniform(rng, 1e-3, 0.1))
    rho = _round(rng.uniform(0.5, 0.99))
    momentum = 0.0 if rng.random() < 0.4 else _round(rng.uniform(0.05, 0.95))
    centered = bool(rng.random() < 0.5)
    sparse_ok = framework in ("keras2", "tf1")
    n_dense = int(rng.integers(1, 4))
    shapes: list[tuple[int, ...]] = [()]
    sparse: list[bool] = [False]
    for _ in range(n_dense):
        shapes.append(tuple(int(d) for d in rng.integers(1, 7, size=int(rng.integers(1, 4)))))
        sparse.append(False)
    if sparse_ok and rng.random() < 0.5:
        shapes.append((int(rng.integers(3, 12)), *(int(d) for d in rng.integers(1, 4, size=1))))
        sparse.append(True)
    scales = tuple(_round(_log_uniform(rng, 1e-3, 10.0)) for _ in shapes)
    if framework == "keras2":
        kw: dict[str, Any] = dict(
            learning_rate=lr,
            rho=rho,
            momentum=momentum,
            epsilon=_round(_log_uniform(rng, 1e-8, 1.0)),
            centered=centered,
        )
        if rng.random() < 0.3:
            kw["decay"] = _round(rng.uniform(0.001, 0.05))
        elif rng.random() < 0.3:
            b = sorted(int(x) for x in rng.choice(np.arange(1, STEPS), 2, replace=False))
            kw["learning_rate"] = {
                "class_name": "PiecewiseConstantDecay",
                "config": {"boundaries": b, "values": [lr, _round(lr / 2), _round(lr / 5)]},
            }
    elif framework == "keras3":
        kw = dict(
            learning_rate=lr,
            rho=rho,
            momentum=momentum,
            epsilon=_round(_log_uniform(rng, 1e-8, 1.0)),
            centered=centered,
        )
        if rng.random() < 0.5:
            kw["weight_decay"] = _round(_log_uniform(rng, 1e-3, 0.2))
    elif framework == "torch":
        kw = dict(
            lr=lr,
            alpha=rho,
            eps=_round(_log_uniform(rng, 1e-8, 1.0)),
            weight_decay=0.0 if rng.random() < 0.5 else _round(_log_uniform(rng, 1e-3, 0.2)),
            momentum=momentum,
            centered=centered,
            maximize=bool(rng.random() < 0.3),
        )
    else:
        kw = dict(
            learning_rate=lr,
            decay=rho,
            momentum=momentum,
            epsilon=_round(_log_uniform(rng, 1e-10, 1e-2)),
            centered=centered,
        )
    return gen.Spec(
        name=f"live_{framework}_{index}",
        framework=framework,
        kwargs=kw,
        seed=seed,
        steps=STEPS,
        shapes=tuple(shapes),
        scales=scales,
        sparse=tuple(sparse),
    )


def _as_case(spec: Any, p0: list[np.ndarray], grads: list[Any], result: dict) -> GoldenCase:
    meta = {
        "name": spec.name,
        "framework": spec.framework,
        "kwargs": spec.kwargs,
        "steps": spec.steps,
        "shapes": [list(s) for s in spec.shapes],
        "sparse": list(spec.sparse),
        "transfer_at": None,
    }
    return GoldenCase(None, meta, p0, grads, result["traj"], result["slots"], None, None)


CASES = [(fw, i) for fw in FRAMEWORKS for i in range(N_CONFIGS)]


def test_anchor_values() -> None:
    """The anchors (Keras 2: 9.683772; Keras 3: [-0.5811, 0.4189, ...]) hold on the frameworks."""
    gen.check_anchors()


@pytest.mark.parametrize(("framework", "index"), CASES, ids=[f"{f}-{i}" for f, i in CASES])
def test_live_parity(framework: str, index: int) -> None:
    """A random configuration: jrmsprop's trajectory and slots match the framework's."""
    spec = random_spec(framework, index)
    p0, grads = gen.make_problem(spec)
    result = gen.RUNNERS[framework](spec, p0, grads)
    case = _as_case(spec, p0, grads, result)
    traj, state = replay(case)
    what = f"{spec.name} {spec.kwargs} shapes={spec.shapes} sparse={spec.sparse}"
    atol = atol_for(framework)
    assert_close(case.traj, traj, f"{what}: params", atol=atol)
    ours = state_slots(state)
    for name, theirs in case.slots.items():
        if ours[name] is None:  # TF1's momentum slot with momentum=0 (unused state)
            assert framework == "tf1" and name == "momentum" and spec.kwargs["momentum"] == 0
            continue
        if framework == "torch":
            # PyTorch's fused multiply-adds and inexact sqrt leave errors of the size of the
            # terms a slot accumulates (g/avg, (1−α)·g), which can cancel to a much smaller
            # value on one small leaf: the scale is the slot's over all leaves.
            theirs, mine = (
                [np.concatenate([np.ravel(x) for x in theirs])],
                [np.concatenate([np.ravel(np.asarray(x)) for x in ours[name]])],
            )
            assert_close(theirs, mine, f"{what}: {name} slot (all leaves)", atol=atol)
        else:
            assert_close(theirs, ours[name], f"{what}: {name} slot")


@pytest.mark.parametrize("synchronization", ["auto", "none", "on_write", "on_read"])
@pytest.mark.parametrize("trainable", [None, True, False])
def test_variable_trainable_follows_tf_variable(trainable: Any, synchronization: str) -> None:
    """``Variable``'s ``trainable`` rule is ``tf.Variable``'s, default included."""
    import tensorflow as tf

    from jrmsprop import Variable

    sync = getattr(tf.VariableSynchronization, synchronization.upper())
    kwargs = {} if trainable is None else {"trainable": trainable}
    expected = tf.Variable(1.0, synchronization=sync, **kwargs).trainable
    assert Variable(1.0, synchronization=synchronization, **kwargs).trainable is expected


# ---- errors and configs: jrmsprop speaks the framework's language -----------------------------


def _error(call: Any) -> Exception:
    try:
        call()
    except Exception as e:  # the framework's own exception, whatever its type
        return e
    raise AssertionError("no error raised")


def _assert_same_error(theirs: Exception, ours: Exception) -> None:
    assert type(ours) is type(theirs), (ours, theirs)
    assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))


TORCH_REFUSED = [
    dict(lr=-1),
    dict(lr=float("nan")),
    dict(eps=-1e-8),
    dict(momentum=-1),
    dict(momentum=-1.0),
    dict(weight_decay=-2),
    dict(alpha=-0.5),
]


@pytest.mark.parametrize("kwargs", TORCH_REFUSED, ids=str)
def test_torch_errors_are_torchs(kwargs: dict[str, Any]) -> None:
    """compat.torch raises torch.optim.RMSprop's exception with its message first."""
    import torch

    from jrmsprop import compat

    theirs = _error(lambda: torch.optim.RMSprop([torch.zeros(2, requires_grad=True)], **kwargs))
    _assert_same_error(theirs, _error(lambda: compat.torch(**kwargs)))


def test_torch_param_group_is_accepted_as_it_is() -> None:
    """``compat.torch(**param_group)`` with torch's own keys (and the literal test_compat uses)."""
    import torch
    from test_compat import TORCH_GROUP

    from jrmsprop import compat

    p = torch.zeros(2, requires_grad=True)
    group = torch.optim.RMSprop([p], lr=0.1, momentum=0.5, maximize=True).state_dict()
    group = group["param_groups"][0]
    assert group == TORCH_GROUP
    compat.torch(**group)


KERAS2_REFUSED = [
    dict(momentum=2.5),
    dict(momentum=-1),
    dict(lr=-1),
    dict(decay=-1),
    dict(clipnorm=-1),
    dict(clipvalue=-0.5),
    dict(global_clipnorm=-2),
    dict(clipnorm=1.0, global_clipnorm=1.0),
]


@pytest.mark.parametrize("kwargs", KERAS2_REFUSED, ids=str)
def test_wrapper_errors_are_keras2s(kwargs: dict[str, Any]) -> None:
    """jrmsprop.RMSprop raises tf_keras's legacy RMSprop exception with its message first."""
    import tf_keras

    from jrmsprop import RMSprop

    theirs = _error(lambda: tf_keras.optimizers.legacy.RMSprop(**kwargs))
    _assert_same_error(theirs, _error(lambda: RMSprop(**kwargs)))


def test_wrapper_unknown_keyword_is_keras2s() -> None:
    import tf_keras

    from jrmsprop import RMSprop

    theirs = _error(lambda: tf_keras.optimizers.legacy.RMSprop(foo=1))
    ours = _error(lambda: RMSprop(foo=1))
    assert type(ours) is type(theirs)
    # the same text, but for the order in which each prints the set of allowed keywords
    head, _, allowed = str(theirs).partition("{")
    assert str(ours).startswith(head) and ours.args[0].count("'") == allowed.count("'")


def test_lr_warns_as_keras2() -> None:
    """``lr``: tf_keras's legacy optimizer's UserWarning, and ``lr`` wins, in both."""
    import tf_keras

    from jrmsprop import RMSprop

    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        keras_opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=0.5, lr=0.25)
    with pytest.warns(UserWarning) as ours:
        opt = RMSprop(learning_rate=0.5, lr=0.25)
    want = [(w.category, str(w.message)) for w in theirs if "lr" in str(w.message)]
    assert [(w.category, str(w.message)) for w in ours] == want
    assert float(opt.learning_rate) == float(keras_opt.learning_rate) == 0.25


def test_keras3_takes_keras3_configs() -> None:
    """Keras 3's ``get_config()`` (and the literal test_compat uses) goes to compat.keras3 as is;
    an option jrmsprop does not reproduce is refused by name, and so is ``lr``."""
    import keras
    import tf_keras
    from test_compat import KERAS3_CONFIG, TF_KERAS_2_11_CONFIG

    from jrmsprop import compat

    config = keras.optimizers.RMSprop(0.01, momentum=0.9, weight_decay=0.004).get_config()
    # Keras numbers the names of optimizers built in one process (rm_sprop_9)
    assert {**config, "name": KERAS3_CONFIG["name"]} == KERAS3_CONFIG
    compat.keras3(**config)
    config = tf_keras.optimizers.RMSprop(0.01).get_config()
    assert config == TF_KERAS_2_11_CONFIG
    compat.keras3(**config)
    for option in (dict(clipnorm=1.0), dict(use_ema=True), dict(gradient_accumulation_steps=2)):
        (key,) = option
        config = keras.optimizers.RMSprop(**option).get_config()
        with pytest.raises(ValueError, match=f"`{key}`"):
            compat.keras3(**config)
    with pytest.raises(ValueError, match="lr"):  # Keras 3 has no `lr`; nor has compat.keras3
        keras.optimizers.RMSprop(lr=0.1)
    with pytest.raises(TypeError, match="'lr'"):
        compat.keras3(lr=0.1)
