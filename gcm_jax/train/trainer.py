"""Training the diffusion model: the only place with its side effects (data, checkpoints,
logs, samples).

`train(config, workdir)` takes a validated config (`gcm_jax.launch.train` validates it
first, as run_train.py does), builds the mesh, the sharded train state
(or restores it from the newest readable checkpoint in `workdir`, after checking that
the config matches the saved one), and runs the jitted train step in the shared loop
(`gcm_jax.train.loop`). With
`config.control.enabled` the run trains a ControlNet branch on the frozen EMA params of
the base run in `config.control.base_workdir` (`gcm_jax.models.control`). `config.json` is
written only once the state is initialized or restored, so a failed resume never
changes a workdir.
"""
import functools
import os
from typing import Any, Mapping, Optional

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from gcm_jax import latents
from gcm_jax import sampling
from gcm_jax import video_io
from gcm_jax.alignment import experts
from gcm_jax.data import pipeline
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import state as state_lib
from gcm_jax.train import loop
from gcm_jax.train import step as step_lib


def load_base_params(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Any:
  """A ControlNet run's frozen base: the EMA params of the newest readable checkpoint of
  `config.control.base_workdir`, a plain run of the same model (`config_validation`
  checks its config), on `mesh` with this run's axis rules."""
  base_config = ml_collections.ConfigDict(directory.read_config(config.control.base_workdir))
  base_config.mesh.logical_axis_rules = config.mesh.logical_axis_rules
  params, step = diffusion_model.restore_ema_params(config.control.base_workdir, base_config, mesh)
  logging.info("ControlNet base: EMA params of step %d of %s", step,
               config.control.base_workdir)
  return params


def init_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
               ) -> tuple[state_lib.TrainState, Any]:
  """Initializes the TrainState directly into its shardings (a ControlNet run's base from
  its base run, `load_base_params`). Returns (state, shardings)."""
  _, shardings = diffusion_model.state_shardings(config, mesh)
  init_fn = diffusion_model.init_fn(config)
  base_params = load_base_params(config, mesh) if control.enabled(config) else None
  with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.logical_axis_rules):
    state = jax.jit(lambda k, b: nn.meta.unbox(init_fn(k, b)), out_shardings=shardings)(
        jax.random.PRNGKey(config.seed), base_params)
  return state, shardings


def load_lipsync_expert(config: ml_collections.ConfigDict) -> Optional[experts.Expert]:
  """(module, variables) of the frozen lip-sync expert `config.lipsync.expert`
  (`experts.EXPERTS`: the project SyncNet of `config.lipsync.syncnet_workdir`, or Wav2Lip's
  `config.lipsync.expert_weights`) if `config.lipsync.weight` > 0, else None
  (`config_validation.validate` checks the lip-sync fields)."""
  if config.lipsync.weight <= 0:
    return None
  return experts.EXPERTS[config.lipsync.expert].load(config)


def jit_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   state_shardings: Any,
                   lipsync_net: Optional[nn.Module] = None,
                   autoencoder: Optional[Any] = None):
  """The `jax.jit` train step (state, batch, frozen) -> (state, metrics), state donated.

  `frozen` is the dict of frozen-network variables (`{'lipsync': ...}` with `lipsync_net`,
  `'autoencoder'` with `autoencoder` (the AutoencoderKL module of a latent run whose
  lip-sync loss decodes the x0 estimate), else `{}`), replicated. Trace/lower/call it under
  `jax.set_mesh(mesh)` and the config's logical axis rules (`compile_train_step` does); benchmarks lower it directly for cost
  analysis.
  """
  step_fn = functools.partial(
      step_lib.train_step, apply_fn=diffusion_model.make_apply_fn(config),
      optimizer=diffusion_model.make_optimizer(config),
      config=config, lipsync_net=lipsync_net, autoencoder=autoencoder)
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(step_fn,
                 in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       state_shardings: Any):
  """The train step `(state, batch) -> (state, metrics)` as a plain function that enters the
  mesh and axis-rule contexts and passes the frozen networks' variables (loaded once)."""
  expert = load_lipsync_expert(config)
  lipsync_net, frozen = (None, {}) if expert is None else (expert[0], {"lipsync": expert[1]})
  # Decodes x0 estimates for the SyncNet and the decoded pixel loss (latent runs).
  needs_decoder = expert is not None or step_lib.pixel_loss_weight(config) > 0
  decoder = latents.load(config) if needs_decoder else None
  if decoder is not None:
    frozen["autoencoder"] = decoder.params
  jitted = jit_train_step(config, mesh, state_shardings, lipsync_net,
                          None if decoder is None else decoder.module)
  frozen = jax.device_put(frozen, mesh_lib.replicated(mesh))
  rules = config.mesh.logical_axis_rules

  compiled = []

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      if not compiled:  # Compile, then meet: the step's collectives find every process there.
        compiled.append(jitted.lower(state, batch, frozen).compile())
        mesh_lib.wait_for_processes("gcm_jax.train.trainer: train step compiled")
      return compiled[0](state, batch, frozen)

  return run


# Fields that may change when a run resumes: how long it trains, where and how often it
# logs, checkpoints and samples, the mesh and hosts it runs on and how parameters are
# laid out on it (checkpoints restore onto any mesh and sharding), input workers. Every
# other field defines the run and must equal the saved config.json (a prefix ending in
# "." covers a whole section).
RESUMABLE_FIELDS = ("train.num_steps", "log.", "checkpoint.", "sampling.", "mesh.shape",
                    "mesh.logical_axis_rules", "distributed.", "data.data_dir",
                    "data.build_if_missing", "data.worker_count", "lipsync.syncnet_workdir",
                    "lipsync.expert_weights", "control.base_workdir")


def restore_or_init(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    checkpointer: checkpoint_lib.Checkpointer
                    ) -> tuple[state_lib.TrainState, Any, Optional[dict]]:
  """(state, shardings, data-iterator state or None for a new run).

  Resumes from the newest readable checkpoint; newer unreadable ones are moved aside
  (`Checkpointer.set_aside`) with a warning, so the run can save those steps again.
  """
  if checkpointer.latest_step() is None:
    state, shardings = init_state(config, mesh)
    return state, shardings, None
  abstract, shardings = diffusion_model.state_shardings(config, mesh)
  state, data_state = checkpoint_lib.restore_for_resume(
      checkpointer, checkpoint_lib.abstract_with_shardings(abstract, shardings))
  return state, shardings, data_state


class SampleWriter:
  """Samples videos with the EMA params for the first examples of a training batch and
  writes them as mp4s with their audio (process 0).

  The first `n` rows of the global batch's conditions are gathered onto every host
  (replicated), so this works with batches that span hosts; the audio comes from process
  0's own rows, so `n` is at most its share, batch_size / process_count. The sampler is
  compiled once, on the first call. A ControlNet run samples for the batch's control maps,
  a run of a given person for the batch's reference frames (a dubbing run re-voices the
  batch's own clips, `conditioning.identity_cond`).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               workdir: str):
    self._config, self._mesh, self._workdir = config, mesh, workdir
    model = config.model
    self.cond_keys = (conditioning.cond_keys(model) + control.batch_keys(config)
                      + conditioning.identity_keys(model)
                      + (("video",) if model.get("masked_source", False) else ()))
    self.num_samples = min(config.log.num_samples,
                           config.data.batch_size // jax.process_count())
    replicated = mesh_lib.replicated(mesh)
    n = self.num_samples
    self._first_rows = jax.jit(lambda cond: jax.tree.map(lambda x: x[:n], cond),
                               out_shardings=replicated)
    self._sample = jax.jit(functools.partial(sampling.sample_videos,
                                             diffusion_model.make_apply_fn(config),
                                             config=config), out_shardings=replicated)

  def __call__(self, state: state_lib.TrainState, batch: Mapping[str, Any], step: int
               ) -> list[str]:
    """Writes `samples/step_<step>_<i>.mp4`; returns the paths (empty off process 0).

    `batch`: global arrays for `cond_keys` and this host's rows of 'audio' `[rows, S]`.
    """
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._config.mesh.logical_axis_rules):
      cond = self._first_rows({k: batch[k] for k in self.cond_keys})
      cond.update(conditioning.identity_cond(self._config.model, cond, cond.pop("video", None)))
      videos = self._sample(state.ema_params, cond,
                            jax.random.PRNGKey(self._config.seed + step))
    if jax.process_index() != 0:
      return []
    audio = np.asarray(batch["audio"])
    videos = np.asarray(latents.to_pixels(self._config)(videos.addressable_data(0)))
    return [video_io.write_mp4(
        os.path.join(self._workdir, "samples", f"step_{step:07d}_{i}.mp4"), video, audio[i])
            for i, video in enumerate(videos)]


def train(config: ml_collections.ConfigDict, workdir: str,
          stop_at_step: Optional[int] = None) -> state_lib.TrainState:
  """Trains (or resumes) the model described by `config`; returns the final state.

  `stop_at_step` ends this run early (checkpointing there) without changing the
  learning-rate schedule, e.g. to fit a job into a fixed time slot; rerunning resumes.
  """
  mesh_lib.initialize_distributed(config.distributed)
  config = directory.with_data_dir(config, workdir)
  checkpointer = loop.open_run(config, workdir, RESUMABLE_FIELDS, "a run")
  mesh = mesh_lib.make_mesh(config.mesh)
  state, shardings, data_state = restore_or_init(config, mesh, checkpointer)
  directory.write_config(config, workdir)
  step_keys = step_lib.batch_keys(config)
  data = pipeline.make_dataset(config, "train", mesh, batch_axes=mesh_lib.BATCH_AXES,
                               seed=config.seed,
                               device_keys=step_keys + conditioning.cond_keys(config.model))
  if data_state is not None:
    data.set_state(data_state["iterator"].encode("utf-8"))
  train_step = compile_train_step(config, mesh, shardings)
  num_steps = config.train.num_steps
  last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  write_samples = SampleWriter(config, mesh, workdir) if config.log.num_samples else None
  every = config.log.sample_every_steps
  last_batch = []

  def next_batch(step: int) -> Mapping[str, Any]:
    del step
    last_batch[:] = [next(data)]
    return last_batch[0]

  def after_step(step: int, state: state_lib.TrainState, batch: Mapping[str, Any]) -> None:
    if write_samples and every and step % every == 0 and step != last_step:
      write_samples(state, batch, step)  # The last step's samples are written below.

  state = loop.run(state, lambda s, batch, step: train_step(s, {k: batch[k] for k in step_keys}),
                   next_batch, checkpointer, workdir, num_steps=num_steps,
                   log_every=config.log.every_steps, stop_at_step=stop_at_step,
                   data_state=lambda: {"iterator": data.get_state().decode("utf-8")},
                   after_step=after_step)
  if last_batch and write_samples:
    for path in write_samples(state, last_batch[0], last_step):
      print(f"sample: {path}")
  return state
