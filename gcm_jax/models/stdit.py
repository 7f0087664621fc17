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

The depth blocks run as a Python loop (params `block_0` ... `block_{depth-1}`), or with
`scan_blocks=True` under `nn.scan` (one set of params `blocks` stacked along a leading
`[depth]` axis named 'layers'), so compile time does not grow with the depth;
`stack_block_params` / `unstack_block_params` convert between the two layouts.
"""
import re
from typing import Any, Mapping, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from gcm_jax.models import attention
from gcm_jax.models import conditioning
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
# How reference frames enter (`STDiT.reference_inputs`): as context frames in front of the
# video, or as input channels of every frame.
REFERENCE_INPUTS = ("frames", "channels")
SCANNED_BLOCKS = "blocks"  # Param name of the scanned blocks (`scan_blocks=True`).
LAYERS_AXIS = "layers"  # Logical name of their stacked leading `[depth]` axis.


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
    return self._residual_sublayers(x, c, text, text_mask, audio)

  def _residual_sublayers(self, x: Array, c: Array, text: Array, text_mask: Array,
                          audio: Array) -> Array:
    """The block's computation (its submodules are created here, in the compact call)."""
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


class ScanStep(DiTBlock):
  """`DiTBlock` as the body of `nn.scan` over the depth.

  Args (call): x (the carry) `[B, T, N, D]`; residual: this block's control residual
  `[B, T, N, D]` in the compute dtype (a slice of the scanned `[depth, B, T, N, D]`) or
  None; c, text, text_mask, audio as for `DiTBlock` (broadcast to every step).
  Returns: (block(x) + residual, None).
  """

  @nn.compact
  def __call__(self, x: Array, residual: Optional[Array], c: Array, text: Array,  # pytype: disable=signature-mismatch
               text_mask: Array, audio: Array) -> tuple[Array, None]:
    x = self._residual_sublayers(x, c, text, text_mask, audio)
    if residual is not None:
      x = x + residual
    return x, None


def _block_names(params: Mapping[str, Any]) -> list[str]:
  """The looped blocks' param names `block_0` ... `block_{d-1}` of `params`, in order."""
  names = sorted((k for k in params if re.fullmatch(r"block_\d+", k)), key=lambda k: int(k[6:]))
  if names != [f"block_{i}" for i in range(len(names))]:
    raise ValueError(f"looped block params must be block_0 ... block_{{d-1}}, got {names}")
  return names


def stack_block_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """Looped layout -> scanned layout (`scan_blocks=True`).

  `params['block_i']` (trees of arrays `[...]`, i < depth) become one tree
  `params['blocks']` of arrays `[depth, ...]`; every other entry is kept as is. Also
  applies to any tree with the params' layout (EMA params, Adam moments).

  Raises:
    ValueError: no `block_i` entries, or their indices are not 0 ... depth - 1.
  """
  names = _block_names(params)
  if not names:
    raise ValueError(f"no looped block params (block_0, ...) among {sorted(params)}")
  out = {k: v for k, v in params.items() if k not in names}
  out[SCANNED_BLOCKS] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[n] for n in names])
  return out


def unstack_block_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned layout -> looped layout: the inverse of `stack_block_params`.

  Raises:
    ValueError: `params` has no 'blocks' entry.
  """
  if SCANNED_BLOCKS not in params:
    raise ValueError(f"no scanned block params {SCANNED_BLOCKS!r} among {sorted(params)}")
  blocks = params[SCANNED_BLOCKS]
  depth = jax.tree.leaves(blocks)[0].shape[0]
  out = {k: v for k, v in params.items() if k != SCANNED_BLOCKS}
  for i in range(depth):
    out[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], blocks)
  return out


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
                  patch_size: int, keys: tuple[str, ...]) -> None:
  """Raises ValueError naming the offending input when shapes/dtypes are wrong; `keys` are
  the cond's (text, text_mask, audio) keys (`conditioning.cond_keys`)."""
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
  for key in keys:
    if key not in cond:
      raise ValueError(f"cond is missing {key!r}; it has {sorted(cond)}")
  text_key, _, audio_key = keys
  if cond[text_key].shape[0] != b:
    raise ValueError(f"{text_key} batch {cond[text_key].shape[0]} != video batch {b}")
  windows = cond[audio_key]
  if windows.ndim != 4 or windows.shape[:2] != (b, t_frames):
    raise ValueError(f"{audio_key} must be [B={b}, T={t_frames}, W, M] (one window per video "
                     f"frame), got {windows.shape}")
  if "frames" in cond and cond["frames"].shape != x.shape:
    raise ValueError(f"conditioning frames {cond['frames'].shape} must match video {x.shape}")


def _check_identity_inputs(x: Array, cond: Mapping[str, Array], reference_frames: int,
                           masked_source: bool) -> None:
  """Raises ValueError naming the missing or misshapen reference / source input."""
  b, t_frames, h, w, ch = x.shape
  if reference_frames:
    want = (b, reference_frames, h, w, ch)
    if "reference" not in cond or cond["reference"].shape != want:
      got = cond["reference"].shape if "reference" in cond else "none"
      raise ValueError(f"cond['reference'] must be {list(want)} (reference_frames="
                       f"{reference_frames}), got {got}")
  if masked_source:
    for key, want in (("source", x.shape), ("source_mask", (b, t_frames, h, w, 1))):
      if key not in cond or cond[key].shape != want:
        got = cond[key].shape if key in cond else "none"
        raise ValueError(f"cond[{key!r}] must be {list(want)} (masked_source), got {got}")


def _identity_conv_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
  """Conv kernel `[kh, kw, C, C]` that copies its input: the identity at the centre tap."""
  del key
  kernel = jnp.zeros(shape, dtype)
  return kernel.at[shape[0] // 2, shape[1] // 2].set(jnp.eye(shape[2], shape[3], dtype=dtype))


class STDiT(nn.Module):
  """The space-time DiT denoiser: `(x_t, t, cond) -> prediction` `[B, T, H, W, C]`.

  `cond` holds (`conditioning` has the keys per `text_encoder` / `audio_encoder`):
    'text_tokens' int `[B, L]` (text_encoder 'bytes') or 'text_embeddings' float `[B, L, E]`
      (a frozen pretrained text encoder's output), 'text_mask' bool `[B, L]`,
    'mel' float `[B, T, W, M]` (log-mel window per video frame; audio_encoder 'mel') or
      '<encoder>' float `[B, T, W, D]` (a frozen audio encoder's windows: 'whisper', ...),
    optional 'drop_text' / 'drop_audio' bool `[B]`: replace that condition by a learned
      null embedding (classifier-free guidance); an empty text (text_mask all False) is
      always the dropped text,
    optional 'frames' `[B, T, H, W, C]` and 'frame_mask' bool `[B, T]`: clean frames
      given as context (motion frames for long-video extension, infilling),
    optional 'control' list of K <= `depth` residuals `[B, T, N, D]` from a ControlNet
      branch, added after blocks 0 ... K-1,
    with `reference_frames` = R > 0: 'reference' `[B, R, H, W, C]`, clean frames of the
      person to draw (another time of the same video, or a photo) and 'drop_reference' bool
      `[B]`; they are embedded as known frames (like motion frames) plus a learned reference
      embedding and put in front of the video along time, so temporal attention at every
      patch position and spatial attention within them read the person; their tokens are
      dropped after the last block. A dropped reference is all zeros and unknown.
      With `reference_inputs` = 'channels' (the anchors' way, LatentSync's reference
      channels) they are instead concatenated to every frame's input channels (R C more,
      zeros where dropped), no frame is added,
    with `masked_source`: 'source' `[B, T, H, W, C]` (the frames to re-voice, zero where
      'source_mask' `[B, T, H, W, 1]` is 1: the mouth area to generate) and 'source_mask',
      concatenated to the input channels (dubbing, as LatentSync's masked-frame channels).
  `t` is a float `[B]` noise level, embedded after multiplying by `time_scale`.
  `scan_blocks=True` runs the blocks under `nn.scan` (params 'blocks' `[depth, ...]`)
  instead of a Python loop (params 'block_i'); the outputs are the same.
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
  text_encoder: str = conditioning.BYTE_TEXT
  audio_encoder: str = "mel"
  frame_conditioning: bool = True
  time_scale: float = 1000.0
  dtype: Any = "float32"
  remat_policy: str = "none"
  attention_impl: Optional[str] = None
  scan_blocks: bool = False
  final_conv: bool = False
  reference_frames: int = 0
  reference_inputs: str = "frames"
  masked_source: bool = False

  @property
  def _context_frames(self) -> int:
    """The reference frames put in front of the video (`reference_inputs` 'frames')."""
    return self.reference_frames if self.reference_inputs == "frames" else 0

  def _encode_conditions(self, cond: Mapping[str, Array], batch: int, dtype):
    """Returns text `[B, L, D]`, text_mask `[B, L]`, pooled text `[B, D]`, audio `[B, T, W, D]`."""
    fields = self._fields()
    text_key, mask_key, audio_key = conditioning.cond_keys(fields)
    text_mask = cond[mask_key].astype(bool)
    # An empty caption (no real token, e.g. a real clip without transcript) is the dropped
    # text; the encoder sees its first position so that no attention row is fully masked.
    empty = ~jnp.any(text_mask, axis=-1, keepdims=True)  # [B, 1]
    encoder_mask = jnp.where(empty, jnp.arange(text_mask.shape[1]) == 0, text_mask)
    if text_key == "text_tokens":
      text = encoders.TextEncoder(self.width, self.text_layers, self.num_heads,
                                  self.text_max_len, dtype, name="text_encoder")(
                                      cond[text_key], encoder_mask)
    else:
      text = encoders.EmbeddingTextEncoder(self.width, self.text_layers, self.num_heads, dtype,
                                           name="text_encoder")(cond[text_key], encoder_mask)
    # Mel windows have configured sizes (checked); pretrained features bring their own.
    window, feature_dim = ((self.mel_window, self.num_mels) if audio_key == "mel"
                           else cond[audio_key].shape[2:])
    audio = encoders.AudioEncoder(self.width, self.audio_layers, self.num_heads, feature_dim,
                                  window, dtype, name="audio_encoder")(cond[audio_key])
    null_init = layers.partitioned(nn.initializers.normal(0.02), ("length", "embed"))
    null_text = self.param("null_text", null_init, (1, self.width)).astype(dtype)
    null_audio = self.param("null_audio", null_init, (window, self.width)).astype(dtype)
    drop_text = cond.get("drop_text", jnp.zeros((batch,), bool)).reshape(batch, 1) | empty
    text = jnp.where(drop_text[:, :, None], null_text[None], text)
    text_mask = jnp.where(drop_text, jnp.arange(text.shape[1]) == 0, text_mask)
    drop_audio = cond.get("drop_audio", jnp.zeros((batch,), bool)).reshape(batch, 1, 1, 1)
    audio = jnp.where(drop_audio, null_audio[None, None], audio)
    if self._context_frames:  # Reference frames hear the null audio.
      audio = jnp.concatenate([jnp.broadcast_to(null_audio[None, None], (
          batch, self._context_frames) + null_audio.shape).astype(audio.dtype), audio], axis=1)
    weights = text_mask.astype(dtype)[..., None]
    pooled = (text * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    return text, text_mask, pooled, audio

  def _fields(self) -> dict[str, Any]:
    """The conditioning-related fields, as `conditioning`'s functions read them."""
    return {"text_encoder": self.text_encoder, "audio_encoder": self.audio_encoder}

  def _check_inputs(self, x: Array, t: Array, cond: Mapping[str, Array]) -> None:
    _check_inputs(x, t, cond, self.in_channels, self.patch_size,
                  conditioning.cond_keys(self._fields()))
    _check_identity_inputs(x, cond, self.reference_frames, self.masked_source)

  def _input_channels(self, x: Array, cond: Mapping[str, Array]) -> Array:
    """The patch embedding's input `[B, T, H, W, C']`: x, then the known frames and their
    mask (`frame_conditioning`), then the masked source and its mask (`masked_source`), then
    the R reference frames `[B, T, H, W, R C]` (`reference_inputs` 'channels')."""
    b, t_frames, h, w, _ = x.shape
    parts = [x]
    if self.frame_conditioning:
      frame_mask = cond.get("frame_mask", jnp.zeros((b, t_frames), bool))
      frame_mask = frame_mask.astype(x.dtype)[:, :, None, None, None]
      parts += [cond.get("frames", jnp.zeros_like(x)) * frame_mask,
                jnp.broadcast_to(frame_mask, (b, t_frames, h, w, 1))]
    if self.masked_source:
      mask = cond["source_mask"].astype(x.dtype)
      parts += [cond["source"].astype(x.dtype) * (1 - mask), mask]
    if self.reference_frames and self.reference_inputs == "channels":
      reference = cond["reference"].astype(x.dtype)  # [B, R, H, W, C] -> [B, 1, H, W, R C]
      keep = ~cond.get("drop_reference", jnp.zeros((b,), bool))
      reference = jnp.moveaxis(reference * keep[:, None, None, None, None], 1, -2)
      reference = reference.reshape(b, 1, h, w, -1)
      parts.append(jnp.broadcast_to(reference, (b, t_frames) + reference.shape[2:]))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else x

  def _reference_inputs(self, x: Array, cond: Mapping[str, Array]) -> Array:
    """The reference frames as known frames `[B, R, H, W, C']` in `_input_channels`' layout
    (x zero, the frame given, its mask 1; nothing to re-voice): all zeros where
    'drop_reference' is set."""
    reference = cond["reference"].astype(x.dtype)
    b, r = reference.shape[:2]
    keep = ~cond.get("drop_reference", jnp.zeros((b,), bool))
    known = {"frames": reference, "frame_mask": jnp.broadcast_to(keep[:, None], (b, r))}
    if self.masked_source:
      known.update(source=jnp.zeros_like(reference),
                   source_mask=jnp.zeros(reference.shape[:4] + (1,), x.dtype))
    return self._input_channels(jnp.zeros_like(reference), known)

  def _embed_video(self, x: Array, cond: Mapping[str, Array], dtype) -> Array:
    """Video `[B, T, H, W, C]` (+ context frames) -> tokens `[B, R + T, N, D]` with positions
    (R = `reference_frames` reference frames first with `reference_inputs` 'frames', else
    R = 0)."""
    _, _, h, w, _ = x.shape
    if self.reference_inputs not in REFERENCE_INPUTS:
      raise ValueError(f"reference_inputs must be one of {REFERENCE_INPUTS}, got "
                       f"{self.reference_inputs!r}")
    inputs = self._input_channels(x, cond)
    if self._context_frames:
      inputs = jnp.concatenate([self._reference_inputs(x, cond), inputs], axis=1)
    tokens = layers.dense(self.width, ("patch", "embed"), "patch_embed", dtype)(
        patchify(inputs, self.patch_size).astype(dtype))
    p = self.patch_size
    tokens = tokens + layers.sincos_2d_positions(h // p, w // p, self.width).astype(dtype)
    if self._context_frames:
      init = layers.partitioned(nn.initializers.normal(0.02), ("embed",))
      marker = self.param("reference_embedding", init, (self.width,)).astype(dtype)
      is_reference = jnp.arange(tokens.shape[1]) < self._context_frames
      tokens = tokens + jnp.where(is_reference[None, :, None, None], marker, 0)
    return nn.with_logical_constraint(tokens, TOKENS)

  def _conditioning(self, t: Array, cond: Mapping[str, Array], dtype):
    """Returns c `[B, T, D]`, text `[B, L, D]`, text_mask `[B, L]`, audio `[B, T, W, D]`."""
    text, text_mask, pooled, audio = self._encode_conditions(cond, t.shape[0], dtype)
    temb = layers.sinusoidal_embedding(t * self.time_scale, 256)
    temb = layers.dense(self.width, ("cond", "embed"), "time_fc1", dtype)(temb)
    temb = layers.dense(self.width, ("embed", "embed_out"), "time_fc2", dtype)(nn.silu(temb))
    c = temb + layers.dense(self.width, ("embed", "embed_out"), "text_pool_proj", dtype)(pooled)
    audio_pooled = layers.dense(self.width, ("embed", "embed_out"), "audio_pool_proj", dtype)(
        audio.mean(axis=2))  # [B, R + T, D]: the reference frames' is the null audio's.
    return c[:, None, :] + audio_pooled, text, text_mask, audio

  def _remat(self, block_cls: type[DiTBlock], **kwargs) -> type[DiTBlock]:
    """`block_cls` under `nn.remat` with the configured policy (as is for 'none')."""
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {sorted(REMAT_POLICIES)}, "
                       f"got {self.remat_policy!r}")
    if self.remat_policy == "none":
      return block_cls
    return nn.remat(block_cls, policy=REMAT_POLICIES[self.remat_policy], **kwargs)

  def _block(self, index: int, dtype) -> DiTBlock:
    return self._remat(DiTBlock)(self.num_heads, self.mlp_ratio, self.attention,
                                 self.temporal_rotary, self.attention_impl, dtype,
                                 name=f"block_{index}")

  def _scanned_blocks(self, dtype) -> ScanStep:
    """All `depth` blocks as one `nn.scan` over `ScanStep` (params stacked on 'layers')."""
    scanned = nn.scan(self._remat(ScanStep, prevent_cse=False),
                      variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                      length=self.depth, metadata_params={nn.PARTITION_NAME: LAYERS_AXIS})
    return scanned(self.num_heads, self.mlp_ratio, self.attention, self.temporal_rotary,
                   self.attention_impl, dtype, name=SCANNED_BLOCKS)

  @nn.compact
  def __call__(self, x: Array, t: Array, cond: Mapping[str, Array]) -> Array:
    self._check_inputs(x, t, cond)
    dtype = jnp.dtype(self.dtype)
    _, _, h, w, ch = x.shape
    p = self.patch_size
    tokens = self._embed_video(x, cond, dtype)
    c, text, text_mask, audio = self._conditioning(t, cond, dtype)
    control = cond.get("control", ())
    if len(control) > self.depth:
      raise ValueError(f"got {len(control)} control residuals for a depth-{self.depth} model")
    if self._context_frames:  # The reference frames take no control residual.
      control = [jnp.pad(r, [(0, 0), (self._context_frames, 0)] + [(0, 0)] * (r.ndim - 2))
                 for r in control]
    if self.scan_blocks:
      residuals = None
      if control:  # [K, B, T, N, D], zero-padded to [depth, B, T, N, D].
        residuals = jnp.stack([r.astype(dtype) for r in control])
        residuals = jnp.pad(residuals, [(0, self.depth - len(control))]
                            + [(0, 0)] * (residuals.ndim - 1))
      tokens, _ = self._scanned_blocks(dtype)(tokens, residuals, c, text, text_mask, audio)
    else:
      for i in range(self.depth):
        tokens = self._block(i, dtype)(tokens, c, text, text_mask, audio)
        if i < len(control):
          tokens = tokens + control[i].astype(dtype)

    tokens, c = tokens[:, self._context_frames:], c[:, self._context_frames:]
    shift, scale = jnp.split(layers.dense(2 * self.width, ("embed", "modulation"),
                                          "final_modulation", dtype, zero_init=True)(
                                              nn.silu(c)), 2, axis=-1)
    tokens = _modulate(layers.layer_norm("final_norm", use_scale_bias=False, dtype=dtype)(tokens),
                       shift, scale)
    out = layers.dense(p * p * ch, ("embed", "patch"), "final_proj", dtype,
                       zero_init=True)(tokens)
    video = unpatchify(out, h // p, p)
    if self.final_conv:
      video = self._final_conv(video, dtype)
    return video.astype(jnp.float32)

  def _final_conv(self, video: Array, dtype) -> Array:
    """U-ViT's 3x3 convolution after the unpatchify (Bao et al. 2023, sec. 3): every output
    pixel sees its neighbours across patch borders, so the 4x4 patch grid of a per-token
    linear output can be smoothed away. Per frame, `[B, T, H, W, C]` -> the same shape.
    Initialized to the identity (centre tap = I): a randomly initialized C -> C conv mixes
    the color channels of every output and measurably slowed the learning of the caption's
    colors (docs/results.md)."""
    b, t, h, w, ch = video.shape
    conv = nn.Conv(ch, (3, 3), padding="SAME", dtype=dtype, name="final_conv",
                   kernel_init=layers.partitioned(_identity_conv_init,
                                                  ("conv_h", "conv_w", "conv_in", "patch")),
                   bias_init=layers.partitioned(nn.initializers.zeros, ("patch",)))
    return conv(video.reshape(b * t, h, w, ch)).reshape(b, t, h, w, ch)
