"""Builds the video_folder dataset from a folder of videos (or a CSV / JSONL manifest).

  python -m gcm_jax.data.video_folder --input=DIR_OR_MANIFEST --output_dir=DIR \
      --resolution=128 --num_frames=16 --workers=2

Prints a progress bar over videos and a summary (clips per split, rejects by reason);
`DIR/video_folder/r{R}_t{T}/staging/rejects.jsonl` lists every rejected video with its
reason. Rerunning the same command resumes. Train on the result with
`--config.data.name=video_folder --config.data.data_dir=DIR` (docs/data.md).
"""
import dataclasses

from absl import app
from absl import flags
from absl import logging

from gcm_jax.data.video_folder import builder

_DEFAULTS = builder.Settings()
_HELP = {
    "clip_stride": "frames between clip starts (0: num_frames, no overlap)",
    "reference_frames": "frames of the person at other times of the video stored per clip "
                        "(identity conditioning: config.model.reference_frames <= this; 0: none)",
    "detector": "face detector: lbp (default, offline), haar (OpenCV 4.x), yunet (needs "
                "--detector_model=face_detection_yunet.onnx)",
    "detector_model": "weights file of the detector (yunet ONNX, another cascade XML)",
    "detect_size": "longer side (pixels) of the frames the detector sees",
    "detect_every": "run the detector every N frames at 25 fps (and at scene cuts)",
    "min_face": "smallest face, as a fraction of the frame's shorter side",
    "margin": "crop side = face box size x (1 + 2 margin)",
    "shift": "crop centre below the face box centre, in box sizes",
    "scene_cut": "mean thumbnail difference (grey levels) that starts a new shot",
    "max_missed": "consecutive detections without the face that the tracker bridges",
    "second_face_ratio": "a second face at least this large (vs the tracked one) cuts the track",
    "smooth_sigma": "Gaussian smoothing of the face box over time (frames)",
    "identity": "identity of a video without a manifest column: parent, top_folder, stem_prefix",
    "validation_fraction": "fraction of identities (hashed) in the validation split",
    "test_fraction": "fraction of identities (hashed) in the test split",
    "max_caption_bytes": "captions are cut to this many UTF-8 bytes (config.data.text_max_len)",
    "syncnet_workdir": "a train_syncnet workdir: measure and fix each clip's A/V offset",
    "sync_max_offset": "SyncNet pass: drop clips whose |offset| exceeds this (frames)",
    "sync_min_confidence": "SyncNet pass: drop clips whose confidence (LSE-C) is below this",
}

flags.DEFINE_string("input", None, "folder of videos, or a .csv / .jsonl manifest", required=True)
flags.DEFINE_string("output_dir", None, "the TFDS data_dir to write", required=True)
flags.DEFINE_integer("resolution", _DEFAULTS.resolution, "output frame size (pixels)")
flags.DEFINE_integer("num_frames", _DEFAULTS.num_frames, "frames per clip at 25 fps")
flags.DEFINE_integer("workers", 1, "parallel processes (one video each)")
flags.DEFINE_integer("shard_records", 1000, "clips per array_record shard")
for _field in dataclasses.fields(builder.Settings):
  if _field.name in ("resolution", "num_frames"):
    continue
  _define = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
             str: flags.DEFINE_string}[type(_field.default)]
  _define(_field.name, _field.default, _HELP[_field.name])


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  settings = builder.Settings(**{field.name: f[field.name].value
                                 for field in dataclasses.fields(builder.Settings)})
  summary = builder.build(f.input, f.output_dir, settings, workers=f.workers,
                          shard_records=f.shard_records)
  print(summary)


if __name__ == "__main__":
  app.run(main)
