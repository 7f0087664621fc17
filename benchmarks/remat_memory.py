"""Remat benchmark: peak memory, FLOPs and time of the train step for each remat policy.

For each `config.model.remat_policy` (none, full, dots, dots_saveable: `nn.remat` around
each DiT block with that checkpoint policy) compiles the base train step on one device
and reports the compiled memory analysis (temp = activations and scratch; peak =
argument + output + temp - aliased, per device), cost-analysis FLOPs (recomputation
shows up here) and the median step time interleaved with the same-run matmul ceiling.

  python -m benchmarks.remat_memory \
      [--config base] [--policies none,full,dots,dots_saveable] [--repeats 3]
"""
import argparse

from benchmarks import common
from benchmarks import train_step
from gcm_jax.models import stdit


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="base", choices=("tiny", "base"))
  parser.add_argument("--policies", default=",".join(stdit.REMAT_POLICIES))
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  ceiling = common.matmul_ceiling_fn()
  results = {p: train_step.measure(common.benchmark_config(args.config, remat_policy=p),
                                   args.repeats, ceiling)
             for p in args.policies.split(",")}
  first = next(iter(results.values()))
  rows = [[policy, f"{common.mib(r['temp_bytes']):.1f}", f"{common.mib(r['peak_bytes']):.1f}",
           f"{r['peak_bytes'] / first['peak_bytes']:.2f}", *common.throughput_cells(r)]
          for policy, r in results.items()]
  print(f"train step per remat policy, {args.config} config, median of {args.repeats} "
        f"({common.environment_line()})")
  print(common.format_table(
      ["remat", "temp MiB", "peak MiB", "peak vs first", *common.THROUGHPUT_HEADERS], rows))


if __name__ == "__main__":
  main()
