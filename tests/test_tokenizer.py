"""Byte tokenizer: round trip, padding, and errors instead of silent truncation."""
import numpy as np
import pytest

from gcm_jax.models import tokenizer


def test_round_trip_unicode_and_padding():
  text = "a green face says: ¡hola, ça va? 你好"
  ids = tokenizer.encode(text, 64)
  assert ids.shape == (64,) and ids.dtype == np.int32
  assert tokenizer.decode(ids) == text
  n = len(text.encode("utf-8"))
  np.testing.assert_array_equal(tokenizer.padding_mask(ids), np.arange(64) < n)
  assert ids[:n].min() >= 1 and ids[:n].max() < tokenizer.VOCAB_SIZE


def test_batch_shape():
  ids = tokenizer.encode_batch(["ab", "abcd"], 8)
  assert ids.shape == (2, 8)
  np.testing.assert_array_equal(tokenizer.padding_mask(ids).sum(1), [2, 4])


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_errors(text):
  with pytest.raises(ValueError, match="empty"):
    tokenizer.encode(text, 8)


def test_too_long_text_errors_instead_of_truncating():
  with pytest.raises(ValueError, match="9 UTF-8 bytes but max_len is 8"):
    tokenizer.encode("123456789", 8)
