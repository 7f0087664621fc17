"""One-GPU config: 64x64, 16 frames, a ~40M-parameter model, bf16 compute."""
import ml_collections

from gcm_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.model.update(patch_size=4, width=384, depth=8, num_heads=6, text_layers=4,
                      audio_layers=2, dtype="bfloat16", remat_policy="dots",
                      attention_impl=None)
  config.data.update(resolution=64, num_frames=16, num_train=20_000, num_validation=500,
                     num_test=500, worker_count=8)
  config.data.batch_size = 32
  config.train.update(num_steps=200_000, learning_rate=2e-4,
                      warmup_steps=2_000, ema_decay=0.9999)
  config.checkpoint.update(every_steps=2_000, keep=3)
  config.log.update(every_steps=100, sample_every_steps=10_000, num_samples=4)
  return config
