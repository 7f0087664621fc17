"""A network's final parameters exported beside its run, in one format for every family.

  export.save_params(path, params)       an Orbax folder (the checkpoints' format), written
                                         by every process of the run (arrays replicated)
  export.load_params(path, template)     that folder, or a `.msgpack` file that gcm_jax wrote
                                         before Orbax exports (loaded, with a note in the log)
  export.params_digest(params)           sha256 of the values, dtypes and shapes (the key of
                                         caches derived from the params; independent of the
                                         files' timestamps and location)
"""
import hashlib
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

MSGPACK_SUFFIX = ".msgpack"


def save_params(path: str, params: Any) -> None:
  """Writes `params` to the Orbax folder `path` (replaced if it exists; Orbax commits by
  renaming a temporary folder, so a crash leaves no half-written export)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), params, force=True)
  checkpointer.wait_until_finished()


def load_params(path: str, template: Optional[Any] = None) -> Any:
  """The params exported at `path`: an Orbax folder (`save_params`), or a flax msgpack file
  of an earlier gcm_jax. `template` (a pytree of arrays or ShapeDtypeStructs) gives the
  structure to restore into; without it the saved structure is returned."""
  if path.endswith(MSGPACK_SUFFIX):
    logging.warning("%s: a msgpack export of an earlier gcm_jax; it loads as before, and "
                    "rerunning the training command in its workdir writes the Orbax folder "
                    "that newer runs export.", path)
    with open(path, "rb") as f:
      data = f.read()
    if template is None:
      return serialization.msgpack_restore(data)
    return serialization.from_bytes(template, data)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no exported params at {path}")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = None if template is None else jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=device), template)
  return ocp.StandardCheckpointer().restore(os.path.abspath(path), target)


def params_digest(params: Any) -> str:
  """sha256 (hex) of every leaf's path, dtype, shape and values."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}".encode("utf-8"))
    digest.update(value.tobytes())
  return digest.hexdigest()
