"""Pieces shared by the pretrained text-encoder ports (bert.py, t5.py, clip_text.py).

Each family module describes itself as one `Family` (how to read its HF config.json, which
Flax module to build, the explicit torch -> Flax name map, which checkpoint keys to ignore);
`text_encoders.py` keeps the registry of named encoders built from these.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping as MappingType, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax import weights

# Frozen encoders run once per caption (the embeddings are cached), so full float32 matmuls
# everywhere: the outputs then match the torch reference on GPU/TPU too, not only on CPU.
PRECISION = jax.lax.Precision.HIGHEST

# transformers' ACT2FN names -> functions with the same numerics.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),          # erf
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),       # tanh
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation transformers calls `name`; ValueError naming the supported ones."""
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r} is not supported (known: {sorted(ACTIVATIONS)})")
  return ACTIVATIONS[name]


# --- refusing configs a port does not compute ------------------------------------------------

def fixed_problems(hf: MappingType[str, Any], fixed: MappingType[str, Any]) -> list[str]:
  """One "field = value (...)" line per config.json field of `fixed` (field -> the one value
  the port computes) that `hf` sets to something else."""
  return [f"{key} = {hf[key]!r} (this port computes {value!r})" for key, value in fixed.items()
          if key in hf and hf[key] != value]


def activation_problems(field: str, name: Any) -> list[str]:
  """["field = name (...)"] if `name` is no activation of `ACTIVATIONS`, else []."""
  if isinstance(name, str) and name in ACTIVATIONS:
    return []
  return [f"{field} = {name!r} (supported: {sorted(ACTIVATIONS)})"]


def heads_problems(width_field: str, width: int, heads_field: str, heads: int) -> list[str]:
  """["..."] if `width` does not split into `heads` equal heads, else []."""
  if heads > 0 and width % heads == 0:
    return []
  return [f"{width_field} = {width} is not a multiple of {heads_field} = {heads}"]


def refuse(what: str, problems: Sequence[str]) -> None:
  """Raises `weights.WeightImportError` naming every problem (field and value) of a config
  asking for a `what` the port does not compute; returns if there is none."""
  if problems:
    raise weights.WeightImportError(
        f"config.json asks for a {what} this port does not compute: " + "; ".join(problems))


def dense(features: int, name: str, use_bias: bool = True) -> nn.Dense:
  """A float32, full-precision nn.Dense (the counterpart of torch's nn.Linear)."""
  return nn.Dense(features, use_bias=use_bias, precision=PRECISION, name=name)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: float,
              bias: jax.Array | None = None) -> jax.Array:
  """Softmax attention.

  Args:
    q, k, v: [B, L, H, Dh].
    allowed: bool, broadcastable to [B, H, L, L] (query, key); False keys get zero weight.
    scale: multiplies q.k (1/sqrt(Dh) for BERT/CLIP, 1 for T5).
    bias: optional additive float, broadcastable to [B, H, L, L] (T5's position bias).

  Returns:
    [B, L, H, Dh].
  """
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=PRECISION) * scale
  if bias is not None:
    scores = scores + bias
  scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=PRECISION)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
  """[B, L, H * Dh] -> [B, L, H, Dh]."""
  return x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))


def key_mask(mask: jax.Array) -> jax.Array:
  """Padding mask [B, L] (True = real token) -> allowed keys [B, 1, 1, L]."""
  return mask.astype(bool)[:, None, None, :]


@dataclasses.dataclass(frozen=True)
class Family:
  """One architecture family of text encoders.

  Attributes:
    model_types: HF `model_type` values of config.json this family reads.
    config_from_hf: HF config.json (dict) -> the family's config dataclass.
    module: config -> Flax module; `module(ids [B, L] int32, mask [B, L] bool)` gives the
      last hidden state [B, L, D].
    name_map: config -> list of `weights.Mapping` (Flax param <- torch key).
    ignore: regexes (full match) of checkpoint keys the encoder does not use (buffers such
      as position ids, heads, the decoder / vision tower of a full model).
    prefixes: key prefixes a checkpoint may put in front of the encoder's keys (e.g.
      "text_model." in a full CLIPModel); the first one under which `probe` exists is
      stripped.
    probe: a key every checkpoint of the family holds (after stripping the prefix).
    aliases: canonical key -> older name used when the canonical key is absent.
    hidden_size: config -> D.
    default_max_length: HF config.json -> the architecture's most tokens per sequence; the
      loader takes the smallest of it and the limits the folder's tokenizer_config.json /
      sentence_bert_config.json state.
  """
  model_types: tuple[str, ...]
  config_from_hf: Callable[[MappingType[str, Any]], Any]
  module: Callable[[Any], nn.Module]
  name_map: Callable[[Any], list[weights.Mapping]]
  ignore: tuple[str, ...]
  prefixes: tuple[str, ...]
  probe: str
  hidden_size: Callable[[Any], int]
  default_max_length: Callable[[MappingType[str, Any]], int]
  aliases: MappingType[str, str] = dataclasses.field(default_factory=dict)


def from_hf(cls: type, defaults: MappingType[str, Any], hf: MappingType[str, Any],
            fields: MappingType[str, str]) -> Any:
  """Builds dataclass `cls` from HF config `hf`: field <- hf[fields[field]] or its default."""
  return cls(**{field: hf.get(key, defaults[key]) for field, key in fields.items()})
