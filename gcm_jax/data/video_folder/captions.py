"""Transcripts -> clip captions, and the input listing (a folder or a CSV / JSONL manifest).

A video's transcript is a sidecar file with the video's stem: `.srt` or `.vtt` (timed cues)
or `.txt` (plain text), or the manifest's `transcript` column (plain text). With timings a
clip's caption is the words spoken in its span: each cue's words get equal shares of the
cue's time, and a word belongs to the clip holding its midpoint. Without timings every clip
of the video gets the whole text. Captions are cut at a word boundary to `max_bytes` UTF-8
bytes (the model's text length); an empty caption is allowed (trained as dropped text).
"""
import csv
import dataclasses
import json
import os
import re
from typing import Callable, Optional

from gcm_jax.data.video_folder import splits

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
MANIFEST_COLUMNS = ("path", "transcript", "identity", "split")


@dataclasses.dataclass(frozen=True)
class Word:
  text: str
  start: float  # Seconds in the video.
  end: float


@dataclasses.dataclass(frozen=True)
class Transcript:
  """Timed `words`, or plain `text` (timed is None)."""
  words: tuple[Word, ...] = ()
  text: str = ""

  @property
  def timed(self) -> bool:
    return bool(self.words)

  def caption(self, start: float, end: float, max_bytes: int) -> str:
    """The words of [start, end) s (timed), else the whole text, cut to `max_bytes`."""
    if self.timed:
      text = " ".join(w.text for w in self.words if start <= 0.5 * (w.start + w.end) < end)
    else:
      text = self.text
    return truncate(" ".join(text.split()), max_bytes)


def truncate(text: str, max_bytes: int) -> str:
  """`text` cut at a word boundary to at most `max_bytes` UTF-8 bytes."""
  if len(text.encode("utf-8")) <= max_bytes:
    return text
  words, out = text.split(), ""
  for word in words:
    longer = f"{out} {word}" if out else word
    if len(longer.encode("utf-8")) > max_bytes:
      break
    out = longer
  return out


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]*>|\{[^}]*\}")


def _seconds(match: re.Match) -> float:
  h, m, s, frac = match.groups()
  return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_timed(text: str) -> Transcript:
  """SRT or WebVTT cues -> timed words (styling tags removed)."""
  words = []
  for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
    lines = block.strip().split("\n")
    timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
    if timing is None:
      continue
    times = list(_TIME.finditer(lines[timing]))
    if len(times) < 2:
      continue
    start, end = _seconds(times[0]), _seconds(times[1])
    cue = _TAG.sub("", " ".join(lines[timing + 1:])).split()
    step = (end - start) / max(len(cue), 1)
    words += [Word(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(cue)]
  return Transcript(words=tuple(words))


def parse_plain(text: str) -> Transcript:
  return Transcript(text=" ".join(text.split()))


# Sidecar extension -> parser, in order of preference.
SIDECARS: dict[str, Callable[[str], Transcript]] = {
    ".srt": parse_timed, ".vtt": parse_timed, ".txt": parse_plain}


def sidecar_transcript(video_path: str) -> Transcript:
  """The transcript next to a video (same stem), or an empty one."""
  stem = os.path.splitext(video_path)[0]
  for ext, parse in SIDECARS.items():
    if os.path.exists(stem + ext):
      with open(stem + ext, encoding="utf-8", errors="replace") as f:
        return parse(f.read())
  return Transcript()


@dataclasses.dataclass(frozen=True)
class Item:
  """One input video: `key` (its path relative to the input root, the id in the ledger),
  absolute `path`, `transcript`, and `identity` / `split` where the manifest names them."""
  key: str
  path: str
  transcript: Transcript
  identity: Optional[str] = None
  split: Optional[str] = None


def _from_folder(root: str) -> list[Item]:
  items = []
  for folder, _, files in os.walk(root, followlinks=True):
    for name in files:
      if name.lower().endswith(VIDEO_EXTENSIONS):
        path = os.path.join(folder, name)
        items.append(Item(os.path.relpath(path, root), path, sidecar_transcript(path)))
  return items


def _manifest_rows(path: str) -> list[dict[str, str]]:
  with open(path, encoding="utf-8") as f:
    if path.endswith(".jsonl"):
      return [json.loads(line) for line in f if line.strip()]
    return list(csv.DictReader(f))


def _from_manifest(path: str) -> list[Item]:
  root = os.path.dirname(os.path.abspath(path))
  items = []
  for row in _manifest_rows(path):
    if not row.get("path"):
      raise ValueError(f"{path}: every row needs a 'path' (columns: {MANIFEST_COLUMNS})")
    if row.get("split") and row["split"] not in splits.SPLITS:
      raise ValueError(f"{path}: split {row['split']!r} of {row['path']!r} is not one of "
                       f"{splits.SPLITS}")
    video = os.path.join(root, row["path"])
    transcript = (parse_plain(row["transcript"]) if row.get("transcript")
                  else sidecar_transcript(video))
    items.append(Item(row["path"], video, transcript, row.get("identity") or None,
                      row.get("split") or None))
  return items


def list_inputs(source: str) -> list[Item]:
  """The videos of a folder tree (sidecar transcripts) or of a `.csv` / `.jsonl` manifest
  (columns MANIFEST_COLUMNS; paths relative to the manifest), sorted by key."""
  if os.path.isdir(source):
    items = _from_folder(source)
  elif source.endswith((".csv", ".jsonl")):
    items = _from_manifest(source)
  else:
    raise ValueError(f"--input must be a folder or a .csv / .jsonl manifest, got {source!r}")
  return sorted(items, key=lambda item: item.key)

