"""Fidelity measures that need no downloaded weights: high-frequency energy, temporal flicker,
and a Frechet distance in the feature space of the project's own SyncNet.

Every measure reads videos `[N, T, H, W, C]` (any value range, the same for both sides; the
repo's videos are in [-1, 1]) and works on real videos as well as the synthetic talking faces.

* **High-frequency energy.** The 4-neighbour Laplacian
  `L[y, x] = v[y-1, x] + v[y+1, x] + v[y, x-1] + v[y, x+1] - 4 v[y, x]`, per frame and channel,
  on the interior pixels (no padding). `laplacian_abs` = mean |L|, `laplacian_energy` = mean
  L^2. White noise of std s added to every pixel adds exactly 20 s^2 to the expected energy
  (the Laplacian's weights squared sum to 16 + 4) and turns each |L| into a folded normal.
* **Flicker.** `flicker` = mean |v[t+1] - v[t]| over all pixels and consecutive frame pairs.
  Its ratio against ground truth assumes the reference moves at the speed the model learned;
  `seam_ratio` needs no reference: the frame change at the joins of a long video's windows
  over the change everywhere else.
* **Frechet distance** between Gaussians fitted to two feature sets,
  `|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2)` (FID's formula), here on
  the features of the frozen SyncNet video tower trained in this repo (`syncnet_features`).
  Not comparable with published FID / FVD (different network, different data).

`fidelity_report` compares generated clips with ground truth and gives the ground truth vs
ground truth floor (module docstring of `gcm_jax.evaluate`, docs/alignment.md).
"""
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax.models import syncnet as syncnet_lib


FD_LABEL = "SyncNet-feature FD, not comparable with published FID"
PIXEL_SCALE_255 = 127.5  # [-1, 1] video units -> 0-255 levels
FEATURE_BATCH = 256      # SyncNet windows per forward pass in `syncnet_features`


def _check_video(video: np.ndarray, min_frames: int = 1) -> np.ndarray:
  """float64 `[N, T, H, W, C]`, or ValueError."""
  video = np.asarray(video, np.float64)
  if video.ndim != 5 or video.shape[1] < min_frames or min(video.shape[2:4]) < 3:
    raise ValueError(f"video must be [N, T, H, W, C] with T >= {min_frames} and H, W >= 3, got "
                     f"{video.shape}")
  return video


def laplacian(video: np.ndarray) -> np.ndarray:
  """4-neighbour Laplacian of every frame and channel: `[N, T, H, W, C]` ->
  `[N, T, H-2, W-2, C]` float64 (interior pixels only, so no border padding enters)."""
  v = _check_video(video)
  return (v[:, :, :-2, 1:-1] + v[:, :, 2:, 1:-1] + v[:, :, 1:-1, :-2] + v[:, :, 1:-1, 2:]
          - 4.0 * v[:, :, 1:-1, 1:-1])


def laplacian_abs(video: np.ndarray) -> float:
  """Mean |4-neighbour Laplacian| of `video` `[N, T, H, W, C]` (in the video's units)."""
  return float(np.mean(np.abs(laplacian(video))))


def laplacian_energy(video: np.ndarray) -> float:
  """Mean squared 4-neighbour Laplacian of `video` `[N, T, H, W, C]`."""
  return float(np.mean(np.square(laplacian(video))))


def flicker(video: np.ndarray) -> float:
  """Mean |frame t+1 - frame t| of `video` `[N, T, H, W, C]` (T >= 2), over all pixels."""
  v = _check_video(video, min_frames=2)
  return float(np.mean(np.abs(np.diff(v, axis=1))))


def seam_ratio(video: np.ndarray, seams: Sequence[int]) -> float:
  """Mean |v[s] - v[s - 1]| over the `seams` s (frame indices, 1 <= s < T) / the same mean
  over every other consecutive pair, of `video` `[N, T, H, W, C]`: ~1 when a long video made
  from windows (`gcm_jax.diffusion.extension.seam_frames`) changes at the windows' joins as
  much as anywhere else, > 1 where a window jumps away from the frames it continues."""
  v = _check_video(video, min_frames=3)
  seams = np.unique(np.asarray(seams, int))
  t = v.shape[1]
  if seams.size == 0 or seams.min() < 1 or seams.max() >= t:
    raise ValueError(f"seams must be frame indices in [1, {t}), got {seams.tolist()}")
  if seams.size == t - 1:
    raise ValueError("every transition is a seam; there is nothing to compare with")
  diffs = np.mean(np.abs(np.diff(v, axis=1)), axis=(0, 2, 3, 4))  # [T - 1], into frame 1..T-1
  at_seam = np.isin(np.arange(1, t), seams)
  return ratio(float(diffs[at_seam].mean()), float(diffs[~at_seam].mean()))


def patch_grid_energy(video: np.ndarray, patch: int) -> float:
  """How much the frames' spatial spectrum peaks on the patch grid's frequencies.

  Per frame, the grey level (channel mean) minus its mean, `|FFT2|^2`. The grid lines are
  the rows / columns of the spectrum whose frequency is a nonzero multiple of H / patch
  (W / patch) cycles per frame, where a texture repeated in every `patch` x `patch` patch
  (the seams of a patch-wise model's unpatchify) puts all its energy; their neighbours are
  the lines one frequency step away. Returns the mean power on the grid lines over the mean
  power on their neighbours: about 1 for a smooth spectrum, whatever its slope (a blur
  lowers both), above 1 where a patch-periodic texture peaks, about 0 for block-constant
  frames (nearest upsampling has zeros there). Shift-invariant. `video` `[N, T, H, W, C]`,
  H and W multiples of `patch` >= 2, H / patch and W / patch >= 3 (so a neighbour is not on
  the grid)."""
  v = _check_video(video)
  h, w = v.shape[2:4]
  if patch < 2 or h % patch or w % patch or min(h, w) // patch < 3:
    raise ValueError(f"patch must be >= 2, divide the frame size and leave >= 3 patches per "
                     f"side, got {patch} for {h}x{w}")
  grey = v.mean(axis=-1)
  grey = grey - grey.mean(axis=(-2, -1), keepdims=True)
  power = np.abs(np.fft.fft2(grey)) ** 2                            # [N, T, H, W]

  def lines(n: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(n // patch, n, n // patch)
    return grid, np.concatenate([grid - 1, grid + 1])

  (gy, ny), (gx, nx) = lines(h), lines(w)
  on = power[..., gy, :].mean() + power[..., :, gx].mean()
  near = power[..., ny, :].mean() + power[..., :, nx].mean()
  return float(on / max(near, 1e-30))


def ratio(value: float, reference: float) -> float:
  """value / reference; 1 when both are 0, inf when only the reference is."""
  if reference == 0:
    return 1.0 if value == 0 else float("inf")
  return float(value / reference)


def gaussian_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64 of `features` `[M, D]` (M >= 2; the unbiased
  covariance, as pytorch-fid)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features must be [M, D] with M >= 2, got {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 from
  rounding are set to 0)."""
  w, v = np.linalg.eigh((matrix + matrix.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
  """Frechet distance of N(mu1, cov1) and N(mu2, cov2), in float64.

  `|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^1/2)`, with the last trace computed as the sum
  of the square roots of the eigenvalues of the symmetric PSD matrix C1^1/2 C2 C1^1/2 (the
  same eigenvalues as C1 C2): no complex parts and no failure for singular covariances
  (fewer samples than dimensions). Clipped at 0 (rounding).

  Args:
    mu1, mu2: [D] means; cov1, cov2: [D, D] symmetric PSD covariances.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
    raise ValueError(f"need mu [D] and cov [D, D] with one D, got {mu1.shape}, {cov1.shape}, "
                     f"{mu2.shape}, {cov2.shape}")
  s1 = _sqrt_psd(cov1)
  inner = s1 @ cov2 @ s1
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
  diff = mu1 - mu2
  return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt), 0.0)


def feature_frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
  """Frechet distance of Gaussians fitted to `features1` `[M1, D]` and `features2` `[M2, D]`."""
  return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def syncnet_features(syncnet: syncnet_lib.SyncNet, variables: Any,
                     video: np.ndarray) -> np.ndarray:
  """Features of every 5-frame window of `video` from the frozen SyncNet video tower.

  The windows are those the SyncNet sees (frames i..i+4, lower half of the frame,
  `syncnet.lower_half`), for i = 0 .. T-5; the feature is the tower's global average pool
  of its last conv stage (the input of its final Dense, as FID uses Inception's pool3), not
  the ReLU'd, unit-norm sync embedding.

  Args:
    syncnet: the SyncNet module; variables: its `{'params': ...}`.
    video: [N, T, H, W, 3] in [-1, 1] at the SyncNet's resolution, T >= 5.

  Returns:
    float32 [N, T-4, D], D = the last visual width.
  """
  video = np.asarray(video, np.float32)
  if video.ndim != 5 or video.shape[-1] != 3 or video.shape[1] < syncnet_lib.SYNC_FRAMES:
    raise ValueError(f"video must be [N, T, H, W, 3] with T >= {syncnet_lib.SYNC_FRAMES}, got "
                     f"{video.shape}")
  n, t = video.shape[:2]
  num = t - syncnet_lib.SYNC_FRAMES + 1
  idx = np.arange(num)[:, None] + np.arange(syncnet_lib.SYNC_FRAMES)[None, :]
  windows = syncnet_lib.lower_half(video[:, idx])  # [N, num, 5, H - H//2, W, 3]
  windows = windows.reshape(n * num, *windows.shape[2:])
  last = f"_ConvBlock_{len(syncnet.visual_widths) - 1}"

  def is_last_stage(module, method_name: str) -> bool:
    return method_name == "__call__" and tuple(module.path) == ("visual", last)

  @jax.jit
  def pooled(params, frames):
    _, state = syncnet.apply(params, frames, method=syncnet_lib.SyncNet.embed_video,
                             capture_intermediates=is_last_stage, mutable=["intermediates"])
    return jnp.mean(state["intermediates"]["visual"][last]["__call__"][0], axis=(1, 2))

  out = [np.asarray(pooled(variables, jnp.asarray(windows[i:i + FEATURE_BATCH])))
         for i in range(0, len(windows), FEATURE_BATCH)]
  return np.concatenate(out).reshape(n, num, -1)


def pixel_compare(video: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
  """Pixel-statistics fidelity of `video` against `reference` (both `[N, T, H, W, C]`, N may
  differ): hf_ratio (mean |Laplacian| of video / of reference), hf_energy_ratio (the same for
  the mean squared Laplacian), flicker_ratio (mean |frame difference| of video / of reference).
  """
  return {
      "hf_ratio": ratio(laplacian_abs(video), laplacian_abs(reference)),
      "hf_energy_ratio": ratio(laplacian_energy(video), laplacian_energy(reference)),
      "flicker_ratio": ratio(flicker(video), flicker(reference)),
  }


def feature_compare(video_features: np.ndarray, reference_features: np.ndarray
                    ) -> Dict[str, float]:
  """Frechet distances between `[N, W, D]` per-window features of two clip sets (e.g.
  `syncnet_features`; W windows per clip, N may differ): syncnet_fd_window over all windows
  (one sample per window), syncnet_fd_clip over clips (one sample per clip: its mean window
  feature)."""
  if video_features.ndim != 3 or reference_features.ndim != 3:
    raise ValueError(f"features must be [N, W, D], got {video_features.shape} and "
                     f"{reference_features.shape}")
  return {
      "syncnet_fd_window": feature_frechet_distance(
          video_features.reshape(-1, video_features.shape[-1]),
          reference_features.reshape(-1, reference_features.shape[-1])),
      "syncnet_fd_clip": feature_frechet_distance(video_features.mean(axis=1),
                                                  reference_features.mean(axis=1)),
  }


def compare(video: np.ndarray, reference: np.ndarray, video_features: np.ndarray,
            reference_features: np.ndarray) -> Dict[str, float]:
  """`pixel_compare` and `feature_compare` of `video` against `reference` in one row."""
  return {**pixel_compare(video, reference),
          **feature_compare(video_features, reference_features)}


def halves(n: int) -> Tuple[slice, slice]:
  """Halves A (the first n // 2 clips) and B (the rest) of the report's rows; n >= 4."""
  if n < 4:
    raise ValueError(f"the fidelity measures need >= 4 clips (two halves of >= 2), got {n}")
  return slice(0, n // 2), slice(n // 2, n)


def feature_report(generated_features: np.ndarray, ground_truth_features: np.ndarray
                   ) -> Dict[str, Any]:
  """The Frechet-distance part of `fidelity_report`'s rows from `[N, W, D]` features of the
  generated and the ground-truth clips: `{"feature_network", "generated": {...},
  "ground_truth_floor": {...}}` (`feature_compare` of half A vs half B)."""
  a, b = halves(len(ground_truth_features))
  return {"feature_network": FD_LABEL,
          "generated": feature_compare(generated_features[a], ground_truth_features[b]),
          "ground_truth_floor": feature_compare(ground_truth_features[a],
                                                ground_truth_features[b])}


def fidelity_report(generated: np.ndarray, ground_truth: np.ndarray,
                    featurize: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    seams: Sequence[int] = (), patch: Optional[int] = None) -> Dict[str, Any]:
  """Generated vs ground truth, and the ground truth vs ground truth floor.

  The N clips are split into halves A (first N // 2) and B (the rest). Row `generated`:
  the generated clips of A against the ground truth of B; row `ground_truth_floor`: the
  ground truth of A against the ground truth of B. Both rows compare the same conditions
  with the same sample sizes, so a generator that samples the data distribution scores the
  floor up to sampling noise (ratios ~1, FD ~ the floor's, which is > 0 from the finite
  samples). Also the absolute mean |Laplacian| and flicker of all N clips, in 0-255 levels.

  Args:
    generated, ground_truth: [N, T, H, W, C] in [-1, 1], clip i generated from clip i's
      conditions; N >= 4 (two clips per half for a covariance).
    featurize: `[n, T, H, W, C] -> [n, W, D]` per-window features (`syncnet_features`);
      None: the rows have the pixel measures only (no network, no Frechet distances).
    seams: the first frame of each later window of a long video (`extension.seam_frames`);
      if any, each row adds `seam_ratio` of its first clip set (generated A; ground truth A,
      whose frames have no windows: the floor).
    patch: the model's patch in pixels (a latent run's patch times its autoencoder's
      downsampling); if given, each row adds `patch_grid_ratio`, `patch_grid_energy` of its
      first clip set over the ground truth B's (1 = as much grid as the data).
  """
  generated, ground_truth = np.asarray(generated), np.asarray(ground_truth)
  if generated.shape != ground_truth.shape:
    raise ValueError(f"generated {generated.shape} and ground truth {ground_truth.shape} differ")
  a, b = halves(generated.shape[0])
  report = {
      "halves": [a.stop, b.stop - b.start],
      "generated": pixel_compare(generated[a], ground_truth[b]),
      "ground_truth_floor": pixel_compare(ground_truth[a], ground_truth[b]),
      "laplacian_abs_255": {"generated": PIXEL_SCALE_255 * laplacian_abs(generated),
                            "ground_truth": PIXEL_SCALE_255 * laplacian_abs(ground_truth)},
      "flicker_255": {"generated": PIXEL_SCALE_255 * flicker(generated),
                      "ground_truth": PIXEL_SCALE_255 * flicker(ground_truth)},
  }
  if patch is not None:
    real = patch_grid_energy(ground_truth[b], patch)
    for row, video in (("generated", generated[a]), ("ground_truth_floor", ground_truth[a])):
      report[row]["patch_grid_ratio"] = ratio(patch_grid_energy(video, patch), real)
  if len(seams):
    report["generated"]["seam_ratio"] = seam_ratio(generated[a], seams)
    report["ground_truth_floor"]["seam_ratio"] = seam_ratio(ground_truth[a], seams)
  if featurize is not None:
    features = feature_report(featurize(generated), featurize(ground_truth))
    report["feature_network"] = features["feature_network"]
    for row in ("generated", "ground_truth_floor"):
      report[row].update(features[row])
  return report
