"""The one training loop of every model family: steps, logged metrics, checkpoints, resume.

  checkpointer = loop.open_run(config, workdir, RESUMABLE_FIELDS, "an autoencoder run")
  state, data_state = <the family's restore from `checkpointer`, or its init>
  directory.write_config(config, workdir)
  state = loop.run(state, step_fn, next_batch, checkpointer, workdir, num_steps=..., ...)

A family brings its state (a `runs.state.TrainState`), its jitted step and where its batches
come from; the loop runs steps `state.step + 1 .. min(stop_at_step, num_steps)`, writes the
metrics every `log_every` steps and at the last one (`train.metrics`: metrics.jsonl +
TensorBoard, process 0), checkpoints every `checkpoint.every_steps` and at the last step with
the data iterator's state, and shows a progress bar. Rerunning the same command resumes from
the newest readable checkpoint and, with batches that resume where they stopped (a grain
iterator's saved state, or batches that are a function of the step), continues the
uninterrupted run exactly.
"""
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import ml_collections
import tqdm

from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import state as state_lib
from gcm_jax.train import metrics as metrics_lib


Batch = Mapping[str, Any]
StepFn = Callable[[state_lib.TrainState, Batch, int],
                  tuple[state_lib.TrainState, Mapping[str, Any]]]


def open_run(config: ml_collections.ConfigDict, workdir: str,
             resumable_fields: Sequence[str], what: str) -> checkpoint_lib.Checkpointer:
  """The Checkpointer of `<workdir>/checkpoints`; when it holds a checkpoint, the config must
  resume that run (`directory.check_resumable`, raising `ConfigMismatchError` and leaving the
  workdir untouched)."""
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, directory.CHECKPOINT_DIR),
                                             config.checkpoint)
  if checkpointer.latest_step() is not None:
    directory.check_resumable(config, workdir, resumable_fields, what)
  return checkpointer


def run(state: state_lib.TrainState, step_fn: StepFn, next_batch: Callable[[int], Batch],
        checkpointer: checkpoint_lib.Checkpointer, log_dir: str, *, num_steps: int,
        log_every: int, stop_at_step: Optional[int] = None,
        data_state: Callable[[], Mapping[str, Any]] = dict, desc: str = "train",
        shown: Sequence[tuple[str, str]] = (("loss", ".4f"),),
        after_step: Optional[Callable[[int, state_lib.TrainState, Batch], None]] = None
        ) -> state_lib.TrainState:
  """Trains from `state.step` to `num_steps` (or `stop_at_step`, checkpointed there without
  changing any schedule) and returns the last state; closes `checkpointer`.

  Args:
    step_fn: `(state, batch, step) -> (state, scalar metrics)`, the family's jitted step.
    next_batch: `step -> batch` (1-based step), e.g. the next batch of a data iterator.
    log_dir: metrics go to `<log_dir>/logs`.
    data_state: what to checkpoint beside the state (e.g. the iterator's position).
    shown: (metric, format) pairs shown on the progress bar.
    after_step: `(step, state, batch) -> None` after each step's checkpoint (e.g. samples).
  """
  start = int(state.step)
  last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  writer = metrics_lib.MetricWriter(log_dir, start_step=start)
  with tqdm.tqdm(total=num_steps, initial=start, desc=desc,
                 disable=jax.process_index() != 0) as progress:
    for step in range(start + 1, last_step + 1):
      batch = next_batch(step)
      state, scalars = step_fn(state, batch, step)
      if step % log_every == 0 or step == last_step:
        scalars = jax.device_get(scalars)
        writer.write_scalars(step, scalars)
        progress.set_postfix({name: f"{float(scalars[name]):{spec}}" for name, spec in shown})
      if checkpointer.should_save(step, force=step == last_step):
        checkpointer.save(step, state, data_state())
      if after_step is not None:
        after_step(step, state, batch)
      progress.update(1)
  checkpointer.close()
  writer.close()
  return state
