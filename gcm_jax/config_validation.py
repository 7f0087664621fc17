"""One validation pass over a diffusion-training config, before any data is built or compiled.

`validate(config)` checks every field of the config (`configs/tiny.py` lists them all)
against a table of rules and raises one `ConfigError` that names each bad field, its value
and what is allowed, e.g.

  config.sampling.sampler = 'dpm': expected one of ('ddpm', 'ddim', 'dpmpp_2m', ...)
  config.log.every_steps = 0: expected an integer >= 1

Allowed names come from the registries that use them (samplers, schedules, losses, ...),
so a new sampler or schedule is valid here as soon as it is registered there. Unknown
fields (typos such as `config.train.ema_decy`) are errors too. Device-count checks of the
mesh shape happen when the mesh is built (`parallel.mesh.make_mesh`), after
`jax.distributed` start-up.
"""
import json
import os
from typing import Any, Mapping, Sequence

import ml_collections

from gcm_jax import config_rules
from gcm_jax import latents
from gcm_jax import sampling
from gcm_jax.alignment import experts
from gcm_jax.alignment import sync_loss
from gcm_jax.config_rules import ConfigError, Rule, boolean, integer, number, one_of, text
from gcm_jax.config_rules import non_negative, positive, probability
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.diffusion import losses
from gcm_jax.diffusion import parameterization
from gcm_jax.diffusion import samplers
from gcm_jax.diffusion import schedules
from gcm_jax.models import attention
from gcm_jax.models import autoencoder
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import stdit
from gcm_jax.models import syncnet
from gcm_jax.models.pretrained import audio_encoders
from gcm_jax.models.pretrained import text_encoders
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import state as state_lib
from gcm_jax.train import step


DTYPES = ("float32", "bfloat16", "float16")
PATH_EXISTS = {"dir": os.path.isdir, "file": os.path.isfile}


def _mesh_shape_ok(shape: Any) -> bool:
  if not isinstance(shape, Mapping) or not set(shape) <= set(mesh_lib.MESH_AXES):
    return False
  sizes = list(shape.values())
  return all(config_rules.is_int(s) and (s >= 1 or s == -1) for s in sizes) and sizes.count(-1) <= 1


def _axis_rules_ok(rules: Any) -> bool:
  def names(mesh_axes):
    return mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
  try:
    return all(isinstance(logical, str) and all(n is None or n in mesh_lib.MESH_AXES
                                                for n in names(mesh_axes))
               for logical, mesh_axes in rules)
  except (TypeError, ValueError):
    return False


RULES: tuple[Rule, ...] = (
    integer("seed", 0),
    # Model.
    integer("model.in_channels", 1),
    integer("model.patch_size", 1),
    integer("model.width", 1),
    integer("model.depth", 1),
    integer("model.num_heads", 1),
    positive("model.mlp_ratio"),
    one_of("model.attention", stdit.ATTENTION_KINDS),
    boolean("model.temporal_rotary"),
    integer("model.text_max_len", 1),
    integer("model.text_layers", 0),
    integer("model.audio_layers", 0),
    integer("model.num_mels", 1),
    integer("model.mel_window", 1),
    boolean("model.frame_conditioning"),
    positive("model.time_scale"),
    one_of("model.dtype", DTYPES),
    one_of("model.remat_policy", stdit.REMAT_POLICIES),
    one_of("model.attention_impl", attention.IMPLEMENTATIONS),
    boolean("model.scan_blocks"),
    boolean("model.final_conv"),
    integer("model.reference_frames", 0),
    one_of("model.reference_inputs", stdit.REFERENCE_INPUTS),
    boolean("model.masked_source"),
    one_of("model.text_encoder", conditioning.TEXT_KEYS),
    one_of("model.audio_encoder", conditioning.AUDIO_KEYS),
    # Latent diffusion (gcm_jax.latents).
    one_of("latent.source", ("none",) + tuple(latents.SOURCES)),
    text("latent.path"),
    one_of("latent.config", autoencoder.CONFIGS),
    integer("latent.seed", 0),
    number("latent.pixel_loss_weight", 0.0),
    # Pretrained encoders' weights (gcm_jax.frozen_encoders).
    text("pretrained.text_path"),
    one_of("pretrained.long_text", text_encoders.LONG_TEXT_MODES),
    text("pretrained.audio_path"),
    text("pretrained.audio_size"),
    integer("pretrained.audio_context", 0),
    text("pretrained.audio_layers"),
    integer("pretrained.audio_seed", 0),
    *pipeline.DATA_RULES,
    # Diffusion.
    one_of("diffusion.schedule", schedules.BY_NAME),
    one_of("diffusion.parameterization", parameterization.PREDICTIONS),
    one_of("diffusion.loss_weighting", losses.WEIGHTINGS),
    positive("diffusion.min_snr_gamma"),
    one_of("diffusion.noise_distribution", losses.NOISE_DISTRIBUTIONS),
    positive("diffusion.sigma_data"),
    number("diffusion.p_mean"),
    positive("diffusion.p_std"),
    positive("diffusion.time_shift"),
    probability("diffusion.p_drop_text"),
    probability("diffusion.p_drop_audio"),
    probability("diffusion.p_drop_both"),
    probability("diffusion.p_motion_frames"),
    integer("diffusion.max_motion_frames", 0),
    positive("diffusion.mouth_loss_weight"),
    positive("diffusion.eye_loss_weight"),
    probability("diffusion.p_drop_reference"),
    positive("diffusion.masked_loss_weight"),
    boolean("diffusion.keep_source"),
    # Lip-sync loss.
    non_negative("lipsync.weight"),
    one_of("lipsync.expert", experts.EXPERTS),
    text("lipsync.syncnet_workdir"),
    text("lipsync.expert_weights"),
    one_of("lipsync.noise_weighting", sync_loss.NOISE_WEIGHTINGS),
    integer("lipsync.start_step", 0),
    integer("lipsync.ramp_steps", 0),
    integer("lipsync.clips_per_step", 0),
    # ControlNet mode.
    boolean("control.enabled"),
    integer("control.num_blocks", 1),
    integer("control.channels", 1),  # The dataset's control_channels: _dataset_problems.
    text("control.base_workdir"),
    # Sampling.
    one_of("sampling.sampler", samplers.SAMPLERS),
    integer("sampling.num_steps", 1),
    one_of("sampling.spacing", schedules.SPACINGS),
    positive("sampling.rho"),
    non_negative("sampling.eta"),
    one_of("sampling.ddpm_variance", samplers.DDPM_VARIANCES),
    non_negative("sampling.s_churn"),
    non_negative("sampling.s_tmin"),
    non_negative("sampling.s_tmax"),
    non_negative("sampling.s_noise"),
    non_negative("sampling.text_scale"),
    non_negative("sampling.reference_scale"),
    non_negative("sampling.audio_scale"),
    # Optimization.
    *state_lib.optimizer_rules(),
    # Mesh and hosts.
    Rule("mesh.shape", _mesh_shape_ok,
         f"a dict over axes {mesh_lib.MESH_AXES} of sizes >= 1, at most one -1"),
    Rule("mesh.logical_axis_rules", _axis_rules_ok,
         f"(logical name, mesh axes) pairs with mesh axes in {mesh_lib.MESH_AXES} or None"),
    text("distributed.coordinator_address"),
    integer("distributed.num_processes", 1),
    integer("distributed.process_id", 0),
    boolean("distributed.auto_detect"),
    # Checkpoints and logs.
    *checkpoint_lib.CHECKPOINT_RULES,
    integer("log.every_steps", 1),
    integer("log.sample_every_steps", 0),
    integer("log.num_samples", 0),
)


def _cross_field_problems(c: ml_collections.ConfigDict) -> list[str]:
  """Constraints between fields (run only when every single field is valid)."""
  checks = [
      (c.model.width % c.model.num_heads == 0,
       f"config.model.width = {c.model.width} must be divisible by config.model.num_heads = "
       f"{c.model.num_heads}"),
      (latents.enabled(c) or c.data.resolution % c.model.patch_size == 0,
       f"config.data.resolution = {c.data.resolution} must be divisible by "
       f"config.model.patch_size = {c.model.patch_size}"),
      (c.data.mel_window == c.model.mel_window,
       f"config.data.mel_window = {c.data.mel_window} must equal config.model.mel_window = "
       f"{c.model.mel_window}"),
      (c.data.text_max_len == c.model.text_max_len,
       f"config.data.text_max_len = {c.data.text_max_len} must equal "
       f"config.model.text_max_len = {c.model.text_max_len}"),
      (c.diffusion.time_shift == 1.0 or c.diffusion.noise_distribution == "uniform",
       f"config.diffusion.time_shift = {c.diffusion.time_shift} shifts the 'uniform' noise "
       f"distribution; config.diffusion.noise_distribution is "
       f"{c.diffusion.noise_distribution!r}"),
      (c.diffusion.max_motion_frames < c.data.num_frames,
       f"config.diffusion.max_motion_frames = {c.diffusion.max_motion_frames} must be < "
       f"config.data.num_frames = {c.data.num_frames}"),
      (c.data.num_train >= c.data.batch_size,
       f"config.data.num_train = {c.data.num_train} must be >= config.data.batch_size = "
       f"{c.data.batch_size} (training batches drop the remainder)"),
      (c.log.num_samples <= c.data.batch_size,
       f"config.log.num_samples = {c.log.num_samples} must be <= config.data.batch_size = "
       f"{c.data.batch_size} (samples are drawn for the last batch's conditions)"),
      (c.sampling.s_tmin <= c.sampling.s_tmax,
       f"config.sampling.s_tmin = {c.sampling.s_tmin} must be <= config.sampling.s_tmax = "
       f"{c.sampling.s_tmax}"),
      (c.distributed.process_id < c.distributed.num_processes,
       f"config.distributed.process_id = {c.distributed.process_id} must be < "
       f"config.distributed.num_processes = {c.distributed.num_processes}"),
  ]
  pixel_weight = step.pixel_loss_weight(c)
  if c.lipsync.weight > 0 or pixel_weight > 0:
    checks += [
        (c.data.num_frames >= syncnet.SYNC_FRAMES,
         f"the lip-sync and decoded pixel losses need clips of >= {syncnet.SYNC_FRAMES} "
         f"frames, config.data.num_frames = {c.data.num_frames}"),
        (c.lipsync.clips_per_step <= c.data.batch_size,
         f"config.lipsync.clips_per_step = {c.lipsync.clips_per_step} must be <= "
         f"config.data.batch_size = {c.data.batch_size} (0 = every clip)"),
    ]
  if pixel_weight > 0:
    checks.append((latents.enabled(c),
                   f"config.latent.pixel_loss_weight = {pixel_weight} needs a "
                   f"latent run (config.latent.source = 'none' diffuses pixels)"))
  if c.lipsync.weight > 0:
    expert = experts.EXPERTS[c.lipsync.expert]
    field = f"config.lipsync.{expert.weights_field}"
    path = c.lipsync[expert.weights_field]
    checks += [
        (bool(path), f"config.lipsync.weight > 0 with expert {c.lipsync.expert!r} needs "
                     f"{field} ({expert.weights_help})"),
        (not path or PATH_EXISTS[expert.weights_kind](path),
         f"{field} = {path!r} does not exist ({expert.weights_help})"),
    ]
  found = ([message for ok, message in checks if not ok] + _pretrained_problems(c)
           + _dataset_problems(c) + _latent_problems(c) + _identity_problems(c))
  if control.enabled(c):
    found += _control_problems(c)
  for what, build in (("config.sampling", lambda: sampling.sampler_config(c)),
                      ("config.diffusion", lambda: step.make_loss_config(c.diffusion))):
    try:  # The samplers' and losses' own checks (e.g. spacings a schedule supports).
      build()
    except ValueError as e:
      found.append(f"{what}: {e}")
  return found


def _latent_problems(c: ml_collections.ConfigDict) -> list[str]:
  """A latent run: where the autoencoder is, and a model that fits its latents."""
  if not latents.enabled(c):
    return []
  source, path = c.latent.source, c.latent.path
  if source != "random":
    if not path:
      return [f"config.latent.source = {source!r} needs config.latent.path"]
    if not os.path.exists(path):
      return [f"config.latent.path = {path!r} does not exist"]
  if control.enabled(c):
    return ["config.control.enabled: ControlNet runs are pixel runs (control maps are not "
            "encoded); set config.latent.source = 'none'"]
  try:
    ae_config = latents.load(c).config
  except (ValueError, OSError) as e:
    return [f"config.latent: {e}"]
  f, channels = ae_config.downsampling, ae_config.latent_channels
  found = []
  if c.model.in_channels != channels:
    found.append(f"config.model.in_channels = {c.model.in_channels} must equal the "
                 f"autoencoder's latent channels {channels} in a latent run")
  if c.data.resolution % f:
    found.append(f"config.data.resolution = {c.data.resolution} must be divisible by the "
                 f"autoencoder's downsampling {f}")
  elif (c.data.resolution // f) % c.model.patch_size:
    found.append(f"the latent grid {c.data.resolution // f} (config.data.resolution / {f}) "
                 f"must be divisible by config.model.patch_size = {c.model.patch_size}")
  return found


def _pretrained_problems(c: ml_collections.ConfigDict) -> list[str]:
  """Weight paths that must exist for the encoders the model uses."""
  found = []
  text_encoder, p = c.model.text_encoder, c.pretrained
  if text_encoder in text_encoders.ENCODERS:
    if not p.text_path and text_encoders.ENCODERS[text_encoder].default_folder is None:
      found.append(f"config.model.text_encoder = {text_encoder!r} needs "
                   "config.pretrained.text_path: the folder of its weights (config.json, "
                   "tokenizer.json, *.safetensors)")
    elif p.text_path and not os.path.isdir(p.text_path):
      found.append(f"config.pretrained.text_path = {p.text_path!r} is not a folder")
  family = audio_encoders.ENCODERS.get(c.model.audio_encoder)
  if family is not None:
    if p.audio_size and p.audio_size not in family.CONFIGS:
      found.append(f"config.pretrained.audio_size = {p.audio_size!r} is not a "
                   f"{c.model.audio_encoder} size; expected one of {tuple(family.CONFIGS)} or "
                   "'' (the checkpoint's own, or the first for random weights)")
    if p.audio_layers not in family.LAYERS:
      found.append(f"config.pretrained.audio_layers = {p.audio_layers!r}: "
                   f"{c.model.audio_encoder} offers {tuple(family.LAYERS)}")
    if p.audio_path and not os.path.exists(p.audio_path):
      found.append(f"config.pretrained.audio_path = {p.audio_path!r} does not exist")
  return found


def _dataset_problems(c: ml_collections.ConfigDict) -> list[str]:
  """What the chosen dataset (`datasets.DATASETS[config.data.name]`) cannot provide."""
  dataset = datasets.DATASETS[c.data.name]
  found = []
  if dataset.resolutions is not None and c.data.resolution not in dataset.resolutions:
    found.append(f"config.data.resolution = {c.data.resolution}: expected one of "
                 f"{dataset.resolutions} for config.data.name = {c.data.name!r}")
  if control.enabled(c) and not dataset.control_channels:
    found.append(f"config.control.enabled needs control maps, which config.data.name = "
                 f"{c.data.name!r} does not make (its registry entry has no 'control_maps')")
  elif control.enabled(c) and c.control.channels != dataset.control_channels:
    found.append(f"config.control.channels = {c.control.channels}: config.data.name = "
                 f"{c.data.name!r} makes control maps of {dataset.control_channels} channels")
  if c.model.get("reference_frames", 0) and dataset.reference is None:
    found.append(f"config.model.reference_frames = {c.model.reference_frames} needs reference "
                 f"frames, which config.data.name = {c.data.name!r} does not give (its "
                 f"registry entry has no `reference`)")
  for key, field in step.WEIGHTED_REGIONS:
    if c.diffusion.get(field, 1.0) != 1.0 and key not in dataset.derived:
      found.append(f"config.diffusion.{field} = {c.diffusion[field]} weighs the {key!r} "
                   f"region, which config.data.name = {c.data.name!r} does not make (its "
                   f"registry entry makes {sorted(dataset.derived)})")
  if c.model.get("masked_source", False) and "source_mask" not in dataset.derived:
    found.append(f"config.model.masked_source needs a dubbing mask, which config.data.name = "
                 f"{c.data.name!r} does not make (its registry entry has no 'source_mask')")
  return found


def _identity_problems(c: ml_collections.ConfigDict) -> list[str]:
  """What identity conditioning (`model.reference_frames`, `model.masked_source`) needs."""
  m = c.model
  keep_source = c.diffusion.get("keep_source", False)
  if not (m.get("reference_frames", 0) or m.get("masked_source", False) or keep_source):
    return []
  checks = [
      (m.get("masked_source", False) or not keep_source,
       "config.diffusion.keep_source keeps the source outside the dubbing mask: it needs "
       "config.model.masked_source"),
      (m.frame_conditioning or not m.get("reference_frames", 0)
       or m.get("reference_inputs", "frames") == "channels",
       "config.model.reference_frames > 0 needs config.model.frame_conditioning (reference "
       "frames enter as known frames)"),
      (not latents.enabled(c), "config.model.reference_frames / masked_source: identity "
       "conditioning runs in pixel space so far; set config.latent.source = 'none'"),
      (not control.enabled(c), "config.model.reference_frames / masked_source: a ControlNet "
       "run's branch does not take the person's conditions; train without config.control"),
  ]
  return [message for ok, message in checks if not ok]


def _control_problems(c: ml_collections.ConfigDict) -> list[str]:
  """A ControlNet run's checks: block count, and a base run of the same model to start from."""
  found = []
  if c.control.num_blocks > c.model.depth:
    found.append(f"config.control.num_blocks = {c.control.num_blocks} must be <= "
                 f"config.model.depth = {c.model.depth} (the branch copies that many blocks)")
  base = c.control.base_workdir
  if not base:
    return found + ["config.control.enabled needs config.control.base_workdir: a trained "
                    "run_train.py workdir whose EMA params become the frozen base (training "
                    "the base and the branch together from scratch is not supported)"]
  saved = directory.read_config(base) if os.path.isdir(base) else None
  if saved is None:
    return found + [f"config.control.base_workdir = {base!r} is not a run_train.py workdir "
                    f"(no {os.path.join(base, directory.CONFIG_FILE)}); train the base first"]
  if control.enabled(ml_collections.ConfigDict(saved)):
    found.append(f"config.control.base_workdir = {base!r} is a ControlNet run; its base must "
                 f"be a plain run")
  model = config_rules.flat_fields(json.loads(c.model.to_json()))  # As it would be saved.
  found += [f"config.model.{k} = {model.get(k, '<missing>')!r} but the base run in {base} has "
            f"{v!r} (the branch needs the base's model config)"
            for k, v in config_rules.flat_fields(saved.get("model", {})).items()
            if model.get(k) != v]
  return found


def problems(config: ml_collections.ConfigDict, rules: Sequence[Rule] = RULES) -> list[str]:
  """Every problem of `config` as one line each (empty if the config is valid)."""
  found = config_rules.field_problems(config, rules, "configs/tiny.py")
  if not found:
    found = _cross_field_problems(config)
  return found


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` listing every invalid, missing or unknown field of `config`."""
  found = problems(config)
  if found:
    raise ConfigError("invalid config:\n  " + "\n  ".join(found))
