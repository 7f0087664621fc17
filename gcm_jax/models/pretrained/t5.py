"""T5 encoder (transformers' T5EncoderModel) in Flax; frozen inference only.

ids [B, L] -> shared embedding -> num_layers x [x += attn(RMSNorm(x)) + T5 relative position
bias; x += FF(RMSNorm(x))] -> final RMSNorm -> last hidden state [B, L, D]

No biases anywhere, unscaled q.k, one relative-position-bias table (layer 0's) shared by every
layer. FF is `wo(act(wi x))`, e.g. `relu` for the original T5 (`feed_forward_proj="relu"`),
or gated `wo(act(wi_0 x) * wi_1 x)`, e.g. gelu_tanh for T5 v1.1 / flan-t5 / mT5
(`"gated-gelu"`); `act` and the gating are transformers' `dense_act_fn` / `is_gated_act`,
read from config.json when it stores them, else derived from `feed_forward_proj`.
"""
import dataclasses
import math
from typing import Any, Mapping as MappingType

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import weights
from gcm_jax.models.pretrained import text_common


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The encoder's architecture, from config.json.

  `act` / `gated` are transformers' `dense_act_fn` / `is_gated_act`: derived from
  `feed_forward_proj` ("gated-gelu" -> gelu_new, gated), unless config.json stores them
  (transformers writes both), in which case the stored values win, as in transformers.
  """
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_heads: int
  num_buckets: int
  max_distance: int
  layer_norm_eps: float
  act: str
  gated: bool


# HF config.json key of each numeric field.
_FIELDS = {"vocab_size": "vocab_size", "d_model": "d_model", "d_kv": "d_kv", "d_ff": "d_ff",
           "num_layers": "num_layers", "num_heads": "num_heads",
           "num_buckets": "relative_attention_num_buckets",
           "max_distance": "relative_attention_max_distance",
           "layer_norm_eps": "layer_norm_epsilon"}
# transformers 5's T5Config and MT5Config defaults, by model_type (they differ).
_DEFAULTS = {
    "t5": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
           "num_heads": 8, "relative_attention_num_buckets": 32,
           "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
           "feed_forward_proj": "relu"},
    "mt5": {"vocab_size": 250112, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8,
            "num_heads": 6, "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
            "feed_forward_proj": "gated-gelu"},
}


def parse_feed_forward_proj(feed_forward_proj: str) -> tuple[bool, str]:
  """(is_gated_act, dense_act_fn) of transformers' `feed_forward_proj` ("relu", "gated-silu",
  ...; "gated-gelu" historically means gelu_new).

  Raises:
    weights.WeightImportError: not of the form "ACT" or "gated-ACT" (transformers refuses it).
  """
  parts = str(feed_forward_proj).split("-")
  if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise weights.WeightImportError(
        f"config.json asks for a T5 encoder this port does not compute: feed_forward_proj = "
        f"{feed_forward_proj!r} (expected 'ACT' or 'gated-ACT', e.g. 'relu', 'gated-gelu')")
  if feed_forward_proj == "gated-gelu":
    return True, "gelu_new"
  return parts[0] == "gated", parts[-1]


def config_from_hf(hf: MappingType[str, Any]) -> T5Config:
  """T5Config from a HF config.json dict (T5EncoderModel or a full T5 / mT5 model's).

  Missing fields take the defaults of the config's model_type (t5 or mt5); a stored
  `dense_act_fn` / `is_gated_act` overrides what `feed_forward_proj` implies, as in
  transformers.

  Raises:
    weights.WeightImportError: a malformed feed_forward_proj, an unknown activation or a
      non-boolean is_gated_act; every such field named.
  """
  defaults = _DEFAULTS["mt5" if hf.get("model_type") == "mt5" else "t5"]
  gated, act = parse_feed_forward_proj(
      hf.get("feed_forward_proj", defaults["feed_forward_proj"]))
  act = hf.get("dense_act_fn", act)
  gated = hf.get("is_gated_act", gated)
  problems = text_common.activation_problems(
      "dense_act_fn" if "dense_act_fn" in hf else "feed_forward_proj", act)
  if not isinstance(gated, bool):
    problems.append(f"is_gated_act = {gated!r} (expected true or false)")
  text_common.refuse("T5 encoder", problems)
  numbers = {field: hf.get(key, defaults[key]) for field, key in _FIELDS.items()}
  return T5Config(**numbers, act=act, gated=gated)


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int,
                             max_distance: int) -> np.ndarray:
  """T5's bidirectional bucket of each `key - query` distance (int array, any shape).

  Half the buckets per direction; within one, distances below num_buckets / 4 get their own
  bucket, longer ones log-spaced buckets up to `max_distance`. Computed in float32 as
  transformers does, so distances on a bucket boundary fall the same way.
  """
  num_buckets //= 2
  buckets = (relative_position > 0).astype(np.int64) * num_buckets
  distance = np.abs(relative_position)
  max_exact = num_buckets // 2
  log_ratio = (np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
               / np.float32(math.log(max_distance / max_exact))
               * np.float32(num_buckets - max_exact))
  large = np.minimum(max_exact + log_ratio.astype(np.int64), num_buckets - 1)
  return buckets + np.where(distance < max_exact, distance, large)


def _rms_norm(name: str, eps: float) -> nn.RMSNorm:
  return nn.RMSNorm(epsilon=eps, name=name)


class T5Block(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array, position_bias: jax.Array) -> jax.Array:
    """x [B, L, D], allowed keys [B, 1, 1, L], position_bias [1, H, L, L] -> [B, L, D]."""
    c = self.config
    inner = c.num_heads * c.d_kv
    h = _rms_norm("attention_norm", c.layer_norm_eps)(x)
    q, k, v = (text_common.split_heads(text_common.dense(inner, n, use_bias=False)(h),
                                       c.num_heads) for n in ("q", "k", "v"))
    a = text_common.attention(q, k, v, allowed, 1.0, bias=position_bias)
    x = x + text_common.dense(c.d_model, "o", use_bias=False)(a.reshape(a.shape[:2] + (inner,)))
    h = _rms_norm("ff_norm", c.layer_norm_eps)(x)
    act = text_common.activation(c.act)
    if c.gated:
      h = act(text_common.dense(c.d_ff, "wi_0", use_bias=False)(h)) * text_common.dense(
          c.d_ff, "wi_1", use_bias=False)(h)
    else:
      h = act(text_common.dense(c.d_ff, "wi", use_bias=False)(h))
    return x + text_common.dense(c.d_model, "wo", use_bias=False)(h)


class T5Encoder(nn.Module):
  """T5EncoderModel's last hidden state."""
  config: T5Config

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """input_ids int [B, L], attention_mask bool [B, L] (True = real token) -> [B, L, D]."""
    c = self.config
    length = input_ids.shape[1]
    x = nn.Embed(c.vocab_size, c.d_model, name="shared")(input_ids)
    positions = np.arange(length)
    buckets = relative_position_bucket(positions[None, :] - positions[:, None], c.num_buckets,
                                       c.max_distance)                      # [L (q), L (k)]
    table = nn.Embed(c.num_buckets, c.num_heads, name="relative_attention_bias")
    position_bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None]  # [1, H, L, L]
    allowed = text_common.key_mask(attention_mask)
    for i in range(c.num_layers):
      x = T5Block(c, name=f"block_{i}")(x, allowed, position_bias)
    return _rms_norm("final_layer_norm", c.layer_norm_eps)(x)


def name_map(config: T5Config) -> list[weights.Mapping]:
  """Flax T5Encoder params <- transformers T5EncoderModel state-dict keys."""
  out = (weights.embedding("shared", "shared")
         + weights.embedding("relative_attention_bias",
                             "encoder.block.0.layer.0.SelfAttention.relative_attention_bias")
         + [weights.Mapping("final_layer_norm/scale", "encoder.final_layer_norm.weight")])
  ff = ("wi_0", "wi_1", "wo") if config.gated else ("wi", "wo")
  for i in range(config.num_layers):
    f, t = f"block_{i}", f"encoder.block.{i}.layer"
    out.append(weights.Mapping(f"{f}/attention_norm/scale", f"{t}.0.layer_norm.weight"))
    out.append(weights.Mapping(f"{f}/ff_norm/scale", f"{t}.1.layer_norm.weight"))
    for n in ("q", "k", "v", "o"):
      out += weights.dense(f"{f}/{n}", f"{t}.0.SelfAttention.{n}", bias=False)
    for n in ff:
      out += weights.dense(f"{f}/{n}", f"{t}.1.DenseReluDense.{n}", bias=False)
  return out


FAMILY = text_common.Family(
    model_types=("t5", "mt5"),
    config_from_hf=config_from_hf,
    module=lambda config: T5Encoder(config),
    name_map=name_map,
    # The tied copy of `shared`, and the decoder / LM head of a full T5 model.
    ignore=(r"encoder\.embed_tokens\.weight", r"decoder\..*", r"lm_head\..*"),
    prefixes=("",),
    probe="encoder.final_layer_norm.weight",
    hidden_size=lambda config: config.d_model,
    # T5's relative positions have no hard limit; 512 is the length it was trained with.
    default_max_length=lambda hf: 512,
    aliases={"shared.weight": "encoder.embed_tokens.weight"},
)
