"""Long-video extension with motion frames, inpainting/infilling masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.diffusion import extension, samplers, schedules

B, H, W, C = 2, 2, 2, 1


def toy_denoiser(x, t, cond):
  """Predicts, for every frame, its audio value (mean of its mel window) plus the mean of the
  given conditioning frames (0 if none): checks mel slicing and frames/frame_mask plumbing."""
  mel = cond["mel"].mean(axis=(2, 3))  # [B, T]
  mask = cond["frame_mask"].astype(x.dtype)
  given_sum = jnp.sum(cond["frames"].mean(axis=(2, 3, 4)) * mask, axis=1)
  given_mean = given_sum / jnp.maximum(mask.sum(axis=1), 1.0)
  pred = mel + given_mean[:, None]
  return jnp.broadcast_to(pred[:, :, None, None, None], x.shape) + 0.0 * x


def reference_video(mel, num_frames, window, motion):
  """numpy transcription of the window loop for toy_denoiser (whose output ignores x)."""
  mel = mel.mean(axis=(2, 3))
  video, done = np.zeros((B, num_frames)), 0
  for start in extension.window_starts(num_frames, window, motion):
    given = np.arange(start, start + window) < done
    cur = video[:, start:start + window]
    given_mean = cur[:, given].mean(axis=1) if given.any() else np.zeros(B)
    video[:, start:start + window] = np.where(given, cur, mel[:, start:start + window]
                                              + given_mean[:, None])
    done = start + window
  return video


@pytest.mark.parametrize("num_frames,window,motion,name", [(30, 8, 3, "dpmpp_2m"),
                                                           (9, 8, 0, "ddpm")])
def test_long_video_matches_window_loop(num_frames, window, motion, name):
  cfg = samplers.SamplerConfig(name, 4, schedules.EDMSchedule())
  mel = jax.random.normal(jax.random.key(0), (B, num_frames + 3, 5, 80))  # Longer audio is fine.
  cond = {"mel": mel, "text_tokens": jnp.ones((B, 7), jnp.int32)}
  gen = jax.jit(lambda k, c: extension.generate_long_video(
      toy_denoiser, k, c, cfg, (B, num_frames, H, W, C), window, motion))
  video = gen(jax.random.key(1), cond)
  assert video.shape == (B, num_frames, H, W, C)
  want = reference_video(np.asarray(mel[:, :num_frames]), num_frames, window, motion)
  np.testing.assert_allclose(video[:, :, 0, 0, 0], want, rtol=1e-4, atol=1e-4)


def test_window_starts_overlap_and_cover_exactly():
  starts = extension.window_starts(30, 8, 3)
  np.testing.assert_array_equal(starts, [0, 5, 10, 15, 20, 22])
  assert starts[-1] + 8 == 30 and np.all(np.diff(starts) <= 5)
  np.testing.assert_array_equal(extension.window_starts(8, 8, 7), [0])


def test_seam_frames_are_where_the_windows_new_frames_begin():
  """A denoiser whose x0 is one random value per window (the mean of its noisy input) makes
  piecewise-constant videos; known frames are copied, so the value changes (beyond float rounding) exactly
  where a window's first new frame is."""
  cfg = samplers.SamplerConfig("euler", 2, schedules.EDMSchedule())
  window_constant = lambda x, t, cond: jnp.broadcast_to(jnp.mean(x), x.shape)
  for num_frames, window, motion in [(24, 8, 2), (30, 8, 3), (9, 8, 0), (8, 8, 2)]:
    cond = {"mel": jnp.zeros((1, num_frames, 5, 80))}
    video = extension.generate_long_video(window_constant, jax.random.key(num_frames), cond,
                                          cfg, (1, num_frames, 1, 1, 1), window, motion)
    changes = np.flatnonzero(np.abs(np.diff(np.asarray(video[0, :, 0, 0, 0]))) > 1e-4) + 1
    np.testing.assert_array_equal(extension.seam_frames(num_frames, window, motion), changes)
  np.testing.assert_array_equal(extension.seam_frames(24, 8, 2), [8, 14, 20])


def gaussian_denoiser(schedule):
  def denoise_fn(x, t, cond):
    alpha, sigma = schedules.alpha_sigma(schedule, t)
    return alpha / (alpha**2 + sigma**2) * x  # Exact for x0 ~ N(0, I).
  return denoise_fn


@pytest.mark.parametrize("name", ["ddpm", "dpmpp_3m", "heun"])
def test_replacement_reproduces_known_frames_and_infills_others(name):
  cfg = samplers.SamplerConfig(name, 6, schedules.LinearSchedule(), eta=1.0, s_churn=10.0)
  known = jax.random.normal(jax.random.key(0), (B, 9, H, W, C))
  mask = extension.frame_mask(B, 9, [0, 4, 8])  # Keyframe infilling.
  out = extension.inpaint_denoiser(gaussian_denoiser(cfg.schedule), known, mask)
  x_T = samplers.initial_noise(jax.random.key(1), known, cfg)
  sampled = samplers.sample(out, jax.random.key(2), x_T, {}, cfg)
  np.testing.assert_allclose(sampled[:, ::4], known[:, ::4], rtol=1e-4, atol=1e-4)
  assert not np.allclose(sampled[:, 1], known[:, 1], atol=1e-2)


def test_sample_window_sets_cond_and_keeps_known_frames_without_replacement():
  cfg = samplers.SamplerConfig("heun", 3, schedules.EDMSchedule())
  frames = jnp.arange(B * 4 * H * W * C, dtype=jnp.float32).reshape(B, 4, H, W, C)
  mask = extension.frame_mask(B, 4, [0, 1])
  cond = {"mel": jnp.zeros((B, 4, 5, 80))}
  out = extension.sample_window(toy_denoiser, jax.random.key(0), frames, mask, cond, cfg,
                                replace=False)
  np.testing.assert_array_equal(out[:, :2], frames[:, :2])
  given_mean = frames[:, :2].mean(axis=(1, 2, 3, 4))
  np.testing.assert_allclose(out[:, 2:, 0, 0, 0], jnp.broadcast_to(given_mean[:, None], (B, 2)),
                             rtol=1e-5)


def test_errors():
  cfg = samplers.SamplerConfig("ddim", 2)
  cond = {"mel": jnp.zeros((B, 20, 5, 80))}
  gen = lambda n, window, k, c=cond: extension.generate_long_video(
      toy_denoiser, jax.random.key(0), c, cfg, (B, n, H, W, C), window, k)
  with pytest.raises(ValueError, match="motion_frames < window"):
    gen(20, 8, 8)
  with pytest.raises(ValueError, match="motion_frames < window"):
    gen(20, 8, -1)
  with pytest.raises(ValueError, match="shorter than one window"):
    gen(6, 8, 2)
  with pytest.raises(ValueError, match=r"cond\['mel'\] covers 20 frames but the video has 24"):
    gen(24, 8, 2)
  with pytest.raises(KeyError, match="'mel' not in cond"):
    gen(20, 8, 2, {})
  with pytest.raises(ValueError, match="out of range"):
    extension.frame_mask(B, 4, [4])
