"""The fidelity diagnostics of docs/results.md ("Where the sample noise came from").

`benchmarks.denoiser_noise.restart_sample` is DDIM from x_t at t0 down to t = 0: with an
oracle denoiser (the true x0, any x_t) every step lands on alpha x0 + sigma eps with the
same eps, so the result is x0 exactly; with the "pass-through" denoiser x_t / alpha (a
network that removes no noise) the result keeps the input's noise eps scaled by
sigma(t0) / alpha(t0), as the DDIM update x' = alpha' x0_hat + sigma' eps_hat implies.
`benchmarks.fidelity_sweep.parse_variant` reads the sweep's `key=value` overrides.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import schedules
from gcm_jax.models import trained_autoencoder
from tests import train_utils


from benchmarks import denoiser_noise
from benchmarks import fidelity_sweep

SHAPE = (3, 2, 6, 6, 3)


def _noised(t0):
  schedule = schedules.CosineSchedule()
  x0 = 0.5 * jnp.tanh(jax.random.normal(jax.random.PRNGKey(0), SHAPE))
  eps = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  alpha, sigma = schedules.alpha_sigma(schedule, jnp.float32(t0))
  return schedule, x0, eps, alpha, sigma, alpha * x0 + sigma * eps


@pytest.mark.parametrize("t0", [0.3, 0.9])
def test_restart_with_an_oracle_denoiser_returns_the_clean_clip(t0):
  schedule, x0, _, _, _, x_t = _noised(t0)
  oracle = lambda x, t, cond: x0
  out = denoiser_noise.restart_sample(oracle, x_t, jnp.float32(t0), {}, schedule)
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_restart_with_a_pass_through_denoiser_keeps_the_input_noise():
  t0 = 0.3
  schedule, x0, eps, alpha, sigma, x_t = _noised(t0)

  def pass_through(x, t, cond):
    a, _ = schedules.alpha_sigma(schedule, t[0])
    return x / a

  out = denoiser_noise.restart_sample(pass_through, x_t, jnp.float32(t0), {}, schedule)
  # eps_hat = (x - alpha x / alpha) / sigma = 0 at every step: x0_hat = x_t / alpha(t0) stays.
  np.testing.assert_allclose(out, np.clip(x0 + sigma / alpha * eps, -1, 1), atol=1e-5)
  assert float(jnp.std(out - x0)) > 0.5 * float(sigma / alpha)


def test_parse_variant():
  assert fidelity_sweep.parse_variant("default") == {}
  assert fidelity_sweep.parse_variant(" ") == {}
  assert fidelity_sweep.parse_variant("text_scale=1.5,sampler=euler,num_steps=40") == {
      "text_scale": 1.5, "sampler": "euler", "num_steps": 40}
  with pytest.raises(ValueError, match="not key=value"):
    fidelity_sweep.parse_variant("text_scale")


def test_autoencoder_truth_reads_reconstructions_like_generated_videos():
  from benchmarks import autoencoder_truth  # pylint: disable=g-import-not-at-top
  from gcm_jax.models import autoencoder as ae  # pylint: disable=g-import-not-at-top
  from gcm_jax.train import train_autoencoder  # pylint: disable=g-import-not-at-top
  clips = train_utils.talking_faces_clips("test", 4, 8, 32, "center", 96, 0,
                                          keys=autoencoder_truth.TRUTH_KEYS)
  perfect = autoencoder_truth.measure(clips["video"], clips)
  assert perfect["face"] == perfect["background"] == 1.0 and perfect["hf_ratio"] == 1.0
  assert perfect["mouth_matched"] > 0.9 > 0.5 > perfect["mouth_shuffled"]
  flat = autoencoder_truth.measure(np.zeros_like(clips["video"]), clips)
  assert flat["mouth_matched"] == 0.0 and flat["hf_ratio"] == 0.0  # No mouth, no edges.
  assert flat["psnr"] < 20 < 100 < perfect["psnr"]  # psnr caps identical frames (~106 dB)
  assert perfect["border_error"] == perfect["inner_error"] == 0.0
  framed = clips["video"].copy()  # 0.2 off on the 2-pixel border of a 32-px frame only
  framed[:, :, :2] += 0.2
  framed[:, :, -2:] += 0.2
  framed[:, :, 2:-2, :2] += 0.2
  framed[:, :, 2:-2, -2:] += 0.2
  errors = autoencoder_truth.border_errors(framed, clips["video"])
  np.testing.assert_allclose(errors["border_error"], 0.2 * 127.5, rtol=1e-5)
  assert errors["inner_error"] < 1e-5
  config = ae.CONFIGS["tiny"]
  params = trained_autoencoder.init_params(config, jax.random.PRNGKey(0))
  out = train_autoencoder.reconstruct(config, params, jnp.asarray(clips["video"][:1]))
  assert out.shape == (1, 8, 32, 32, 3) and out.min() >= -1 and out.max() <= 1
