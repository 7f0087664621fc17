"""Real videos' registry entry (`gcm_jax.data.datasets`): clips built by
`python -m gcm_jax.data.video_folder` into `config.data.data_dir` (they cannot be built from
the config: that needs the videos). Evaluation and SyncNet training read clips spread
evenly over the split (`contract.spread_clips`); the face tracker's mouth box makes the
mouth region of the mouth-weighted loss; each clip's stored reference frames (other times
of its video, `builder.REFERENCE_SOURCES`) are its identity reference. No ground truth:
the metrics that need it are skipped, with why.
"""
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from gcm_jax.data import contract
from gcm_jax.data.video_folder import builder as video_folder
from gcm_jax.data.video_folder import faces


def source(data_cfg: ml_collections.ConfigDict, split: str):
  """The built split at `config.data.data_dir` (resolution and clip length from the config);
  a build of an older builder version is read as it is (`builder.readable_path`)."""
  path = video_folder.readable_path(data_cfg.data_dir, data_cfg.resolution,
                                    data_cfg.num_frames)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"no video_folder dataset at {path}; build it with python -m gcm_jax.data.video_folder "
        f"--input=YOUR_VIDEOS --output_dir={data_cfg.data_dir} "
        f"--resolution={data_cfg.resolution} --num_frames={data_cfg.num_frames}")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f"the video_folder dataset at {path} has no {split} clips (splits: "
                     f"{list(builder.info.splits)}); see its staging/ledger.jsonl")
  return builder.as_data_source(split)


def reference(record: contract.Record, num_frames: int, resolution: int) -> np.ndarray:
  """uint8 `[K, R, R, 3]`: the first K of the clip's stored reference frames (the builder
  stores them most preferred first, so a record always gives the same ones)."""
  if "reference" not in record:
    raise ValueError(
        "this video_folder dataset has no reference frames: it was built by a builder older "
        f"than {video_folder.VERSION} or with --reference_frames=0. Build it again with "
        f"python -m gcm_jax.data.video_folder --reference_frames={max(num_frames, 4)} (into a "
        "new --output_dir), or train without config.model.reference_frames")
  frames = np.asarray(record["reference"])
  where = (f"clip of {contract.as_text(record.get('source', '?'))} at "
           f"{float(record.get('start_time', np.nan)):.2f} s")
  if contract.as_text(record.get("reference_from", "")) == "none":
    raise ValueError(
        f"the {where} has no reference frames (reference_from 'none': its video has one "
        f"clip, no face-track frame outside it and no other video of identity "
        f"{contract.as_text(record.get('identity', '?'))!r} in its split; the build's summary "
        "counts them); add another video of that person, or a longer take, and build again, or "
        "train without config.model.reference_frames")
  if num_frames > len(frames):
    raise ValueError(
        f"config.model.reference_frames = {num_frames}, but this video_folder build stores "
        f"{len(frames)} reference frames per clip; lower it, or build again with "
        f"python -m gcm_jax.data.video_folder --reference_frames={num_frames} (into a new "
        "--output_dir)")
  if frames.shape[1:] != (resolution, resolution, 3):
    raise ValueError(f"the {where}'s reference frames are {frames.shape[1:]}, its video "
                     f"{resolution}x{resolution}")
  return frames[:num_frames]


DATASET = contract.Dataset(
    description="clips of real videos (python -m gcm_jax.data.video_folder)",
    source=source,
    derived={"mouth_region": lambda record, r: faces.mouth_region(
        np.asarray(record["mouth_box"], np.float32), r),
             "source_mask": contract.lower_half},
    reference=reference,
)
