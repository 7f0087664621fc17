"""Validated training entry points: the config is checked whole before anything is built.

  launch.train(config, workdir)   the diffusion model (run_train.py, the notebooks)

`trainer.train` itself expects a valid config; call it through here (or validate with
`config_validation.validate` first) so a bad field stops the run with one clear error and
leaves the workdir untouched.
"""
from typing import Optional

import ml_collections

from gcm_jax import config_validation
from gcm_jax.runs import state as state_lib
from gcm_jax.train import trainer


def train(config: ml_collections.ConfigDict, workdir: str,
          stop_at_step: Optional[int] = None) -> state_lib.TrainState:
  """Validates `config` (`config_validation.validate`, raising `ConfigError`), then trains or
  resumes the diffusion model in `workdir` (`trainer.train`); returns the final state."""
  config_validation.validate(config)
  return trainer.train(config, workdir, stop_at_step=stop_at_step)
