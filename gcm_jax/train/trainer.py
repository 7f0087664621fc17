"""The training loop: the only place with side effects (data, checkpoints, logs, samples).

`train(config, workdir)` validates the config, builds the mesh, the sharded train state
(or restores it from the newest readable checkpoint in `workdir`, after checking that
the config matches the saved one), and runs the jitted train step. With
`config.control.enabled` the run trains a ControlNet branch on the frozen EMA params of
the base run in `config.control.base_workdir` (`gcm_jax.train.control`). `config.json` is
written only once the state is initialized or restored, so a failed resume never
changes a workdir.
"""
import functools
import json
import os
from typing import Any, Mapping, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from gcm_jax import config_validation
from gcm_jax import frozen_encoders
from gcm_jax import latents
from gcm_jax.alignment import experts
from gcm_jax.models import conditioning
from gcm_jax.models import stdit
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import checkpoint as checkpoint_lib
from gcm_jax.train import control
from gcm_jax.train import metrics as metrics_lib
from gcm_jax.train import state as state_lib
from gcm_jax.train import step as step_lib


CONFIG_FILE = "config.json"  # The run's resolved config, read back by gcm_jax.generate.
CHECKPOINT_DIR = "checkpoints"  # Orbax checkpoints, under the workdir.


def make_model(config: ml_collections.ConfigDict) -> stdit.STDiT:
  return stdit.STDiT(**config.model.to_dict())


def make_apply_fn(config: ml_collections.ConfigDict) -> step_lib.ApplyFn:
  """The run's network `(params, x_t, t, cond) -> output`: the STDiT, or for a ControlNet
  run the frozen STDiT steered by its control branch."""
  if control.enabled(config):
    return control.controlled_apply_fn(make_model(config), control.make_branch(config))
  return step_lib.model_apply_fn(make_model(config))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`config.train`'s optimizer; a ControlNet run's freezes the base params."""
  return state_lib.make_optimizer(config.train,
                                  control.param_labels if control.enabled(config) else None)


def example_inputs(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, Any]:
  """Zero-valued model inputs with the config's shapes (for init and shape inference);
  a ControlNet run's cond also has zero control maps `[B, T, R, R, config.control.channels]`,
  a run with pretrained encoders their features (`frozen_encoders`, loaded once here)."""
  t, r = config.data.num_frames, config.data.resolution
  m = config.model
  b = batch_size
  x_shape = latents.diffusion_shape(config, b, t)
  control_maps = {k: jnp.zeros((b, t, r, r, config.control.channels), jnp.float32)
                  for k in control.batch_keys(config)}
  pretrained = {k: jnp.zeros((b,) + shape, bool if k.endswith("mask") else jnp.float32)
                for k, shape in frozen_encoders.FrozenEncoders(config).feature_shapes(t).items()}
  return {
      "x": jnp.zeros(x_shape, jnp.float32),
      "t": jnp.zeros((b,), jnp.float32),
      "cond": {
          "text_tokens": jnp.zeros((b, m.text_max_len), jnp.int32),
          "text_mask": jnp.ones((b, m.text_max_len), bool),
          "mel": jnp.zeros((b, t, m.mel_window, m.num_mels), jnp.float32),
          "drop_text": jnp.zeros((b,), bool),
          "drop_audio": jnp.zeros((b,), bool),
          "frames": jnp.zeros(x_shape, jnp.float32),
          "frame_mask": jnp.zeros((b, t), bool),
          **control_maps,
          **pretrained,
      },
  }


def _init_fn(config: ml_collections.ConfigDict):
  """`(key, base_params=None) -> TrainState` with logically boxed (nn.Partitioned) params.

  A ControlNet run's params are `control.init_params` of `base_params` (the trained base,
  `load_base_params`; None: a fresh base init, for shapes and shardings only); a plain
  run ignores `base_params`.
  """
  model = make_model(config)
  optimizer = make_optimizer(config)
  inputs = example_inputs(config, batch_size=1)
  init_model = lambda key: model.init(key, inputs["x"], inputs["t"], inputs["cond"])["params"]

  def init_fn(key, base_params=None):
    if not control.enabled(config):
      return state_lib.create_state(init_model(key), optimizer)
    k_base, k_control = jax.random.split(key)
    base_params = init_model(k_base) if base_params is None else base_params
    params = control.init_params(control.make_branch(config), k_control, inputs, base_params)
    return state_lib.create_state(params, optimizer)

  return init_fn


def state_shardings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                    ) -> tuple[state_lib.TrainState, Any]:
  """(abstract TrainState of ShapeDtypeStructs, its NamedShardings on `mesh`); no FLOPs."""
  abstract = jax.eval_shape(_init_fn(config), jax.random.PRNGKey(config.seed))
  shardings = mesh_lib.logical_shardings(abstract, mesh, config.mesh.logical_axis_rules)
  return nn.meta.unbox(abstract), shardings


def restore_ema_params(workdir: str, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh, step: Optional[int] = None) -> tuple[Any, int]:
  """(EMA params, step) of the run in `workdir` (`config`: its config) on `mesh`, from the
  checkpoint at `step`, by default the newest readable one (newer unreadable ones are
  reported in a warning and left in place)."""
  abstract_state, shardings = state_shardings(config, mesh)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                             config.checkpoint)
  abstract = checkpoint_lib.abstract_with_shardings(abstract_state, shardings)
  if step is None:
    state, _, step = checkpoint_lib.restore_newest(checkpointer, abstract, set_aside=False)
  else:
    state, _ = checkpointer.restore(abstract, step)
  checkpointer.close()
  return state.ema_params, step


def load_base_params(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Any:
  """A ControlNet run's frozen base: the EMA params of the newest readable checkpoint of
  `config.control.base_workdir`, a plain run of the same model (`config_validation`
  checks its config), on `mesh` with this run's axis rules."""
  base_config = ml_collections.ConfigDict(read_saved_config(config.control.base_workdir))
  base_config.mesh.logical_axis_rules = config.mesh.logical_axis_rules
  params, step = restore_ema_params(config.control.base_workdir, base_config, mesh)
  logging.info("ControlNet base: EMA params of step %d of %s", step,
               config.control.base_workdir)
  return params


def init_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
               ) -> tuple[state_lib.TrainState, Any]:
  """Initializes the TrainState directly into its shardings (a ControlNet run's base from
  its base run, `load_base_params`). Returns (state, shardings)."""
  _, shardings = state_shardings(config, mesh)
  init_fn = _init_fn(config)
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
      step_lib.train_step, apply_fn=make_apply_fn(config), optimizer=make_optimizer(config),
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

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch, frozen)

  return run


class ConfigMismatchError(ValueError):
  """A resumed workdir's saved config differs in fields that define the run."""


# Fields that may change when a run resumes: how long it trains, where and how often it
# logs, checkpoints and samples, the mesh and hosts it runs on and how parameters are
# laid out on it (checkpoints restore onto any mesh and sharding), input workers. Every
# other field defines the run and must equal the saved config.json (a prefix ending in
# "." covers a whole section).
RESUMABLE_FIELDS = ("train.num_steps", "log.", "checkpoint.", "sampling.", "mesh.shape",
                    "mesh.logical_axis_rules", "distributed.", "data.data_dir",
                    "data.build_if_missing", "data.worker_count", "lipsync.syncnet_workdir",
                    "lipsync.expert_weights", "control.base_workdir")


def config_differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict
                       ) -> dict[str, tuple[Any, Any]]:
  """{field: (saved value, new value)} for the fields that define the run and differ.

  Fields the saved config does not have (added to gcm_jax after the run started) keep
  their defaults, which reproduce the earlier behaviour, and are not differences.
  """
  old = config_validation.flat_fields(saved)
  new = config_validation.flat_fields(json.loads(config.to_json()))
  resumable = lambda path: any(path == f or (f.endswith(".") and path.startswith(f))
                               for f in RESUMABLE_FIELDS)
  return {path: (old[path], new.get(path, "<removed>")) for path in old
          if not resumable(path) and old[path] != new.get(path, "<removed>")}


def read_saved_config(workdir: str) -> Optional[dict]:
  """The workdir's config.json as a dict, or None if it has none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e})") from e


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigMismatchError naming each field that differs from the saved config."""
  saved = read_saved_config(workdir)
  differences = config_differences(saved, config) if saved is not None else {}
  if differences:
    lines = "\n  ".join(f"config.{k}: saved {a!r}, now {b!r}"
                        for k, (a, b) in sorted(differences.items()))
    raise ConfigMismatchError(
        f"{workdir} holds a run with a different config; nothing was changed there. "
        f"Use these values to resume it, or a new --workdir for the new config:\n  {lines}")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=2))


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
  abstract, shardings = state_shardings(config, mesh)
  state, data_state = checkpoint_lib.restore_for_resume(
      checkpointer, checkpoint_lib.abstract_with_shardings(abstract, shardings))
  return state, shardings, data_state


def _resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  if not config.data.data_dir:
    config.data.data_dir = os.path.join(workdir, "data")
  return config


class SampleWriter:
  """Samples videos with the EMA params for the first examples of a training batch and
  writes them as mp4s with their audio (process 0).

  The first `n` rows of the global batch's conditions are gathered onto every host
  (replicated), so this works with batches that span hosts; the audio comes from process
  0's own rows, so `n` is at most its share, batch_size / process_count. The sampler is
  compiled once, on the first call. A ControlNet run samples for the batch's control maps.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               workdir: str):
    from gcm_jax import sampling  # pylint: disable=g-import-not-at-top
    self._config, self._mesh, self._workdir = config, mesh, workdir
    self.cond_keys = conditioning.cond_keys(config.model) + control.batch_keys(config)
    self.num_samples = min(config.log.num_samples,
                           config.data.batch_size // jax.process_count())
    replicated = mesh_lib.replicated(mesh)
    n = self.num_samples
    self._first_rows = jax.jit(lambda cond: jax.tree.map(lambda x: x[:n], cond),
                               out_shardings=replicated)
    self._sample = jax.jit(functools.partial(sampling.sample_videos, make_apply_fn(config),
                                             config=config), out_shardings=replicated)

  def __call__(self, state: state_lib.TrainState, batch: Mapping[str, Any], step: int
               ) -> list[str]:
    """Writes `samples/step_<step>_<i>.mp4`; returns the paths (empty off process 0).

    `batch`: global arrays for `cond_keys` and this host's rows of 'audio' `[rows, S]`.
    """
    from gcm_jax import video_io  # pylint: disable=g-import-not-at-top
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._config.mesh.logical_axis_rules):
      cond = self._first_rows({k: batch[k] for k in self.cond_keys})
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
  from gcm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config_validation.validate(config)
  mesh_lib.initialize_distributed(config.distributed)
  config = _resolve_data_dir(config, workdir)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                             config.checkpoint)
  if checkpointer.latest_step() is not None:
    check_resumable(config, workdir)
  mesh = mesh_lib.make_mesh(config.mesh)
  state, shardings, data_state = restore_or_init(config, mesh, checkpointer)
  _write_config(config, workdir)
  step_keys = step_lib.batch_keys(config)
  data = pipeline.make_dataset(config, "train", mesh, batch_axes=mesh_lib.BATCH_AXES,
                               seed=config.seed, device_keys=step_keys + conditioning.cond_keys(config.model))
  if data_state is not None:
    data.set_state(data_state["iterator"].encode("utf-8"))
  train_step = compile_train_step(config, mesh, shardings)
  start = int(state.step)
  writer = metrics_lib.MetricWriter(workdir, start_step=start)
  num_steps = config.train.num_steps
  last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  write_samples = SampleWriter(config, mesh, workdir) if config.log.num_samples else None
  every = config.log.sample_every_steps
  batch = None
  with tqdm.tqdm(total=num_steps, initial=start, desc="train",
                 disable=jax.process_index() != 0) as progress:
    for step in range(start + 1, last_step + 1):
      batch = next(data)
      state, metrics = train_step(state, {k: batch[k] for k in step_keys})
      if step % config.log.every_steps == 0 or step == last_step:
        metrics = jax.device_get(metrics)
        writer.write_scalars(step, metrics)
        progress.set_postfix(loss=f"{float(metrics['loss']):.4f}")
      if checkpointer.should_save(step, force=step == last_step):  # Iterator state only then.
        checkpointer.save(step, state, {"iterator": data.get_state().decode("utf-8")})
      if write_samples and every and step % every == 0 and step != last_step:
        write_samples(state, batch, step)  # The last step's samples are written below.
      progress.update(1)
  checkpointer.close()
  if batch is not None and write_samples:
    for path in write_samples(state, batch, last_step):
      print(f"sample: {path}")
  writer.close()
  return state
