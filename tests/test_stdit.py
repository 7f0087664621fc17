"""Space-time DiT: AdaLN-zero init, conditioning semantics, shapes and input errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.models import encoders
from gcm_jax.models import stdit

B, T, H, W, C, L, MEL_W = 2, 3, 8, 8, 3, 6, 4
SMALL = dict(width=32, depth=2, num_heads=4, patch_size=2, text_max_len=16, mel_window=MEL_W,
             num_mels=8)


def _inputs(key=0):
  k = jax.random.split(jax.random.PRNGKey(key), 4)
  x = jax.random.normal(k[0], (B, T, H, W, C))
  t = jax.random.uniform(k[1], (B,))
  cond = {
      "text_tokens": jax.random.randint(k[2], (B, L), 1, 257),
      "text_mask": jnp.array([[1] * L, [1] * 3 + [0] * 3], bool),
      "mel": jax.random.normal(k[3], (B, T, MEL_W, 8)),
  }
  return x, t, cond


def _randomize(params, key=7, scale=0.1):
  """Adds noise to every parameter, so zero-initialized gates/projections become active."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(key), len(leaves))
  return jax.tree.unflatten(
      treedef, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def model_and_params():
  model = stdit.STDiT(**SMALL)
  x, t, cond = _inputs()
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), x, t, cond))["params"]
  return model, params


def test_block_is_identity_at_init():
  tokens = jax.random.normal(jax.random.PRNGKey(0), (B, T, 5, 32))
  c = jax.random.normal(jax.random.PRNGKey(1), (B, T, 32))
  text = jax.random.normal(jax.random.PRNGKey(2), (B, L, 32))
  audio = jax.random.normal(jax.random.PRNGKey(3), (B, T, MEL_W, 32))
  mask = jnp.ones((B, L), bool)
  for kind in ("factorized", "full3d"):
    block = stdit.DiTBlock(num_heads=4, attention=kind)
    variables = block.init(jax.random.PRNGKey(4), tokens, c, text, mask, audio)
    np.testing.assert_array_equal(block.apply(variables, tokens, c, text, mask, audio), tokens)
    perturbed = _randomize(nn.meta.unbox(variables))
    out = block.apply(perturbed, tokens, c, text, mask, audio)
    assert np.abs(np.asarray(out - tokens)).max() > 1e-2


def test_model_output_shape_and_zero_at_init(model_and_params):
  model, params = model_and_params
  x, t, cond = _inputs()
  out = model.apply({"params": params}, x, t, cond)
  assert out.shape == (B, T, H, W, C) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)
  out = model.apply({"params": _randomize(params)}, x, t, cond)
  assert np.isfinite(out).all() and np.abs(out).max() > 1e-3


def test_every_param_has_logical_axis_names():
  model = stdit.STDiT(**SMALL)
  x, t, cond = _inputs()
  boxed = model.init(jax.random.PRNGKey(0), x, t, cond)["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
  assert all(len(v.names) == v.value.ndim for v in leaves)


def test_final_conv_is_a_3x3_same_convolution_of_the_patch_output(model_and_params):
  """`final_conv=True` (U-ViT) = the plain model's unpatchified output convolved per frame
  with the conv's 3x3 kernel and bias, zero-padded at the borders (a float64 numpy loop as
  the reference); at init the output is still zero and the conv is the identity."""
  model, params = model_and_params
  x, t, cond = _inputs()
  conv_model = stdit.STDiT(**SMALL, final_conv=True)
  init = nn.meta.unbox(conv_model.init(jax.random.PRNGKey(0), x, t, cond))["params"]
  np.testing.assert_array_equal(conv_model.apply({"params": init}, x, t, cond), 0.0)
  plain = _randomize(params)
  np.testing.assert_allclose(
      conv_model.apply({"params": {**plain, "final_conv": init["final_conv"]}}, x, t, cond),
      model.apply({"params": plain}, x, t, cond), atol=1e-6)
  conv = {"kernel": 0.3 * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (3, 3, C, C))),
          "bias": np.asarray([0.1, -0.2, 0.3])}
  out = conv_model.apply({"params": {**plain, "final_conv": conv}}, x, t, cond)
  video = np.pad(np.asarray(model.apply({"params": plain}, x, t, cond), np.float64),
                 [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)])
  want = np.zeros((B, T, H, W, C)) + conv["bias"]
  for dy in range(3):
    for dx in range(3):
      want += video[:, :, dy:dy + H, dx:dx + W] @ conv["kernel"][dy, dx]
  assert np.abs(want).max() > 1e-2
  np.testing.assert_allclose(out, want, atol=1e-5)


def test_dropped_text_ignores_text_tokens(model_and_params):
  model, params = model_and_params
  params = _randomize(params)
  x, t, cond = _inputs()
  other = dict(cond, text_tokens=jnp.roll(cond["text_tokens"], 1, axis=1))
  run = lambda c: model.apply({"params": params}, x, t, c)
  assert np.abs(np.asarray(run(cond) - run(other))).max() > 1e-4
  drop = jnp.array([True, True])
  np.testing.assert_allclose(run(dict(cond, drop_text=drop)), run(dict(other, drop_text=drop)),
                             atol=1e-6)


def test_dropped_audio_ignores_mel(model_and_params):
  model, params = model_and_params
  params = _randomize(params)
  x, t, cond = _inputs()
  other = dict(cond, mel=-cond["mel"])
  drop = jnp.array([True, False])
  out_a = model.apply({"params": params}, x, t, dict(cond, drop_audio=drop))
  out_b = model.apply({"params": params}, x, t, dict(other, drop_audio=drop))
  np.testing.assert_allclose(out_a[0], out_b[0], atol=1e-6)
  assert np.abs(np.asarray(out_a[1] - out_b[1])).max() > 1e-4


def test_pooled_audio_modulates_only_its_own_frame(model_and_params):
  """The per-frame modulation term from frame t's audio window sees only that window."""
  model, params = model_and_params
  x, t, cond = _inputs()
  other = dict(cond, mel=cond["mel"].at[:, 1].set(-cond["mel"][:, 1]))

  def pooled_audio(c):
    _, state = model.apply({"params": params}, x, t, c, capture_intermediates=True)
    return np.asarray(state["intermediates"]["audio_pool_proj"]["__call__"][0])  # [B, T, D]

  a, b = pooled_audio(cond), pooled_audio(other)
  assert a.shape == (B, T, SMALL["width"])
  np.testing.assert_array_equal(a[:, [0, 2]], b[:, [0, 2]])
  assert np.abs(a[:, 1] - b[:, 1]).max() > 1e-3


def test_conditioning_frames_only_count_where_masked(model_and_params):
  model, params = model_and_params
  params = _randomize(params)
  x, t, cond = _inputs()
  frames = jax.random.normal(jax.random.PRNGKey(9), x.shape)
  mask = jnp.array([[True, False, False]] * B)
  run = lambda f: model.apply({"params": params}, x, t, dict(cond, frames=f, frame_mask=mask))
  changed_unmasked = frames.at[:, 1:].set(0.0)
  np.testing.assert_allclose(run(frames), run(changed_unmasked), atol=1e-6)
  assert np.abs(np.asarray(run(frames) - run(frames.at[:, 0].set(0.0)))).max() > 1e-4


def test_full3d_and_remat_variants(model_and_params):
  _, params = model_and_params
  params = _randomize(params)
  x, t, cond = _inputs()
  base = stdit.STDiT(**SMALL)
  remat = stdit.STDiT(**SMALL, remat_policy="dots")
  loss = lambda m: lambda p: (m.apply({"params": p}, x, t, cond) ** 2).mean()
  g_base = jax.grad(loss(base))(params)
  g_remat = jax.grad(loss(remat))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_base, g_remat)
  full = stdit.STDiT(**SMALL, attention="full3d")
  variables = full.init(jax.random.PRNGKey(0), x, t, cond)
  assert full.apply(variables, x, t, cond).shape == x.shape


def test_text_encoder_ignores_padding():
  enc = encoders.TextEncoder(width=16, num_layers=2, num_heads=2, max_len=12)
  tokens = jnp.array([[5, 6, 7, 0, 0, 0]])
  mask = tokens != 0
  variables = enc.init(jax.random.PRNGKey(0), tokens, mask)
  out = enc.apply(variables, tokens, mask)
  longer = jnp.array([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0]])
  out_longer = enc.apply(variables, longer, longer != 0)
  garbage = jnp.array([[5, 6, 7, 9, 9, 9]])
  out_garbage = enc.apply(variables, garbage, mask)
  np.testing.assert_allclose(out[:, :3], out_longer[:, :3], atol=1e-5)
  np.testing.assert_allclose(out[:, :3], out_garbage[:, :3], atol=1e-5)


def test_audio_encoder_is_per_frame():
  enc = encoders.AudioEncoder(width=16, num_layers=1, num_heads=2, num_mels=8, window=4)
  mel = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4, 8))
  variables = enc.init(jax.random.PRNGKey(1), mel)
  out = enc.apply(variables, mel)
  out2 = enc.apply(variables, mel.at[:, 1].set(0.0))
  np.testing.assert_allclose(out[:, [0, 2]], out2[:, [0, 2]], atol=1e-6)
  assert np.abs(np.asarray(out[:, 1] - out2[:, 1])).max() > 1e-3


@pytest.mark.parametrize("mutate, message", [
    (lambda x, t, c: (x[0], t, c), "video must be"),
    (lambda x, t, c: (x[..., :2], t, c), "channels"),
    (lambda x, t, c: (x[:, :, :7], t, c), "not divisible by patch_size"),
    (lambda x, t, c: (x.astype(jnp.int32), t, c), "floating point"),
    (lambda x, t, c: (x, t[:1], c), "timesteps must be"),
    (lambda x, t, c: (x, t, {k: v for k, v in c.items() if k != "mel"}), "missing 'mel'"),
    (lambda x, t, c: (x, t, dict(c, mel=c["mel"][:, :2])), "one window per video frame"),
    (lambda x, t, c: (x, t, dict(c, mel=c["mel"][..., :5])), "audio windows must be"),
    (lambda x, t, c: (x, t, dict(c, text_tokens=c["text_tokens"].astype(jnp.float32))),
     "text tokens must be int"),
    (lambda x, t, c: (x, t, dict(c, frames=x[:, :1])), "conditioning frames"),
])
def test_bad_inputs_raise_clear_errors(model_and_params, mutate, message):
  model, params = model_and_params
  with pytest.raises(ValueError, match=message):
    model.apply({"params": params}, *mutate(*_inputs()))


def test_unknown_attention_kind_errors():
  x, t, cond = _inputs()
  with pytest.raises(ValueError, match=r"attention must be one of \('factorized', 'full3d'\)"):
    stdit.STDiT(**SMALL, attention="axial").init(jax.random.PRNGKey(0), x, t, cond)
