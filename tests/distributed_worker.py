"""One process of the 2-process `jax.distributed` test (CPU, gloo collectives).

Usage: python -m tests.distributed_worker <process_id> <num_processes> <port> <num_local_devices>
Prints one line per step: `loss <value> checksum <sum of all params>`.
"""
import os
import sys

process_id, num_processes, port, local_devices = (int(a) for a in sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from gcm_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from gcm_jax.train import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import train_utils  # pylint: disable=g-import-not-at-top,wrong-import-position


def main() -> None:
  config = train_utils.micro_config()
  config.mesh.shape = dict(data=2, fsdp=4, tensor=1)
  config.distributed.update(coordinator_address=f"127.0.0.1:{port}",
                            num_processes=num_processes, process_id=process_id)
  mesh_lib.initialize_distributed(config.distributed)
  mesh = mesh_lib.make_mesh(config.mesh)
  state, shardings = trainer.init_state(config, mesh)
  step = trainer.compile_train_step(config, mesh, shardings)
  checksum = jax.jit(lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(p)),
                     out_shardings=mesh_lib.replicated(mesh))
  local = config.data.batch_size // jax.process_count()
  for i in range(2):
    batch = train_utils.synthetic_batch(config, seed=i)
    rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    batch = {k: jax.make_array_from_process_local_data(mesh_lib.batch_sharding(mesh), v[rows])
             for k, v in batch.items()}
    state, metrics = step(state, batch)
    loss = float(metrics["loss"].addressable_data(0))
    total = float(checksum(state.params).addressable_data(0))
    print(f"loss {loss!r} checksum {total!r}", flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
