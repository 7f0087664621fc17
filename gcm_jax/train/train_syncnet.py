"""Trains SyncNet and the text-video contrastive model on any registered dataset.

  python -m gcm_jax.train.train_syncnet --workdir=/tmp/syncnet   # configs/syncnet.py
  python -m gcm_jax.train.train_syncnet --workdir=... --config.train.num_steps=200

Clips come from the registry entry of `config.data.name` (`pipeline.load_clips`: the synthetic
talking faces draw fresh clips of the train / validation phrases and voices, disjoint; a built
dataset gives clips spread evenly over its splits) through the pipeline's `preprocess` (video
in [-1, 1], per-frame 16-frame mel windows, byte-tokenized caption). SyncNet sees in-sync pairs
(a 5-frame lower-face window and its audio window) and off-sync pairs (the audio window of the
same clip shifted by `min_shift..max_shift` frames), trained with Wav2Lip's cosine-BCE plus an
optional InfoNCE term with in-batch negatives.

Both models train in the loop every model family shares (`gcm_jax.train.loop`):
`gcm_jax.runs.state` (TrainState, AdamW with warmup + cosine decay and clipping, non-finite
steps skipped, EMA), Orbax checkpoints (`gcm_jax.runs.checkpoint`), `metrics.jsonl` +
TensorBoard (`gcm_jax.train.metrics`) and a tqdm bar. The config is validated first (`RULES`,
`problems`: every bad field named). The batch of step k depends only on (seed, k), so rerunning
with the same workdir resumes from the newest readable checkpoint and reproduces an
uninterrupted run; a config that changes a field defining the run is refused
(`RESUMABLE_FIELDS`, as the other trainers do). Writes to `workdir`:

  config.json                                the run's config (resume check)
  checkpoints/, logs/                        the SyncNet run
  text_video/checkpoints/, text_video/logs/  the text-video run
  syncnet_params/     final SyncNet EMA variables (Orbax, `gcm_jax.runs.export`;
                      `gcm_jax.models.trained_syncnet` loads it)
  text_video_params/  final text-video EMA params (Orbax)
  report.json         held-out metrics and the config
"""
import functools
import json
import os
import time
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gcm_jax import config_rules
from gcm_jax.alignment import contrastive
from gcm_jax.alignment import metrics
from gcm_jax.alignment import sync_loss as sync_loss_lib
from gcm_jax.data import audio
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.models import sync_offsets
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.models import trained_syncnet
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import export
from gcm_jax.runs import state as state_lib
from gcm_jax.train import command
from gcm_jax.train import loop


Batch = Dict[str, np.ndarray]
TEXT_VIDEO_FILE = "text_video_params"
TEXT_VIDEO_DIR = "text_video"  # The text-video run's checkpoints and logs, under the workdir.
DEFAULT_CONFIG = "syncnet"  # gcm_jax/configs/syncnet.py


CLIP_KEYS = ("video", "mel", "text_tokens", "text_mask")

RULES: tuple[config_rules.Rule, ...] = (
    config_rules.integer("seed", 0),
    config_rules.Rule("data.name", lambda name: name in datasets.DATASETS,
                      "a name in gcm_jax.data.datasets.DATASETS"),
    config_rules.text("data.data_dir"),
    config_rules.integer("data.resolution", 16),  # The dataset's allowed sizes: problems.
    config_rules.integer("data.num_frames", syncnet_lib.SYNC_FRAMES + 1),
    config_rules.integer("data.eval_num_frames", syncnet_lib.SYNC_FRAMES + 1),
    config_rules.integer("data.num_train_clips", 1),
    config_rules.integer("data.num_eval_clips", 1),
    config_rules.one_of("data.mel_alignment", typing.get_args(audio.Alignment)),
    config_rules.integer("data.text_max_len", 1),
    config_rules.integer("model.embed_dim", 1),
    config_rules.int_tuple("model.visual_widths"),
    config_rules.int_tuple("model.audio_widths"),
    config_rules.integer("train.batch_size", 1),
    *state_lib.optimizer_rules(),
    config_rules.non_negative("train.infonce_weight"),
    config_rules.integer("train.min_shift", 1),
    config_rules.integer("train.max_shift", 1),
    config_rules.integer("train.log_every", 1),
    *checkpoint_lib.CHECKPOINT_RULES,
    config_rules.integer("eval.vshift", 1),
    config_rules.Rule("eval.audio_shifts", lambda v: isinstance(v, (tuple, list)) and all(
        config_rules.is_int(k) for k in v), "a tuple of integers"),
    config_rules.integer("text_video.num_steps", 0),
    config_rules.integer("text_video.batch_size", 1),
    config_rules.positive("text_video.learning_rate"),
    config_rules.integer("text_video.warmup_steps", 0),
    config_rules.integer("text_video.embed_dim", 1),
    config_rules.integer("text_video.text_width", 1),
    config_rules.integer("text_video.text_layers", 1),
    config_rules.integer("text_video.text_heads", 1),
    config_rules.int_tuple("text_video.video_widths"),
)

# Fields that may differ when a run resumes (a prefix ending in "." covers a section); the
# others define the run and must equal its config.json.
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "text_video.num_steps",
                    "checkpoint.", "eval.", "data.data_dir")


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of a SyncNet-training config, one line each (empty if valid)."""
  found = config_rules.field_problems(config, RULES, "configs/syncnet.py")
  if found:
    return found
  d, t, tv = config.data, config.train, config.text_video
  windows = d.num_frames - syncnet_lib.SYNC_FRAMES + 1
  resolutions = datasets.DATASETS[d.name].resolutions
  checks = [
      (resolutions is None or d.resolution in resolutions,
       f"config.data.resolution = {d.resolution}: expected one of {resolutions} for "
       f"config.data.name = {d.name!r}"),
      (t.min_shift <= t.max_shift, f"config.train.min_shift = {t.min_shift} must be <= "
                                   f"config.train.max_shift = {t.max_shift}"),
      # The middle window of a clip has the nearest far end: ceil((windows - 1) / 2) away.
      (windows - 1 - (windows - 1) // 2 >= t.min_shift,
       f"config.data.num_frames = {d.num_frames} leaves {windows} windows, too few for an "
       f"off-sync window >= config.train.min_shift = {t.min_shift} frames from each"),
      (tv.num_steps == 0 or tv.batch_size <= d.num_train_clips,
       f"config.text_video.batch_size = {tv.batch_size} needs at least as many distinct "
       f"clips, config.data.num_train_clips = {d.num_train_clips}"),
      (tv.text_width % tv.text_heads == 0,
       f"config.text_video.text_width = {tv.text_width} must be divisible by "
       f"config.text_video.text_heads = {tv.text_heads}"),
  ]
  return [message for ok, message in checks if not ok]


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises `config_rules.ConfigError` listing every problem of `config` (`problems`)."""
  found = problems(config)
  if found:
    raise config_rules.ConfigError("invalid SyncNet config:\n  " + "\n  ".join(found))


def load_clips(config: ml_collections.ConfigDict, split: str, num_clips: int, num_frames: int,
               seed: int) -> Batch:
  """`num_clips` clips of the dataset's `split` (`pipeline.load_clips`) with SyncNet's mel
  windows: 'video' float32 `[N, T, R, R, 3]` in [-1, 1], 'mel' `[N, T, 16, 80]`,
  'text_tokens' / 'text_mask' `[N, L]`, and the ground truth's mouth track if the dataset
  has one (`contract.GroundTruth.mouth_track_key`)."""
  truth = datasets.DATASETS[config.data.name].truth
  keys = CLIP_KEYS + ((truth.mouth_track_key,) if truth else ())
  return pipeline.load_clips(config.data, split, num_clips, num_frames, seed, keys,
                             config.data.text_max_len, syncnet_lib.MEL_FRAMES)


def _negative_starts(starts: np.ndarray, num_windows: int, min_shift: int, max_shift: int,
                     rng: np.random.Generator) -> np.ndarray:
  """For each start, a different window start of the same clip at |shift| in [min, max]."""
  out = np.empty_like(starts)
  for i, s in enumerate(starts):
    cand = np.arange(num_windows)
    cand = cand[(np.abs(cand - s) >= min_shift) & (np.abs(cand - s) <= max_shift)]
    if cand.size == 0:
      raise ValueError(f"no off-sync window with shift in [{min_shift}, {max_shift}] for "
                       f"{num_windows} windows; use longer clips")
    out[i] = rng.choice(cand)
  return out


def make_pairs(clips: Batch, clip_idx: np.ndarray, starts: np.ndarray, neg_starts: np.ndarray,
               frame_offset: int) -> Batch:
  """SyncNet inputs for windows (clip_idx[b], starts[b]).

  Returns:
    {'frames': [B, 5, h, W, 3] lower halves, 'mel_pos': [B, 16, 80] the matching audio window,
     'mel_neg': [B, 16, 80] the audio window starting at neg_starts[b] (off-sync)}.
  """
  frame_idx = starts[:, None] + np.arange(syncnet_lib.SYNC_FRAMES)
  frames = clips["video"][clip_idx[:, None], frame_idx]
  return {"frames": np.asarray(syncnet_lib.lower_half(frames)),
          "mel_pos": clips["mel"][clip_idx, starts + frame_offset],
          "mel_neg": clips["mel"][clip_idx, neg_starts + frame_offset]}


def sample_sync_batch(clips: Batch, batch_size: int, min_shift: int, max_shift: int,
                      frame_offset: int, rng: np.random.Generator) -> Batch:
  """Random in-sync / off-sync pairs (one of each per row) from random clips and windows."""
  num_clips, num_frames = clips["video"].shape[:2]
  num_windows = num_frames - syncnet_lib.SYNC_FRAMES + 1
  clip_idx = rng.integers(num_clips, size=batch_size)
  starts = rng.integers(num_windows, size=batch_size)
  neg = _negative_starts(starts, num_windows, min_shift, max_shift, rng)
  return make_pairs(clips, clip_idx, starts, neg, frame_offset)


def build_text_video(config: ml_collections.ConfigDict) -> contrastive.TextVideoCLIP:
  """TextVideoCLIP from `config.text_video` and `config.data.text_max_len`."""
  tv = config.text_video
  return contrastive.TextVideoCLIP(embed_dim=tv.embed_dim, text_width=tv.text_width,
                                   text_layers=tv.text_layers, text_heads=tv.text_heads,
                                   text_max_len=config.data.text_max_len,
                                   video_widths=tuple(tv.video_widths))


def text_video_train_config(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """`config.train` with the text-video run's own schedule (`config.text_video`'s
  learning_rate, warmup_steps, num_steps); the other optimizer and EMA fields are shared."""
  tv = config.text_video
  return dict(config.train.to_dict(), learning_rate=tv.learning_rate,
              warmup_steps=tv.warmup_steps, num_steps=tv.num_steps)


def create_sync_state(config: ml_collections.ConfigDict, key: jax.Array) -> state_lib.TrainState:
  """TrainState with params {'syncnet': SyncNet params, 'temperature': LogitScale params}
  and the optimizer of `config.train`."""
  model = trained_syncnet.build_syncnet(config)
  res = config.data.resolution
  k1, k2 = jax.random.split(key)
  params = {
      "syncnet": model.init(k1, jnp.zeros((1, syncnet_lib.SYNC_FRAMES, res - res // 2, res, 3)),
                            jnp.zeros((1, syncnet_lib.MEL_FRAMES, syncnet_lib.NUM_MELS)))["params"],
      "temperature": contrastive.LogitScale().init(k2)["params"],
  }
  return state_lib.create_state(params, state_lib.make_optimizer(config.train))


def sync_loss(params: Dict[str, Any], model: syncnet_lib.SyncNet, batch: Batch,
              infonce_weight: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Wav2Lip cosine-BCE on in-sync (label 1) and off-sync (label 0) pairs + w * InfoNCE.

  Args:
    params: {'syncnet': ..., 'temperature': ...}.
    batch: from `sample_sync_batch` (frames [B, 5, h, W, 3], mel_pos / mel_neg [B, 16, 80]).
  Returns:
    (loss, metrics: loss, bce, infonce, acc = pair classification accuracy at cos 0.5).
  """
  variables = {"params": params["syncnet"]}
  v, a_pos = model.apply(variables, batch["frames"], batch["mel_pos"])
  a_neg = model.apply(variables, batch["mel_neg"], method=syncnet_lib.SyncNet.embed_audio)
  cos_pos, cos_neg = jnp.sum(v * a_pos, -1), jnp.sum(v * a_neg, -1)
  bce = 0.5 * (jnp.mean(sync_loss_lib.sync_bce(cos_pos, 1.0)) +
               jnp.mean(sync_loss_lib.sync_bce(cos_neg, 0.0)))
  scale = contrastive.LogitScale().apply({"params": params["temperature"]})
  nce = contrastive.clip_loss(v, a_pos, scale, normalize=False)
  acc = 0.5 * (jnp.mean(cos_pos > 0.5) + jnp.mean(cos_neg <= 0.5))
  loss = bce + infonce_weight * nce
  return loss, {"loss": loss, "bce": bce, "infonce": nce, "acc": acc, "logit_scale": scale}


def sync_train_step(state: state_lib.TrainState, batch: Batch, *, model: syncnet_lib.SyncNet,
                    optimizer: optax.GradientTransformation, train_config: Mapping[str, Any]
                    ) -> Tuple[state_lib.TrainState, Dict[str, jax.Array]]:
  """One pure SyncNet optimization step (jit with the keywords bound; `optimizer` from
  `make_optimizer(train_config)`). Returns (state, `sync_loss` metrics + grad_norm,
  learning_rate, skipped_steps)."""
  grads, out = jax.grad(sync_loss, has_aux=True)(state.params, model, batch,
                                                 train_config["infonce_weight"])
  return state_lib.update_with_metrics(state, grads, out, optimizer, train_config)


def evaluate_sync(model: syncnet_lib.SyncNet, variables: Any, clips: Batch,
                  config: ml_collections.ConfigDict, seed: int) -> Dict[str, float]:
  """Held-out SyncNet metrics.

  * sync_acc: balanced in-sync vs off-sync classification (cos > 0.5) over every window of
    every clip, one off-sync partner per window (shift in [min_shift, max_shift]).
  * LSE-D / LSE-C / offset (syncnet_python) on the clips, and `offset_acc_k<k>`: fraction of
    clips whose measured offset is exactly -k after delaying the audio by k frames.
  * lipsync_loss / lipsync_loss_k<k>: `sync_loss.lipsync_loss` (unit weight) of the real clips
    with their own audio and with the audio delayed by k frames.
  """
  frame_offset = syncnet_lib.frame_offset_for_alignment(config.data.mel_alignment)
  rng = np.random.default_rng(seed)
  num_clips, num_frames = clips["video"].shape[:2]
  num_windows = num_frames - syncnet_lib.SYNC_FRAMES + 1
  clip_idx = np.repeat(np.arange(num_clips), num_windows)
  starts = np.tile(np.arange(num_windows), num_clips)
  neg = _negative_starts(starts, num_windows, config.train.min_shift, config.train.max_shift, rng)
  batch = make_pairs(clips, clip_idx, starts, neg, frame_offset)
  embed_audio = functools.partial(model.apply, method=syncnet_lib.SyncNet.embed_audio)
  embed = jax.jit(lambda f, a, n: (*model.apply(variables, f, a), embed_audio(variables, n)))
  cos_pos, cos_neg = [], []
  for i in range(0, len(clip_idx), 512):
    v, a, n = embed(batch["frames"][i:i + 512], batch["mel_pos"][i:i + 512],
                    batch["mel_neg"][i:i + 512])
    cos_pos.append(np.sum(v * a, -1))
    cos_neg.append(np.sum(v * n, -1))
  cos_pos, cos_neg = np.concatenate(cos_pos), np.concatenate(cos_neg)
  report = {"sync_acc": float(0.5 * (np.mean(cos_pos > 0.5) + np.mean(cos_neg <= 0.5))),
            "cos_in_sync": float(cos_pos.mean()), "cos_off_sync": float(cos_neg.mean()),
            "num_pairs": int(2 * len(cos_pos))}
  lse = jax.jit(lambda v, m: sync_offsets.lse_metrics(
      model, variables, v, m, audio_frame_offset=frame_offset, vshift=config.eval.vshift))
  lipsync = jax.jit(lambda v, m, key: sync_loss_lib.lipsync_loss(
      model, variables, v, m, key, audio_frame_offset=frame_offset))
  video, mel = jnp.asarray(clips["video"]), jnp.asarray(clips["mel"])
  for k in (0, *config.eval.audio_shifts):
    shifted = sync_offsets.shift_mel_windows(mel, k)
    out = lse(video, shifted)
    suffix = "" if k == 0 else f"_k{k}"
    report[f"lipsync_loss{suffix}"] = float(lipsync(video, shifted, jax.random.PRNGKey(seed)))
    report[f"lse_d{suffix}"] = float(jnp.mean(out["lse_d"]))
    report[f"lse_c{suffix}"] = float(jnp.mean(out["lse_c"]))
    report[f"offset_acc{suffix}"] = float(jnp.mean(out["offset"] == -k))
    report[f"offset_median{suffix}"] = float(jnp.median(out["offset"]))
  return report


def create_text_video_state(config: ml_collections.ConfigDict,
                            key: jax.Array) -> state_lib.TrainState:
  """TrainState of the TextVideoCLIP params (logical-partitioning boxes removed) and the
  optimizer of `text_video_train_config(config)`."""
  model = build_text_video(config)
  length = config.data.text_max_len
  variables = model.init(key, jnp.ones((1, length), jnp.int32), jnp.ones((1, length), bool),
                         jnp.zeros((1, 2, config.data.resolution, config.data.resolution, 3)))
  return state_lib.create_state(nn.unbox(variables["params"]),
                                state_lib.make_optimizer(text_video_train_config(config)))


def text_video_train_step(state: state_lib.TrainState, batch: Batch, *,
                          model: contrastive.TextVideoCLIP,
                          optimizer: optax.GradientTransformation,
                          train_config: Mapping[str, Any]
                          ) -> Tuple[state_lib.TrainState, Dict[str, jax.Array]]:
  """One pure CLIP step on (caption tokens, clip) pairs (loss, acc, logit_scale, grad_norm,
  learning_rate, skipped_steps)."""
  def loss_fn(params):
    t, v, scale = model.apply({"params": params}, batch["text_tokens"], batch["text_mask"],
                              batch["video"])
    loss = contrastive.clip_loss(t, v, scale, normalize=False)
    return loss, {"loss": loss, "acc": contrastive.clip_accuracy(t, v), "logit_scale": scale}
  grads, out = jax.grad(loss_fn, has_aux=True)(state.params)
  return state_lib.update_with_metrics(state, grads, out, optimizer, train_config)


def evaluate_text_video(model: contrastive.TextVideoCLIP, params: Any,
                        clips: Batch) -> Dict[str, float]:
  """Held-out text-video score (`metrics.text_video_score`) for matched vs mismatched captions
  (captions rolled by one clip) and text->video top-1 retrieval accuracy within chunks of 32
  clips (or all clips if fewer)."""
  apply = jax.jit(lambda tok, m, v: model.apply({"params": params}, tok, m, v)[:2])
  t, v = apply(clips["text_tokens"], clips["text_mask"], clips["video"])
  matched = metrics.text_video_score(t, v)
  mismatched = metrics.text_video_score(jnp.roll(t, 1, axis=0), v)
  chunk = min(32, len(t))
  acc = [float(contrastive.clip_accuracy(t[i:i + chunk], v[i:i + chunk]))
         for i in range(0, len(t) - chunk + 1, chunk)]
  return {"text_video_score_matched": float(matched.mean()),
          "text_video_score_mismatched": float(mismatched.mean()),
          "text_video_top1_acc": float(np.mean(acc))}


def _abstract_state(init_fn: Callable[[], state_lib.TrainState]) -> state_lib.TrainState:
  """`init_fn()`'s shapes and dtypes on the default device (where the jitted steps run)."""
  abstract = jax.eval_shape(init_fn)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return checkpoint_lib.abstract_with_shardings(abstract,
                                                jax.tree.map(lambda _: device, abstract))


def fit(init_fn: Callable[[], state_lib.TrainState],
        step_fn: Callable[[state_lib.TrainState, Batch],
                          Tuple[state_lib.TrainState, Dict[str, jax.Array]]],
        batch_at: Callable[[int], Batch], run_dir: str, num_steps: int, log_every: int,
        checkpoint_config: Mapping[str, Any], desc: str,
        stop_at_step: Optional[int] = None) -> state_lib.TrainState:
  """Trains one model to `num_steps` in the shared loop (`gcm_jax.train.loop`), or resumes it
  from `<run_dir>/checkpoints`.

  Args:
    init_fn: () -> the initial TrainState (used when there is no checkpoint yet).
    step_fn: (state, batch) -> (state, scalar metrics with 'loss'), jitted.
    batch_at: step (1-based) -> that step's batch; a pure function of the step, so a resumed
      run trains on the batches of an uninterrupted one.
    run_dir: checkpoints go to `<run_dir>/checkpoints` (every
      `checkpoint_config['every_steps']` and at the last step), metrics to
      `<run_dir>/logs` (every `log_every` steps and at the last step).
    desc: the progress bar's label.
    stop_at_step: end at that step (checkpointed) without changing the schedule.
  Returns:
    the state after the last step (restored as is when it was already trained).
  """
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(run_dir, directory.CHECKPOINT_DIR),
                                             checkpoint_config)
  restored = checkpoint_lib.restore_for_resume(checkpointer, _abstract_state(init_fn))
  state = init_fn() if restored is None else restored[0]
  return loop.run(state, lambda s, batch, step: step_fn(s, batch), batch_at, checkpointer,
                  run_dir, num_steps=num_steps, log_every=log_every, stop_at_step=stop_at_step,
                  desc=desc)


def _text_video_batch(clips: Batch, batch_size: int, rng: np.random.Generator) -> Batch:
  """`batch_size` distinct random clips' (video, text_tokens, text_mask)."""
  idx = rng.choice(len(clips["video"]), batch_size, replace=False)
  return {k: clips[k][idx] for k in ("video", "text_tokens", "text_mask")}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: Optional[int] = None) -> Optional[Dict[str, float]]:
  """Trains (or resumes) both models, writes their EMA weights and `report.json` into
  `workdir`, returns the report.

  `stop_at_step` ends the SyncNet training at that step (checkpointed, schedule unchanged)
  and returns None before evaluating; rerunning resumes it.
  """
  validate(config)
  directory.check_resumable(config, workdir, RESUMABLE_FIELDS, "a SyncNet run")
  directory.write_config(config, workdir)
  d, tc = config.data, config.train
  t0 = time.time()
  train = load_clips(config, "train", d.num_train_clips, d.num_frames, config.seed)
  logging.info("loaded %d train clips in %.1fs", len(train["video"]), time.time() - t0)
  key_sync, key_tv = jax.random.split(jax.random.PRNGKey(config.seed))

  model = trained_syncnet.build_syncnet(config)
  step_fn = jax.jit(functools.partial(sync_train_step, model=model,
                                      optimizer=state_lib.make_optimizer(tc), train_config=tc),
                    donate_argnums=0)
  frame_offset = syncnet_lib.frame_offset_for_alignment(d.mel_alignment)
  t0 = time.time()
  state = fit(functools.partial(create_sync_state, config, key_sync), step_fn,
              lambda step: sample_sync_batch(train, tc.batch_size, tc.min_shift, tc.max_shift,
                                             frame_offset,
                                             np.random.default_rng((config.seed, 0, step))),
              workdir, tc.num_steps, tc.log_every, config.checkpoint, "syncnet", stop_at_step)
  if int(state.step) < tc.num_steps:
    return None
  variables = {"params": state.ema_params["syncnet"]}
  export.save_params(os.path.join(workdir, trained_syncnet.SYNCNET_FILE), variables)
  report = {"syncnet_train_seconds": time.time() - t0}
  val = load_clips(config, "validation", d.num_eval_clips, d.eval_num_frames, config.seed + 1)
  report.update(evaluate_sync(model, variables, val, config, config.seed + 2))
  truth = datasets.DATASETS[d.name].truth
  if truth:  # The ceiling of a mouth read-out: the ground truth's own frames.
    report["oracle_mouth_corr_ground_truth"] = float(np.mean(truth.mouth_correlation(
        val["video"], val[truth.mouth_track_key])))
  logging.info("syncnet held-out: %s", report)

  if config.text_video.num_steps > 0:
    tv_model = build_text_video(config)
    tv_config = text_video_train_config(config)
    tv_step = jax.jit(functools.partial(
        text_video_train_step, model=tv_model, optimizer=state_lib.make_optimizer(tv_config),
        train_config=tv_config), donate_argnums=0)
    tv_state = fit(functools.partial(create_text_video_state, config, key_tv), tv_step,
                   lambda step: _text_video_batch(train, config.text_video.batch_size,
                                                  np.random.default_rng((config.seed, 1, step))),
                   os.path.join(workdir, TEXT_VIDEO_DIR), tv_config["num_steps"], tc.log_every,
                   config.checkpoint, "text-video")
    export.save_params(os.path.join(workdir, TEXT_VIDEO_FILE), {"params": tv_state.ema_params})
    report.update(evaluate_text_video(tv_model, tv_state.ema_params, val))

  with open(os.path.join(workdir, trained_syncnet.REPORT_FILE), "w") as f:
    json.dump({"report": report, "config": config.to_dict()}, f, indent=2, default=str)
  logging.info("report: %s", json.dumps(report, indent=2))
  return report


def main() -> None:
  """`python -m gcm_jax.train.train_syncnet` (`gcm-train syncnet`)."""
  command.run(train_and_evaluate, DEFAULT_CONFIG, "SyncNet / text-video")


if __name__ == "__main__":
  main()
