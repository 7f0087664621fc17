"""Whisper feature cost: log-mel and encoder time per second of audio, FLOP/s, cache size.

Random weights at a named Whisper config (default tiny): the jitted log-mel of one 30 s
window, the jitted encoder on one 30 s window (the unit `whisper_features` runs per window;
`--layers` picks the returned hidden states), each timed as the median of `--repeats`
calls interleaved with the same-run float32 2048^3 matmul ceiling (benchmarks/common.py),
with cost-analysis FLOPs. "ms per s of audio" divides the per-window time by 30. The second
table is the float32 cache a dataset would hold: the 50 Hz features (what to cache; windows
are cheap gathers) and the per-video-frame windows at 25 fps (`frame_features`).

  python -m benchmarks.whisper_features [--size tiny] [--repeats 5] [--context 2]
"""
import argparse
from typing import Any, Optional

import jax
import numpy as np

from benchmarks import common
from gcm_jax.models.pretrained import whisper
from gcm_jax.models.pretrained import whisper_mel

FPS = 25
BYTES_PER_VALUE = 4  # float32


def measure(config: whisper.WhisperConfig, repeats: int, layers: str = "blocks",
            ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None) -> dict[str, dict[str, float]]:
  """Times the log-mel and the encoder on one 30 s window of random audio.

  Returns {"log-mel": ..., "encoder": ...}, each `common.measure_against_ceiling`'s fields
  plus 'ms_per_audio_second'.
  """
  audio = np.random.default_rng(0).normal(0, 0.1, whisper_mel.N_SAMPLES).astype(np.float32)
  audio = jax.device_put(audio, jax.devices()[0])
  mel_fn = whisper_mel.log_mel_spectrogram.lower(audio, n_mels=config.n_mels).compile(
      compiler_options)
  mel = mel_fn(audio)[None]
  module = whisper.WhisperEncoder(config)
  params = jax.jit(module.init)(jax.random.key(0), mel)["params"]
  encode_fn = whisper.encode.lower(module, params, mel, layers).compile(compiler_options)
  runs: dict[str, tuple[Any, Any]] = {"log-mel": (mel_fn, lambda: mel_fn(audio)),
                                      "encoder": (encode_fn, lambda: encode_fn(params, mel))}
  results = {}
  for name, (compiled, run) in runs.items():
    result = common.measure_against_ceiling(run, common.cost_flops(compiled), repeats, ceiling)
    result["ms_per_audio_second"] = result["seconds"] * 1e3 / whisper_mel.CHUNK_SECONDS
    results[name] = result
  return results


def cache_bytes_per_second(config: whisper.WhisperConfig, layers: str, context: int
                           ) -> dict[str, float]:
  """float32 bytes per second of audio: 50 Hz 'features' and 25 fps 'windows'."""
  per_feature = whisper.layers_per_frame(config, layers) * config.n_audio_state
  per_window = int(np.prod(whisper.window_shape(config, context, layers)))
  return {"features": whisper.FEATURES_PER_SECOND * per_feature * BYTES_PER_VALUE,
          "windows": FPS * per_window * BYTES_PER_VALUE,
          "window": per_window * BYTES_PER_VALUE}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", choices=sorted(whisper.CONFIGS))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--context", type=int, default=2)
  parser.add_argument("--layers", default="blocks", choices=sorted(whisper.LAYERS))
  args = parser.parse_args()
  config = whisper.CONFIGS[args.size]
  results = measure(config, args.repeats, args.layers)
  print(f"Whisper {args.size} (random weights), one 30 s window, layers={args.layers}, "
        f"median of {args.repeats} ({common.environment_line()})")
  print(common.format_table(
      ["stage", "ms per s of audio", "ms/window", "GFLOP/window", "achieved GFLOP/s",
       "matmul ceiling GFLOP/s", "ratio"],
      [[name, f"{r['ms_per_audio_second']:.2f}"] + common.throughput_cells(r)
       for name, r in results.items()]))
  print(f"\nfloat32 cache per second of audio (context k={args.context}, {FPS} fps)")
  rows = []
  for layers in whisper.LAYERS:
    b = cache_bytes_per_second(config, layers, args.context)
    rows.append([layers, whisper.layers_per_frame(config, layers),
                 whisper.window_shape(config, args.context, layers)[0],
                 f"{b['features'] / 1e3:.1f}", f"{b['window'] / 1e3:.1f}",
                 f"{b['windows'] / 1e3:.1f}"])
  print(common.format_table(
      ["layers", "vectors per feature frame", "W (window)", "50 Hz features kB/s",
       "one frame window kB", "25 fps windows kB/s"], rows))


if __name__ == "__main__":
  main()
