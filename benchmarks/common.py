"""Shared helpers for the performance benchmarks (train step, attention, remat memory).

Every benchmark measures on one device (the first of `jax.devices()`), interleaves its
measurements with a large matmul jitted on the same device (the "matmul ceiling" of this
run; float32, bfloat16 in the GPU suite on a GPU), and reports medians, so a machine
shared with other processes biases both sides alike. FLOPs come from XLA's cost analysis
of the compiled executable, memory from its memory analysis (both are per device).

Benchmark model configs (the `configs/` files are left alone):
  tiny: configs/tiny.py as is (width 64, depth 2, patch 4, 32x32 x 8 frames, batch 8).
  base: width 384, depth 4, 6 heads (head dim 64), patch 4, 32x32 x 16 frames
    (N = 64 patches per frame, 1024 video tokens per clip), batch 2: dense-layer
    dominated, and a train step takes seconds on 2 CPU cores.
"""
import functools
import os
import statistics
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcm_jax import latents
from gcm_jax.configs import tiny
from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import trainer


# A zero-argument function running the ceiling matmul once, and its FLOPs.
Ceiling = tuple[Callable[[], Any], float]
# XLA options for `Lowered.compile`; the smoke tests pass FAST_COMPILE (compile speed),
# the benchmarks the defaults (None). Without XLA:CPU's fusion emitters a micro train
# step compiles about 2.5x faster on CPU.
CompilerOptions = Optional[dict[str, Any]]
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}

BASE_MODEL = dict(width=384, depth=4, num_heads=6, patch_size=4, text_max_len=64)
BASE_DATA = dict(resolution=32, num_frames=16, batch_size=2)


def benchmark_config(name: str, **model_overrides: Any) -> ml_collections.ConfigDict:
  """The 'tiny' or 'base' benchmark config, with optional `config.model` overrides.

  Raises:
    ValueError: unknown name or model field.
  """
  config = tiny.get_config()
  if name == "base":
    config.model.update(BASE_MODEL)
    config.data.update(BASE_DATA)
  elif name != "tiny":
    raise ValueError(f"benchmark config must be 'tiny' or 'base', got {name!r}")
  unknown = set(model_overrides) - set(config.model)
  if unknown:
    raise ValueError(f"unknown model fields {sorted(unknown)}")
  config.model.update(model_overrides)
  return config


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, jax.Array]:
  """A random global batch with the input pipeline's keys and shapes.

  Returns 'video' `[B, T, H, W, 3]` in [-1, 1] (a latent config, `config.latent`: 'latents'
  `[B, T, H/f, W/f, C]` standard normal instead, the step's target), 'mel'
  `[B, T, W_mel, 80]`, 'text_tokens' int32 `[B, L]` (the last quarter padding), 'text_mask'
  bool `[B, L]`, 'mask' bool `[B]`.
  """
  rng = np.random.default_rng(seed)
  b, t, r = config.data.batch_size, config.data.num_frames, config.data.resolution
  m = config.model
  tokens = rng.integers(1, 257, (b, m.text_max_len)).astype(np.int32)
  tokens[:, (3 * m.text_max_len) // 4:] = 0
  if latents.enabled(config):
    target = {"latents": rng.standard_normal(latents.diffusion_shape(config, b, t),
                                             np.float32)}
  else:
    target = {"video": rng.uniform(-1, 1, (b, t, r, r, m.in_channels)).astype(np.float32)}
  batch = {
      **target,
      "mel": rng.uniform(-4, 4, (b, t, m.mel_window, m.num_mels)).astype(np.float32),
      "text_tokens": tokens,
      "text_mask": tokens != 0,
      "mask": np.ones((b,), bool),
  }
  return {k: jax.device_put(v, jax.devices()[0]) for k, v in batch.items()}


def cost_flops(compiled: Any) -> float:
  """FLOPs of a compiled executable from XLA's cost analysis (a dict or a list of dicts)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def memory_bytes(compiled: Any) -> dict[str, int]:
  """Per-device bytes from `compiled.memory_analysis()`: argument, output, temp, alias, peak.

  peak = argument + output + temp - alias (donated inputs reused as outputs count once).
  """
  stats = compiled.memory_analysis()
  out = {"argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
         "temp": stats.temp_size_in_bytes, "alias": stats.alias_size_in_bytes}
  out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def matmul_ceiling_fn(size: int = 2048, dtype: str = "float32") -> Ceiling:
  """A jitted `[size, size] @ [size, size]` in `dtype` on the benchmark device.

  Returns (a zero-argument function running it once, its FLOPs = 2 size^3).
  """
  device = jax.devices()[0]
  a, b = (jax.device_put(jax.random.normal(jax.random.key(i), (size, size), jnp.dtype(dtype)),
                         device) for i in (0, 1))
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  return functools.partial(compiled, a, b), 2.0 * size ** 3


def _time_once(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def interleaved_medians(fns: Mapping[str, Callable[[], Any]], repeats: int,
                        warmup: int = 1) -> dict[str, float]:
  """Median wall seconds of each zero-argument function, run round-robin `repeats` times.

  Each function is called `warmup` times first (compilation, caches). Interleaving
  exposes every function to the same background load.
  """
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(_time_once(fn))
  return {name: statistics.median(ts) for name, ts in times.items()}


def measure_against_ceiling(fn: Callable[[], Any], flops: float, repeats: int,
                            ceiling: Optional[Ceiling] = None
                            ) -> dict[str, float]:
  """Times `fn` interleaved with the matmul ceiling.

  Returns seconds (median per call), flops, flop_per_s, ceiling_flop_per_s and
  ratio = achieved / ceiling.
  """
  matmul, matmul_flops = ceiling or matmul_ceiling_fn()
  medians = interleaved_medians({"fn": fn, "matmul": matmul}, repeats)
  achieved = flops / medians["fn"]
  ceiling_rate = matmul_flops / medians["matmul"]
  return {"seconds": medians["fn"], "flops": flops, "flop_per_s": achieved,
          "ceiling_flop_per_s": ceiling_rate, "ratio": achieved / ceiling_rate}


def single_device_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The config's ('data', 'fsdp', 'tensor') mesh over the first device only."""
  mesh_config = dict(config.mesh)
  mesh_config["shape"] = dict(data=1, fsdp=1, tensor=1)
  return mesh_lib.make_mesh(mesh_config, devices=jax.devices()[:1])


class TrainStepBench:
  """The trainer's jitted train step (`trainer.jit_train_step`, state donated) on one
  device, compiled once (with `compiler_options`) for a synthetic batch.

  `state`, if given, is the initial TrainState (of the same parameter shapes, e.g. shared
  by configs that differ only in remat or attention kernel); it is copied, since the step
  donates its state. Otherwise the trainer initializes one. `lipsync_net`, `autoencoder`
  and `frozen` are `trainer.jit_train_step`'s frozen networks and their variables
  (`{'lipsync': ..., 'autoencoder': ...}`; default none).

  Attributes:
    compiled: the compiled executable `(state, batch, frozen) -> (state, metrics)`.
    compile_seconds: wall seconds of lowering + compiling it.
    flops: cost-analysis FLOPs of one step.
    memory: `memory_bytes(compiled)`.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               compiler_options: CompilerOptions = None, state: Optional[Any] = None,
               lipsync_net: Optional[nn.Module] = None, autoencoder: Optional[nn.Module] = None,
               frozen: Optional[dict[str, Any]] = None):
    mesh = single_device_mesh(config)
    if state is None:
      self.state, shardings = trainer.init_state(config, mesh)
    else:
      shardings = diffusion_model.state_shardings(config, mesh)[1]
      self.state = jax.tree.map(lambda x, s: jax.device_put(jnp.copy(x), s), state, shardings)
    self.batch = synthetic_batch(config)
    self.frozen = jax.device_put(frozen or {}, mesh_lib.replicated(mesh))
    jitted = trainer.jit_train_step(config, mesh, shardings, lipsync_net, autoencoder)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.logical_axis_rules):
      start = time.perf_counter()
      self.compiled = jitted.lower(self.state, self.batch, self.frozen).compile(compiler_options)
      self.compile_seconds = time.perf_counter() - start
    self.flops = cost_flops(self.compiled)
    self.memory = memory_bytes(self.compiled)

  def step(self) -> dict[str, jax.Array]:
    """Runs one step (advancing the held state); returns the metrics."""
    self.state, metrics = self.compiled(self.state, self.batch, self.frozen)
    return metrics


def load_average() -> str:
  """The 1-minute load average and the CPU count, e.g. '5.2 on 2 CPUs'."""
  return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def environment_line() -> str:
  """One line naming the JAX version, the device and the machine load."""
  device = jax.devices()[0]
  return (f"jax {jax.__version__}, device {device.platform}:{device.device_kind}, "
          f"load {load_average()}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A markdown table; floats are printed with 3 significant digits."""
  def cell(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def gflops(flops: float) -> float:
  """FLOPs (or FLOP/s) in units of 1e9."""
  return flops / 1e9


THROUGHPUT_HEADERS = ["ms/step", "GFLOP/step", "achieved GFLOP/s", "matmul ceiling GFLOP/s",
                      "ratio"]


def throughput_cells(result: dict) -> list:
  """Table cells for THROUGHPUT_HEADERS from a `measure`-style result dict."""
  return [f"{result['seconds'] * 1e3:.1f}", gflops(result["flops"]),
          gflops(result["flop_per_s"]), gflops(result["ceiling_flop_per_s"]),
          f"{100 * result['ratio']:.1f}%"]


def mib(num_bytes: float) -> float:
  """Bytes in MiB."""
  return num_bytes / 2 ** 20
