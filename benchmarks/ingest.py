"""video_folder ingest speed: seconds of source video per wall second per core, per stage.

Encodes one 720p test video (tests/video_fixtures.py: the astronaut photograph moving and
scaling, 30 fps H.264 + 44.1 kHz stereo AAC, `--seconds` long) and builds it with the real
builder (`gcm_jax.data.video_folder.builder.build`, one process = one core) at each output
resolution, without and with the SyncNet pass (a randomly initialized 32 px project SyncNet:
its cost does not depend on the weights). Each build runs twice and the second is reported:
the detector and the jitted SyncNet are then loaded and compiled, as through most of a long
build (the first SyncNet call compiles, about a second). Stage times come from the ledger:
decode (both decoding passes: small frames for detection, full frames for the crops), detect
(LBP cascade every `detect_every` frames + scene-cut thumbnails), crop (square crop +
resize), audio (decode + resample to 16 kHz mono), sync, write (serialize + zlib + array_record).

  python -m benchmarks.ingest [--seconds 8] [--resolutions 64,128,256]
"""
import argparse
import os
import tempfile
import time

from benchmarks import common
from gcm_jax.data.video_folder import builder
from tests import video_fixtures

def measure(video_dir: str, resolution: int, syncnet_workdir: str, work: str) -> dict:
  """Builds the folder once; returns wall seconds, per-stage seconds and clip count."""
  settings = builder.Settings(resolution=resolution, num_frames=16,
                              syncnet_workdir=syncnet_workdir, sync_min_confidence=-1e9,
                              validation_fraction=0.0, test_fraction=0.0)
  out = tempfile.mkdtemp(dir=work)
  start = time.perf_counter()
  summary = builder.build(video_dir, out, settings, progress=False)
  return {"wall": time.perf_counter() - start, "seconds": summary.seconds,
          "clips": sum(summary.clips.values())}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=8.0)
  parser.add_argument("--resolutions", default="64,128,256")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as work:
    spec = video_fixtures.Spec("bench/talk", duration=args.seconds, size=(1280, 720),
                               marker=None)
    video_fixtures.write(spec, os.path.join(work, "videos"))
    syncnet = video_fixtures.random_syncnet_workdir(os.path.join(work, "syncnet"), 32)
    rows = []
    for resolution in map(int, args.resolutions.split(",")):
      for sync in (False, True):
        for _ in range(2):  # Warm-up, then the measured build.
          r = measure(os.path.join(work, "videos"), resolution, syncnet if sync else "", work)
        per_second = [f"{r['seconds'].get(s, 0.0) / args.seconds * 1e3:.0f}"
                      for s in builder.STAGES]
        rows.append([f"{resolution}", "yes" if sync else "no", r["clips"],
                     f"{args.seconds / r['wall']:.2f}"] + per_second)
  print(f"video_folder ingest, one {args.seconds:g} s 1280x720 30 fps H.264/AAC video, one "
        f"process (= one core), 16-frame clips, warm ({common.environment_line()})")
  print(common.format_table(
      ["output px", "SyncNet pass", "clips", "source s per wall s per core"]
      + [f"{s} ms per source s" for s in builder.STAGES], rows))


if __name__ == "__main__":
  main()
