"""Probe: a whole training step with packed parameters (``jrmsprop.pack``) against per-leaf ones.

``python benchmarks/packed_params_probe.py [--model mlp small] [--leaves 128 512] [--steps 20]``

The benchmark's ``jrmsprop/jit_packed_params`` row times the optimizer step alone, with the
gradients as inputs. This probe times what a user runs: one jitted step that takes the
gradient of a model's loss, updates and applies (params and state donated), built for

* ``per_leaf``: the parameters as a tree of arrays;
* ``packed``: ``jrmsprop.pack(params)``, the loss calling ``params.unpack()``.

Models (``--leaves`` counts parameter arrays):

* ``mlp``: ``leaves / 2`` layers ``h = tanh(h @ W + b)``, ``W`` of ``(32, 32)``, a batch of 16;
* ``small``: ``leaves`` vectors of 256, loss ``Σ_i Σ tanh(x · w_i)`` (no matrix products: the
  step is dominated by per-buffer costs, like the benchmark's ``small4096x256``).

Compile time is ``jax.jit(step).lower(...).compile()`` on a fresh function; the step time is the
median of ``--steps`` calls after one warm-up call. The two are interleaved, per-leaf first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

MODELS = ("mlp", "small")


def _model(name: str, leaves: int) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    import jax.numpy as jnp

    if name == "mlp":
        width, layers = 32, max(1, leaves // 2)
        params = {
            f"layer{i:05d}": {"w": jnp.full((width, width), 0.01), "b": jnp.full((width,), 0.01)}
            for i in range(layers)
        }
        x = jnp.ones((16, width))

        def loss(tree: Any) -> Any:
            h = x
            for i in range(layers):
                layer = tree[f"layer{i:05d}"]
                h = jnp.tanh(h @ layer["w"] + layer["b"][None, :])
            return jnp.mean(h**2)

        return params, loss
    params = {f"w{i:05d}": jnp.full((256,), 0.1) for i in range(leaves)}
    x = jnp.linspace(-1.0, 1.0, 256)

    def loss(tree: Any) -> Any:
        return sum(jnp.sum(jnp.tanh(x * w)) for w in tree.values())

    return params, loss


def measure(model: str, leaves: int, packed: bool, steps: int) -> tuple[float, float]:
    """(compile s, median step s) of one fresh training step."""
    import jax
    import numpy as np
    import optax

    import jrmsprop

    params, loss = _model(model, leaves)
    tx = jrmsprop.rmsprop(1e-3, momentum=0.9)
    if packed:
        params = jrmsprop.pack(params)
        objective = lambda p: loss(p.unpack())  # noqa: E731
    else:
        objective = loss
    state = tx.init(params)

    def train_step(p: Any, s: Any) -> Any:
        updates, s = tx.update(jax.grad(objective)(p), s, p)
        return optax.apply_updates(p, updates), s

    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, state).compile()
    compile_s = time.perf_counter() - start
    params, state = jax.block_until_ready(compiled(params, state))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        params, state = jax.block_until_ready(compiled(params, state))
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--leaves", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.leaves) or args.steps < 1:
        parser.error("--leaves must be >= 2 and --steps >= 1")
    print(f"{'model':<6} {'leaves':>6}  {'per-leaf compile':>16} {'packed':>8} {'ratio':>6}  "
          f"{'per-leaf step ms':>16} {'packed':>8} {'ratio':>6}")  # fmt: skip
    for model in args.model:
        for n in args.leaves:
            c0, s0 = measure(model, n, False, args.steps)
            c1, s1 = measure(model, n, True, args.steps)
            print(
                f"{model:<6} {n:>6}  {c0:>15.2f}s {c1:>7.2f}s {c1 / c0:>6.2f}  "
                f"{s0 * 1e3:>16.3f} {s1 * 1e3:>8.3f} {s1 / s0:>6.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
