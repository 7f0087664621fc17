"""Builds the `video_folder` TFDS dataset (array_record, no TensorFlow) from real videos.

Per video (`process_video`): decode at 25 fps and detect faces on small frames (pass 1),
track one face and cut tracks into clips, decode the 16 kHz audio, decode again and crop the
clips and the video's reference pool (pass 2); in batches of SYNC_BATCH finished clips,
optionally measure and correct their A/V offset with a SyncNet, caption them from the
transcript and stream them into the video's staged array_record file (so memory does not
grow with the video's length); then its reference pool (a few frames of the person at other
times, `ReferencePool`) goes to `<video hash>.npz` and one line in `ledger.jsonl` marks the
video done (a rejected video also gets a line in `rejects.jsonl` with the reason). A rerun
skips the videos in the ledger, so a killed build resumes and every staged file written
before the kill stays readable. At the end the staged clips are gathered, by split, into
the TFDS folder `output_dir/video_folder/r{R}_t{T}/1.1.0/` (`as_data_source`,
`pipeline.make_dataset`), each with its reference frames (`REFERENCE_SOURCES`: from the pool
of its video or of another video of its identity).

Layout of `output_dir/video_folder/r{R}_t{T}/`:
  1.1.0/           the dataset (dataset_info.json, features.json, shards)
  staging/         settings.json, ledger.jsonl, rejects.jsonl,
                   clips/<video hash>.array_record (its clips), clips/<video hash>.npz (its pool)
"""
from concurrent import futures
import collections
import dataclasses
import functools
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
import zlib
from typing import Any, Callable, Iterator, Optional

from absl import logging
from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.core import naming

from gcm_jax.data.video_folder import captions as captions_lib
from gcm_jax.data.video_folder import decode
from gcm_jax.data.video_folder import faces
from gcm_jax.data.video_folder import segments
from gcm_jax.data.video_folder import splits
from gcm_jax.data.video_folder import sync

NAME = "video_folder"
# 1.1.0: each clip's 'reference' / 'reference_from' (identity conditioning). A 1.0.0 build's
# staged clips have no reference pools, so its staging cannot be resumed (`_check_settings`);
# its dataset folder is still read (`readable_path`), without reference frames.
VERSION = "1.1.0"
OLDER_VERSIONS = ("1.0.0",)
# Where a clip's reference frames come from (its 'reference_from'), in order of preference.
REFERENCE_SOURCES = {
    "other_clip": "frames of other clips of the same video (another face track first, then "
                  "at least a clip length away, then any)",
    "same_track_outside_clip": "the video has one clip: frames of its face track before or "
                               "after the clip",
    "same_identity": "the video has one clip and its track no frame outside it: frames of "
                     "another video of the same identity in the same split",
    "none": "none of these: the stored frames are zeros and training with reference frames "
            "refuses the clip",
}
POOL_PER_REFERENCE = 4  # A video's pool: about this many frames per stored reference frame.
# Why a video gave no clips (the `reason` of rejects.jsonl).
REJECT_REASONS = {
    "unreadable": "empty, not a video, or a container or stream that cannot be read (corrupt "
                  "or truncated file); `detail` says which",
    "no_video_stream": "the file has no video stream",
    "no_audio_stream": "the file has no audio stream",
    "unsupported_codec": "FFmpeg (PyAV) has no decoder for a stream",
    "too_short": "shorter than one clip",
    "no_face": "the detector found no face in any frame",
    "second_face": "a second person: another face is in view wherever a face is tracked, so "
                   "no stretch of one face lasts a clip",
    "no_usable_segment": "no stretch of one tracked face (no scene cut, no second face) lasts "
                         "a clip",
    "low_sync": "the SyncNet pass dropped every clip (offset or confidence out of bounds)",
    "error": "an unexpected error (message in `detail`)",
}
# Stages timed per video (the ledger's `seconds`): both decoding passes, face detection and
# scene-cut thumbnails, crops, audio decoding + resampling, the SyncNet pass, serialization.
STAGES = ("decode", "detect", "crop", "audio", "sync", "write")
SYNC_BATCH = 16  # Clips cropped, checked and written together: bounds memory per video.


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that shapes the clips (saved in staging/settings.json; a rerun must match)."""
  resolution: int = 128
  num_frames: int = 16
  clip_stride: int = 0                # frames between clip starts; 0 = num_frames
  reference_frames: int = 4           # frames of the person at other times stored per clip
  detector: str = "lbp"               # faces.DETECTORS
  detector_model: str = ""            # weights file of the detector, if it takes one
  detect_size: int = 320              # longer side of the frames the detector sees
  detect_every: int = 5               # detector runs every N frames (and at scene cuts)
  min_face: float = 0.15              # smallest face, fraction of the shorter side
  margin: float = 0.35                # crop side = face size (1 + 2 margin)
  shift: float = 0.1                  # crop centre below the face centre, in face sizes
  scene_cut: float = 30.0             # thumbnail difference (grey levels) that cuts a shot
  max_missed: int = 1                 # detections without the face bridged
  second_face_ratio: float = 0.6      # a second face this large (vs the tracked one) cuts
  smooth_sigma: float = 2.0           # box smoothing (frames)
  identity: str = "parent"            # splits.IDENTITY_RULES (a manifest column wins)
  validation_fraction: float = 0.05
  test_fraction: float = 0.05
  max_caption_bytes: int = 128        # the model's text length (config.data.text_max_len)
  syncnet_workdir: str = ""           # a train_syncnet workdir: run the SyncNet pass
  sync_max_offset: int = 6            # keep clips with |offset| <= this (frames)
  sync_min_confidence: float = 0.0    # keep clips with confidence >= this

  def __post_init__(self):
    if self.detector not in faces.DETECTORS:
      raise ValueError(f"unknown detector {self.detector!r}; expected one of "
                       f"{tuple(faces.DETECTORS)}")
    if self.identity not in splits.IDENTITY_RULES:
      raise ValueError(f"unknown identity rule {self.identity!r}; expected one of "
                       f"{tuple(splits.IDENTITY_RULES)}")
    if self.resolution < 16 or self.num_frames < 1 or self.detect_every < 1:
      raise ValueError("resolution must be >= 16, num_frames and detect_every >= 1")
    if self.reference_frames < 0:
      raise ValueError("reference_frames must be >= 0 (0: clips without reference frames)")
    if self.syncnet_workdir and self.num_frames < 6:
      raise ValueError("the SyncNet pass needs clips of >= 6 frames (it compares T - 5 windows)")
    if not 0 <= self.validation_fraction + self.test_fraction <= 1:
      raise ValueError("validation_fraction + test_fraction must be in [0, 1]")

  @property
  def stride(self) -> int:
    return self.clip_stride or self.num_frames

  @property
  def track_config(self) -> faces.TrackConfig:
    return faces.TrackConfig(max_missed=self.max_missed,
                             second_face_ratio=self.second_face_ratio,
                             smooth_sigma=self.smooth_sigma)


def config_name(resolution: int, num_frames: int) -> str:
  """Folder of a build under `output_dir/video_folder/` (what config.data selects)."""
  return f"r{resolution}_t{num_frames}"


def dataset_path(output_dir: str, resolution: int, num_frames: int) -> str:
  """The TFDS folder (`tfds.builder_from_directory`) of a build."""
  return os.path.join(output_dir, NAME, config_name(resolution, num_frames), VERSION)


def readable_path(output_dir: str, resolution: int, num_frames: int) -> str:
  """`dataset_path`, else the folder of an older build there (`OLDER_VERSIONS`: its clips
  lack what later versions added), else `dataset_path` (nothing built)."""
  path = dataset_path(output_dir, resolution, num_frames)
  for version in OLDER_VERSIONS:
    older = os.path.join(os.path.dirname(path), version)
    if (not os.path.exists(os.path.join(path, "dataset_info.json"))
        and os.path.exists(os.path.join(older, "dataset_info.json"))):
      return older
  return path


def _reference_features(settings: Settings) -> dict[str, tfds.features.FeatureConnector]:
  """A clip's reference frames (none with `reference_frames` 0): added at `_finalize`."""
  if not settings.reference_frames:
    return {}
  k, r = settings.reference_frames, settings.resolution
  return {
      # K frames of the clip's person at other times, cropped as the clip's frames.
      "reference": tfds.features.Tensor(shape=(k, r, r, 3), dtype=np.uint8,
                                        encoding=tfds.features.Encoding.ZLIB),
      "reference_from": tfds.features.Text(),  # a key of REFERENCE_SOURCES
  }


def features(settings: Settings) -> tfds.features.FeaturesDict:
  """One clip. T = num_frames, R = resolution, S = 640 T, K = reference_frames."""
  return tfds.features.FeaturesDict({**_staged_features(settings),
                                     **_reference_features(settings)})


def _staged_features(settings: Settings) -> dict[str, tfds.features.FeatureConnector]:
  """A clip as `process_video` emits it and its staged file holds (no reference frames)."""
  t, r = settings.num_frames, settings.resolution
  return {
      "caption": tfds.features.Text(),   # the words spoken in the clip (may be empty)
      "video": tfds.features.Tensor(shape=(t, r, r, 3), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.ZLIB),
      "audio": tfds.features.Tensor(shape=(t * decode.SAMPLES_PER_FRAME,), dtype=np.float32),
      "mouth_box": tfds.features.Tensor(shape=(t, 4), dtype=np.float32),  # in the crop, [0, 1]
      "crop_box": tfds.features.Tensor(shape=(t, 4), dtype=np.float32),   # source pixels
      "source": tfds.features.Text(),    # the video's path relative to the input
      "identity": tfds.features.Text(),
      "start_time": np.float32,          # of frame 0, seconds in the source
      "sync_offset": np.int32,           # SyncNet: audio frames the stored audio was moved by
      "sync_confidence": np.float32,     # SyncNet confidence (NaN without the pass)
  }


class _Timer:
  """Seconds spent per stage."""

  def __init__(self):
    self.seconds = collections.Counter()

  def add(self, stage: str, since: float) -> float:
    now = time.perf_counter()
    self.seconds[stage] += now - since
    return now


@dataclasses.dataclass
class Tools:
  """The face detector and the optional A/V-sync expert that `process_video` uses."""
  detector: faces.Detector
  expert: Optional[sync.Expert]


_TOOLS: dict[Settings, Tools] = {}


def tools_for(settings: Settings) -> Tools:
  """This process's Tools for `settings` (loaded once per process)."""
  if settings not in _TOOLS:
    expert = sync.load_expert(settings.syncnet_workdir) if settings.syncnet_workdir else None
    _TOOLS[settings] = Tools(faces.make_detector(settings.detector,
                                                 settings.detector_model or None,
                                                 settings.min_face), expert)
  return _TOOLS[settings]


def detect_pass(path: str, info: decode.StreamInfo, settings: Settings,
                detector: faces.Detector, timer: Optional[_Timer] = None
                ) -> tuple[int, float, dict[int, list[faces.Detection]], np.ndarray, float]:
  """Pass 1: (frame count, origin, detections {frame: faces}, cuts bool [T], source px per
  detector px). Also what dubbing tracks a source video with (`dubbing.track_source`)."""
  timer = timer or _Timer()
  scale = max(1.0, max(info.width, info.height) / settings.detect_size)
  width = max(2, int(round(info.width / scale / 2)) * 2)
  height = max(2, int(round(info.height / scale / 2)) * 2)
  detections, cuts, previous, origin = {}, [], None, 0.0
  since = time.perf_counter()
  for t, origin, small in decode.frames_25fps(path, width, height):
    since = timer.add("decode", since)
    thumb = segments.thumbnail(small)
    cuts.append(previous is not None and segments.is_cut(previous, thumb, settings.scene_cut))
    previous = thumb
    if t % settings.detect_every == 0 or cuts[-1]:
      detections[t] = detector(small)
    since = timer.add("detect", since)
  return len(cuts), origin, detections, np.array(cuts, bool), info.width / width


@dataclasses.dataclass(frozen=True)
class _Plan:
  """One clip to cut: first frame, crop windows float [T, 4], mouth boxes float [T, 4], the
  index of its face track."""
  start: int
  windows: np.ndarray
  mouths: np.ndarray
  track: int = 0


@dataclasses.dataclass
class ReferencePool:
  """A video's candidate reference frames and, per kept clip, which of them it gets.

  Attributes:
    frames: uint8 `[P, R, R, 3]`, cropped as the clips' frames (P may be 0).
    times: int `[P]`: their frames (25 fps) in the video.
    source: the `REFERENCE_SOURCES` key of the frames ('' where P is 0).
    choices: int `[clips, K]`: indices into `frames` per kept clip, most preferred first;
      a row of -1: the clip takes its frames from another video of its identity.
  """
  frames: np.ndarray
  times: np.ndarray
  source: str
  choices: np.ndarray

  def counts(self) -> dict[str, int]:
    """Kept clips per reference source ('another_video': resolved when gathering)."""
    pending = int((self.choices[:, 0] < 0).sum()) if self.choices.size else 0
    counts = {self.source: len(self.choices) - pending, "another_video": pending}
    return {k: v for k, v in counts.items() if v}


def _pool_windows(tracks: list[faces.Track], plans: list[_Plan], settings: Settings
                  ) -> tuple[dict[int, np.ndarray], str]:
  """The frames of the video's reference pool, {frame: crop window [4]}, and what they are
  to its own clips (the `REFERENCE_SOURCES` key; '' where none is outside its one clip).

  About POOL_PER_REFERENCE x reference_frames frames, evenly spread: where the video has
  several clips, a few frames of each of evenly spaced clips; where it has one, its track's
  frames outside the clip, and the rest of the pool from the clip itself (frames only other
  videos of the identity take, `_finalize`).
  """
  size, t_len = POOL_PER_REFERENCE * settings.reference_frames, settings.num_frames

  def spread(items: np.ndarray, num: int) -> np.ndarray:
    return items[np.unique(np.linspace(0, len(items) - 1, min(num, len(items))).round()
                           .astype(int))] if num > 0 and len(items) else items[:0]

  if not size:
    return {}, ""
  if len(plans) > 1:
    per_clip = min(t_len, -(-size // len(plans)))
    offsets = spread(np.arange(t_len), per_clip)
    return ({int(plans[n].start + k): plans[n].windows[k]
             for n in spread(np.arange(len(plans)), -(-size // per_clip)) for k in offsets},
            "other_clip")
  (plan,) = plans
  tr = tracks[plan.track]
  frames = np.arange(tr.start, tr.end)
  inside = (frames >= plan.start) & (frames < plan.start + t_len)
  outside = spread(frames[~inside], size)
  times = np.concatenate([outside, spread(frames[inside], size - len(outside))])
  windows = faces.crop_window(tr.boxes, settings.margin, settings.shift)
  return ({int(t): windows[t - tr.start] for t in times},
          "same_track_outside_clip" if len(outside) else "")


def _clip_seed(key: str, clip: int) -> int:
  """A seed for clip `clip` (its first frame, or its place) of video `key`: the same in
  every run and worker."""
  return zlib.crc32(f"{key}:{clip}".encode("utf-8"))


def _choose_references(plan: _Plan, times: np.ndarray, tracks: np.ndarray, num: int,
                       seed: int) -> np.ndarray:
  """int `[num]`: indices of the pool frames (`times`, their `tracks`) that are `plan`'s
  reference, never one of its own frames: frames of another track first, then frames at
  least a clip length away, then the rest, in a seeded random order within each group
  (repeated where fewer than `num`); all -1 if no pool frame is outside the clip."""
  t_len = len(plan.windows)
  outside = np.flatnonzero((times < plan.start) | (times >= plan.start + t_len))
  if not outside.size:
    return np.full(num, -1, int)
  distance = np.maximum(plan.start - times[outside], times[outside] - (plan.start + t_len - 1))
  group = np.where(tracks[outside] != plan.track, 0, np.where(distance >= t_len, 1, 2))
  order = np.lexsort((np.random.default_rng(seed).permutation(outside.size), group))
  return np.resize(outside[order], num)


def _crop_pass(path: str, plans: list[_Plan], settings: Settings, timer: _Timer,
               pool: Optional[dict[int, np.ndarray]] = None
               ) -> Iterator[list[tuple[int, np.ndarray]]]:
  """Pass 2: batches of finished clips (plan index, uint8 [T, R, R, 3]), each batch at most
  SYNC_BATCH clips, so a long video never holds more than that in memory. `pool`, {frame:
  crop window} of the reference pool, gets each of its windows replaced by the crop."""
  t_len, r = settings.num_frames, settings.resolution
  pool = {} if pool is None else pool
  pool_windows = dict(pool)
  wanted = collections.defaultdict(list)
  for n, plan in enumerate(plans):
    for k in range(t_len):
      wanted[plan.start + k].append((n, k))
  last = max(max(wanted), max(pool_windows, default=0))
  open_clips, done = {}, []
  since = time.perf_counter()
  for t, _, frame in decode.frames_25fps(
      path, wanted=lambda f: f in wanted or f in pool_windows):
    since = timer.add("decode", since)
    if t in pool_windows:  # The same crop as a clip's frame t where a clip has it.
      pool[t] = faces.crop(frame, pool_windows[t], r)
    for n, k in wanted.get(t, ()):
      clip = open_clips.setdefault(n, np.zeros((t_len, r, r, 3), np.uint8))
      clip[k] = faces.crop(frame, plans[n].windows[k], r)
      if k == t_len - 1:
        done.append((n, open_clips.pop(n)))
    since = timer.add("crop", since)
    if len(done) >= SYNC_BATCH:
      yield done
      done = []
      since = time.perf_counter()
    if t >= last:
      break
  if done:
    yield done


def _plans(tracks: list[faces.Track], settings: Settings) -> list[_Plan]:
  plans = []
  for index, tr in enumerate(tracks):
    windows = faces.crop_window(tr.boxes, settings.margin, settings.shift)
    mouths = faces.mouth_boxes(windows, tr.landmarks)
    for start in segments.clip_starts(tr.start, tr.end, settings.num_frames, settings.stride):
      k = slice(start - tr.start, start - tr.start + settings.num_frames)
      plans.append(_Plan(start, windows[k], mouths[k], index))
  return plans


def process_video(item: captions_lib.Item, settings: Settings, tools: Tools,
                  emit: Callable[[dict[str, Any]], None],
                  references: Optional[Callable[[ReferencePool], None]] = None
                  ) -> dict[str, Any]:
  """One video -> `emit(record)` for each of its clips, in order (without reference frames),
  then `references(pool)`: its reference pool and each clip's choice from it (with
  `settings.reference_frames` > 0); returns its ledger row.

  Raises:
    decode.RejectError: the video gives no clip (its reason).
  """
  timer = _Timer()
  info = decode.probe(item.path)
  num, origin, detections, cuts, scale = detect_pass(item.path, info, settings,
                                                      tools.detector, timer)
  t_len, spf = settings.num_frames, decode.SAMPLES_PER_FRAME
  if not num:
    raise decode.RejectError("unreadable", "no video frame decodes")
  if num < t_len:
    raise decode.RejectError("too_short", f"{num} frames at 25 fps, a clip is {t_len}")
  if not any(detections.values()):
    raise decode.RejectError("no_face")
  tracks, ends = faces.track(detections, cuts, scale, settings.track_config)
  plans = _plans(tracks, settings)
  if not plans:
    if ends["second_face"] and ends["second_face"] >= max(ends["face_lost"], ends["scene_cut"]):
      raise decode.RejectError(
          "second_face", f"a second person is in view: another face at least "
          f"{settings.second_face_ratio:g} as large as the tracked one cut or prevented every "
          f"track (stretches with two faces: {ends['second_face']}; track ends: {ends})")
    raise decode.RejectError("no_usable_segment", f"track ends: {ends}")
  since = time.perf_counter()
  pad = settings.sync_max_offset * spf if tools.expert else 0  # Room to shift the audio.
  wav = decode.audio_16k(item.path, origin - pad / decode.SAMPLE_RATE, num * spf + 2 * pad)
  timer.add("audio", since)
  identity = item.identity or splits.identity_of(item.key, settings.identity)
  pool, pool_source = _pool_windows(tracks, plans, settings)
  pool_times = np.array(sorted(pool), int)
  pool_tracks = np.array([next(i for i, tr in enumerate(tracks) if tr.start <= t < tr.end)
                          for t in pool_times], int)
  kept, measured, choices = 0, [], []
  for batch in _crop_pass(item.path, plans, settings, timer, pool):
    since = time.perf_counter()
    offsets = np.zeros(len(batch), np.int32)
    confidence = np.full(len(batch), np.nan, np.float32)
    if tools.expert:
      clip_audio = np.stack([wav[pad + plans[n].start * spf:pad + (plans[n].start + t_len) * spf]
                             for n, _ in batch])
      offsets, confidence = tools.expert(np.stack([v for _, v in batch]), clip_audio,
                                         settings.sync_max_offset)
      measured += list(zip(offsets.tolist(), np.round(confidence, 3).tolist()))
      since = timer.add("sync", since)
    for (n, video), d, c in zip(batch, offsets.tolist(), confidence):
      if tools.expert and (abs(d) > settings.sync_max_offset
                           or c < settings.sync_min_confidence):
        continue
      s = plans[n].start
      start_time = origin + s / decode.FPS
      emit({
          "caption": item.transcript.caption(start_time, start_time + t_len / decode.FPS,
                                             settings.max_caption_bytes),
          "video": video,
          "audio": wav[pad + (s + d) * spf:pad + (s + d + t_len) * spf],
          "mouth_box": plans[n].mouths,
          "crop_box": plans[n].windows.astype(np.float32),
          "source": item.key,
          "identity": identity,
          "start_time": np.float32(start_time),
          "sync_offset": np.int32(d),
          "sync_confidence": np.float32(c),
      })
      choices.append(_choose_references(plans[n], pool_times, pool_tracks,
                                        settings.reference_frames, _clip_seed(item.key, s)))
      kept += 1
    timer.add("write", since)
  if not kept:
    raise decode.RejectError("low_sync", f"(offset, confidence) per clip: {measured}")
  split = item.split or splits.split_of(identity, settings.validation_fraction,
                                        settings.test_fraction)
  r = settings.resolution
  missing = [int(t) for t in pool_times if pool[t].ndim != 3]
  if missing:
    raise decode.RejectError("error", f"reference pool frames {missing} did not decode again")
  found = ReferencePool(
      np.stack([pool[t] for t in pool_times]) if pool_times.size
      else np.zeros((0, r, r, 3), np.uint8), pool_times, pool_source,
      np.array(choices, int).reshape(kept, settings.reference_frames))
  if references is not None and settings.reference_frames:
    references(found)
  return {"key": item.key, "status": "ok", "split": split, "identity": identity,
          "clips": kept, "dropped_by_sync": len(plans) - kept, "frames": num,
          "track_ends": ends, "streams": dataclasses.asdict(info),
          "references": found.counts() if settings.reference_frames else {},
          "reference_pool": len(pool_times), "seconds": dict(timer.seconds)}


def _staged_name(key: str) -> str:
  return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20] + ".array_record"


def _save_pool(path: str, pool: ReferencePool) -> None:
  with open(path, "wb") as f:
    np.savez_compressed(f, frames=pool.frames, times=pool.times, source=np.array(pool.source),
                        choices=pool.choices)


def _load_pool(path: str) -> ReferencePool:
  with np.load(path) as z:
    return ReferencePool(z["frames"], z["times"], str(z["source"]), z["choices"])


def _run_one(item: captions_lib.Item, settings: Settings, clips_dir: str) -> dict[str, Any]:
  """Worker: processes one video, streaming its clips into its staged array_record file
  and saving its reference pool (temporary names, renamed when complete); returns its ledger
  row."""
  start = time.perf_counter()
  path = os.path.join(clips_dir, _staged_name(item.key))
  pool_path = path.replace(".array_record", ".npz")
  spec = tfds.features.FeaturesDict(_staged_features(settings))
  writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1")
  size = 0

  def emit(record: dict[str, Any]) -> None:
    nonlocal size
    data = spec.serialize_example(record)
    size += len(data)
    writer.write(data)

  try:
    row = process_video(item, settings, tools_for(settings), emit,
                        lambda pool: _save_pool(pool_path + ".tmp", pool))
  except decode.RejectError as e:
    row = {"key": item.key, "status": "rejected", "reason": e.reason, "detail": e.detail}
  except Exception as e:  # pylint: disable=broad-except  # Bad input never aborts the build.
    row = {"key": item.key, "status": "rejected", "reason": "error",
           "detail": f"{type(e).__name__}: {e}"}
  writer.close()
  if row["status"] != "ok":
    os.remove(path + ".tmp")
    if os.path.exists(pool_path + ".tmp"):
      os.remove(pool_path + ".tmp")
    return row
  if settings.reference_frames:
    os.replace(pool_path + ".tmp", pool_path)
    row["pool_file"] = os.path.basename(pool_path)
  os.replace(path + ".tmp", path)
  row.update(file=os.path.basename(path), bytes=size)
  row["seconds"]["total"] = time.perf_counter() - start
  return row


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip().endswith("}")]


def _append_jsonl(path: str, row: dict) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _check_settings(staging: str, settings: Settings) -> None:
  path = os.path.join(staging, "settings.json")
  wanted = dataclasses.asdict(settings)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    version = saved.pop("builder_version", "1.0.0")
    if version != VERSION:
      raise ValueError(
          f"{staging} holds clips staged by the video_folder builder {version}; this builder "
          f"({VERSION}) also stores reference frames, which those staged clips lack, so it "
          f"cannot resume them into one dataset: delete {os.path.dirname(staging)} (or use "
          f"another --output_dir) and build again")
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if differ:
      raise ValueError(f"{staging} was built with other settings ({differ}: saved, asked); "
                       f"use another --output_dir or delete {staging}")
    return
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"builder_version": VERSION, **wanted}, f, indent=2)


def _results(todo: list[captions_lib.Item], settings: Settings, clips_dir: str,
             workers: int) -> Iterator[dict]:
  """Ledger rows of `todo`, in completion order, over `workers` spawned processes."""
  if workers <= 1:
    for item in todo:
      yield _run_one(item, settings, clips_dir)
    return
  # Spawned (not forked) workers: forking a process that runs JAX threads is unsafe.
  with futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
    jobs = [pool.submit(_run_one, item, settings, clips_dir) for item in todo]
    for job in futures.as_completed(jobs):
      yield job.result()


def _identity_pools(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
  """(identity, split) -> the keys of its videos with reference pools, sorted."""
  pools = collections.defaultdict(list)
  for r in sorted(rows, key=lambda r: r["key"]):
    if r["status"] == "ok" and r.get("reference_pool"):
      pools[r["identity"], r["split"]].append(r["key"])
  return pools


def _reference_counts(rows: list[dict]) -> dict[str, int]:
  """Clips per `REFERENCE_SOURCES` key over the ledger rows (what `_finalize` stores)."""
  pools, counts = _identity_pools(rows), collections.Counter()
  for r in rows:
    if r["status"] != "ok":
      continue
    counts.update({k: v for k, v in r.get("references", {}).items() if k != "another_video"})
    pending = r.get("references", {}).get("another_video", 0)
    others = [k for k in pools[r["identity"], r["split"]] if k != r["key"]]
    counts["same_identity" if others else "none"] += pending
  return {k: counts[k] for k in REFERENCE_SOURCES if counts[k]}


def _clip_references(row: dict, others: list[str], settings: Settings,
                     pool_of: Callable[[str], ReferencePool]) -> Iterator[dict[str, Any]]:
  """The reference features of `row`'s staged clips, in order: from its own pool, else from
  the pool of one of `others` (videos of its identity and split; seeded per clip), else
  zeros ('none')."""
  own = pool_of(row["key"])
  k, r = settings.reference_frames, settings.resolution
  for i, choice in enumerate(own.choices):
    if choice[0] >= 0:
      yield {"reference": own.frames[choice], "reference_from": own.source}
    elif others:
      rng = np.random.default_rng(_clip_seed(row["key"] + "/same_identity", i))
      other = pool_of(others[rng.integers(len(others))]).frames
      picked = rng.choice(len(other), k, replace=len(other) < k)
      yield {"reference": other[picked], "reference_from": "same_identity"}
    else:
      yield {"reference": np.zeros((k, r, r, 3), np.uint8), "reference_from": "none"}


def _finalize(root: str, staging: str, rows: list[dict], settings: Settings,
              shard_records: int) -> dict[str, int]:
  """Gathers the staged clips by split into the TFDS folder `root/1.1.0` (rewritten whole,
  in a temporary folder renamed at the end; not written without clips), each with its
  reference frames; returns clips per split.

  A staged record is a serialized tf.train.Example without the reference features; the
  serialized Example of those two features is appended to it, which protobuf parses as one
  Example holding both (concatenated messages merge), so the clips are not decoded again.
  """
  spec = features(settings)
  reference_spec = tfds.features.FeaturesDict(_reference_features(settings))
  by_key = {r["key"]: r for r in rows}
  pools = _identity_pools(rows)

  @functools.lru_cache(maxsize=16)
  def pool_of(key: str) -> ReferencePool:
    return _load_pool(os.path.join(staging, "clips", by_key[key]["pool_file"]))

  tmp = os.path.join(root, f"incomplete.{VERSION}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  template = naming.ShardedFileTemplate(data_dir=tmp, template=naming.DEFAULT_FILENAME_TEMPLATE,
                                        dataset_name=NAME, filetype_suffix="array_record")
  infos, counts = [], {}
  for split in splits.SPLITS:
    videos = [r for r in sorted(rows, key=lambda r: r["key"])
              if r["status"] == "ok" and r["split"] == split and r["clips"]]
    records = []
    for row in videos:
      reader = array_record_module.ArrayRecordReader(os.path.join(staging, "clips", row["file"]))
      staged = reader.read_all()
      reader.close()
      if settings.reference_frames:
        others = [k for k in pools[row["identity"], split] if k != row["key"]]
        staged = [data + reference_spec.serialize_example(reference) for data, reference in
                  zip(staged, _clip_references(row, others, settings, pool_of), strict=True)]
      records += staged
    if not records:
      continue
    num_shards = -(-len(records) // shard_records)
    split_template = template.replace(split=split)
    lengths = []
    for shard in range(num_shards):
      chunk = records[shard * shard_records:(shard + 1) * shard_records]
      writer = array_record_module.ArrayRecordWriter(
          os.fspath(split_template.sharded_filepath(shard_index=shard, num_shards=num_shards)),
          "group_size:1")
      for data in chunk:
        writer.write(data)
      writer.close()
      lengths.append(len(chunk))
    infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths,
                                     num_bytes=sum(map(len, records)),
                                     filename_template=split_template))
    counts[split] = len(records)
  if not infos:
    shutil.rmtree(tmp)
    return counts
  tfds.folder_dataset.write_metadata(
      data_dir=tmp, features=spec, split_infos=infos, filename_template=template,
      check_data=False,
      description=f"video_folder: face clips of real videos "
                  f"({json.dumps(dataclasses.asdict(settings))})")
  final = os.path.join(root, VERSION)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  return counts


@dataclasses.dataclass
class Summary:
  """Totals over the whole build (this run and the runs it resumed)."""
  videos: int
  processed_now: int
  clips: dict[str, int]
  rejects: dict[str, int]
  seconds: dict[str, float]
  dataset: str
  references: dict[str, int] = dataclasses.field(default_factory=dict)  # REFERENCE_SOURCES

  def __str__(self) -> str:
    rejects = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejects.items())) or "none"
    clips = ", ".join(f"{k} {v}" for k, v in self.clips.items()) or "none"
    references = ", ".join(f"{k} {v}" for k, v in self.references.items()) or "none stored"
    return (f"{self.videos} videos ({self.processed_now} processed in this run); clips: {clips}; "
            f"rejected {sum(self.rejects.values())} ({rejects}); reference frames from: "
            f"{references}; dataset: {self.dataset}")


def _counts(rows: list[dict]) -> dict[str, int]:
  """Clips per split of the ledger rows, in SPLITS order (splits without clips left out)."""
  counts = collections.Counter()
  for r in rows:
    if r["status"] == "ok":
      counts[r["split"]] += r["clips"]
  return {split: counts[split] for split in splits.SPLITS if counts[split]}


def _dataset_counts(path: str) -> Optional[dict[str, int]]:
  """Clips per split of the dataset folder `path`; None if there is none."""
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    return None
  info = tfds.builder_from_directory(path).info
  return {name: split.num_examples for name, split in info.splits.items()}


def _warn_one_file_per_identity(items: list[captions_lib.Item], rule: str) -> None:
  """Logs a warning where every identity has exactly one video (a flat folder under the
  default rule: each file its own identity, so one person can straddle train and test)."""
  identities = collections.Counter(item.identity or splits.identity_of(item.key, rule)
                                   for item in items)
  if len(items) < 2 or max(identities.values()) > 1:
    return
  example = items[0]
  logging.warning(
      "Every one of the %d videos is its own identity (e.g. %r -> %r with --identity=%s), so "
      "one person's videos can land in both train and test. Name each video's person: a "
      "manifest with an 'identity' column, one subfolder per person (--identity=parent), or "
      "--identity=stem_prefix for names like person_000.mp4 (docs/data.md, 'Layouts').",
      len(items), example.key, example.identity or splits.identity_of(example.key, rule), rule)


def build(source: str, output_dir: str, settings: Settings = Settings(), workers: int = 1,
          shard_records: int = 1000, progress: bool = True) -> Summary:
  """Builds (or resumes) the dataset of the videos in `source` (folder or manifest).

  Videos already in the ledger are not redone; the dataset folder is rewritten only when it
  does not hold the ledger's clips of the listed videos.
  """
  items = captions_lib.list_inputs(source)
  _warn_one_file_per_identity(items, settings.identity)
  root = os.path.join(output_dir, NAME, config_name(settings.resolution, settings.num_frames))
  staging = os.path.join(root, "staging")
  os.makedirs(os.path.join(staging, "clips"), exist_ok=True)
  _check_settings(staging, settings)
  ledger_path = os.path.join(staging, "ledger.jsonl")
  rows = {r["key"]: r for r in _read_jsonl(ledger_path)}
  todo = [item for item in items if item.key not in rows]
  with tqdm.tqdm(total=len(items), initial=len(items) - len(todo), desc="videos", unit="video",
                 disable=not progress) as bar:
    for row in _results(todo, settings, os.path.join(staging, "clips"), workers):
      _append_jsonl(ledger_path, row)
      if row["status"] == "rejected":
        _append_jsonl(os.path.join(staging, "rejects.jsonl"), row)
      rows[row["key"]] = row
      bar.update(1)
  wanted = {item.key for item in items}
  done = [r for k, r in rows.items() if k in wanted]
  counts = _counts(done)
  if todo or _dataset_counts(os.path.join(root, VERSION)) != counts:
    counts = _finalize(root, staging, done, settings, shard_records)
  seconds = collections.Counter()
  for r in done:
    seconds.update(r.get("seconds", {}))
  references = _reference_counts(done)
  if references.get("none"):
    logging.warning(
        "%d clip(s) have no reference frames (reference_from 'none': their video has one clip, "
        "no face-track frame outside it and no other video of its identity in its split); "
        "training with config.model.reference_frames > 0 refuses them. Add another video of "
        "those people, or longer takes, and build again.", references["none"])
  return Summary(len(items), len(todo), counts,
                 dict(collections.Counter(r["reason"] for r in done if r["status"] == "rejected")),
                 dict(seconds), os.path.join(root, VERSION) if counts else "none (no clips)",
                 references)
