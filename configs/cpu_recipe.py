"""CPU recipe: trains in under an hour on 2 cores and measurably learns (README table).

32x32 faces, 8-frame clips, a 3-block width-64 STDiT. Evaluate with
  python -m gcm_jax.evaluate --workdir=<workdir> --syncnet_workdir=<syncnet workdir>
"""
import ml_collections

from configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.model.update(width=64, depth=3, num_heads=4, patch_size=4)
  config.data.update(num_train=2000, num_validation=64, num_test=64, batch_size=16)
  config.train.update(num_steps=2000, learning_rate=1e-3, warmup_steps=100, ema_decay=0.995)
  config.checkpoint.update(every_steps=500, keep=2)
  config.log.update(every_steps=50, num_samples=2)
  return config
