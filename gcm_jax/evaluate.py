"""Evaluates a trained model on held-out talking faces: colors, lip sync, LSE.

  python -m gcm_jax.evaluate --workdir=/tmp/recipe --syncnet_workdir=/tmp/syncnet

For `num_clips` clips of the test split (phrases and voices never seen in training),
each `clip_frames` long, the model generates a video from the clip's caption and audio
(long-video extension over windows of the training length). Measured:
  * color accuracy: the generated face / background color, read as the nearest palette
    color to the median pixel inside the head (from the clip's keypoints) / on the image
    border, equals the color the caption asks for;
  * lip sync against the audio that drove the generation ("matched") and against another
    clip's audio ("shuffled"): the oracle mouth-opening correlation
    (`alignment.metrics.oracle_lipsync`) and SyncNet LSE-D / LSE-C
    (`alignment.metrics.lse_metrics`, syncnet_python's definitions).
The same numbers for the ground-truth clips bound what is reachable. A ControlNet run
generates with each test clip's own control maps (its keypoint heatmaps + head layout,
`pipeline.preprocess`), and the report says so (`control_maps_from_test_clips`); the
color read-out inside the clip's head layout then also checks that the head follows them.

`condition_usage` (in the report) shows, per noise level, whether the denoiser takes the
colors from the text and the mouth from the audio (the diagnostic behind docs/results.md).
"""
import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcm_jax import generate
from gcm_jax import sampling
from gcm_jax.alignment import metrics
from gcm_jax.alignment import syncnet as syncnet_lib
from gcm_jax.alignment import train_syncnet
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.diffusion import extension
from gcm_jax.diffusion import schedules
from gcm_jax.train import control

EVAL_KEYS = ("video", "mel", "mouth_open", "text_tokens", "text_mask", "keypoints",
             "face_color", "background_color")


def nearest_color(rgb: np.ndarray) -> np.ndarray:
  """Palette index of the nearest caption color to `rgb` `[..., 3]` in [-1, 1]."""
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  return np.argmin(np.linalg.norm(rgb[..., None, :] - palette, axis=-1), axis=-1)


def read_colors(video: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(face, background) palette indices `[B]` of videos `[B, T, R, R, 3]`.

  Face: median pixel where the head layout of `keypoints` `[B, T, K, 2]` is > 0.9;
  background: median pixel of the 2-pixel image border.
  """
  r = video.shape[2]
  inside = keypoint_maps.head_layout(keypoints, r)[..., 0] > 0.9
  border = np.ones((r, r), bool)
  border[2:-2, 2:-2] = False
  face = np.stack([np.median(v[m], axis=0) for v, m in zip(video, inside)])
  background = np.stack([np.median(v[:, border], axis=(0, 1)) for v in video])
  return nearest_color(face), nearest_color(background)


def sync_metrics(video: jax.Array, mel: jax.Array, mouth_open: jax.Array, syncnet: Any,
                 syncnet_vars: Any, audio_frame_offset: int) -> dict[str, float]:
  """Mean oracle mouth correlation, LSE-D and LSE-C of `video` against the audio `mel`."""
  oracle = metrics.oracle_lipsync(video, mouth_open)
  lse = metrics.lse_metrics(syncnet, syncnet_vars, video, mel,
                            audio_frame_offset=audio_frame_offset)
  return {"mouth_corr": float(jnp.mean(oracle["mouth_corr"])),
          "lse_d": float(jnp.mean(lse["lse_d"])), "lse_c": float(jnp.mean(lse["lse_c"]))}


def cond_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The clip features a run generates from: caption, audio (and control maps)."""
  return ("text_tokens", "text_mask", "mel") + control.batch_keys(config)


def generate_for_clips(trained: generate.TrainedModel, clips: dict[str, np.ndarray],
                       key: jax.Array, batch_size: int = 16) -> np.ndarray:
  """Videos `[N, T, R, R, 3]` for the clips' captions and audio (and control maps; long-video
  extension)."""
  config = trained.config
  cfg = sampling.sampler_config(config)
  denoise = sampling.guided_denoiser(trained.apply_fn, trained.params, config)
  n, t, r = clips["video"].shape[:3]
  window = config.data.num_frames

  @jax.jit
  def run(k, cond):
    b = cond["mel"].shape[0]
    cond = dict(cond, drop_text=jnp.zeros((b,), bool), drop_audio=jnp.zeros((b,), bool))
    return extension.generate_long_video(denoise, k, cond, cfg, (b, t, r, r, 3), window,
                                         config.diffusion.max_motion_frames,
                                         time_keys=sampling.time_keys(config))

  videos = []
  for start in range(0, n, batch_size):
    cond = {k: jnp.asarray(clips[k][start:start + batch_size]) for k in cond_keys(config)}
    videos.append(np.asarray(jnp.clip(run(jax.random.fold_in(key, start), cond), -1, 1)))
  return np.concatenate(videos)


def condition_usage(trained: generate.TrainedModel, clips: dict[str, np.ndarray],
                    noise_levels: Sequence[float], key: jax.Array) -> list[dict[str, float]]:
  """Does the denoiser use its conditions at each noise level? (one call per level)

  Noises the ground-truth clips to schedule time t and reads the model's x0 estimate
  (no guidance) with all conditions, with the text dropped, and with another clip's audio.
  Colors can only come from the text, and mouths from the audio, once t is high enough
  to hide them in x_t. Returns per level: t, logsnr, face / background color accuracy with
  and without text, and the oracle mouth correlation for matched and shuffled audio.
  """
  config = trained.config
  schedule = schedules.from_name(config.diffusion.schedule)
  denoise = jax.jit(sampling.denoiser(trained.apply_fn, trained.params, config))
  x0 = jnp.asarray(clips["video"])
  b = x0.shape[0]
  shuffled = np.roll(np.arange(b), 1)
  mouth = jnp.asarray(clips["mouth_open"])
  cond = {k: jnp.asarray(clips[k]) for k in cond_keys(config)}
  cond.update(drop_text=jnp.zeros((b,), bool), drop_audio=jnp.zeros((b,), bool))
  variants = {"full": cond, "no_text": dict(cond, drop_text=jnp.ones((b,), bool)),
              "shuffled_audio": dict(cond, mel=cond["mel"][shuffled])}
  eps = jax.random.normal(key, x0.shape)
  rows = []
  for t in noise_levels:
    alpha, sigma = schedules.alpha_sigma(schedule, jnp.float32(t))
    x_t = alpha * x0 + sigma * eps
    row = {"t": float(t), "logsnr": float(schedule.logsnr(np.float64(t)))}
    for name, c in variants.items():
      x0_hat = denoise(x_t, jnp.full((b,), t, jnp.float32), c)
      if name != "shuffled_audio":
        face, background = read_colors(np.asarray(x0_hat), clips["keypoints"])
        row[f"face_color_accuracy_{name}"] = float(np.mean(face == clips["face_color"]))
        row[f"background_color_accuracy_{name}"] = float(
            np.mean(background == clips["background_color"]))
      if name != "no_text":
        row[f"mouth_corr_{name}"] = float(jnp.mean(
            metrics.oracle_lipsync(x0_hat, mouth)["mouth_corr"]))
    rows.append(row)
  return rows


NOISE_LEVELS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.98)


def evaluate(workdir: str, syncnet_workdir: str, num_clips: int = 32, clip_frames: int = 40,
             seed: int = 0, noise_levels: Sequence[float] = NOISE_LEVELS) -> dict[str, Any]:
  """Runs the evaluation described in the module docstring; returns a JSON-able report."""
  trained = generate.load_trained(workdir)
  config = trained.config
  syncnet, syncnet_vars = train_syncnet.load_matching_syncnet(syncnet_workdir, config.data)
  offset = syncnet_lib.frame_offset_for_alignment(config.data.mel_alignment)
  keys = EVAL_KEYS + control.batch_keys(config)
  clips = train_syncnet.make_clips("test", num_clips, clip_frames, config.data.resolution,
                                   config.data.mel_alignment, config.model.text_max_len, seed,
                                   keys=keys)
  videos = generate_for_clips(trained, clips, jax.random.PRNGKey(seed))
  face, background = read_colors(videos, clips["keypoints"])
  gt_face, gt_background = read_colors(clips["video"], clips["keypoints"])
  shuffled = np.roll(np.arange(num_clips), 1)
  mel, mouth = jnp.asarray(clips["mel"]), jnp.asarray(clips["mouth_open"])
  report = {
      "num_clips": num_clips, "clip_frames": clip_frames,
      "control_maps_from_test_clips": control.enabled(config),
      "face_color_accuracy": float(np.mean(face == clips["face_color"])),
      "background_color_accuracy": float(np.mean(background == clips["background_color"])),
      "ground_truth_face_color_accuracy": float(np.mean(gt_face == clips["face_color"])),
      "ground_truth_background_color_accuracy":
          float(np.mean(gt_background == clips["background_color"])),
      "generated_matched": sync_metrics(jnp.asarray(videos), mel, mouth, syncnet, syncnet_vars,
                                        offset),
      "generated_shuffled": sync_metrics(jnp.asarray(videos), mel[shuffled], mouth[shuffled],
                                         syncnet, syncnet_vars, offset),
      "ground_truth_matched": sync_metrics(jnp.asarray(clips["video"]), mel, mouth, syncnet,
                                           syncnet_vars, offset),
      "ground_truth_shuffled": sync_metrics(jnp.asarray(clips["video"]), mel[shuffled],
                                            mouth[shuffled], syncnet, syncnet_vars, offset),
  }
  short_clips = train_syncnet.make_clips(
      "test", num_clips, config.data.num_frames, config.data.resolution,
      config.data.mel_alignment, config.model.text_max_len, seed, keys=keys)
  report["condition_usage"] = condition_usage(trained, short_clips, noise_levels,
                                              jax.random.PRNGKey(seed))
  return report


def _main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO.
  f = flags.FLAGS
  report = evaluate(f.workdir, f.syncnet_workdir, f.num_clips, f.clip_frames)
  path = os.path.join(f.workdir, "eval.json")
  with open(path, "w", encoding="utf-8") as out:
    json.dump(report, out, indent=2)
  print(json.dumps(report, indent=2))


def main() -> None:
  """CLI entry point (flags are defined here, not on import)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir.")
  flags.DEFINE_string("syncnet_workdir", None, "train_syncnet workdir.")
  flags.DEFINE_integer("num_clips", 32, "Held-out clips to generate.")
  flags.DEFINE_integer("clip_frames", 40, "Frames per clip (>= 6 for LSE).")
  flags.mark_flags_as_required(["workdir", "syncnet_workdir"])
  app.run(_main)


if __name__ == "__main__":
  main()
