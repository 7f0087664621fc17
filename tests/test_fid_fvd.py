"""FID / FVD: the Flax ports of pytorch-fid's Inception-v3 and pytorch-i3d's I3D against torch
references (`tests/fid_fvd_references.py`) on random weights with random BatchNorm running
statistics, the FID / FVD wrappers end to end, the real-feature cache and the loaders.

Input sizes: Inception on 4 frames of 64 x 80 (resized to 299, as every FID input is); I3D at
the smallest input the architecture allows, 9 frames resized to 193 x 200 (odd and even sizes,
so both branches of TF's SAME padding run; FVD itself uses 16 x 224 x 224, which is the same
network and code path, about 4x the compute).
"""
import jax
import numpy as np
import pytest
import torch

from gcm_jax import weights
from gcm_jax.alignment import fidelity
from gcm_jax.alignment import frechet
from gcm_jax.models.pretrained import i3d
from gcm_jax.models.pretrained import inception_fid
from tests import loader_checks
from tests import fid_fvd_references as ref
from tests.syncnet_references import calibrate, randomize

TOL = 1e-4          # Relative to the largest reference magnitude.
I3D_SIZE = (193, 200)


def assert_close(got, want, tol=TOL):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
  assert err <= tol, f"max |diff| / max |ref| = {err:.3g} > {tol}"


def _levels(rng, shape):
  """Random 8-bit frames: (levels 0..255, the same in [-1, 1])."""
  levels = rng.integers(0, 256, shape).astype(np.float32)
  return levels, levels / 127.5 - 1.0


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
  """(torch pool3 of 4 frames, frames in [-1, 1], Flax module, variables, weight path)."""
  torch.manual_seed(0)
  net = randomize(ref.FIDInception3(), seed=0)
  levels, frames = _levels(np.random.default_rng(0), (4, 64, 80, 3))
  images01 = torch.from_numpy(levels / 255.0).permute(0, 3, 1, 2)
  calibrate(net, [lambda: net.fid_pool3(images01)])
  with torch.no_grad():
    want = net.fid_pool3(images01).numpy()
  path = str(tmp_path_factory.mktemp("w") / "pt_inception-2015-12-05-6726825d.pth")
  torch.save(net.state_dict(), path)  # pytorch-fid's file: a bare state dict (with fc).
  module, variables = inception_fid.load_inception_fid(path)
  return want, frames, module, variables, path


@pytest.fixture(scope="module")
def i3d_pair(tmp_path_factory):
  """(torch logits [4, 400], pooled features [4, 1024], clips in [-1, 1], weight path)."""
  torch.manual_seed(1)
  net = randomize(ref.InceptionI3d(), seed=1)
  levels, clips = _levels(np.random.default_rng(1), (4, 9, 150, 170, 3))
  x = torch.from_numpy(2 * levels / 255.0 - 1).flatten(0, 1).permute(0, 3, 1, 2)
  x = torch.nn.functional.interpolate(x, size=I3D_SIZE, mode="bilinear", align_corners=False)
  x = x.reshape(4, 9, 3, *I3D_SIZE).permute(0, 2, 1, 3, 4)  # [N, 3, T, H, W]
  calibrate(net, [lambda: net(x[:2])])
  with torch.no_grad():
    pooled = net.extract_features(x)                    # [N, 1024, T', 1, 1]
    logits = net.logits(pooled).squeeze(3).squeeze(3)   # forward's tail: [N, 400, T']
  path = str(tmp_path_factory.mktemp("w") / "rgb_imagenet.pt")
  torch.save(net.state_dict(), path)
  return logits.mean(-1).numpy(), pooled.flatten(2).mean(-1).numpy(), clips, path


def test_fid_features_match_pytorch_fid(inception):
  want, frames, module, variables, _ = inception
  got = frechet.fid_features(module, variables, frames, batch_size=3)  # 3 + 1 padded
  assert got.shape == (4, inception_fid.FEATURE_DIM)
  assert np.abs(want).max() > 0.1 and want.std() > 0.01  # Not a vanished signal.
  assert_close(got, want)


def _two_vs_two(f):
  """Frechet distance of Gaussians fitted to f[:2] and f[2:] in closed form: each covariance
  is rank one, u u^T and v v^T with u = (f0 - f1) / sqrt 2, so tr (C1 C2)^1/2 = |u . v|."""
  f = np.asarray(f, np.float64)
  u, v = (f[0] - f[1]) / np.sqrt(2), (f[2] - f[3]) / np.sqrt(2)
  dm = (f[0] + f[1] - f[2] - f[3]) / 2
  return dm @ dm + u @ u + v @ v - 2 * abs(u @ v)


def test_fid_end_to_end_with_cache(inception, tmp_path):
  """fid() = the Frechet distance of the torch features; the real set is featurized once."""
  want, frames, module, variables, path = inception
  cache = frechet.FeatureCache(str(tmp_path))
  key = frechet.RealSetKey(frechet.file_sha256(path), "test:frames[2:]")
  got = frechet.fid(module, variables, frames[:2], lambda: frames[2:], batch_size=3,
                    cache=cache, real_key=key)
  expected = _two_vs_two(want)
  assert got == pytest.approx(expected, rel=1e-4) and expected > 0
  assert (cache.hits, cache.misses) == (0, 1)
  never = lambda: pytest.fail("the real set was loaded on a cache hit")
  real = frechet.real_features("fid", module, variables, never, batch_size=3, cache=cache,
                               real_key=key)
  assert (cache.hits, cache.misses) == (1, 1)
  assert_close(real, want[2:])


def test_i3d_logits_and_features_match_pytorch_i3d(i3d_pair):
  want_logits, want_pooled, clips, path = i3d_pair
  module, variables = i3d.load_i3d(path)
  small = module.clone(size=I3D_SIZE)
  got = frechet.fvd_features(small, variables, clips[:2], batch_size=2)
  assert got.shape == (2, i3d.NUM_CLASSES)
  assert np.abs(want_logits).max() > 0.1
  assert_close(got, want_logits[:2])
  module_f, variables_f = i3d.load_i3d(path, output="features")
  assert "logits" not in variables_f["params"]
  pooled = np.asarray(jax.jit(module_f.clone(size=I3D_SIZE).apply)(variables_f, clips[:1]))
  assert_close(pooled, want_pooled[:1])


def test_i3d_class_count_is_read_from_the_checkpoint(tmp_path):
  """pytorch-i3d's `InceptionI3d(num_classes=157)` (its Charades `rgb_charades.pt` head): the
  count comes from the `logits` weight, whose values land in the head unchanged (the head's
  forward is the 400-class parity test's code; only shapes are traced here, to stay fast)."""
  net = ref.InceptionI3d(num_classes=157)
  path = str(tmp_path / "rgb_charades.pt")
  torch.save(net.state_dict(), path)
  module, variables = i3d.load_i3d(path)
  assert module.num_classes == 157
  w = net.logits.conv3d.weight.detach().numpy()[:, :, 0, 0, 0]
  np.testing.assert_array_equal(variables["params"]["logits"]["kernel"], w.T)
  np.testing.assert_array_equal(variables["params"]["logits"]["bias"],
                                net.logits.conv3d.bias.detach().numpy())
  clips = jax.ShapeDtypeStruct((1, 9, *I3D_SIZE, 3), np.float32)
  assert jax.eval_shape(module.clone(size=I3D_SIZE).apply, variables, clips).shape == (1, 157)


def test_fid_inception_refuses_another_classifier():
  """torchvision's ImageNet Inception-v3 (aux_logits=False) has every key of the FID file,
  only a 1000-way `fc`: unused by the features, but refused rather than silently loaded."""
  state = {"fc.weight": np.zeros((1000, 2048), np.float32),
           "fc.bias": np.zeros((1000,), np.float32)}
  with pytest.raises(weights.WeightImportError,
                     match=r"inception_v3.pth is not pytorch-fid's FID Inception.*:\n"
                           r"  fc.weight: checkpoint \(1000, 2048\), the FID Inception's "
                           r"\(1008, 2048\)\n  fc.bias"):
    inception_fid.import_variables(state, inception_fid.InceptionFID(),
                                   source="inception_v3.pth")


def test_fvd_end_to_end(i3d_pair):
  want_logits, _, clips, path = i3d_pair
  module, variables = i3d.load_i3d(path)
  got = frechet.fvd(module.clone(size=I3D_SIZE), variables, clips[:2], clips[2:], batch_size=2)
  expected = _two_vs_two(want_logits)
  assert np.isclose(expected, fidelity.feature_frechet_distance(want_logits[:2], want_logits[2:]))
  assert got == pytest.approx(expected, rel=1e-4) and expected > 0


def test_cache_keys_and_invalidation(tmp_path):
  cache = frechet.FeatureCache(str(tmp_path))
  calls = []

  def compute(value):
    return lambda: calls.append(value) or np.full((3, 2), value, np.float32)

  net = inception_fid.InceptionFID()
  base = {"metric": "fid", "weights_sha256": "a" * 64, "dataset": "hdtf:test",
          "preprocessing": frechet.preprocessing(net, quantize=True)}
  assert cache.get_or_compute(base, compute(1.0))[0, 0] == 1.0
  assert cache.get_or_compute(dict(base), compute(2.0))[0, 0] == 1.0   # Hit.
  changed = [dict(base, weights_sha256="b" * 64), dict(base, dataset="hdtf:val"),
             dict(base, preprocessing=frechet.preprocessing(net, quantize=False)),
             dict(base, metric="fvd",
                  preprocessing=frechet.preprocessing(i3d.InceptionI3D(), quantize=True))]
  for i, key in enumerate(changed):
    assert cache.get_or_compute(key, compute(10.0 + i))[0, 0] == 10.0 + i  # Misses.
  assert (cache.hits, cache.misses) == (1, 5) and calls == [1.0, 10.0, 11.0, 12.0, 13.0]
  assert len(list(tmp_path.glob("features_*.npz"))) == 5
  # A damaged file, or one holding another key under this name, is recomputed.
  with open(cache.path(base), "wb") as f:
    f.write(b"not an npz")
  assert cache.get_or_compute(base, compute(3.0))[0, 0] == 3.0
  np.savez(cache.path(base), features=np.zeros((1, 1)), key=np.array("{}"))
  assert cache.get_or_compute(base, compute(4.0))[0, 0] == 4.0
  assert frechet.FeatureCache(str(tmp_path)).get_or_compute(base, compute(5.0))[0, 0] == 4.0
  assert len(list(tmp_path.iterdir())) == 5  # No temporary files left.


def test_preprocessing_helpers():
  levels = np.arange(256, dtype=np.float32)
  frames = levels / 127.5 - 1.0
  np.testing.assert_array_equal(frechet.quantize_levels(frames), frames)  # Files unchanged.
  np.testing.assert_array_equal(frechet.quantize_levels(np.array([-2.0, 0.0, 0.999, 2.0])),
                                np.array([0, 128, 255, 255], np.float32) / 127.5 - 1.0)
  videos = np.arange(2 * 35).reshape(2, 35, 1, 1, 1)
  clips = frechet.split_clips(videos)
  assert clips.shape == (4, 16, 1, 1, 1)
  np.testing.assert_array_equal(clips[1, :, 0, 0, 0], np.arange(16, 32))
  np.testing.assert_array_equal(clips[2, :, 0, 0, 0], np.arange(35, 51))
  with pytest.raises(ValueError, match="T >= 9"):
    frechet.fvd_features(i3d.InceptionI3D(), {}, np.zeros((1, 8, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"frames must be \[N, H, W, 3\]"):
    frechet.fid_features(inception_fid.InceptionFID(), {}, np.zeros((1, 32, 32)))
  with pytest.raises(ValueError, match="both cache and real_key"):
    frechet.real_features("fid", inception_fid.InceptionFID(), {}, np.zeros((2, 8, 8, 3)),
                          batch_size=2, cache=frechet.FeatureCache("unused"))


@pytest.mark.parametrize("import_variables, torch_net, flax_net", [
    (inception_fid.import_variables, ref.FIDInception3, inception_fid.InceptionFID),
    (i3d.import_variables, ref.InceptionI3d, i3d.InceptionI3D),
], ids=["inception_fid", "i3d"])
def test_loader_names_every_problem(import_variables, torch_net, flax_net):
  state = {k: v.numpy() for k, v in torch_net().state_dict().items()}
  loader_checks.check_loader_names_every_problem(import_variables, state, flax_net())


def test_wrong_network_and_missing_file(i3d_pair, tmp_path):
  with pytest.raises(weights.WeightImportError, match="missing in the checkpoint"):
    inception_fid.load_inception_fid(i3d_pair[3])
  with pytest.raises(weights.WeightImportError, match="no such file"):
    i3d.load_i3d(str(tmp_path / "rgb_imagenet.pt"))
