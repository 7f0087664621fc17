"""Trains the text + audio conditioned video diffusion model.

  python run_train.py --config=configs/tiny.py --workdir=/tmp/gcm_tiny
  python run_train.py --config=configs/tiny.py --workdir=... --config.train.num_steps=50

Builds the dataset into <workdir>/data on first use (unless config.data.data_dir is
set), trains, checkpoints to <workdir>/checkpoints, logs to <workdir>/logs and writes
sample videos (mp4 with the audio track) to <workdir>/samples. Rerunning with the
same workdir resumes from the latest checkpoint. The config is validated before
anything is built; config and resume problems end the run with a short message.
"""
import sys

from absl import app
from absl import flags
from absl import logging

from gcm_jax import config_rules
from gcm_jax import launch
from gcm_jax.runs import checkpoint
from gcm_jax.runs import directory


_DEFAULT_CONFIG = "configs/tiny.py"
_CONFIG = config_rules.define_config_flag(_DEFAULT_CONFIG)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/gcm_jax_tiny", "Checkpoints, logs, samples.")
_STOP_AT = flags.DEFINE_integer("stop_at_step", None,
                                "End this run at that step (checkpointed); rerun to resume.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  try:
    launch.train(_CONFIG.value, _WORKDIR.value, stop_at_step=_STOP_AT.value)
  except (config_rules.ConfigError, directory.ConfigMismatchError,
          checkpoint.CheckpointError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=config_rules.config_flags_parser(flags.FLAGS,
                                                                   _DEFAULT_CONFIG))
