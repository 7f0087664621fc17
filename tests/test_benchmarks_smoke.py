"""Smoke tests of the performance benchmarks (tiny sizes) and the attention kernel dispatch.

Each benchmark's core measurement runs once on a micro model (compiled with
`common.FAST_COMPILE`, XLA's low optimization level, for speed) and must return sane
numbers (time, FLOPs, ceiling > 0, memory > 0). The attention tests check that
`attend` rejects unknown kernels, that the Pallas TPU path refuses non-TPU backends
with a clear error, and (Pallas interpreter, any backend) that the splash path matches
`jax.nn.dot_product_attention` with key padding, sequence padding and the XLA fallback.
"""
import jax
import numpy as np
import pytest

from benchmarks import attention as attention_bench
from benchmarks import common
from benchmarks import scan_blocks
from benchmarks import train_step
from gcm_jax.models import attention


def _micro_config(**model_overrides):
  config = common.benchmark_config("tiny", text_layers=0, audio_layers=0, **model_overrides)
  config.model.update(width=32, depth=1, num_heads=2, patch_size=8, text_max_len=32)
  config.data.update(resolution=16, num_frames=2, batch_size=2)
  config.diffusion.update(max_motion_frames=1)
  return config


@pytest.fixture(scope="module")
def ceiling():
  return common.matmul_ceiling_fn(size=128)


def _check_timing(result):
  assert result["seconds"] > 0
  assert result["flops"] > 0
  assert result["ceiling_flop_per_s"] > 0
  assert np.isclose(result["flop_per_s"], result["flops"] / result["seconds"])
  assert np.isclose(result["ratio"], result["flop_per_s"] / result["ceiling_flop_per_s"])


def test_train_step_measure_reports_time_flops_and_memory(ceiling):
  """Also the core of benchmarks/remat_memory.py (train_step.measure per remat policy)."""
  result = train_step.measure(_micro_config(remat_policy="full"), repeats=1, ceiling=ceiling,
                              compiler_options=common.FAST_COMPILE)
  _check_timing(result)
  assert result["params"] > 0
  assert result["tokens"] == 2 * 2 * 4
  assert result["argument_bytes"] > 0
  assert result["peak_bytes"] == (result["argument_bytes"] + result["output_bytes"]
                                  + result["temp_bytes"] - result["alias_bytes"])


def test_scan_blocks_measure_reports_compile_time_and_given_flops(ceiling):
  """A scanned step's rate uses the FLOPs passed in (XLA counts the scan body once)."""
  config = _micro_config(scan_blocks=True, remat_policy="full")
  config.model.depth = 2
  result = scan_blocks.measure(config, repeats=1, ceiling=ceiling,
                               compiler_options=common.FAST_COMPILE, flops=1e6)
  _check_timing(result)
  assert result["flops"] == 1e6 and result["xla_flops"] > 0
  assert result["compile_seconds"] > 0 and result["params"] > 0 and result["peak_bytes"] > 0


@pytest.mark.parametrize("kind", attention_bench.KINDS)
def test_attention_measure(kind, ceiling):
  result = attention_bench.measure(kind, frames=2, patches=4, width=16, num_heads=2,
                                   repeats=1, ceiling=ceiling,
                                   compiler_options=common.FAST_COMPILE)
  _check_timing(result)
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
