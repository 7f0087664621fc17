"""Tests of the performance benchmarks' measurements against independent references.

FLOPs: XLA cost analysis of a matmul against 2 M N K, and of the attention benchmark's
forward + backward against a hand count of its matmul FLOPs. Timing arithmetic (medians,
achieved FLOP/s, ceiling, ratio): a fake clock with known durations. Memory: the memory
analysis of functions whose buffers are known (with and without donation), and of the
train step against the bytes of its arguments. Each benchmark's core measurement also
runs once on a micro model (compiled with `common.FAST_COMPILE`, XLA's low optimization
level, for speed). The attention tests check that `attend` rejects unknown kernels, that
the Pallas TPU path refuses non-TPU backends with a clear error, and (Pallas interpreter,
any backend) that the splash path matches `jax.nn.dot_product_attention` with key
padding, sequence padding and the XLA fallback.
"""
import types

import jax
import numpy as np
import pytest

from benchmarks import attention as attention_bench
from benchmarks import common
from benchmarks import scan_blocks
from benchmarks import train_step
from gcm_jax.models import attention
from gcm_jax.train import trainer


def _micro_config(**model_overrides):
  config = common.benchmark_config("tiny", text_layers=0, audio_layers=0, **model_overrides)
  config.model.update(width=32, depth=1, num_heads=2, patch_size=8, text_max_len=32)
  config.data.update(resolution=16, num_frames=2, batch_size=2)
  config.diffusion.update(max_motion_frames=1)
  return config


@pytest.fixture(scope="module")
def ceiling():
  return common.matmul_ceiling_fn(size=128)


def _check_sane(result):
  for key in ("seconds", "flops", "flop_per_s", "ceiling_flop_per_s", "ratio"):
    assert np.isfinite(result[key]) and result[key] > 0, (key, result[key])


def test_cost_flops_of_a_matmul_is_2mnk():
  a, b = jax.numpy.ones((32, 48)), jax.numpy.ones((48, 16))
  assert common.cost_flops(jax.jit(jax.numpy.matmul).lower(a, b).compile()) == 2 * 32 * 48 * 16
  run, flops = common.matmul_ceiling_fn(size=64)
  assert flops == common.cost_flops(run.func) == 2 * 64 ** 3


class _FakeClock:
  """`time.perf_counter` stand-in; functions made by `timed` advance it by given durations."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self):
    return self.now

  def timed(self, durations):
    durations = iter(durations)

    def fn():
      self.now += next(durations)
      return np.zeros(())
    return fn


def test_measure_against_ceiling_with_known_durations(monkeypatch):
  clock = _FakeClock()
  monkeypatch.setattr(common, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
  # First calls are the warm-up (not timed); medians of the rest: 2 s and 0.5 s.
  fn = clock.timed([100.0, 3.0, 1.0, 2.0])
  matmul = clock.timed([100.0, 0.25, 0.5, 4.0])
  result = common.measure_against_ceiling(fn, 4e9, repeats=3, ceiling=(matmul, 3e9))
  assert result == pytest.approx({"seconds": 2.0, "flops": 4e9, "flop_per_s": 2e9,
                                  "ceiling_flop_per_s": 6e9, "ratio": 1 / 3})
  cells = common.throughput_cells(result)
  assert cells[0] == "2000.0" and cells[-1] == "33.3%"


@pytest.mark.parametrize("donate", [False, True])
def test_memory_bytes_of_a_known_function(donate):
  x = jax.numpy.ones((1024,), jax.numpy.float32)
  compiled = jax.jit(lambda a: 2 * a, donate_argnums=(0,) if donate else ()).lower(x).compile()
  memory = common.memory_bytes(compiled)
  assert memory["argument"] == memory["output"] == 4096
  assert memory["alias"] == (4096 if donate else 0)
  assert memory["peak"] == (4096 if donate else 8192) + memory["temp"]


def test_train_step_measure_reports_time_flops_and_memory(ceiling):
  """Also the core of benchmarks/remat_memory.py (train_step.measure per remat policy)."""
  config = _micro_config(remat_policy="full")
  result = train_step.measure(config, repeats=1, ceiling=ceiling,
                              compiler_options=common.FAST_COMPILE)
  _check_sane(result)
  # 2 clips x 2 frames x (16 / 8)^2 patches.
  assert result["tokens"] == 2 * 2 * 4
  state, _ = trainer.state_shardings(config, common.single_device_mesh(config))  # Shapes only.
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  assert result["params"] == sum(x.size for x in jax.tree.leaves(state.params))
  # The step's arguments are the train state and the batch, nothing else.
  arguments = nbytes(state) + nbytes(common.synthetic_batch(config))
  assert result["argument_bytes"] == pytest.approx(arguments, rel=1e-4)
  # The donated state is reused for the new state.
  assert 0.9 * nbytes(state) <= result["alias_bytes"] <= nbytes(state)


def _attention_matmul_flops(kind, frames, patches, width):
  """Hand count of the matmul FLOPs of `attention_bench` forward + backward.

  Per attention over L tokens (all heads): q, k, v, out projections 4 * 2 L D^2, scores
  and weighted values 2 * 2 L^2 D. The backward pass computes the gradients of both
  operands of every matmul (2x the forward), so forward + backward = 3x the forward.
  """
  tokens = frames * patches
  if kind == "full3d":
    forward = 8 * tokens * width ** 2 + 4 * tokens ** 2 * width
  else:  # Spatial (T sequences of N) then temporal (N sequences of T) attention.
    forward = (2 * 8 * tokens * width ** 2 + 4 * frames * patches ** 2 * width
               + 4 * patches * frames ** 2 * width)
  return 3 * forward


@pytest.mark.parametrize("kind", attention_bench.KINDS)
def test_attention_flops_match_a_hand_count(kind):
  """XLA also counts the elementwise work (softmax, rotary, biases): within 10% at D = 64."""
  compiled, _, _ = attention_bench.compile_fwd_bwd(kind, frames=2, patches=4, width=64,
                                                   num_heads=1,
                                                   compiler_options=common.FAST_COMPILE)
  hand = _attention_matmul_flops(kind, frames=2, patches=4, width=64)
  assert hand <= common.cost_flops(compiled) <= 1.1 * hand


def test_scan_blocks_measure_reports_compile_time_and_given_flops(ceiling):
  """A scanned step's rate uses the FLOPs passed in (XLA counts the scan body once)."""
  config = _micro_config(scan_blocks=True, remat_policy="full")
  config.model.depth = 2
  result = scan_blocks.measure(config, repeats=1, ceiling=ceiling,
                               compiler_options=common.FAST_COMPILE, flops=1e6)
  _check_sane(result)
  assert result["flops"] == 1e6 and result["xla_flops"] > 0
  assert result["compile_seconds"] > 0 and result["params"] > 0 and result["peak_bytes"] > 0


@pytest.mark.parametrize("kind", attention_bench.KINDS)
def test_attention_measure(kind, ceiling):
  result = attention_bench.measure(kind, frames=2, patches=4, width=16, num_heads=2,
                                   repeats=1, ceiling=ceiling,
                                   compiler_options=common.FAST_COMPILE)
  _check_sane(result)
  assert result["temp_bytes"] >= 0 and result["peak_bytes"] > 0


def test_cost_flops_accepts_list_and_dict():
  class Compiled:
    def __init__(self, analysis):
      self.analysis = analysis

    def cost_analysis(self):
      return self.analysis

  assert common.cost_flops(Compiled({"flops": 3.0})) == 3.0
  assert common.cost_flops(Compiled([{"flops": 5.0}])) == 5.0


def test_benchmark_config_rejects_unknown_names():
  with pytest.raises(ValueError, match="'tiny' or 'base'"):
    common.benchmark_config("huge")
  with pytest.raises(ValueError, match="unknown model fields"):
    common.benchmark_config("base", widht=3)


def _qkv(lq, lk, batch=1, heads=1, head_dim=8):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (batch, lq, heads, head_dim)),
          jax.random.normal(keys[1], (batch, lk, heads, head_dim)),
          jax.random.normal(keys[2], (batch, lk, heads, head_dim)))


def test_attend_rejects_unknown_implementation():
  q, k, v = _qkv(4, 4)
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    attention.attend(q, k, v, implementation="flash")


@pytest.mark.skipif(jax.default_backend() == "tpu", reason="checks the non-TPU error")
def test_pallas_tpu_errors_off_tpu():
  q, k, v = _qkv(4, 4)
  with pytest.raises(ValueError, match="runs only on TPU, but the JAX backend is"):
    attention.attend(q, k, v, implementation="pallas_tpu")


@pytest.mark.parametrize("lq, lk", [(130, 128), (128, 16)])
def test_splash_matches_xla_with_padding_mask(lq, lk):
  """(130, 128): queries padded to 256 with a key padding mask; (128, 16): XLA fallback."""
  q, k, v = _qkv(lq, lk)
  keep = jax.random.bernoulli(jax.random.key(3), 0.6, (1, lk)).at[:, 0].set(True)
  mask = keep[:, None, None, :]
  got = attention.splash_attention(q, k, v, mask, interpret=True)
  want = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_splash_rejects_non_padding_masks():
  q, k, v = _qkv(128, 128)
  with pytest.raises(ValueError, match="key padding masks"):
    attention.splash_attention(q, k, v, np.ones((1, 1, 128, 128), bool), interpret=True)
