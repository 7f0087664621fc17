"""The Flax wav2vec2 encoder, its weight import, Hallo's interpolation and frame windows, and a
run on it (`config.model.audio_encoder = "wav2vec2"`).

References (test-only extras, nothing downloaded): transformers' torch `Wav2Vec2Model`,
`Wav2Vec2ForCTC` and `Wav2Vec2ForPreTraining` with random weights at tiny dims (a post-LN,
group-norm, bias-free "base" and a pre-LN, layer-norm, conv-bias "large"), saved with
`save_pretrained`, as a bare safetensors file and as an old-style `pytorch_model.bin` whose
positional-conv weight norm is renamed here to `weight_g` / `weight_v`; Hallo's
`linear_interpolation` (`F.interpolate(mode="linear", align_corners=True)`) applied between
transformers' `feature_extractor` and its `feature_projection` + `encoder`, as Hallo's
`Wav2VecModel.forward` does; transformers' `Wav2Vec2FeatureExtractor` for the normalisation and
Hallo's `process_audio_emb` loop for the windows.

Tolerances: the port does the same float32 operations as torch in another summation order;
the outputs (magnitude ~3) agree to ~5e-6, so 1e-4 leaves 20x headroom while any wiring error
(a norm missing or misplaced, a wrong padding shift, the wrong interpolation corners) moves them
by 1e-2 or more. Arrays computed by the same code on the same shapes are compared exactly.
"""
import dataclasses
import functools
import json
import math
import os
import re
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from jax.sharding import Mesh

from gcm_jax import config_validation
from gcm_jax import frozen_encoders
from gcm_jax import weights
from gcm_jax.data import pipeline
from gcm_jax.models import diffusion_model
from gcm_jax.models.pretrained import wav2vec2

from tests import train_utils

ATOL = 1e-4
BASE = wav2vec2.Wav2Vec2Config(
    conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False, feat_extract_norm="group", hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4, do_stable_layer_norm=False)
# Pre-LN, a LayerNorm after every conv, conv biases, and an odd positional kernel (no step
# dropped) with other groups; another conv stack (3 convs of other widths, kernels and strides,
# still 320 samples and 49 frames a second) and another LayerNorm eps (1e-2: ignoring it moves
# the outputs by ~1e-2), so that every number is shown to come from config.json.
LARGE = dataclasses.replace(BASE, conv_dim=(32, 24, 16), conv_kernel=(10, 8, 8),
                            conv_stride=(5, 8, 8), conv_bias=True, feat_extract_norm="layer",
                            num_hidden_layers=3, num_attention_heads=2,
                            num_conv_pos_embeddings=15, num_conv_pos_embedding_groups=2,
                            do_stable_layer_norm=True, layer_norm_eps=1e-2)
TINY = {"base": BASE, "large": LARGE}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(module, params, x, num_frames=None):
  """(final, hidden, the last layer's own output) of the Flax encoder: one compilation per
  (module config, num_frames) and input shape."""
  last = f"layers_{module.config.num_hidden_layers - 1}"
  (final, hidden), state = module.apply({"params": params}, x, num_frames,
                                        capture_intermediates=lambda m, _: m.name == last)
  return final, hidden, state["intermediates"][last]["__call__"][0]


def _hf_fields(config: wav2vec2.Wav2Vec2Config) -> dict:
  """`config` as transformers' Wav2Vec2Config arguments (tuples as lists, as in config.json)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _torch_model(config: wav2vec2.Wav2Vec2Config, cls=transformers.Wav2Vec2Model,
                 seed: int = 0) -> torch.nn.Module:
  """A transformers model of `config` with random weights, norms and biases included."""
  torch.manual_seed(seed)
  model = cls(transformers.Wav2Vec2Config(**_hf_fields(config), vocab_size=12)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.copy_(0.1 * torch.randn(p.shape))
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1 + 0.1 * torch.randn(p.shape))
  return model


def _reference(model: transformers.Wav2Vec2Model, x: np.ndarray):
  """transformers' forward: (last_hidden_state, hidden states as Hallo's transformers 4.x
  stacks `hidden_states[1:]`, transformers 5's own `hidden_states[1:]`)."""
  with torch.no_grad():
    out = model(torch.from_numpy(x), output_hidden_states=True)
  hallo = list(out.hidden_states[1:-1]) + [out.last_hidden_state]
  return (out.last_hidden_state.numpy(), torch.stack(hallo, dim=2).numpy(),
          torch.stack(out.hidden_states[1:], dim=2).numpy())


def _hallo_reference(model: transformers.Wav2Vec2Model, x: np.ndarray, seq_len: int):
  """Hallo's `Wav2VecModel.forward(x, seq_len)` on transformers' submodules: (last hidden
  state `[B, seq_len, D]`, Hallo's `hidden_states[1:]` stacked `[B, seq_len, n, D]`)."""
  outputs = []
  hooks = [layer.register_forward_hook(
      lambda module, inputs, out: outputs.append(out[0] if isinstance(out, tuple) else out))
      for layer in model.encoder.layers]
  with torch.no_grad():
    features = model.feature_extractor(torch.from_numpy(x)).transpose(1, 2)
    features = F.interpolate(features.transpose(1, 2), size=seq_len, align_corners=True,
                             mode="linear").transpose(1, 2)  # Hallo's linear_interpolation.
    hidden, _ = model.feature_projection(features)
    final = model.encoder(hidden).last_hidden_state
  for hook in hooks:
    hook.remove()
  return final.numpy(), torch.stack(outputs[:-1] + [final], dim=2).numpy()


def _max_diff(got, ref, label: str) -> float:
  got, ref = np.asarray(got), np.asarray(ref)
  assert got.shape == ref.shape, (label, got.shape, ref.shape)
  diff = float(np.abs(got - ref).max())
  print(f"max |diff| {label}: {diff:.2e}")
  assert diff <= ATOL, (label, diff)
  return diff


def _old_spelling(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """The positional conv's weight norm as `torch.nn.utils.weight_norm` names it."""
  rename = {"parametrizations.weight.original0": "weight_g",
            "parametrizations.weight.original1": "weight_v"}
  out = {}
  for key, value in state.items():
    for new, old in rename.items():
      key = key.replace(new, old)
    out[key] = torch.from_numpy(np.array(value))
  return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """Per variant: the random torch model, its save_pretrained folder, a 2 x 1 s input."""
  out = {}
  x = np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32)
  for name, config in TINY.items():
    folder = tmp_path_factory.mktemp(f"wav2vec2_{name}")
    model = _torch_model(config, seed=len(out))
    model.save_pretrained(str(folder))
    out[name] = dict(config=config, model=model, dir=folder, x=x)
  return out


# --- parity with transformers ----------------------------------------------------------------

@pytest.mark.parametrize("variant", ["base", "large"])
def test_encoder_matches_transformers(tiny, variant):
  t = tiny[variant]
  module, params = wav2vec2.load_encoder(str(t["dir"]))
  assert module.config == t["config"]  # Every number from config.json.
  final, hidden, last = _apply(module, params, t["x"])
  ref_final, ref_hidden, v5_hidden = _reference(t["model"], t["x"])
  assert hidden.shape == (2, 49, t["config"].num_hidden_layers, 32)  # 1 s: 49 conv frames.
  _max_diff(final, ref_final, f"{variant} last_hidden_state")
  for i in range(hidden.shape[2]):
    _max_diff(hidden[:, :, i], ref_hidden[:, :, i], f"{variant} hidden state {i + 1}")
  np.testing.assert_array_equal(hidden[:, :, -1], final)
  # transformers 5 differs from Hallo's 4.x only in the pre-LN model's last entry (before the
  # final LayerNorm there): the last layer's own output, checked through Flax's intermediates.
  _max_diff(last, v5_hidden[:, :, -1], f"{variant} last layer output (transformers 5)")
  if t["config"].do_stable_layer_norm:
    assert np.abs(v5_hidden[:, :, -1] - ref_final).max() > 0.1  # The conventions do differ.


def test_named_configs_are_transformers_architectures():
  """`base` is transformers' default Wav2Vec2Config (= facebook/wav2vec2-base-960h); both
  named configs give exactly torch's parameter count (built on the meta device, no memory)."""
  defaults = transformers.Wav2Vec2Config()
  for field in dataclasses.fields(wav2vec2.Wav2Vec2Config):
    expected = getattr(defaults, field.name)
    expected = tuple(expected) if isinstance(expected, list) else expected
    assert getattr(wav2vec2.CONFIGS["base"], field.name) == expected, field.name
  for name, millions in [("base", 94.4), ("large", 315.4)]:
    config = wav2vec2.CONFIGS[name]
    with torch.device("meta"):
      model = transformers.Wav2Vec2Model(
          transformers.Wav2Vec2Config(**_hf_fields(config), mask_time_prob=0))
    torch_count = sum(p.numel() for p in model.parameters())
    expected = weights.expected_params(wav2vec2.Wav2Vec2Encoder(config),
                                       np.zeros((1, 400), np.float32))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(expected))
    assert count == torch_count and round(count / 1e6, 1) == millions, (name, count)


# --- weight import ---------------------------------------------------------------------------

def test_both_weight_norm_spellings_load_the_same_params(tiny, tmp_path):
  t = tiny["base"]
  state = weights.load_state_dict(str(t["dir"]))
  assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in state
  safetensors.torch.save_file(_old_spelling(state), str(tmp_path / "model.safetensors"))
  shutil.copy(t["dir"] / "config.json", tmp_path / "config.json")
  _, new = wav2vec2.load_encoder(str(t["dir"]))
  _, old = wav2vec2.load_encoder(str(tmp_path / "model.safetensors"))
  jax.tree.map(np.testing.assert_array_equal, new, old)
  # The module's weight norm is torch's dim=2 one: the norm over all axes but the taps.
  p = new["pos_conv"]
  v = np.asarray(p["weight_v"])
  kernel = v * (np.asarray(p["weight_g"]) / np.sqrt((v ** 2).sum(axis=(1, 2))))[:, None, None]
  torch_kernel = t["model"].encoder.pos_conv_embed.conv.weight.detach().numpy()
  np.testing.assert_allclose(kernel, torch_kernel.transpose(2, 1, 0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("head, layout", [
    (transformers.Wav2Vec2ForCTC, "save_pretrained"),
    (transformers.Wav2Vec2ForCTC, "old pytorch_model.bin"),  # As facebook/wav2vec2-base-960h.
    (transformers.Wav2Vec2ForPreTraining, "save_pretrained"),
])
def test_checkpoints_with_heads_load_the_encoder(tiny, tmp_path, head, layout):
  model = _torch_model(BASE, head, seed=5)
  if layout == "save_pretrained":
    model.save_pretrained(str(tmp_path))
  else:
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    torch.save(_old_spelling(state), str(tmp_path / "pytorch_model.bin"))
    model.config.save_pretrained(str(tmp_path))
  keys = weights.load_state_dict(str(tmp_path / "model.safetensors") if layout ==
                                 "save_pretrained" else str(tmp_path / "pytorch_model.bin"))
  assert "wav2vec2.masked_spec_embed" in keys
  assert any(k.startswith(("lm_head.", "quantizer.")) for k in keys)  # Ignored heads.
  module, params = wav2vec2.load_encoder(str(tmp_path))
  assert module.config == BASE
  x = tiny["base"]["x"]
  final, hidden, _ = _apply(module, params, x)
  ref_final, ref_hidden, _ = _reference(model.wav2vec2, x)
  _max_diff(final, ref_final, f"{head.__name__} {layout} last_hidden_state")
  _max_diff(hidden, ref_hidden, f"{head.__name__} {layout} hidden states")


def test_refused_config_fields_are_named(tiny, tmp_path):
  t = tiny["base"]
  shutil.copy(t["dir"] / "model.safetensors", tmp_path / "model.safetensors")
  with open(t["dir"] / "config.json") as f:
    hf = json.load(f)
  for field, value in [("hidden_act", "relu"), ("feat_extract_activation", "gelu_new"),
                       ("feat_extract_norm", "batch"), ("add_adapter", True),
                       ("adapter_attn_dim", 16), ("position_embeddings_type", "relative"),
                       ("model_type", "hubert")]:
    with open(tmp_path / "config.json", "w") as f:
      json.dump(dict(hf, **{field: value}), f)
    with pytest.raises(weights.WeightImportError,
                       match=re.escape(f"does not compute: {field} = {value!r}")):
      wav2vec2.load_encoder(str(tmp_path))
  with open(tmp_path / "config.json", "w") as f:
    json.dump(dict(hf, intermediate_size=48), f)
  with pytest.raises(weights.WeightImportError,
                     match=r"intermediate_size: checkpoint 64, config 48"):
    wav2vec2.load_encoder(str(tmp_path))


def test_loader_errors_name_the_problem(tiny, tmp_path, monkeypatch):
  t = tiny["base"]
  state = weights.load_state_dict(str(t["dir"]))
  bare = str(tmp_path / "bare.safetensors")  # No config.json beside it.
  safetensors.torch.save_file({k: torch.from_numpy(v) for k, v in state.items()}, bare)
  with pytest.raises(weights.WeightImportError, match=r"matches no named config"):
    wav2vec2.load_encoder(bare)
  with pytest.raises(weights.WeightImportError, match=r"hidden_size: checkpoint 32, config 768"):
    wav2vec2.load_encoder(bare, "base")
  with pytest.raises(ValueError, match=r"unknown wav2vec2 size 'huge'"):
    wav2vec2.load_encoder(bare, "huge")
  module, _ = wav2vec2.load_encoder(bare, BASE)
  assert module.config == BASE
  monkeypatch.setitem(wav2vec2.CONFIGS, "tiny-large", LARGE)
  monkeypatch.setitem(wav2vec2.CONFIGS, "tiny", BASE)
  module, _ = wav2vec2.load_encoder(bare)  # The named config with the tensors' dims.
  assert module.config == BASE
  del state["encoder.layers.1.feed_forward.output_dense.bias"]
  state["encoder.extra.weight"] = np.zeros(3, np.float32)
  damaged = str(tmp_path / "damaged.safetensors")
  safetensors.torch.save_file({k: torch.from_numpy(v) for k, v in state.items()}, damaged)
  with pytest.raises(weights.WeightImportError) as e:
    wav2vec2.load_encoder(damaged, BASE)
  assert "encoder.layers.1.feed_forward.output_dense.bias (for layers_1/mlp2/bias)" in str(e.value)
  assert "encoder.extra.weight" in str(e.value)
  assert "masked_spec_embed" not in str(e.value)  # Ignored, not reported.
  safetensors.torch.save_file({"conv.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
  with pytest.raises(weights.WeightImportError, match=r"no wav2vec2 encoder found"):
    wav2vec2.load_encoder(str(tmp_path / "other.safetensors"))


def test_random_encoder_is_seeded_and_has_the_loaders_params(tiny, monkeypatch):
  monkeypatch.setitem(wav2vec2.CONFIGS, "tiny", BASE)
  module, a = wav2vec2.random_encoder("tiny", 0)
  _, b = wav2vec2.random_encoder("tiny", 0)
  _, c = wav2vec2.random_encoder("tiny", 1)
  _, loaded = wav2vec2.load_encoder(str(tiny["base"]["dir"]))
  assert module.config == BASE
  assert jax.tree.structure(a) == jax.tree.structure(loaded)
  assert jax.tree.map(np.shape, a) == jax.tree.map(np.shape, loaded)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["layers_0"]["query"]["kernel"], c["layers_0"]["query"]["kernel"])
  with pytest.raises(ValueError, match=r"unknown wav2vec2 size 'huge'"):
    wav2vec2.random_encoder("huge", 0)


# --- Hallo's interpolation -------------------------------------------------------------------

def test_linear_interpolation_matches_torch_align_corners():
  x = np.random.default_rng(1).normal(size=(2, 49, 8)).astype(np.float32)
  for num_frames in (1, 2, 25, 48, 49, 50, 97, 301):
    ref = F.interpolate(torch.from_numpy(x).transpose(1, 2), size=num_frames, mode="linear",
                        align_corners=True).transpose(1, 2).numpy()
    got = np.asarray(wav2vec2.linear_interpolation(x, num_frames))
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0, err_msg=str(num_frames))
  # Corners aligned: the first and last steps are the first and last frames.
  got = np.asarray(wav2vec2.linear_interpolation(x, 25))
  np.testing.assert_array_equal(got[:, [0, -1]], x[:, [0, -1]])


@pytest.mark.parametrize("variant, num_frames", [("base", 25), ("base", 73), ("large", 25)])
def test_interpolated_encoder_matches_hallo(tiny, variant, num_frames):
  t = tiny[variant]
  module, params = wav2vec2.load_encoder(str(t["dir"]))
  final, hidden, _ = _apply(module, params, t["x"], num_frames)
  ref_final, ref_hidden = _hallo_reference(t["model"], t["x"], num_frames)
  assert hidden.shape == (2, num_frames, t["config"].num_hidden_layers, 32)
  _max_diff(final, ref_final, f"{variant} Hallo T={num_frames} last_hidden_state")
  _max_diff(hidden, ref_hidden, f"{variant} Hallo T={num_frames} hidden states")


# --- frame features --------------------------------------------------------------------------

def _hallo_windows(emb: np.ndarray, num_video_frames: int, context: int) -> np.ndarray:
  """Hallo's `process_audio_emb` (`[F, n, D]` -> `[T, (2 context + 1) n, D]`) as its loop."""
  last = emb.shape[0] - 1
  return np.stack([np.concatenate([emb[max(min(i + j, last), 0)]
                                   for j in range(-context, context + 1)])
                   for i in range(num_video_frames)])


def test_hallo_num_frames_is_halloes_float_ceil():
  assert wav2vec2.hallo_num_frames(20800) == 33 == math.ceil(20800 / 16000 * 25)  # 1.3 s.
  assert wav2vec2.hallo_num_frames(16000) == 25
  assert wav2vec2.hallo_num_frames(7 * 640) == 8  # 7.000000000000001 frames in float64.
  assert wav2vec2.hallo_num_frames(16000, fps=30) == 30


@pytest.mark.parametrize("num_video_frames", [33, 40, 30])
def test_frame_features_follow_hallo(tiny, num_video_frames):
  """1.3 s of audio (Hallo's seq_len 33 at 25 fps) for a video of as many frames, of more
  (Hallo's clip padding: 7 frames of 640 zeros after normalising) and of fewer (the first 30
  windows of the 33-step encoding)."""
  t = tiny["base"]
  module, params = wav2vec2.load_encoder(str(t["dir"]))
  audio = (0.1 * np.random.default_rng(3).normal(size=20800) + 0.02).astype(np.float32)
  normed = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
      audio, sampling_rate=16000).input_values[0]
  np.testing.assert_allclose(wav2vec2.normalize(audio), normed, atol=1e-6, rtol=0)
  seq_len = 33
  if num_video_frames > seq_len:  # Hallo's preprocess(clip_length=num_video_frames).
    normed = np.concatenate([normed, np.zeros((num_video_frames - seq_len) * 640, np.float32)])
    seq_len = num_video_frames
  _, ref_hidden = _hallo_reference(t["model"], normed[None].astype(np.float32), seq_len)
  ref = _hallo_windows(ref_hidden[0], num_video_frames, context=2)
  got = wav2vec2.frame_features(module, params, audio, num_video_frames, fps=25, context=2)
  assert got.dtype == np.float32
  assert got.shape == (num_video_frames,) + wav2vec2.window_shape(BASE, 2) == (
      num_video_frames, 10, 32)
  _max_diff(got, ref, f"frame_features T={num_video_frames} vs Hallo")
  # Windows of the encoder's own features, built independently: frame-major, layer-minor.
  ours = wav2vec2.normalize(audio)
  ours = np.concatenate([ours, np.zeros(len(normed) - len(audio), np.float32)])
  features = np.asarray(wav2vec2.encode(module, params, ours[None], seq_len))[0]
  for i in (0, 1, 2, num_video_frames - 1):
    idx = [min(max(i + j, 0), seq_len - 1) for j in range(-2, 3)]
    np.testing.assert_array_equal(got[i], features[idx].reshape(10, 32))
  final = wav2vec2.frame_features(module, params, audio, num_video_frames, layers="final",
                                  context=1)
  assert final.shape == (num_video_frames,) + wav2vec2.window_shape(BASE, 1, "final") == (
      num_video_frames, 3, 32)
  np.testing.assert_array_equal(final[:, 1], got[:, 5])  # Post-LN: final = last layer's output.


# --- in a run --------------------------------------------------------------------------------

def test_a_run_on_wav2vec2_batches_its_windows(tmp_path, monkeypatch):
  """`config.model.audio_encoder = "wav2vec2"` through the registry alone: the config
  validates, the training pipeline caches and batches float32 `[B, T, W, D]` windows under
  the key "wav2vec2" (random weights of a tiny size put in CONFIGS for the test), equal to the
  encoder's own `frame_features` of each clip's audio, and the run's model takes them."""
  monkeypatch.setitem(wav2vec2.CONFIGS, "tiny", BASE)
  monkeypatch.setattr(frozen_encoders, "_audio_encoder",  # A fresh per-process cache.
                      functools.lru_cache(maxsize=4)(frozen_encoders._audio_encoder.__wrapped__))
  config = train_utils.micro_config()
  config.model.audio_encoder = "wav2vec2"
  config.data.data_dir = str(tmp_path)
  config.pretrained.update(audio_path="", audio_size="tiny", audio_context=1,
                           audio_layers="blocks", audio_seed=0)
  config_validation.validate(config)
  mesh = Mesh(np.array(jax.devices()).reshape(-1, 1), ("data", "fsdp"))
  batch = next(pipeline.make_dataset(config, "train", mesh, seed=0))
  b, t = config.data.batch_size, config.data.num_frames
  windows = np.asarray(batch["wav2vec2"])
  assert windows.dtype == np.float32
  assert windows.shape == (b, t, 3 * BASE.num_hidden_layers, BASE.hidden_size) == (8, 4, 6, 32)
  encoder = frozen_encoders.FrozenEncoders(config).audio
  assert encoder.module.config == BASE
  for i in range(2):
    direct = wav2vec2.frame_features(encoder.module, encoder.params,
                                     np.asarray(batch["audio"][i]), t, context=1)
    np.testing.assert_array_equal(windows[i], direct)  # The same code on the same audio.
  assert np.abs(windows[0] - windows[1]).max() > 1e-2  # Two clips' voices differ.
  cached = [os.path.join(root, name) for root, _, names in os.walk(tmp_path) for name in names
            if name == "train.wav2vec2.npy"]
  assert len(cached) == 1 and np.load(cached[0]).shape == (config.data.num_train,) + (
      windows.shape[1:])  # Cached beside the dataset, one row per clip.
  model = diffusion_model.make_model(config)
  inputs = diffusion_model.example_inputs(config, b)
  assert inputs["cond"]["wav2vec2"].shape == windows.shape
  cond = dict(inputs["cond"], wav2vec2=batch["wav2vec2"])
  params = nn.meta.unbox(
      jax.eval_shape(model.init, jax.random.key(0), inputs["x"], inputs["t"], cond))["params"]
  assert params["audio_encoder"]["input_proj"]["kernel"].shape == (
      BASE.hidden_size, config.model.width)
