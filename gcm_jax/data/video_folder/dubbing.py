"""A source video to dub: its face tracked and cropped as the ingest does, and generated crops
pasted back into its own frames (the geometry of `gcm-generate --source_video`; the model
part is `gcm_jax.generate.dub`).

Three decoding passes; what is kept in memory is R x R crops, never the source's frames:
  1. `track_source`: the builder's detection pass (`builder.detect_pass`: 25 fps frames scaled
     to `detect_size`, scene cuts, the detector every `detect_every` frames and at cuts) and
     its tracker (`faces.track`) -> `Segment`s, runs of 25 fps frames with one face in one shot,
     with the ingest's crop windows (`faces.crop_window`, the build's margin and shift).
  2. `segment_crops`: those frames cropped as the builder crops clips (`faces.crop`) -> uint8
     `[L, R, R, 3]` per segment, what the model re-voices.
  3. `paste_frames`: every frame the source decodes, at its own timestamp and size, with the
     generated crop of its 25 fps frame blended into the dubbed region (`paste.paste_back`,
     `paste.feather_mask`); `write_video` encodes them with the new audio.

Recorded behaviours:
  * Frame rate: the output has the source's frames: the same count, size and presentation
    times (relative to the first frame), so a variable-frame-rate source stays variable. The
    model works at 25 fps (`decode.frames_25fps`): source frame i, on screen over [t_i,
    t_i+1), takes the generated crop of the 25 fps frame whose interval holds the middle of
    that (a 25 fps source: frame i <- frame i; at 50 fps each generated mouth shows twice; at
    30 fps one in five is shown twice).
  * Frames without a tracked face are passed through unchanged (bit for bit before encoding);
    inside a segment only the dubbed region (the run's mask, feathered inside it) changes.
  * A track spans its first to last detection (the ingest's rule); for dubbing it is held,
    with its last box, over the frames the detector did not examine after it (until the next
    examined frame, which may start another track, or the video's end), so a face seen to the
    end of a shot is dubbed to its end. At most `detect_every` - 1 frames (0.16 s by default)
    where the face may already have left get its last box.
  * Scene cuts end tracks (the ingest's rule); each segment is dubbed on its own, so no model
    window spans a cut.
  * A second person: the ingest's tracker follows the largest face and ends its track where
    another face at least `second_face_ratio` (0.6) as large is in view in two consecutive
    detections: those frames are passed through, not dubbed; a video where that holds
    wherever a face is found is refused (a one-line error), as is a video without a face.
  * A file PyAV cannot open is refused with `decode.unreadable_detail`'s message; a truncated
    file that opens gives the frames before the damage. The source's audio is not read (the new
    voice replaces it), so a video without an audio stream is fine.
  * Sizes: `write_video` encodes H.264 4:2:0, whose sides must be even: an odd-sized source is
    encoded with its last row / column repeated once (the arrays keep the source's size).
"""
import dataclasses
import fractions
from typing import Iterable, Iterator

import av
import numpy as np

from gcm_jax.data.video_folder import builder
from gcm_jax.data.video_folder import decode
from gcm_jax.data.video_folder import faces
from gcm_jax.data.video_folder import paste


@dataclasses.dataclass(frozen=True)
class Segment:
  """One face track to dub: 25 fps frames `[start, end)` and their crop windows float
  `[end - start, 4]` (x0, y0, x1, y1 in source pixels; `faces.crop_window`)."""
  start: int
  end: int
  windows: np.ndarray


@dataclasses.dataclass(frozen=True)
class SourceVideo:
  """A tracked source video (`track_source`).

  Attributes:
    path: the video file.
    width, height: its frame size in pixels.
    frame_rate: its average frame rate from the header (0 where it has none).
    num_frames: N, the 25 fps frames that cover it (its duration is N / 25 s to within 20 ms).
    segments: its face tracks, in time order, disjoint.
    track_ends: what ended the ingest's tracks (`faces.track`'s counts).
    settings: the build settings it was tracked and cropped with (resolution = the run's).
  """
  path: str
  width: int
  height: int
  frame_rate: float
  num_frames: int
  segments: tuple[Segment, ...]
  track_ends: dict[str, int]
  settings: builder.Settings

  @property
  def dubbed_frames(self) -> int:
    """The 25 fps frames inside a segment."""
    return sum(s.end - s.start for s in self.segments)


def _segment(track: faces.Track, examined: np.ndarray, num_frames: int,
             settings: builder.Settings) -> Segment:
  """The track held with its last box up to the next examined frame after its last detection
  (or the video's end), with its crop windows."""
  later = examined[examined >= track.end]
  end = int(later[0]) if later.size else num_frames
  boxes = np.pad(track.boxes, [(0, end - track.end), (0, 0)], mode="edge")
  return Segment(track.start, end, faces.crop_window(boxes, settings.margin, settings.shift))


def track_source(path: str, settings: builder.Settings) -> SourceVideo:
  """Tracks the face of the video at `path` with the ingest's detection pass and tracker.

  Raises:
    ValueError: one line naming the problem: the file cannot be read (no video stream, no
      decoder, not a video, damaged), no frame decodes, no face, or no face track (a second
      person in view wherever a face is).
  """
  try:
    info = decode.probe(path, require_audio=False)
    detector = faces.make_detector(settings.detector, settings.detector_model or None,
                                   settings.min_face)
    num, _, detections, cuts, scale = builder.detect_pass(path, info, settings, detector)
  except decode.RejectError as e:
    raise ValueError(e.detail or builder.REJECT_REASONS[e.reason]) from e
  if not num:
    raise ValueError("no video frame decodes")
  if not any(detections.values()):
    raise ValueError(
        f"no face found in any of its {num} frames (25 fps) by the {settings.detector!r} "
        f"detector (faces of at least {settings.min_face:g} of the shorter side): dubbing "
        f"needs a visible, frontal face")
  tracks, ends = faces.track(detections, cuts, scale, settings.track_config)
  if not tracks:
    if ends["second_face"]:
      raise ValueError(
          f"a second person is in view wherever a face is found (another face at least "
          f"{settings.second_face_ratio:g} as large as the largest one): dubbing follows one "
          f"person; cut the video to them")
    raise ValueError(f"no face stays in view for two detections (track ends: {ends})")
  examined = np.array(sorted(detections), int)
  return SourceVideo(path, info.width, info.height, info.frame_rate, num,
                     tuple(_segment(tr, examined, num, settings) for tr in tracks), ends,
                     settings)


def _owners(source: SourceVideo) -> np.ndarray:
  """int `[N]`: the segment of each 25 fps frame, -1 outside every segment."""
  owner = np.full(source.num_frames, -1, int)
  for i, segment in enumerate(source.segments):
    owner[segment.start:segment.end] = i
  return owner


def segment_crops(source: SourceVideo) -> list[np.ndarray]:
  """uint8 `[end - start, R, R, 3]` per segment: its 25 fps frames cropped as the builder
  crops clips (`faces.crop` of the frame `decode.frames_25fps` gives, at its window)."""
  r = source.settings.resolution
  owner = _owners(source)
  crops = [np.zeros((s.end - s.start, r, r, 3), np.uint8) for s in source.segments]
  wanted = lambda t: t < source.num_frames and owner[t] >= 0
  for t, _, frame in decode.frames_25fps(source.path, wanted=wanted):
    if t >= source.num_frames:
      break
    if owner[t] >= 0:
      segment = source.segments[owner[t]]
      crops[owner[t]][t - segment.start] = faces.crop(frame, segment.windows[t - segment.start],
                                                      r)
  return crops


def paste_frames(source: SourceVideo, generated: list[np.ndarray], weights: list[np.ndarray]
                 ) -> Iterator[tuple[float, np.ndarray, bool]]:
  """The dubbed video, frame by frame: (time s after the first frame, uint8 `[H, W, 3]`,
  whether a crop was pasted) for every frame the source decodes (module docstring).

  Args:
    source: the tracked video.
    generated: per segment its generated crops `[end - start, R, R, 3]` (float in [-1, 1] or
      uint8).
    weights: per segment the blending weights float32 `[end - start, R, R]`
      (`paste.feather_mask` of the dubbed region).
  """
  for i, (segment, crops, weight) in enumerate(zip(source.segments, generated, weights,
                                                   strict=True)):
    length = segment.end - segment.start
    if len(crops) != length or len(weight) != length:
      raise ValueError(f"segment {i} has {length} frames, but {len(crops)} generated crops and "
                       f"{len(weight)} weights")
  owner = _owners(source)

  def dubbed(time: float, frame: np.ndarray, end: float) -> tuple[float, np.ndarray, bool]:
    t = min(max(int(np.floor(0.5 * (time + end) * decode.FPS)), 0), source.num_frames - 1)
    if owner[t] < 0:
      return time, frame, False
    segment = source.segments[owner[t]]
    k = t - segment.start
    return time, paste.paste_back(frame, generated[owner[t]][k], segment.windows[k],
                                  weights[owner[t]][k]), True

  origin, pending, step = None, None, 1.0 / decode.FPS
  for time, duration, frame in decode.source_frames(source.path):
    origin = time if origin is None else origin
    if pending is not None:
      step = time - origin - pending[0]
      yield dubbed(pending[0], pending[1], time - origin)
    pending = (time - origin, frame, duration)
  if pending is not None:
    yield dubbed(pending[0], pending[1], pending[0] + (pending[2] or step))


def write_video(path: str, frames: Iterable[tuple[float, np.ndarray, bool]], width: int,
                height: int, audio: np.ndarray, frame_rate: float,
                sample_rate: int = decode.SAMPLE_RATE, crf: int = 18) -> int:
  """Encodes `frames` (`paste_frames`' (time s, uint8 `[height, width, 3]`, _)) at their
  timestamps as H.264 (libx264, yuv420p, constant quality `crf`) with mono `audio` float `[S]`
  in [-1, 1] as AAC, into the container of `path`'s extension (.mp4, .mov, .mkv), the audio
  interleaved with the frames; returns the frame count. `frame_rate` (the source's average; 25
  where 0) only guides the encoder."""
  time_base = fractions.Fraction(1, 90000)
  pcm = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)[None]
  count, written = 0, 0
  with av.open(path, "w") as container:
    video = container.add_stream(
        "libx264", rate=fractions.Fraction(frame_rate or decode.FPS).limit_denominator(1001))
    video.width, video.height = width + width % 2, height + height % 2
    video.pix_fmt = "yuv420p"
    video.time_base = video.codec_context.time_base = time_base
    video.options = {"crf": str(crf), "preset": "veryfast"}
    sound = container.add_stream("aac", rate=sample_rate)
    sound.layout = "mono"

    def audio_until(sample: int) -> None:
      nonlocal written
      for i in range(written, min(sample, pcm.shape[1]), 1024):
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]),
                                           format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, i
        chunk.time_base = fractions.Fraction(1, sample_rate)
        container.mux(sound.encode(chunk))
        written = i + 1024

    for time, frame, _ in frames:
      if frame.shape != (height, width, 3):
        raise ValueError(f"frame {count} is {frame.shape}, expected ({height}, {width}, 3)")
      even = np.pad(frame, [(0, height % 2), (0, width % 2), (0, 0)], mode="edge")
      picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24")
      picture.pts, picture.time_base = int(round(time * 90000)), time_base
      container.mux(video.encode(picture))
      count += 1
      audio_until(int(time * sample_rate))
    container.mux(video.encode(None))
    audio_until(pcm.shape[1])
    container.mux(sound.encode(None))
  return count
