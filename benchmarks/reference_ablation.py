"""How the person's reference frames enter the model, measured (one table).

Runs that differ only in how they take the reference (`model.reference_inputs`: 'frames',
context frames in front of the video; 'channels', concatenated to every frame's input as
LatentSync does; or `model.reference_frames` = 0, none) generate the same held-out test
clips (people none of them saw) from their audio, caption and, where the run takes it, the
clip's reference frames, with the same noise. Each row reads the generated frames' upper
face (`identity.identity_region`) against the clip's own reference frames and against
another person's (`identity.other_person`, the floor): a run keeps the person when its
first column is above its floor as the real clip's is. With `--syncnet_workdir` (a SyncNet
trained on the same kind of clips) the project SyncNet's LSE-C / LSE-D against the clip's
audio and against another clip's, as `gcm_jax.evaluate` reports them.

  python -m benchmarks.reference_ablation \
      --workdirs=/tmp/abl_frames,/tmp/abl_channels,/tmp/abl_none \
      --syncnet_workdir=/tmp/syncnet_portrait --num_clips=32 --clip_frames=8

The clips are read with the first reference run's config; every run must share its data
config and encoders (checked).
"""
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from gcm_jax import evaluate
from gcm_jax.alignment import identity
from gcm_jax.models import diffusion_model

SHARED = ("data.name", "data.data_dir", "data.resolution", "model.text_encoder",
          "model.audio_encoder")


def _field(config, dotted: str):
  section, name = dotted.split(".")
  return config[section].get(name)


def how_reference_enters(config) -> str:
  """The row label of a run: none, or K frames as context frames / input channels."""
  k = config.model.get("reference_frames", 0)
  if not k:
    return "no reference"
  return f"{k} reference frames as {config.model.get('reference_inputs', 'frames')}"


def ablation_rows(workdirs: Sequence[str], num_clips: int, clip_frames: int, seed: int = 0,
                  syncnet_workdir: Optional[str] = None) -> list[dict]:
  """One row per run plus the ground truth's: label, the upper face's PSNR / SSIM vs
  the clip's reference (`psnr`, `ssim`) and vs another person's (`floor_psnr`,
  `floor_ssim`), and with `syncnet_workdir` LSE-C / LSE-D vs the clip's own and another
  clip's audio. Raises ValueError when no run takes reference frames, the runs' data or
  encoders differ, or the test clips are all of one person."""
  runs = [diffusion_model.load_trained(w) for w in workdirs]
  with_reference = [r for r in runs if r.config.model.get("reference_frames", 0)]
  if not with_reference:
    raise ValueError("no run takes reference frames (config.model.reference_frames): "
                     "nothing to read the clips' reference with")
  base = with_reference[0].config
  for workdir, run in zip(workdirs, runs):
    differ = [f for f in SHARED if _field(run.config, f) != _field(base, f)]
    if differ:
      raise ValueError(f"{workdir}: config {differ} differ from the first reference run's; "
                       "an ablation compares runs on the same data and encoders")
  clips = evaluate.test_clips(base, num_clips, clip_frames, seed, evaluate.eval_keys(base))
  region, _ = identity.identity_region(base, clips)
  others = identity.other_person(clips["identity"])
  if others is None:
    raise ValueError("the test clips are all of one person: no floor to read against")
  shuffled = np.roll(np.arange(len(clips["video"])), 1)
  key = jax.random.PRNGKey(seed)
  rows = []
  videos = [("ground truth (the real clip)", base, clips["video"])]
  videos += [(f"{how_reference_enters(r.config)} ({os.path.basename(os.path.normpath(w))})",
              r.config, evaluate.generate_for_clips(r, clips, key))
             for w, r in zip(workdirs, runs)]
  for label, config, video in videos:
    row = {"run": label,
           **identity.reference_quality(video, clips["reference"], region)}
    floor = identity.reference_quality(video, np.asarray(clips["reference"])[others], region)
    row.update(floor_psnr=floor["psnr"], floor_ssim=floor["ssim"])
    if syncnet_workdir:
      lse = evaluate.project_syncnet_metrics(
          syncnet_workdir, evaluate.EvalData(config, clips, video, shuffled))
      row.update({f"{name}_{audio}": lse[f"generated_{audio}"][name]
                  for audio in ("matched", "shuffled") for name in ("lse_c", "lse_d")})
    rows.append(row)
  return rows


def markdown(rows: Sequence[dict]) -> str:
  columns = [("run", "run"), ("psnr", "PSNR vs own reference"),
             ("floor_psnr", "PSNR vs another person's (floor)"),
             ("ssim", "SSIM vs own"), ("floor_ssim", "SSIM vs another's (floor)"),
             ("lse_c_matched", "LSE-C"), ("lse_d_matched", "LSE-D"),
             ("lse_c_shuffled", "LSE-C, another clip's audio"),
             ("lse_d_shuffled", "LSE-D, another clip's audio")]
  columns = [(k, name) for k, name in columns if any(k in r for r in rows)]
  fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(name for _, name in columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
  return "\n".join(lines)


def main(_) -> None:
  f = flags.FLAGS
  print(markdown(ablation_rows(f.workdirs, f.num_clips, f.clip_frames, f.seed,
                               f.syncnet_workdir)))


if __name__ == "__main__":
  flags.DEFINE_list("workdirs", None, "Trained runs to compare (run_train.py workdirs).")
  flags.DEFINE_integer("num_clips", 32, "Held-out test clips.")
  flags.DEFINE_integer("clip_frames", 8, "Frames per clip.")
  flags.DEFINE_integer("seed", 0, "Clip selection and sampling seed.")
  flags.DEFINE_string("syncnet_workdir", None, "A train_syncnet workdir for LSE-C / LSE-D.")
  flags.mark_flags_as_required(["workdirs"])
  app.run(main)
