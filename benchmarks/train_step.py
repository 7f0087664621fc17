"""Train-step benchmark: time, cost-analysis FLOPs, achieved FLOP/s vs a same-run matmul ceiling.

One row per (config, compute dtype): the full jitted train step (forward, backward,
AdamW, EMA, state donated) on one device with a synthetic batch. Time is the median of
`--repeats` steps, each interleaved with a float32 2048^3 matmul (the ceiling), after
one warm-up step. See benchmarks/common.py for the tiny / base configs.

  python -m benchmarks.train_step \
      [--rows tiny:float32,base:float32,base:bfloat16] [--repeats 5] \
      [--attention_impl xla|cudnn|pallas_tpu]
"""
import argparse
from typing import Optional

import jax
import ml_collections

from benchmarks import common


def measure(config: ml_collections.ConfigDict, repeats: int,
            ceiling: Optional[common.Ceiling] = None,
            compiler_options: common.CompilerOptions = None) -> dict[str, float]:
  """Compiles (with `compiler_options`) and times one train step of `config`.

  Returns `common.measure_against_ceiling`'s fields plus 'params' (parameter count),
  'tokens' (video tokens per step, B * T * N) and '<kind>_bytes' for the memory-analysis
  kinds of `common.memory_bytes` (argument, output, temp, alias, peak).
  """
  bench = common.TrainStepBench(config, compiler_options)
  result = common.measure_against_ceiling(bench.step, bench.flops, repeats, ceiling)
  result["params"] = float(sum(x.size for x in jax.tree.leaves(bench.state.params)))
  n = (config.data.resolution // config.model.patch_size) ** 2
  result["tokens"] = float(config.data.batch_size * config.data.num_frames * n)
  result.update({f"{k}_bytes": float(v) for k, v in bench.memory.items()})
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="tiny:float32,base:float32,base:bfloat16",
                      help="comma-separated config:dtype pairs")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--attention_impl", default=None,
                      help="config.model.attention_impl (default: None, JAX chooses)")
  args = parser.parse_args()
  ceiling = common.matmul_ceiling_fn()
  rows = []
  for spec in args.rows.split(","):
    name, dtype = spec.split(":")
    config = common.benchmark_config(name, dtype=dtype, attention_impl=args.attention_impl)
    r = measure(config, args.repeats, ceiling)
    rows.append([name, dtype, f"{r['params'] / 1e6:.2f}M", int(r["tokens"]),
                 *common.throughput_cells(r)])
  print(f"train step, attention_impl={args.attention_impl}, median of {args.repeats} "
        f"({common.environment_line()})")
  print(common.format_table(
      ["config", "dtype", "params", "tokens/step", *common.THROUGHPUT_HEADERS], rows))


if __name__ == "__main__":
  main()
