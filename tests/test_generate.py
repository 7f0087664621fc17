"""gcm-generate: audio resampling, long videos from a checkpoint, input errors."""
import os
import subprocess

import imageio_ffmpeg
import jax
import numpy as np
import pytest

from gcm_jax import generate
from gcm_jax import video_io
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import checkpoint as checkpoint_lib
from gcm_jax.train import trainer
from tests import train_utils


def test_prepare_audio_downmixes_resamples_and_pads():
  rate = 44100
  seconds = 0.5
  tone = np.sin(2 * np.pi * 300 * np.arange(int(rate * seconds)) / rate)
  wav, frames = generate.prepare_audio(np.stack([tone, tone], 1), rate, min_frames=4)
  assert frames == 13  # ceil(0.5 s * 25 fps) = 13 (12.5 frames)
  assert wav.shape == (13 * 640,)
  spectrum = np.abs(np.fft.rfft(wav[:8000]))
  assert abs(np.argmax(spectrum) * 16000 / 8000 - 300) <= 2  # the tone survives at 16 kHz
  np.testing.assert_array_equal(wav[8000:], 0.0)
  wav, frames = generate.prepare_audio(tone[:100], rate, min_frames=4)
  assert frames == 1 and wav.shape == (4 * 640,)  # padded to one model window
  with pytest.raises(ValueError, match="S > 0"):
    generate.prepare_audio(np.zeros((0,)), rate, min_frames=4)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A run_train.py-style workdir holding a freshly initialized micro model."""
  path = str(tmp_path_factory.mktemp("run"))
  config = train_utils.micro_config()
  config.sampling.num_steps = 2
  config.mesh.shape = dict(data=8, fsdp=1, tensor=1)
  state, _ = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(path, "checkpoints"),
                                             config.checkpoint)
  assert checkpointer.maybe_save(3, state, {"iterator": "{}"}, force=True)
  checkpointer.close()
  with open(os.path.join(path, trainer.CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(config.to_json())
  return path


def test_long_video_from_checkpoint_with_audio(workdir, tmp_path):
  trained = generate.load_trained(workdir)
  assert trained.config.data.num_frames == 4
  rate = 8000
  voice = 0.3 * np.sin(2 * np.pi * 200 * np.arange(int(0.45 * rate)) / rate)  # 0.45 s
  video, wav = generate.generate(trained, "a red face on a blue background, staying still, "
                                 "says: hi", voice, rate, jax.random.PRNGKey(0), progress=False)
  assert video.shape == (12, 32, 32, 3)  # ceil(0.45 * 25) frames > the 4-frame window
  assert np.isfinite(video).all() and np.abs(video).max() <= 1.0
  assert wav.shape == (12 * 640,)
  path = video_io.write_mp4(str(tmp_path / "out.mp4"), video, wav)
  probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", path], capture_output=True,
                         text=True).stderr
  assert "Video: h264" in probe and "Audio: aac" in probe and "16000 Hz" in probe


@pytest.mark.parametrize("text, message", [("   ", "empty"), ("x" * 200, "max_len")])
def test_bad_text_errors(workdir, text, message):
  trained = generate.load_trained(workdir)
  with pytest.raises(ValueError, match=message):
    generate.generate(trained, text, np.zeros(1600), 16000, jax.random.PRNGKey(0),
                      progress=False)


def test_missing_workdir_config_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    generate.load_trained(str(tmp_path))
