"""The command line of every training family: `--config`, `--workdir`, `--stop_at_step`.

  command.run(train_fn, default_config="autoencoder", what="autoencoder")

`train_fn(config, workdir, stop_at_step)` trains (or resumes); a problem with the config, a
resume that does not fit the workdir or an unreadable checkpoint ends the command with one
line `error: ...`, and a report it returns (a dict) is printed as JSON.
"""
import json
import sys
from typing import Any, Callable, Optional

import ml_collections
from absl import app
from absl import flags
from absl import logging

from gcm_jax import config_rules
from gcm_jax.runs import checkpoint
from gcm_jax.runs import directory

TrainFn = Callable[[ml_collections.ConfigDict, str, Optional[int]], Any]


def run(train_fn: TrainFn, default_config: str, what: str) -> None:
  """Defines the flags (here, not on import, so importing a trainer clashes with no other
  program's flags) and runs `train_fn` on them."""
  config_rules.define_config_flag(default_config,
                                  f"{what} config: a name in gcm_jax/configs or a path "
                                  f"(default {default_config})")
  flags.DEFINE_string("workdir", None, "the run directory: checkpoints, logs, outputs",
                      required=True)
  flags.DEFINE_integer("stop_at_step", None,
                       "end this run at that step (checkpointed); rerun to resume")

  def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    try:
      report = train_fn(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.stop_at_step)
    except (config_rules.ConfigError, directory.ConfigMismatchError,
            checkpoint.CheckpointError) as e:
      sys.exit(f"error: {e}")
    if isinstance(report, dict):
      print(json.dumps(report, indent=2))

  app.run(main, flags_parser=config_rules.config_flags_parser(flags.FLAGS, default_config))
