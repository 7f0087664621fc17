"""Held-out color accuracy on captions phrased as no training caption is (one table).

Training captions all follow one template ("a green face on a purple background, moving
left, says: ..."). For each trained run, the talking-faces test clips are generated with
their captions in the template and rephrased (`captions.PARAPHRASES`: reordered,
predicative "the face is green and ...", color synonyms "emerald" for green), and the face
/ background colors of the generated videos are read inside the clips' keypoints
(`evaluate.paraphrased_caption_match`). A text encoder that carries meaning keeps its
accuracy on the paraphrases; one that learned the template's byte patterns does not.

  python -m benchmarks.paraphrase_colors --workdirs=/tmp/bytes,/tmp/minilm --num_clips=64
"""
from absl import app
from absl import flags
import jax

from gcm_jax import evaluate
from gcm_jax.models import diffusion_model


_WORKDIRS = flags.DEFINE_list("workdirs", None, "run_train.py workdirs to compare.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 64, "Test clips per caption style.")
_SEED = flags.DEFINE_integer("seed", 0, "Clip and sampling seed.")


def table(workdirs: list[str], num_clips: int, seed: int) -> str:
  """Markdown table: one row per run, face / background accuracy per caption style."""
  rows = []
  for workdir in workdirs:
    trained = diffusion_model.load_trained(workdir)
    config = trained.config
    clips = evaluate.test_clips(config, num_clips, config.data.num_frames, seed,
                                evaluate.eval_keys(config))
    accuracy = evaluate.paraphrased_caption_match(trained, clips, jax.random.PRNGKey(seed))
    rows.append((workdir, config.model.get("text_encoder", "bytes"), accuracy))
  styles = list(rows[0][2])
  header = ("| run | text encoder | " + " | ".join(f"{s} face / bg" for s in styles) + " |\n"
            + "|---|---|" + "---|" * len(styles) + "\n")
  return header + "\n".join(
      f"| {w} | {name} | " + " | ".join(f"{a[s]['face']:.2f} / {a[s]['background']:.2f}"
                                         for s in styles) + " |" for w, name, a in rows)


def main(argv) -> None:
  del argv
  print(f"{_NUM_CLIPS.value} held-out clips per style, seed {_SEED.value}")
  print(table(_WORKDIRS.value, _NUM_CLIPS.value, _SEED.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdirs"])
  app.run(main)
