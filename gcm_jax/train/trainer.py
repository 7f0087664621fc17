"""The training loop: the only place with side effects (data, checkpoints, logs, samples).

`train(config, workdir)` builds the mesh, the sharded train state (or restores it
from the newest checkpoint in `workdir`), and runs the jitted train step.
"""
import functools
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from gcm_jax.alignment import syncnet as syncnet_lib
from gcm_jax.alignment import train_syncnet
from gcm_jax.models import stdit
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import checkpoint as checkpoint_lib
from gcm_jax.train import metrics as metrics_lib
from gcm_jax.train import state as state_lib
from gcm_jax.train import step as step_lib


CONFIG_FILE = "config.json"  # The run's resolved config, read back by gcm_jax.generate.


def make_model(config: ml_collections.ConfigDict) -> stdit.STDiT:
  return stdit.STDiT(**config.model.to_dict())


def example_inputs(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, Any]:
  """Zero-valued model inputs with the config's shapes (for init and shape inference)."""
  t, r = config.data.num_frames, config.data.resolution
  m = config.model
  b = batch_size
  return {
      "x": jnp.zeros((b, t, r, r, m.in_channels), jnp.float32),
      "t": jnp.zeros((b,), jnp.float32),
      "cond": {
          "text_tokens": jnp.zeros((b, m.text_max_len), jnp.int32),
          "text_mask": jnp.ones((b, m.text_max_len), bool),
          "mel": jnp.zeros((b, t, m.mel_window, m.num_mels), jnp.float32),
          "drop_text": jnp.zeros((b,), bool),
          "drop_audio": jnp.zeros((b,), bool),
          "frames": jnp.zeros((b, t, r, r, m.in_channels), jnp.float32),
          "frame_mask": jnp.zeros((b, t), bool),
      },
  }


def _init_fn(config: ml_collections.ConfigDict):
  """`key -> TrainState` with logically boxed (nn.Partitioned) parameters."""
  model = make_model(config)
  optimizer = state_lib.make_optimizer(config.train)
  inputs = example_inputs(config, batch_size=1)

  def init_fn(key):
    boxed = model.init(key, inputs["x"], inputs["t"], inputs["cond"])["params"]
    return state_lib.create_state(boxed, optimizer)

  return init_fn


def state_shardings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                    ) -> tuple[state_lib.TrainState, Any]:
  """(abstract TrainState of ShapeDtypeStructs, its NamedShardings on `mesh`); no FLOPs."""
  abstract = jax.eval_shape(_init_fn(config), jax.random.PRNGKey(config.seed))
  shardings = mesh_lib.logical_shardings(abstract, mesh, config.mesh.logical_axis_rules)
  return nn.meta.unbox(abstract), shardings


def init_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
               ) -> tuple[state_lib.TrainState, Any]:
  """Initializes the TrainState directly into its shardings. Returns (state, shardings)."""
  _, shardings = state_shardings(config, mesh)
  init_fn = _init_fn(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.logical_axis_rules):
    state = jax.jit(lambda k: nn.meta.unbox(init_fn(k)), out_shardings=shardings)(
        jax.random.PRNGKey(config.seed))
  return state, shardings


def load_lipsync_expert(config: ml_collections.ConfigDict
                        ) -> Optional[step_lib.LipSyncExpert]:
  """The frozen SyncNet of `config.lipsync.syncnet_workdir` if `config.lipsync.weight` > 0."""
  if config.lipsync.weight <= 0:
    return None
  if not config.lipsync.syncnet_workdir:
    raise ValueError("config.lipsync.weight > 0 needs config.lipsync.syncnet_workdir (a "
                     "gcm_jax.alignment.train_syncnet workdir)")
  if config.data.num_frames < syncnet_lib.SYNC_FRAMES:
    raise ValueError(f"the lip-sync loss needs clips of >= {syncnet_lib.SYNC_FRAMES} frames, "
                     f"config.data.num_frames={config.data.num_frames}")
  return train_syncnet.load_matching_syncnet(config.lipsync.syncnet_workdir, config.data)


def jit_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   state_shardings: Any):
  """The `jax.jit` train step (state, batch) -> (state, metrics), state donated.

  Trace/lower/call it under `jax.set_mesh(mesh)` and the config's logical axis rules
  (`compile_train_step` does); benchmarks lower it directly for cost analysis.
  """
  step_fn = functools.partial(
      step_lib.train_step, apply_fn=step_lib.model_apply_fn(make_model(config)),
      optimizer=state_lib.make_optimizer(config.train), config=config,
      lipsync_expert=load_lipsync_expert(config))
  return jax.jit(step_fn, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                 donate_argnums=0)


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       state_shardings: Any):
  """The train step as a plain function that enters the mesh and axis-rule contexts."""
  jitted = jit_train_step(config, mesh, state_shardings)
  rules = config.mesh.logical_axis_rules

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  return run


def _resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  if not config.data.data_dir:
    config.data.data_dir = os.path.join(workdir, "data")
  return config


def write_samples(config: ml_collections.ConfigDict, state: state_lib.TrainState,
                  batch: dict, workdir: str, step: int) -> list[str]:
  """Samples videos for the first examples of `batch` with the EMA params; writes mp4s."""
  from gcm_jax import sampling  # pylint: disable=g-import-not-at-top
  from gcm_jax import video_io  # pylint: disable=g-import-not-at-top
  n = config.log.num_samples
  cond = {k: np.asarray(batch[k])[:n] for k in ("text_tokens", "text_mask", "mel")}
  videos = jax.jit(functools.partial(sampling.sample_videos, make_model(config),
                                     config=config))(
                                         state.ema_params, cond,
                                         jax.random.PRNGKey(config.seed + step))
  paths = []
  if jax.process_index() == 0:
    audio = np.asarray(batch["audio"])
    for i, video in enumerate(np.asarray(videos)):
      paths.append(video_io.write_mp4(
          os.path.join(workdir, "samples", f"step_{step:07d}_{i}.mp4"), video, audio[i]))
  return paths


def train(config: ml_collections.ConfigDict, workdir: str,
          stop_at_step: Optional[int] = None) -> state_lib.TrainState:
  """Trains (or resumes) the model described by `config`; returns the final state.

  `stop_at_step` ends this run early (checkpointing there) without changing the
  learning-rate schedule, e.g. to fit a job into a fixed time slot; rerunning resumes.
  """
  from gcm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  mesh_lib.initialize_distributed(config.distributed)
  config = _resolve_data_dir(config, workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=2))
  mesh = mesh_lib.make_mesh(config.mesh)
  state, shardings = init_state(config, mesh)
  data = pipeline.make_dataset(config, "train", mesh, batch_axes=mesh_lib.BATCH_AXES,
                               seed=config.seed)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             config.checkpoint)
  if checkpointer.latest_step() is not None:
    abstract = checkpoint_lib.abstract_with_shardings(state, shardings)
    state, data_state = checkpointer.restore(abstract)
    data.set_state(data_state["iterator"].encode("utf-8"))
  train_step = compile_train_step(config, mesh, shardings)
  writer = metrics_lib.MetricWriter(workdir)
  start = int(state.step)
  num_steps = config.train.num_steps
  last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  batch = None
  with tqdm.tqdm(total=num_steps, initial=start, desc="train",
                 disable=jax.process_index() != 0) as progress:
    for step in range(start + 1, last_step + 1):
      batch = next(data)
      state, metrics = train_step(state, batch)
      if step % config.log.every_steps == 0 or step == last_step:
        metrics = jax.device_get(metrics)
        writer.write_scalars(step, metrics)
        progress.set_postfix(loss=f"{float(metrics['loss']):.4f}")
      checkpointer.maybe_save(step, state, _data_state(data), force=step == last_step)
      every = config.log.sample_every_steps
      if every and step % every == 0 and config.log.num_samples:
        write_samples(config, state, batch, workdir, step)
      progress.update(1)
  checkpointer.close()
  if batch is not None and config.log.num_samples:
    for path in write_samples(config, state, batch, workdir, last_step):
      print(f"sample: {path}")
  writer.close()
  return state


def _data_state(data) -> dict:
  return {"iterator": data.get_state().decode("utf-8")}
