"""What trained autoencoders keep of the talking faces: one table, one row per workdir.

For each `python -m gcm_jax.train.train_autoencoder` workdir, fresh held-out talking-faces
test clips at the autoencoder's training resolution (`pipeline.load_clips`: test-split
phrases and voices) are encoded (posterior mean) and decoded, and the reconstructions are
read like generated videos: PSNR against the clips, face / background color accuracy
(`talking_faces.ground_truth.color_accuracy`), the oracle mouth correlation with the clips'
own and with shuffled audio (`evaluate.mouth_correlation`; the ground truth's on the last row), the
high-frequency ratio (`fidelity.pixel_compare`) and the mean absolute error (0-255) on the
image border where the color read-out takes the background (`ground_truth.border_mask`) and
inside it (convolutions padded with zeros make borders the last thing an autoencoder
learns). A latent model cannot generate what its autoencoder loses: the mouth correlation
of the reconstructions bounds the latent recipe's (docs/results.md, "The latent CPU
recipe").

  python -m benchmarks.autoencoder_truth --workdirs=/tmp/latent_ae,/tmp/ae [--num_clips=16]
"""
import argparse
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np

from gcm_jax import evaluate
from gcm_jax import image_quality
from gcm_jax.alignment import fidelity
from gcm_jax.data import pipeline
from gcm_jax.data.talking_faces import dataset as talking_faces
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.models import trained_autoencoder
from gcm_jax.runs import directory
from gcm_jax.train import train_autoencoder


TRUTH_KEYS = ("video", "keypoints", "mouth_open", "face_color", "background_color")
BYTE_TEXT_LENGTH = 96  # the clips' caption tokens (unused here)


def border_errors(video: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Mean absolute error (0-255 scale) of `video` `[N, T, R, R, 3]` in [-1, 1] against
  `truth` on the background read-out's image border (`ground_truth.border_mask`,
  "border_error") and inside it ("inner_error")."""
  border = ground_truth.border_mask(video.shape[2])
  error = np.abs(np.asarray(video, np.float64) - truth) * 127.5
  return {"border_error": float(error[:, :, border].mean()),
          "inner_error": float(error[:, :, ~border].mean())}


def measure(video: np.ndarray, clips: dict[str, np.ndarray]) -> dict[str, float]:
  """The row of `video` `[N, T, R, R, 3]` read against `clips`' ground truth."""
  shuffled = np.roll(np.arange(len(video)), 1)
  row = {"psnr": float(jnp.mean(image_quality.psnr(jnp.asarray(video),
                                                   jnp.asarray(clips["video"]))))}
  row.update(ground_truth.color_accuracy(video, clips))
  row.update({f"mouth_{k}": v for k, v in
              evaluate.mouth_correlation(talking_faces.DATASET.truth, video, clips,
                                          shuffled).items()})
  row["hf_ratio"] = fidelity.pixel_compare(video, clips["video"])["hf_ratio"]
  row.update(border_errors(video, clips["video"]))
  return row


def resolution_of(workdir: str) -> int:
  """The data resolution the autoencoder in `workdir` was trained at (its config.json)."""
  with open(os.path.join(workdir, directory.CONFIG_FILE), encoding="utf-8") as f:
    return int(json.load(f)["data"]["resolution"])


def table(workdirs: list[str], num_clips: int, num_frames: int, seed: int) -> str:
  lines = ["| autoencoder | PSNR (dB) | face / bg color | mouth corr. matched / shuffled | "
           "high-freq. ratio | abs. error border / inside |", "|---|---|---|---|---|---|"]

  def add(name, row, psnr="{:.1f}"):
    lines.append(f"| {name} | {psnr.format(row['psnr'])} | "
                 f"{row['face']:.2f} / {row['background']:.2f} | "
                 f"{row['mouth_matched']:.2f} / {row['mouth_shuffled']:.2f} | "
                 f"{row['hf_ratio']:.2f} | "
                 f"{row['border_error']:.1f} / {row['inner_error']:.1f} |")
    print(lines[-1], flush=True)

  clips_by_resolution = {}
  for workdir in workdirs:
    r = resolution_of(workdir)
    if r not in clips_by_resolution:
      data = ml_collections.ConfigDict(dict(name="talking_faces", resolution=r,
                                            mel_alignment="center"))
      clips_by_resolution[r] = pipeline.load_clips(data, "test", num_clips, num_frames, seed,
                                                   TRUTH_KEYS, BYTE_TEXT_LENGTH)
    clips = clips_by_resolution[r]
    config, params = trained_autoencoder.load_trained_autoencoder(workdir)
    add(f"{workdir} ({r} px)", measure(np.asarray(train_autoencoder.reconstruct(
        config, params, jnp.asarray(clips["video"]))), clips))
  for r, clips in clips_by_resolution.items():
    add(f"ground truth ({r} px)", measure(clips["video"], clips), psnr="-")  # vs itself
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdirs", required=True, help="Comma-separated autoencoder workdirs.")
  parser.add_argument("--num_clips", type=int, default=16)
  parser.add_argument("--num_frames", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(f"{args.num_clips} held-out talking-faces clips of {args.num_frames} frames, "
        f"seed {args.seed}")
  print(table(args.workdirs.split(","), args.num_clips, args.num_frames, args.seed))


if __name__ == "__main__":
  main()
