"""Orbax checkpoints of the train state and the data-iterator state.

Saves are asynchronous (training continues while arrays are written) and atomic:
Orbax writes into a temporary directory and renames it on commit, so a crash or
`kill -9` mid-save leaves the previous checkpoint intact and restorable.
Restoring takes target shardings, so a checkpoint written on one mesh can be
restored onto another.
"""
import os
from typing import Any, Mapping, Optional

import jax
import orbax.checkpoint as ocp

from gcm_jax.train.state import TrainState


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read (corrupt, truncated or incompatible)."""


class Checkpointer:
  """Keeps the newest `keep` checkpoints of (TrainState, data-iterator state) under `directory`."""

  def __init__(self, directory: str, checkpoint_config: Mapping[str, Any]):
    self.directory = os.path.abspath(directory)
    self._every = int(checkpoint_config["every_steps"])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=int(checkpoint_config["keep"]),
            enable_async_checkpointing=bool(checkpoint_config["async_save"]),
            create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def maybe_save(self, step: int, state: TrainState, data_state: Mapping[str, Any],
                 force: bool = False) -> bool:
    """Starts a save at `step` if it is a multiple of `every_steps` (or `force`)."""
    if not force and (self._every <= 0 or step % self._every):
      return False
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))),
                              force=True)

  def restore(self, abstract_state: TrainState, step: Optional[int] = None
             ) -> tuple[TrainState, dict]:
    """Restores (state, data_state) at `step` (default latest) onto `abstract_state`'s shardings.

    `abstract_state` is a TrainState of `jax.ShapeDtypeStruct`s with `.sharding` set
    (e.g. from `jax.eval_shape` plus the target mesh shardings).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types for unreadable files.
      raise CheckpointError(
          f"checkpoint at step {step} in {self.directory} is unreadable or does not match "
          f"the model/config ({type(e).__name__}: {e}); delete that step's folder to "
          f"resume from the previous one") from e
    return restored["state"], dict(restored["data"])

  def wait(self) -> None:
    """Blocks until pending async saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`ShapeDtypeStruct`s of `tree` (arrays or abstract values) carrying `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
