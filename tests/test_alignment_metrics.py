"""LSE-D / LSE-C / AV offset vs a float64 port of syncnet_python, and the shift test."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.alignment import metrics
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.models import sync_offsets
from gcm_jax.models import syncnet as sn


def syncnet_python_ref(video_emb, audio_emb, vshift):
  """float64 numpy transcription of syncnet_python's calc_pdist + evaluate."""
  v, a = np.float64(video_emb), np.float64(audio_emb)
  win = 2 * vshift + 1
  ap = np.pad(a, ((vshift, vshift), (0, 0)))
  dists = [np.linalg.norm(v[i][None] - ap[i:i + win] + 1e-6, axis=-1) for i in range(len(v))]
  mdist = np.mean(np.stack(dists, 1), 1)
  minidx = int(np.argmin(mdist))
  return {"lse_d": mdist[minidx], "lse_c": np.median(mdist) - mdist[minidx],
          "offset": vshift - minidx, "mdist": mdist, "dists": np.stack(dists)}


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sequence(n, d=16, seed=0):
  """Unit embeddings e[-20 .. n+20) of a synthetic 'phoneme' sequence."""
  return _unit(np.random.default_rng(seed).normal(size=(n + 40, d))).astype(np.float32)


@pytest.mark.parametrize("vshift", [15, 4])
def test_matches_syncnet_python_float64(vshift):
  rng = np.random.default_rng(1)
  v = rng.normal(size=(20, 8)).astype(np.float32)
  a = (v + rng.normal(size=(20, 8))).astype(np.float32)
  got = sync_offsets.sync_scores(jnp.asarray(v), jnp.asarray(a), vshift)
  want = syncnet_python_ref(v, a, vshift)
  np.testing.assert_allclose(sync_offsets.calc_pdist(jnp.asarray(v), jnp.asarray(a), vshift),
                             want["dists"], rtol=1e-5, atol=1e-5)
  for name in ("lse_d", "lse_c", "mdist"):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
  assert int(got["offset"]) == want["offset"]


@pytest.mark.parametrize("k", [-7, -3, -1, 0, 1, 2, 5, 15])
def test_delaying_audio_by_k_frames_lowers_offset_by_k(k):
  """Oracle embeddings: video window i and audio window i embed the same 'phoneme' e[i]."""
  n = 40
  e = _sequence(n)
  video_emb = e[20:20 + n]
  audio_emb = e[20 - k:20 - k + n]  # audio delayed by k: audio window t holds e[t - k]
  got = sync_offsets.sync_scores(jnp.asarray(video_emb), jnp.asarray(audio_emb))
  want = syncnet_python_ref(video_emb, audio_emb, sync_offsets.VSHIFT)
  assert int(got["offset"]) == want["offset"] == -k
  assert float(got["lse_c"]) > 0.5  # a clear minimum


class _OracleSync(nn.Module):
  """SyncNet stand-in whose embeddings are exact: each frame / mel window carries codes.

  Video embedding of a 5-frame window = the per-frame codes (pixel means); audio embedding =
  the first 5 mel rows, which the test fills with the codes of frames t-2 .. t+2.
  """

  @nn.compact
  def __call__(self, frames, mel):
    return jnp.mean(frames, axis=(2, 3, 4)), mel[:, :5, 0]


@pytest.mark.parametrize("k", [-4, -1, 0, 2, 3])
def test_delaying_mel_windows_by_k_lowers_lse_offset_by_k(k):
  """End to end through `lse_metrics` (windowing, audio_frame_offset=2) and
  `shift_mel_windows`: delaying the audio by k frames moves the offset by -k."""
  b, t, h, w = 2, 30, 8, 8
  codes = np.random.default_rng(0).normal(size=(b, t)).astype(np.float32)
  video = np.broadcast_to(codes[:, :, None, None, None], (b, t, h, w, 3))
  padded = np.pad(codes, ((0, 0), (2, 2)))
  mel = np.zeros((b, t, 16, 80), np.float32)
  for i in range(5):
    mel[:, :, i, :] = padded[:, i:i + t, None]  # window of frame t: codes of t-2 .. t+2
  mel = jnp.asarray(mel)
  shifted = sync_offsets.shift_mel_windows(mel, k)
  np.testing.assert_array_equal(shifted[:, max(k, 0):t + min(k, 0)],
                                mel[:, max(-k, 0):t - max(k, 0)])
  assert np.all(np.asarray(shifted[:, :max(k, 0)]) == -4.0)
  aligned = sync_offsets.lse_metrics(_OracleSync(), {}, jnp.asarray(video), mel)
  np.testing.assert_array_equal(aligned["offset"], 0)
  # Exact match: only torch's eps (sqrt(5) * 1e-6) and float32 rounding of the pixel means,
  # each off by up to a few eps * |code| from the mel code it meets (5 components).
  rounding = 4 * np.sqrt(5) * np.finfo(np.float32).eps * np.abs(codes).max()
  np.testing.assert_allclose(aligned["mdist"][:, sync_offsets.VSHIFT], np.sqrt(5) * 1e-6,
                             atol=rounding, rtol=0)
  got = sync_offsets.lse_metrics(_OracleSync(), {}, jnp.asarray(video), shifted)
  np.testing.assert_array_equal(got["offset"], -k)


def test_lse_metrics_batched_equals_per_clip_reference():
  b, t, h, w = 2, 12, 16, 16
  rng = np.random.default_rng(2)
  video = jnp.asarray(rng.uniform(-1, 1, (b, t, h, w, 3)).astype(np.float32))
  mel = jnp.asarray(rng.uniform(-4, 4, (b, t, 16, 80)).astype(np.float32))
  net = sn.SyncNet(image_size=(h, w), embed_dim=8, visual_widths=(8,), audio_widths=(8,))
  params = net.init(jax.random.PRNGKey(1), jnp.zeros((1, 5, h // 2, w, 3)), jnp.zeros((1, 16, 80)))
  got = jax.jit(lambda p, v, m: sync_offsets.lse_metrics(net, p, v, m, vshift=3))(params, video, mel)
  for i in range(b):
    frames = np.stack([np.asarray(video[i, s:s + 5, h // 2:]) for s in range(t - 5)])
    v, a = net.apply(params, jnp.asarray(frames), mel[i, 2:t - 3])
    want = syncnet_python_ref(v, a, 3)
    np.testing.assert_allclose(got["lse_d"][i], want["lse_d"], rtol=1e-5)
    np.testing.assert_allclose(got["lse_c"][i], want["lse_c"], rtol=1e-4, atol=1e-6)
    assert int(got["offset"][i]) == want["offset"]
  with pytest.raises(ValueError, match="T >= 6"):
    sync_offsets.lse_metrics(net, params, video[:, :5], mel[:, :5])


def _pairs_at_angles(degrees, dim=8, seed=0):
  """Unit pairs (u_i, w_i) with angle(u_i, w_i) = degrees[i], in random orientations."""
  rng = np.random.default_rng(seed)
  u, w = [], []
  for angle in np.deg2rad(np.asarray(degrees, np.float64)):
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 2)))  # Two random orthonormal directions.
    u.append(basis[:, 0])
    w.append(np.cos(angle) * basis[:, 0] + np.sin(angle) * basis[:, 1])
  return jnp.asarray(np.stack(u), jnp.float32), jnp.asarray(np.stack(w), jnp.float32)


def test_sync_accuracy_counts_pairs_built_to_be_right_or_wrong():
  # cos:  1.00  0.77  0.53  0.47  -0.17  -1.00  0.87  0.26
  video, audio = _pairs_at_angles([0, 40, 58, 62, 100, 180, 30, 75])
  label = jnp.array([1, 1, 0, 0, 1, 0, 1, 1])
  # threshold 0.5: predicted in sync 1 1 1 0 0 0 1 0 -> pairs 0, 1, 3, 5, 6 right: 5 of 8.
  np.testing.assert_allclose(metrics.sync_accuracy(video, audio, label), 5 / 8)
  # threshold 0.6: predicted 1 1 0 0 0 0 1 0 -> pair 2 becomes right: 6 of 8.
  np.testing.assert_allclose(metrics.sync_accuracy(video, audio, label, threshold=0.6), 6 / 8)
  # threshold -0.5: only the opposite pair is predicted off sync -> 0, 1, 4, 5, 6, 7 right.
  np.testing.assert_allclose(metrics.sync_accuracy(video, audio, label, threshold=-0.5), 6 / 8)
  np.testing.assert_allclose(metrics.sync_accuracy(video, audio, 1 - label), 3 / 8)
  np.testing.assert_allclose(metrics.sync_accuracy(video, video, jnp.ones(8)), 1.0)


def test_text_video_score_is_100_times_the_clipped_cosine():
  text, video = _pairs_at_angles([0, 60, 90 + 30, 180])
  scale = jnp.array([[0.5], [3.0], [1.0], [2.0]])  # The score ignores the norms.
  np.testing.assert_allclose(metrics.text_video_score(text * scale, video / scale),
                             [100.0, 50.0, 0.0, 0.0], rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def rendered_clips():
  """Ground-truth synthetic clips (32 px, 25 frames) from the talking-faces generator."""
  from gcm_jax.data.talking_faces import captions, corpus, generate_example
  rng = np.random.default_rng(0)
  clips = [generate_example(corpus.TRAIN_PHRASES[i], captions.sample_attributes(rng),
                            voice=corpus.TRAIN_VOICES[i % 3], resolution=32, num_frames=25, seed=i)
           for i in range(6)]
  video = np.stack([c.video for c in clips]).astype(np.float32) / 127.5 - 1
  return jnp.asarray(video), jnp.asarray(np.stack([c.mouth_open for c in clips]))


def test_oracle_metric_on_ground_truth_and_time_shifted_frames(rendered_clips):
  video, mouth_open = rendered_clips
  gt = ground_truth.oracle_lipsync(video, mouth_open)
  assert float(jnp.mean(gt["mouth_corr"])) > 0.9
  assert float(jnp.mean(gt["mouth_mae"])) < 0.12
  # Frames 3 steps late vs the audio's mouth track: agreement drops.
  late = ground_truth.oracle_lipsync(video[:, 3:], mouth_open[:, :-3])
  assert float(jnp.mean(late["mouth_corr"])) < float(jnp.mean(gt["mouth_corr"])) - 0.3
  # Pearson correlation vs the float64 reference on the same areas.
  area = np.float64(ground_truth.mouth_area(video))
  want = [np.corrcoef(a, m)[0, 1] for a, m in zip(area, np.float64(mouth_open))]
  np.testing.assert_allclose(gt["mouth_corr"], want, rtol=1e-4, atol=1e-5)
  still = ground_truth.oracle_lipsync(jnp.repeat(video[:, :1], 25, axis=1), mouth_open)
  np.testing.assert_array_equal(still["mouth_corr"], 0.0)  # constant mouth: defined as 0
  with pytest.raises(ValueError, match="mouth_open must be"):
    ground_truth.oracle_lipsync(video, mouth_open[:, :5])
