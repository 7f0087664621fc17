"""Trains the text + audio conditioned video diffusion model.

  python run_train.py --config=configs/tiny.py --workdir=/tmp/gcm_tiny
  python run_train.py --config=configs/tiny.py --workdir=... --config.train.num_steps=50

Builds the dataset into <workdir>/data on first use (unless config.data.data_dir is
set), trains, checkpoints to <workdir>/checkpoints, logs to <workdir>/logs and writes
sample videos (mp4 with the audio track) to <workdir>/samples. Rerunning with the
same workdir resumes from the latest checkpoint.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gcm_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/gcm_jax_tiny", "Checkpoints, logs, samples.")
_STOP_AT = flags.DEFINE_integer("stop_at_step", None,
                                "End this run at that step (checkpointed); rerun to resume.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  trainer.train(_CONFIG.value, _WORKDIR.value, stop_at_step=_STOP_AT.value)


if __name__ == "__main__":
  app.run(main)
