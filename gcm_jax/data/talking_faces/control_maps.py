"""Control maps of a talking-faces clip, for `gcm-generate --control` (ControlNet runs).

  python -m gcm_jax.data.talking_faces.control_maps --split=test --index=0 --num_frames=50 \
      --resolution=32 --output=maps.npy --audio_output=voice.wav

writes the clip's control maps (float32 `[T, R, R, K + 1]`: keypoint heatmaps + head
layout, the input pipeline's `control_maps` feature) and its voice (16 kHz WAV), and
prints its caption and the gcm-generate command that drives a ControlNet run with them.
Clip `index` of `split` is the dataset's record `index` (`talking_faces.make_example`:
phrase, voice, colors and motion from (dataset_seed, split, index)), rendered with
`num_frames` frames at `resolution`.
"""
import shlex

from absl import app
from absl import flags
import numpy as np

from gcm_jax import video_io
from gcm_jax.data.talking_faces import example as example_lib
from gcm_jax.data.talking_faces import keypoint_maps
from gcm_jax.data.talking_faces import talking_faces


def clip(split: str, index: int, resolution: int, num_frames: int, dataset_seed: int = 0
         ) -> tuple[np.ndarray, example_lib.Example]:
  """(control maps float32 `[T, R, R, K + 1]`, the example) of clip `index` of `split`."""
  config = talking_faces.TalkingFacesConfig(resolution=resolution, num_frames=num_frames,
                                            seed=dataset_seed)
  example = talking_faces.make_example(config, split, index)
  return keypoint_maps.control_maps(example.keypoints, resolution), example


def write_clip(output: str, split: str, index: int, resolution: int, num_frames: int,
               audio_output: str = "", dataset_seed: int = 0) -> str:
  """Saves the clip's control maps to `output` (.npy) and, if `audio_output`, its voice
  there (WAV); returns its caption."""
  maps, example = clip(split, index, resolution, num_frames, dataset_seed)
  np.save(output, maps)
  if audio_output:
    video_io.write_wav(audio_output, example.audio)
  return example.caption


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  caption = write_clip(f.output, f.split, f.index, f.resolution, f.num_frames, f.audio_output,
                       f.dataset_seed)
  print(f"wrote {f.output}: control maps of {f.split} clip {f.index} ({f.num_frames} frames "
        f"at {f.resolution}x{f.resolution})\ncaption: {caption}\n"
        f"gcm-generate --workdir=<ControlNet run> --text={shlex.quote(caption)} "
        f"--audio={f.audio_output or '<voice.wav>'} --control={f.output}")


def main() -> None:
  """CLI entry point (flags are defined here, not on import)."""
  flags.DEFINE_enum("split", "test", list(talking_faces.SPLIT_IDS), "Dataset split.")
  flags.DEFINE_integer("index", 0, "Clip index in the split.")
  flags.DEFINE_integer("resolution", 32, "Frame size R (the run's config.data.resolution).")
  flags.DEFINE_integer("num_frames", 50, "Frames (25 fps); at least the video's length.")
  flags.DEFINE_integer("dataset_seed", 0, "The dataset's config.data.dataset_seed.")
  flags.DEFINE_string("output", None, "Control maps .npy to write.")
  flags.DEFINE_string("audio_output", "", "Optional: the clip's voice, a WAV file to write.")
  flags.mark_flag_as_required("output")
  app.run(_main)


if __name__ == "__main__":
  main()
