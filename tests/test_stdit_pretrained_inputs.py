"""The STDiT on frozen pretrained features: text embeddings `[B, L, E]` (text_encoder a
pretrained name) and Whisper windows `[B, T, 2 (2k + 1), D]` (audio_encoder 'whisper')."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.models import conditioning
from gcm_jax.models import stdit

B, T, H, L, E, D_AUDIO, WINDOW = 2, 3, 8, 5, 12, 20, 6
SMALL = dict(width=32, depth=1, num_heads=4, patch_size=2, text_encoder="minilm",
             audio_encoder="whisper")


def _inputs(key=0):
  k = jax.random.split(jax.random.PRNGKey(key), 4)
  return (jax.random.normal(k[0], (B, T, H, H, 3)), jax.random.uniform(k[1], (B,)), {
      "text_embeddings": jax.random.normal(k[2], (B, L, E)),
      "text_mask": jnp.array([[1] * L, [1] * 2 + [0] * 3], bool),
      "whisper": jax.random.normal(k[3], (B, T, WINDOW, D_AUDIO)),
  })


@pytest.fixture(scope="module")
def model_and_params():
  model = stdit.STDiT(**SMALL)
  x, t, cond = _inputs()
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), x, t, cond))["params"]
  leaves, treedef = jax.tree.flatten(params)  # Activate the zero-initialized gates.
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.1 * jax.random.normal(k, p.shape)
                                        for p, k in zip(leaves, keys)])
  return model, params


def test_keys_follow_the_encoder_names():
  assert conditioning.cond_keys(SMALL) == ("text_embeddings", "text_mask", "whisper")
  assert conditioning.cond_keys({}) == ("text_tokens", "text_mask", "mel")


def test_parameters_take_the_feature_sizes(model_and_params):
  _, params = model_and_params
  assert params["text_encoder"]["input_proj"]["kernel"].shape == (E, 32)
  assert params["audio_encoder"]["input_proj"]["kernel"].shape == (D_AUDIO, 32)
  assert params["null_audio"].shape == (WINDOW, 32)


def test_padded_text_embeddings_are_ignored(model_and_params):
  model, params = model_and_params
  x, t, cond = _inputs()
  out = model.apply({"params": params}, x, t, cond)
  changed = dict(cond, text_embeddings=cond["text_embeddings"].at[1, 2:].add(5.0))
  np.testing.assert_allclose(model.apply({"params": params}, x, t, changed), out, atol=1e-5)
  real = dict(cond, text_embeddings=cond["text_embeddings"].at[1, 1].add(5.0))
  assert np.abs(np.asarray(model.apply({"params": params}, x, t, real) - out)[1]).max() > 1e-3


def test_each_frame_hears_its_own_window(model_and_params):
  """Changing frame 2's Whisper window changes frame 2; with drop_audio it changes nothing."""
  model, params = model_and_params
  x, t, cond = _inputs()
  out = model.apply({"params": params}, x, t, cond)
  changed = dict(cond, whisper=cond["whisper"].at[:, 2].add(3.0))
  diff = np.abs(np.asarray(model.apply({"params": params}, x, t, changed) - out))
  assert diff[:, 2].mean() > 1e-3
  drop = jnp.ones((B,), bool)
  dropped = [model.apply({"params": params}, x, t, dict(c, drop_audio=drop))
             for c in (cond, changed)]
  np.testing.assert_allclose(dropped[0], dropped[1], atol=1e-5)


@pytest.mark.parametrize("edit, message", [
    (lambda c: {k: v for k, v in c.items() if k != "whisper"}, "cond is missing 'whisper'"),
    (lambda c: dict(c, whisper=c["whisper"][:, :2]), r"whisper must be \[B=2, T=3, W, M\]"),
    (lambda c: dict(c, text_embeddings=c["text_embeddings"][..., 0]),
     r"text embeddings must be float \[B, L, E\]"),
])
def test_bad_pretrained_inputs_named(model_and_params, edit, message):
  model, params = model_and_params
  x, t, cond = _inputs()
  with pytest.raises(ValueError, match=message):
    model.apply({"params": params}, x, t, edit(cond))
