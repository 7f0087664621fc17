"""Test videos made from scikit-image's astronaut photograph, encoded with PyAV.

The face moves and scales over time on a known path (`face_position`), its mouth opens with
the openness of espeak-ng speech (the talking-faces viseme track; the animation is the
photo_faces set's, `gcm_jax.data.photo_faces.animate`), and a flash + click
marker (a green square on the forehead for 0.1 s and a 10 ms 2 kHz burst) sits at a known
time, so tests can check the crop position and the audio-video alignment of a built clip.
`write_all(folder)` writes every fixture of `SPECS` (good and bad files) in a few seconds.
"""
import dataclasses
import fractions
import os
from typing import Optional

import av
import cv2
import numpy as np
import skimage.data

from gcm_jax.data import audio as audio_lib
from gcm_jax.data.photo_faces import animate
from gcm_jax.data.photo_faces import photos
from gcm_jax.data.talking_faces import speech
from gcm_jax.data.talking_faces import visemes


# In the 512x512 photograph: the face centre (x, y), the centre of the box the default
# detector finds around it, and the mouth centre (the photo_faces set's astronaut).
PORTRAIT = photos.ASTRONAUT
FACE_CENTER = np.array(PORTRAIT.face_center)
MOUTH_CENTER = np.array(PORTRAIT.mouth_center)
# The face grows from 0.5 to 0.62 photo pixels per frame pixel at a frame height of 192.
PATH = animate.HeadPath(face_start=0.5 * PORTRAIT.face_size / 192,
                        face_end=0.62 * PORTRAIT.face_size / 192)
PHRASE = "Papa bought a map, and we sailed to the moon and back."
MARKER_DURATION = 0.1
CLICK_DURATION = 0.01


@dataclasses.dataclass(frozen=True)
class Spec:
  """One test file. `fps=None`: variable frame rate (intervals alternate 1/20 and 1/45 s)."""
  name: str
  duration: float = 3.0
  size: tuple[int, int] = (256, 192)  # (W, H)
  fps: Optional[int] = 30
  video_codec: str = "libx264"
  audio_codec: str = "aac"
  sample_rate: int = 44100
  channels: int = 2
  audio_start: float = 0.0           # Audio stream start relative to the video (s).
  has_video: bool = True
  has_audio: bool = True
  face: bool = True
  scene_cut: Optional[float] = None  # Time of a cut to another shot of the face.
  marker: Optional[float] = 1.2      # Flash + click time (s).
  truncate: bool = False             # Keep only the first half of the file's bytes.
  transcript: Optional[str] = None   # Sidecar transcript: 'srt' (timed words) or 'txt'.
  second_face: bool = False          # Two people side by side, each in one half of the frame.

  @property
  def path_suffix(self) -> str:
    return ".webm" if self.video_codec == "libvpx-vp9" else ".mp4"


SPECS = (
    Spec("alice/talk", transcript="srt"),
    Spec("alice/late_audio", audio_start=0.3),
    Spec("bob/vfr", fps=None, transcript="txt"),
    Spec("bob/cut", duration=3.2, scene_cut=1.6, marker=None),
    Spec("carol/webm", video_codec="libvpx-vp9", audio_codec="libopus", sample_rate=48000),
    Spec("bad/truncated", truncate=True),
    Spec("bad/audio_only", has_video=False),
    Spec("bad/video_only", has_audio=False),
    Spec("bad/no_face", face=False),
    Spec("bad/short", duration=0.2, marker=None),
)
GOOD = tuple(s for s in SPECS if not s.name.startswith("bad/"))
EXPECTED_REJECTS = {"bad/truncated": "unreadable", "bad/audio_only": "no_video_stream",
                    "bad/video_only": "no_audio_stream", "bad/no_face": "no_face",
                    "bad/short": "too_short"}


def face_position(spec: Spec, t: float) -> tuple[np.ndarray, float]:
  """Face centre (x, y) in frame pixels and photo-to-frame scale at time `t` (s); the face
  grows from 0.27 to 0.34 of the frame height (`PATH`)."""
  w, h = spec.size
  center, face, _ = PATH.at(t, spec.duration, spec.size)
  scale = face / PORTRAIT.face_size
  if spec.scene_cut is not None and t >= spec.scene_cut:  # The other shot: moved and larger.
    center, scale = center + np.array([0.08 * w, 0.05 * h]), scale * 1.15
  return center, scale


def _photo(spec: Spec, t: float) -> np.ndarray:
  photo = skimage.data.astronaut()
  if not spec.face:  # The lower right of the photo: suit, flag and sky, no face.
    return np.ascontiguousarray(cv2.resize(photo[300:, 300:], (512, 512)))
  if spec.scene_cut is not None and t >= spec.scene_cut:
    return cv2.convertScaleAbs(photo, alpha=0.8, beta=10)  # Different exposure too.
  return photo


def render(spec: Spec, t: float, mouth_open: float) -> np.ndarray:
  """uint8 [H, W, 3] frame at time `t` with the mouth `mouth_open` (0..1) open."""
  if spec.second_face:  # Each half a frame of its own; the right one mirrored, out of phase.
    half = dataclasses.replace(spec, size=(spec.size[0] // 2, spec.size[1]), second_face=False)
    return np.concatenate([render(half, t, mouth_open),
                           render(half, t + spec.duration / 2, 1 - mouth_open)[:, ::-1]],
                          axis=1)
  photo = _photo(spec, t)
  if spec.face:
    photo = animate.draw_mouth(photo, PORTRAIT, mouth_open)
  center, scale = face_position(spec, t)
  frame = animate.place(photo, PORTRAIT, center, scale, spec.size)
  if spec.marker is not None and spec.marker <= t < spec.marker + MARKER_DURATION:
    x, y = (center + scale * np.array([0.0, -70.0])).astype(int)  # The forehead.
    half = max(5, spec.size[1] // 38)
    frame[y - half:y + half, x - half:x + half] = (0, 255, 0)  # Green: G - R finds it.
  return frame


def words(spec: Spec) -> list[tuple[str, float, float]]:
  """(word, start s, end s) of the speech in the video (punctuation stripped)."""
  return [(w.text.strip(",."), w.start, w.end)
          for w in speech.synthesize(PHRASE, "en-us", 190).words if w.end <= spec.duration]


def write_transcript(spec: Spec, video_path: str) -> None:
  """The sidecar transcript: one SRT cue per word (exact timings), or the plain text."""
  stem = os.path.splitext(video_path)[0]
  if spec.transcript == "srt":
    with open(stem + ".srt", "w", encoding="utf-8") as f:
      f.write(animate.srt(words(spec)))
  elif spec.transcript == "txt":
    with open(stem + ".txt", "w", encoding="utf-8") as f:
      f.write(PHRASE + "\n")


def speech_track(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
  """(16 kHz mono speech [duration * 16000] with the click, mouth openness per 10 ms)."""
  utterance = speech.synthesize(PHRASE, "en-us", 190)
  n = int(round(spec.duration * audio_lib.SAMPLE_RATE))
  wav = np.zeros(n, np.float32)
  wav[:min(n, len(utterance.wav))] = 0.5 * utterance.wav[:n]
  track = visemes.mouth_track(utterance.phonemes, 0.0, int(round(spec.duration * 100)),
                              fps=100).openness
  if spec.marker is not None:  # Silence around the click, then the click.
    quiet = slice(int((spec.marker - 0.15) * 16000), int((spec.marker + 0.15) * 16000))
    wav[quiet] = 0.0
    start = int(round(spec.marker * 16000))
    k = np.arange(int(CLICK_DURATION * 16000))
    wav[start:start + k.size] = 0.9 * np.sin(2 * np.pi * 2000 * k / 16000)
  return wav, track


def _frame_times(spec: Spec) -> np.ndarray:
  if spec.fps is not None:
    return np.arange(int(round(spec.duration * spec.fps))) / spec.fps
  steps = np.resize([1 / 20, 1 / 45], 400)
  times = np.concatenate([[0.0], np.cumsum(steps)])
  return times[times < spec.duration]


def write(spec: Spec, folder: str) -> str:
  """Encodes `spec` into `folder/<name><suffix>`; returns the path."""
  path = os.path.join(folder, spec.name + spec.path_suffix)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  wav, track = speech_track(spec)
  with av.open(path, "w") as container:
    if spec.has_video:
      video = container.add_stream(spec.video_codec, rate=spec.fps or 90)
      video.width, video.height = spec.size
      video.pix_fmt = "yuv420p"
      time_base = fractions.Fraction(1, 90000)
      video.time_base = time_base
      if spec.video_codec == "libvpx-vp9":
        video.options = {"deadline": "realtime", "cpu-used": "8"}
      else:
        video.options = {"preset": "ultrafast"}
        video.codec_context.time_base = time_base
    if spec.has_audio:
      sound = container.add_stream(spec.audio_codec, rate=spec.sample_rate)
      sound.layout = "stereo" if spec.channels == 2 else "mono"
    if spec.has_video:
      for t in _frame_times(spec):
        openness = float(track[min(int(t * 100), len(track) - 1)])
        frame = av.VideoFrame.from_ndarray(render(spec, t, openness), format="rgb24")
        frame.pts, frame.time_base = int(round(t * 90000)), time_base
        container.mux(video.encode(frame))
      container.mux(video.encode(None))
    if spec.has_audio:
      pcm = audio_lib.resample(wav, audio_lib.SAMPLE_RATE, spec.sample_rate).astype(np.float32)
      stereo = np.stack([pcm, 0.8 * pcm]) if spec.channels == 2 else pcm[None]
      # The stream starts `audio_start` s after the video with the sound of that time, so
      # voice and picture are in sync only where the start offset is honoured.
      offset = int(round(spec.audio_start * spec.sample_rate))
      stereo = stereo[:, offset:]
      block = 960 if spec.audio_codec == "libopus" else 1024
      for i in range(0, stereo.shape[1], block):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[:, i:i + block]), format="fltp", layout=sound.layout)
        frame.sample_rate = spec.sample_rate
        frame.pts = offset + i
        frame.time_base = fractions.Fraction(1, spec.sample_rate)
        container.mux(sound.encode(frame))
      container.mux(sound.encode(None))
  write_transcript(spec, path)
  if spec.truncate:
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
  return path


def write_all(folder: str, specs=SPECS) -> dict[str, str]:
  """Writes the fixtures; returns {spec name: path}."""
  return {spec.name: write(spec, folder) for spec in specs}


def random_syncnet_workdir(path: str, resolution: int) -> str:
  """A train_syncnet-style workdir (report.json + syncnet_params/) holding a randomly
  initialized project SyncNet for `resolution`-pixel faces: real plumbing, arbitrary scores."""
  import json  # pylint: disable=g-import-not-at-top  # JAX only where a SyncNet is needed.
  import jax  # pylint: disable=g-import-not-at-top
  from gcm_jax.configs import syncnet as syncnet_config  # pylint: disable=g-import-not-at-top
  from gcm_jax.models import syncnet as syncnet_lib  # pylint: disable=g-import-not-at-top
  from gcm_jax.models import trained_syncnet  # pylint: disable=g-import-not-at-top
  from gcm_jax.runs import export  # pylint: disable=g-import-not-at-top
  config = syncnet_config.get_config()
  config.data.resolution = resolution
  r = resolution
  variables = trained_syncnet.build_syncnet(config).init(
      jax.random.PRNGKey(0), np.zeros((1, syncnet_lib.SYNC_FRAMES, r - r // 2, r, 3), np.float32),
      np.zeros((1, syncnet_lib.MEL_FRAMES, syncnet_lib.NUM_MELS), np.float32))
  os.makedirs(path, exist_ok=True)
  export.save_params(os.path.join(path, trained_syncnet.SYNCNET_FILE), variables)
  with open(os.path.join(path, trained_syncnet.REPORT_FILE), "w", encoding="utf-8") as f:
    json.dump({"report": {}, "config": config.to_dict()}, f)
  return path
