"""Sampling settings vs fidelity and conditioning, for one trained run (one table).

For each variant (overrides of `config.sampling`, e.g. `text_scale=1,audio_scale=1` or
`sampler=euler,num_steps=50`) the same held-out talking-faces test clips are generated from
their captions and audio, and one row reports the fidelity ratios against the clips' ground
truth (`alignment.fidelity.pixel_compare`: high-frequency ratio, flicker ratio; 1 = as the
data), the window-seam ratio of clips longer than the training length
(`fidelity.seam_ratio`), the face / background color accuracy and the oracle mouth
correlation with the matched and with shuffled audio (the dataset's ground truth,
`evaluate.truth_of`, and `evaluate.mouth_correlation`), the patch-grid ratio
(`fidelity.patch_grid_energy`, generated / ground truth) and, where the ground truth reads
a face's structure, the fraction of frames with eyes and the head-outline IoU
(`evaluate.structure_summary`). Rows of one table share the model,
the clips and the seed, so they isolate the sampler's part in the generated videos' noise
(docs/results.md, "Where the sample noise came from").

  python -m benchmarks.fidelity_sweep --workdir=/tmp/recipe \
      --variants="default;text_scale=1,audio_scale=1;num_steps=50"

With `--condition_levels=0.9,0.98` a second table reads the denoiser itself on the same
clips (`evaluate.condition_usage`): the color accuracy of its x0 estimate at those noise
levels with and without the caption, which separates a model that has not learned the
caption's colors from a sampler that loses them. With `--trajectory` a third table follows
the first variant's sampler: the color accuracy of the x0 estimate at each denoiser call
and of the sample (`evaluate.sampling_trajectory`), which shows at which noise levels the
colors are lost.
"""
import dataclasses
import json
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np

from gcm_jax import evaluate
from gcm_jax.alignment import fidelity
from gcm_jax.diffusion import extension
from gcm_jax.models import diffusion_model


def parse_variant(text: str) -> dict[str, Any]:
  """'a=1,b=euler' -> {'a': 1, 'b': 'euler'}; 'default' -> {}."""
  text = text.strip()
  if text in ("", "default"):
    return {}
  overrides = {}
  for item in text.split(","):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"variant item {item!r} is not key=value")
    try:
      overrides[key.strip()] = json.loads(value)
    except json.JSONDecodeError:
      overrides[key.strip()] = value.strip()
  return overrides


def with_sampling(trained: diffusion_model.TrainedModel,
                  overrides: dict[str, Any]) -> diffusion_model.TrainedModel:
  """`trained` with `config.sampling` updated by `overrides` (known fields only)."""
  config = trained.config.copy_and_resolve_references()
  unknown = set(overrides) - set(config.sampling)
  if unknown:
    raise ValueError(f"unknown sampling fields {sorted(unknown)}; known: {sorted(config.sampling)}")
  config.sampling.update(overrides)
  return dataclasses.replace(trained, config=config)


def measure(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
            overrides: dict[str, Any], seed: int) -> dict[str, float]:
  """One row: fidelity ratios, color accuracy and mouth correlations of the clips generated
  with `config.sampling` updated by `overrides`."""
  trained = with_sampling(trained, overrides)
  config = trained.config
  videos = evaluate.generate_for_clips(trained, clips, jax.random.PRNGKey(seed))
  row = fidelity.pixel_compare(videos, clips["video"])
  window = config.data.num_frames
  seams = extension.seam_frames(videos.shape[1], window, config.diffusion.max_motion_frames)
  row["seam_ratio"] = fidelity.seam_ratio(videos, seams) if len(seams) else float("nan")
  truth = evaluate.truth_of(config)
  row.update(truth.caption_match(videos, clips))
  mouth = evaluate.mouth_correlation(truth, videos, clips, np.roll(np.arange(len(videos)), 1))
  row.update(mouth_matched=mouth["matched"], mouth_shuffled=mouth["shuffled"])
  patch = evaluate.pixel_patch(config)
  row["patch_grid_ratio"] = fidelity.ratio(fidelity.patch_grid_energy(videos, patch),
                                           fidelity.patch_grid_energy(clips["video"], patch))
  if truth.face_structure:
    row.update(evaluate.structure_summary(truth.face_structure(videos)))
  return row


COLUMNS = (("high-freq. ratio", "hf_ratio"), ("flicker ratio", "flicker_ratio"),
           ("window-seam ratio", "seam_ratio"), ("face / bg color", None),
           ("mouth corr. matched / shuffled", None), ("patch-grid ratio", "patch_grid_ratio"),
           ("eyes present", "eyes_present"), ("head-outline IoU", "outline_iou"))


def table(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray], variants: list[str],
          seed: int) -> str:
  """Markdown table, one row per variant, of the videos `trained` generates for `clips`."""
  lines = ["| sampling | " + " | ".join(c for c, _ in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for variant in variants:
    r = measure(trained, clips, parse_variant(variant), seed)
    seam = "-" if np.isnan(r["seam_ratio"]) else f"{r['seam_ratio']:.2f}"
    structure = " | ".join(f"{r[key]:.2f}" if key in r else "-"
                           for key in ("eyes_present", "outline_iou"))
    lines.append(f"| {variant.strip() or 'default'} | {r['hf_ratio']:.2f} | "
                 f"{r['flicker_ratio']:.2f} | {seam} | {r['face']:.2f} / {r['background']:.2f} | "
                 f"{r['mouth_matched']:.2f} / {r['mouth_shuffled']:.2f} | "
                 f"{r['patch_grid_ratio']:.2f} | {structure} |")
    print(lines[-1], flush=True)
  return "\n".join(lines)


def condition_table(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                    noise_levels: list[float], seed: int) -> str:
  """Markdown table of `evaluate.condition_usage` (the x0 estimate of the clips noised to
  time t, no guidance): face / background color accuracy with and without the caption, one
  row per level. At high t the colors can only come from the caption."""
  lines = ["| t | logSNR | face / bg color, with caption | without caption |", "|---|---|---|---|"]
  for row in evaluate.condition_usage(trained, clips, noise_levels, jax.random.PRNGKey(seed)):
    lines.append(f"| {row['t']:.2f} | {row['logsnr']:.2f} | "
                 f"{row['face_color_accuracy_full']:.2f} / "
                 f"{row['background_color_accuracy_full']:.2f} | "
                 f"{row['face_color_accuracy_no_text']:.2f} / "
                 f"{row['background_color_accuracy_no_text']:.2f} |")
  return "\n".join(lines)


def trajectory_table(trained: diffusion_model.TrainedModel, clips: dict[str, np.ndarray],
                     overrides: dict[str, Any], seed: int) -> str:
  """Markdown table of `evaluate.sampling_trajectory` for `config.sampling` updated by
  `overrides`: the color accuracy of the x0 estimate at each sampler call, then of the
  sample."""
  rows = evaluate.sampling_trajectory(with_sampling(trained, overrides), clips,
                                      jax.random.PRNGKey(seed))
  lines = ["| denoiser call | t | face / bg color of the x0 estimate |", "|---|---|---|"]
  for i, row in enumerate(rows):
    call = "sample" if i == len(rows) - 1 else str(i + 1)
    lines.append(f"| {call} | {row['t']:.3f} | {row['face_color_accuracy']:.2f} / "
                 f"{row['background_color_accuracy']:.2f} |")
  return "\n".join(lines)


def define_flags() -> None:
  """The CLI flags (defined here, not on import, so tests can import this module)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir of a talking_faces run.")
  flags.DEFINE_string(
      "variants", "default", "';'-separated variants, each 'default' or comma-separated "
      "config.sampling overrides key=value (values parsed as JSON, else kept as strings).")
  flags.DEFINE_integer("num_clips", 16, "Held-out test clips per variant.")
  flags.DEFINE_integer("clip_frames", 8, "Frames per clip.")
  flags.DEFINE_integer("seed", 0, "Clip and sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest readable).")
  flags.DEFINE_string("condition_levels", "", "Comma-separated noise levels t: also print "
                      "the denoiser's color accuracy with and without the caption there.")
  flags.DEFINE_bool("trajectory", False, "Also print the color accuracy of the x0 estimate "
                    "at every sampler call of the first variant (clips of one window).")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  print(f"{f.workdir} (step {f.step or 'newest'}): {f.num_clips} held-out clips of "
        f"{f.clip_frames} frames, seed {f.seed}")
  trained = diffusion_model.load_trained(f.workdir, f.step)  # The EMA params.
  clips = evaluate.test_clips(trained.config, f.num_clips, f.clip_frames, f.seed,
                              evaluate.eval_keys(trained.config))
  print(table(trained, clips, f.variants.split(";"), f.seed))
  if f.condition_levels:
    levels = [float(t) for t in f.condition_levels.split(",")]
    print(condition_table(trained, clips, levels, f.seed))
  if f.trajectory:
    print(trajectory_table(trained, clips, parse_variant(f.variants.split(";")[0]), f.seed))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
