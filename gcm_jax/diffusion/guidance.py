"""Multi-condition classifier-free guidance and training-time condition dropout.

A condition is "dropped" by a boolean flag in `cond` (e.g. cond['drop_text'] [B]); the model swaps
in its learned null embedding where the flag is True. Guidance wraps any `fn(x, t, cond) -> out`
(a raw model_fn or an x0-denoiser: guided outputs are affine combinations whose weights sum to 1,
so guiding eps, v, x0 or EDM's F gives the same sample) and evaluates all guidance branches in
ONE call on a batch of size (k + 1) B.

Nested guidance over ordered conditions c_1, ..., c_k with scales s_1, ..., s_k:
  out = e(none) + s_1 (e(c_1) - e(none)) + s_2 (e(c_1, c_2) - e(c_1)) + ...
  * text/audio (DESIGN.md): c_1 = audio, c_2 = text:
      eps = eps(0,0) + s_a (eps(0,a) - eps(0,0)) + s_t (eps(t,a) - eps(0,a)).
  * InstructPix2Pix (Brooks et al. 2023 eq. 3): c_1 = image (e.g. 'drop_frames'), c_2 = text.
All scales = 1 reproduces the fully conditional output.
"""
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Fn = Callable[[Any, jax.Array, dict], Any]


def nested_guidance(fn: Fn, drop_keys: Sequence[str], scales: Sequence[float]) -> Fn:
  """Wraps fn with nested CFG over conditions named by their drop flags, outermost first.

  Args:
    fn: `(x [B, ...], t scalar or [B], cond dict) -> out [B, ...]` (pytrees allowed for x/out).
    drop_keys: names of the boolean [B] drop flags in cond, e.g. ("drop_audio", "drop_text").
    scales: one guidance scale per condition (floats or traced scalars).
  Returns:
    `guided(x, t, cond) -> out` calling fn once on batch (k + 1) B; every leaf of x and cond
    (and t if it is not a scalar) must have the batch as its leading axis. Drop flags already in
    cond are overridden for the listed conditions. With every scale a Python number equal to 1
    the sum telescopes to the fully conditional output, and fn is called on batch B only.
  """
  if len(drop_keys) != len(scales) or not drop_keys:
    raise ValueError(f"need one scale per condition, got keys {drop_keys} and scales {scales}")
  k = len(drop_keys)

  def check_flags(cond: dict) -> None:
    missing = [name for name in drop_keys if name not in cond]
    if missing:
      raise KeyError(f"cond has no drop flags {missing}; add them (bool [B]) before guidance")

  if all(isinstance(s, (int, float)) and s == 1 for s in scales):
    def conditional(x: Any, t: jax.Array, cond: dict) -> Any:
      check_flags(cond)
      return fn(x, t, {**cond, **{name: jnp.zeros_like(cond[name]) for name in drop_keys}})

    return conditional

  def guided(x: Any, t: jax.Array, cond: dict) -> Any:
    batch = jax.tree.leaves(x)[0].shape[0]
    check_flags(cond)
    # Branch j keeps conditions 1..j and drops j+1..k.
    flags = {name: jnp.repeat(jnp.arange(k + 1) <= i, batch) for i, name in enumerate(drop_keys)}
    tile = lambda v: jnp.concatenate([v] * (k + 1), axis=0)
    big_cond = {**jax.tree.map(tile, cond), **flags}
    big_t = t if jnp.ndim(t) == 0 else tile(t)
    out = fn(jax.tree.map(tile, x), big_t, big_cond)

    def combine(o):
      e = jnp.split(o, k + 1, axis=0)
      return e[0] + sum(s * (e[j + 1] - e[j]) for j, s in enumerate(scales))

    return jax.tree.map(combine, out)

  return guided


def text_audio_guidance(fn: Fn, text_scale: float, audio_scale: float) -> Fn:
  """DESIGN.md CFG: eps(0,0) + s_a (eps(0,a) - eps(0,0)) + s_t (eps(t,a) - eps(0,a))."""
  return nested_guidance(fn, ("drop_audio", "drop_text"), (audio_scale, text_scale))


def instruct_pix2pix_guidance(fn: Fn, image_scale: float, text_scale: float,
                              image_key: str = "drop_frames", text_key: str = "drop_text") -> Fn:
  """InstructPix2Pix CFG: e(0,0) + s_I (e(I,0) - e(0,0)) + s_T (e(I,T) - e(I,0))."""
  return nested_guidance(fn, (image_key, text_key), (image_scale, text_scale))


def drop_conditions(key: jax.Array, batch_size: int, p_text: float, p_audio: float,
                    p_both: float) -> tuple[jax.Array, jax.Array]:
  """Training-time condition dropout: bool (drop_text [B], drop_audio [B]).

  With probability p_both both are dropped jointly; otherwise text and audio are dropped
  independently with p_text and p_audio. Marginally P(drop_text) = p_both + (1 - p_both) p_text.
  batch_size and the probabilities are static Python numbers (config values).
  """
  for name, p in (("p_text", p_text), ("p_audio", p_audio), ("p_both", p_both)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {p}")
  k_both, k_text, k_audio = jax.random.split(key, 3)
  both = jax.random.bernoulli(k_both, p_both, (batch_size,))
  return (both | jax.random.bernoulli(k_text, p_text, (batch_size,)),
          both | jax.random.bernoulli(k_audio, p_audio, (batch_size,)))
