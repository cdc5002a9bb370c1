"""The worker that tests/test_multiprocess.py starts; docs/guides/multi_host.md shows this code.

Three roles, each its own Python process (the device count is fixed when JAX starts):

* ``train``: one of several processes joined by ``jax.distributed.initialize`` on localhost,
  CPU collectives over gloo. The parameters and the optimizer state are sharded over the devices
  of *all* processes; ``STEPS_BEFORE`` steps are trained and the state is checkpointed with orbax
  (every process writes its own shards).
* ``resume``: a single process with a different device count restores that checkpoint into its
  own layout and trains ``STEPS_AFTER`` more steps.
* ``reference``: a single process trains ``STEPS_BEFORE + STEPS_AFTER`` steps uninterrupted.

Each single-process role writes its arrays to an ``.npz`` file for the test to compare bit for bit.

Only the standard library is imported at module level: pytest imports this file (doctest
collection), and JAX must not be configured in the pytest process.
"""

from __future__ import annotations

import argparse

STEPS_BEFORE = 3  # steps trained by the two processes before the checkpoint
STEPS_AFTER = 3  # steps trained by the single process after the restore
ROWS, COLS, BATCH = 12, 4, 16  # w is (ROWS, COLS), sharded along ROWS: 12 splits over 1, 2, 3, 4


def setup_jax(num_devices):
    """Configures JAX before it starts: CPU devices, gloo collectives, the tests' strictness."""
    import warnings

    warnings.simplefilter("error")  # as pyproject's filterwarnings = ["error"]
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", num_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_numpy_rank_promotion", "raise")  # as tests/conftest.py
    jax.config.update("jax_numpy_dtype_promotion", "strict")


# --- the recipe: everything below runs unchanged on 1 process or many -------------------------


def data():
    """Fixed inputs and targets, the same in every process."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, COLS)).astype(np.float32)
    y = rng.standard_normal((BATCH, ROWS)).astype(np.float32)
    params = {
        "w": (0.5 * rng.standard_normal((ROWS, COLS))).astype(np.float32),
        "b": np.zeros((ROWS,), np.float32),
    }
    return params, x, y


def make_training():
    """The mesh over every device of every process, the shardings, init and the jitted step."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jrmsprop

    mesh = Mesh(np.array(jax.devices()), ("d",))  # jax.devices(): all processes' devices
    replicated = NamedSharding(mesh, P())
    param_shardings = {"w": NamedSharding(mesh, P("d", None)), "b": replicated}
    tx = jrmsprop.rmsprop(0.01, momentum=0.9, centered=True)
    # Every slot is laid out like its parameter; the step count is replicated.
    opt_shardings = jrmsprop.RMSpropState(
        count=replicated, rms=param_shardings, momentum=param_shardings, mg=param_shardings
    )

    def loss_fn(params, x, y):
        pred = jnp.tanh(x @ params["w"].T + params["b"][None, :])
        return jnp.mean((pred - y) ** 2)

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    init = jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=opt_shardings)
    step = jax.jit(
        train_step,
        in_shardings=(param_shardings, opt_shardings, replicated, replicated),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 1),
    )
    return init, step, param_shardings, opt_shardings, replicated


def to_global(tree, shardings):
    """Host numpy arrays (the same in every process) -> global jax.Arrays with these shardings."""
    import jax

    def put(a, sharding):
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree, shardings)


def abstract_like(init, params, shardings):
    """The restore target: shapes, dtypes and the shardings wanted in *this* process."""
    import jax

    return jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(init, params),
        shardings,
    )


# --- the three roles ---------------------------------------------------------------------------


def train(args):
    """One of the processes: initialize, shard, train STEPS_BEFORE steps, checkpoint."""
    setup_jax(args.devices)
    import jax

    jax.distributed.initialize(
        coordinator_address=f"localhost:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=60,
    )
    import orbax.checkpoint as ocp

    assert jax.process_count() == args.num_processes
    assert jax.device_count() == args.num_processes * args.devices

    init, step, param_shardings, _, replicated = make_training()
    host_params, x, y = data()
    params = to_global(host_params, param_shardings)
    x, y = to_global((x, y), (replicated, replicated))
    opt_state = init(params)
    for _ in range(STEPS_BEFORE):
        params, opt_state, loss = step(params, opt_state, x, y)

    checkpointer = ocp.StandardCheckpointer()  # every process calls save; each writes its shards
    checkpointer.save(args.ckpt, {"params": params, "opt_state": opt_state})
    checkpointer.wait_until_finished()
    checkpointer.close()
    print(f"process {jax.process_index()}: saved after {STEPS_BEFORE} steps, loss {loss}")
    jax.distributed.shutdown()


def resume(args):
    """A single process with another device count: restore into its layout, train on."""
    setup_jax(args.devices)
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    init, step, param_shardings, opt_shardings, replicated = make_training()
    host_params, x, y = data()
    target = {
        "params": abstract_like(lambda p: p, host_params, param_shardings),
        "opt_state": abstract_like(init, host_params, opt_shardings),
    }
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(args.ckpt, target)
    params, opt_state = restored["params"], restored["opt_state"]
    assert params["w"].sharding == param_shardings["w"]  # resharded: 4 devices -> this many
    saved = {"restored": jax.device_get(state(params, opt_state))}  # before step donates them
    x, y = to_global((x, y), (replicated, replicated))
    for _ in range(STEPS_AFTER):
        params, opt_state, _ = step(params, opt_state, x, y)
    saved["final"] = state(params, opt_state)
    np.savez(args.out, **flat(saved))


def reference(args):
    """A single process, uninterrupted: STEPS_BEFORE steps (kept), then STEPS_AFTER more."""
    setup_jax(args.devices)
    import jax
    import numpy as np

    init, step, param_shardings, _, replicated = make_training()
    host_params, x, y = data()
    params = to_global(host_params, param_shardings)
    x, y = to_global((x, y), (replicated, replicated))
    opt_state = init(params)
    for _ in range(STEPS_BEFORE):
        params, opt_state, _ = step(params, opt_state, x, y)
    saved = {"restored": jax.device_get(state(params, opt_state))}  # what the checkpoint holds
    for _ in range(STEPS_AFTER):
        params, opt_state, _ = step(params, opt_state, x, y)
    saved["final"] = state(params, opt_state)
    np.savez(args.out, **flat(saved))


def state(params, opt_state):
    return {"params": params, "opt_state": opt_state}


def flat(tree):
    """{"final/opt_state/rms/w": array, ...}: the leaves by their path, as host numpy arrays."""
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
        for path, leaf in leaves
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["train", "resume", "reference"])
    parser.add_argument("--devices", type=int, required=True, help="CPU devices of this process")
    parser.add_argument("--ckpt", help="checkpoint directory (absolute path, shared)")
    parser.add_argument("--out", help=".npz to write (resume, reference)")
    parser.add_argument("--port", type=int, help="coordinator port on localhost (train)")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    {"train": train, "resume": resume, "reference": reference}[args.role](args)


if __name__ == "__main__":
    main()
