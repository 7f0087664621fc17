"""GPU benchmark suite: train-step MFU, a single-chip slice of the pod config, sampling speed.

Usage, from the repository root (benchmarks/gpu_suite.sh installs the GPU extra first and
gives the run its time budget):

  python -m benchmarks.gpu_suite --out /tmp/gpu_suite [--rows NAME,...] [--repeats 5]
      [--budget_s SECONDS] [--pod_batch 4] [--pod_frames 16]
  JAX_PLATFORMS=cpu python -m benchmarks.gpu_suite --cpu --out /tmp/gpu_suite_cpu

`--cpu` is the smoke mode: tiny shapes (`SMOKE_MODEL`, `SMOKE_DATA`), one repeat, a
2-step sampler and XLA's fast-compile options, so every row runs in seconds on a CPU.

Writes to --out, rewritten after every row (a run stopped by a time limit keeps the rows
done so far):
  results.md: the environment (device, jax / jaxlib / CUDA versions, peak), one table with
    a line per row of `ROWS`, and these definitions;
  results.json: the same numbers per row, plus the environment;
  profile_top_ops.md: the top XLA ops by time in `PROFILE_STEPS` steps of the first
    train-step row that runs, traced with `jax.profiler.trace` into profile/.

Rows (`ROWS`, run in that order; `--rows` picks some): the talking_faces train step (bf16)
with the cuDNN flash-attention kernel and the XLA one, each with remat none / dots / full;
the pod slice: configs/pod.py's model (width 1024, depth 24, 16 heads, 6 text and 4 audio
layers, patch 4, remat full, bf16) and 128x128 frames on one chip, with the batch and the
clip length cut to `--pod_batch` clips of `--pod_frames` frames (default 4 x 16 = 65,536
video tokens per step; pod.py's 512 clips x 32 frames on its example 64 chips are 8 clips
per chip), with looped and with scanned blocks; sampling speed at 64x64 (talking_faces
model, random parameters, DPM++ 2M with text + audio guidance, batch 1 and 8) and at
256x256 through the latent autoencoder; the autoencoder's encode / decode throughput. A row
whose feature does not exist is listed as "not available: <reason>", found at run time
(no GPU for cuDNN; no `config.model.scan_blocks`; no `config.autoencoder`); a row that
raises is listed as "failed", one skipped for the time budget as "skipped".

Definitions (all per device; time = median over `--repeats` calls after a warm-up call,
interleaved with the ceiling matmul, `common.measure_against_ceiling`):
  model FLOPs: XLA's cost analysis of the lowered (unoptimized) computation with remat off
    and the XLA attention kernel, so every variant of one config counts the same work;
    sampling: NFE x the guided denoiser call (one model call on batch 3B).
  executable FLOPs (notes): cost analysis of the compiled step that ran: remat
    recomputation included, custom calls (the cuDNN attention kernel) counted as 0.
  achieved = model FLOPs / time; MFU = achieved / peak; vs ceiling = achieved / the
    same-run matmul ceiling (bf16 8192^3 on a GPU, float32 512^3 on a CPU).
  peak: the device's dense bf16 datasheet peak (`PEAK_BF16_TFLOPS`); on a CPU, or a device
    missing from that table, the ceiling measured with each row (then MFU = vs ceiling).
  video s per s (sampling): batch x frames / 25 fps / time of one sampling call.
"""
import argparse
import dataclasses
import datetime
import glob
import gzip
import importlib.metadata
import json
import os
import re
import time
import traceback
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax import sampling
from gcm_jax.configs import pod
from gcm_jax.configs import talking_faces
from gcm_jax.data import audio
from gcm_jax.diffusion import samplers
from gcm_jax.models import diffusion_model
from gcm_jax.train import trainer


from benchmarks import common

# Dense (no structured sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets,
# which list twice these numbers "with sparsity": NVIDIA H100 Tensor Core GPU datasheet
# (H100 SXM 1,979, H100 NVL 1,671, H100 PCIe 1,513 with sparsity), NVIDIA H200 datasheet
# (H200 SXM 1,979, H200 NVL 1,671), NVIDIA A100 Tensor Core GPU datasheet (A100 SXM and
# PCIe 624). Keys are matched as substrings of `device.device_kind` (e.g. 'NVIDIA H100 80GB
# HBM3', 'NVIDIA H200', 'NVIDIA A100-SXM4-80GB') in this order; the first match wins.
PEAK_BF16_TFLOPS = {
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H200 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
}
# Ceiling matmul (size, dtype) per mode: large enough on an H200 to run well past launch
# overhead (1.1 TFLOP), small enough on a CPU to take milliseconds.
GPU_CEILING = (8192, "bfloat16")
CPU_CEILING = (512, "float32")
PROFILE_STEPS = 3
TOP_OPS = 15
# The smoke mode's shapes (--cpu): both configs shrink to these.
SMOKE_MODEL = dict(width=32, depth=1, num_heads=2, patch_size=8, text_max_len=32,
                   text_layers=0, audio_layers=0)
SMOKE_DATA = dict(resolution=16, num_frames=2, batch_size=2)
SMOKE_SAMPLER_STEPS = 2

Check = Callable[["Suite"], Optional[str]]


def device_peak(device_kind: str) -> Optional[float]:
  """Dense bf16 peak FLOP/s of a device kind from `PEAK_BF16_TFLOPS`, None if not listed."""
  for key, tflops in PEAK_BF16_TFLOPS.items():
    if key in device_kind:
      return tflops * 1e12
  return None


@dataclasses.dataclass
class Suite:
  """Settings of one run and what its rows share (initial states, model FLOPs)."""
  smoke: bool
  repeats: int
  pod_batch: int
  pod_frames: int
  trace_dir: str
  ceiling: common.Ceiling
  peak: Optional[float]
  states: dict[str, Any] = dataclasses.field(default_factory=dict)
  flops: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def compiler_options(self) -> common.CompilerOptions:
    return common.FAST_COMPILE if self.smoke else None

  @property
  def fast_attention(self) -> str:
    """The fastest attention kernel of the backend: cuDNN flash attention on a GPU."""
    return "cudnn" if jax.default_backend() == "gpu" else "xla"

  def config(self, base: str, **model: Any) -> ml_collections.ConfigDict:
    """The 'talking_faces' or 'pod_slice' config (see the module docstring), model overrides."""
    if base == "talking_faces":
      config = talking_faces.get_config()
    elif base == "pod_slice":
      config = pod.get_config()
      config.data.update(batch_size=self.pod_batch, num_frames=self.pod_frames)
    else:
      raise ValueError(f"base must be 'talking_faces' or 'pod_slice', got {base!r}")
    if self.smoke:
      config.model.update(SMOKE_MODEL)
      config.data.update(SMOKE_DATA)
      config.diffusion.max_motion_frames = 1
      config.sampling.num_steps = SMOKE_SAMPLER_STEPS
    config.model.update(model)
    return config

  def initial_state(self, key: str, config: ml_collections.ConfigDict) -> Any:
    """The TrainState of `config`, initialized once per `key` (configs of one key differ only
    in what keeps parameter shapes: remat, attention kernel, batch)."""
    if key not in self.states:
      self.states[key] = trainer.init_state(config, common.single_device_mesh(config))[0]
    return self.states[key]

  def train_model_flops(self, base: str, batch: dict[str, jax.Array]) -> float:
    """Model FLOPs of one train step of `base` (cost analysis of the reference lowering)."""
    if base not in self.flops:
      config = reference_config(self.config(base))
      mesh = common.single_device_mesh(config)
      abstract, shardings = diffusion_model.state_shardings(config, mesh)
      jitted = trainer.jit_train_step(config, mesh, shardings)
      with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.logical_axis_rules):
        self.flops[base] = common.cost_flops(jitted.lower(abstract, batch, {}))
    return self.flops[base]

  def timing(self, fn: Callable[[], Any], flops: float) -> dict[str, float]:
    """Median time of `fn` with `flops` of work, against the ceiling and the peak."""
    result = common.measure_against_ceiling(fn, flops, self.repeats, self.ceiling)
    peak = self.peak or result["ceiling_flop_per_s"]
    return {"seconds": result["seconds"], "flops": flops, "flop_per_s": result["flop_per_s"],
            "ceiling_flop_per_s": result["ceiling_flop_per_s"],
            "ratio_to_ceiling": result["ratio"], "peak_flop_per_s": peak,
            "mfu": result["flop_per_s"] / peak}


def reference_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with remat off, the XLA attention kernel and looped blocks (model FLOPs)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.update(remat_policy="none", attention_impl="xla")
  if "scan_blocks" in config.model:
    config.model.scan_blocks = False
  return config


def describe(config: ml_collections.ConfigDict) -> str:
  """A short description of a config's shapes and kernels for the table."""
  m, d = config.model, config.data
  return (f"B{d.batch_size} T{d.num_frames} {d.resolution}px, D{m.width} L{m.depth} H{m.num_heads} "
          f"p{m.patch_size}, {m.dtype}, attn {m.attention_impl}, remat {m.remat_policy}")


@dataclasses.dataclass(frozen=True)
class Row:
  """One benchmark: `run(suite, profile)` returns its numbers; `requires` lists checks
  that return why the row cannot run (None when it can). With `profile` True a train row
  also traces a few steps and adds their op summary under 'profile'."""
  description: str
  run: Callable[[Suite, bool], dict[str, Any]]
  requires: tuple[Check, ...] = ()


def needs_gpu(suite: Suite) -> Optional[str]:
  """Why the cuDNN rows cannot run (not a GPU backend), or None."""
  del suite
  backend = jax.default_backend()
  if backend != "gpu":
    return f"cuDNN flash attention needs a GPU (JAX backend: {backend})"
  return None


def needs_scan_blocks(suite: Suite) -> Optional[str]:
  """Why the scanned-blocks row cannot run (no `config.model.scan_blocks`), or None."""
  if "scan_blocks" not in suite.config("pod_slice").model:
    return "config.model.scan_blocks does not exist yet (the DiT blocks are a Python loop)"
  return None


def needs_autoencoder(suite: Suite) -> Optional[str]:
  """Why the latent-autoencoder rows cannot run (no `config.autoencoder`), or None."""
  if "autoencoder" not in suite.config("talking_faces"):
    return "no latent autoencoder yet (the config has no 'autoencoder' section)"
  return None


def train_row(base: str, attention: Optional[str], remat: str, scanned: bool = False
              ) -> Callable[[Suite, bool], dict[str, Any]]:
  """A train-step row of `base`; attention None = the backend's fastest kernel."""
  def run(suite: Suite, profile: bool) -> dict[str, Any]:
    model = dict(attention_impl=attention or suite.fast_attention, remat_policy=remat)
    if scanned:
      model["scan_blocks"] = True
    config = suite.config(base, **model)
    state = suite.initial_state(base + ("/scanned" if scanned else ""), config)
    start = time.perf_counter()
    bench = common.TrainStepBench(config, suite.compiler_options, state)
    compile_seconds = time.perf_counter() - start
    flops = suite.train_model_flops(base, bench.batch)
    result = suite.timing(bench.step, flops)
    tokens = (config.data.batch_size * config.data.num_frames
              * (config.data.resolution // config.model.patch_size) ** 2)
    params = sum(x.size for x in jax.tree.leaves(bench.state.params))
    result.update(config=describe(config), unit="step", compile_seconds=compile_seconds,
                  executable_flops=bench.flops, peak_bytes=bench.memory["peak"],
                  notes=f"{params / 1e6:.1f}M params, {tokens} tokens/step, executable "
                        f"FLOPs {bench.flops / flops:.2f}x model")
    if profile:
      result["profile"] = profile_summary(bench.step, PROFILE_STEPS, suite.trace_dir)
    return result
  return run


def sampling_row(batch_size: int) -> Callable[[Suite, bool], dict[str, Any]]:
  """Sampling speed of the talking_faces model at its 64x64 resolution, random params."""
  def run(suite: Suite, profile: bool) -> dict[str, Any]:
    del profile
    config = suite.config("talking_faces", attention_impl=suite.fast_attention)
    config.data.batch_size = batch_size
    params = suite.initial_state("talking_faces", config).params
    batch = common.synthetic_batch(config)
    cond = {k: batch[k] for k in ("text_tokens", "text_mask", "mel")}
    key = jax.random.key(0)
    apply_fn = diffusion_model.make_apply_fn(config)
    start = time.perf_counter()
    compiled = jax.jit(lambda p, c, k: sampling.sample_videos(apply_fn, p, c, k, config)).lower(
        params, cond, key).compile(suite.compiler_options)
    compile_seconds = time.perf_counter() - start
    nfe = samplers.nfe(sampling.sampler_config(config))
    flops = nfe * guided_denoiser_flops(config, params, batch)
    result = suite.timing(lambda: compiled(params, cond, key), flops)
    video_seconds = batch_size * config.data.num_frames / audio.FPS
    per_second = video_seconds / result["seconds"]
    result.update(config=f"{describe(config)}, {config.sampling.sampler} x{nfe} NFE, guidance "
                         f"text {config.sampling.text_scale} audio {config.sampling.audio_scale}",
                  unit="call", compile_seconds=compile_seconds, nfe=nfe,
                  video_seconds=video_seconds, video_seconds_per_second=per_second,
                  peak_bytes=common.memory_bytes(compiled)["peak"],
                  notes=f"NFE {nfe}, {video_seconds:.3g} s of video per call, "
                        f"{per_second:.3g} s of video per s")
    return result
  return run


def guided_denoiser_flops(config: ml_collections.ConfigDict, params: Any,
                          batch: dict[str, jax.Array]) -> float:
  """Cost-analysis FLOPs of one guided denoiser call (XLA attention) on `batch`'s shapes."""
  config = reference_config(config)
  apply_fn = diffusion_model.make_apply_fn(config)
  b = config.data.batch_size
  cond = {k: batch[k] for k in ("text_tokens", "text_mask", "mel")}
  cond.update(drop_text=jnp.zeros((b,), bool), drop_audio=jnp.zeros((b,), bool))
  t = jnp.full((b,), 0.5, jnp.float32)

  def call(p, x, t, c):
    return sampling.guided_denoiser(apply_fn, p, config)(x, t, c)

  return common.cost_flops(jax.jit(call).lower(params, batch["video"], t, cond))


def missing_autoencoder_benchmark(suite: Suite, profile: bool) -> dict[str, Any]:
  """Runs once `config.autoencoder` exists: this suite has no benchmark for it yet."""
  del suite, profile
  raise NotImplementedError("config.autoencoder exists now: add its encode / decode and "
                            "latent sampling benchmarks to benchmarks/gpu_suite.py")


ROWS: dict[str, Row] = {
    "train/talking_faces/cudnn/dots": Row(
        "talking_faces train step, cuDNN attention, remat dots (the config's remat)",
        train_row("talking_faces", "cudnn", "dots"), (needs_gpu,)),
    "train/talking_faces/xla/dots": Row(
        "talking_faces train step, XLA attention, remat dots",
        train_row("talking_faces", "xla", "dots")),
    "train/pod_slice/looped": Row(
        "pod.py model on one chip (batch / frames cut), fastest attention, remat full",
        train_row("pod_slice", None, "full")),
    "sample/64px/b1": Row(
        "sampling 64x64, batch 1, DPM++ 2M, text + audio guidance",
        sampling_row(1)),
    "train/talking_faces/cudnn/none": Row(
        "talking_faces train step, cuDNN attention, no remat",
        train_row("talking_faces", "cudnn", "none"), (needs_gpu,)),
    "train/talking_faces/cudnn/full": Row(
        "talking_faces train step, cuDNN attention, remat full",
        train_row("talking_faces", "cudnn", "full"), (needs_gpu,)),
    "train/talking_faces/xla/none": Row(
        "talking_faces train step, XLA attention, no remat",
        train_row("talking_faces", "xla", "none")),
    "train/talking_faces/xla/full": Row(
        "talking_faces train step, XLA attention, remat full",
        train_row("talking_faces", "xla", "full")),
    "sample/64px/b8": Row(
        "sampling 64x64, batch 8, DPM++ 2M, text + audio guidance",
        sampling_row(8)),
    "train/pod_slice/scanned": Row(
        "pod slice with scanned DiT blocks (config.model.scan_blocks)",
        train_row("pod_slice", None, "full", scanned=True), (needs_scan_blocks,)),
    "sample/256px/latent": Row(
        "sampling 256x256 through the latent autoencoder",
        missing_autoencoder_benchmark, (needs_autoencoder,)),
    "autoencoder/encode_decode": Row(
        "latent autoencoder encode / decode throughput",
        missing_autoencoder_benchmark, (needs_autoencoder,)),
}


def profile_summary(step: Callable[[], Any], num_steps: int, trace_dir: str) -> dict[str, Any]:
  """Traces `num_steps` calls of `step` into `trace_dir` and sums the trace's XLA ops.

  Returns {'steps', 'trace', 'ops': `top_ops` list, 'total_ms'}, or {'error': message}
  when tracing or parsing fails (e.g. a platform whose trace has no op events).
  """
  try:
    with jax.profiler.trace(trace_dir):
      for i in range(num_steps):
        with jax.profiler.StepTraceAnnotation("train", step_num=i):
          jax.block_until_ready(step())
    paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
      raise FileNotFoundError(f"jax.profiler.trace wrote no *.trace.json.gz under {trace_dir}")
    path = max(paths, key=os.path.getmtime)
    with gzip.open(path, "rt") as f:
      ops, total_ms = top_ops(json.load(f)["traceEvents"], TOP_OPS)
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {e}"}
  return {"steps": num_steps, "trace": os.path.relpath(path, os.path.dirname(trace_dir)),
          "ops": ops, "total_ms": total_ms}


def top_ops(events: Sequence[dict], top: int) -> tuple[list[dict[str, Any]], float]:
  """The `top` XLA ops by summed duration in Chrome-trace `events`, and all ops' total ms.

  Op events are the complete ('X') events of the device processes ('/device:...') if any,
  else of all processes: those on a thread named 'XLA Ops' (GPU traces; named by the op)
  if there is one, else those whose args name an 'hlo_op' (CPU thunks, GPU kernels).
  An op's time is its exclusive time (`exclusive_times`: a while or conditional op
  without the ops of its body). Returns ([{'op', 'module', 'calls', 'total_ms'}, ...] by
  decreasing time, the total ms of all ops).

  Raises:
    ValueError: the events hold no op events.
  """
  process = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
  thread = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"}
  spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
  device = [e for e in spans if process.get(e["pid"], "").startswith("/device:")]
  spans = device or spans
  named = [(e["name"], e) for e in spans if thread.get((e["pid"], e.get("tid"))) == "XLA Ops"]
  if not named:
    named = [(e["args"]["hlo_op"], e) for e in spans if "hlo_op" in e.get("args", {})]
  if not named:
    raise ValueError("the trace has no XLA op events (no 'XLA Ops' line, no args.hlo_op)")
  totals: dict[str, dict[str, Any]] = {}
  for op, e, self_us in exclusive_times(named):
    entry = totals.setdefault(op, {"op": op, "module": e.get("args", {}).get("hlo_module", ""),
                                   "calls": 0, "total_ms": 0.0})
    entry["calls"] += 1
    entry["total_ms"] += self_us / 1e3
  ranked = sorted(totals.values(), key=lambda entry: -entry["total_ms"])
  return ranked[:top], sum(entry["total_ms"] for entry in ranked)


def exclusive_times(named: Sequence[tuple[str, dict]]) -> list[tuple[str, dict, float]]:
  """(name, event, exclusive µs) for (name, event) pairs: each event's duration minus the
  durations of the events nested directly in it on the same thread (pid, tid)."""
  threads: dict[tuple[Any, Any], list[tuple[str, dict]]] = {}
  for op, e in named:
    threads.setdefault((e["pid"], e.get("tid")), []).append((op, e))
  out = []
  for spans in threads.values():
    spans.sort(key=lambda span: (span[1]["ts"], -span[1]["dur"]))
    stack: list[list[Any]] = []  # [name, event, exclusive µs] of the enclosing events.
    for op, e in spans:
      while stack and e["ts"] >= stack[-1][1]["ts"] + stack[-1][1]["dur"]:
        out.append(tuple(stack.pop()))
      if stack:
        stack[-1][2] -= e["dur"]
      stack.append([op, e, e["dur"]])
    out.extend(tuple(entry) for entry in stack)
  return [(op, e, max(us, 0.0)) for op, e, us in out]


def environment() -> dict[str, Any]:
  """Device, versions (jax, jaxlib, CUDA driver and jax CUDA plugins) and machine load."""
  device = jax.devices()[0]
  info = jax.print_environment_info(return_string=True)
  cuda = re.search(r"CUDA Version:\s*([\d.]+)", info)
  plugins = sorted(f"{d.metadata['Name']} {d.version}" for d in importlib.metadata.distributions()
                   if d.metadata["Name"].lower().replace("_", "-").startswith("jax-cuda"))
  return {"platform": device.platform, "device_kind": device.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__,
          "jaxlib": importlib.metadata.version("jaxlib"),
          "cuda_driver": cuda.group(1) if cuda else None, "cuda_plugins": plugins,
          "load": common.load_average(), "environment_info": info}


TABLE_HEADERS = ["row", "config", "time", "compile s", "model TFLOP", "achieved TFLOP/s", "MFU",
                 "vs ceiling", "peak mem GiB", "notes"]


def table_line(result: dict[str, Any]) -> list[str]:
  """The results.md cells of one row (see `TABLE_HEADERS`)."""
  if result["status"] != "ok":
    return [result["row"], result["description"], *["-"] * 7,
            f"{result['status']}: {result['reason']}"]
  return [result["row"], result["config"], f"{result['seconds']:.3g} s/{result['unit']}",
          f"{result['compile_seconds']:.3g}", f"{result['flops'] / 1e12:.3g}",
          f"{result['flop_per_s'] / 1e12:.3g}", f"{100 * result['mfu']:.1f}%",
          f"{100 * result['ratio_to_ceiling']:.1f}%", f"{result['peak_bytes'] / 2 ** 30:.3g}",
          result["notes"]]


def results_markdown(run: dict[str, Any]) -> str:
  """results.md: environment lines, the table, the definitions."""
  env, settings = run["environment"], run["settings"]
  if settings["smoke"]:
    mode = ("CPU smoke (--cpu): tiny shapes, 1 repeat; MFU is against the measured CPU matmul "
            "ceiling of each row, not a bf16 datasheet peak")
  else:
    mode = "full shapes"
  if settings["peak_flop_per_s"]:
    peak = (f"{settings['peak_flop_per_s'] / 1e12:.0f} TFLOP/s dense bf16 (datasheet, "
            f"{env['device_kind']})")
  else:
    peak = "the matmul ceiling measured with each row (no datasheet peak for this device)"
  size, dtype = settings["ceiling"]
  cuda = (f"CUDA driver {env['cuda_driver'] or 'n/a'}, plugins: "
          f"{', '.join(env['cuda_plugins']) or 'none'}")
  lines = [
      "# GPU suite results", "",
      f"- mode: {mode}",
      f"- device: {env['platform']}:{env['device_kind']} (device 0 of {env['device_count']})",
      f"- jax {env['jax']}, jaxlib {env['jaxlib']}; {cuda}",
      f"- peak: {peak}",
      f"- ceiling: {dtype} {size}^3 matmul timed interleaved with each row (medians of "
      f"{settings['repeats']})",
      f"- started {settings['started']}, updated {run['updated']}, budget "
      f"{settings['budget_s'] or 'none'} s, load {env['load']}", "",
      common.format_table(TABLE_HEADERS, [table_line(r) for r in run["rows"]]), "",
      "Profile of the first train-step row: profile_top_ops.md. Definitions: "
      "benchmarks/gpu_suite.py (module docstring); model TFLOP is per step or per call.", ""]
  return "\n".join(lines)


def profile_markdown(profile: Optional[dict[str, Any]]) -> str:
  """profile_top_ops.md: the top ops of the profiled row, or why there are none."""
  lines = ["# Profile: top XLA ops by time", ""]
  if profile is None:
    return "\n".join(lines + ["No profile: no train-step row ran.", ""])
  if "error" in profile:
    return "\n".join(lines + [f"Row `{profile['row']}`: profile summary not available: "
                              f"{profile['error']}", ""])
  steps = profile["steps"]
  lines += [f"Row `{profile['row']}`, {steps} steps under `jax.profiler.trace` "
            f"(trace: {profile['trace']}); all XLA ops: {profile['total_ms'] / steps:.3g} "
            f"ms per step.", ""]
  rows = [[i + 1, op["op"], op["module"], f"{op['calls'] / steps:.3g}",
           f"{op['total_ms'] / steps:.3g}", f"{100 * op['total_ms'] / profile['total_ms']:.1f}%"]
          for i, op in enumerate(profile["ops"])]
  lines.append(common.format_table(["#", "op", "module", "calls/step", "ms/step", "share"], rows))
  return "\n".join(lines + [""])


def write_outputs(out: str, run: dict[str, Any]) -> None:
  """Writes results.md, results.json and profile_top_ops.md into `out`."""
  run["updated"] = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S UTC")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(run, f, indent=1)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(results_markdown(run))
  with open(os.path.join(out, "profile_top_ops.md"), "w") as f:
    f.write(profile_markdown(run["profile"]))


def run_row(name: str, row: Row, suite: Suite, profile: bool, over_budget: bool
            ) -> dict[str, Any]:
  """One row's result: status ok / not available / skipped / failed, and its numbers."""
  result = {"row": name, "description": row.description}
  reason = next((r for r in (check(suite) for check in row.requires) if r), None)
  if reason:
    return {**result, "status": "not available", "reason": reason}
  if over_budget:
    return {**result, "status": "skipped", "reason": "time budget used up"}
  try:
    return {**result, "status": "ok", **row.run(suite, profile)}
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {**result, "status": "failed", "reason": f"{type(e).__name__}: {message}"[:300],
            "traceback": traceback.format_exc()}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output folder (created)")
  parser.add_argument("--cpu", action="store_true", help="smoke mode: tiny shapes, 1 repeat")
  parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated ROWS names")
  parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --cpu)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="start no row after this many seconds (default: no limit)")
  parser.add_argument("--pod_batch", type=int, default=4)
  parser.add_argument("--pod_frames", type=int, default=16)
  args = parser.parse_args(argv)
  unknown = [name for name in args.rows.split(",") if name not in ROWS]
  if unknown:
    parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Runs the selected rows, writing the outputs after each; returns what results.json holds."""
  args = parse_args(argv)
  start = time.monotonic()
  os.makedirs(args.out, exist_ok=True)
  size, dtype = CPU_CEILING if args.cpu else GPU_CEILING
  suite = Suite(smoke=args.cpu, repeats=args.repeats or (1 if args.cpu else 5),
                pod_batch=args.pod_batch, pod_frames=args.pod_frames,
                trace_dir=os.path.join(os.path.abspath(args.out), "profile"),
                ceiling=common.matmul_ceiling_fn(size, dtype),
                peak=None if args.cpu else device_peak(jax.devices()[0].device_kind))
  run = {"environment": environment(),
         "settings": {"smoke": args.cpu, "repeats": suite.repeats, "budget_s": args.budget_s,
                      "ceiling": [size, dtype], "peak_flop_per_s": suite.peak,
                      "pod_batch": args.pod_batch, "pod_frames": args.pod_frames,
                      "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                          "%Y-%m-%d %H:%M:%S UTC")},
         "rows": [], "profile": None}
  for name in args.rows.split(","):
    over_budget = args.budget_s is not None and time.monotonic() - start > args.budget_s
    result = run_row(name, ROWS[name], suite, run["profile"] is None, over_budget)
    if "profile" in result:
      run["profile"] = {"row": name, **result.pop("profile")}
    run["rows"].append(result)
    write_outputs(args.out, run)
    print(f"[{time.monotonic() - start:6.1f} s] {name}: {result['status']}"
          + (f" ({result['reason']})" if "reason" in result else
             f", {result['seconds']:.3g} s/{result['unit']}, MFU {100 * result['mfu']:.1f}%"),
          flush=True)
  return run


if __name__ == "__main__":
  main()
