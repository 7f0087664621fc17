"""Reading WAV files: PCM and IEEE float, any channel count and sample rate.

The RIFF chunks are parsed here (the standard library's `wave` reads neither float WAVs
nor WAVE_FORMAT_EXTENSIBLE, which ffmpeg writes for more than 2 channels, more than 16
bits or more than 48 kHz). Accepted:
  * format tags 1 (PCM), 3 (IEEE float) and 0xFFFE (WAVE_FORMAT_EXTENSIBLE with a PCM or
    float sub-format);
  * PCM 8-bit (unsigned), 16-, 24- and 32-bit (signed), scaled by 2^-(bits - 1) (8-bit:
    (x - 128) / 128), so full scale is [-1, 1); float 32- and 64-bit, returned as they are;
  * RIFF and RF64 (its `ds64` chunk gives the 64-bit data size) containers.
Chunks other than `fmt ` and `data` (LIST, fact, JUNK, ...) are skipped, with the pad byte
that follows an odd-sized chunk. A data size of 0xFFFFFFFF (a WAV streamed to a pipe,
whose writer could not go back to fill the size in) means "to the end of the file".
Compressed codecs (mu-law, A-law, ADPCM, MP3, ...) are rejected with their name, as are
truncated files: a data chunk shorter than its header says, or not a whole number of
sample frames.
"""
import struct
from typing import Iterator

import numpy as np

PCM = 0x0001
IEEE_FLOAT = 0x0003
EXTENSIBLE = 0xFFFE
STREAMED_SIZE = 0xFFFFFFFF  # A data size the writer never filled in: read to the end.
# KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag followed by these 14 bytes.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_CODEC_NAMES = {0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law",
                0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG audio",
                0x0055: "MP3", 0x0161: "WMA", 0x2000: "AC-3"}
_CONVERT = "ffmpeg -i in.wav -c:a pcm_s16le out.wav"


def read_wav(path: str) -> tuple[np.ndarray, int]:
  """Reads a PCM or float WAV file.

  Returns:
    (samples float32 `[S, channels]`, PCM scaled to [-1, 1), float as stored; the sample
    rate in Hz).

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: naming the file and the problem, if it is not a WAV file, misses its fmt
      or data chunk, uses a codec other than PCM/float, is truncated or has no samples.
  """
  with open(path, "rb") as f:
    buf = f.read()
  if len(buf) < 12 or buf[:4] not in (b"RIFF", b"RF64") or buf[8:12] != b"WAVE":
    raise ValueError(f"{path} is not a WAV file (no RIFF/WAVE header); convert it, e.g. "
                     f"`ffmpeg -i in.mp3 -c:a pcm_s16le out.wav`")
  fmt = data = ds64_size = None
  for chunk_id, start, size in _chunks(buf):
    if chunk_id == b"ds64" and min(size, len(buf) - start) >= 16:
      ds64_size = struct.unpack_from("<Q", buf, start + 8)[0]
    elif chunk_id == b"fmt " and fmt is None:
      fmt = buf[start:start + size]
    elif chunk_id == b"data" and data is None:
      data = (start, size)
    if fmt is not None and data is not None:
      break
  if fmt is None:
    raise ValueError(f"{path}: no fmt chunk (the WAV header is damaged or the file is cut)")
  encoding, channels, rate, block_align, width = _parse_fmt(fmt, path)
  if data is None:
    raise ValueError(f"{path}: no data chunk (the file holds no audio or is cut)")
  start, size = data
  held = len(buf) - start
  if size == STREAMED_SIZE:
    size = held if ds64_size is None else ds64_size
  if size > held:
    raise ValueError(f"{path} is truncated: its header says {size} bytes of samples, the "
                     f"file holds {held}")
  if size % block_align:
    raise ValueError(
        f"{path} is truncated mid-sample: {size} bytes of samples are not a whole number "
        f"of {block_align}-byte frames ({channels} channels x {width} bytes)")
  if size == 0:
    raise ValueError(f"{path} has no samples")
  samples = _decode(buf[start:start + size], encoding, width)
  return samples.reshape(-1, channels), rate


def _chunks(buf: bytes) -> Iterator[tuple[bytes, int, int]]:
  """Yields (chunk id, offset of its data, declared size) of the chunks after `WAVE`."""
  pos = 12
  while pos + 8 <= len(buf):
    chunk_id, size = struct.unpack_from("<4sI", buf, pos)
    yield chunk_id, pos + 8, size
    pos += 8 + size + (size & 1)  # Odd-sized chunks are followed by a pad byte.


def _codec_error(path: str, tag: int) -> ValueError:
  name = _CODEC_NAMES.get(tag, "an unknown codec")
  return ValueError(f"{path}: unsupported WAV codec {name} (format tag {tag:#06x}); only PCM "
                    f"and float WAVs are read: convert it with `{_CONVERT}`")


def _parse_fmt(fmt: bytes, path: str) -> tuple[str, int, int, int, int]:
  """The fmt chunk -> (encoding "pcm" or "float", channels, rate, block align, bytes/sample)."""
  if len(fmt) < 16:
    raise ValueError(f"{path}: the fmt chunk is {len(fmt)} bytes, a WAV needs at least 16")
  tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
  if tag == EXTENSIBLE:
    if len(fmt) < 40:
      raise ValueError(f"{path}: the WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(fmt)} bytes, "
                       f"it needs 40")
    guid = fmt[24:40]
    tag = struct.unpack_from("<H", guid)[0] if guid[2:] == _GUID_TAIL else None
    if tag is None:
      raise ValueError(f"{path}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}; "
                       f"convert it with `{_CONVERT}`")
  if tag not in (PCM, IEEE_FLOAT):
    raise _codec_error(path, tag)
  encoding = "pcm" if tag == PCM else "float"
  if channels == 0 or rate == 0:
    raise ValueError(f"{path}: the fmt chunk gives {channels} channels at {rate} Hz")
  width = -(-bits // 8)  # Container bytes; PCM narrower than it is left-justified.
  if not (1 <= width <= 4 if encoding == "pcm" else bits in (32, 64)):
    raise ValueError(f"{path}: unsupported sample format {bits}-bit {encoding}; convert it "
                     f"with `{_CONVERT}`")
  if block_align != channels * width:
    raise ValueError(f"{path}: the fmt chunk's block size {block_align} does not match "
                     f"{channels} channels of {bits} bits")
  return encoding, channels, rate, block_align, width


def _decode(data: bytes, encoding: str, width: int) -> np.ndarray:
  """Little-endian samples -> float32 `[S * channels]` (PCM scaled to [-1, 1))."""
  if encoding == "float":
    return np.frombuffer(data, f"<f{width}").astype(np.float32)
  if width == 1:
    return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
  if width == 3:  # Each 24-bit sample goes into the top three bytes of an int32.
    padded = np.zeros((len(data) // 3, 4), np.uint8)
    padded[:, 1:] = np.frombuffer(data, np.uint8).reshape(-1, 3)
    ints, bits = padded.view("<i4")[:, 0], 32
  else:
    ints, bits = np.frombuffer(data, f"<i{width}"), 8 * width
  # Scaling by a power of two is exact: this is x / 2^(bits - 1) rounded to float32.
  return ints.astype(np.float32) * np.float32(2.0**(1 - bits))
