"""SyncNet towers, window cutting and the lip-sync loss (jit, gradients, float64 reference)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gcm_jax.alignment import sync_loss
from gcm_jax.models import syncnet as sn
from tests import train_utils


B, T, H, W = 2, 8, 32, 32
SMALL = sn.SyncNet(image_size=(H, W), embed_dim=16, visual_widths=(8, 16), audio_widths=(8, 16))


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  video = rng.uniform(-1, 1, (B, T, H, W, 3)).astype(np.float32)
  mel = rng.uniform(-4, 4, (B, T, 16, 80)).astype(np.float32)
  params = SMALL.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, H // 2, W, 3)),
                      jnp.zeros((1, 16, 80)))
  return jnp.asarray(video), jnp.asarray(mel), params


def test_towers_output_unit_nonnegative_embeddings(setup):
  video, mel, params = setup
  frames, mel_win = sn.sync_windows(video, mel, jnp.array([0, 3]), audio_frame_offset=2)
  assert frames.shape == (B, 5, H // 2, W, 3) and mel_win.shape == (B, 16, 80)
  v, a = SMALL.apply(params, frames, mel_win)
  assert v.shape == a.shape == (B, 16)
  np.testing.assert_allclose(jnp.linalg.norm(v, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(a, axis=-1), 1.0, rtol=1e-5)
  assert np.all(v >= 0) and np.all(a >= 0)  # ReLU before normalization: cos in [0, 1]


def test_sync_windows_cut_the_right_frames(setup):
  video, mel, _ = setup
  frames, mel_win = sn.sync_windows(video, mel, jnp.array([1, 3]), audio_frame_offset=2)
  np.testing.assert_array_equal(frames[0], video[0, 1:6, H // 2:])
  np.testing.assert_array_equal(frames[1], video[1, 3:8, H // 2:])
  np.testing.assert_array_equal(mel_win[0], mel[0, 3])
  np.testing.assert_array_equal(mel_win[1], mel[1, 5])


def test_shape_errors(setup):
  video, mel, params = setup
  with pytest.raises(ValueError, match="mel must be"):
    sn.check_video_mel(video, mel[:, :, :8])
  with pytest.raises(ValueError, match="at least 5"):
    sn.check_video_mel(video[:, :4], mel[:, :4])
  with pytest.raises(ValueError, match="frames must be"):
    SMALL.apply(params, video[:, :4, H // 2:], method=sn.SyncNet.embed_video)


def test_sync_bce_matches_float64_reference():
  cos = np.array([1e-9, 0.1, 0.5, 0.9, 1.0], np.float32)
  for label in (0.0, 1.0):
    p = np.clip(np.float64(cos), 1e-7, np.float32(1 - 1e-7))  # the clip bound in float32
    want = -(label * np.log(p) + (1 - label) * np.log(1 - p))
    np.testing.assert_allclose(sync_loss.sync_bce(jnp.asarray(cos), label), want, rtol=1e-5)


def test_lipsync_loss_reference_jit_and_gradients(setup):
  video, mel, params = setup
  key = jax.random.PRNGKey(3)
  weight = jnp.array([0.3, 1.7])
  loss_fn = jax.jit(functools.partial(sync_loss.lipsync_loss, SMALL, audio_frame_offset=2))
  loss = loss_fn(params, video, mel, key, weight)
  # Reference: same windows, cosine and BCE in float64.
  starts = jax.random.randint(key, (B,), 0, T - 4)
  frames, mel_win = sn.sync_windows(video, mel, starts, 2)
  v, a = SMALL.apply(params, frames, mel_win)
  cos = np.sum(np.float64(v) * np.float64(a), -1)
  want = np.mean(np.float64(weight) * -np.log(np.clip(cos, 1e-7, 1)))
  np.testing.assert_allclose(loss, want, rtol=1e-5)

  g_params, g_video = jax.grad(loss_fn, argnums=(0, 1))(params, video, mel, key, weight)
  assert all(np.all(x == 0) for x in jax.tree.leaves(g_params))  # SyncNet is frozen.
  g = np.asarray(g_video)
  assert np.abs(g).sum() > 0
  # Only the lower half of the chosen 5 frames gets gradient.
  for b, s in enumerate(np.asarray(starts)):
    outside = np.ones(T, bool)
    outside[s:s + 5] = False
    assert np.all(g[b, outside] == 0) and np.all(g[b, :, :H // 2] == 0)

  # Weight scales the loss linearly; the window depends only on the key.
  np.testing.assert_allclose(loss_fn(params, video, mel, key, 2 * weight), 2 * loss, rtol=1e-6)


def test_lipsync_loss_resizes_other_resolutions(setup):
  video, mel, params = setup
  big = jax.image.resize(video, (B, T, 2 * H, 2 * W, 3), "nearest")
  key = jax.random.PRNGKey(0)
  loss_big = sync_loss.lipsync_loss(SMALL, params, big, mel, key)
  assert np.isfinite(loss_big) and loss_big > 0


def test_noise_level_weight_and_schedule_match_reference():
  log_snr = np.linspace(-8, 8, 9).astype(np.float32)
  snr = np.exp(np.float64(log_snr))
  np.testing.assert_allclose(sync_loss.noise_level_weight(jnp.asarray(log_snr)), snr / (1 + snr),
                             rtol=1e-5)
  np.testing.assert_allclose(sync_loss.noise_level_weight(jnp.asarray(log_snr), "min_snr", 5.0),
                             np.minimum(snr, 5) / 5, rtol=1e-5)
  np.testing.assert_array_equal(sync_loss.noise_level_weight(jnp.asarray(log_snr), "none"), 1.0)
  steps = jnp.array([0, 99, 100, 150, 200, 1000])
  np.testing.assert_allclose(sync_loss.lipsync_weight_schedule(steps, 0.1, 100, 100),
                             [0, 0, 0, 0.05, 0.1, 0.1], rtol=1e-6)
  np.testing.assert_allclose(sync_loss.lipsync_weight_schedule(steps, 0.1, 100, 0),
                             [0, 0, 0.1, 0.1, 0.1, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="kind"):
    sync_loss.noise_level_weight(jnp.asarray(log_snr), "edm")


def test_lipsync_loss_on_batch_sharded_global_arrays(setup):
  """Inside a jitted train step the batch is sharded over the data axes: same value."""
  video, mel, params = setup
  video, mel = jnp.tile(video, (4, 1, 1, 1, 1)), jnp.tile(mel, (4, 1, 1, 1))  # B = 8
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  shard = NamedSharding(mesh, P(("data", "fsdp")))
  loss_fn = jax.jit(functools.partial(sync_loss.lipsync_loss, SMALL))
  key = jax.random.PRNGKey(1)
  want = loss_fn(params, video, mel, key)
  got = loss_fn(params, jax.device_put(video, shard), jax.device_put(mel, shard), key)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_to_image_size_of_a_64px_render_is_close_to_the_32px_render():
  """A 32-px SyncNet judging 64-px videos sees them downsampled: the talking faces rendered
  at 64 px and downsampled differ from the 32-px render of the same clips by a few levels."""
  clips = {r: train_utils.talking_faces_clips("test", 2, 4, r, "center", 96, seed=3,
                                              keys=("video",))["video"] for r in (32, 64)}
  down = np.asarray(sn.to_image_size(jnp.asarray(clips[64]), (32, 32)))
  assert down.shape == clips[32].shape
  error = np.abs(down - clips[32]).mean()
  assert error < 0.03, error  # [-1, 1] units: < 4 of 255 levels on average (measured 1.4)
  assert np.abs(clips[32][::-1] - clips[32]).mean() > 10 * error  # other clips: far off
