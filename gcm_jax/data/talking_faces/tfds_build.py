"""`tfds build` without TensorFlow.

TFDS 4.9's `tfds` entry point imports its `convert_format` command, which needs TensorFlow
at import time, so `tfds build` fails in a TensorFlow-free environment. This runs TFDS's own
`build` command (same flags and behaviour) without that import:

  python -m gcm_jax.data.talking_faces.tfds_build gcm_jax/data/talking_faces \
      --data_dir=/tmp/tfds --file_format=array_record --config=r32_t16

With TensorFlow installed, the `tfds build ...` command line is equivalent.
"""
from absl import app
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils

_parse_flags = cli_utils.make_flags_parser(
    build.Args, description="tfds build (TensorFlow-free launcher)")


def main(args: build.Args) -> None:
  args.execute()


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
