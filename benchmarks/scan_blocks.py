"""Looped vs scanned DiT blocks (`config.model.scan_blocks`): compile time and step time vs depth.

Two rows per depth: the trainer's jitted train step (forward, backward, AdamW, EMA) on
one device with the blocks as a Python loop and under `nn.scan`, both with the same
remat policy. Compile time is the wall time of lowering + compiling the step (XLA's
default options); step time the median of `--repeats` steps, each interleaved with the
float32 2048^3 matmul ceiling (benchmarks/common.py). XLA's cost analysis counts a while
loop's body once, so the scanned step's own count covers one block: both rows' FLOP/s
use the looped step's count (the same computation), and the scanned step's own count is
printed alongside. The defaults are CPU-sized (width 64, 16x16 x 4 frames, batch 2);
on an accelerator, e.g. --width 1024 --num_heads 16 --resolution 128 --frames 16.

  python -m benchmarks.scan_blocks [--depths 4,12,24] [--width 64] [--num_heads 4] \\
      [--resolution 16] [--frames 4] [--batch_size 2] [--remat_policy full] [--repeats 3]
"""
import argparse
from typing import Optional

import jax
import ml_collections

from benchmarks import common


def benchmark_config(depth: int, scan_blocks: bool, width: int = 64, num_heads: int = 4,
                     resolution: int = 16, frames: int = 4, batch_size: int = 2,
                     remat_policy: str = "full") -> ml_collections.ConfigDict:
  """The 'tiny' benchmark config at the given depth, width and video shape."""
  config = common.benchmark_config("tiny", depth=depth, scan_blocks=scan_blocks, width=width,
                                   num_heads=num_heads, remat_policy=remat_policy)
  config.data.update(resolution=resolution, num_frames=frames, batch_size=batch_size)
  return config


def measure(config: ml_collections.ConfigDict, repeats: int,
            ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None,
            flops: Optional[float] = None) -> dict[str, float]:
  """Compiles (with `compiler_options`) and times one train step of `config`.

  `flops` is the step's FLOP count for the achieved rate (default: XLA's cost analysis of
  this executable; pass the looped step's count for a scanned one).
  Returns `common.measure_against_ceiling`'s fields plus 'compile_seconds' (lower +
  compile), 'xla_flops' (this executable's own cost-analysis count), 'params'
  (parameter count) and 'peak_bytes' (`common.memory_bytes`).
  """
  bench = common.TrainStepBench(config, compiler_options)
  result = common.measure_against_ceiling(bench.step, bench.flops if flops is None else flops,
                                          repeats, ceiling)
  result.update(compile_seconds=bench.compile_seconds, xla_flops=bench.flops,
                params=float(sum(x.size for x in jax.tree.leaves(bench.state.params))),
                peak_bytes=float(bench.memory["peak"]))
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--depths", default="4,12,24", help="comma-separated model depths")
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--num_heads", type=int, default=4)
  parser.add_argument("--resolution", type=int, default=16)
  parser.add_argument("--frames", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=2)
  parser.add_argument("--remat_policy", default="full")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  shape = dict(width=args.width, num_heads=args.num_heads, resolution=args.resolution,
               frames=args.frames, batch_size=args.batch_size, remat_policy=args.remat_policy)
  ceiling = common.matmul_ceiling_fn()
  rows = []
  for depth in (int(d) for d in args.depths.split(",")):
    loop = measure(benchmark_config(depth, False, **shape), args.repeats, ceiling)
    scan = measure(benchmark_config(depth, True, **shape), args.repeats, ceiling,
                   flops=loop["xla_flops"])
    for name, r in (("loop", loop), ("scan", scan)):
      rows.append([depth, name, f"{r['params'] / 1e6:.2f}M", f"{r['compile_seconds']:.2f}",
                   f"{r['compile_seconds'] / loop['compile_seconds']:.2f}x",
                   common.gflops(r["xla_flops"]), f"{common.mib(r['peak_bytes']):.1f}",
                   *common.throughput_cells(r)])
  print(f"train step, loop vs scan, width {args.width}, {args.num_heads} heads, "
        f"{args.resolution}x{args.resolution} x {args.frames} frames, batch {args.batch_size}, "
        f"remat {args.remat_policy}, median of {args.repeats} ({common.environment_line()})")
  print(common.format_table(
      ["depth", "blocks", "params", "compile s", "compile vs loop", "XLA GFLOP (own count)",
       "peak MiB", *common.THROUGHPUT_HEADERS], rows))


if __name__ == "__main__":
  main()
