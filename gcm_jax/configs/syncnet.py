"""SyncNet + text-video contrastive model on the synthetic talking faces (CPU-sized); any
registered dataset with `--config.data.name` (a built one also needs `data_dir`).

  python -m gcm_jax.train.train_syncnet --workdir=/tmp/syncnet   # this config by default
  (override e.g. --config.train.num_steps=200 for a smoke run)
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="talking_faces",     # gcm_jax.data.datasets.DATASETS
      data_dir="",              # where a built dataset is (video_folder); unused by talking_faces
      resolution=32,            # talking_faces: 32 or 64 (renderer resolutions)
      num_frames=25,            # training clip length (1 s; a built dataset's clip length)
      eval_num_frames=40,       # held-out clip length (35 LSE windows)
      num_train_clips=1024,     # train split: 40 phrases x 7 voices x 3 rates, random cuts
      num_eval_clips=128,       # validation split: disjoint phrases and voices
      mel_alignment="center",   # per-frame mel windows as gcm_jax.data.audio ('center'|'start')
      text_max_len=160,         # caption bytes
  )

  config.model = dict(
      embed_dim=128,
      visual_widths=(16, 32, 64),
      audio_widths=(16, 32, 64, 64),
  )

  # Optimizer and EMA as the diffusion trainer (gcm_jax.runs.state): AdamW, linear warmup
  # then cosine decay to 1% of learning_rate, global-norm clipping, weight decay on matrices.
  config.train = dict(
      batch_size=64,            # in-sync + off-sync pair per row
      num_steps=1500,
      learning_rate=1e-3,
      warmup_steps=100,
      weight_decay=1e-4,
      grad_clip_norm=1.0,
      b1=0.9,
      b2=0.999,
      ema_decay=0.0,            # syncnet_params/ and report.json use the EMA (0: last params)
      ema_warmup=True,
      infonce_weight=0.5,       # 0: pure Wav2Lip BCE
      min_shift=3,              # off-sync audio shift range (frames), same clip
      max_shift=12,
      log_every=100,            # metrics.jsonl / TensorBoard rows (both runs)
  )

  config.checkpoint = dict(     # Orbax, <workdir>/checkpoints; a rerun resumes (both runs)
      every_steps=500,
      keep=2,
      async_save=True,
  )

  config.eval = dict(
      vshift=15,                # syncnet_python
      audio_shifts=(-3, 3),     # delay the audio by k frames: the offset must read -k
  )

  # Its own schedule; the other optimizer and EMA fields come from config.train.
  config.text_video = dict(
      num_steps=300,
      batch_size=64,
      learning_rate=1e-3,
      warmup_steps=50,
      embed_dim=64,
      text_width=64,
      text_layers=1,
      text_heads=4,
      video_widths=(32, 64),
  )
  return config
