"""Sampler benchmark: sample quality vs NFE on a Gaussian mixture, and sampler loop overhead.

Quality: 2-D ring of 8 Gaussians (radius 2, std 0.15) with its exact closed-form denoiser, so the
only error is the sampler's. Metrics against the *exact* mixture: unbiased MMD^2 (Gaussian
kernels, bandwidths 0.05/0.2/1; i.i.d. mixture samples score 0 +- noise) and sliced W2 (64
directions, each against the projected mixture's quantile function; biased upward for i.i.d.
samples by their tails). First row: fresh i.i.d. mixture samples (mean +- sd over 3 seeds), second:
the 1000-step DDPM ancestral reference.

Overhead (20-NFE rows): a 2-layer MLP eps-model (x [1024, 256], hidden 2048, ~2 GFLOP per call)
wrapped by `make_denoiser`. ovh/call = time(jitted sampler) / (NFE x time(one jitted denoiser
call)); ovh/scan = time(jitted sampler) / time(bare lax.scan chaining the same NFE denoiser calls),
which isolates the sampler's own work from the cost of chaining calls. Times are minima over
interleaved repeats (robust to other processes on the machine).

  python benchmarks/samplers.py [--schedule <schedules.BY_NAME name>] [--num_samples N]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.diffusion import parameterization, samplers, schedules, toy

# (sampler, spacing, extra config) rows; NFE targets below.
ROWS = [("ddpm", "time", {}), ("ddim", "time", {}), ("dpmpp_2m", "time", {}),
        ("dpmpp_2m", "logsnr", {}), ("dpmpp_3m", "logsnr", {}), ("euler", "karras", {}),
        ("heun", "karras", {}), ("heun", "karras", {"s_churn": 10.0})]
NFES = (10, 20, 50)


def wall_time(fn, *args):
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def best_time(fn, *args, repeats=3):
  """Minimum wall time of fn(*args) over repeats, after one compile/warm-up call."""
  jax.block_until_ready(fn(*args))
  return min(wall_time(fn, *args) for _ in range(repeats))


def mlp_denoiser(schedule, dim=256, hidden=2048):
  k1, k2 = jax.random.split(jax.random.key(0))
  w1 = jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)
  w2 = jax.random.normal(k2, (hidden, dim)) / np.sqrt(hidden)

  def model_fn(x, t, cond):
    return jnp.tanh(x @ w1 + t[:, None]) @ w2

  return parameterization.make_denoiser(model_fn, schedule, "eps")


def steps_for(name, target_nfe):
  return (target_nfe + 1) // 2 if name == "heun" else target_nfe


def row(label, spacing, steps, nfe, mmd2, w2, ref_w2, wall_ms, ovh_call, ovh_scan):
  cells = [f"{label:<18}", f"{spacing:<8}", f"{steps:>6}", f"{nfe:>6}", f"{mmd2:>15}",
           f"{w2:>11}", f"{ref_w2:>9}", f"{wall_ms:>9}", f"{ovh_call:>10}", f"{ovh_scan:>10}"]
  return "".join(cells)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--schedule", default="edm", choices=sorted(schedules.BY_NAME))
  parser.add_argument("--num_samples", type=int, default=200_000)
  parser.add_argument("--mode_std", type=float, default=0.15)
  parser.add_argument("--overhead_repeats", type=int, default=7, help="0 skips the overhead")
  args = parser.parse_args()
  schedule, mixture = schedules.from_name(args.schedule), toy.ring_mixture(std=args.mode_std)
  exact = toy.exact_denoiser(mixture, schedule)
  mlp = mlp_denoiser(schedule)
  x_mlp = jax.random.normal(jax.random.key(3), (1024, 256))
  one_call = jax.jit(lambda x: mlp(x, 0.5, None))
  t_model = best_time(one_call, x_mlp, repeats=10)

  def metrics(x0):
    return 1e6 * toy.mmd(mixture, x0), toy.sliced_w2(mixture, x0)

  def quality(cfg):
    x_T = samplers.initial_noise(jax.random.key(1), jax.ShapeDtypeStruct(
        (args.num_samples, 2), jnp.float32), cfg)
    run = jax.jit(lambda k, x: samplers.sample(exact, k, x, None, cfg))
    x0 = np.asarray(run(jax.random.key(2), x_T))  # Compiles.
    return metrics(x0) + (1e3 * wall_time(run, jax.random.key(2), x_T),)

  def overhead(cfg):
    """(sampler / (NFE x one call), sampler / bare lax.scan of NFE chained denoiser calls)."""
    run = jax.jit(lambda k, x: samplers.sample(mlp, k, x, None, cfg))
    ts = jnp.linspace(1.0, 0.0, samplers.nfe(cfg))
    bare = jax.jit(lambda x: jax.lax.scan(lambda c, t: (mlp(c, t, None), None), x, ts)[0])
    jax.block_until_ready((run(jax.random.key(4), x_mlp), bare(x_mlp)))
    t_run = t_one = t_bare = np.inf
    for _ in range(args.overhead_repeats):
      t_one = min(t_one, min(wall_time(one_call, x_mlp) for _ in range(3)))
      t_run = min(t_run, wall_time(run, jax.random.key(4), x_mlp))
      t_bare = min(t_bare, wall_time(bare, x_mlp))
    return f"{t_run / (samplers.nfe(cfg) * t_one):.3f}", f"{t_run / t_bare:.3f}"

  iid = np.array([metrics(mixture.sample(np.random.default_rng(seed), args.num_samples))
                  for seed in range(3)])
  ref_mmd, ref_w2, ref_wall = quality(samplers.SamplerConfig("ddpm", 1000, schedule))
  print(f"schedule={args.schedule} {schedule}\nmixture=ring(8 modes, radius 2, std "
        f"{args.mode_std}), samples={args.num_samples}, device={jax.devices()[0].platform}, "
        f"one MLP call={1e3 * t_model:.2f} ms")
  header = row("sampler", "spacing", "steps", "NFE", "MMD^2 x1e6", "sliced W2", "/ ref", "wall ms",
               "ovh/call", "ovh/scan")
  print(header + "\n" + "-" * len(header))
  mean, sd = iid.mean(0), iid.std(0)
  print(row("iid true samples", "-", "-", "-", f"{mean[0]:.2f}+-{sd[0]:.2f}",
            f"{mean[1]:.4f}", f"{mean[1] / ref_w2:.3f}", "-", "-", "-"))
  print(row("ddpm (reference)", "time", 1000, 1000, f"{ref_mmd:.2f}", f"{ref_w2:.4f}", "1.000",
            f"{ref_wall:.1f}", "-", "-"))
  for name, spacing, extra in ROWS:
    for target in NFES:
      cfg = samplers.SamplerConfig(name, steps_for(name, target), schedule, spacing=spacing,
                                   **extra)
      mmd2, w2, wall = quality(cfg)
      ovh = overhead(cfg) if target == 20 and args.overhead_repeats else ("-", "-")
      print(row(name + ("+churn" if extra else ""), spacing, cfg.num_steps, samplers.nfe(cfg),
                f"{mmd2:.2f}", f"{w2:.4f}", f"{w2 / ref_w2:.3f}", f"{wall:.1f}", *ovh), flush=True)


if __name__ == "__main__":
  main()
