"""Space-time diffusion transformer (STDiT) for text + audio conditioned video.

Input video `[B, T, H, W, C]` is cut into non-overlapping p x p patches per frame,
giving tokens `[B, T, N, D]` (N = H*W/p^2). Each `DiTBlock` applies, with AdaLN-zero
modulation from the per-frame conditioning vector
c_t = MLP(timestep) + proj(pooled text) + proj(pooled audio window of frame t):
  spatial self-attn (within a frame) -> temporal self-attn (across frames, rotary)
  -> text cross-attn (all frames) -> audio cross-attn (frame t -> its audio window)
  -> MLP.
With `attention='full3d'` the first two are replaced by one joint space-time layer.
The pooled-audio term gives the sound a direct per-frame path into every sublayer (as the
pooled text does for the whole clip); without it the mouth only learns to follow the audio
through the gated cross-attention, which the CPU recipe showed to be far slower.
All sublayer gates start at zero, so at init every block is the identity and the
final (zero-initialized) projection outputs zeros.
"""
from typing import Any, Mapping, Optional

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax.models import attention
from gcm_jax.models import encoders
from gcm_jax.models import layers

Array = jax.Array

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}
ATTENTION_KINDS = ("factorized", "full3d")  # Factorized space + time, or joint 3-D attention.
TOKENS = ("act_batch", "act_frames", "act_tokens", "act_embed")


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
  """AdaLN: x `[B, T, N, D]` * (1 + scale `[B, T, D]`) + shift `[B, T, D]`."""
  return x * (1 + scale[:, :, None, :]) + shift[:, :, None, :]


class DiTBlock(nn.Module):
  """One space-time block on tokens `[B, T, N, D]` conditioned on c `[B, T, D]`.

  Args (call):
    x: video tokens `[B, T, N, D]`.
    c: per-frame conditioning vectors `[B, T, D]`.
    text: text tokens `[B, L, D]`; text_mask `[B, L]` (True = real token).
    audio: per-frame audio tokens `[B, T, W, D]`.
  """
  num_heads: int
  mlp_ratio: float = 4.0
  attention: str = "factorized"
  temporal_rotary: bool = True
  attention_impl: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  def _sublayers(self):
    kw = dict(num_heads=self.num_heads, implementation=self.attention_impl, dtype=self.dtype)
    if self.attention == "factorized":
      self_attn = [
          ("spatial", attention.SpatialSelfAttention(**kw, name="spatial_attn")),
          ("temporal", attention.TemporalSelfAttention(
              **kw, rotary=self.temporal_rotary, name="temporal_attn")),
      ]
    elif self.attention == "full3d":
      self_attn = [("full3d", attention.FullSelfAttention(
          **kw, rotary=self.temporal_rotary, name="full_attn"))]
    else:
      raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
    return self_attn + [
        ("text", attention.TextCrossAttention(**kw, name="text_attn")),
        ("audio", attention.AudioCrossAttention(**kw, name="audio_attn")),
        ("mlp", layers.Mlp(self.mlp_ratio, self.dtype, name="mlp")),
    ]

  @nn.compact
  def __call__(self, x: Array, c: Array, text: Array, text_mask: Array,
               audio: Array) -> Array:
    width = x.shape[-1]
    sublayers = self._sublayers()
    modulation = layers.dense(3 * len(sublayers) * width, ("embed", "modulation"),
                              "adaln_modulation", self.dtype, zero_init=True)(nn.silu(c))
    chunks = jnp.split(modulation, 3 * len(sublayers), axis=-1)
    for i, (kind, layer) in enumerate(sublayers):
      shift, scale, gate = chunks[3 * i:3 * i + 3]
      h = _modulate(layers.layer_norm(f"norm_{kind}", use_scale_bias=False,
                                      dtype=self.dtype)(x), shift, scale)
      if kind == "text":
        h = layer(h, text, text_mask)
      elif kind == "audio":
        h = layer(h, audio)
      else:
        h = layer(h)
      x = x + gate[:, :, None, :] * h
      x = nn.with_logical_constraint(x, TOKENS)
    return x


def patchify(x: Array, patch_size: int) -> Array:
  """`[B, T, H, W, C]` -> non-overlapping patches `[B, T, (H/p)(W/p), p*p*C]` (row-major)."""
  p = patch_size
  return einops.rearrange(x, "b t (gh p1) (gw p2) c -> b t (gh gw) (p1 p2 c)", p1=p, p2=p)


def unpatchify(patches: Array, grid_h: int, patch_size: int) -> Array:
  """Inverse of `patchify`: `[B, T, N, p*p*C]` -> `[B, T, H, W, C]`."""
  p = patch_size
  return einops.rearrange(patches, "b t (gh gw) (p1 p2 c) -> b t (gh p1) (gw p2) c",
                          gh=grid_h, p1=p, p2=p)


def _check_inputs(x: Array, t: Array, cond: Mapping[str, Array], in_channels: int,
                  patch_size: int) -> None:
  """Raises ValueError naming the offending input when shapes/dtypes are wrong."""
  if x.ndim != 5:
    raise ValueError(f"video must be [B, T, H, W, C], got shape {x.shape}")
  b, t_frames, h, w, ch = x.shape
  if ch != in_channels:
    raise ValueError(f"video has {ch} channels, model expects in_channels={in_channels}")
  if h % patch_size or w % patch_size:
    raise ValueError(f"frame size {h}x{w} is not divisible by patch_size={patch_size}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"video must be floating point, got {x.dtype}")
  if t.shape != (b,):
    raise ValueError(f"timesteps must be [B={b}], got shape {t.shape}")
  for key in ("text_tokens", "text_mask", "mel"):
    if key not in cond:
      raise ValueError(f"cond is missing {key!r}; it has {sorted(cond)}")
  if cond["text_tokens"].shape[0] != b:
    raise ValueError(f"text_tokens batch {cond['text_tokens'].shape[0]} != video batch {b}")
  mel = cond["mel"]
  if mel.ndim != 4 or mel.shape[:2] != (b, t_frames):
    raise ValueError(f"mel must be [B={b}, T={t_frames}, W, M] (one window per video frame), "
                     f"got {mel.shape}")
  if "frames" in cond and cond["frames"].shape != x.shape:
    raise ValueError(f"conditioning frames {cond['frames'].shape} must match video {x.shape}")


class STDiT(nn.Module):
  """The space-time DiT denoiser: `(x_t, t, cond) -> prediction` `[B, T, H, W, C]`.

  `cond` holds:
    'text_tokens' int `[B, L]`, 'text_mask' bool `[B, L]`,
    'mel' float `[B, T, W, M]` (log-mel window per video frame),
    optional 'drop_text' / 'drop_audio' bool `[B]`: replace that condition by a learned
      null embedding (classifier-free guidance),
    optional 'frames' `[B, T, H, W, C]` and 'frame_mask' bool `[B, T]`: clean frames
      given as context (motion frames for long-video extension, infilling),
    optional 'control' list of `depth` residuals `[B, T, N, D]` from a ControlNet branch.
  `t` is a float `[B]` noise level, embedded after multiplying by `time_scale`.
  """
  in_channels: int = 3
  patch_size: int = 2
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  attention: str = "factorized"
  temporal_rotary: bool = True
  text_max_len: int = 64
  text_layers: int = 1
  audio_layers: int = 1
  num_mels: int = 80
  mel_window: int = 16
  frame_conditioning: bool = True
  time_scale: float = 1000.0
  dtype: Any = "float32"
  remat_policy: str = "none"
  attention_impl: Optional[str] = None

  def _encode_conditions(self, cond: Mapping[str, Array], batch: int, dtype):
    """Returns text `[B, L, D]`, text_mask `[B, L]`, pooled text `[B, D]`, audio `[B, T, W, D]`."""
    text = encoders.TextEncoder(self.width, self.text_layers, self.num_heads,
                                self.text_max_len, dtype, name="text_encoder")(
                                    cond["text_tokens"], cond["text_mask"])
    audio = encoders.AudioEncoder(self.width, self.audio_layers, self.num_heads,
                                  self.num_mels, self.mel_window, dtype,
                                  name="audio_encoder")(cond["mel"])
    text_mask = cond["text_mask"].astype(bool)
    null_init = layers.partitioned(nn.initializers.normal(0.02), ("length", "embed"))
    null_text = self.param("null_text", null_init, (1, self.width)).astype(dtype)
    null_audio = self.param("null_audio", null_init, (self.mel_window, self.width)).astype(dtype)
    drop_text = cond.get("drop_text", jnp.zeros((batch,), bool)).reshape(batch, 1)
    text = jnp.where(drop_text[:, :, None], null_text[None], text)
    text_mask = jnp.where(drop_text, jnp.arange(text.shape[1]) == 0, text_mask)
    drop_audio = cond.get("drop_audio", jnp.zeros((batch,), bool)).reshape(batch, 1, 1, 1)
    audio = jnp.where(drop_audio, null_audio[None, None], audio)
    weights = text_mask.astype(dtype)[..., None]
    pooled = (text * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    return text, text_mask, pooled, audio

  def _embed_video(self, x: Array, cond: Mapping[str, Array], dtype) -> Array:
    """Video `[B, T, H, W, C]` (+ context frames) -> tokens `[B, T, N, D]` with positions."""
    b, t_frames, h, w, _ = x.shape
    if self.frame_conditioning:
      frame_mask = cond.get("frame_mask", jnp.zeros((b, t_frames), bool))
      frame_mask = frame_mask.astype(x.dtype)[:, :, None, None, None]
      frames = cond.get("frames", jnp.zeros_like(x)) * frame_mask
      x = jnp.concatenate(
          [x, frames, jnp.broadcast_to(frame_mask, (b, t_frames, h, w, 1))], axis=-1)
    tokens = layers.dense(self.width, ("patch", "embed"), "patch_embed", dtype)(
        patchify(x, self.patch_size).astype(dtype))
    p = self.patch_size
    tokens = tokens + layers.sincos_2d_positions(h // p, w // p, self.width).astype(dtype)
    return nn.with_logical_constraint(tokens, TOKENS)

  def _conditioning(self, t: Array, cond: Mapping[str, Array], dtype):
    """Returns c `[B, T, D]`, text `[B, L, D]`, text_mask `[B, L]`, audio `[B, T, W, D]`."""
    text, text_mask, pooled, audio = self._encode_conditions(cond, t.shape[0], dtype)
    temb = layers.sinusoidal_embedding(t * self.time_scale, 256)
    temb = layers.dense(self.width, ("cond", "embed"), "time_fc1", dtype)(temb)
    temb = layers.dense(self.width, ("embed", "embed_out"), "time_fc2", dtype)(nn.silu(temb))
    c = temb + layers.dense(self.width, ("embed", "embed_out"), "text_pool_proj", dtype)(pooled)
    audio_pooled = layers.dense(self.width, ("embed", "embed_out"), "audio_pool_proj", dtype)(
        audio.mean(axis=2))
    return c[:, None, :] + audio_pooled, text, text_mask, audio

  def _block(self, index: int, dtype) -> DiTBlock:
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {sorted(REMAT_POLICIES)}, "
                       f"got {self.remat_policy!r}")
    block_cls = DiTBlock
    if self.remat_policy != "none":
      block_cls = nn.remat(DiTBlock, policy=REMAT_POLICIES[self.remat_policy])
    return block_cls(self.num_heads, self.mlp_ratio, self.attention, self.temporal_rotary,
                     self.attention_impl, dtype, name=f"block_{index}")

  @nn.compact
  def __call__(self, x: Array, t: Array, cond: Mapping[str, Array]) -> Array:
    _check_inputs(x, t, cond, self.in_channels, self.patch_size)
    dtype = jnp.dtype(self.dtype)
    _, _, h, w, ch = x.shape
    p = self.patch_size
    tokens = self._embed_video(x, cond, dtype)
    c, text, text_mask, audio = self._conditioning(t, cond, dtype)
    control = cond.get("control", ())
    if len(control) > self.depth:
      raise ValueError(f"got {len(control)} control residuals for a depth-{self.depth} model")
    for i in range(self.depth):
      tokens = self._block(i, dtype)(tokens, c, text, text_mask, audio)
      if i < len(control):
        tokens = tokens + control[i].astype(dtype)

    shift, scale = jnp.split(layers.dense(2 * self.width, ("embed", "modulation"),
                                          "final_modulation", dtype, zero_init=True)(
                                              nn.silu(c)), 2, axis=-1)
    tokens = _modulate(layers.layer_norm("final_norm", use_scale_bias=False, dtype=dtype)(tokens),
                       shift, scale)
    out = layers.dense(p * p * ch, ("embed", "patch"), "final_proj", dtype,
                       zero_init=True)(tokens)
    return unpatchify(out, h // p, p).astype(jnp.float32)
