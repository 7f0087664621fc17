"""One-GPU config for real talking-head clips: the `video_folder` dataset at 128x128, 16 frames.

Build the clips first (docs/data.md, "Your own videos"), into <workdir>/data or the folder
given by --config.data.data_dir:
  python -m gcm_jax.data.video_folder --input=VIDEOS --output_dir=/tmp/run/data \
      --resolution=128 --num_frames=16 --workers=8
  python run_train.py --config=configs/video_folder.py --workdir=/tmp/run
"""
import ml_collections

from gcm_jax.configs import talking_faces


def get_config() -> ml_collections.ConfigDict:
  config = talking_faces.get_config()
  config.model.update(patch_size=8)  # 16x16 patches per 128x128 frame, as at 64x64 / 4.
  config.data.update(name="video_folder", resolution=128, num_frames=16)
  return config
