"""Quick start: the README's first command, a few minutes on 2 CPU cores, samples with faces.

The CPU recipe's model and data (configs/cpu_recipe.py: 32x32, 8-frame clips, a 3-block
width-64 STDiT predicting x0) without the lip-sync expert, trained 600 steps at a higher
learning rate: the samples show heads in the caption's colors on a background (blocky at
this budget); the mouths do not follow the voice yet (that takes the recipe's SyncNet loss
and 4000 steps). docs/results.md, "The quick start".

  python run_train.py --config=configs/quickstart.py --workdir=/tmp/gcm_quickstart
"""
import ml_collections

from configs import cpu_recipe


def get_config() -> ml_collections.ConfigDict:
  config = cpu_recipe.get_config()
  config.lipsync.update(weight=0.0, syncnet_workdir="", start_step=0, ramp_steps=0)
  config.train.update(num_steps=600, learning_rate=3e-3, warmup_steps=50)
  config.checkpoint.update(every_steps=600, keep=1)
  config.log.update(every_steps=50, num_samples=2)
  return config
