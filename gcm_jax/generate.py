"""Generate a talking-face video from a text script and a voice recording.

CLI (installed as `gcm-generate`):
  gcm-generate --workdir=/tmp/gcm_tiny --text="a green face on a purple background, moving
    left, says: hello there" --audio=voice.wav --output=out.mp4

Python API:
  model = load_trained(workdir)
  video, wav = generate(model, text, wav, sample_rate, key)   # [N, H, W, 3] in [-1, 1]

Audio of any length, sample rate and channel count is accepted as a PCM or float WAV
(`gcm_jax.wav_io`, plain or WAVE_FORMAT_EXTENSIBLE as ffmpeg writes it): it is downmixed to
mono and resampled to 16 kHz; the video covers it at 25 fps, generated in windows of the
training length that overlap by `motion_frames` (docs/diffusion.md, long-video extension).
"""
import dataclasses
import json
import os
import sys
from typing import Any, Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from gcm_jax import sampling
from gcm_jax import video_io
from gcm_jax import wav_io
from gcm_jax.data import audio as audio_lib
from gcm_jax.diffusion import extension
from gcm_jax.diffusion import samplers
from gcm_jax.models import stdit
from gcm_jax.models import tokenizer
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import checkpoint as checkpoint_lib
from gcm_jax.train import trainer

@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model with its config and (EMA) parameters, ready to sample."""
  config: ml_collections.ConfigDict
  model: stdit.STDiT
  params: Any


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Loads `<workdir>/config.json` and the EMA params of the newest (or given) checkpoint."""
  config_path = os.path.join(workdir, trainer.CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: is {workdir} a run_train.py workdir?")
  with open(config_path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.mesh.shape = dict(data=1, fsdp=1, tensor=1)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  abstract_state, shardings = trainer.state_shardings(config, mesh)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             config.checkpoint)
  state, _ = checkpointer.restore(
      checkpoint_lib.abstract_with_shardings(abstract_state, shardings), step)
  checkpointer.close()
  return TrainedModel(config, trainer.make_model(config), state.ema_params)


def prepare_audio(samples: np.ndarray, sample_rate: int, min_frames: int
                  ) -> tuple[np.ndarray, int]:
  """Mono 16 kHz audio zero-padded to whole video frames, at least `min_frames` of them.

  `samples` is `[S]` (mono) or `[S, channels]`. Returns (wav `[F * 640]`, N) where
  N = ceil(duration * 25) frames cover the audio and F = max(N, min_frames).
  """
  samples = np.asarray(samples, np.float32)
  if samples.ndim == 2:
    samples = samples.mean(axis=1)
  if samples.ndim != 1 or samples.size == 0:
    raise ValueError(f"audio must be [S] or [S, channels] with S > 0, got {samples.shape}")
  wav = audio_lib.resample(samples, sample_rate, audio_lib.SAMPLE_RATE)
  per_frame = audio_lib.SAMPLES_PER_VIDEO_FRAME
  num_frames = -(-wav.size // per_frame)
  padded_frames = max(min_frames, num_frames)
  return np.pad(wav, (0, padded_frames * per_frame - wav.size)), num_frames


def generate(trained: TrainedModel, text: str, samples: np.ndarray, sample_rate: int,
             key: jax.Array, motion_frames: Optional[int] = None, progress: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
  """Generates a video for `text` and the voice `samples` (`[S]` or `[S, channels]`).

  Returns:
    video float32 `[N, H, W, 3]` in [-1, 1] at 25 fps, N = ceil(duration * 25), and the
    16 kHz mono audio it is aligned with (`[N * 640]`, zero-padded).
  """
  config = trained.config
  window = config.data.num_frames
  motion = config.diffusion.max_motion_frames if motion_frames is None else motion_frames
  tokens = tokenizer.encode(text, config.model.text_max_len)
  wav, num_frames = prepare_audio(samples, sample_rate, min_frames=window)
  total = wav.size // audio_lib.SAMPLES_PER_VIDEO_FRAME
  mel = audio_lib.frame_windows(audio_lib.melspectrogram(wav), total, config.data.mel_window,
                                config.data.mel_alignment)
  cond = {"text_tokens": jnp.asarray(tokens)[None],
          "text_mask": jnp.asarray(tokenizer.padding_mask(tokens))[None],
          "mel": jnp.asarray(mel)[None],
          "drop_text": jnp.zeros((1,), bool), "drop_audio": jnp.zeros((1,), bool)}
  cfg = sampling.sampler_config(config)
  num_windows = len(extension.window_starts(total, window, motion))
  bar = tqdm.tqdm(total=num_windows * samplers.nfe(cfg), desc="denoising", unit="step",
                  disable=not progress)
  denoise = sampling.guided_denoiser(trained.model, trained.params, config)

  def counted(x, t, c):
    jax.debug.callback(lambda: bar.update(1), ordered=True)
    return denoise(x, t, c)

  r = config.data.resolution
  run = jax.jit(lambda k, c: extension.generate_long_video(
      counted, k, c, cfg, (1, total, r, r, config.model.in_channels), window, motion))
  video = np.asarray(jnp.clip(run(key, cond), -1.0, 1.0))[0]
  bar.close()
  return video[:num_frames], wav[:num_frames * audio_lib.SAMPLES_PER_VIDEO_FRAME]


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  trained = load_trained(f.workdir)
  if f.num_steps is not None:
    trained.config.sampling.num_steps = f.num_steps
  samples, rate = wav_io.read_wav(f.audio)
  video, wav = generate(trained, f.text, samples, rate, jax.random.PRNGKey(f.seed))
  path = video_io.write_mp4(f.output, video, wav)
  print(f"wrote {path}: {video.shape[0]} frames ({video.shape[0] / 25:.2f} s) at "
        f"{video.shape[1]}x{video.shape[2]}")


def main() -> None:
  """Console entry point `gcm-generate` (flags are defined here, not on import)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir with a checkpoint.")
  flags.DEFINE_string("text", None, "Caption + script, e.g. 'a green face ... says: hi'.")
  flags.DEFINE_string("audio", None, "Voice recording: WAV, PCM or float, any rate/channels.")
  flags.DEFINE_string("output", "generated.mp4", "Output mp4 (video + audio).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("num_steps", None, "Sampler steps (default: the config's).")
  flags.mark_flags_as_required(["workdir", "text", "audio"])
  app.run(_main, argv=sys.argv)


if __name__ == "__main__":
  main()
