"""Quick start: the README's first command, a first trained model in minutes on 2 CPU cores.

The CPU recipe's model, data and sampler (configs/cpu_recipe.py) without its lip-sync loss
(so no SyncNet to train first), 1000 steps instead of 4000, and the eyes' pixels weighted 5x
in the loss like the mouth's (unweighted, 1000 steps draw no eyes). Its samples are heads on
a background, both in the caption's colors, eyes in about half the frames, little lip
movement yet (held-out numbers in docs/results.md, "The quick start").

  python run_train.py --config=configs/quick_start.py --workdir=/tmp/gcm_quick_start
"""
import ml_collections

from gcm_jax.configs import cpu_recipe


def get_config() -> ml_collections.ConfigDict:
  config = cpu_recipe.get_config()
  config.lipsync.update(weight=0.0, syncnet_workdir="")
  config.diffusion.update(eye_loss_weight=5.0)
  config.train.update(num_steps=1000)
  return config
