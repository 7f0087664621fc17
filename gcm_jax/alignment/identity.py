"""Identity metrics of a run of a given person (`model.reference_frames`,
`model.masked_source`), without a network and with ArcFace (docs/alignment.md,
"Evaluation"): how much of the person the generated videos keep.

* Preservation (dubbing): masked PSNR / SSIM (`image_quality`) outside the dubbing mask of
  the generated frames vs the source frames, in pixels before any paste-back; a latent run's
  ceiling is its autoencoder's own reconstruction of the same region. With a dataset that
  can tell (`contract.GroundTruth.structure_kept`), the fraction of frames that kept the
  source's eyes and head outline (`structure_rows`), which a pixel average can miss.
* Vs the reference (portrait): the upper face of each generated frame vs each reference frame.
* CSIM: the cosine similarity of ArcFace embeddings, the identity similarity papers report.
"""
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcm_jax import image_quality
from gcm_jax import latents
from gcm_jax.data import contract
from gcm_jax.models.pretrained import arcface


def identity_region(config: ml_collections.ConfigDict, clips: Mapping[str, np.ndarray]
                    ) -> tuple[np.ndarray, str]:
  """bool `[N, T, R, R]`: per frame, the region the person's identity rows compare, with its
  description: outside the dubbing mask (the clips' 'source_mask', the dataset's derived
  mask) or, where the dataset makes none, the upper half (`contract.lower_half`'s
  complement)."""
  if "source_mask" in clips:
    return ~np.asarray(clips["source_mask"], bool), "outside the dubbing mask (source_mask)"
  r = config.data.resolution
  return (~np.stack([contract.lower_half({"video": v}, r) for v in clips["video"]]),
          "the upper half of the frame (outside contract.lower_half)")


@jax.jit
def _region_scores(a: jax.Array, b: jax.Array, region: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  return (image_quality.psnr(a, b, mask=region), image_quality.ssim(a, b, mask=region))


def _mean(values: Sequence[np.ndarray]) -> Optional[float]:
  """Mean of the finite values (SSIM is NaN for a frame whose region holds no 11x11 window);
  None if there are none."""
  values = np.concatenate([np.ravel(v) for v in values])
  values = values[np.isfinite(values)]
  return float(np.mean(values)) if len(values) else None


def _frame_scores(videos: np.ndarray, targets: np.ndarray, region: np.ndarray
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Per clip, the masked PSNR and SSIM `[T]` of its frames vs the targets' same frames."""
  psnr, ssim = [], []
  for v, g, m in zip(videos, targets, region):  # One clip at a time: one compilation.
    p, q = _region_scores(jnp.asarray(v), jnp.asarray(g), jnp.asarray(m))
    psnr.append(np.asarray(p))
    ssim.append(np.asarray(q))
  return psnr, ssim


def region_quality(videos: np.ndarray, targets: np.ndarray, region: np.ndarray
                   ) -> dict[str, Optional[float]]:
  """Mean PSNR (dB) and SSIM (`image_quality`, masked) over the frames of videos
  `[N, T, R, R, 3]` vs the same frames of targets `[N, T, R, R, 3]`, inside `region` bool
  `[N, T, R, R]`."""
  psnr, ssim = _frame_scores(np.asarray(videos), np.asarray(targets), np.asarray(region))
  return {"psnr": _mean(psnr), "ssim": _mean(ssim)}


def reference_quality(videos: np.ndarray, reference: np.ndarray, region: np.ndarray
                      ) -> dict[str, Optional[float]]:
  """`region_quality` of each frame of videos `[N, T, R, R, 3]` vs each of the clip's K
  reference frames `[N, K, R, R, 3]`, inside each video frame's `region` `[N, T, R, R]`;
  the mean over all T x K pairs."""
  videos, reference = np.asarray(videos), np.asarray(reference)
  psnr, ssim = [], []
  for k in range(reference.shape[1]):
    p, q = _frame_scores(videos, np.broadcast_to(reference[:, k:k + 1], videos.shape),
                         np.asarray(region))
    psnr += p
    ssim += q
  return {"psnr": _mean(psnr), "ssim": _mean(ssim)}


def other_person(identities: Sequence[str]) -> Optional[np.ndarray]:
  """int `[N]`: for each clip the next clip (cyclically) of another person, the floor of
  the vs-reference rows (what the same frames score against someone they are not); None
  when every clip is of one person."""
  identities = list(identities)
  n = len(identities)
  others = [next((j % n for j in range(i + 1, i + n) if identities[j % n] != identities[i]),
                 None) for i in range(n)]
  return None if None in others else np.array(others)


def reconstruction_ceiling(config: ml_collections.ConfigDict, video: np.ndarray,
                           region: np.ndarray, batch_size: int = 8
                           ) -> Optional[dict[str, Optional[float]]]:
  """A latent run's ceiling of preservation: `region_quality` of the autoencoder's own
  reconstruction of the clips `[N, T, R, R, 3]` (`latents.load`: encode, decode, clip), what
  the best latent sample could keep; None for a pixel run."""
  autoencoder = latents.load(config)
  if autoencoder is None:
    return None
  encode, to_pixels = jax.jit(autoencoder.encode), latents.to_pixels(config)
  recon = np.concatenate([np.asarray(to_pixels(encode(jnp.asarray(video[i:i + batch_size]))))
                          for i in range(0, len(video), batch_size)])
  return region_quality(recon, video, region)


StructureKept = Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]],
                         dict[str, np.ndarray]]


def structure_rows(structure_kept: StructureKept, clips: Mapping[str, np.ndarray],
                   rows: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
  """Per row of videos `[N, T, R, R, 3]`, the fraction of frames that kept the source clip's
  (`clips['video']`) eyes (`eyes_kept`), head outline (`outline_kept`) and both
  (`frames_kept`), as the dataset's `structure_kept` reads them (`contract.GroundTruth`)."""
  out = {}
  for name, videos in rows.items():
    kept = structure_kept(np.asarray(videos), np.asarray(clips["video"]), clips)
    eyes, outline = np.asarray(kept["eyes"], bool), np.asarray(kept["outline"], bool)
    out[name] = {"eyes_kept": float(np.mean(eyes)), "outline_kept": float(np.mean(outline)),
                 "frames_kept": float(np.mean(eyes & outline))}
  return out


def identity_rows(config: ml_collections.ConfigDict, clips: Mapping[str, np.ndarray],
                  videos: np.ndarray, revoiced: Optional[np.ndarray] = None,
                  no_caption: Optional[np.ndarray] = None,
                  structure_kept: Optional[StructureKept] = None) -> dict[str, Any]:
  """The identity rows without a network (docs/alignment.md, "Evaluation") of the videos
  `[N, T, R, R, 3]` generated for the test clips, those re-voiced with another clip's audio
  (`revoiced`, dubbing runs) and those generated without the caption (`no_caption`):

  * `vs_reference` (reference runs): `reference_quality` of the upper face (`identity_region`)
    of each generated frame vs each reference frame, rows `generated`,
    `generated_no_caption` (if given) and the ceiling
    `ground_truth` (the real clip's frames vs the same reference frames); with the clips'
    people (`clips['identity']`, two or more), the floors `ground_truth_other_person` and
    `generated_other_person`: the same frames vs the reference of another person's clip
    (`other_person`). The person is kept where `generated` is above its floor as
    `ground_truth` is above its own.
  * `preservation` (dubbing runs): `region_quality` outside the dubbing mask of the generated
    videos vs the source clip, in pixels before any paste-back: `own_audio` (the clip's own
    audio), `revoiced` (if given); the ceiling `autoencoder_ceiling` for a latent
    run (`reconstruction_ceiling`), `ceiling_note` says which. With `structure_kept` (the
    dataset's `contract.GroundTruth.structure_kept`) the rows also get `structure_rows`'
    `eyes_kept`, `outline_kept`, `frames_kept`, and the row `ground_truth` (the source vs
    itself: 1.0 where the read-out is sound) has them too.
  """
  region, where = identity_region(config, clips)
  out: dict[str, Any] = {"region": where}
  if config.model.get("reference_frames", 0):
    rows = {"ground_truth": clips["video"], "generated": videos}
    if no_caption is not None:
      rows["generated_no_caption"] = no_caption
    out["vs_reference"] = {name: reference_quality(v, clips["reference"], region)
                           for name, v in rows.items()}
    others = other_person(clips["identity"]) if "identity" in clips else None
    if others is not None:
      for name in ("ground_truth", "generated"):
        out["vs_reference"][f"{name}_other_person"] = reference_quality(
            rows[name], np.asarray(clips["reference"])[others], region)
  if config.model.get("masked_source", False):
    rows = {"own_audio": videos}
    if revoiced is not None:
      rows["revoiced"] = revoiced
    preservation = {name: region_quality(v, clips["video"], region) for name, v in rows.items()}
    if structure_kept is not None:
      kept = structure_rows(structure_kept, clips, {"ground_truth": clips["video"], **rows})
      preservation = {name: {**preservation.get(name, {}), **row} for name, row in kept.items()}
    ceiling = reconstruction_ceiling(config, np.asarray(clips["video"]), region)
    if ceiling is None:
      preservation["ceiling_note"] = "pixel run: no reconstruction ceiling"
    else:
      preservation["autoencoder_ceiling"] = ceiling
      preservation["ceiling_note"] = (
          f"latent run: the autoencoder's reconstruction of the source "
          f"({latents.load(config).identity}) is the ceiling")
    out["preservation"] = preservation
  return out


ARCFACE_BATCH = 64


def arcface_embeddings(module: arcface.IResNet, variables: Any, frames: np.ndarray
                       ) -> np.ndarray:
  """Unit ArcFace embeddings `[..., D]` of square face crops `[..., R, R, 3]` in [-1, 1]
  (`arcface.prepare_faces`: resized to 112 x 112, bilinear; `arcface.embed`), in batches of
  `ARCFACE_BATCH` (the last one padded: one compilation)."""
  frames = np.asarray(frames, np.float32)
  flat = frames.reshape((-1,) + frames.shape[-3:])
  size = min(ARCFACE_BATCH, len(flat))
  out = []
  for start in range(0, len(flat), size):
    batch = flat[start:start + size]
    padded = np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:],
                                             batch.dtype)])
    faces = arcface.prepare_faces(jnp.asarray(padded))
    out.append(np.asarray(arcface.embed(module, variables, faces))[:len(batch)])
  return np.concatenate(out).reshape(frames.shape[:-3] + (-1,))


def csim_rows(module: arcface.IResNet, variables: Any, config: ml_collections.ConfigDict,
              clips: Mapping[str, np.ndarray], videos: np.ndarray,
              revoiced: Optional[np.ndarray] = None, no_caption: Optional[np.ndarray] = None
              ) -> dict[str, Any]:
  """CSIM, the cosine similarity of ArcFace embeddings (`arcface_embeddings`), as `csim` in
  the rows of `identity_rows`: each generated frame vs each reference frame (`vs_reference`,
  reference runs), each generated frame vs the same source frame (`preservation`, dubbing
  runs); the ground-truth rows embed the real frames the same way (vs the source: 1 by
  construction)."""
  embed = functools.partial(arcface_embeddings, module, variables)
  real = embed(clips["video"])                                            # [N, T, D]
  out: dict[str, Any] = {}
  if config.model.get("reference_frames", 0):
    reference = embed(clips["reference"])                                 # [N, K, D]
    vs_reference = lambda e: float(np.mean(np.einsum("ntd,nkd->ntk", e, reference)))
    rows = {"ground_truth": real, "generated": embed(videos)}
    if no_caption is not None:
      rows["generated_no_caption"] = embed(no_caption)
    out["vs_reference"] = {name: {"csim": vs_reference(e)} for name, e in rows.items()}
  if config.model.get("masked_source", False):
    vs_source = lambda e: float(np.mean(np.sum(e * real, axis=-1)))
    rows = {"ground_truth": real, "own_audio": embed(videos)}
    if revoiced is not None:
      rows["revoiced"] = embed(revoiced)
    out["preservation"] = {name: {"csim": vs_source(e)} for name, e in rows.items()}
  return out
