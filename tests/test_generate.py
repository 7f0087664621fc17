"""gcm-generate: audio resampling, long videos from a checkpoint, input checks, the CLI."""
import os
import re
import subprocess
import sys

import imageio_ffmpeg
import jax
import numpy as np
import pytest

from gcm_jax import generate
from gcm_jax import video_io
from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import directory
from gcm_jax.train import trainer


from tests import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  return train_utils.write_workdir(path, config, state)


def test_long_video_from_checkpoint_with_audio(workdir, tmp_path):
  trained = diffusion_model.load_trained(workdir)
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
  trained = diffusion_model.load_trained(workdir)
  with pytest.raises(ValueError, match=message):
    generate.generate(trained, text, np.zeros(1600), 16000, jax.random.PRNGKey(0),
                      progress=False)


def test_missing_workdir_config_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    diffusion_model.load_trained(str(tmp_path))


def test_read_config_needs_a_checkpoints_folder(tmp_path):
  with open(tmp_path / directory.CONFIG_FILE, "w", encoding="utf-8") as f:
    f.write(train_utils.micro_config().to_json())
  with pytest.raises(FileNotFoundError, match="has no checkpoints folder"):
    diffusion_model.read_config(str(tmp_path))
  (tmp_path / "checkpoints").mkdir()
  assert diffusion_model.read_config(str(tmp_path)).model.text_max_len == 96


@pytest.mark.parametrize("output, message", [
    ("out.txt", r"out\.txt: extension \.txt cannot hold H\.264 video \+ AAC audio; use one of "
                r"\.mp4, \.mov, \.mkv$"),
    ("out", "out: no extension for H.264 video"),
    ("voice.wav/new/out.mp4", "cannot create its folder, .*voice.wav is a file"),
    ("folder.mp4", "folder.mp4 is a folder"),
])
def test_bad_output_paths(tmp_path, output, message):
  (tmp_path / "voice.wav").write_bytes(b"RIFF")
  (tmp_path / "folder.mp4").mkdir()
  with pytest.raises(ValueError, match=message):
    generate.check_output_path(str(tmp_path / output))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_unwritable_output_folder():
  # /proc refuses new files even to root (for whom permission bits do not apply).
  with pytest.raises(ValueError, match="cannot write in /proc"):
    generate.check_output_path("/proc/gcm_out/video.mp4")


def test_good_output_paths_leave_nothing_behind(tmp_path):
  for name in ("new/sub/out.mp4", "out.MOV", "out.mkv"):
    generate.check_output_path(str(tmp_path / name))
  assert not os.listdir(tmp_path)  # The folder is created only when the video is written.


class _Loaded(Exception):
  """Raised by the stand-in for load_trained: the checks let the CLI reach the model."""


def _never_load(*args, **kwargs):
  raise _Loaded(args, kwargs)


@pytest.mark.parametrize("change, error, message", [
    (dict(output="out.txt"), ValueError, "extension .txt cannot hold"),
    (dict(output="voice.wav/out.mp4"), ValueError, "voice.wav is a file"),
    (dict(workdir="nowhere"), FileNotFoundError, "config.json not found"),
    (dict(workdir="empty"), FileNotFoundError, "has no checkpoints folder"),
    (dict(text="  "), ValueError, "text is empty"),
    (dict(text="x" * 97), ValueError, "97 UTF-8 bytes but max_len is 96"),
    (dict(audio="cut.wav"), ValueError, "cut.wav is truncated"),
    (dict(audio="missing.wav"), FileNotFoundError, "missing.wav"),
    (dict(num_steps=0), ValueError, "--num_steps must be at least 1"),
    (dict(control_path="maps.npy"), ValueError,
     "maps.npy: control maps were given but the run is not a ControlNet run"),
    (dict(workdir="control"), ValueError,
     r"^--control: the run is a ControlNet run: give control maps \[N, 32, 32, 9\] with "
     r"--control=FILE.npy"),
    (dict(workdir="control", control_path="maps_16px.npy"), ValueError,
     r"control maps must be a float array \[N, 32, 32, 9\] \(resolution 32, 9 channels\), "
     r"got float32 \(3, 16, 16, 9\)"),
    (dict(workdir="control", control_path="maps_4ch.npy"), ValueError, "9 channels"),
    (dict(workdir="control", control_path="maps_int.npy"), ValueError, "got int64"),
    (dict(workdir="control", control_path="maps_short.npy"), ValueError,
     "control maps cover 2 frames but the audio needs 3 video frames"),
    (dict(workdir="control", control_path="voice.wav"), ValueError, "voice.wav: not a .npy"),
    (dict(workdir="control", control_path="missing.npy"), FileNotFoundError, "missing.npy"),
    (dict(workdir="control", control_path="maps.npy"), _Loaded, None),  # Good inputs.
])
def test_inputs_are_checked_before_the_model_is_loaded(tmp_path, monkeypatch, change, error,
                                                       message):
  monkeypatch.setattr(diffusion_model, "load_trained", _never_load)
  control = train_utils.micro_config()
  control.control.update(enabled=True, base_workdir="/not/read/by/gcm-generate")
  (tmp_path / "empty").mkdir()
  for workdir, config in (("run", train_utils.micro_config()), ("empty", None),
                          ("control", control)):
    if config is not None:
      (tmp_path / workdir / "checkpoints").mkdir(parents=True)
    with open(tmp_path / workdir / directory.CONFIG_FILE, "w", encoding="utf-8") as f:
      f.write((config or train_utils.micro_config()).to_json())  # text_max_len 96
  video_io.write_wav(str(tmp_path / "voice.wav"), np.zeros(1600))  # 0.1 s: 3 video frames
  (tmp_path / "cut.wav").write_bytes((tmp_path / "voice.wav").read_bytes()[:-100])
  for name, shape, dtype in (("maps", (3, 32, 32, 9), np.float32),
                             ("maps_16px", (3, 16, 16, 9), np.float32),
                             ("maps_4ch", (3, 32, 32, 4), np.float32),
                             ("maps_int", (3, 32, 32, 9), np.int64),
                             ("maps_short", (2, 32, 32, 9), np.float32)):
    np.save(tmp_path / f"{name}.npy", np.zeros(shape, dtype))
  inputs = dict(workdir="run", text="hi", audio="voice.wav", output="out.mp4")
  with pytest.raises(_Loaded):  # The control: good inputs reach the model.
    generate.generate_file(**{k: str(tmp_path / v) if k != "text" else v
                              for k, v in inputs.items()})
  inputs.update(change)
  inputs = {k: str(tmp_path / v) if k in ("workdir", "audio", "output", "control_path") else v
            for k, v in inputs.items()}
  with pytest.raises(error, match=message):
    generate.generate_file(**inputs)


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "gcm_jax.generate", *args], cwd=REPO,
                        capture_output=True, text=True, check=False)


def test_cli_input_errors_are_one_line_and_the_output_is_checked_first(tmp_path):
  # Neither the workdir nor the audio exists: the output path is checked first.
  result = _cli(f"--workdir={tmp_path}", "--text=hi", "--audio=missing.wav",
                f"--output={tmp_path}/out.txt")
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      f"gcm-generate: --output {tmp_path}/out.txt: extension .txt cannot hold H.264 video + "
      f"AAC audio; use one of .mp4, .mov, .mkv"]
  verbose = _cli(f"--workdir={tmp_path}", "--text=hi", "--audio=missing.wav",
                 f"--output={tmp_path}/out.txt", "--verbose")
  assert verbose.returncode == 1
  assert "Traceback" in verbose.stderr and "ValueError: --output" in verbose.stderr
  unquoted = _cli(f"--workdir={tmp_path}", "--text=hi", "there", "--audio=missing.wav")
  assert unquoted.returncode == 1
  assert unquoted.stderr.splitlines() == [
      "gcm-generate: unexpected arguments ['there']; quote the --text value"]


def test_cli_passes_the_control_maps(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  with open(tmp_path / directory.CONFIG_FILE, "w", encoding="utf-8") as f:
    f.write(train_utils.micro_config().to_json())
  video_io.write_wav(str(tmp_path / "voice.wav"), np.zeros(1600))
  np.save(tmp_path / "maps.npy", np.zeros((3, 32, 32, 9), np.float32))
  result = _cli(f"--workdir={tmp_path}", "--text=hi", f"--audio={tmp_path}/voice.wav",
                f"--output={tmp_path}/out.mp4", f"--control={tmp_path}/maps.npy")
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      f"gcm-generate: --control {tmp_path}/maps.npy: control maps were given but the run is "
      f"not a ControlNet run (config.control.enabled is False); leave out --control"]


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_writes_the_video_and_logs_info_only_if_verbose(workdir, tmp_path, verbose):
  voice = str(tmp_path / "voice.wav")
  video_io.write_wav(voice, 0.3 * np.sin(np.arange(3200) / 5.0))  # 0.2 s: 5 frames
  output = str(tmp_path / "new" / "out.mkv")
  result = _cli(f"--workdir={workdir}", "--text=a red face, says: hi", f"--audio={voice}",
                f"--output={output}", *(["--verbose"] if verbose else []))
  assert result.returncode == 0, result.stderr
  assert result.stdout == f"wrote {output}: 5 frames (0.20 s) at 32x32\n"
  info = [line for line in result.stderr.splitlines() if re.match(r"I\d{4} ", line)]
  if verbose:
    assert any("checkpoint" in line for line in info)  # Orbax's restore log, absl format.
  else:
    assert not info and "INFO" not in result.stderr
  probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", output], capture_output=True,
                         text=True, check=False).stderr
  assert "matroska" in probe and "Video: h264" in probe and "Audio: aac" in probe
