"""The synthetic talking faces' registry entry (`gcm_jax.data.datasets`): generated on first
use, with the renderer's ground truth (visemes, mouth openness, keypoints, caption labels).

Training reads the built TFDS splits (`talking_faces.TalkingFaces`, generated into
`config.data.data_dir` if missing and `config.data.build_if_missing`). Evaluation and SyncNet
training draw fresh clips of any length from the split's phrases and voices (`clips`: the
test split's are never seen in training). Keypoints make the mouth region of the
mouth-weighted loss and the ControlNet maps; `ground_truth` reads colors and mouths back, and
whether a dubbed frame kept the source's eyes and head outline; `face_parts` whether a frame
drew a head shaped like one, with eyes and the mouth in its lower half.
"""
import jax
import ml_collections
import numpy as np

from gcm_jax.data import contract
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import corpus
from gcm_jax.data.talking_faces import example as example_lib
from gcm_jax.data.talking_faces import face_parts
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.data.talking_faces import identity
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import talking_faces
from gcm_jax.parallel import mesh as mesh_lib


def _prepared(builder: talking_faces.TalkingFaces, build_if_missing: bool
              ) -> talking_faces.TalkingFaces:
  """`builder` with complete data: (re)built if `build_if_missing`, else an error saying why."""
  if build_if_missing:
    return talking_faces.prepare(builder)
  reason = talking_faces.incomplete_reason(builder)
  if reason is None:
    return builder
  delete = f"delete {builder.data_path}, then " if builder.data_path.exists() else ""
  raise FileNotFoundError(
      f"dataset {builder.name}/{builder.builder_config.name} in {builder.data_dir_root} is "
      f"not usable: {reason}; {delete}set config.data.build_if_missing or run "
      f"gcm_jax.data.talking_faces.build(...)")


def source(data_cfg: ml_collections.ConfigDict, split: str):
  """The built split, generated (or repaired) first if allowed.

  Multi-host: process 0 builds, all processes wait at a barrier; a process that still does
  not see complete data (host-local data_dir) builds its own identical copy.
  """
  def get_builder():
    return talking_faces.get_builder(
        data_cfg.data_dir, data_cfg.resolution, data_cfg.num_frames, data_cfg.num_train,
        data_cfg.num_validation, data_cfg.num_test, data_cfg.dataset_seed)
  builder = None
  if jax.process_index() == 0 or not data_cfg.build_if_missing:
    builder = _prepared(get_builder(), data_cfg.build_if_missing)
  if jax.process_count() > 1:
    mesh_lib.wait_for_processes("gcm_jax.data.talking_faces: dataset built")
    builder = _prepared(get_builder(), data_cfg.build_if_missing)
  return builder.as_data_source(split)


def clips(data_cfg: ml_collections.ConfigDict, split: str, num_clips: int, num_frames: int,
          seed: int) -> list[contract.Record]:
  """`num_clips` fresh clips of `num_frames` frames at `config.data.resolution`, each a random
  phrase, voice and speaking rate of the split (`corpus.SPLITS`) and random caption
  attributes, drawn from `seed`."""
  phrases, voices = corpus.SPLITS[split]
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_clips):
    ex = example_lib.generate_example(
        phrases[rng.integers(len(phrases))], captions.sample_attributes(rng),
        voice=voices[rng.integers(len(voices))], rate=int(rng.choice(corpus.RATES)),
        resolution=data_cfg.resolution, num_frames=num_frames, seed=int(rng.integers(2**31)))
    out.append(ex.features())
  return out


def _paraphrase(style: str):
  return lambda caption: captions.paraphrase(caption, style)


DATASET = contract.Dataset(
    description="the synthetic talking faces, generated on first use",
    source=source,
    clips=clips,
    resolutions=renderer.RESOLUTIONS,
    features={"visemes": np.int32, "mouth_open": np.float32, "keypoints": np.float32,
              "face_color": np.int32, "background_color": np.int32, "motion": np.int32},
    derived={
        "mouth_region": lambda record, r: keypoint_maps.mouth_region(
            np.asarray(record["keypoints"], np.float32), r),
        "control_maps": lambda record, r: keypoint_maps.control_maps(
            np.asarray(record["keypoints"], np.float32), r),
        "eye_region": lambda record, r: ground_truth.eye_patches(
            np.asarray(record["keypoints"], np.float32), r).any(axis=-3),
        "source_mask": identity.source_mask,
    },
    control_channels=keypoint_maps.NUM_CONTROL_CHANNELS,
    reference=identity.reference_frames,
    truth=contract.GroundTruth(
        keys=("mouth_open", "keypoints", "face_color", "background_color"),
        caption_metric="color_accuracy",
        caption_match=ground_truth.color_accuracy,
        chance=1 / captions.NUM_COLORS,
        mouth_track_key="mouth_open",
        mouth_correlation=ground_truth.mouth_correlation,
        paraphrases={style: _paraphrase(style) for style in captions.PARAPHRASES},
        structure_kept=ground_truth.structure_kept,
        face_structure=face_parts.face_parts),
)
