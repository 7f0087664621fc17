"""Real videos' registry entry (`gcm_jax.data.datasets`): clips built by
`python -m gcm_jax.data.video_folder` into `config.data.data_dir` (they cannot be built from
the config: that needs the videos). Evaluation and SyncNet training read the split's first
clips; the face tracker's mouth box makes the mouth region of the mouth-weighted loss. No
ground truth: the metrics that need it are skipped, with why.
"""
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from gcm_jax.data import contract
from gcm_jax.data.video_folder import builder as video_folder
from gcm_jax.data.video_folder import faces


def source(data_cfg: ml_collections.ConfigDict, split: str):
  """The built split at `config.data.data_dir` (resolution and clip length from the config)."""
  path = video_folder.dataset_path(data_cfg.data_dir, data_cfg.resolution, data_cfg.num_frames)
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


DATASET = contract.Dataset(
    description="clips of real videos (python -m gcm_jax.data.video_folder)",
    source=source,
    derived={"mouth_region": lambda record, r: faces.mouth_region(
        np.asarray(record["mouth_box"], np.float32), r),
             "source_mask": contract.lower_half},
)
