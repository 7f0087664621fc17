"""The KL autoencoder: parity with diffusers' torch AutoencoderKL, weight import, shapes, errors.

Reference: diffusers (test-only extra) builds an AutoencoderKL of the registry's "tiny" config
with random weights, writes it with `save_pretrained` (diffusion_pytorch_model.safetensors +
config.json) and runs encode / decode on the same frames.
"""
import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

from gcm_jax import weights
from gcm_jax.models import autoencoder as ae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ae.CONFIGS["tiny"]  # 8x, 4 latent channels; shortcuts in encoder and decoder
SIZE = 16

# config.json of the diffusers-format stabilityai/sd-vae-ft-mse.
SD_VAE_FT_MSE_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def _torch_model(config: ae.AutoencoderConfig) -> TorchAutoencoderKL:
  """diffusers' AutoencoderKL of `config`, every parameter (norm scales too) random."""
  levels = len(config.block_out_channels)
  model = TorchAutoencoderKL(
      block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
      latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
      down_block_types=("DownEncoderBlock2D",) * levels,
      up_block_types=("UpDecoderBlock2D",) * levels).eval()
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(torch model, its save_pretrained folder, the imported Flax params)."""
  model = _torch_model(CONFIG)
  folder = tmp_path_factory.mktemp("vae")
  model.save_pretrained(str(folder))
  config, params = ae.load_diffusers(str(folder))
  assert config == CONFIG
  return model, str(folder), params


def _frames(b=2, t=3, size=SIZE, channels=3, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (b, t, size, size, channels)).astype(
      np.float32)


def _nchw(video):  # [B, T, H, W, C] -> [B*T, C, H, W]
  return torch.from_numpy(video.reshape((-1,) + video.shape[2:])).permute(0, 3, 1, 2)


def _video(x, b):  # [B*T, C, H, W] -> [B, T, H, W, C]
  x = x.permute(0, 2, 3, 1).numpy()
  return x.reshape((b, -1) + x.shape[1:])


@pytest.fixture(scope="module")
def coders(reference):
  """Jitted (encode, decode) of the imported tiny autoencoder."""
  _, _, params = reference
  model = ae.AutoencoderKL(CONFIG)
  encode = jax.jit(lambda x: model.apply({"params": params}, x, method="encode"))
  decode = jax.jit(lambda z: model.apply({"params": params}, z, method="decode"))
  return encode, decode


def test_parity_with_diffusers(reference, coders):
  model, _, _ = reference
  encode, decode = coders
  video = _frames()
  mean, logvar = encode(video)
  latents = np.random.default_rng(1).normal(size=mean.shape).astype(np.float32)
  decoded = decode(latents)
  with torch.no_grad():
    posterior = model.encode(_nchw(video)).latent_dist
    ref_decoded = model.decode(_nchw(latents)).sample
  assert mean.shape == logvar.shape == (2, 3, SIZE // 8, SIZE // 8, 4)
  assert decoded.shape == video.shape
  for got, ref in ((mean, posterior.mean), (logvar, posterior.logvar), (decoded, ref_decoded)):
    ref = _video(ref, 2)
    assert np.abs(ref).max() > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)


def test_loading_imports_neither_torch_nor_diffusers(reference):
  _, folder, _ = reference
  code = ("import sys; from gcm_jax.models import autoencoder as ae; "
          f"ae.load_diffusers({folder!r}); "
          "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def _rename_legacy(state_dict):
  """Current attention names -> pre-0.14 names, Linear weights as 1x1 conv weights."""
  legacy = {}
  current, old = ae.ATTENTION_KEYS["current"], ae.ATTENTION_KEYS["legacy"]
  for key, value in state_dict.items():
    for name, new in current.items():
      if f".attentions.0.{new}." in key:
        key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old[name]}.")
        if value.ndim == 2:
          value = value[:, :, None, None]
    legacy[key] = value
  return legacy


def test_legacy_attention_names_and_1x1_conv_weights(reference, tmp_path):
  model, _, params = reference
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  legacy = _rename_legacy(state)
  assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
  assert legacy["encoder.mid_block.attentions.0.query.weight"].ndim == 4
  path = str(tmp_path / "vae.safetensors")
  safetensors.numpy.save_file(legacy, path)
  with pytest.raises(weights.WeightImportError, match="no config.json"):
    ae.load_diffusers(path)
  _, got = ae.load_diffusers(path, CONFIG)
  jax.tree.map(np.testing.assert_array_equal, got, params)


def test_loader_names_every_missing_unexpected_and_misshaped_key(reference, tmp_path):
  model, _, _ = reference
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  del state["decoder.conv_out.bias"]
  state["encoder.extra.weight"] = np.zeros(3, np.float32)
  state["encoder.conv_in.weight"] = np.zeros((16, 3, 5, 5), np.float32)
  state["decoder.mid_block.attentions.0.to_k.weight"] = np.zeros((32, 32, 3, 3), np.float32)
  path = str(tmp_path / "vae.safetensors")
  safetensors.numpy.save_file(state, path)
  with pytest.raises(weights.WeightImportError) as info:
    ae.load_diffusers(path, CONFIG)
  message = str(info.value)
  for text in ("missing in the checkpoint (1)", "decoder.conv_out.bias (for decoder/conv_out/bias)",
               "unexpected in the checkpoint (not used by the model) (1)", "encoder.extra.weight",
               "mis-shaped (2)", "encoder.conv_in.weight -> encoder/conv_in/kernel",
               "decoder.mid_block.attentions.0.to_k.weight -> "
               "decoder/mid_block/attentions_0/to_k/kernel: checkpoint (32, 32, 3, 3)",
               path):
    assert text in message, (text, message)


def test_config_from_diffusers():
  assert ae.config_from_diffusers(SD_VAE_FT_MSE_CONFIG) == ae.CONFIGS["sd-vae"]
  shifted = dict(SD_VAE_FT_MSE_CONFIG, scaling_factor=0.3611, shift_factor=0.1159)
  assert ae.config_from_diffusers(shifted).shift_factor == 0.1159
  bad = dict(SD_VAE_FT_MSE_CONFIG, act_fn="gelu",
             up_block_types=["UpDecoderBlock2D", "AttnUpDecoderBlock2D"])
  with pytest.raises(weights.WeightImportError, match=r"act_fn='gelu'.*up_block_types"):
    ae.config_from_diffusers(bad)
  assert ae.config_from_diffusers(dict(SD_VAE_FT_MSE_CONFIG, act_fn="swish")) == (
      ae.CONFIGS["sd-vae"])  # diffusers' other name of SiLU.
  with pytest.raises(ValueError, match="not divisible by norm_num_groups"):
    ae.AutoencoderConfig(block_out_channels=(16, 24), layers_per_block=1, norm_num_groups=16)


def test_non_default_config_json_is_read(tmp_path):
  """A diffusers AutoencoderKL far from the SD VAE (swish, no mid attention, no quant convs,
  3 latent channels, 4 groups, 2 levels of 2 layers, own scale / shift): every number comes
  from config.json, and the outputs match diffusers' (atol 1e-4 as the parity test: float32
  torch vs XLA convolutions on CPU, outputs of magnitude ~1-10)."""
  model = TorchAutoencoderKL(
      block_out_channels=(8, 16), layers_per_block=2, latent_channels=3, norm_num_groups=4,
      act_fn="swish", mid_block_add_attention=False, use_quant_conv=False,
      use_post_quant_conv=False, scaling_factor=0.5, shift_factor=0.125,
      down_block_types=("DownEncoderBlock2D",) * 2,
      up_block_types=("UpDecoderBlock2D",) * 2).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  model.save_pretrained(str(tmp_path))
  config, params = ae.load_diffusers(str(tmp_path))
  assert config == ae.AutoencoderConfig(
      (8, 16), 2, latent_channels=3, norm_num_groups=4, scaling_factor=0.5, shift_factor=0.125,
      mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False)
  flax_model = ae.AutoencoderKL(config)
  video = _frames(1, 2, 8)
  mean, logvar = flax_model.apply({"params": params}, video, method="encode")
  latents = np.random.default_rng(2).normal(size=mean.shape).astype(np.float32)
  decoded = flax_model.apply({"params": params}, latents, method="decode")
  with torch.no_grad():
    posterior = model.encode(_nchw(video)).latent_dist
    ref_decoded = model.decode(_nchw(latents)).sample
  assert mean.shape == (1, 2, 4, 4, 3)
  for got, ref in ((mean, posterior.mean), (logvar, posterior.logvar), (decoded, ref_decoded)):
    ref = _video(ref, 1)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)


def test_config_passed_must_agree_with_config_json(reference):
  """The latent scale is in config.json only (no tensor shows it): a config= beside the file
  that says otherwise is refused, the field named, not silently preferred."""
  _, folder, params = reference
  _, same = ae.load_diffusers(folder, CONFIG)
  jax.tree.map(np.testing.assert_array_equal, same, params)
  sdxl_scale = dataclasses.replace(CONFIG, scaling_factor=0.13025)
  with pytest.raises(weights.WeightImportError,
                     match=r"differs from .*config.json:\n  scaling_factor: config.json 0.18215, "
                           r"config= 0.13025"):
    ae.load_diffusers(folder, sdxl_scale)


@pytest.mark.parametrize("fields, message", [
    (dict(_class_name="AutoencoderKLTemporalDecoder"),
     "_class_name='AutoencoderKLTemporalDecoder' (supported: 'AutoencoderKL')"),
    (dict(act_fn="gelu"), "act_fn='gelu' (supported: 'silu')"),
    (dict(latents_mean=[0.1] * 4), "latents_mean=[0.1, 0.1, 0.1, 0.1]"),
    (dict(down_block_types=["DownEncoderBlock2D"] * 3),
     "down_block_types has 3 entries but block_out_channels 4"),
    (dict(norm_num_groups=48), "not divisible by norm_num_groups=48"),
], ids=["class", "act_fn", "latents_mean", "block_count", "groups"])
def test_config_json_the_port_does_not_compute_is_refused(tmp_path, fields, message):
  (tmp_path / "config.json").write_text(json.dumps({**SD_VAE_FT_MSE_CONFIG, **fields}))
  with pytest.raises(weights.WeightImportError, match=re.escape(
      f"{tmp_path / 'config.json'}: unsupported AutoencoderKL config: ")) as info:
    ae.load_diffusers(str(tmp_path))
  assert message in str(info.value), str(info.value)


def test_sd_vae_param_count():
  """The registry's sd-vae has diffusers' 83,653,863 parameters (shapes only, nothing built)."""
  config = ae.CONFIGS["sd-vae"]
  assert config.downsampling == 8 and config.scaling_factor == 0.18215
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ae.expected_params(config)))
  assert count == 83_653_863


def test_shapes_and_errors(reference):
  _, _, params = reference
  model = ae.AutoencoderKL(CONFIG)
  video = _frames(1, 2, 24)  # H, W = 3 * 8
  recon, mean, logvar = jax.jit(lambda x, key: model.apply({"params": params}, x, key))(
      video, jax.random.key(0))
  assert mean.shape == logvar.shape == model.latent_shape(video.shape) == (1, 2, 3, 3, 4)
  assert recon.shape == video.shape and mean.dtype == recon.dtype == jnp.float32
  cases = [
      (_frames(1, 2, 20), "encode", "multiples of the autoencoder's downsampling factor 8"),
      (_frames(1, 2, 16, channels=4), "encode", "must have 3 channels"),
      (_frames(1, 2, 16)[0], "encode", r"video must be \[B, T, H, W, 3\], got rank 4"),
      (np.zeros((1, 2, 2, 2, 3), np.float32), "decode", "latents must have 4 channels"),
      (np.zeros((2, 2, 2, 4), np.float32), "decode", "got rank 4"),
  ]
  for x, method, message in cases:  # raised while tracing: nothing runs
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(lambda v: model.apply({"params": params}, v, method=method), x)


def test_per_frame_application(coders):
  """Encoding / decoding a clip equals doing it to each frame on its own."""
  encode, decode = coders
  video = _frames()
  mean, logvar = encode(video)
  decoded = decode(mean)
  for t in range(video.shape[1]):
    m, lv = encode(video[:, t:t + 1])
    # One frame vs the whole clip: other batch shapes, other float32 orderings, whose
    # rounding grows with the values.
    np.testing.assert_allclose(mean[:, t:t + 1], m, atol=1e-5 * max(1.0, float(np.abs(m).max())))
    np.testing.assert_allclose(logvar[:, t:t + 1], lv,
                               atol=1e-5 * max(1.0, float(np.abs(lv).max())))
    np.testing.assert_allclose(
        decoded[:, t:t + 1], decode(mean[:, t:t + 1]),
        atol=1e-5 * max(1.0, float(np.abs(decoded).max())))


def test_latent_scale_sample_and_kl():
  config = ae.AutoencoderConfig((32,), 1, scaling_factor=0.5, shift_factor=0.25)
  z = jnp.linspace(-2.0, 2.0, 8).reshape(1, 1, 2, 1, 4)
  np.testing.assert_allclose(ae.scale_latents(z, config), (z - 0.25) * 0.5)
  np.testing.assert_allclose(ae.unscale_latents(ae.scale_latents(z, config), config), z,
                             atol=1e-6)
  mean, logvar = jnp.zeros((2, 3, 4, 4, 4)), jnp.zeros((2, 3, 4, 4, 4))
  np.testing.assert_array_equal(ae.kl_divergence(mean, logvar), np.zeros((2, 3)))
  s = ae.sample(jax.random.key(0), mean + 1.0, jnp.full_like(logvar, np.log(4.0)))
  assert abs(float(s.mean()) - 1.0) < 0.2 and abs(float(s.std()) - 2.0) < 0.2
  ones, zeros = jnp.ones((1, 1, 1, 1, 2)), jnp.zeros((1, 1, 1, 1, 2))
  np.testing.assert_allclose(ae.kl_divergence(ones, zeros), [[1.0]])
