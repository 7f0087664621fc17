"""The dataset contract: what one entry of `gcm_jax.data.datasets.DATASETS` gives gcm_jax.

Training, sampling, evaluation and SyncNet training ask the entry of `config.data.name`,
never a dataset's name. A record (one clip) is a dict with at least

  'video'    uint8 `[T, R, R, 3]`
  'audio'    float32 `[T * 640]`: 16 kHz mono under 25 fps video
  'caption'  bytes or str (may be empty: the model reads it as the dropped text)

plus the entry's `features` (ground truth copied into the model inputs) and whatever its
`derived` makers and `truth` hooks read. Adding a dataset: one module that builds a
`Dataset` (see data/talking_faces/dataset.py, data/video_folder/dataset.py) and one line in
`gcm_jax/data/datasets.py`; docs/extending.md walks through it.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import ml_collections
import numpy as np

Record = Mapping[str, Any]
# (config.data, split) -> the split's records: `len`, `[i]` and a `repr` stable across hosts
# (grain checks it on restore); a TFDS data source is one.
Source = Callable[[ml_collections.ConfigDict, str], Sequence[Record]]
# (config.data, split, num_clips, num_frames, seed) -> records of exactly num_frames frames.
ClipMaker = Callable[[ml_collections.ConfigDict, str, int, int, int], list[Record]]


# Record features with a frame axis that is not the clip's time ('reference': K frames of the
# person from other times), never cut with the clip.
NOT_PER_FRAME = ("reference",)


def cut_record(record: Record, num_frames: int) -> dict[str, Any]:
  """`record`'s first `num_frames` frames: 'audio' to `num_frames * 640` samples and every
  array whose leading axis is the clip's frame count (per-frame features, not
  `NOT_PER_FRAME`) to `num_frames`."""
  frames = len(record["video"])
  if num_frames > frames:
    raise ValueError(f"asked for clips of {num_frames} frames from records of {frames}")
  samples = len(record["audio"]) // frames
  out = {}
  for key, value in record.items():
    if key == "audio":
      out[key] = np.asarray(value)[:num_frames * samples]
    elif (key not in NOT_PER_FRAME and isinstance(value, np.ndarray) and value.ndim
          and value.shape[0] == frames):
      out[key] = value[:num_frames]
    else:
      out[key] = value
  return out


def lower_half(record: Record, resolution: int) -> np.ndarray:
  """bool `[T, R, R]`: the lower half of every frame, the dubbing mask of face crops without
  keypoints (Wav2Lip's and LatentSync's convention)."""
  mask = np.zeros((len(record["video"]), resolution, resolution), bool)
  mask[:, resolution // 2:] = True
  return mask


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Metrics only a dataset that knows how its clips were made can compute (`evaluate`).

  Attributes:
    keys: the clip features the hooks read (model-input names, e.g. 'mouth_open').
    caption_metric: the report's name for `caption_match` (e.g. 'color_accuracy').
    caption_match: (videos `[N, T, R, R, 3]` in [-1, 1], clips) -> {attribute: fraction of
      the videos in which the attribute read from the pixels is the caption's}.
    chance: `caption_match`'s expected value for a video that ignores the caption.
    mouth_track_key: the clip feature with each clip's audio-implied mouth opening `[N, T]`.
    mouth_correlation: (videos `[N, T, R, R, 3]`, tracks `[N, T]`) -> float `[N]`: the
      correlation over time of the mouth read from each video with its track.
    paraphrases: {style: caption -> the same content reworded} (does the text encoder read
      the meaning or the template?).
    structure_kept: (videos `[N, T, R, R, 3]` in [-1, 1], sources `[N, T, R, R, 3]`, clips)
      -> {'eyes': bool `[N, T]`, 'outline': bool `[N, T]`}: per frame, whether the video kept
      the source frame's eyes and head outline (outside the dubbing mask), for dubbing runs'
      preservation rows; None: the dataset cannot tell (those columns are left out).
    face_structure: videos `[N, T, R, R, 3]` in [-1, 1] -> per frame, from the frame alone:
      {'eyes': bool `[N, T]` (both eyes drawn), 'outline_iou': float `[N, T]` (the head's
      IoU with its best-fit ellipse, 0 without a head), 'mouth_placed': float `[N, T]` (1 if
      the mouth lies in the lower half of the head, 0 if not, NaN where no mouth is
      visible)}, `evaluate`'s face-structure rows; None: the dataset cannot tell.
  """
  keys: tuple[str, ...]
  caption_metric: str
  caption_match: Callable[[np.ndarray, Mapping[str, np.ndarray]], dict[str, float]]
  chance: float
  mouth_track_key: str
  mouth_correlation: Callable[[np.ndarray, np.ndarray], np.ndarray]
  paraphrases: Mapping[str, Callable[[str], str]] = dataclasses.field(default_factory=dict)
  structure_kept: Optional[Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]],
                                    dict[str, np.ndarray]]] = None
  face_structure: Optional[Callable[[np.ndarray], dict[str, np.ndarray]]] = None


def as_text(value: Any) -> str:
  """A record's string feature as str (TFDS gives bytes)."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def spread_clips(source: Source) -> ClipMaker:
  """The clip maker of a built dataset: `num_clips` records evenly spaced over the split, in
  its order (all of them if it has fewer), each cut to its first `num_frames` frames (`seed`
  unused). A built split holds each video's clips together, so its first clips would often
  be one person's; spread, they reach every video the split has room for."""
  def clips(data_cfg: ml_collections.ConfigDict, split: str, num_clips: int, num_frames: int,
            seed: int) -> list[Record]:
    del seed
    records = source(data_cfg, split)
    n = min(num_clips, len(records))
    picks = np.linspace(0, len(records) - 1, n).round().astype(int) if n else []
    return [cut_record(records[int(i)], num_frames) for i in picks]
  return clips


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset as gcm_jax reads it.

  Attributes:
    description: one line for docs and error messages.
    source: (config.data, split) -> the split's records, for the training pipeline.
    clips: (config.data, split, num_clips, num_frames, seed) -> records of `num_frames`
      frames for evaluation and SyncNet training; None = `spread_clips(source)`.
    resolutions: the `config.data.resolution`s it has (None: any).
    features: ground truth its records carry that the model inputs keep: {name: dtype}.
    derived: per-record features made from what the record has, only when a run asks for
      them: {name: (record, R) -> array}; 'mouth_region' bool `[T, R, R]` (the mouth-weighted
      loss), 'eye_region' bool `[T, R, R]` (the eye-weighted loss), 'source_mask' bool
      `[T, R, R]` (the area dubbing regenerates: from face keypoints, or `lower_half`) and
      'control_maps' float32 `[T, R, R, control_channels]` (ControlNet runs).
    control_channels: the channels of its 'control_maps' (0: it has none).
    reference: (record, K, R) -> uint8 `[K, R, R, 3]`: K frames of the record's person from
      other times of its video, never the record's own frames (identity conditioning,
      `model.reference_frames`); None: the dataset has none.
    truth: its ground-truth metric hooks, or None (those metrics are then skipped, with why).
  """
  description: str
  source: Source
  clips: Optional[ClipMaker] = None
  resolutions: Optional[tuple[int, ...]] = None
  features: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  derived: Mapping[str, Callable[[Record, int], np.ndarray]] = dataclasses.field(
      default_factory=dict)
  control_channels: int = 0
  reference: Optional[Callable[[Record, int, int], np.ndarray]] = None
  truth: Optional[GroundTruth] = None

  def clip_records(self, data_cfg: ml_collections.ConfigDict, split: str, num_clips: int,
                   num_frames: int, seed: int) -> list[Record]:
    """`clips` (or `spread_clips(source)`) for these arguments."""
    make = self.clips or spread_clips(self.source)
    return make(data_cfg, split, num_clips, num_frames, seed)
