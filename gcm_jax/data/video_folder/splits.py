"""Splits by identity: a deterministic hash, so an identity's videos all land in one split.

The identity of a video is the manifest's `identity` column, else the rule named by
`--identity` (IDENTITY_RULES) applied to its path relative to the input root. A manifest
`split` column overrides the hash.
"""
import hashlib
import os
import re
from typing import Callable

SPLITS = ("train", "validation", "test")


def _parent(key: str) -> str:
  return os.path.basename(os.path.dirname(key)) or os.path.splitext(key)[0]


def _top_folder(key: str) -> str:
  parts = key.replace(os.sep, "/").split("/")
  return parts[0] if len(parts) > 1 else os.path.splitext(parts[0])[0]


def _stem_prefix(key: str) -> str:
  return re.sub(r"[_-]\d+$", "", os.path.splitext(os.path.basename(key))[0])


# Rule name -> identity of a video from its path relative to the input root.
IDENTITY_RULES: dict[str, Callable[[str], str]] = {
    "parent": _parent,          # person/clip.mp4 -> person
    "top_folder": _top_folder,  # VoxCeleb2: id00012/21Uxsk56VDQ/00001.mp4 -> id00012
    "stem_prefix": _stem_prefix,  # HDTF: WDA_BarackObama_000.mp4 -> WDA_BarackObama
}


def identity_of(key: str, rule: str) -> str:
  if rule not in IDENTITY_RULES:
    raise ValueError(f"unknown identity rule {rule!r}; expected one of {tuple(IDENTITY_RULES)}")
  return IDENTITY_RULES[rule](key)


def split_of(identity: str, validation_fraction: float, test_fraction: float) -> str:
  """'test' for the first `test_fraction` of the hash range, then 'validation', else 'train'."""
  digest = hashlib.sha256(identity.encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2**64
  if u < test_fraction:
    return "test"
  if u < test_fraction + validation_fraction:
    return "validation"
  return "train"
