"""The video_folder builder on generated videos (tests/video_fixtures.py): clips, crops,
A/V alignment, captions, splits, rejects, reference frames, resume after a kill, the SyncNet
pass, and training + evaluation (with reference frames) on the result."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.data.video_folder import builder
from gcm_jax.data.video_folder import captions
from gcm_jax.data.video_folder import decode
from gcm_jax.data.video_folder import faces
from gcm_jax.data.video_folder import splits
from tests import video_fixtures as vf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R, T = 32, 8
# Fractions that put alice in test, carol in validation and bob in train (hash of the name).
SETTINGS = builder.Settings(resolution=R, num_frames=T, validation_fraction=0.2,
                            test_fraction=0.2)
SPECS = {s.name + s.path_suffix: s for s in vf.SPECS}


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
  path = tmp_path_factory.mktemp("videos")
  vf.write_all(str(path))
  return str(path)


@pytest.fixture(scope="session")
def built(videos, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("built"))
  summary = builder.build(videos, out, SETTINGS, progress=False)
  return out, summary


def _records(out: str) -> dict[str, list[dict]]:
  data = tfds.builder_from_directory(builder.dataset_path(out, R, T))
  return {split: list(data.as_data_source(split)) for split in data.info.splits}


def _ledger(out: str, name: str = "ledger.jsonl") -> dict[str, dict]:
  path = os.path.join(out, "video_folder", f"r{R}_t{T}", "staging", name)
  with open(path, encoding="utf-8") as f:
    return {row["key"]: row for row in map(json.loads, f)}


def test_clips_rejects_and_summary(built):
  out, summary = built
  assert summary.rejects == {r: 1 for r in vf.EXPECTED_REJECTS.values()}
  rejects = _ledger(out, "rejects.jsonl")
  assert {k.rsplit(".", 1)[0]: r["reason"] for k, r in rejects.items()} == vf.EXPECTED_REJECTS
  ledger = _ledger(out)
  by_video = {k: r["clips"] for k, r in ledger.items() if r["status"] == "ok"}
  # 3 s at 25 fps = 75 frames; a track spans its first to last detection (every 5th frame):
  # frames 0-70 = 8 clips of 8. The cut video (3.2 s, cut at 1.6 s): 0-35 and 40-75, 4 + 4.
  assert by_video == {"alice/talk.mp4": 8, "alice/late_audio.mp4": 8, "bob/vfr.mp4": 8,
                      "carol/webm.webm": 8, "bob/cut.mp4": 8}
  assert ledger["bob/cut.mp4"]["track_ends"]["scene_cut"] == 1
  records = _records(out)
  assert summary.clips == {s: len(r) for s, r in records.items()} == {
      "train": 16, "validation": 8, "test": 16}
  for record in sum(records.values(), []):
    assert record["video"].shape == (T, R, R, 3) and record["video"].dtype == np.uint8
    assert record["audio"].shape == (T * 640,)
    assert np.isnan(record["sync_confidence"]) and record["sync_offset"] == 0
    np.testing.assert_array_equal(record["mouth_box"], np.tile([0, 0.5, 1, 1], (T, 1)))
  # 25 fps: the clips of a video start 8 frames = 0.32 s apart.
  starts = [r["start_time"] for r in records["test"] if r["source"] == b"alice/talk.mp4"]
  np.testing.assert_allclose(np.diff(starts), T / 25, atol=1e-5)
  assert "clips: train 16, validation 8, test 16" in str(summary)


def _frame_in(frame: np.ndarray, video: np.ndarray) -> bool:
  return any(np.array_equal(frame, f) for f in video)


def test_reference_frames_are_frames_of_other_clips_of_the_video(built, tmp_path):
  """Each clip stores K frames of its person from other clips of its video (bob/cut's two
  shots, two tracks, take each other's), never one of its own frames; the ledger and the
  summary count where they come from; the registry's hook gives the first K or says why
  not; a dataset of the previous builder version is still read."""
  out, summary = built
  k = SETTINGS.reference_frames
  records = sum(_records(out).values(), [])
  for record in records:
    assert record["reference"].shape == (k, R, R, 3) and record["reference"].dtype == np.uint8
    assert record["reference_from"] == b"other_clip"
    others = [r for r in records if r["source"] == record["source"] and
              r["start_time"] != record["start_time"]]
    for frame in record["reference"]:
      assert not _frame_in(frame, record["video"])
      starts = [r["start_time"] for r in others if _frame_in(frame, r["video"])]
      assert starts, (record["source"], record["start_time"])  # A frame of another clip.
      if record["source"] == b"bob/cut.mp4":  # The other shot (the cut is at 1.6 s).
        assert all((s >= 1.6) != (record["start_time"] >= 1.6) for s in starts)
  assert summary.references == {"other_clip": 40}
  assert "reference frames from: other_clip 40" in str(summary)
  ledger = _ledger(out)
  assert {key: (r["references"], r["reference_pool"]) for key, r in ledger.items()
          if r["status"] == "ok"} == {key: ({"other_clip": 8}, 16) for key in (
              "alice/talk.mp4", "alice/late_audio.mp4", "bob/vfr.mp4", "carol/webm.webm",
              "bob/cut.mp4")}
  hook = datasets.DATASETS["video_folder"].reference
  np.testing.assert_array_equal(hook(records[0], 2, R), records[0]["reference"][:2])
  with pytest.raises(ValueError, match=f"stores {k} reference frames per clip; lower it, or "
                                       f"build again with .* --reference_frames={k + 1}"):
    hook(records[0], k + 1, R)
  older = {key: v for key, v in records[0].items() if not key.startswith("reference")}
  with pytest.raises(ValueError, match=f"built by a builder older than {builder.VERSION}"):
    hook(older, 1, R)
  older_build = tmp_path / "video_folder" / f"r{R}_t{T}" / "1.0.0"
  shutil.copytree(builder.dataset_path(out, R, T), older_build)
  assert builder.readable_path(str(tmp_path), R, T) == str(older_build)
  assert builder.readable_path(out, R, T) == builder.dataset_path(out, R, T)


def test_one_clip_videos_take_references_from_their_track_or_their_identity(videos, tmp_path,
                                                                              caplog):
  """A video of one clip takes its track's frames outside the clip (the tracks are frames
  0-70: at T = 70, frame 70), else (T = 71: the clip is the whole track) frames of another
  video of its identity in its split (a manifest makes talk and webm one person's), else
  none: zeros, counted, warned about, and refused by the hook with what to do."""
  settings = dataclasses.replace(SETTINGS, num_frames=70)
  item = captions.Item("alice/talk.mp4", os.path.join(videos, "alice", "talk.mp4"),
                       captions.Transcript())
  records, pools = [], []
  row = builder.process_video(item, settings, builder.tools_for(settings), records.append,
                              pools.append)
  (record,), (pool,) = records, pools
  assert row["references"] == {"same_track_outside_clip": 1} and row["reference_pool"] == 16
  assert pool.times[pool.choices[0]].tolist() == [70] * SETTINGS.reference_frames
  assert not any(_frame_in(f, record["video"]) for f in pool.frames[pool.choices[0]])
  # alice/late_audio's pictures are alice/talk's: pair talk with carol's (VP9) instead.
  inputs = tmp_path / "in"
  inputs.mkdir()
  for name in ("alice/talk.mp4", "carol/webm.webm", "bob/vfr.mp4"):
    os.symlink(os.path.join(videos, name), inputs / os.path.basename(name))
  (inputs / "people.csv").write_text("path,identity\ntalk.mp4,ann\nwebm.webm,ann\nvfr.mp4,bo\n")
  whole = builder.Settings(resolution=R, num_frames=71, validation_fraction=0.0,
                           test_fraction=0.0)
  with caplog.at_level("WARNING"):
    summary = builder.build(str(inputs / "people.csv"), str(tmp_path / "out"), whole,
                            progress=False)
  assert summary.clips == {"train": 3}
  assert summary.references == {"same_identity": 2, "none": 1}
  assert "1 clip(s) have no reference frames" in caplog.text
  data = tfds.builder_from_directory(builder.dataset_path(str(tmp_path / "out"), R, 71))
  clips = {r["source"].decode(): r for r in data.as_data_source("train")}
  for name, other in (("talk.mp4", "webm.webm"), ("webm.webm", "talk.mp4")):
    assert clips[name]["reference_from"] == b"same_identity"
    for frame in clips[name]["reference"]:
      assert _frame_in(frame, clips[other]["video"])
      assert not _frame_in(frame, clips[name]["video"])
  alone = clips["vfr.mp4"]
  assert alone["reference_from"] == b"none" and not alone["reference"].any()
  with pytest.raises(ValueError, match="no other video of identity 'bo' in its split"):
    datasets.DATASETS["video_folder"].reference(alone, 1, R)


def test_unreadable_files_say_what_is_wrong(videos, tmp_path):
  """An empty file, a text file named .mp4 and a truncated mp4: each rejected with what is
  wrong with it (not FFmpeg's bare 'Invalid data'), and none stops the build."""
  inputs = tmp_path / "in"
  inputs.mkdir()
  (inputs / "empty.mp4").write_bytes(b"")
  (inputs / "notes.mp4").write_text("my notes for the shoot\n")
  os.symlink(os.path.join(videos, "bad", "truncated.mp4"), inputs / "truncated.mp4")
  summary = builder.build(str(inputs), str(tmp_path / "out"), SETTINGS, progress=False)
  assert summary.videos == 3 and summary.rejects == {"unreadable": 3}
  details = {k: r["detail"] for k, r in _ledger(str(tmp_path / "out"), "rejects.jsonl").items()}
  assert details["empty.mp4"] == "empty file (0 bytes): empty.mp4"
  assert details["notes.mp4"].startswith(
      "not a video container PyAV can read: notes.mp4 (23 bytes, a text file starting 'my notes")
  assert details["truncated.mp4"].startswith(
      "a damaged or truncated MP4/QuickTime file that PyAV cannot read: truncated.mp4")
  assert not any("Errno" in d for d in details.values()), details


def test_a_flat_folder_warns_that_each_file_is_its_own_identity(tmp_path, caplog):
  flat, folders = tmp_path / "flat", tmp_path / "folders"
  for name in ("flat/a_1.mp4", "flat/a_2.mp4", "folders/ann/1.mp4", "folders/ann/2.mp4"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")  # Rejected at once: only the identities matter here.
  with caplog.at_level("WARNING"):
    builder.build(str(folders), str(tmp_path / "out1"), SETTINGS, progress=False)
  assert "its own identity" not in caplog.text
  with caplog.at_level("WARNING"):
    builder.build(str(flat), str(tmp_path / "out2"), SETTINGS, progress=False)
  assert "Every one of the 2 videos is its own identity (e.g. 'a_1.mp4' -> 'a_1'" in caplog.text
  assert "manifest with an 'identity' column" in caplog.text
  assert splits.identity_of("a_1.mp4", "parent") == "a_1"  # The documented flat default.
  caplog.clear()
  stem_prefix = builder.Settings(resolution=R, num_frames=T, identity="stem_prefix")
  with caplog.at_level("WARNING"):
    builder.build(str(flat), str(tmp_path / "out3"), stem_prefix, progress=False)
  assert "its own identity" not in caplog.text


def test_splits_hold_identities_apart(built):
  records = _records(built[0])
  identities = {s: {r["identity"].decode() for r in recs} for s, recs in records.items()}
  assert identities == {"train": {"bob"}, "validation": {"carol"}, "test": {"alice"}}
  assert splits.split_of("alice", 0.2, 0.2) == "test"
  assert splits.identity_of("id00012/21Uxsk56VDQ/00001.mp4", "top_folder") == "id00012"
  assert splits.identity_of("WDA_BarackObama_000.mp4", "stem_prefix") == "WDA_BarackObama"
  assert splits.identity_of("alice/talk.mp4", "parent") == "alice"


def test_crops_follow_the_face(built):
  errors = []
  for record in sum(_records(built[0]).values(), []):
    spec = SPECS[record["source"].decode()]
    box = record["crop_box"]
    center = 0.5 * (box[:, :2] + box[:, 2:])
    size = (box[:, 2] - box[:, 0]) / (1 + 2 * SETTINGS.margin)
    times = record["start_time"] + (np.arange(T) + 0.5) / 25
    face = np.array([vf.face_position(spec, t)[0] for t in times])
    errors.append(center - face - np.stack([0 * size, SETTINGS.shift * size], axis=1))
  errors = np.abs(np.concatenate(errors))
  # Within a few pixels (frames 256x192, face boxes ~55 px), a pixel or two on average.
  assert errors.max() < 6.0 and errors.mean() < 2.5, (errors.max(0), errors.mean(0))


@pytest.mark.parametrize("name", ["alice/talk.mp4", "alice/late_audio.mp4", "bob/vfr.mp4",
                                  "carol/webm.webm"])
def test_audio_and_video_stay_within_one_frame(built, name):
  """The flash (video) and click (audio) of the source, both at `marker` s, land in the same
  clip frame (late_audio's audio stream starts 0.3 s after its video)."""
  spec = SPECS[name]
  record = next(r for r in sum(_records(built[0]).values(), [])
                if r["source"].decode() == name and
                r["start_time"] <= spec.marker < r["start_time"] + T / 25)
  video = record["video"].astype(np.float32)
  green = (video[..., 1] - video[..., 0]).max(axis=(1, 2))
  flash = int(np.argmax(green > 100))  # First frame showing the green square.
  assert green[flash] > 100 and green[:flash].max(initial=0) < 60
  expected = spec.marker - record["start_time"]
  window = record["audio"][int((expected - 0.1) * 16000):]  # Silence before the click.
  click = (int((expected - 0.1) * 16000) + int(np.argmax(np.abs(window) > 0.3))) / 16000
  assert abs(click - expected) < 0.002       # The sound is where the source has it ...
  assert abs(flash / 25 - click) <= 1 / 25   # ... and the picture within one frame of it.


def test_captions_are_the_words_of_each_clip(built):
  records = _records(built[0])
  talk = [r for r in records["test"] if r["source"] == b"alice/talk.mp4"]
  words = vf.words(SPECS["alice/talk.mp4"])
  for r in talk:
    start, end = r["start_time"], r["start_time"] + T / 25
    said = [w for w, s, e in words if start <= (s + e) / 2 < end]
    assert r["caption"].decode() == " ".join(said)
  assert {r["caption"].decode() for r in records["train"] if r["source"] == b"bob/vfr.mp4"} == {
      vf.PHRASE}  # Untimed .txt: the whole text.
  assert {r["caption"] for r in records["validation"]} == {b""}  # No transcript.


def test_transcripts_and_manifests(tmp_path):
  srt = captions.parse_timed("1\n00:00:01,000 --> 00:00:02,000\n<i>hello</i> big\n\n"
                             "2\n00:00:02,500 --> 00:00:03,000\nworld\n")
  vtt = captions.parse_timed("WEBVTT\n\n00:01.000 --> 00:02.000\nhello big\n\n"
                             "00:02.500 --> 00:03.000 align:start\nworld\n")
  assert srt == vtt
  assert srt.caption(1.0, 2.0, 128) == "hello big" and srt.caption(1.6, 3.0, 128) == "big world"
  assert captions.truncate("one two three", 9) == "one two"
  assert captions.parse_plain(" a  b\n").caption(0, 1, 3) == "a b"
  (tmp_path / "v").mkdir()
  (tmp_path / "m.jsonl").write_text(json.dumps(
      {"path": "v/a.mp4", "transcript": "hi there", "identity": "x", "split": "test"}) + "\n")
  (tmp_path / "m.csv").write_text("path,identity\nv/b.mov,y\n")
  (item,) = captions.list_inputs(str(tmp_path / "m.jsonl"))
  assert (item.key, item.identity, item.split, item.transcript.text) == (
      "v/a.mp4", "x", "test", "hi there")
  assert captions.list_inputs(str(tmp_path / "m.csv"))[0].path == str(tmp_path / "v" / "b.mov")
  with pytest.raises(ValueError, match="manifest"):
    captions.list_inputs(str(tmp_path / "m.txt"))
  (tmp_path / "bad.csv").write_text("path,split\nv/c.mp4,dev\n")
  with pytest.raises(ValueError, match="'dev'"):
    captions.list_inputs(str(tmp_path / "bad.csv"))


def _det(x, y, size):
  return faces.Detection(np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2]))


def test_tracks_cut_at_lost_faces_second_faces_and_scene_cuts():
  cuts = np.zeros(100, bool)
  cuts[60] = True
  dets = {f: [_det(50 + f / 10 + 30 * (f >= 60), 50, 40)] for f in range(0, 100, 5)}
  dets[25] = dets[30] = []                                   # Lost for two detections.
  for f in (45, 50):
    dets[f] = dets[f] + [_det(150, 50, 35)]                  # A second face, twice.
  dets[85] = dets[85] + [_det(150, 50, 35)]                  # A single false detection.
  tracks, ends = faces.track(dets, cuts)
  assert [(t.start, t.end) for t in tracks] == [(0, 21), (35, 41), (55, 56), (60, 96)]
  assert ends == {"face_lost": 1, "second_face": 1, "scene_cut": 1, "spurious": 0}
  np.testing.assert_allclose(tracks[-1].boxes[-1], [89.5, 50, 40], atol=0.1)
  region = faces.mouth_region(np.array([[0.0, 0.5, 1.0, 1.0]]), 4)
  assert region.tolist() == [[[False] * 4] * 2 + [[True] * 4] * 2]


def test_overlapping_detections_of_one_face_are_merged():
  """The cascade finds a face twice: a second box ~1.1x larger and ~0.14 face sizes aside
  (as on carol/webm's frame 65). Merged into their mean box, the track follows the face
  closer than with the larger box alone; faces apart stay apart."""
  spec = SPECS["carol/webm.webm"]
  truth = np.array([vf.face_position(spec, (f + 0.5) / 25)[0] for f in range(75)])
  dets = {f: [_det(*truth[f], 55)] for f in range(0, 75, 5)}
  for f in (20, 45, 65):
    dets[f] = [_det(truth[f][0] + 8, truth[f][1] - 2, 60), dets[f][0]]

  def worst_error(config):
    (tr,), _ = faces.track(dets, np.zeros(75, bool), config=config)
    return np.abs(tr.boxes[:, :2] - truth[tr.start:tr.end]).max()

  unmerged, merged = worst_error(faces.TrackConfig(merge_iou=2.0)), worst_error(faces.TrackConfig())
  assert merged < 0.6 * unmerged, (merged, unmerged)  # 3.3 px vs 6.1 px (1.9 px without twins).
  (one,) = faces.merge_overlapping(dets[65], 0.4)
  np.testing.assert_allclose(one.box, 0.5 * (dets[65][0].box + dets[65][1].box), atol=1e-4)
  sure = faces.Detection(np.array([0, 0, 40, 40.0]), np.zeros((5, 2)), score=0.9)
  unsure = faces.Detection(np.array([4, 0, 44, 40.0]), np.ones((5, 2)), score=0.3)
  (one,) = faces.merge_overlapping([unsure, sure], 0.4)
  np.testing.assert_allclose(one.box, [1, 0, 41, 40], atol=1e-5)  # Score-weighted.
  np.testing.assert_allclose(one.landmarks, 0.25)
  assert len(faces.merge_overlapping([_det(100, 100, 40), _det(300, 100, 40)], 0.4)) == 2


def test_two_people_throughout_are_counted_as_a_second_face(tmp_path):
  """Two faces in every detection: a second-face stretch is counted even where it leaves no
  track, one-detection false positives are 'spurious' (not lost faces), and a video with
  two people is rejected as such."""
  two = {f: [_det(100, 100, 40), _det(300, 100, 40)] for f in range(0, 50, 5)}
  quiet = {f: [] for f in range(50, 100, 5)}
  quiet[70] = [_det(200, 150, 30)]                           # A single false detection.
  tracks, ends = faces.track({**two, **quiet}, np.zeros(100, bool))
  assert tracks == []
  assert ends == {"face_lost": 0, "second_face": 1, "scene_cut": 0, "spurious": 1}
  spec = vf.Spec("two/people", duration=1.6, size=(384, 192), marker=None, second_face=True)
  item = captions.Item("two/people.mp4", vf.write(spec, str(tmp_path)), captions.Transcript())
  with pytest.raises(decode.RejectError) as error:
    builder.process_video(item, SETTINGS, builder.tools_for(SETTINGS), lambda record: None)
  assert error.value.reason == "second_face" and "second person" in error.value.detail
  assert "'second_face': 1" in error.value.detail and "second_face" in builder.REJECT_REASONS


def test_detectors_registry():
  assert set(faces.DETECTORS) >= {"lbp", "haar", "yunet"}
  with pytest.raises(ValueError, match="yunet"):
    faces.make_detector("yunet")
  with pytest.raises(ValueError, match="unknown detector"):
    faces.make_detector("s3fd")
  frame = vf.render(vf.Spec("x"), 0.0, 0.0)
  (face,) = faces.make_detector("lbp")(frame)
  center, scale = vf.face_position(vf.Spec("x"), 0.0)
  assert np.abs(face.center - center).max() < 4 and 40 < face.size < 70


def test_resume_after_a_kill_gives_the_complete_dataset(videos, built, tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  for name in ("alice", "bob", "carol"):
    os.symlink(os.path.join(videos, name), inputs / name)
  out = tmp_path / "out"
  command = [sys.executable, "-m", "gcm_jax.data.video_folder", f"--input={inputs}",
             f"--output_dir={out}", f"--resolution={R}", f"--num_frames={T}",
             "--validation_fraction=0.2", "--test_fraction=0.2"]
  ledger = out / "video_folder" / f"r{R}_t{T}" / "staging" / "ledger.jsonl"
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
  while not (ledger.exists() and ledger.read_text().count("\n") >= 1):
    assert process.poll() is None, process.stdout.read().decode()
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert ledger.read_text().count("\n") < 5  # Killed part way.
  assert not (out / "video_folder" / f"r{R}_t{T}" / builder.VERSION).exists()
  result = subprocess.run(command + ["--workers=2"], cwd=REPO, capture_output=True, text=True,
                          check=True)
  assert "5 videos (" in result.stdout and "rejected 0" in result.stdout
  resumed = _records(str(out))
  full = _records(built[0])
  for split, records in full.items():
    assert [(r["source"], r["start_time"]) for r in resumed[split]] == [
        (r["source"], r["start_time"]) for r in records]
    for a, b in zip(resumed[split], records):
      np.testing.assert_array_equal(a["video"], b["video"])
      np.testing.assert_array_equal(a["reference"], b["reference"])  # Whatever the workers.
  dataset = out / "video_folder" / f"r{R}_t{T}" / builder.VERSION / "dataset_info.json"
  written = dataset.stat().st_mtime_ns
  rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
  assert "(0 processed in this run)" in rerun.stdout
  assert dataset.stat().st_mtime_ns == written  # Nothing new: the dataset is left as it is.
  changed = subprocess.run(command + ["--margin=0.5"], cwd=REPO, capture_output=True, text=True)
  assert changed.returncode != 0 and "other settings" in changed.stderr
  # Staged by the builder before reference frames (no builder_version): refused, not mixed.
  settings_file = ledger.parent / "settings.json"
  saved = json.loads(settings_file.read_text())
  del saved["builder_version"], saved["reference_frames"]
  settings_file.write_text(json.dumps(saved))
  older = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  assert older.returncode != 0 and "staged by the video_folder builder 1.0.0" in older.stderr
  assert "delete " + str(ledger.parent.parent) in older.stderr


def test_syncnet_pass_moves_the_audio_and_drops_unsure_clips(videos):
  calls = []

  def expert(clips, clip_audio, max_offset):
    calls.append((clips.shape, clip_audio.shape, max_offset))
    n = len(clips)
    return np.full(n, 2, np.int32), np.where(np.arange(n) % 2, 0.1, 0.9).astype(np.float32)

  item = captions.Item("alice/talk.mp4", os.path.join(videos, "alice", "talk.mp4"),
                       captions.Transcript())
  settings = builder.Settings(resolution=R, num_frames=T, sync_max_offset=3,
                              sync_min_confidence=0.5)
  tools = builder.Tools(faces.make_detector("lbp"), expert)
  records = []
  row = builder.process_video(item, settings, tools, records.append)
  assert calls == [((8, T, R, R, 3), (8, T * 640), 3)]
  assert row["clips"] == len(records) == 4 and row["dropped_by_sync"] == 4
  wav = decode.audio_16k(item.path, 0.0, 80 * 640)
  for record in records:
    assert record["sync_offset"] == 2 and record["sync_confidence"] == np.float32(0.9)
    first = int(round(record["start_time"] * 25)) + 2
    np.testing.assert_array_equal(record["audio"], wav[first * 640:(first + T) * 640])
  always_off = builder.Tools(tools.detector,
                             lambda c, a, m: (np.full(len(c), 5, np.int32),
                                              np.ones(len(c), np.float32)))
  with pytest.raises(decode.RejectError, match="low_sync"):
    builder.process_video(item, settings, always_off, records.append)


def test_project_syncnet_pass(videos, tmp_path):
  """The builder's SyncNet pass with the project's SyncNet (random weights: the numbers are
  arbitrary, the plumbing is real)."""
  inputs = tmp_path / "in"
  inputs.mkdir()
  os.symlink(os.path.join(videos, "alice", "talk.mp4"), inputs / "talk.mp4")
  workdir = vf.random_syncnet_workdir(str(tmp_path / "syncnet"), R)
  settings = builder.Settings(resolution=R, num_frames=T, syncnet_workdir=workdir,
                              sync_max_offset=2, sync_min_confidence=-1.0, validation_fraction=0.0,
                              test_fraction=1.0)
  summary = builder.build(str(inputs), str(tmp_path / "out"), settings, progress=False)
  assert summary.clips == {"test": 8} and summary.seconds["sync"] > 0
  (records,) = _records(str(tmp_path / "out")).values()
  offsets = np.array([r["sync_offset"] for r in records])
  assert np.all(np.abs(offsets) <= 2) and np.all(np.isfinite([r["sync_confidence"]
                                                             for r in records]))
  from gcm_jax.data.video_folder import sync  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match="train_syncnet"):
    sync.load_expert(str(tmp_path))
  with pytest.raises(ValueError, match=">= 6 frames"):
    builder.Settings(num_frames=5, syncnet_workdir=workdir)


def test_pipeline_reads_real_clips_without_synthetic_features(built):
  from tests import train_utils  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.update(name="video_folder", data_dir=built[0], num_frames=T)
  source = pipeline.data_source(config.data, "train")
  entry = datasets.DATASETS["video_folder"]
  features = pipeline.preprocess(source[0], text_max_len=96, dataset=entry,
                                 derived=("mouth_region",))
  assert not set(datasets.DATASETS["talking_faces"].features) & set(features)
  np.testing.assert_array_equal(features["mouth_region"],
                                faces.mouth_region(source[0]["mouth_box"], R))
  region = features["mouth_region"]
  assert region[:, R // 2:].all() and not region[:, :R // 2].any()
  with pytest.raises(ValueError, match="control_maps"):
    pipeline.preprocess(source[0], dataset=entry, derived=("control_maps",))
  missing = config.data.copy_and_resolve_references()
  missing.data_dir = "/nonexistent"
  with pytest.raises(FileNotFoundError, match="python -m gcm_jax.data.video_folder"):
    pipeline.data_source(missing, "train")


def test_the_pipeline_example_of_docs_data_md_runs_on_the_built_clips(built):
  """docs/data.md's `make_dataset` example ("## Pipeline"), run as written on the built
  clips (only the data_dir, resolution and clip length of this build put in)."""
  with open(os.path.join(REPO, "docs", "data.md"), encoding="utf-8") as f:
    doc = f.read()
  example = doc.split("## Pipeline", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
  assert 'name="video_folder"' in example
  for text, here in (('"/tmp/real/data"', repr(built[0])), ("resolution=128", f"resolution={R}"),
                     ("num_frames=16", f"num_frames={T}")):
    assert example.count(text) == 1, text
    example = example.replace(text, here)
  scope = {}
  exec(compile(example, "docs/data.md", "exec"), scope)  # pylint: disable=exec-used
  batch = scope["batch"]
  assert batch["video"].shape == (8, T, R, R, 3) and batch["mouth_region"].shape == (8, T, R, R)
  assert "control_maps" not in batch and "keypoints" not in batch
  assert scope["evals"].num_batches == 1  # The 8 validation clips, one finite batch.


def test_config_rules_for_real_data():
  from gcm_jax import config_validation  # pylint: disable=g-import-not-at-top
  from tests import train_utils  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.update(name="video_folder", resolution=256)
  config.model.patch_size = 8
  assert config_validation.problems(config) == []
  config.data.name = "talking_faces"
  assert any("expected one of (32, 64, 128)" in p for p in config_validation.problems(config))
  config.data.update(name="video_folder", resolution=32)
  config.model.update(reference_frames=2, masked_source=True)  # Stored reference frames.
  assert config_validation.problems(config) == []
  config.model.update(reference_frames=0, masked_source=False)
  config.control.update(enabled=True, base_workdir="/x")
  wanted = "needs control maps, which config.data.name = 'video_folder' does not make"
  assert any(wanted in p for p in config_validation.problems(config))


def test_train_and_evaluate_on_the_built_clips(built, tmp_path):
  """Two training steps with the clips' reference frames and the masked source (identity
  conditioning, docs/models.md "Identity"), then evaluation generates with them."""
  out = built[0]
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "run_train.py", "--config=tests/train_utils.py",
       f"--workdir={workdir}", "--config.data.name=video_folder",
       f"--config.data.data_dir={out}", f"--config.data.num_frames={T}",
       "--config.train.num_steps=2", "--config.diffusion.mouth_loss_weight=2.0",
       "--config.model.reference_frames=1", "--config.model.masked_source=True"],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / "logs" / "metrics.jsonl", encoding="utf-8") as f:
    losses = [json.loads(line)["loss"] for line in f if "loss" in line]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  from gcm_jax import evaluate  # pylint: disable=g-import-not-at-top
  syncnet = vf.random_syncnet_workdir(str(tmp_path / "syncnet"), R)
  report = evaluate.evaluate(str(workdir), {"syncnet_workdir": syncnet},
                             num_clips=4, clip_frames=T, noise_levels=(0.5,))
  assert report["dataset"] == "video_folder" and report["num_clips"] == 4
  assert np.isfinite(report["fidelity"]["flicker_255"]["ground_truth"])
  assert np.isfinite(report["generated_matched"]["lse_c"])
  assert "mouth_corr" not in report["generated_matched"]
  assert set(report["skipped"]) == (set(evaluate.NEEDS_TRUTH)
                                    | {"lse_syncnet_python", "fid", "fvd", "csim"})
