"""Trains the KL autoencoder (`gcm_jax.models.autoencoder`) on the frames of a configured dataset.

  python -m gcm_jax.train.train_autoencoder --config=configs/autoencoder.py --workdir=DIR
  python -m gcm_jax.train.train_autoencoder --workdir=DIR --config.train.num_steps=50

Frames come from the project's input pipeline (`gcm_jax.data.pipeline.make_dataset`, any
`config.data.name`; 'video' `[B, T, R, R, 3]` in [-1, 1]); each step trains on
`train.frames_per_clip` random frames of every clip of the global batch (the autoencoder folds
them into its batch). Loss per frame, averaged over the frames:

  reconstruction (L1 or L2, per value) + ssim_weight * (1 - SSIM)
    + kl_weight * KL(posterior || N(0, I)) / (H W 3)

with the values inside the clip's mouth region (pipeline feature 'mouth_region', from the
keypoints) weighted `mouth_weight` times in the reconstruction mean: a small autoencoder
otherwise spends its capacity on the large flat areas and blurs a mouth of a few pixels
away (docs/results.md, "The latent CPU recipe").

The KL term divided by the number of pixel values puts `kl_weight` on SD's scale (SD sums the
reconstruction over pixels and adds 1e-6 x the KL summed over latents). The decoder reads a
posterior sample. No patch-GAN discriminator (not implemented).

The run uses the loop every model family shares (`gcm_jax.train.loop`): `gcm_jax.runs.state`
(TrainState, AdamW with warmup + cosine decay and clipping, non-finite steps skipped, EMA),
Orbax checkpoints with the data iterator's position (`gcm_jax.runs.checkpoint`),
`metrics.jsonl` + TensorBoard (`gcm_jax.train.metrics`). The key of step k is
`fold_in(PRNGKey(seed), k)` and the batches resume from the iterator state, so rerunning with
the same workdir resumes from the newest readable checkpoint and reproduces an uninterrupted
run (a changed config that defines the run is refused: `RESUMABLE_FIELDS`,
`runs.directory.check_resumable`). After the last step, with the EMA params:

  * the latent statistics of `latent_stats.num_batches` training batches: shift = mean of the
    posterior means, scale = 1 / std(mean - shift) (as SD3 / Flux compute theirs);
  * held-out PSNR / SSIM (posterior mean decoded, clipped to [-1, 1]) on `eval.split`.

Writes to `workdir`:

  config.json          the run's config (resume check)
  checkpoints/, logs/  Orbax checkpoints, metrics.jsonl + TensorBoard
  autoencoder_params/  the final EMA params (Orbax, `gcm_jax.runs.export`)
  autoencoder.json     {"config": AutoencoderConfig fields with the data's scaling_factor and
                        shift_factor, "step", "params": "ema"}
  report.json          {"report": held-out PSNR / SSIM, latent statistics, times; "config"}

`gcm_jax.models.trained_autoencoder.load_trained_autoencoder(workdir)` returns
(AutoencoderConfig, params) for latent diffusion and `autoencoder_identity(workdir)` a string
that changes whenever those change (latent caches).
"""
import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from gcm_jax import config_rules as cv
from gcm_jax import image_quality
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.models import autoencoder as ae
from gcm_jax.models import trained_autoencoder
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import export
from gcm_jax.runs import state as state_lib
from gcm_jax.train import command
from gcm_jax.train import loop


Batch = Mapping[str, jax.Array]
REPORT_FILE = "report.json"
DEFAULT_CONFIG = "autoencoder"  # gcm_jax/configs/autoencoder.py

# Per-value reconstruction losses (config.loss.reconstruction).
RECONSTRUCTION_LOSSES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "l1": jnp.abs,
    "l2": jnp.square,
}
EVAL_SPLITS = ("validation", "test")
# config.model: the AutoencoderConfig fields a run chooses (the rest keep their defaults).
MODEL_FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                "mid_block_add_attention")


RULES: tuple[cv.Rule, ...] = (
    cv.integer("seed", 0),
    cv.integer("num_devices", 0),
    cv.int_tuple("model.block_out_channels"),
    cv.integer("model.layers_per_block", 1),
    cv.integer("model.latent_channels", 1),
    cv.integer("model.norm_num_groups", 1),
    cv.boolean("model.mid_block_add_attention"),
    # The data section: the diffusion config's rules for it (configs/tiny.py's fields).
    *pipeline.DATA_RULES,
    cv.one_of("loss.reconstruction", RECONSTRUCTION_LOSSES),
    cv.non_negative("loss.ssim_weight"),
    cv.non_negative("loss.kl_weight"),
    cv.positive("loss.mouth_weight"),
    *state_lib.optimizer_rules(),
    cv.integer("train.frames_per_clip", 1),
    cv.one_of("eval.split", EVAL_SPLITS),
    cv.integer("latent_stats.num_batches", 1),
    *checkpoint_lib.CHECKPOINT_RULES,
    cv.integer("log.every_steps", 1),
)

# Fields that may differ when a run resumes (a prefix ending in "." covers a section; the global
# batches and the replicated state do not depend on the device count); the others define the
# run and must equal its config.json.
RESUMABLE_FIELDS = ("num_devices", "train.num_steps", "eval.", "latent_stats.", "checkpoint.",
                    "log.", "data.data_dir", "data.build_if_missing", "data.worker_count")


def autoencoder_config(config: ml_collections.ConfigDict, scaling_factor: float = 1.0,
                       shift_factor: float = 0.0) -> ae.AutoencoderConfig:
  """The AutoencoderConfig of `config.model` with the given latent scale / shift."""
  fields = {k: config.model[k] for k in MODEL_FIELDS}
  fields["block_out_channels"] = tuple(fields["block_out_channels"])
  return ae.AutoencoderConfig(**fields, scaling_factor=scaling_factor, shift_factor=shift_factor)


def _cross_field_problems(c: ml_collections.ConfigDict) -> list[str]:
  try:
    downsampling = autoencoder_config(c).downsampling
  except ValueError as e:
    return [f"config.model: {e}"]
  checks = [
      (c.data.resolution % downsampling == 0,
       f"config.data.resolution = {c.data.resolution} must be a multiple of the autoencoder's "
       f"downsampling {downsampling} (2^(len(config.model.block_out_channels) - 1))"),
      (c.train.frames_per_clip <= c.data.num_frames,
       f"config.train.frames_per_clip = {c.train.frames_per_clip} must be <= "
       f"config.data.num_frames = {c.data.num_frames}"),
      (c.data.num_train >= c.data.batch_size,
       f"config.data.num_train = {c.data.num_train} must be >= config.data.batch_size = "
       f"{c.data.batch_size} (training batches drop the remainder)"),
      (c.data.resolution >= image_quality.SSIM_WINDOW,
       f"config.data.resolution = {c.data.resolution} must be >= {image_quality.SSIM_WINDOW} "
       f"(the SSIM window)"),
  ]
  found = [message for ok, message in checks if not ok]
  resolutions = datasets.DATASETS[c.data.name].resolutions
  if resolutions is not None and c.data.resolution not in resolutions:
    found.append(f"config.data.resolution = {c.data.resolution}: expected one of {resolutions} "
                 f"for config.data.name = {c.data.name!r}")
  if c.eval.split == "validation" and c.data.num_validation == 0 or (
      c.eval.split == "test" and c.data.num_test == 0):
    found.append(f"config.eval.split = {c.eval.split!r} but config.data.num_{c.eval.split} = 0")
  return found


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of an autoencoder-training config (fields: configs/autoencoder.py), one
  line each (empty if valid)."""
  return (cv.field_problems(config, RULES, "configs/autoencoder.py")
          or _cross_field_problems(config))


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises `config_rules.ConfigError` listing every problem of `config` (`problems`)."""
  found = problems(config)
  if found:
    raise cv.ConfigError("invalid autoencoder config:\n  " + "\n  ".join(found))


def create_state(config: ml_collections.ConfigDict, key: jax.Array) -> state_lib.TrainState:
  """TrainState of freshly initialized AutoencoderKL params and `config.train`'s optimizer."""
  return state_lib.create_state(trained_autoencoder.init_params(autoencoder_config(config), key),
                                state_lib.make_optimizer(config.train))


def abstract_state(config: ml_collections.ConfigDict) -> state_lib.TrainState:
  """`create_state`'s shapes and dtypes (nothing computed)."""
  optimizer = state_lib.make_optimizer(config.train)
  return jax.eval_shape(lambda p: state_lib.create_state(p, optimizer),
                        ae.expected_params(autoencoder_config(config)))


def select_frames(video: jax.Array, num: int, key: jax.Array) -> jax.Array:
  """`num` distinct random frames of every clip: `[B, T, ...]` -> `[B, num, ...]` (the same
  frames for every array of one clip given the same key)."""
  b, t = video.shape[:2]
  idx = jax.vmap(lambda k: jax.random.choice(k, t, (num,), replace=False))(
      jax.random.split(key, b))
  return jnp.take_along_axis(video, idx.reshape(b, num, *(1,) * (video.ndim - 2)), axis=1)


def autoencoder_loss(params: Any, model: ae.AutoencoderKL, frames: jax.Array, key: jax.Array,
                     loss_config: Mapping[str, Any], mouth_region: Optional[jax.Array] = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Reconstruction + SSIM + KL loss of a posterior sample's decoding (module docstring).

  Args:
    frames: `[B, T, H, W, 3]` in [-1, 1].
    loss_config: `config.loss` (reconstruction, ssim_weight, kl_weight, mouth_weight).
    mouth_region: bool `[B, T, H, W]`, needed when `loss_config['mouth_weight'] != 1`: the
      reconstruction of its pixels weighs `mouth_weight` times the others.

  Returns:
    (loss, metrics: loss, reconstruction, ssim, kl (per frame, summed over latents), psnr).
  """
  recon, mean, logvar = model.apply({"params": params}, frames, key)
  per_value = RECONSTRUCTION_LOSSES[loss_config["reconstruction"]](recon - frames)
  if loss_config["mouth_weight"] != 1.0:
    if mouth_region is None:
      raise ValueError("loss.mouth_weight != 1 needs the batch's 'mouth_region'")
    per_value = per_value * jnp.where(mouth_region, loss_config["mouth_weight"], 1.0)[..., None]
  reconstruction = jnp.mean(per_value)
  ssim = jnp.mean(image_quality.ssim(recon, frames))
  kl = jnp.mean(ae.kl_divergence(mean, logvar))
  values_per_frame = frames[0, 0].size
  loss = (reconstruction + loss_config["ssim_weight"] * (1.0 - ssim)
          + loss_config["kl_weight"] * kl / values_per_frame)
  psnr = jnp.mean(image_quality.psnr(jnp.clip(recon, -1.0, 1.0), frames))
  return loss, {"loss": loss, "reconstruction": reconstruction, "ssim": ssim, "kl": kl,
                "psnr": psnr}


def train_step(state: state_lib.TrainState, batch: Batch, key: jax.Array, *,
               model: ae.AutoencoderKL, optimizer: optax.GradientTransformation,
               train_config: Mapping[str, Any], loss_config: Mapping[str, Any]
               ) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One pure optimization step (jit with the keywords bound; `optimizer` from
  `state.make_optimizer(train_config)`).

  Args:
    batch: {'video': `[B, T, H, W, 3]` in [-1, 1]} (+ 'mouth_region' bool `[B, T, H, W]` for
      `loss_config['mouth_weight'] != 1`); `train_config['frames_per_clip']` random frames of
      each clip are trained on.
    key: picks the frames and samples the posterior.

  Returns:
    (state, `autoencoder_loss` metrics + grad_norm, learning_rate, skipped_steps).
  """
  k_frames, k_sample = jax.random.split(key)
  num = train_config["frames_per_clip"]
  frames = select_frames(batch["video"], num, k_frames)
  mouth = (select_frames(batch["mouth_region"], num, k_frames) if "mouth_region" in batch
           else None)
  grads, out = jax.grad(autoencoder_loss, has_aux=True)(state.params, model, frames, k_sample,
                                                       loss_config, mouth)
  return state_lib.update_with_metrics(state, grads, out, optimizer, train_config)


@functools.lru_cache(maxsize=None)
def compiled_train_step(config: ae.AutoencoderConfig, train_items: tuple[tuple[str, Any], ...],
                        loss_items: tuple[tuple[str, Any], ...],
                        sharding: jax.sharding.Sharding) -> Callable[..., Any]:
  """`train_step` jitted for an architecture and (sorted items of) config.train / config.loss,
  state and metrics on `sharding`, the state donated; compiled once per process for each."""
  train_config = dict(train_items)
  return jax.jit(functools.partial(train_step, model=ae.AutoencoderKL(config),
                                   optimizer=state_lib.make_optimizer(train_config),
                                   train_config=train_config, loss_config=dict(loss_items)),
                 out_shardings=(sharding, sharding), donate_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def reconstruct(config: ae.AutoencoderConfig, params: Any, video: jax.Array) -> jax.Array:
  """The posterior mean decoded and clipped to [-1, 1]: video `[B, T, H, W, 3]` -> the same."""
  return jnp.clip(ae.AutoencoderKL(config).apply({"params": params}, video)[0], -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _quality_sums(config: ae.AutoencoderConfig, params: Any, video: jax.Array,
                  mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum of per-frame PSNR, of per-frame SSIM, frame count) over the rows with `mask`."""
  recon = reconstruct(config, params, video)
  weight = jnp.broadcast_to(mask[:, None], video.shape[:2]).astype(jnp.float32)
  return (jnp.sum(weight * image_quality.psnr(recon, video)),
          jnp.sum(weight * image_quality.ssim(recon, video)), jnp.sum(weight))


@functools.partial(jax.jit, static_argnums=0)
def _latent_sums(config: ae.AutoencoderConfig, params: Any, video: jax.Array,
                 mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum, sum of squares, count) of the posterior means' values over the rows with `mask`."""
  mean = ae.AutoencoderKL(config).apply({"params": params}, video, method="encode")[0]
  weight = mask.astype(jnp.float32)[:, None, None, None, None]
  return (jnp.sum(weight * mean), jnp.sum(weight * jnp.square(mean)),
          jnp.sum(jnp.broadcast_to(weight, mean.shape)))


def evaluate(config: ae.AutoencoderConfig, params: Any,
             batches: Iterable[Batch]) -> dict[str, float]:
  """Held-out reconstruction quality of the posterior mean, decoded and clipped to [-1, 1].

  Args:
    config: the architecture of `params`.
    batches: {'video': `[B, T, H, W, 3]` in [-1, 1], 'mask': bool `[B]` (padding rows False),
      other keys ignored}.

  Returns:
    {'psnr': mean per-frame PSNR (dB), 'ssim': mean per-frame SSIM, 'num_frames'}.
  """
  totals = [0.0, 0.0, 0.0]
  for batch in batches:
    sums = _quality_sums(config, params, batch["video"], batch["mask"])
    totals = [t + float(s) for t, s in zip(totals, sums)]
  psnr, ssim, count = totals
  if count == 0:
    raise ValueError("no held-out frames to evaluate")
  return {"psnr": psnr / count, "ssim": ssim / count, "num_frames": int(count)}


def latent_statistics(config: ae.AutoencoderConfig, params: Any,
                      batches: Iterable[Batch]) -> tuple[float, float]:
  """(shift, scale) of the posterior means of the frames in `batches`: shift = their mean,
  scale = 1 / their standard deviation (over every latent value; padding rows excluded).

  Args:
    config: the architecture of `params`.
    batches: {'video': `[B, T, H, W, 3]`, 'mask': bool `[B]`, other keys ignored}.
  """
  total = total_sq = count = 0.0
  for batch in batches:
    s, sq, n = _latent_sums(config, params, batch["video"], batch["mask"])
    total, total_sq, count = total + float(s), total_sq + float(sq), count + float(n)
  if count == 0:
    raise ValueError("no frames to compute the latent statistics from")
  shift = total / count
  std = max(total_sq / count - shift * shift, 0.0) ** 0.5
  if not std > 0:
    raise ValueError("the posterior means are constant (std 0): the latent scale is undefined")
  return shift, 1.0 / std


# --- the run -------------------------------------------------------------------------------------

def make_mesh(num_devices: int) -> jax.sharding.Mesh:
  """The data-parallel mesh: batches split over 'data', params replicated, over all devices
  (`num_devices` 0, multi-host too) or this host's first `num_devices`.

  Raises:
    ValueError: more devices asked for than this host has.
  """
  devices = jax.devices()
  if num_devices:
    if num_devices > jax.local_device_count():
      raise ValueError(f"config.num_devices = {num_devices} but this host has "
                       f"{jax.local_device_count()} devices")
    devices = jax.local_devices()[:num_devices]
  return mesh_lib.make_mesh({"shape": {"data": -1, "fsdp": 1, "tensor": 1}}, devices)


def _write_json(path: str, value: Any) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
  os.replace(path + ".tmp", path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: Optional[int] = None) -> Optional[dict[str, Any]]:
  """Trains (or resumes) the autoencoder, writes the params, latent statistics and held-out
  report into `workdir` (module docstring) and returns the report.

  `stop_at_step` ends training at that step (checkpointed, schedule unchanged) and returns
  None; rerunning resumes it.

  Raises:
    config_rules.ConfigError: an invalid config (every problem listed).
    directory.ConfigMismatchError: `workdir` holds a run with a different config.
    checkpoint.CheckpointError: no checkpoint in `workdir` can be read.
  """
  validate(config)
  config = directory.with_data_dir(config, workdir)
  checkpointer = loop.open_run(config, workdir, RESUMABLE_FIELDS, "an autoencoder run")
  mesh = make_mesh(config.num_devices)
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = abstract_state(config)
  restored = checkpoint_lib.restore_for_resume(
      checkpointer, checkpoint_lib.abstract_with_shardings(
          abstract, jax.tree.map(lambda _: replicated, abstract)))
  state, data_state = ((jax.device_put(create_state(config, jax.random.PRNGKey(config.seed)),
                                        replicated), None) if restored is None
                       else restored)
  directory.write_config(config, workdir)
  # A data-only config: the pipeline reads no model fields (no frozen-encoder features).
  data_config = ml_collections.ConfigDict({"data": config.data.to_dict()})
  train_keys = ("video",) + (("mouth_region",) if config.loss.mouth_weight != 1.0 else ())
  data = pipeline.make_dataset(data_config, "train", mesh, batch_axes=mesh_lib.BATCH_AXES,
                               seed=config.seed, device_keys=train_keys + ("mask",))
  if data_state is not None:
    data.set_state(data_state["iterator"].encode("utf-8"))

  ae_config = autoencoder_config(config)
  step_fn = compiled_train_step(ae_config, tuple(sorted(config.train.items())),
                                tuple(sorted(config.loss.items())), replicated)
  base_key = jax.random.PRNGKey(config.seed)
  num_steps = config.train.num_steps
  t0 = time.time()
  state = loop.run(
      state, lambda s, batch, step: step_fn(s, {k: batch[k] for k in train_keys},
                                            jax.random.fold_in(base_key, step)),
      lambda step: next(data), checkpointer, workdir, num_steps=num_steps,
      log_every=config.log.every_steps, stop_at_step=stop_at_step,
      data_state=lambda: {"iterator": data.get_state().decode("utf-8")}, desc="autoencoder",
      shown=(("loss", ".4f"), ("psnr", ".2f")))
  train_seconds = time.time() - t0
  if int(state.step) < num_steps:
    return None

  params = state.ema_params
  t0 = time.time()
  stats_data = pipeline.make_dataset(data_config, "train", mesh, batch_axes=mesh_lib.BATCH_AXES,
                                     seed=config.seed + 1, num_epochs=1, shuffle=True,
                                     device_keys=("video", "mask"))
  shift, scale = latent_statistics(ae_config, params,
                                   itertools.islice(stats_data, config.latent_stats.num_batches))
  held_out = pipeline.make_dataset(data_config, config.eval.split, mesh,
                                   batch_axes=mesh_lib.BATCH_AXES, num_epochs=1,
                                   device_keys=("video", "mask"))
  quality = evaluate(ae_config, params, held_out)
  report = {f"{config.eval.split}_psnr": quality["psnr"],
            f"{config.eval.split}_ssim": quality["ssim"],
            f"{config.eval.split}_frames": quality["num_frames"],
            "scaling_factor": scale, "shift_factor": shift, "step": num_steps,
            "train_seconds_this_run": train_seconds, "eval_seconds": time.time() - t0}
  export.save_params(os.path.join(workdir, trained_autoencoder.PARAMS_FILE), params)
  if jax.process_index() == 0:
    trained = autoencoder_config(config, scaling_factor=scale, shift_factor=shift)
    _write_json(os.path.join(workdir, trained_autoencoder.AUTOENCODER_FILE),
                {"config": dataclasses.asdict(trained), "step": num_steps, "params": "ema",
                 "params_file": trained_autoencoder.PARAMS_FILE})
    _write_json(os.path.join(workdir, REPORT_FILE), {"report": report,
                                                     "config": config.to_dict()})
  logging.info("autoencoder report: %s", report)
  return report


def main() -> None:
  """`python -m gcm_jax.train.train_autoencoder` (`gcm-train autoencoder`)."""
  command.run(train_and_evaluate, DEFAULT_CONFIG, "autoencoder")


if __name__ == "__main__":
  main()
