"""Latent vs pixel train step at the same output resolution, and the cost of the lip-sync decode.

One row per `kind:resolution:patch[:sync]`: the trainer's full jitted train step (forward,
backward, AdamW, EMA, state donated; `common.TrainStepBench`) of the tiny benchmark model
(width 64, depth 2; see benchmarks/common.py) on a synthetic batch of `--batch` clips x
`--frames` frames whose output video is `resolution` x `resolution` pixels:
  kind pixel     the model denoises the pixels `[B, T, R, R, 3]` (`patch` 4 in the defaults)
  kind tiny, sd-vae  a latent run (`config.latent.source = "random"`, that
                 `gcm_jax.models.autoencoder.CONFIGS` architecture at seeded random weights):
                 the model denoises latents `[B, T, R/8, R/8, 4]` (`patch` 1 or 2)
  :sync          adds the lip-sync loss (weight 0.5) of a random project SyncNet (embed 16,
                 widths (8, 16), like tests/test_train_step.py) on the model's x0 estimate;
                 a latent run first decodes that estimate to pixels with the autoencoder
                 under `jax.checkpoint` (`step.decode_latents`). Without :sync a latent step
                 never touches the autoencoder (its latents come cached in the batch).
Time is the median of `--repeats` steps, each interleaved with the float32 2048^3 matmul
ceiling, after one warm-up step; FLOPs and temp / peak bytes come from XLA's cost and memory
analysis of the compiled step. A :sync row also reports its extra time and temp memory over
the row without :sync of the same kind of run, resolution and patch (if that row ran):
latent minus pixel extra is the cost of decoding x0 inside the step.

  python -m benchmarks.latent_step [--rows pixel:64:4,tiny:64:2,tiny:64:2:sync,...] \
      [--repeats 3] [--batch 2] [--frames 6]
"""
import argparse
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax import latents
from gcm_jax.models import syncnet as syncnet_lib


from benchmarks import common

DEFAULT_ROWS = ("pixel:64:4,tiny:64:1,tiny:64:2,pixel:128:4,tiny:128:1,tiny:128:2,"
                "pixel:64:4:sync,tiny:64:2:sync,sd-vae:64:2:sync,"
                "pixel:128:4:sync,tiny:128:2:sync")
LIPSYNC_WEIGHT = 0.5


def parse_row(spec: str) -> tuple[str, int, int, bool]:
  """'kind:resolution:patch[:sync]' -> (kind, resolution, patch, lipsync).

  Raises:
    ValueError: a malformed row.
  """
  parts = spec.split(":")
  if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "sync"):
    raise ValueError(f"row must be kind:resolution:patch[:sync], got {spec!r}")
  return parts[0], int(parts[1]), int(parts[2]), len(parts) == 4


def row_config(kind: str, resolution: int, patch: int, lipsync: bool, name: str = "tiny",
               batch_size: int = 2, num_frames: int = 6, **model_overrides: Any
               ) -> ml_collections.ConfigDict:
  """The `common.benchmark_config(name)` model on `resolution`^2 output video: pixels
  (`kind` 'pixel') or the latents of the random `kind` autoencoder, with `patch`, and the
  lip-sync loss on (weight LIPSYNC_WEIGHT) if `lipsync`.

  Raises:
    ValueError: the lip-sync loss with fewer than `syncnet_lib.SYNC_FRAMES` frames.
  """
  if lipsync and num_frames < syncnet_lib.SYNC_FRAMES:
    raise ValueError(f"the lip-sync loss needs >= {syncnet_lib.SYNC_FRAMES} frames, "
                     f"got {num_frames}")
  config = common.benchmark_config(name, patch_size=patch, **model_overrides)
  config.data.update(resolution=resolution, num_frames=num_frames, batch_size=batch_size)
  if kind != "pixel":
    config.latent.update(source="random", config=kind, seed=0)
    config.model.in_channels = latents.load(config).config.latent_channels
  if lipsync:
    config.lipsync.update(weight=LIPSYNC_WEIGHT)
  return config


def random_syncnet(resolution: int) -> tuple[syncnet_lib.SyncNet, Any]:
  """A small project SyncNet for `resolution`^2 frames at seeded random weights.

  Its init compiles with `common.FAST_COMPILE` (XLA's default options take ~6 s on CPU).
  """
  model = syncnet_lib.SyncNet(image_size=(resolution, resolution), embed_dim=16,
                              visual_widths=(8, 16), audio_widths=(8, 16))
  inputs = (jax.random.PRNGKey(0),
            jnp.zeros((1, syncnet_lib.SYNC_FRAMES, resolution - resolution // 2, resolution, 3)),
            jnp.zeros((1, syncnet_lib.MEL_FRAMES, syncnet_lib.NUM_MELS)))
  return model, jax.jit(model.init).lower(*inputs).compile(common.FAST_COMPILE)(*inputs)


def measure(config: ml_collections.ConfigDict, repeats: int,
            ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None,
            state: Optional[Any] = None) -> dict[str, float]:
  """Compiles (with `compiler_options`) and times one train step of a `row_config`
  (`state`: an initial TrainState of its parameter shapes, copied; default a fresh one).

  Returns `common.measure_against_ceiling`'s fields plus 'grid' (the side of what the model
  denoises: R pixels or R/8 latents), 'tokens' (video tokens per step, B * T * (grid /
  patch)^2), 'compile_seconds' and '<kind>_bytes' for the memory-analysis kinds of
  `common.memory_bytes` (argument, output, temp, alias, peak).
  """
  frozen, lipsync_net, decoder = {}, None, None
  if config.lipsync.weight > 0:
    lipsync_net, frozen["lipsync"] = random_syncnet(config.data.resolution)
    autoencoder = latents.load(config)
    if autoencoder is not None:
      decoder, frozen["autoencoder"] = autoencoder.module, autoencoder.params
  bench = common.TrainStepBench(config, compiler_options, state, lipsync_net=lipsync_net,
                                autoencoder=decoder, frozen=frozen)
  result = common.measure_against_ceiling(bench.step, bench.flops, repeats, ceiling)
  grid = latents.diffusion_shape(config, 1, 1)[2]
  result["grid"] = float(grid)
  result["tokens"] = float(config.data.batch_size * config.data.num_frames
                           * (grid // config.model.patch_size) ** 2)
  result["compile_seconds"] = bench.compile_seconds
  result.update({f"{k}_bytes": float(v) for k, v in bench.memory.items()})
  return result


HEADERS = ["diffusion", "autoencoder", "output", "model input", "patch", "tokens/step",
           "lip-sync", *common.THROUGHPUT_HEADERS, "temp MiB", "peak MiB",
           "sync +ms", "sync +temp MiB"]


def table_row(kind: str, config: ml_collections.ConfigDict, result: dict,
              without_sync: Optional[dict] = None) -> list:
  """Cells for HEADERS; `without_sync` is the result of the same row without :sync."""
  r, c = config.data.resolution, config.model.in_channels
  grid = int(result["grid"])
  extra = ["-", "-"]
  if without_sync is not None:
    extra = [f"{(result['seconds'] - without_sync['seconds']) * 1e3:+.1f}",
             f"{common.mib(result['temp_bytes'] - without_sync['temp_bytes']):+.1f}"]
  return ["pixel" if kind == "pixel" else "latent", "-" if kind == "pixel" else kind,
          f"{r}x{r}", f"{grid}x{grid}x{c}", config.model.patch_size, int(result["tokens"]),
          "on" if config.lipsync.weight > 0 else "off", *common.throughput_cells(result),
          f"{common.mib(result['temp_bytes']):.1f}", f"{common.mib(result['peak_bytes']):.1f}",
          *extra]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default=DEFAULT_ROWS,
                      help="comma-separated kind:resolution:patch[:sync] rows")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--frames", type=int, default=6)
  args = parser.parse_args()
  ceiling = common.matmul_ceiling_fn()
  specs = [parse_row(spec) for spec in args.rows.split(",")]
  results, rows = {}, []
  for kind, resolution, patch, lipsync in specs:
    config = row_config(kind, resolution, patch, lipsync, batch_size=args.batch,
                        num_frames=args.frames)
    result = measure(config, args.repeats, ceiling)
    # Without the lip-sync loss the autoencoder is not in the step: any latent row matches.
    results[(kind == "pixel", resolution, patch, lipsync)] = result
    without = results.get((kind == "pixel", resolution, patch, False)) if lipsync else None
    rows.append(table_row(kind, config, result, without))
  m = common.benchmark_config("tiny").model
  print(f"pixel vs latent train step, model width {m.width} depth {m.depth}, batch "
        f"{args.batch} x {args.frames} frames, lip-sync: random project SyncNet (weight "
        f"{LIPSYNC_WEIGHT}), float32, median of {args.repeats} ({common.environment_line()})")
  print(common.format_table(HEADERS, rows))


if __name__ == "__main__":
  main()
