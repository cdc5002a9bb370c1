"""Strict JAX for the whole test-suite (in the spirit of optimistix's conftest).

* 8 simulated CPU devices, for the pmap / sharding tests (must be set before JAX starts);
* rank promotion and implicit dtype promotion raise instead of silently broadcasting/upcasting;
* warnings are errors (pyproject ``filterwarnings = error``);
* a persistent compilation cache in ``out/xla-cache``: the tests build the same transformation on
  the same shapes many times (a new jit wrapper each time, in both xdist workers), and an
  identical program is compiled once.
"""

from __future__ import annotations

import os

_DEVICES = "--xla_force_host_platform_device_count=8"
if _DEVICES not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICES).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
jax.config.update("jax_compilation_cache_dir", os.path.join(_ROOT, "out", "xla-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _enable_x64():
    if hasattr(jax, "enable_x64"):  # jax >= 0.8
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


@pytest.fixture
def x64():
    """Runs the test with 64-bit floats enabled."""
    with _enable_x64():
        yield
