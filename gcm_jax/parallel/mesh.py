"""Device mesh from the config, logical-axis shardings, and multi-host start-up.

The mesh has three named axes:
  'data'   pure data parallelism (params replicated),
  'fsdp'   data parallelism with params/optimizer state sharded along 'embed',
  'tensor' tensor parallelism over heads / MLP width.
The batch is split over ('data', 'fsdp'). Which array axis goes to which mesh axis is
decided by config.mesh.logical_axis_rules, never in model code.
"""
import collections
import math
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
from jax._src import distributed as jax_distributed  # The coordination client (as JAX's own
# array_serialization uses it): no public barrier takes a timeout.
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Returns the (data, fsdp, tensor) sizes, filling one -1 entry with the remainder.

  Raises:
    ValueError: unknown axis names, more than one -1, or sizes whose product does not
      equal the number of devices.
  """
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(shape)}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh axis sizes must be positive (or -1), got {dict(shape)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh {dict(shape)}: the fixed axes ({known} devices) do not divide the "
          f"{num_devices} available devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
        f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, Any],
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(mesh_config["shape"], len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules: Sequence[tuple]) -> Any:
  """NamedShardings for a tree of `nn.Partitioned` (logically named) leaves, with the tree's
  structure once unboxed: a box around an empty subtree (optax's MaskedNode in the optimizer
  state of frozen parameters) becomes that subtree."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  boxed_tree = jax.tree.map(lambda x: x.value if is_box(x) and not jax.tree.leaves(x.value) else x,
                            boxed_tree, is_leaf=is_box)
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, [tuple(r) for r in rules])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: leading axis split over the data-parallel mesh axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def initialize_distributed(distributed_config: Mapping[str, Any]) -> bool:
  """Starts `jax.distributed` for multi-process runs; returns whether it did.

  * `coordinator_address` set ("host:port" of process 0): explicit start-up with
    `num_processes` and `process_id` (e.g. a GPU cluster without a scheduler JAX knows).
  * else `auto_detect`: `jax.distributed.initialize()` reads the cluster from its
    environment (Cloud TPU VMs, SLURM `srun`, Open MPI, Kubernetes JobSet); where there is
    none (a single machine) the run stays single-process.
  * else a single process.
  On CPU the cross-process collectives use gloo.
  """
  address = distributed_config.get("coordinator_address", "")
  if not address and not distributed_config.get("auto_detect", False):
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if address:
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=int(distributed_config["num_processes"]),
                               process_id=int(distributed_config["process_id"]))
    return True
  try:
    jax.distributed.initialize()
  except ValueError as e:  # No cluster environment: JAX cannot find a coordinator.
    if "coordinator_address" not in str(e):
      raise
    logging.info("config.distributed.auto_detect: no cluster found (%s); one process", e)
    return False
  return True


BARRIER_TIMEOUT_S = 24 * 3600
_barrier_uses: collections.Counter = collections.Counter()


def wait_for_processes(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
  """Blocks until every process of a multi-process run has reached the barrier `name` (a
  no-op with one process).

  A barrier of the coordination service, not a device collective: the first collective of a
  CPU run sets up gloo, which gives the other processes only 30 s to arrive, less than one
  process may lag another while it builds a dataset or compiles on a loaded machine.
  Processes pass the same names in the same order (each use of a name is its own barrier).
  """
  client = jax_distributed.global_state.client
  if client is None or jax.process_count() == 1:
    return
  _barrier_uses[name] += 1
  client.wait_at_barrier(f"{name}#{_barrier_uses[name]}", timeout_in_ms=timeout_s * 1000)

