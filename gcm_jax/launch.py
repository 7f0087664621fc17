"""Validated training entry points: the config is checked whole before anything is built.

  gcm-train diffusion   --workdir=DIR [--config=quick_start] [--config.a.b=...]
  gcm-train autoencoder --workdir=DIR [--config=autoencoder]
  gcm-train syncnet     --workdir=DIR [--config=syncnet]

`--config` takes a config installed with the package (`gcm_jax/configs/`, e.g.
`quick_start`, `cpu_latent_recipe:autoencoder`) or a path to any config file. run_train.py
is `gcm-train diffusion`; `python -m gcm_jax.train.train_autoencoder` and
`python -m gcm_jax.train.train_syncnet` are the other two.

From Python, `launch.train(config, workdir)` validates the diffusion config, then trains
(`trainer.train` itself expects a valid config).
"""
import sys
from typing import Callable, Optional

import ml_collections

from gcm_jax import config_validation
from gcm_jax.runs import state as state_lib
from gcm_jax.train import command
from gcm_jax.train import train_autoencoder
from gcm_jax.train import train_syncnet
from gcm_jax.train import trainer


DIFFUSION_DEFAULT_CONFIG = "tiny"  # gcm_jax/configs/tiny.py


def train(config: ml_collections.ConfigDict, workdir: str,
          stop_at_step: Optional[int] = None) -> state_lib.TrainState:
  """Validates `config` (`config_validation.validate`, raising `ConfigError`), then trains or
  resumes the diffusion model in `workdir` (`trainer.train`); returns the final state."""
  config_validation.validate(config)
  return trainer.train(config, workdir, stop_at_step=stop_at_step)


def diffusion_main() -> None:
  """The diffusion model's command (run_train.py, `gcm-train diffusion`)."""
  command.run(train, DIFFUSION_DEFAULT_CONFIG, "experiment")


COMMANDS: dict[str, Callable[[], None]] = {
    "diffusion": diffusion_main,
    "autoencoder": train_autoencoder.main,
    "syncnet": train_syncnet.main,
}


def main() -> None:
  """`gcm-train FAMILY [flags]`: the FAMILY's command with the remaining arguments."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: gcm-train {{{'|'.join(COMMANDS)}}} --workdir=DIR [--config=NAME|PATH] "
             f"[--config.FIELD=VALUE ...]")
  command = sys.argv.pop(1)
  sys.argv[0] = f"gcm-train {command}"
  COMMANDS[command]()
