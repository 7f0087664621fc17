"""Orbax checkpoints of the train state and the data-iterator state.

Saves are asynchronous (training continues while arrays are written) and atomic:
Orbax writes into a temporary directory and renames it on commit, so a crash or
`kill -9` mid-save leaves the previous checkpoint intact and restorable.
Restoring takes target shardings, so a checkpoint written on one mesh can be
restored onto another.
"""
import os
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import jax
import orbax.checkpoint as ocp

from gcm_jax import config_rules
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs.state import TrainState

# The checks of `config.checkpoint`, the fields a Checkpointer reads.
CHECKPOINT_RULES = (
    config_rules.integer("checkpoint.every_steps", 0),
    config_rules.integer("checkpoint.keep", 1),
    config_rules.boolean("checkpoint.async_save"),
)


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read (corrupt, truncated or incompatible)."""


class Checkpointer:
  """Keeps the newest `keep` checkpoints of (TrainState, data-iterator state) under `directory`."""

  def __init__(self, directory: str, checkpoint_config: Mapping[str, Any]):
    self.directory = os.path.abspath(directory)
    self._every = int(checkpoint_config["every_steps"])
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=int(checkpoint_config["keep"]),
        enable_async_checkpointing=bool(checkpoint_config["async_save"]), create=True)
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def should_save(self, step: int, force: bool = False) -> bool:
    """Whether `maybe_save(step, ...)` would save: `step` is a multiple of `every_steps` (or
    `force`) and not saved yet."""
    if not force and (self._every <= 0 or step % self._every):
      return False
    return step not in self._manager.all_steps()

  def maybe_save(self, step: int, state: TrainState, data_state: Mapping[str, Any],
                 force: bool = False) -> bool:
    """Starts a save at `step` if `should_save(step, force)`; returns whether it did."""
    if not self.should_save(step, force):
      return False
    self.save(step, state, data_state)
    return True

  def save(self, step: int, state: TrainState, data_state: Mapping[str, Any]) -> None:
    """Starts an (asynchronous) save of (state, data_state) at `step`."""
    self._manager.save(step, args=ocp.args.Composite(
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
      raise CheckpointError(f"checkpoint at step {step} in {self.directory} is unreadable "
                            f"({short_reason(e)})") from e
    return restored["state"], dict(restored["data"])

  def restore_newest_readable(self, abstract_state: TrainState
                              ) -> tuple[TrainState, dict, int, dict[int, str]]:
    """Restores the newest checkpoint that can be read, newest first.

    Returns (state, data_state, its step, {newer unreadable step: reason}). Raises
    `CheckpointError` listing every step's reason if none can be read, and
    FileNotFoundError if there is no checkpoint. Nothing is deleted or moved.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
    unreadable = {}
    for step in steps:
      try:
        state, data_state = self.restore(abstract_state, step)
      except CheckpointError as e:
        unreadable[step] = short_reason(e.__cause__)
        continue
      return state, data_state, step, unreadable
    reasons = "; ".join(f"step {s}: {r}" for s, r in unreadable.items())
    raise CheckpointError(f"no checkpoint in {self.directory} can be read ({reasons})")

  def set_aside(self, steps: Sequence[int]) -> str:
    """Moves the checkpoints of `steps` (e.g. unreadable ones) out of the way, into
    `<directory>_unreadable/`, so training can save those steps again; nothing is deleted.
    Returns the folder they were moved to. Process 0 moves; every process reloads."""
    aside = self.directory + "_unreadable"
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        suffix = 0
        while os.path.exists(target):
          suffix += 1
          target = os.path.join(aside, f"{step}.{suffix}")
        os.rename(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      mesh_lib.wait_for_processes("gcm_jax.runs.checkpoint: set aside")
    self._manager.close()
    self._manager = self._make_manager()
    return aside

  def wait(self) -> None:
    """Blocks until pending async saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_for_resume(checkpointer: Checkpointer, abstract_state: TrainState
                       ) -> Optional[tuple[TrainState, dict]]:
  """(state, data_state) of the newest readable checkpoint, or None if there is none.

  Newer unreadable checkpoints are moved aside (`Checkpointer.set_aside`) with a warning,
  so the resumed run can save those steps again. Raises `CheckpointError` if none can be
  read (nothing is moved then).
  """
  if checkpointer.latest_step() is None:
    return None
  state, data_state, _ = restore_newest(checkpointer, abstract_state, set_aside=True)
  return state, data_state


def restore_newest(checkpointer: Checkpointer, abstract_state: TrainState, set_aside: bool
                   ) -> tuple[TrainState, dict, int]:
  """(state, data_state, step) of the newest readable checkpoint, with one warning naming
  newer unreadable ones; those are moved aside (`Checkpointer.set_aside`) if `set_aside`,
  else left in place (read-only users such as gcm-generate)."""
  state, data_state, step, unreadable = checkpointer.restore_newest_readable(abstract_state)
  if unreadable:
    aside = checkpointer.set_aside(sorted(unreadable)) if set_aside else None
    logging.warning(fallback_warning(checkpointer.directory, step, unreadable,
                                     set_aside_to=aside))
  return state, data_state, step


def short_reason(error: BaseException, limit: int = 200) -> str:
  """`Type: first line of the message`, at most `limit` characters (Orbax and TensorStore
  errors can carry kilobytes of dumped specs)."""
  lines = str(error).strip().splitlines()
  reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def fallback_warning(directory: str, restored_step: int, unreadable: Mapping[int, str],
                     set_aside_to: Optional[str] = None) -> str:
  """One paragraph telling which newer checkpoints could not be read and what was used."""
  steps = ", ".join(str(s) for s in sorted(unreadable))
  reasons = "; ".join(f"step {s}: {r}" for s, r in sorted(unreadable.items()))
  where = (f"They were moved to {set_aside_to} (nothing was deleted) and training continues "
           f"from step {restored_step}." if set_aside_to else
           "They were left in place.")
  return (f"WARNING: the newest checkpoint(s) in {directory} (step {steps}) could not be read "
          f"({reasons}). Using step {restored_step}, the newest readable one. {where}")


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`ShapeDtypeStruct`s of `tree` (arrays or abstract values) carrying `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
