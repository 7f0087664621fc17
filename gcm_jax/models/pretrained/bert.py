"""BERT encoder (transformers' BertModel, post-LN) in Flax, e.g. sentence-transformers'
all-MiniLM-L6-v2; frozen inference only (no dropout, no pooler head).

ids [B, L] -> word + absolute position + token-type-0 embeddings -> LayerNorm
  -> num_layers x [x = LN(x + attn(x)); x = LN(x + W2 act(W1 x))] -> last hidden state [B, L, D]

`mean_pool_normalize` is sentence-transformers' Pooling(mean) + Normalize on top of it.
"""
import dataclasses
from typing import Any, Mapping as MappingType

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax import weights
from gcm_jax.models.pretrained import text_common


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  layer_norm_eps: float
  hidden_act: str


# HF config.json key (and transformers' BertConfig default) of each field.
_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
           "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
           "intermediate_size": "intermediate_size",
           "max_position_embeddings": "max_position_embeddings",
           "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
           "hidden_act": "hidden_act"}
_DEFAULTS = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
             "hidden_act": "gelu"}


# config.json fields that change BertModel's computation and are fixed here: absolute
# positions (transformers 4's relative_key variants add distance embeddings), bidirectional
# self-attention (is_decoder makes it causal), no cross-attention layers.
_FIXED = {"position_embedding_type": "absolute", "is_decoder": False,
          "add_cross_attention": False}


def config_from_hf(hf: MappingType[str, Any]) -> BertConfig:
  """BertConfig from a HF config.json dict.

  Raises:
    weights.WeightImportError: a config this port does not compute (another position
      embedding type, a decoder, an unknown hidden_act, ...), every such field named.
  """
  config = text_common.from_hf(BertConfig, _DEFAULTS, hf, _FIELDS)
  text_common.refuse("BERT encoder", text_common.fixed_problems(hf, _FIXED)
                     + text_common.activation_problems("hidden_act", config.hidden_act)
                     + text_common.heads_problems("hidden_size", config.hidden_size,
                                                  "num_attention_heads", config.num_heads))
  return config


class BertLayer(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
    """x [B, L, D], allowed keys [B, 1, 1, L] -> [B, L, D]."""
    c = self.config
    q, k, v = (text_common.split_heads(text_common.dense(c.hidden_size, n)(x), c.num_heads)
               for n in ("query", "key", "value"))
    head_dim = c.hidden_size // c.num_heads
    a = text_common.attention(q, k, v, allowed, head_dim ** -0.5)
    a = text_common.dense(c.hidden_size, "attention_output")(a.reshape(x.shape))
    x = nn.LayerNorm(c.layer_norm_eps, name="attention_norm")(x + a)
    h = text_common.activation(c.hidden_act)(
        text_common.dense(c.intermediate_size, "intermediate")(x))
    h = text_common.dense(c.hidden_size, "output")(h)
    return nn.LayerNorm(c.layer_norm_eps, name="output_norm")(x + h)


class BertEncoder(nn.Module):
  """BertModel's last hidden state; token type 0 everywhere, positions 0..L-1."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """input_ids int [B, L], attention_mask bool [B, L] (True = real token) -> [B, L, D]."""
    c = self.config
    length = input_ids.shape[1]
    if length > c.max_position_embeddings:
      raise ValueError(f"{length} tokens exceed BERT's {c.max_position_embeddings} positions")
    x = (nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
         + nn.Embed(c.max_position_embeddings, c.hidden_size,
                    name="position_embeddings")(jnp.arange(length))[None]
         + nn.Embed(c.type_vocab_size, c.hidden_size,
                    name="token_type_embeddings")(jnp.zeros((1, 1), jnp.int32)))
    x = nn.LayerNorm(c.layer_norm_eps, name="embeddings_norm")(x)
    allowed = text_common.key_mask(attention_mask)
    for i in range(c.num_layers):
      x = BertLayer(c, name=f"layer_{i}")(x, allowed)
    return x


def name_map(config: BertConfig) -> list[weights.Mapping]:
  """Flax BertEncoder params <- transformers BertModel state-dict keys."""
  out = (weights.embedding("word_embeddings", "embeddings.word_embeddings")
         + weights.embedding("position_embeddings", "embeddings.position_embeddings")
         + weights.embedding("token_type_embeddings", "embeddings.token_type_embeddings")
         + weights.norm("embeddings_norm", "embeddings.LayerNorm"))
  for i in range(config.num_layers):
    f, t = f"layer_{i}", f"encoder.layer.{i}"
    out += (weights.dense(f"{f}/query", f"{t}.attention.self.query")
            + weights.dense(f"{f}/key", f"{t}.attention.self.key")
            + weights.dense(f"{f}/value", f"{t}.attention.self.value")
            + weights.dense(f"{f}/attention_output", f"{t}.attention.output.dense")
            + weights.norm(f"{f}/attention_norm", f"{t}.attention.output.LayerNorm")
            + weights.dense(f"{f}/intermediate", f"{t}.intermediate.dense")
            + weights.dense(f"{f}/output", f"{t}.output.dense")
            + weights.norm(f"{f}/output_norm", f"{t}.output.LayerNorm"))
  return out


def mean_pool_normalize(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """sentence-transformers' mean pooling + L2 normalization.

  Args:
    hidden: [N, L, D] last hidden states.
    mask: [N, L] bool, True for real tokens.

  Returns:
    [N, D] unit-norm sentence embeddings (the mean of the real tokens' states).
  """
  m = mask.astype(hidden.dtype)[..., None]
  mean = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


FAMILY = text_common.Family(
    model_types=("bert",),
    config_from_hf=config_from_hf,
    module=lambda config: BertEncoder(config),
    name_map=name_map,
    # Buffers, the pooler head sentence-transformers does not use, pre-training heads.
    ignore=(r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"pooler\..*",
            r"cls\..*"),
    prefixes=("", "bert."),
    probe="embeddings.word_embeddings.weight",
    hidden_size=lambda config: config.hidden_size,
    default_max_length=lambda hf: hf.get("max_position_embeddings", 512),
)
