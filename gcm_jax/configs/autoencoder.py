"""The tiny KL autoencoder on the synthetic talking faces at 64x64 (CPU-sized).

  python -m gcm_jax.train.train_autoencoder --config=configs/autoencoder.py --workdir=/tmp/ae
  (override e.g. --config.train.num_steps=50 for a smoke run)

Measured PSNR / SSIM and time: docs/training.md "Training your own autoencoder".
"""
import ml_collections

from gcm_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_devices = 0        # data parallel over all devices (0) or this host's first n

  # AutoencoderConfig fields (gcm_jax/models/autoencoder.py); these are CONFIGS["tiny"]:
  # 8x spatial downsampling, 4 latent channels, 0.32M params.
  config.model = dict(
      block_out_channels=(16, 32, 32, 32),
      layers_per_block=1,
      latent_channels=4,
      norm_num_groups=8,
      mid_block_add_attention=True,
  )

  # The input pipeline's data section, as configs/tiny.py (gcm_jax.data.pipeline; any dataset).
  config.data = ml_collections.ConfigDict(tiny.get_config().data.to_dict())
  config.data.update(
      resolution=64,            # the latent recipe's resolution: 8x8x4 latents
      num_frames=8,
      num_train=2000,
      num_validation=64,
      num_test=64,
      batch_size=8,             # clips per global batch
  )

  config.loss = dict(
      reconstruction="l1",      # l1 | l2, per value
      ssim_weight=0.2,          # x (1 - SSIM), Gaussian-window SSIM (gcm_jax.image_quality)
      kl_weight=1e-6,           # x KL / (H W 3): SD's weight relative to a pixel-summed L1
      mouth_weight=1.0,         # reconstruction weight of the mouth region's pixels (1 = off)
  )

  # Optimizer and EMA as the diffusion trainer (gcm_jax.runs.state).
  config.train = dict(
      num_steps=400,
      frames_per_clip=2,        # random frames of each clip per step (frames are correlated)
      learning_rate=2e-3,
      warmup_steps=50,
      weight_decay=0.0,
      grad_clip_norm=1.0,
      ema_decay=0.99,           # the exported params are the EMA (0: the last params)
      ema_warmup=True,
      b1=0.9,
      b2=0.99,
  )

  config.eval = dict(
      split="validation",       # held-out PSNR / SSIM: validation | test (every clip, all frames)
  )

  config.latent_stats = dict(
      num_batches=32,           # training batches (x batch_size x num_frames frames) for the
                                # latent shift / scale
  )

  config.checkpoint = dict(     # Orbax, <workdir>/checkpoints; a rerun resumes
      every_steps=200,
      keep=2,
      async_save=True,
  )

  config.log = dict(
      every_steps=50,
  )
  return config
