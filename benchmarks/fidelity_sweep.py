"""Sampling settings vs fidelity and conditioning, for one trained run (one table).

For each variant (overrides of `config.sampling`, e.g. `text_scale=1,audio_scale=1` or
`sampler=euler,num_steps=50`) the same held-out talking-faces test clips are generated from
their captions and audio, and one row reports the fidelity ratios against the clips' ground
truth (`alignment.fidelity.pixel_compare`: high-frequency ratio, flicker ratio; 1 = as the
data), the face / background color accuracy and the oracle mouth correlation with the matched
and with shuffled audio (`evaluate.synthetic_truth_metrics`' read-outs). Rows of one table share
the model, the clips and the seed, so they isolate the sampler's part in the generated
videos' noise (docs/results.md, "Where the sample noise came from").

  python -m benchmarks.fidelity_sweep --workdir=/tmp/recipe \
      --variants="default;text_scale=1,audio_scale=1;num_steps=50"
"""
import dataclasses
import json
from typing import Any, Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import evaluate
from gcm_jax import generate
from gcm_jax.alignment import fidelity
from gcm_jax.alignment import metrics


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


def measure(trained: generate.TrainedModel, clips: dict[str, np.ndarray],
            overrides: dict[str, Any], seed: int) -> dict[str, float]:
  """One row: fidelity ratios, color accuracy and mouth correlations of the clips generated
  with `config.sampling` updated by `overrides`."""
  config = trained.config.copy_and_resolve_references()
  unknown = set(overrides) - set(config.sampling)
  if unknown:
    raise ValueError(f"unknown sampling fields {sorted(unknown)}; known: {sorted(config.sampling)}")
  config.sampling.update(overrides)
  videos = evaluate.generate_for_clips(dataclasses.replace(trained, config=config), clips,
                                       jax.random.PRNGKey(seed))
  row = fidelity.pixel_compare(videos, clips["video"])
  face, background = evaluate.read_colors(videos, clips["keypoints"])
  row["face"] = float(np.mean(face == clips["face_color"]))
  row["background"] = float(np.mean(background == clips["background_color"]))
  mouth = jnp.asarray(clips["mouth_open"])
  shuffled = mouth[np.roll(np.arange(len(mouth)), 1)]
  for name, m in (("mouth_matched", mouth), ("mouth_shuffled", shuffled)):
    row[name] = float(jnp.mean(metrics.oracle_lipsync(jnp.asarray(videos), m)["mouth_corr"]))
  return row


COLUMNS = (("high-freq. ratio", "hf_ratio"), ("flicker ratio", "flicker_ratio"),
           ("face / bg color", None), ("mouth corr. matched / shuffled", None))


def table(workdir: str, variants: list[str], num_clips: int, clip_frames: int,
          seed: int, step: Optional[int] = None) -> str:
  """Markdown table, one row per variant (the EMA params of checkpoint `step`, default the
  newest)."""
  trained = generate.load_trained(workdir, step)
  clips = evaluate.test_clips(trained.config, num_clips, clip_frames, seed, evaluate.EVAL_KEYS)
  lines = ["| sampling | " + " | ".join(c for c, _ in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for variant in variants:
    r = measure(trained, clips, parse_variant(variant), seed)
    lines.append(f"| {variant.strip() or 'default'} | {r['hf_ratio']:.2f} | "
                 f"{r['flicker_ratio']:.2f} | {r['face']:.2f} / {r['background']:.2f} | "
                 f"{r['mouth_matched']:.2f} / {r['mouth_shuffled']:.2f} |")
    print(lines[-1], flush=True)
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


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  print(f"{f.workdir} (step {f.step or 'newest'}): {f.num_clips} held-out clips of "
        f"{f.clip_frames} frames, seed {f.seed}")
  print(table(f.workdir, f.variants.split(";"), f.num_clips, f.clip_frames, f.seed, f.step))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
