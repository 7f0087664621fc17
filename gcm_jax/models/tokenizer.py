"""Byte-level text tokenizer: UTF-8 bytes shifted by one, 0 is padding.

No vocabulary file and nothing to download: every string has a tokenization, and
`decode(encode(s)) == s` for any text that fits in `max_len` bytes.
"""
from typing import Sequence

import numpy as np

PAD_ID = 0
VOCAB_SIZE = 257  # 256 byte values + padding.


def encode(text: str, max_len: int) -> np.ndarray:
  """Encodes one string into int32 token ids `[max_len]`, right-padded with PAD_ID.

  Raises:
    ValueError: if the text is empty/whitespace or its UTF-8 encoding exceeds `max_len`
      bytes (texts are never silently truncated).
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be str, got {type(text).__name__}")
  if not text.strip():
    raise ValueError("text is empty: the model needs a non-empty script/caption")
  data = text.encode("utf-8")
  if len(data) > max_len:
    raise ValueError(
        f"text is {len(data)} UTF-8 bytes but max_len is {max_len}; shorten it or raise "
        f"config.model.text_max_len")
  ids = np.zeros((max_len,), np.int32)
  ids[:len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
  return ids


def encode_batch(texts: Sequence[str], max_len: int) -> np.ndarray:
  """Encodes a batch of strings into int32 ids `[B, max_len]`."""
  return np.stack([encode(t, max_len) for t in texts])


def padding_mask(ids: np.ndarray) -> np.ndarray:
  """Boolean mask `[..., L]`: True where a token is real (not padding)."""
  return ids != PAD_ID


def decode(ids: np.ndarray) -> str:
  """Inverse of `encode` for a single `[L]` id array (padding dropped)."""
  ids = np.asarray(ids)
  return bytes((ids[ids != PAD_ID] - 1).astype(np.uint8).tolist()).decode("utf-8")
