"""The photo_faces source folder: every person of `photos.PEOPLE` talking, a few takes each,
as mp4 videos (H.264 + AAC, 25 fps, 16 kHz) with word-timed SRT transcripts and a manifest
that names each video's identity and split, ready for `python -m gcm_jax.data.video_folder`.

  OUT/<identity>/take_<k>.mp4 + take_<k>.srt
  OUT/manifest.jsonl   {"path": "<identity>/take_<k>.mp4", "identity": ..., "split": ...}
  OUT/people.json      per identity: split, photo, package, file, licence, colour, takes

A take: `Settings.phrases` phrases of the person's split (`talking_faces.corpus`: held-out
people speak held-out phrases with held-out voices), one voice and rate for the take, the
face on a head path drawn for the take (`animate.HeadPath`: size `face_range` of the frame
height, sway, roll), the mouth opening along the speech's viseme track. Everything is drawn
from `np.random.default_rng([seed, crc32(identity), k])`, so a take is the same in any run
and any order. A take whose video exists is not written again (resume).
"""
import dataclasses
import json
import os
import zlib
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from gcm_jax import video_io
from gcm_jax.data.photo_faces import animate
from gcm_jax.data.photo_faces import photos
from gcm_jax.data.talking_faces import corpus

FPS = 25


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the source videos look like."""
  takes: int = 4                        # videos per person
  phrases: int = 3                      # phrases per take
  size: int = 192                       # frame side (pixels)
  face_range: tuple[float, float] = (0.32, 0.44)  # face box size, fraction of the frame height
  sway: tuple[float, float] = (0.09, 0.045)  # largest sway (x, y), fraction of the frame
  roll: float = 5.0                     # largest head roll (degrees)
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TakePlan:
  phrases: tuple[str, ...]
  voice: str
  rate: int
  path: animate.HeadPath


def plan(person: photos.Person, take: int, settings: Settings = Settings()) -> TakePlan:
  """What take `take` of `person` says and how the head moves (deterministic)."""
  rng = np.random.default_rng([settings.seed, zlib.crc32(person.identity.encode()), take])
  phrase_pool, voices = corpus.SPLITS[person.split]
  picked = rng.choice(len(phrase_pool), size=min(settings.phrases, len(phrase_pool)),
                      replace=False)
  low, high = settings.face_range
  start, end = rng.uniform(low, high, size=2)
  path = animate.HeadPath(
      face_start=float(start), face_end=float(end),
      sway_x=float(rng.uniform(0.3, 1.0) * settings.sway[0]),
      sway_y=float(rng.uniform(0.3, 1.0) * settings.sway[1]),
      phase=float(rng.uniform(0, 2 * np.pi)), cycles=float(rng.uniform(0.5, 1.5)),
      roll=float(rng.uniform(-settings.roll, settings.roll)))
  return TakePlan(tuple(phrase_pool[i] for i in picked), str(rng.choice(voices)),
                  int(rng.choice(corpus.RATES)), path)


def _blur_others(photo: np.ndarray, person: photos.Person) -> np.ndarray:
  """The photo with its other detections (`Photo.blur`, all but the person's own) blurred
  inside an ellipse 1.3x their box, so a detector finds one face near the person."""
  out = photo.copy()
  own = np.array(person.portrait.face_center)
  for box in photos.PHOTOS[person.photo].blur:
    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    size = float(np.sqrt((x1 - x0) * (y1 - y0)))
    if np.linalg.norm(center - own) < 0.3 * person.portrait.face_size:
      continue  # The person's own face.
    mask = np.zeros(out.shape[:2], np.float32)
    cv2.ellipse(mask, tuple(int(v) for v in center), (int(0.65 * (x1 - x0)),
                                                      int(0.65 * (y1 - y0))), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.1 * size)[..., None]
    blurred = cv2.GaussianBlur(out, (0, 0), 0.2 * size)
    out = np.round(out * (1 - mask) + blurred * mask).astype(np.uint8)
  return out


def prepare(photo: np.ndarray, person: photos.Person, settings: Settings = Settings()
            ) -> tuple[np.ndarray, animate.Portrait]:
  """The part of the photo a take can show (4 face sizes around the face, other faces
  blurred), resampled (area) so the face is 1.25x its largest size in a frame, and the
  portrait in that image's pixels."""
  p = person.portrait
  image = _blur_others(photo, person)
  h, w = image.shape[:2]
  half = 2.0 * p.face_size
  x0, y0 = max(0, int(p.face_center[0] - half)), max(0, int(p.face_center[1] - half))
  x1, y1 = min(w, int(p.face_center[0] + half) + 1), min(h, int(p.face_center[1] + half) + 1)
  image = image[y0:y1, x0:x1]
  scale = 1.25 * settings.face_range[1] * settings.size / p.face_size
  size = (max(1, int(round(image.shape[1] * scale))), max(1, int(round(image.shape[0] * scale))))
  image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
  sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)

  def move(xy):
    return ((xy[0] - x0) * sx, (xy[1] - y0) * sy)

  return image, animate.Portrait(move(p.face_center), p.face_size * np.sqrt(sx * sy),
                                 move(p.mouth_center), p.mouth_width * np.sqrt(sx * sy))


def render_take(photo: np.ndarray, person: photos.Person, take: int,
                settings: Settings = Settings()) -> tuple[np.ndarray, animate.Take, TakePlan]:
  """(uint8 [T, S, S, 3] frames, the take's speech, its plan) of take `take` of `person`
  (`photo`: the person's photo as `photos.read` gives it)."""
  how = plan(person, take, settings)
  speech = animate.speech_take(how.phrases, how.voice, how.rate, fps=FPS)
  image, portrait = prepare(photo, person, settings)
  lips = animate.lip_color(image, portrait)
  size = (settings.size, settings.size)
  frames = np.stack([
      animate.render(image, portrait, how.path, t / FPS, speech.duration, size, float(o), lips)
      for t, o in enumerate(speech.openness)])
  return frames, speech, how


def write_take(folder: str, photo: np.ndarray, person: photos.Person, take: int,
               settings: Settings = Settings()) -> str:
  """Writes `folder/<identity>/take_<k>.mp4` and its `.srt` (skipped if the mp4 exists);
  returns the mp4's path relative to `folder`."""
  relative = f"{person.identity}/take_{take}.mp4"
  path = os.path.join(folder, relative)
  if os.path.exists(path):
    return relative
  frames, speech, _ = render_take(photo, person, take, settings)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path[:-4] + ".srt", "w", encoding="utf-8") as f:
    f.write(animate.srt([(w.text.strip(",.?!"), w.start, w.end) for w in speech.words]))
  partial = path[:-4] + ".partial.mp4"
  video_io.write_mp4(partial, frames, speech.wav, fps=FPS)
  os.replace(partial, path)
  return relative


@dataclasses.dataclass
class Summary:
  folder: str
  people: dict[str, int]           # split -> people written
  videos: dict[str, int]           # split -> videos
  missing: tuple[str, ...]         # identities whose photo could not be read

  def __str__(self) -> str:
    splits = ", ".join(f"{s} {self.people[s]} people / {self.videos[s]} videos"
                       for s in self.people)
    text = f"{self.folder}: {splits}; manifest {os.path.join(self.folder, 'manifest.jsonl')}"
    if self.missing:
      text += (f"; {len(self.missing)} people skipped (photo not found: "
               f"{photos.download_command('ARCHIVES')}, then --archives=ARCHIVES)")
    return text


def write_source(folder: str, archives: Optional[str] = None, settings: Settings = Settings(),
                 people: Optional[Sequence[photos.Person]] = None,
                 progress: Optional[Callable[[str], None]] = None) -> Summary:
  """Writes the source folder (module docstring) for `people` (default: every person whose
  photo is readable here, `photos.available`)."""
  missing = ()
  if people is None:
    people = photos.available(archives)
    missing = tuple(p.identity for p in photos.PEOPLE if p not in people)
  if not people:
    raise FileNotFoundError(f"no photo_faces photo readable; {photos.download_command('DIR')}")
  os.makedirs(folder, exist_ok=True)
  rows, info = [], {}
  cache: dict[str, np.ndarray] = {}
  for person in people:
    if person.photo not in cache:
      cache = {person.photo: photos.read(person.photo, archives)}  # Group photos: in order.
    for take in range(settings.takes):
      relative = write_take(folder, cache[person.photo], person, take, settings)
      rows.append({"path": relative, "identity": person.identity, "split": person.split})
      if progress:
        progress(relative)
    photo = photos.PHOTOS[person.photo]
    source = photos.SOURCES[photo.source]
    info[person.identity] = {
        "split": person.split, "photo": person.photo, "package": source.package,
        "version": source.version, "file": photo.member, "license": source.license,
        "colour": photo.colour, "takes": settings.takes}
  with open(os.path.join(folder, "manifest.jsonl"), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)
  with open(os.path.join(folder, "people.json"), "w", encoding="utf-8") as f:
    json.dump({"settings": dataclasses.asdict(settings), "people": info}, f, indent=1)
  splits = ("train", "validation", "test")
  return Summary(folder,
                 {s: sum(p.split == s for p in people) for s in splits},
                 {s: sum(r["split"] == s for r in rows) for s in splits}, missing)
