"""Multi-condition CFG (one batched call, nested formula) and training-time condition dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import guidance, parameterization, schedules

B = 3


def toy_model(x, t, cond):
  """Output depends on text, audio, frames and their interaction, so every term is visible."""
  keep_t = 1.0 - cond["drop_text"].astype(x.dtype)[:, None]
  keep_a = 1.0 - cond["drop_audio"].astype(x.dtype)[:, None]
  keep_f = 1.0 - cond.get("drop_frames", jnp.zeros(x.shape[:1], bool)).astype(x.dtype)[:, None]
  return (0.5 * x * (1 + jnp.reshape(t, (-1, 1))) + keep_t * cond["text"]
          + 2.0 * keep_a * cond["mel"]
          + 3.0 * keep_t * keep_a * cond["text"] * cond["mel"] + 4.0 * keep_f * cond["frames"])


def make_cond(rng, **flags):
  cond = {"text": rng.standard_normal((B, 4)), "mel": rng.standard_normal((B, 4)),
          "frames": rng.standard_normal((B, 4))}
  cond.update({k: jnp.full((B,), v) for k, v in flags.items()})
  return jax.tree.map(jnp.asarray, cond)


def call(x, t, cond, **flags):
  return toy_model(x, t, {**cond, **{k: jnp.full((B,), v) for k, v in flags.items()}})


@pytest.mark.parametrize("t", [0.3, np.array([0.1, 0.5, 0.9])])
def test_text_audio_guidance_matches_design_formula_in_one_call(t):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, 4)))
  cond = make_cond(rng, drop_text=False, drop_audio=False)
  s_t, s_a = 4.5, 2.0
  batch_sizes = []

  def counting_model(x, t, cond):
    batch_sizes.append(x.shape[0])
    return toy_model(x, t, cond)

  got = jax.jit(guidance.text_audio_guidance(counting_model, s_t, s_a))(x, jnp.asarray(t), cond)
  e00 = call(x, jnp.asarray(t), cond, drop_text=True, drop_audio=True)
  e0a = call(x, jnp.asarray(t), cond, drop_text=True, drop_audio=False)
  eta = call(x, jnp.asarray(t), cond, drop_text=False, drop_audio=False)
  np.testing.assert_allclose(got, e00 + s_a * (e0a - e00) + s_t * (eta - e0a), rtol=1e-5)
  assert batch_sizes == [3 * B]


def test_unit_scales_reproduce_conditional_output_in_one_branch_and_override_flags():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((B, 4)))
  cond = make_cond(rng, drop_text=True, drop_audio=True)  # Overridden by guidance.
  batch_sizes = []

  def counting_model(x, t, cond):
    batch_sizes.append(x.shape[0])
    return toy_model(x, t, cond)

  want = call(x, 0.5, cond, drop_text=False, drop_audio=False)
  got = guidance.text_audio_guidance(counting_model, 1.0, 1)(x, 0.5, cond)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert batch_sizes == [B]
  # Traced unit scales take the three-branch path and give the same output.
  traced = jax.jit(lambda s: guidance.text_audio_guidance(counting_model, s, s)(x, 0.5, cond))
  np.testing.assert_allclose(traced(jnp.float32(1.0)), want, rtol=1e-5, atol=1e-6)
  assert batch_sizes == [B, 3 * B]


def test_instruct_pix2pix_guidance():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((B, 4)))
  cond = make_cond(rng, drop_text=False, drop_audio=False, drop_frames=False)
  s_i, s_t = 1.5, 7.0
  got = guidance.instruct_pix2pix_guidance(toy_model, s_i, s_t)(x, 0.2, cond)
  e00 = call(x, 0.2, cond, drop_frames=True, drop_text=True)
  ei0 = call(x, 0.2, cond, drop_frames=False, drop_text=True)
  eit = call(x, 0.2, cond, drop_frames=False, drop_text=False)
  np.testing.assert_allclose(got, e00 + s_i * (ei0 - e00) + s_t * (eit - ei0), rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "edm"])
def test_guiding_raw_output_equals_guiding_x0(prediction):
  """Weights sum to 1, so CFG commutes with the affine output -> x0 map."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((B, 4)))
  cond = make_cond(rng, drop_text=False, drop_audio=False)
  schedule = schedules.CosineSchedule()
  raw_guided = guidance.text_audio_guidance(toy_model, 3.0, 2.0)
  a = parameterization.make_denoiser(raw_guided, schedule, prediction)(x, 0.4, cond)
  b = guidance.text_audio_guidance(parameterization.make_denoiser(toy_model, schedule, prediction),
                                   3.0, 2.0)(x, 0.4, cond)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_guidance_errors():
  with pytest.raises(ValueError, match="one scale per condition"):
    guidance.nested_guidance(toy_model, ("drop_text",), (1.0, 2.0))
  cond = {"text": jnp.ones((B, 4)), "mel": jnp.ones((B, 4)), "drop_text": jnp.zeros((B,), bool)}
  for scales in ((2.0, 2.0), (1.0, 1.0)):
    with pytest.raises(KeyError, match="drop_audio"):
      guidance.text_audio_guidance(toy_model, *scales)(jnp.ones((B, 4)), 0.5, cond)


def test_drop_conditions_frequencies():
  n, p_t, p_a, p_b = 200_000, 0.1, 0.2, 0.05
  drop_text, drop_audio = jax.jit(guidance.drop_conditions, static_argnums=(1, 2, 3, 4))(
      jax.random.key(0), n, p_t, p_a, p_b)
  assert drop_text.shape == drop_audio.shape == (n,) and drop_text.dtype == jnp.bool_
  drop_text, drop_audio = np.asarray(drop_text), np.asarray(drop_audio)
  tol = 4 * np.sqrt(0.25 / n)
  assert abs(drop_text.mean() - (p_b + (1 - p_b) * p_t)) < tol
  assert abs(drop_audio.mean() - (p_b + (1 - p_b) * p_a)) < tol
  assert abs((drop_text & drop_audio).mean() - (p_b + (1 - p_b) * p_t * p_a)) < tol
  assert abs((drop_text & ~drop_audio).mean() - (1 - p_b) * p_t * (1 - p_a)) < tol


def test_drop_conditions_rejects_bad_probability():
  with pytest.raises(ValueError, match="p_both"):
    guidance.drop_conditions(jax.random.key(0), 4, 0.1, 0.1, 1.5)
