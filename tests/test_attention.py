"""Attention layers vs a float64 numpy einsum reference.

Tolerance: the JAX layers run in float32; outputs must match the float64 reference
to atol=rtol=2e-5 (inputs are O(1), widths <= 32).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.models import attention

TOL = dict(atol=2e-5, rtol=2e-5)


def _unbox(tree):
  return nn.meta.unbox(tree)


def _mha_reference(params, x, context, mask=None, rope_positions=None):
  """float64 numpy multi-head attention using the module's parameters.

  x `[B, Lq, D]`, context `[B, Lk, Dc]`, mask broadcastable to `[B, H, Lq, Lk]`.
  """
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(x, np.float64)
  context = np.asarray(context, np.float64)
  q = np.einsum("bld,dhk->blhk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bld,dhk->blhk", context, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bld,dhk->blhk", context, p["value"]["kernel"]) + p["value"]["bias"]
  if rope_positions is not None:
    q, k = _rope_reference(q, rope_positions), _rope_reference(k, rope_positions)
  logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqs,bshk->bqhk", weights, v)
  return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def _rope_reference(x, positions):
  half = x.shape[-1] // 2
  freqs = 10_000.0 ** (-np.arange(half) / half)
  ang = np.asarray(positions, np.float64)[:, None] * freqs
  cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _init(module, *args):
  variables = module.init(jax.random.PRNGKey(0), *args)
  return _unbox(variables)["params"]["attn"]


@pytest.fixture
def video_tokens():
  return jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5, 16))  # [B, T, N, D]


def test_spatial_attention_matches_reference(video_tokens):
  layer = attention.SpatialSelfAttention(num_heads=4)
  params = _init(layer, video_tokens)
  out = layer.apply({"params": {"attn": params}}, video_tokens)
  b, t, n, d = video_tokens.shape
  flat = np.asarray(video_tokens).reshape(b * t, n, d)
  ref = _mha_reference(params, flat, flat).reshape(b, t, n, d)
  np.testing.assert_allclose(out, ref, **TOL)


def test_temporal_attention_matches_reference_with_rotary(video_tokens):
  layer = attention.TemporalSelfAttention(num_heads=4, rotary=True)
  params = _init(layer, video_tokens)
  out = layer.apply({"params": {"attn": params}}, video_tokens)
  b, t, n, d = video_tokens.shape
  seqs = np.asarray(video_tokens).transpose(0, 2, 1, 3).reshape(b * n, t, d)
  ref = _mha_reference(params, seqs, seqs, rope_positions=np.arange(t))
  ref = ref.reshape(b, n, t, d).transpose(0, 2, 1, 3)
  np.testing.assert_allclose(out, ref, **TOL)


def test_full3d_attention_matches_reference(video_tokens):
  layer = attention.FullSelfAttention(num_heads=2)
  params = _init(layer, video_tokens)
  out = layer.apply({"params": {"attn": params}}, video_tokens)
  b, t, n, d = video_tokens.shape
  flat = np.asarray(video_tokens).reshape(b, t * n, d)
  ref = _mha_reference(params, flat, flat, rope_positions=np.repeat(np.arange(t), n))
  np.testing.assert_allclose(out, ref.reshape(b, t, n, d), **TOL)


def test_text_cross_attention_respects_padding_mask(video_tokens):
  text = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 16))
  text_mask = jnp.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], bool)
  layer = attention.TextCrossAttention(num_heads=4)
  params = _init(layer, video_tokens, text, text_mask)
  out = layer.apply({"params": {"attn": params}}, video_tokens, text, text_mask)
  b, t, n, d = video_tokens.shape
  ref = _mha_reference(params, np.asarray(video_tokens).reshape(b, t * n, d), text,
                       mask=np.asarray(text_mask)[:, None, None, :])
  np.testing.assert_allclose(out, ref.reshape(b, t, n, d), **TOL)
  # Changing padded text tokens must not change anything.
  garbage = text.at[0, 3:].set(100.0).at[1, 6:].set(-50.0)
  out2 = layer.apply({"params": {"attn": params}}, video_tokens, garbage, text_mask)
  np.testing.assert_allclose(out, out2, atol=1e-6)


def test_audio_cross_attention_matches_per_frame_reference(video_tokens):
  audio = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 4, 16))  # [B, T, W, D]
  layer = attention.AudioCrossAttention(num_heads=4)
  params = _init(layer, video_tokens, audio)
  out = layer.apply({"params": {"attn": params}}, video_tokens, audio)
  for frame in range(3):
    ref = _mha_reference(params, video_tokens[:, frame], audio[:, frame])
    np.testing.assert_allclose(out[:, frame], ref, **TOL)


def test_audio_cross_attention_frame_depends_only_on_its_window(video_tokens):
  audio = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 4, 16))
  layer = attention.AudioCrossAttention(num_heads=4)
  variables = layer.init(jax.random.PRNGKey(0), video_tokens, audio)
  for frame in range(3):
    grad = jax.grad(lambda a: layer.apply(variables, video_tokens, a)[:, frame].sum())(audio)
    norms = np.asarray(jnp.abs(grad).sum(axis=(0, 2, 3)))
    assert norms[frame] > 1e-3
    np.testing.assert_array_equal(np.delete(norms, frame), 0.0)


def test_temporal_attention_permutation_equivariance(video_tokens):
  perm = np.array([2, 0, 1])
  plain = attention.TemporalSelfAttention(num_heads=4, rotary=False)
  variables = plain.init(jax.random.PRNGKey(0), video_tokens)
  out = plain.apply(variables, video_tokens)
  out_perm = plain.apply(variables, video_tokens[:, perm])
  np.testing.assert_allclose(out_perm, out[:, perm], atol=1e-5)

  rotary = attention.TemporalSelfAttention(num_heads=4, rotary=True)
  out = rotary.apply(variables, video_tokens)
  out_perm = rotary.apply(variables, video_tokens[:, perm])
  assert np.abs(np.asarray(out_perm) - np.asarray(out[:, perm])).max() > 1e-3


def test_rotary_scores_depend_only_on_relative_position():
  q = jax.random.normal(jax.random.PRNGKey(4), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.PRNGKey(5), (1, 1, 1, 8))
  def score(pq, pk):
    rq = attention.rotary_embedding(q, jnp.array([pq]))
    rk = attention.rotary_embedding(k, jnp.array([pk]))
    return float((rq * rk).sum())
  np.testing.assert_allclose(score(3, 1), score(7, 5), rtol=1e-5)
  assert abs(score(3, 1) - score(1, 3)) > 1e-4


def test_attention_width_not_divisible_by_heads_errors():
  layer = attention.SpatialSelfAttention(num_heads=3)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 3, 16)))


def test_audio_tokens_shape_mismatch_errors(video_tokens):
  layer = attention.AudioCrossAttention(num_heads=4)
  with pytest.raises(ValueError, match="audio tokens"):
    layer.init(jax.random.PRNGKey(0), video_tokens, jnp.zeros((2, 5, 4, 16)))
