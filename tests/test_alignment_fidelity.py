"""Fidelity measures (gcm_jax/alignment/fidelity.py) on inputs with known answers, the Frechet
distance against an independent float64 scipy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg
from scipy import ndimage
from scipy import special

from gcm_jax.alignment import fidelity
from gcm_jax.models import syncnet as syncnet_lib
from tests import train_utils


@pytest.fixture(scope="module")
def faces():
  """4 ground-truth test clips, 8 frames of 64 x 64, in [-1, 1]."""
  return train_utils.talking_faces_clips("test", 4, 8, 64, "center", 160, seed=5, keys=("video",))[
      "video"].astype(np.float64)


def _pixel_features(video):
  """A cheap stand-in featurizer `[N, T, H, W, C] -> [N, T-4, 6]`: per channel, the mean and
  the mean |horizontal gradient| over each 5-frame window."""
  idx = np.arange(video.shape[1] - 4)[:, None] + np.arange(5)
  windows = video[:, idx]
  gradient = np.abs(np.diff(windows, axis=4)).mean(axis=(2, 3, 4))
  return np.concatenate([windows.mean(axis=(2, 3, 4)), gradient], axis=-1)


def test_laplacian_is_scipy_ndimage_laplace_on_the_interior():
  video = np.random.default_rng(0).normal(size=(2, 3, 7, 9, 3))
  expected = np.stack([np.stack([np.stack([ndimage.laplace(frame[..., c])[1:-1, 1:-1]
                                           for c in range(3)], axis=-1) for frame in clip])
                       for clip in video])
  np.testing.assert_allclose(fidelity.laplacian(video), expected, rtol=1e-12, atol=1e-12)
  ramp = np.broadcast_to(np.arange(6.0)[None, :, None] + 2 * np.arange(5.0)[:, None, None],
                         (1, 2, 5, 6, 3))
  assert fidelity.laplacian_abs(ramp) == 0.0  # linear images have no curvature


def test_a_clip_against_itself(faces):
  features = _pixel_features(faces)
  row = fidelity.compare(faces, faces, features, features)
  assert row["hf_ratio"] == 1.0 and row["hf_energy_ratio"] == 1.0 and row["flicker_ratio"] == 1.0
  assert row["syncnet_fd_window"] == pytest.approx(0.0, abs=1e-9)
  assert row["syncnet_fd_clip"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("s", [0.02, 0.1])
def test_white_noise_raises_the_high_frequency_measures_as_derived(faces, s):
  """Noise n of std s: L(x + n) = L(x) + L(n), L(n) ~ N(0, 20 s^2) per pixel (weights 4, -1 x 4)
  and independent of x, so the mean L^2 rises by 20 s^2 and |L| follows a folded normal."""
  noisy = faces + np.random.default_rng(1).normal(0.0, s, faces.shape)
  clean_energy = fidelity.laplacian_energy(faces)
  assert fidelity.laplacian_energy(noisy) - clean_energy == pytest.approx(20 * s * s, rel=0.02)
  assert fidelity.ratio(fidelity.laplacian_energy(noisy), clean_energy) == pytest.approx(
      1 + 20 * s * s / clean_energy, rel=0.01)
  mu, sigma = fidelity.laplacian(faces), np.sqrt(20.0) * s
  folded = (sigma * np.sqrt(2 / np.pi) * np.exp(-mu**2 / (2 * sigma**2))
            + mu * special.erf(mu / (sigma * np.sqrt(2))))
  assert fidelity.laplacian_abs(noisy) == pytest.approx(np.mean(folded), rel=0.01)
  assert fidelity.laplacian_abs(noisy) > 1.2 * fidelity.laplacian_abs(faces)
  # On a flat image only the noise is left: E|N(0, 20 s^2)| = s sqrt(40 / pi).
  flat = np.random.default_rng(2).normal(0.0, s, faces.shape)
  assert fidelity.laplacian_abs(flat) == pytest.approx(s * np.sqrt(40 / np.pi), rel=0.01)


def test_flicker_of_static_and_flickering_clips(faces):
  frame_a, frame_b = faces[:, :1], faces[:, 1:2]
  static = np.repeat(frame_a, 8, axis=1)
  flickering = np.concatenate([frame_a, frame_b] * 4, axis=1)
  assert fidelity.flicker(static) == 0.0
  assert fidelity.ratio(fidelity.flicker(static), fidelity.flicker(static)) == 1.0
  np.testing.assert_allclose(fidelity.flicker(flickering), np.mean(np.abs(frame_b - frame_a)),
                             rtol=1e-12)
  assert fidelity.ratio(fidelity.flicker(flickering), fidelity.flicker(static)) == float("inf")
  # Brightness flicker: every other frame 0.1 brighter, |difference| 0.1 at every step.
  pulsing = static + 0.1 * (np.arange(8) % 2)[None, :, None, None, None]
  assert fidelity.flicker(pulsing) == pytest.approx(0.1, rel=1e-12)
  assert fidelity.ratio(fidelity.flicker(pulsing), fidelity.flicker(faces)) == pytest.approx(
      0.1 / fidelity.flicker(faces), rel=1e-12)
  assert fidelity.laplacian_abs(pulsing) == pytest.approx(fidelity.laplacian_abs(static))
  # New noise every frame: the difference of two draws is N(0, 2 s^2), E|.| = 2 s / sqrt(pi).
  s = 0.05
  rng = np.random.default_rng(3)
  assert fidelity.flicker(static + rng.normal(0, s, static.shape)) == pytest.approx(
      2 * s / np.sqrt(np.pi), rel=0.01)
  # The same noise in every frame: high-frequency energy up, no flicker.
  frozen = static + rng.normal(0, s, static[:, :1].shape)
  assert fidelity.flicker(frozen) == pytest.approx(0.0, abs=1e-12)
  assert fidelity.laplacian_abs(frozen) > fidelity.laplacian_abs(static)


def _scipy_fd(mu1, cov1, mu2, cov2):
  """pytorch-fid's formula with scipy.linalg.sqrtm, float64."""
  covmean = linalg.sqrtm(cov1 @ cov2)
  return float(np.sum((mu1 - mu2)**2) + np.trace(cov1) + np.trace(cov2)
               - 2 * np.trace(np.real(covmean)))


def test_frechet_distance_of_diagonal_gaussians_in_closed_form():
  rng = np.random.default_rng(4)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  s1, s2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(s1) - np.sqrt(s2))**2)
  got = fidelity.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  assert got == pytest.approx(expected, rel=1e-12)
  assert _scipy_fd(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("rank", [8, 3])
def test_frechet_distance_matches_scipy_sqrtm(rank):
  """Full covariances, invertible (rank 8) and singular (rank 3 of 8: fewer samples than
  feature dimensions, as the per-clip FD of 16 clips of 64 features)."""
  rng = np.random.default_rng(rank)
  a, b = rng.normal(size=(8, rank)), rng.normal(size=(8, rank))
  cov1, cov2 = a @ a.T, b @ b.T
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  got = fidelity.frechet_distance(mu1, cov1, mu2, cov2)
  assert got == pytest.approx(_scipy_fd(mu1, cov1, mu2, cov2), rel=1e-6)
  # tr sqrt(C1^1/2 C2 C1^1/2) takes the square root of eigenvalues computed to within
  # eps ||C1|| ||C2||; the n - rank null ones come out as +-that, so the trace (and the
  # distance) is only known to within n sqrt(eps ||C1|| ||C2||) (~3e-6 here for rank 3; the
  # two argument orders differed by 1e-7 on one machine) whatever the rank.
  floor = 8 * np.sqrt(np.finfo(np.float64).eps * np.linalg.norm(cov1, 2)
                      * np.linalg.norm(cov2, 2))
  assert got == pytest.approx(fidelity.frechet_distance(mu2, cov2, mu1, cov1), abs=2 * floor)
  assert fidelity.frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=2 * floor)


def test_feature_frechet_distance_of_shifted_and_scaled_samples():
  """Shifting by c adds |c|^2; scaling by k gives (1 - k)^2 (|mu|^2 + tr C) exactly."""
  f = np.random.default_rng(5).normal(size=(50, 4)) @ np.diag([1.0, 2.0, 0.5, 1.5]) + 0.3
  c = np.array([0.5, -1.0, 0.0, 2.0])
  mu, cov = fidelity.gaussian_stats(f)
  np.testing.assert_allclose(cov, np.cov(f.T), rtol=1e-12)
  assert fidelity.feature_frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
  assert fidelity.feature_frechet_distance(f, f + c) == pytest.approx(c @ c, rel=1e-9)
  assert fidelity.feature_frechet_distance(f, 3 * f) == pytest.approx(
      4 * (mu @ mu + np.trace(cov)), rel=1e-9)
  with pytest.raises(ValueError, match="M >= 2"):
    fidelity.gaussian_stats(f[:1])


def test_syncnet_features_are_the_pooled_last_stage_of_each_window():
  model = syncnet_lib.SyncNet(image_size=(32, 32), embed_dim=12, visual_widths=(8, 16),
                              audio_widths=(8, 16))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 16, 32, 3)),
                          jnp.zeros((1, 16, 80)))
  rng = np.random.default_rng(8)  # random values: an eager init takes seconds on CPU
  variables = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(s.dtype), shapes)
  video = np.random.default_rng(6).uniform(-1, 1, (2, 7, 32, 32, 3)).astype(np.float32)
  features = fidelity.syncnet_features(model, variables, video)
  assert features.shape == (2, 3, 16)
  # The tower's head on these features gives its embedding of window (clip 1, frames 2..6).
  dense = variables["params"]["visual"]["Dense_0"]
  head = np.maximum(features[1, 2] @ dense["kernel"] + dense["bias"], 0)
  embed = jax.jit(lambda v, x: model.apply(v, x, method=syncnet_lib.SyncNet.embed_video))
  embedding = embed(variables, syncnet_lib.lower_half(jnp.asarray(video[1:, 2:7])))[0]
  np.testing.assert_allclose(head / np.linalg.norm(head), embedding, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="T >= 5"):
    fidelity.syncnet_features(model, variables, video[:, :4])


def test_fidelity_report_rows(faces):
  report = fidelity.fidelity_report(faces, faces, _pixel_features)
  assert report["feature_network"] == fidelity.FD_LABEL
  assert "not comparable with published FID" in report["feature_network"]
  assert report["halves"] == [2, 2]
  # A perfect generator (here: the ground truth itself) scores the floor exactly.
  assert report["generated"] == report["ground_truth_floor"]
  assert report["laplacian_abs_255"]["generated"] == report["laplacian_abs_255"]["ground_truth"]
  noisy = faces + np.random.default_rng(7).normal(0, 0.1, faces.shape)
  report = fidelity.fidelity_report(noisy, faces, _pixel_features)
  floor, generated = report["ground_truth_floor"], report["generated"]
  for key in ("hf_ratio", "hf_energy_ratio", "flicker_ratio"):
    assert generated[key] > 1.5 * floor[key], key
  assert generated["syncnet_fd_window"] > floor["syncnet_fd_window"]
  assert report["laplacian_abs_255"]["generated"] > report["laplacian_abs_255"]["ground_truth"]
  assert report["flicker_255"]["generated"] > report["flicker_255"]["ground_truth"]
  with pytest.raises(ValueError, match=">= 4 clips"):
    fidelity.fidelity_report(faces[:3], faces[:3], _pixel_features)


def _steps_video(steps):
  """Clips [2, T, 4, 4, 3] whose every pixel changes by steps[t] from frame t to t+1."""
  values = np.concatenate([[0.0], np.cumsum(steps)])
  return np.broadcast_to(values[None, :, None, None, None], (2, len(values), 4, 4, 3))


def test_seam_ratio_reads_the_jump_at_the_seams():
  steps = np.full(11, 0.02)
  steps[[3, 7]] = 0.08  # Into frames 4 and 8.
  video = _steps_video(steps)
  assert fidelity.seam_ratio(video, [4, 8]) == pytest.approx(4.0)
  # Seams elsewhere: the jumps count in the reference, so the ratio drops below 1.
  rest = (0.02 * 7 + 0.08 * 2) / 9
  assert fidelity.seam_ratio(video, [2, 6]) == pytest.approx(0.02 / rest)
  # Uniform change: no seam.
  assert fidelity.seam_ratio(_steps_video(np.full(11, 0.05)), [4, 8]) == pytest.approx(1.0)
  for bad in ([], [0], [12], list(range(1, 12))):
    with pytest.raises(ValueError):
      fidelity.seam_ratio(video, bad)


def test_fidelity_report_adds_the_seam_ratio_of_each_row(faces):
  jumpy = faces.copy()
  jumpy[:, 5:] = np.roll(faces[:, 5:], 3, axis=3)  # The head jumps 3 px at frame 5.
  report = fidelity.fidelity_report(jumpy, faces, seams=[5])
  assert report["generated"]["seam_ratio"] > 2 * report["ground_truth_floor"]["seam_ratio"]
  assert report["ground_truth_floor"]["seam_ratio"] == pytest.approx(
      fidelity.seam_ratio(faces[:2], [5]))
  assert "seam_ratio" not in fidelity.fidelity_report(faces, faces)["generated"]


def test_patch_grid_energy_sees_a_texture_repeated_in_every_patch():
  """Smooth frames and their blur read about 1 (no peak on the 4x4 grid's frequencies); the
  same frames with a texture repeated in every 4x4 patch (what a patch-wise model's seams
  draw) read far above; a shift changes nothing and block-constant frames read about 0
  (float64 FFT reference: the mean power on the lines k = 8, 16, 24 of 32 over the mean
  power on k = 7, 9, 15, 17, 23, 25, both axes)."""
  rng = np.random.default_rng(0)
  noise = rng.normal(size=(1, 4, 32, 32, 3))
  smooth = ndimage.gaussian_filter(noise, (0, 0, 1.0, 1.0, 0))
  blurred = ndimage.gaussian_filter(noise, (0, 0, 2.0, 2.0, 0))
  texture = np.tile(rng.normal(0, 0.2, (4, 4)), (8, 8))[None, None, :, :, None]
  for frames in (smooth, blurred):
    assert 0.5 < fidelity.patch_grid_energy(frames, 4) < 2.0
  seams = fidelity.patch_grid_energy(smooth + texture, 4)
  assert seams > 10
  np.testing.assert_allclose(fidelity.patch_grid_energy(np.roll(smooth + texture, 3, axis=3), 4),
                             seams, rtol=1e-9)
  blocks = rng.normal(size=(1, 2, 8, 8, 3)).repeat(4, axis=2).repeat(4, axis=3)
  assert fidelity.patch_grid_energy(blocks, 4) < 1e-20
  grey = (smooth + texture)[..., :].mean(-1)
  power = np.abs(np.fft.fft2(grey - grey.mean(axis=(-2, -1), keepdims=True))) ** 2
  on, near = [8, 16, 24], [7, 15, 23, 9, 17, 25]
  want = ((power[..., on, :].mean() + power[..., :, on].mean())
          / (power[..., near, :].mean() + power[..., :, near].mean()))
  np.testing.assert_allclose(seams, want, rtol=1e-9)
  with pytest.raises(ValueError, match="patch must be >= 2, divide the frame size"):
    fidelity.patch_grid_energy(smooth, 5)
