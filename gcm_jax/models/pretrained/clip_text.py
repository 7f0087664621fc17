"""CLIP text tower (transformers' CLIPTextModel) in Flax; frozen inference only.

ids [B, L] -> token + absolute position embeddings -> num_layers x [x += causal attn(LN(x));
x += fc2(act(fc1(LN(x))))] -> final LayerNorm -> last hidden state [B, L, D]

`pooled_output` picks the state at each sequence's end-of-text token, as CLIPTextModel's
`pooler_output` does (no text projection: that belongs to CLIPModel).
"""
import dataclasses
from typing import Any, Mapping as MappingType

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax import weights
from gcm_jax.models.pretrained import text_common

# Configs written before transformers PR #24773 carry eos_token_id 2; for them CLIP pools at
# the largest token id (the end-of-text token is the last entry of CLIP's vocabulary).
LEGACY_EOS_TOKEN_ID = 2


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int
  layer_norm_eps: float
  hidden_act: str
  eos_token_id: int


_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
           "intermediate_size": "intermediate_size", "num_layers": "num_hidden_layers",
           "num_heads": "num_attention_heads",
           "max_position_embeddings": "max_position_embeddings",
           "layer_norm_eps": "layer_norm_eps", "hidden_act": "hidden_act",
           "eos_token_id": "eos_token_id"}
# transformers 5's CLIPTextConfig defaults.
_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
             "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
             "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu", "eos_token_id": 49407}


def text_config(hf: MappingType[str, Any]) -> MappingType[str, Any]:
  """The text part of a HF config.json: CLIPTextModel's own, or a full CLIPModel's text_config."""
  return hf.get("text_config", {}) if hf.get("model_type") == "clip" else hf


def config_from_hf(hf: MappingType[str, Any]) -> CLIPTextConfig:
  """CLIPTextConfig from a HF config.json dict (CLIPTextModel or full CLIPModel).

  Raises:
    weights.WeightImportError: an unknown hidden_act, or heads that do not split the width.
  """
  config = text_common.from_hf(CLIPTextConfig, _DEFAULTS, text_config(hf), _FIELDS)
  text_common.refuse("CLIP text encoder",
                     text_common.activation_problems("hidden_act", config.hidden_act)
                     + text_common.heads_problems("hidden_size", config.hidden_size,
                                                  "num_attention_heads", config.num_heads))
  return config


class CLIPLayer(nn.Module):
  config: CLIPTextConfig

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
    """x [B, L, D], allowed [B, 1, L, L] (causal and padding) -> [B, L, D]."""
    c = self.config
    h = nn.LayerNorm(c.layer_norm_eps, name="layer_norm1")(x)
    q, k, v = (text_common.split_heads(text_common.dense(c.hidden_size, n)(h), c.num_heads)
               for n in ("q_proj", "k_proj", "v_proj"))
    a = text_common.attention(q, k, v, allowed, (c.hidden_size // c.num_heads) ** -0.5)
    x = x + text_common.dense(c.hidden_size, "out_proj")(a.reshape(x.shape))
    h = nn.LayerNorm(c.layer_norm_eps, name="layer_norm2")(x)
    h = text_common.activation(c.hidden_act)(text_common.dense(c.intermediate_size, "fc1")(h))
    return x + text_common.dense(c.hidden_size, "fc2")(h)


class CLIPTextEncoder(nn.Module):
  """CLIPTextModel's last hidden state (after final_layer_norm)."""
  config: CLIPTextConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """input_ids int [B, L], attention_mask bool [B, L] (True = real token) -> [B, L, D]."""
    c = self.config
    length = input_ids.shape[1]
    if length > c.max_position_embeddings:
      raise ValueError(f"{length} tokens exceed CLIP's {c.max_position_embeddings} positions")
    x = (nn.Embed(c.vocab_size, c.hidden_size, name="token_embedding")(input_ids)
         + nn.Embed(c.max_position_embeddings, c.hidden_size,
                    name="position_embedding")(jnp.arange(length))[None])
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    allowed = causal & text_common.key_mask(attention_mask)
    for i in range(c.num_layers):
      x = CLIPLayer(c, name=f"layer_{i}")(x, allowed)
    return nn.LayerNorm(c.layer_norm_eps, name="final_layer_norm")(x)


def pooled_output(hidden: jax.Array, input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """CLIPTextModel's pooler_output: the state at the first end-of-text token.

  Args:
    hidden: [B, L, D] last hidden state.
    input_ids: int [B, L].
    eos_token_id: the config's; `LEGACY_EOS_TOKEN_ID` pools at the largest id instead.

  Returns:
    [B, D].
  """
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    index = jnp.argmax(input_ids, axis=-1)
  else:
    index = jnp.argmax(input_ids == eos_token_id, axis=-1)
  return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


def name_map(config: CLIPTextConfig) -> list[weights.Mapping]:
  """Flax CLIPTextEncoder params <- transformers CLIPTextModel state-dict keys."""
  out = (weights.embedding("token_embedding", "embeddings.token_embedding")
         + weights.embedding("position_embedding", "embeddings.position_embedding")
         + weights.norm("final_layer_norm", "final_layer_norm"))
  for i in range(config.num_layers):
    f, t = f"layer_{i}", f"encoder.layers.{i}"
    out += weights.norm(f"{f}/layer_norm1", f"{t}.layer_norm1")
    out += weights.norm(f"{f}/layer_norm2", f"{t}.layer_norm2")
    for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
      out += weights.dense(f"{f}/{n}", f"{t}.self_attn.{n}")
    out += weights.dense(f"{f}/fc1", f"{t}.mlp.fc1") + weights.dense(f"{f}/fc2", f"{t}.mlp.fc2")
  return out


FAMILY = text_common.Family(
    model_types=("clip_text_model", "clip"),
    config_from_hf=config_from_hf,
    module=lambda config: CLIPTextEncoder(config),
    name_map=name_map,
    # Buffers, and the vision tower / projections of a full CLIPModel.
    ignore=(r"embeddings\.position_ids", r"vision_model\..*", r"visual_projection\..*",
            r"text_projection\..*", r"logit_scale"),
    # transformers < 5 saved CLIPTextModel (and CLIPModel) under "text_model.".
    prefixes=("", "text_model."),
    probe="embeddings.token_embedding.weight",
    hidden_size=lambda config: config.hidden_size,
    default_max_length=lambda hf: text_config(hf).get("max_position_embeddings", 77),
)
