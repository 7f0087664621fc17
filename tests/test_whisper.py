"""The Flax Whisper encoder, its log-mel front end, weight import and frame windows.

References (test-only extras, nothing downloaded): transformers' torch `WhisperModel` with
random weights, saved as HF safetensors (`save_pretrained`, and a bare file with the
`model.` prefix) and as an openai-whisper `.pt` whose keys are renamed here to
openai-whisper's module names; Whisper's log-mel recipe written in torch
(with transformers' Slaney filter bank) and transformers' `WhisperFeatureExtractor`;
LatentSync's window convention (its `Audio2Feature.get_sliced_feature`) worked out by hand.
"""
import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from transformers import audio_utils

from gcm_jax import weights
from gcm_jax.models.pretrained import whisper
from gcm_jax.models.pretrained import whisper_mel

from benchmarks import common
from benchmarks import whisper_features as whisper_bench

SMALL = whisper.WhisperConfig(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4,
                              n_audio_layer=2)
# transformers key (under the encoder) -> openai-whisper key, as openai-whisper names modules.
OPENAI_NAMES = [
    (r"embed_positions\.weight", "positional_embedding"), (r"^layer_norm\.", "ln_post."),
    (r"layers\.(\d+)\.self_attn\.q_proj", r"blocks.\1.attn.query"),
    (r"layers\.(\d+)\.self_attn\.k_proj", r"blocks.\1.attn.key"),
    (r"layers\.(\d+)\.self_attn\.v_proj", r"blocks.\1.attn.value"),
    (r"layers\.(\d+)\.self_attn\.out_proj", r"blocks.\1.attn.out"),
    (r"layers\.(\d+)\.self_attn_layer_norm", r"blocks.\1.attn_ln"),
    (r"layers\.(\d+)\.fc1", r"blocks.\1.mlp.0"), (r"layers\.(\d+)\.fc2", r"blocks.\1.mlp.2"),
    (r"layers\.(\d+)\.final_layer_norm", r"blocks.\1.mlp_ln"),
]


# One compilation per module config (equal modules hash alike): (final, hidden).
_apply = jax.jit(lambda module, params, mel: module.apply({"params": params}, mel),
                 static_argnums=0)


def _torch_whisper(config: whisper.WhisperConfig, seed: int = 0) -> transformers.WhisperModel:
  """A transformers WhisperModel with the encoder dims of `config` and random weights."""
  hf = transformers.WhisperConfig(
      num_mel_bins=config.n_mels, max_source_positions=config.n_audio_ctx,
      d_model=config.n_audio_state, encoder_attention_heads=config.n_audio_head,
      encoder_layers=config.n_audio_layer, encoder_ffn_dim=config.n_audio_mlp,
      decoder_layers=1, decoder_attention_heads=config.n_audio_head, decoder_ffn_dim=32,
      vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
      decoder_start_token_id=1)
  model = transformers.WhisperModel(hf).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "embed_positions" in name and name.startswith("encoder"):
        continue  # Keep the sinusoids.
      noise = torch.randn(p.shape, generator=g)
      p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.05 * noise)
  return model


def _openai_checkpoint(model: transformers.WhisperModel, config: whisper.WhisperConfig,
                       path: str) -> None:
  """Saves `model`'s encoder as openai-whisper does: {"dims", "model_state_dict"}."""
  state = {}
  for key, value in model.encoder.state_dict().items():
    for pattern, repl in OPENAI_NAMES:
      key = re.sub(pattern, repl, key)
    state[f"encoder.{key}"] = value.clone()
  state["decoder.token_embedding.weight"] = torch.zeros(64, config.n_audio_state)  # Ignored.
  dims = dict(vars(config), n_vocab=64, n_text_ctx=16, n_text_state=config.n_audio_state,
              n_text_head=config.n_audio_head, n_text_layer=1)
  torch.save({"dims": dims, "model_state_dict": state}, path)


def _reference(model: transformers.WhisperModel, mel: np.ndarray):
  """Log-mel `[B, 3000, n_mels]` -> (ln_post output `[B, L, D]`, hidden states
  `[B, L, n_layer + 1, D]` as LatentSync stacks them)."""
  last = []
  hook = model.encoder.layers[-1].register_forward_hook(
      lambda module, inputs, out: last.append(out[0] if isinstance(out, tuple) else out))
  with torch.no_grad():
    out = model.encoder(torch.from_numpy(np.array(mel)).transpose(1, 2),
                        output_hidden_states=True)
  hook.remove()
  # transformers' last hidden state is after the final LayerNorm; LatentSync's is before.
  hidden = list(out.hidden_states[:-1]) + last
  return out.last_hidden_state.numpy(), torch.stack(hidden, dim=2).numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """The random small model, its checkpoints in three layouts, a mel input and outputs."""
  tmp = tmp_path_factory.mktemp("whisper")
  model = _torch_whisper(SMALL)
  model.save_pretrained(str(tmp / "hf"))  # model.safetensors + config.json, keys "encoder."
  safetensors.torch.save_file(
      {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()},
      str(tmp / "bare.safetensors"))  # WhisperForConditionalGeneration's prefix, no config.
  _openai_checkpoint(model, SMALL, str(tmp / "small.pt"))
  audio = np.random.default_rng(0).normal(0, 0.1, 20 * whisper_mel.SAMPLE_RATE)
  mel = np.array(whisper_mel.log_mel_spectrogram(whisper_mel.pad_to_windows(audio)))[None]
  final, hidden = _reference(model, mel)
  return dict(dir=tmp, model=model, mel=mel, final=final, hidden=hidden)


# --- log-mel front end -----------------------------------------------------------------------

def _torch_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
  """Whisper's log-mel recipe (STFT power, Slaney mel, log10, 8-decade floor, (x + 4) / 4)
  in torch, `[n_mels, frames]`."""
  filters = torch.from_numpy(audio_utils.mel_filter_bank(
      num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0, max_frequency=8000,
      sampling_rate=16000, norm="slaney", mel_scale="slaney").T).float()
  stft = torch.stft(torch.from_numpy(audio), 400, 160, window=torch.hann_window(400),
                    return_complex=True)
  magnitudes = stft[..., :-1].abs() ** 2
  log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
  log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
  return ((log_spec + 4.0) / 4.0).numpy()


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * whisper_mel.SAMPLE_RATE)) / whisper_mel.SAMPLE_RATE
  tone = np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
  return (0.3 * tone + 0.05 * rng.normal(size=t.shape)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers_slaney(n_mels):
  ref = audio_utils.mel_filter_bank(
      num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0, max_frequency=8000,
      sampling_rate=16000, norm="slaney", mel_scale="slaney").T
  np.testing.assert_allclose(whisper_mel.mel_filters(n_mels), ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_openai_whisper(n_mels):
  audio = _speechlike(7.3)
  got = np.asarray(whisper_mel.log_mel_spectrogram(audio, n_mels=n_mels))
  ref = _torch_log_mel(audio, n_mels)
  assert got.shape == (whisper_mel.num_frames(audio.size), n_mels) == ref.T.shape == (730, n_mels)
  np.testing.assert_allclose(got, ref.T, atol=1e-4, rtol=0)


def test_padded_log_mel_matches_whisper_feature_extractor():
  audio = _speechlike(4.0, seed=1)
  ref = transformers.WhisperFeatureExtractor(feature_size=80)(
      audio, sampling_rate=16000, return_tensors="np").input_features[0]
  got = np.asarray(whisper_mel.log_mel_spectrogram(whisper_mel.pad_to_windows(audio)))
  assert got.shape == (whisper_mel.N_FRAMES, 80)
  np.testing.assert_allclose(got, ref.T, atol=1e-4, rtol=0)


# --- encoder parity and loading --------------------------------------------------------------

@pytest.mark.parametrize("checkpoint, size", [
    ("hf", None),  # transformers folder, "encoder." keys, dims from config.json
    ("bare.safetensors", SMALL),  # transformers keys with "model.", no metadata
    ("small.pt", None),  # openai-whisper, dims from the .pt
])
def test_encoder_matches_transformers_for_each_checkpoint_layout(small, checkpoint, size):
  module, params = whisper.load_encoder(str(small["dir"] / checkpoint), size)
  assert module.config == SMALL
  final, hidden = _apply(module, params, small["mel"])
  np.testing.assert_allclose(np.asarray(final), small["final"], atol=1e-4, rtol=0)
  assert hidden.shape == (1, 1500, SMALL.n_audio_layer + 1, SMALL.n_audio_state)
  np.testing.assert_allclose(np.asarray(hidden), small["hidden"], atol=1e-4, rtol=0)


def test_encoder_at_tiny_dims_matches_transformers(tmp_path):
  model = _torch_whisper(whisper.CONFIGS["tiny"], seed=1)
  safetensors.torch.save_file(
      {f"model.encoder.{k}": v.contiguous() for k, v in model.encoder.state_dict().items()},
      str(tmp_path / "tiny.safetensors"))
  module, params = whisper.load_encoder(str(tmp_path / "tiny.safetensors"))
  assert module.config == whisper.CONFIGS["tiny"]  # Named config found from the shapes.
  mel = np.random.default_rng(2).uniform(-1, 1.5, (1, 3000, 80)).astype(np.float32)
  final, _ = _apply(module, params, mel)
  ref, _ = _reference(model, mel)
  np.testing.assert_allclose(np.asarray(final), ref, atol=1e-4, rtol=0)


def test_mlp_width_comes_from_the_checkpoint_not_from_4_x_d_model(tmp_path):
  """A transformers checkpoint with encoder_ffn_dim = 96 (1.5 x d_model): its config.json
  gives the width (parity with transformers); a config that says otherwise is refused, naming
  the field, and so is an activation this port does not compute."""
  config = dataclasses.replace(SMALL, n_audio_layer=1, n_audio_mlp=96)
  model = _torch_whisper(config, seed=3)
  model.save_pretrained(str(tmp_path / "hf"))
  module, params = whisper.load_encoder(str(tmp_path / "hf"))
  assert module.config == config and params["blocks_0"]["mlp1"]["kernel"].shape == (64, 96)
  mel = np.random.default_rng(4).uniform(-1, 1.5, (1, 3000, 80)).astype(np.float32)
  final, hidden = _apply(module, params, mel)
  ref_final, ref_hidden = _reference(model, mel)
  np.testing.assert_allclose(np.asarray(final), ref_final, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(hidden), ref_hidden, atol=1e-4, rtol=0)
  with pytest.raises(weights.WeightImportError, match=r"n_audio_mlp: checkpoint 96, config 256"):
    whisper.load_encoder(str(tmp_path / "hf"), dataclasses.replace(config,
                                                                          n_audio_mlp=0))
  with open(tmp_path / "hf" / "config.json") as f:
    hf = json.load(f)
  with open(tmp_path / "hf" / "config.json", "w") as f:
    json.dump(dict(hf, activation_function="relu"), f)
  with pytest.raises(weights.WeightImportError,
                     match=r"activation_function = 'relu' \(this encoder computes 'gelu'\)"):
    whisper.load_encoder(str(tmp_path / "hf"))


@pytest.mark.parametrize("changes, message", [
    (dict(encoder_attention_heads=5), "d_model = 64 is not a multiple of encoder_attention_heads"
                                      " = 5"),
    # transformers' WhisperConfig default (1536), not 4 x d_model (256, which would have fit).
    (dict(encoder_ffn_dim=None), "n_audio_mlp: checkpoint 256, config 1536"),
], ids=["heads", "missing-ffn-dim"])
def test_config_json_the_encoder_cannot_express_is_refused(small, tmp_path, changes, message):
  shutil.copytree(small["dir"] / "hf", tmp_path / "hf")
  hf = json.loads((tmp_path / "hf" / "config.json").read_text())
  hf = {k: v for k, v in {**hf, **changes}.items() if v is not None}
  (tmp_path / "hf" / "config.json").write_text(json.dumps(hf))
  with pytest.raises(weights.WeightImportError) as e:
    whisper.load_encoder(str(tmp_path / "hf"))
  assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("changes, message", [
    (dict(n_audio_head=None), "(dims) asks for a Whisper encoder this port does not compute: "
                              "n_audio_head missing"),
    (dict(n_audio_head=3), "n_audio_state = 64 is not a multiple of n_audio_head = 3"),
], ids=["missing-head-count", "heads"])
def test_openai_dims_the_encoder_cannot_express_are_refused(small, tmp_path, changes, message):
  obj = torch.load(small["dir"] / "small.pt", weights_only=True)
  dims = {k: v for k, v in {**obj["dims"], **changes}.items() if v is not None}
  torch.save(dict(obj, dims=dims), tmp_path / "small.pt")
  with pytest.raises(weights.WeightImportError) as e:
    whisper.load_encoder(str(tmp_path / "small.pt"))
  assert message in str(e.value), str(e.value)


def test_loader_errors_name_the_problem(small, tmp_path):
  with pytest.raises(weights.WeightImportError, match=r"n_audio_state: checkpoint 64, config 384"):
    whisper.load_encoder(str(small["dir"] / "small.pt"), "tiny")
  with pytest.raises(weights.WeightImportError, match=r"matches no named config"):
    whisper.load_encoder(str(small["dir"] / "bare.safetensors"))
  with pytest.raises(ValueError, match=r"unknown Whisper size 'huge'"):
    whisper.load_encoder(str(small["dir"] / "bare.safetensors"), "huge")
  state = weights.read_safetensors(str(small["dir"] / "bare.safetensors"))
  del state["model.encoder.layers.1.fc2.bias"]
  state["model.encoder.extra.weight"] = np.zeros(3, np.float32)
  torch_state = {k: torch.from_numpy(v) for k, v in state.items()}
  safetensors.torch.save_file(torch_state, str(tmp_path / "damaged.safetensors"))
  with pytest.raises(weights.WeightImportError) as e:
    whisper.load_encoder(str(tmp_path / "damaged.safetensors"), SMALL)
  assert "model.encoder.layers.1.fc2.bias (for blocks_1/mlp2/bias)" in str(e.value)
  assert "model.encoder.extra.weight" in str(e.value)
  assert "decoder" not in str(e.value)  # Decoder keys are ignored, not reported.
  safetensors.torch.save_file({"conv.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
  with pytest.raises(weights.WeightImportError, match=r"no Whisper encoder found"):
    whisper.load_encoder(str(tmp_path / "other.safetensors"))


# --- frame windows ---------------------------------------------------------------------------

def test_frame_window_indices_by_hand():
  np.testing.assert_array_equal(whisper.frame_window_indices(7, 4, fps=25, context=1), [
      [0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 6], [4, 5, 6, 6, 6, 6]])
  np.testing.assert_array_equal(whisper.frame_window_indices(9, 3, fps=50, context=0),
                                [[0, 1], [1, 2], [2, 3]])


def test_frame_features_follow_latentsync(small):
  module, params = whisper.load_encoder(str(small["dir"] / "small.pt"))
  audio = np.random.default_rng(3).normal(0, 0.1, int(1.3 * whisper_mel.SAMPLE_RATE))
  features = np.asarray(whisper.whisper_features(module, params, audio))
  assert features.shape == (65, SMALL.n_audio_layer + 1, SMALL.n_audio_state)  # 1.3 s * 50
  got = np.asarray(whisper.frame_features(module, params, audio, 40, context=2))
  assert got.shape == (40,) + whisper.window_shape(SMALL, 2, "blocks") == (40, 30, 64)
  # LatentSync's windows, worked out by hand: frame i takes feature frames 2i - 4 .. 2i + 5,
  # clamped to the 65 features (frame 39 runs past the audio: the last one repeats),
  # each frame's n + 1 hidden states in a row (frame-major, layer-minor).
  by_hand = {0: [0, 0, 0, 0, 0, 1, 2, 3, 4, 5], 1: [0, 0, 0, 1, 2, 3, 4, 5, 6, 7],
             17: list(range(30, 40)), 39: [64] * 10}
  for i, idx in by_hand.items():
    np.testing.assert_array_equal(got[i], features[idx].reshape(-1, 64))


def test_long_audio_is_encoded_in_30s_windows_not_truncated(small):
  """65 s = two full windows and a padded third; against the torch reference per window."""
  module, params = whisper.load_encoder(str(small["dir"] / "hf"))
  audio = _speechlike(65.0, seed=4)
  padded = np.concatenate([audio, np.zeros(3 * whisper_mel.N_SAMPLES - audio.size, np.float32)])
  mel = _torch_log_mel(padded, 80).T.reshape(3, whisper_mel.N_FRAMES, 80)
  ref = np.concatenate([_reference(small["model"], m[None])[0][0] for m in mel])[:3250]
  got = np.asarray(whisper.whisper_features(module, params, audio, layers="final"))
  assert got.shape == (3250, 1, 64)  # 65 s * 50 Hz
  np.testing.assert_allclose(got[:, 0], ref, atol=1e-4, rtol=0)
  frames = np.asarray(whisper.frame_features(module, params, audio, 65 * 25,
                                                     context=1, layers="final"))
  assert frames.shape == (1625, 6, 64)
  np.testing.assert_array_equal(frames[1000], got[1998:2004, 0])  # Center 2000, second window


# --- benchmark -------------------------------------------------------------------------------

def test_benchmark_measures_time_flops_and_cache_bytes():
  micro = whisper.WhisperConfig(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2,
                                n_audio_layer=1)
  results = whisper_bench.measure(micro, repeats=1, ceiling=common.matmul_ceiling_fn(size=128),
                                  compiler_options=common.FAST_COMPILE)
  for result in results.values():
    for key in ("seconds", "flops", "flop_per_s", "ceiling_flop_per_s", "ratio",
                "ms_per_audio_second"):
      assert np.isfinite(result[key]) and result[key] > 0, (key, result[key])
  d, frames = micro.n_audio_state, 1500
  matmuls = (2 * 2 * frames * 3 * micro.n_mels * d + 2 * frames * 3 * d * d  # conv1, conv2
             + micro.n_audio_layer * (2 * frames * 12 * d * d + 2 * 2 * frames ** 2 * d))
  assert matmuls <= results["encoder"]["flops"] <= 1.2 * matmuls
  tiny = whisper_bench.cache_bytes_per_second(whisper.CONFIGS["tiny"], "blocks", context=2)
  assert tiny == {"features": 50 * 5 * 384 * 4, "window": 50 * 384 * 4,
                  "windows": 25 * 50 * 384 * 4}
