"""Tests of the performance benchmarks' measurements against independent references.

FLOPs: XLA cost analysis of a matmul against 2 M N K, and of the attention benchmark's
forward + backward against a hand count of its matmul FLOPs. Timing arithmetic (medians,
achieved FLOP/s, ceiling, ratio): a fake clock with known durations. Memory: the memory
analysis of functions whose buffers are known (with and without donation), and of the
train step against the bytes of its arguments. Each benchmark's core measurement also
runs once on a micro model (compiled with `common.FAST_COMPILE`, XLA's low optimization
level, for speed). The latent train step: fewer FLOPs and tokens than the pixel step at the
same output size, and the lip-sync decode of x0 costs 3 decoder forwards (remat). The
attention tests check that `attend` rejects unknown kernels, that the Pallas TPU path
refuses non-TPU backends with a clear error, and (Pallas interpreter, any backend) that
the splash path matches `jax.nn.dot_product_attention` with key padding, sequence padding
and the XLA fallback.
"""
import types

import jax
import numpy as np
import pytest

from gcm_jax import latents
from gcm_jax.models import attention
from gcm_jax.models import autoencoder
from gcm_jax.models import diffusion_model
from gcm_jax.train import trainer


from benchmarks import attention as attention_bench
from benchmarks import autoencoder as autoencoder_bench
from benchmarks import common
from benchmarks import latent_step
from benchmarks import scan_blocks
from benchmarks import train_step


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
  state, _ = diffusion_model.state_shardings(config, common.single_device_mesh(config))  # Shapes only.
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


def test_paraphrase_colors_table_has_a_row_per_run(monkeypatch):
  """The table's rows and columns hold each run's text encoder and per-style accuracies
  (generation stubbed: the accuracies themselves are tested with `evaluate`)."""
  from benchmarks import paraphrase_colors  # pylint: disable=g-import-not-at-top
  from gcm_jax import evaluate  # pylint: disable=g-import-not-at-top
  from tests import train_utils  # pylint: disable=g-import-not-at-top
  encoders = {"run_a": "bytes", "run_b": "minilm"}

  def load_trained(workdir):
    config = train_utils.micro_config()
    config.model.text_encoder = encoders[workdir]
    return diffusion_model.TrainedModel(config, None, None)

  face = {"bytes": 0.25, "minilm": 0.75}
  monkeypatch.setattr(diffusion_model, "load_trained", load_trained)
  monkeypatch.setattr(evaluate, "test_clips", lambda *args: {})
  monkeypatch.setattr(evaluate, "paraphrased_caption_match", lambda trained, clips, key: {
      s: {"face": face[trained.config.model.text_encoder], "background": 1.0}
      for s in ("template", "synonyms")})
  lines = paraphrase_colors.table(["run_a", "run_b"], num_clips=2, seed=0).splitlines()
  assert lines[0] == "| run | text encoder | template face / bg | synonyms face / bg |"
  assert lines[2] == "| run_a | bytes | 0.25 / 1.00 | 0.25 / 1.00 |"
  assert lines[3] == "| run_b | minilm | 0.75 / 1.00 | 0.75 / 1.00 |"


# One level (no resampling), width 32, 8x8 pixels: the encoder's convolutions and attention.
_AE_CONFIG = autoencoder.AutoencoderConfig(block_out_channels=(32,), layers_per_block=1,
                                           norm_num_groups=8)


def _encode_matmul_flops(size: int, width: int, latent: int) -> int:
  """XLA counts only the 3x3 taps that fall inside the image (not SAME padding's zeros)."""
  pixels, taps = size ** 2, (3 * size - 2) ** 2
  conv3 = lambda c_in, c_out: 2 * taps * c_in * c_out
  convs = conv3(3, width) + 6 * conv3(width, width) + conv3(width, 2 * latent)  # 1 + 2 + 4 + 1
  attention = 4 * 2 * pixels * width ** 2 + 2 * 2 * pixels ** 2 * width
  return convs + attention + 2 * pixels * (2 * latent) ** 2  # + quant_conv (1x1)


def test_autoencoder_encode_flops_match_a_hand_count():
  """XLA also counts the norms, activations and softmax: within 10%."""
  compiled, _, _ = autoencoder_bench.compile_op(_AE_CONFIG, "encode", resolution=8, frames=1,
                                                compiler_options=common.FAST_COMPILE)
  hand = _encode_matmul_flops(8, 32, 4)
  assert hand <= common.cost_flops(compiled) <= 1.1 * hand


def test_autoencoder_measure(ceiling):
  """decode here; encode compiles in the FLOP test above."""
  result = autoencoder_bench.measure(_AE_CONFIG, "decode", resolution=8, frames=2, repeats=1,
                                     ceiling=ceiling, compiler_options=common.FAST_COMPILE)
  _check_sane(result)
  assert result["frames_per_s"] == pytest.approx(2 / result["seconds"])


def _latent_step_config(kind, lipsync=False, patch=1):
  """Micro model, 1 clip x 5 frames (the SyncNet window) of 64x64 output pixels."""
  config = latent_step.row_config(kind, 64, 4 if kind == "pixel" else patch, lipsync,
                                  batch_size=1, num_frames=5, text_layers=0, audio_layers=0,
                                  width=32, depth=1, num_heads=2, text_max_len=32)
  config.diffusion.update(max_motion_frames=1)
  return config


def test_latent_step_rows_and_the_decode_cost(ceiling):
  """Pixel (patch 4: 16^2 tokens a frame) vs latent (8x8x4 grid, patch 1: 8^2) at 64x64.

  The blocks' per-token work is 4x smaller in the latent step, spatial attention 16x, the
  patch embedding / output layer 12x (4 latent vs 48 pixel values a token); only the
  per-clip work (timestep embedding, optimizer) is not smaller: < 1/4 of the pixel FLOPs.
  With the lip-sync loss the latent step decodes x0 under `jax.checkpoint`: the decoder's
  forward, its recomputation and its input gradient (its params are frozen) = 3 forwards,
  plus the small SyncNet (2x would mean no remat, 0 no decode).
  """
  configs = [_latent_step_config("pixel"), _latent_step_config("tiny"),
             _latent_step_config("tiny", lipsync=True)]
  # Both latent rows start from one state (the same parameter shapes).
  state, _ = trainer.init_state(configs[1], common.single_device_mesh(configs[1]))
  pixel, latent, sync = (
      latent_step.measure(config, repeats=1, ceiling=ceiling,
                          compiler_options=common.FAST_COMPILE, state=s)
      for config, s in zip(configs, (None, state, state)))
  for result in (pixel, latent, sync):
    _check_sane(result)
    assert 0 < result["temp_bytes"] < result["peak_bytes"]
  assert (pixel["grid"], pixel["tokens"]) == (64, 5 * 16 ** 2)
  assert (latent["grid"], latent["tokens"]) == (sync["grid"], sync["tokens"]) == (8, 5 * 8 ** 2)
  assert latent["flops"] < pixel["flops"] / 4
  assert latent["temp_bytes"] < pixel["temp_bytes"]
  # The decoder's forward on the step's 5 frames of 8x8x4 latents, compiled alone.
  ae = latents.load(configs[2])
  decode_fn = jax.jit(lambda p, z: ae.module.apply({"params": p}, z,
                                                   method=autoencoder.AutoencoderKL.decode))
  decode = common.cost_flops(decode_fn.lower(ae.params, jax.numpy.zeros((1, 5, 8, 8, 4)))
                             .compile(common.FAST_COMPILE))
  assert 2.9 * decode <= sync["flops"] - latent["flops"] <= 3.3 * decode
  row = latent_step.table_row("tiny", _latent_step_config("tiny", lipsync=True), sync, latent)
  assert len(row) == len(latent_step.HEADERS)
  assert row[:7] == ["latent", "tiny", "64x64", "8x8x4", 1, 320, "on"]


def test_latent_step_rejects_bad_rows():
  assert latent_step.parse_row("sd-vae:64:2:sync") == ("sd-vae", 64, 2, True)
  with pytest.raises(ValueError, match="kind:resolution:patch"):
    latent_step.parse_row("tiny:64:2:on")
  with pytest.raises(ValueError, match=">= 5 frames"):
    latent_step.row_config("tiny", 64, 2, True, num_frames=4)
