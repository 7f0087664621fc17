"""Trains the text + audio conditioned video diffusion model (`gcm-train diffusion`).

  python run_train.py --config=configs/tiny.py --workdir=/tmp/gcm_tiny
  python run_train.py --config=configs/tiny.py --workdir=... --config.train.num_steps=50

Builds the dataset into <workdir>/data on first use (unless config.data.data_dir is
set), trains, checkpoints to <workdir>/checkpoints, logs to <workdir>/logs and writes
sample videos (mp4 with the audio track) to <workdir>/samples. Rerunning with the
same workdir resumes from the latest checkpoint. The config is validated before
anything is built; config and resume problems end the run with a short message.
"""
from gcm_jax import launch

if __name__ == "__main__":
  launch.diffusion_main()
