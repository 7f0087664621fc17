"""Builds the `video_folder` TFDS dataset (array_record, no TensorFlow) from real videos.

Per video (`process_video`): decode at 25 fps and detect faces on small frames (pass 1),
track one face and cut tracks into clips, decode the 16 kHz audio, decode again and crop the
clips (pass 2); in batches of SYNC_BATCH finished clips, optionally measure and correct their
A/V offset with a SyncNet, caption them from the transcript and stream them into the video's
staged array_record file (so memory does not grow with the video's length); then one line
in `ledger.jsonl` marks the video done (a rejected video also gets a line in `rejects.jsonl`
with the reason). A rerun skips the videos in the ledger, so a killed build
resumes and every staged file written before the kill stays readable. At the end the staged
clips are gathered, by split, into the TFDS folder
`output_dir/video_folder/r{R}_t{T}/1.0.0/` (`as_data_source`, `pipeline.make_dataset`).

Layout of `output_dir/video_folder/r{R}_t{T}/`:
  1.0.0/           the dataset (dataset_info.json, features.json, shards)
  staging/         settings.json, ledger.jsonl, rejects.jsonl, clips/<video hash>.array_record
"""
from concurrent import futures
import collections
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
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
VERSION = "1.0.0"
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


def features(settings: Settings) -> tfds.features.FeaturesDict:
  """One clip. T = num_frames, R = resolution, S = 640 T."""
  t, r = settings.num_frames, settings.resolution
  return tfds.features.FeaturesDict({
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
  })


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


def _detect_pass(path: str, info: decode.StreamInfo, settings: Settings,
                 detector: faces.Detector, timer: _Timer
                 ) -> tuple[int, float, dict[int, list[faces.Detection]], np.ndarray, float]:
  """Pass 1: (frame count, origin, detections {frame: faces}, cuts bool [T], source px per
  detector px)."""
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
  """One clip to cut: first frame, crop windows float [T, 4], mouth boxes float [T, 4]."""
  start: int
  windows: np.ndarray
  mouths: np.ndarray


def _crop_pass(path: str, plans: list[_Plan], settings: Settings, timer: _Timer
               ) -> Iterator[list[tuple[int, np.ndarray]]]:
  """Pass 2: batches of finished clips (plan index, uint8 [T, R, R, 3]), each batch at most
  SYNC_BATCH clips, so a long video never holds more than that in memory."""
  t_len, r = settings.num_frames, settings.resolution
  wanted = collections.defaultdict(list)
  for n, plan in enumerate(plans):
    for k in range(t_len):
      wanted[plan.start + k].append((n, k))
  last = max(wanted)
  open_clips, done = {}, []
  since = time.perf_counter()
  for t, _, frame in decode.frames_25fps(path, wanted=wanted.__contains__):
    since = timer.add("decode", since)
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
  for tr in tracks:
    windows = faces.crop_window(tr.boxes, settings.margin, settings.shift)
    mouths = faces.mouth_boxes(windows, tr.landmarks)
    for start in segments.clip_starts(tr.start, tr.end, settings.num_frames, settings.stride):
      k = slice(start - tr.start, start - tr.start + settings.num_frames)
      plans.append(_Plan(start, windows[k], mouths[k]))
  return plans


def process_video(item: captions_lib.Item, settings: Settings, tools: Tools,
                  emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
  """One video -> `emit(record)` for each of its clips, in order; returns its ledger row.

  Raises:
    decode.RejectError: the video gives no clip (its reason).
  """
  timer = _Timer()
  info = decode.probe(item.path)
  num, origin, detections, cuts, scale = _detect_pass(item.path, info, settings,
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
  kept, measured = 0, []
  for batch in _crop_pass(item.path, plans, settings, timer):
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
      kept += 1
    timer.add("write", since)
  if not kept:
    raise decode.RejectError("low_sync", f"(offset, confidence) per clip: {measured}")
  split = item.split or splits.split_of(identity, settings.validation_fraction,
                                        settings.test_fraction)
  return {"key": item.key, "status": "ok", "split": split, "identity": identity,
          "clips": kept, "dropped_by_sync": len(plans) - kept, "frames": num,
          "track_ends": ends, "streams": dataclasses.asdict(info),
          "seconds": dict(timer.seconds)}


def _staged_name(key: str) -> str:
  return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20] + ".array_record"


def _run_one(item: captions_lib.Item, settings: Settings, clips_dir: str) -> dict[str, Any]:
  """Worker: processes one video, streaming its clips into its staged array_record file
  (a temporary name, renamed when complete); returns its ledger row."""
  start = time.perf_counter()
  path = os.path.join(clips_dir, _staged_name(item.key))
  spec = features(settings)
  writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1")
  size = 0

  def emit(record: dict[str, Any]) -> None:
    nonlocal size
    data = spec.serialize_example(record)
    size += len(data)
    writer.write(data)

  try:
    row = process_video(item, settings, tools_for(settings), emit)
  except decode.RejectError as e:
    row = {"key": item.key, "status": "rejected", "reason": e.reason, "detail": e.detail}
  except Exception as e:  # pylint: disable=broad-except  # Bad input never aborts the build.
    row = {"key": item.key, "status": "rejected", "reason": "error",
           "detail": f"{type(e).__name__}: {e}"}
  writer.close()
  if row["status"] != "ok":
    os.remove(path + ".tmp")
    return row
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
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if differ:
      raise ValueError(f"{staging} was built with other settings ({differ}: saved, asked); "
                       f"use another --output_dir or delete {staging}")
    return
  with open(path, "w", encoding="utf-8") as f:
    json.dump(wanted, f, indent=2)


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


def _finalize(root: str, staging: str, rows: list[dict], settings: Settings,
              shard_records: int) -> dict[str, int]:
  """Gathers the staged clips by split into the TFDS folder `root/1.0.0` (rewritten whole,
  in a temporary folder renamed at the end; not written without clips); returns clips per
  split."""
  spec = features(settings)
  tmp = os.path.join(root, f"incomplete.{VERSION}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  template = naming.ShardedFileTemplate(data_dir=tmp, template=naming.DEFAULT_FILENAME_TEMPLATE,
                                        dataset_name=NAME, filetype_suffix="array_record")
  infos, counts = [], {}
  for split in splits.SPLITS:
    files = [os.path.join(staging, "clips", r["file"]) for r in sorted(rows, key=lambda r: r["key"])
             if r["status"] == "ok" and r["split"] == split and r["clips"]]
    records = []
    for path in files:
      reader = array_record_module.ArrayRecordReader(path)
      records += reader.read_all()
      reader.close()
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

  def __str__(self) -> str:
    rejects = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejects.items())) or "none"
    clips = ", ".join(f"{k} {v}" for k, v in self.clips.items()) or "none"
    return (f"{self.videos} videos ({self.processed_now} processed in this run); clips: {clips}; "
            f"rejected {sum(self.rejects.values())} ({rejects}); dataset: {self.dataset}")


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
  return Summary(len(items), len(todo), counts,
                 dict(collections.Counter(r["reason"] for r in done if r["status"] == "rejected")),
                 dict(seconds), os.path.join(root, VERSION) if counts else "none (no clips)")
