"""The `video_folder` dataset: face clips with their audio and captions from real videos.

`python -m gcm_jax.data.video_folder --input=DIR --output_dir=DATA` builds it
(`builder.build`); `config.data.name = "video_folder"` trains on it. See docs/data.md,
"Your own videos".
"""
