"""The published sync networks in Flax (syncnet_python's SyncNet, Wav2Lip's SyncNet_color),
their loaders, and LSE-D / LSE-C as syncnet_python computes them.

References (test-only): the torch originals and syncnet_python's evaluation in
`tests/syncnet_references.py`, on random weights with random BatchNorm running statistics,
and `python_speech_features` for the MFCC.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import python_speech_features
import torch

from gcm_jax import weights
from gcm_jax.alignment import lse
from gcm_jax.models.pretrained import syncnet_python as snp
from gcm_jax.models.pretrained import wav2lip_syncnet as w2l
from tests import loader_checks
from tests import syncnet_references as ref

TOL = 1e-4  # Relative to the largest reference magnitude.


def assert_close(got, want, tol=TOL):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  scale = max(np.abs(want).max(), 1e-12)
  err = np.abs(got - want).max() / scale
  assert err <= tol, f"max |diff| / max |ref| = {err:.3g} > {tol}"


@pytest.fixture(scope="module")
def syncnet_python_pair(tmp_path_factory):
  """(torch `S`, Flax module, variables loaded from the torch state dict saved as `.model`)."""
  net = ref.randomize(ref.S(), seed=0)
  rng = np.random.default_rng(10)
  lips = torch.from_numpy(rng.uniform(0, 255, (2, 3, 5, 224, 224)).astype(np.float32))
  mfcc = torch.from_numpy(rng.normal(0, 10, (4, 1, 13, 20)).astype(np.float32))
  ref.calibrate(net, [lambda: net.forward_lip(lips), lambda: net.forward_aud(mfcc)])
  with torch.no_grad():  # A shared embedding offset: audio at distance ~1, zero padding ~10,
    bias = 10.0 * torch.nn.functional.normalize(torch.randn(1024), dim=0)  # so LSE-D is not
    for head in (net.netfclip, net.netfcaud):                               # at a padded offset.
      head[3].weight.mul_(0.02)
      head[3].bias.copy_(bias)
  path = str(tmp_path_factory.mktemp("w") / "syncnet_v2.model")
  torch.save(net.state_dict(), path)  # syncnet_python's file: a bare state dict.
  module, variables = snp.load_syncnet_python(path)
  return net, module, variables


@pytest.fixture(scope="module")
def wav2lip_pair(tmp_path_factory):
  """(torch `SyncNet_color`, Flax module, variables from a Wav2Lip-style checkpoint)."""
  net = ref.randomize(ref.SyncNet_color().eval(), seed=1)
  path = str(tmp_path_factory.mktemp("w") / "lipsync_expert.pth")
  # Wav2Lip's save_checkpoint layout, with a DataParallel prefix.
  torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
              "optimizer": None, "global_step": 0, "global_epoch": 0}, path)
  module, variables = w2l.load_wav2lip_syncnet(path)
  return net, module, variables


def test_syncnet_python_embeddings_match_torch(syncnet_python_pair):
  net, module, variables = syncnet_python_pair
  rng = np.random.default_rng(0)
  lips = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
  mfcc = rng.normal(0, 10, (3, 13, 20)).astype(np.float32)
  with torch.no_grad():
    want_v = net.forward_lip(torch.from_numpy(lips).permute(0, 4, 1, 2, 3)).numpy()
    want_a = net.forward_aud(torch.from_numpy(mfcc)[:, None]).numpy()
  got_v, got_a = jax.jit(module.apply)(variables, lips, mfcc)
  assert got_v.shape == (2, 1024) and got_a.shape == (3, 1024)
  assert_close(got_v, want_v)
  assert_close(got_a, want_a)


def test_wav2lip_embeddings_loss_and_face_input_match_torch(wav2lip_pair):
  net, module, variables = wav2lip_pair
  rng = np.random.default_rng(1)
  frames = rng.uniform(0, 1, (3, 5, 96, 96, 3)).astype(np.float32)   # RGB [B, T, H, W, 3]
  mel = rng.uniform(-4, 4, (3, 16, 80)).astype(np.float32)           # [B, time, bin]
  g = torch.from_numpy(frames[..., ::-1].copy()).permute(0, 4, 1, 2, 3)  # BGR [B, 3, T, H, W]
  faces_t = ref.sync_input(g)
  faces = w2l.face_input(jnp.asarray(frames))
  np.testing.assert_array_equal(np.asarray(faces), faces_t.permute(0, 2, 3, 1).numpy())
  y = np.array([1.0, 0.0, 1.0], np.float32)
  with torch.no_grad():
    want_a, want_v = net(torch.from_numpy(mel).transpose(1, 2)[:, None], faces_t)
    want_loss = ref.cosine_loss(want_a, want_v, torch.from_numpy(y)[:, None]).item()
    want_cos = torch.nn.functional.cosine_similarity(want_a, want_v).numpy()
  got_a, got_v = jax.jit(module.apply)(variables, mel, faces)
  assert got_a.shape == got_v.shape == (3, 512)
  assert_close(got_a, want_a.numpy())
  assert_close(got_v, want_v.numpy())
  assert_close(w2l.sync_probability(got_a, got_v), want_cos)
  assert_close(w2l.expert_loss(got_a, got_v, jnp.asarray(y)), want_loss)


def test_wav2lip_batch_statistics_match_torch_train_mode(wav2lip_pair):
  """Wav2Lip's generator training runs the expert in train mode (batch statistics)."""
  eval_net, _, variables = wav2lip_pair
  net = ref.SyncNet_color()
  net.load_state_dict(eval_net.state_dict())
  net.train()
  rng = np.random.default_rng(2)
  faces = rng.uniform(0, 1, (4, 48, 96, 15)).astype(np.float32)
  mel = rng.uniform(-4, 4, (4, 16, 80)).astype(np.float32)
  with torch.no_grad():
    want_a, want_v = net(torch.from_numpy(mel).transpose(1, 2)[:, None],
                         torch.from_numpy(faces).permute(0, 3, 1, 2))
  train_apply = functools.partial(w2l.SyncNetColor(use_running_average=False).apply,
                                  mutable=["batch_stats"])
  (got_a, got_v), updates = jax.jit(train_apply)(variables, mel, faces)
  # Batch statistics over 4 samples of the 1x1 last layers amplify float32 rounding.
  assert_close(got_a, want_a.numpy(), tol=1e-3)
  assert_close(got_v, want_v.numpy(), tol=1e-3)
  stats = updates["batch_stats"]["face_encoder_3"]["bn"]
  bn = net.face_encoder[3].conv_block[1]
  assert_close(stats["mean"], bn.running_mean.numpy())
  # torch updates running_var with the unbiased batch variance, Flax with the biased one.
  assert_close(stats["var"], bn.running_var.numpy(), tol=2e-2)


@pytest.mark.parametrize("num_samples", [100, 400, 401, 561, 5 * 640 + 77])
def test_mfcc_matches_python_speech_features(num_samples):
  rng = np.random.default_rng(num_samples)
  audio = (rng.normal(0, 3000, num_samples)).astype(np.int16)
  audio[: num_samples // 3] = 0  # Silent frames: the eps floors of energy and filterbank.
  want = python_speech_features.mfcc(audio, 16000)
  got = lse.mfcc(lse.pcm16(audio))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Float audio in [-1, 1) is read at PCM scale.
  np.testing.assert_array_equal(lse.pcm16(audio.astype(np.float32) / 32768), audio)


@pytest.mark.parametrize("size, batch_size", [(224, 20), (112, 3)])
def test_lse_matches_syncnet_python_evaluate(syncnet_python_pair, size, batch_size):
  """Same network and inputs: LSE-D, LSE-C, offset and every offset's mean distance.

  112 px frames take Wav2Lip's scoring path (cv2.resize to 224); batch_size 3 pads the last
  batch of the 4 windows.
  """
  net, module, variables = syncnet_python_pair
  rng = np.random.default_rng(size)
  frames = 9
  video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)       # RGB
  audio = rng.normal(0, 3000, frames * 640 + 300).astype(np.int16)
  offset, conf, minval, mdist = ref.evaluate(net, [f[..., ::-1] for f in video], audio)
  got = lse.lse_syncnet_python(module, variables, video, audio, batch_size=batch_size)
  assert got["num_windows"] == frames - 5
  assert got["offset"] == int(offset)
  assert_close(got["mdist"], mdist)
  assert_close(got["lse_d"], minval)
  np.testing.assert_allclose(got["lse_c"], conf, atol=TOL * float(minval))


@pytest.mark.parametrize("import_variables, torch_net, flax_net", [
    (snp.import_variables, ref.S, snp.SyncNetPython),
    (w2l.import_variables, ref.SyncNet_color, w2l.SyncNetColor),
], ids=["syncnet_python", "wav2lip"])
def test_loader_names_every_problem(import_variables, torch_net, flax_net):
  state = {k: v.numpy() for k, v in torch_net().state_dict().items()}
  loader_checks.check_loader_names_every_problem(import_variables, state, flax_net())


def test_wrong_network_and_missing_file(tmp_path):
  path = str(tmp_path / "lipsync_expert.pth")
  torch.save({"state_dict": ref.SyncNet_color().state_dict()}, path)
  with pytest.raises(weights.WeightImportError, match="missing in the checkpoint"):
    snp.load_syncnet_python(path)
  with pytest.raises(weights.WeightImportError, match="no such file"):
    w2l.load_wav2lip_syncnet(str(tmp_path / "absent.pth"))


def test_input_checks(syncnet_python_pair):
  _, module, variables = syncnet_python_pair
  with pytest.raises(ValueError, match=r"frames must be \[N, 5, 224, 224, 3\]"):
    module.apply(variables, jnp.zeros((1, 5, 96, 96, 3)), method="embed_video")
  with pytest.raises(ValueError, match=r"mel must be \[N, 16, 80\]"):
    w2l.SyncNetColor().init(jax.random.key(0), jnp.zeros((1, 80, 16)),
                            jnp.zeros((1, 48, 96, 15)))
  with pytest.raises(ValueError, match="at least 6 frames"):
    lse.lse_syncnet_python(module, variables, np.zeros((5, 224, 224, 3), np.uint8),
                           np.zeros(16000, np.int16))
