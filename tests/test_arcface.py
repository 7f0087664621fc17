"""ArcFace's IResNet in Flax (`gcm_jax.models.pretrained.arcface`): parity with arcface_torch's
network, the loader (layout read from the state dict, refusals naming the key), CSIM.

Reference (test-only): `tests/arcface_references.py`, a torch transcription of upstream's
`backbones/iresnet.py`, on random weights with random BatchNorm running statistics, in eval
mode, saved as arcface_torch saves `backbone.pth` (a bare state dict).

Tolerance: 1e-4 of the largest reference magnitude. Both sides are float32; the embedding
goes through 10-18 convs with 576-4608-term sums, residual sums and a 25088-term fc, and the
two libraries sum in different orders, so the expected difference is ~1e-6 relative (measured
below 1e-5); 1e-4 leaves room for other CPUs' summation orders, while a wrong layout, order,
eps, or flatten gives differences of order 1.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import torch.nn.functional as F

from gcm_jax import weights
from gcm_jax.models.pretrained import arcface
from tests import arcface_references as ref
from tests import loader_checks

TOL = 1e-4  # Relative to the largest reference magnitude (see the module docstring).


def assert_close(got, want, tol=TOL):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
  assert err <= tol, f"max |diff| / max |ref| = {err:.3g} > {tol}"
  return err


def faces(n, seed):
  """[n, 112, 112, 3] in [-1, 1], smooth enough to look like images at every scale."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (n, 14, 14, 3)).astype(np.float32)
  fine = rng.uniform(-0.3, 0.3, (n, 112, 112, 3)).astype(np.float32)
  up = np.asarray(jax.image.resize(coarse, (n, 112, 112, 3), "linear"))
  return np.clip(up + fine, -1, 1)


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_net(layers, seed, **kwargs):
  torch.manual_seed(seed)
  net = ref.iresnet(layers, **kwargs)
  return ref.randomize(net, nchw(faces(4, seed + 100)), seed=seed)


def save(net, path):
  torch.save(net.state_dict(), str(path))  # arcface_torch's backbone.pth / model.pt.
  return str(path)


def state_numpy(net):
  return {k: v.numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("layers, widths", [
    ((2, 1, 3, 1), (16, 24, 32, 40)),      # Small and narrow: widths come from the tensors.
    ((2, 2, 2, 2), ref.UPSTREAM_WIDTHS),   # iresnet18.
], ids=["narrow_2131", "iresnet18"])
def test_embeddings_match_arcface_torch(tmp_path, layers, widths):
  net = torch_net(layers, seed=sum(layers) + widths[0], widths=widths, num_features=512)
  module, variables = arcface.load_arcface(save(net, tmp_path / "backbone.pth"))
  assert module.layers == layers and module.widths == widths
  assert module.stem_width == widths[0] and module.embed_dim == 512
  x = faces(2, seed=1)
  with torch.no_grad():
    want = net(nchw(x))
  got = jax.jit(module.apply)(variables, x)
  assert got.shape == (2, 512)
  # The map is non-trivial: the embeddings of the two faces differ.
  assert (want[0] - want[1]).abs().max() > 0.1 * want.abs().max()
  err = assert_close(got, want.numpy())
  err_unit = assert_close(arcface.embed(module, variables, x), F.normalize(want).numpy())
  print(f"{layers} {widths}: max rel diff {err:.2e} (raw), {err_unit:.2e} (unit)")


def test_loader_reads_layout_from_keys_and_formats(tmp_path):
  """(2, 1, 3, 1) blocks and a 128-d embedding are read off the state dict; `.pth` and
  `.safetensors` give the same variables."""
  net = ref.iresnet((2, 1, 3, 1), num_features=128).eval()
  pth = save(net, tmp_path / "model.pt")
  st = str(tmp_path / "backbone.safetensors")
  safetensors.numpy.save_file(state_numpy(net), st)
  module, variables = arcface.load_arcface(pth)
  assert module == arcface.IResNet(layers=(2, 1, 3, 1), widths=(64, 128, 256, 512),
                                   stem_width=64, embed_dim=128)
  assert module.arch == "iresnet(2, 1, 3, 1)"
  assert arcface.IResNet(layers=(3, 13, 30, 3)).arch == "iresnet100"
  assert set(variables["params"]) >= {"layer3_2", "layer1_1", "fc", "features"}
  assert "layer2_1" not in variables["params"] and "layer3_3" not in variables["params"]
  assert "downsample_0" in variables["params"]["layer4_0"]
  module_st, variables_st = arcface.load_arcface(st)
  assert module_st == module
  jax.tree.map(np.testing.assert_array_equal, variables, variables_st)
  # The fc kernel is torch's weight with its columns reordered (c, h, w) -> (h, w, c).
  w = net.fc.weight.detach().numpy().reshape(128, 512, 7, 7)
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"][(2 * 7 + 3) * 512 + 5],
                                w[:, 5, 2, 3])


def _refusal(state, *needles):
  with pytest.raises(weights.WeightImportError) as info:
    arcface.module_for(state, source="net.pth")
  message = str(info.value)
  for needle in ("net.pth is not an arcface_torch IResNet state dict",) + needles:
    assert needle in message, (needle, message)


def test_refusals_name_the_key():
  state = state_numpy(ref.iresnet((2, 1, 3, 1), widths=(8, 8, 8, 8), num_features=16))
  assert arcface.stage_blocks(state) == (2, 1, 3, 1)
  drop = lambda prefix: {k: v for k, v in state.items() if not k.startswith(prefix)}
  _refusal(drop("conv1."), "no `conv1.weight`")
  _refusal(drop("layer2."), "no `layer2.<i>.` keys")
  _refusal(drop("layer3.1."), "no `layer3.1.` keys although `layer3.2.` exists")
  _refusal(drop("layer4.0.conv1."), "no `layer4.0.conv1.weight`")
  _refusal({**state, "layer5.0.bn1.weight": np.ones(8)}, "stage `layer5.`")
  _refusal({**state, "fc.weight": state["fc.weight"][:, :8 * 16]},
           "`fc.weight` has 128 in_features, expected the last width 8 x 7 x 7 = 392",
           "112 px")
  _refusal({**state, "fc.weight": state["fc.weight"][0]}, "`fc.weight` has shape (392,)")
  _refusal({}, "no `conv1.weight`")


def test_loader_names_every_problem(tmp_path):
  net = ref.iresnet((1, 2, 1, 1), widths=(8, 8, 16, 16), num_features=16)
  state = state_numpy(net)
  loader_checks.check_loader_names_every_problem(arcface.import_variables, state,
                                                 arcface.module_for(state))
  # A block without its downsample: the missing tensors are named.
  path = str(tmp_path / "backbone.safetensors")
  safetensors.numpy.save_file({k: v for k, v in state.items()
                               if not k.startswith("layer3.0.downsample.")}, path)
  with pytest.raises(weights.WeightImportError) as info:
    arcface.load_arcface(path)
  for needle in ("missing in the checkpoint (5)", "layer3.0.downsample.0.weight",
                 "layer3.0.downsample.1.running_var"):
    assert needle in str(info.value)
  # A features layer of another width than fc's output: mis-shaped, named.
  state["features.bias"] = np.zeros(8, np.float32)
  with pytest.raises(weights.WeightImportError, match=r"features\.bias -> params/features"):
    arcface.import_variables(state, arcface.module_for(state))


def test_csim_and_inputs():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 512)).astype(np.float32)
  b = rng.normal(size=(5, 512)).astype(np.float32)
  np.testing.assert_allclose(arcface.csim(a, a), np.ones(5), atol=1e-6)
  np.testing.assert_allclose(arcface.csim(3 * a, a), np.ones(5), atol=1e-6)
  np.testing.assert_array_equal(arcface.csim(a, b), arcface.csim(b, a))
  np.testing.assert_allclose(arcface.csim(a, -a), -np.ones(5), atol=1e-6)
  want = F.cosine_similarity(torch.from_numpy(a), torch.from_numpy(b)).numpy()
  np.testing.assert_allclose(arcface.csim(a, b), want, atol=1e-6)
  with pytest.raises(ValueError, match=r"\[B, D\] of one shape"):
    arcface.csim(a, b[:4])
  with pytest.raises(ValueError, match=r"faces must be \[B, 112, 112, 3\]"):
    arcface.IResNet(layers=(1, 1, 1, 1)).init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))


def test_prepare_faces_is_inference_cv2_resize():
  """Square crops of any size -> 112 x 112 as arcface_torch's `cv2.resize` (INTER_LINEAR):
  torch's bilinear `align_corners=False` to rounding; cv2 itself differs from both by up to
  ~5e-5 (its float path rounds the interpolation further, in float64 as well)."""
  cv2 = pytest.importorskip("cv2")
  rng = np.random.default_rng(3)
  for size in (256, 160, 112, 64):
    frames = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    got = arcface.prepare_faces(frames)
    assert got.shape == (2, 112, 112, 3) and got.dtype == jnp.float32
    want = F.interpolate(nchw(frames), size=(112, 112), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(got, np.stack([cv2.resize(f, (112, 112)) for f in frames]),
                               atol=1e-4)
  with pytest.raises(ValueError, match="square face crops"):
    arcface.prepare_faces(np.zeros((1, 128, 96, 3), np.float32))
