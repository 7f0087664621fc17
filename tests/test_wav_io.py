"""wav_io.read_wav against ffmpeg's own decoding, hand-built chunk layouts and bad files.

Reference: the file decoded by the ffmpeg binary of the imageio-ffmpeg wheel to raw f64le.
ffmpeg scales integers by the same powers of two (u8: (x - 128) / 2^7, s16: x / 2^15,
s24 and s32: x / 2^31 after shifting into an int32), so the float32 output must equal the
reference rounded to float32 exactly (|difference| <= 2^-25 ~ 3e-8 before that rounding).
"""
import re
import struct
import subprocess
import wave

import imageio_ffmpeg
import numpy as np
import pytest

from gcm_jax import wav_io

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _signal(rate: int, channels: int, seconds: float = 0.05) -> np.ndarray:
  """A different tone per channel, float64 `[S, channels]`, peak 0.9."""
  t = np.arange(int(rate * seconds)) / rate
  return np.stack([0.9 * np.sin(2 * np.pi * (220 + 110 * c) * t + c) for c in range(channels)],
                  1)


def _ffmpeg_encode(signal: np.ndarray, rate: int, codec: str, out: str, *options: str) -> bytes:
  """Encodes float64 `[S, C]` with ffmpeg to `out` (a path or "pipe:1"); returns stdout."""
  return subprocess.run(
      [FFMPEG, "-y", "-loglevel", "error", "-f", "f64le", "-ar", str(rate), "-ac",
       str(signal.shape[1]), "-i", "pipe:0", "-c:a", codec, *options, "-f", "wav", out],
      input=signal.astype("<f8").tobytes(), capture_output=True, check=True).stdout


def _ffmpeg_decode(path: str, channels: int) -> np.ndarray:
  """The independent reference: ffmpeg's decoding of `path` as float64 `[S, channels]`."""
  raw = subprocess.run([FFMPEG, "-loglevel", "error", "-i", path, "-f", "f64le", "-acodec",
                        "pcm_f64le", "pipe:1"], capture_output=True, check=True).stdout
  return np.frombuffer(raw, "<f8").reshape(-1, channels)


def _format_tag(data: bytes) -> int:
  """wFormatTag of the first fmt chunk, read straight from the bytes."""
  return struct.unpack_from("<H", data, data.index(b"fmt ") + 8)[0]


def _assert_matches_ffmpeg(path: str, signal: np.ndarray, rate: int, atol: float) -> None:
  samples, got_rate = wav_io.read_wav(path)
  assert got_rate == rate and samples.dtype == np.float32 and samples.shape == signal.shape
  np.testing.assert_array_equal(samples, _ffmpeg_decode(path, signal.shape[1]).astype(np.float32))
  np.testing.assert_allclose(samples, signal, rtol=0, atol=atol)  # Quantization only.


@pytest.mark.parametrize("codec, channels, rate, tag, atol", [
    ("pcm_u8", 1, 8000, wav_io.PCM, 2**-8 + 1e-9),
    ("pcm_s16le", 2, 44100, wav_io.PCM, 2**-16 + 1e-9),
    ("pcm_s16le", 6, 16000, wav_io.EXTENSIBLE, 2**-16 + 1e-9),
    ("pcm_s24le", 1, 48000, wav_io.EXTENSIBLE, 2**-24 + 1e-7),
    ("pcm_s32le", 2, 22050, wav_io.EXTENSIBLE, 1e-7),
    ("pcm_f32le", 2, 16000, wav_io.IEEE_FLOAT, 1e-7),
    ("pcm_f32le", 6, 11025, wav_io.EXTENSIBLE, 1e-7),
    ("pcm_f64le", 1, 96000, wav_io.EXTENSIBLE, 1e-7),
])
def test_reads_ffmpeg_wavs_as_ffmpeg_decodes_them(tmp_path, codec, channels, rate, tag, atol):
  path = str(tmp_path / "x.wav")
  signal = _signal(rate, channels)
  _ffmpeg_encode(signal, rate, codec, path)
  with open(path, "rb") as f:
    data = f.read()
  assert _format_tag(data) == tag  # ffmpeg writes EXTENSIBLE for > 2 channels, > 16 bits, ...
  assert b"LIST" in data  # ffmpeg's metadata chunk sits before the data chunk.
  _assert_matches_ffmpeg(path, signal, rate, atol)


def test_streamed_wav_reads_to_the_end(tmp_path):
  signal = _signal(8000, 2)
  data = _ffmpeg_encode(signal, 8000, "pcm_s16le", "pipe:1")
  assert data[4:8] == b"\xff" * 4 and data[data.index(b"data") + 4:][:4] == b"\xff" * 4
  path = tmp_path / "streamed.wav"
  path.write_bytes(data)
  _assert_matches_ffmpeg(str(path), signal, 8000, 2**-16 + 1e-9)


def test_rf64_uses_the_ds64_data_size(tmp_path):
  signal = _signal(8000, 1)
  path = str(tmp_path / "x.wav")
  _ffmpeg_encode(signal, 8000, "pcm_s16le", path, "-rf64", "always")
  with open(path, "rb") as f:
    data = f.read()
  assert data[:4] == b"RF64" and b"ds64" in data
  with open(path, "ab") as f:  # A chunk after the data, which "to the end" would misread.
    f.write(b"JUNK" + struct.pack("<I", 4) + b"\x7f" * 4)
  _assert_matches_ffmpeg(path, signal, 8000, 2**-16 + 1e-9)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_plain_pcm_tag_at_every_width(tmp_path, width):
  """The `wave` module writes format tag 1 for every width (ffmpeg: EXTENSIBLE above 16)."""
  rate = 22050
  signal = _signal(rate, 2)
  bits = 8 * width
  ints = np.round(signal * (2**(bits - 1) - 1)).astype(np.int64)
  if width == 1:
    data = (ints + 128).astype(np.uint8).tobytes()
  else:
    data = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints.reshape(-1))
  path = str(tmp_path / "x.wav")
  with wave.open(path, "wb") as f:
    f.setnchannels(2)
    f.setsampwidth(width)
    f.setframerate(rate)
    f.writeframes(data)
  with open(path, "rb") as f:
    assert _format_tag(f.read()) == wav_io.PCM
  samples, got_rate = wav_io.read_wav(path)
  assert got_rate == rate
  np.testing.assert_array_equal(samples, (ints / 2.0**(bits - 1)).astype(np.float32))


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
  return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def _riff(*chunks: bytes) -> bytes:
  body = b"WAVE" + b"".join(chunks)
  return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt(channels: int = 2, rate: int = 8000, bits: int = 16, tag: int = wav_io.PCM) -> bytes:
  block = channels * bits // 8
  return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits))


_INTS = np.array([[0, -32768], [32767, 1], [-2, 12345]], "<i2")  # 3 stereo 16-bit frames.


def test_skips_unknown_chunks_and_their_pad_bytes(tmp_path):
  path = tmp_path / "x.wav"
  path.write_bytes(_riff(_chunk(b"JUNK", b"abc"), _fmt(), _chunk(b"LIST", b"INFOx"),
                         _chunk(b"fact", struct.pack("<I", 3)), _chunk(b"data", _INTS.tobytes()),
                         _chunk(b"id3 ", b"tag")))
  samples, rate = wav_io.read_wav(str(path))
  assert rate == 8000
  np.testing.assert_array_equal(samples, _INTS / 32768.0)


def test_odd_sized_data_chunk_then_more_chunks(tmp_path):
  path = tmp_path / "x.wav"
  ints = np.array([0, 255, 128, 1, 200], np.uint8)  # 5 bytes: a pad byte follows.
  path.write_bytes(_riff(_fmt(1, 11025, 8), _chunk(b"data", ints.tobytes()),
                         _chunk(b"LIST", b"INFO")))
  samples, rate = wav_io.read_wav(str(path))
  assert rate == 11025
  np.testing.assert_array_equal(samples[:, 0], (ints.astype(np.float64) - 128) / 128)


def _streamed(data: bytes) -> bytes:
  """Sets the RIFF and data sizes to 0xFFFFFFFF, as a writer to a pipe leaves them."""
  i = data.index(b"data") + 4
  return data[:4] + b"\xff" * 4 + data[8:i] + b"\xff" * 4 + data[i + 4:]


_GOOD = _riff(_fmt(), _chunk(b"data", _INTS.tobytes()))  # 12 bytes of samples, at the end.


@pytest.mark.parametrize("data, message", [
    (_GOOD[:-5], "truncated: its header says 12 bytes of samples, the file holds 7"),
    (_GOOD[:-1], "truncated: its header says 12 bytes of samples, the file holds 11"),
    (_streamed(_GOOD)[:-1], "truncated mid-sample: 11 bytes .* of 4-byte frames"),
    (_riff(_fmt(), _chunk(b"data", _INTS.tobytes()[:-2])), "truncated mid-sample: 10 bytes"),
    (_riff(_fmt(), _chunk(b"data", b"")), "has no samples"),
    (_riff(_fmt()), "no data chunk"),
    (_riff(_chunk(b"data", _INTS.tobytes())), "no fmt chunk"),
    (_GOOD[:20], "the fmt chunk is 0 bytes"),
    (b"RF64\xff\xff\xff\xffWAVE" + _chunk(b"ds64", bytes(28))[:20], "no fmt chunk"),
    (_riff(_fmt(bits=12), _chunk(b"data", b"")), "block size 3 does not match 2 channels of 12"),
    (_riff(_fmt(bits=24, tag=wav_io.IEEE_FLOAT), _chunk(b"data", b"")), "24-bit float"),
    (_riff(_fmt(bits=40), _chunk(b"data", b"")), "40-bit pcm"),
    (b"ID3\x04 not a wav at all", "not a WAV file"),
    (b"", "not a WAV file"),
    (b"RIFF\x04\x00\x00\x00AVI LIST", "not a WAV file"),
])
def test_bad_files_are_clear_errors(tmp_path, data, message):
  path = tmp_path / "voice.wav"
  path.write_bytes(data)
  with pytest.raises(ValueError, match=f"^{re.escape(str(path))}.*{message}"):
    wav_io.read_wav(str(path))


@pytest.mark.parametrize("codec, name, tag", [
    ("pcm_mulaw", "mu-law", 7), ("pcm_alaw", "A-law", 6), ("adpcm_ms", "Microsoft ADPCM", 2)])
def test_compressed_codecs_are_named(tmp_path, codec, name, tag):
  path = str(tmp_path / "x.wav")
  _ffmpeg_encode(_signal(8000, 1), 8000, codec, path)
  with pytest.raises(ValueError, match=rf"{name} \(format tag {tag:#06x}\).*-c:a pcm_s16le"):
    wav_io.read_wav(path)


def test_extensible_with_unknown_sub_format(tmp_path):
  path = tmp_path / "x.wav"
  _ffmpeg_encode(_signal(8000, 1), 8000, "pcm_s24le", str(path))
  data = bytearray(path.read_bytes())
  guid = data.index(b"fmt ") + 8 + 24
  data[guid + 2:guid + 16] = bytes(14)  # Not a KSDATAFORMAT_SUBTYPE_* GUID any more.
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="unsupported WAVE_FORMAT_EXTENSIBLE sub-format 0100"):
    wav_io.read_wav(str(path))
