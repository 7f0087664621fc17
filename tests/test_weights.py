"""The weight-import module: checkpoint readers, layout transforms, and its error messages.

References: torch itself (test-only extra) writes the checkpoints and runs the original
layers; the Flax layers loaded through `import_params` must give the same outputs.
"""
import json
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch

from gcm_jax import weights


def _tensors():
  g = torch.Generator().manual_seed(0)
  return {
      "f32": torch.randn(3, 4, generator=g),
      "f16": torch.randn(5, generator=g).half(),
      "bf16": torch.randn(2, 3, generator=g).bfloat16(),
      "i64": torch.arange(7, dtype=torch.int64).reshape(7, 1),
      "u8": torch.arange(4, dtype=torch.uint8),
  }


def test_read_safetensors_equals_torch_for_every_dtype(tmp_path):
  tensors = _tensors()
  path = str(tmp_path / "w.safetensors")
  safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
  got = weights.load_state_dict(path)
  assert sorted(got) == sorted(tensors)
  for name, ref in tensors.items():
    assert got[name].shape == tuple(ref.shape), name
    np.testing.assert_array_equal(got[name].astype(np.float64), ref.double().numpy(), err_msg=name)


def test_sharded_folder_and_torch_pickle_wrappers(tmp_path):
  tensors = _tensors()
  names = sorted(tensors)
  folder = tmp_path / "sharded"
  folder.mkdir()
  shards = {"a.safetensors": names[:2], "b.safetensors": names[2:]}
  for shard, keys in shards.items():
    safetensors.torch.save_file({k: tensors[k] for k in keys}, str(folder / shard))
  weight_map = {k: shard for shard, keys in shards.items() for k in keys}
  (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  assert sorted(weights.load_state_dict(str(folder))) == names

  pickle = str(tmp_path / "whisper.pt")  # openai-whisper's layout
  torch.save({"dims": {"n_mels": 80}, "model_state_dict": tensors}, pickle)
  got = weights.load_state_dict(pickle)
  assert sorted(got) == names
  np.testing.assert_array_equal(got["bf16"], tensors["bf16"].float().numpy())


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:5], "shorter than its 8-byte header"),
    (lambda raw: raw[:40], "truncated safetensors file"),
    (lambda raw: raw[:-3], "lies outside the file"),
])
def test_damaged_safetensors_named(tmp_path, damage, message):
  path = tmp_path / "w.safetensors"
  safetensors.torch.save_file({"x": torch.ones(4, 4)}, str(path))
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(weights.WeightImportError, match=message):
    weights.load_state_dict(str(path))


def test_unknown_format_and_missing_file(tmp_path):
  (tmp_path / "w.npz").write_bytes(b"")
  with pytest.raises(weights.WeightImportError, match="unknown weight format"):
    weights.load_state_dict(str(tmp_path / "w.npz"))
  with pytest.raises(weights.WeightImportError, match="no such file"):
    weights.load_state_dict(str(tmp_path / "absent.safetensors"))
  with pytest.raises(weights.WeightImportError, match="no model.safetensors"):
    weights.load_state_dict(str(tmp_path))


class TorchNet(torch.nn.Module):
  """Every layer kind the name-map helpers cover."""

  def __init__(self):
    super().__init__()
    self.embed = torch.nn.Embedding(10, 6)
    self.conv1 = torch.nn.Conv1d(6, 8, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(8, 4, (3, 2), padding=(1, 0))
    self.gn = torch.nn.GroupNorm(2, 4)
    self.proj = torch.nn.Linear(4, 5)
    self.ln = torch.nn.LayerNorm(5)
    self.register_buffer("position_ids", torch.arange(3))

  def forward(self, ids):  # ids [B, L] -> [B, L, 5]
    x = self.embed(ids).transpose(1, 2)          # [B, 6, L]
    x = self.conv1(x).unsqueeze(-1).repeat(1, 1, 1, 2)  # [B, 8, L, 2]
    x = self.gn(self.conv2(x))                   # [B, 4, L, 1]
    return self.ln(self.proj(x[..., 0].transpose(1, 2)))


class FlaxNet(nn.Module):

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, 6, name="embed")(ids)                                   # [B, L, 6]
    x = nn.Conv(8, (3,), padding=1, name="conv1")(x)[:, :, None].repeat(2, 2)  # [B, L, 2, 8]
    x = nn.Conv(4, (3, 2), padding=((1, 1), (0, 0)), name="conv2")(x)
    x = nn.GroupNorm(num_groups=2, epsilon=1e-5, name="gn")(x)
    x = nn.Dense(5, name="proj")(x[:, :, 0])
    return nn.LayerNorm(epsilon=1e-5, name="ln")(x)


NAME_MAP = (weights.embedding("embed", "embed") + weights.convolution("conv1", "conv1")
            + weights.convolution("conv2", "conv2") + weights.norm("gn", "gn")
            + weights.dense("proj", "proj") + weights.norm("ln", "ln"))


def _torch_net():
  torch.manual_seed(0)
  net = TorchNet().eval()
  with torch.no_grad():  # Non-trivial norm affines, so a swapped scale/bias would show.
    for p in net.parameters():
      p.add_(0.3 * torch.randn_like(p))
  return net


def test_imported_layers_match_torch():
  net = _torch_net()
  ids = np.array([[1, 4, 9, 0, 3], [2, 2, 7, 5, 8]])
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  expected = weights.expected_params(FlaxNet(), jnp.asarray(ids))
  params = weights.import_params(state, NAME_MAP, expected, ignore=["position_ids"])
  got = FlaxNet().apply({"params": params}, jnp.asarray(ids))
  with torch.no_grad():
    ref = net(torch.from_numpy(ids)).numpy()
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)


def test_every_problem_named_at_once():
  state = {k: v.numpy() for k, v in _torch_net().state_dict().items()}
  del state["conv1.bias"]                       # missing
  state["proj.weight"] = np.zeros((5, 3))       # mis-shaped
  state["extra.weight"] = np.zeros(2)           # unexpected
  expected = weights.expected_params(FlaxNet(), jnp.zeros((1, 5), jnp.int32))
  name_map = [m for m in NAME_MAP if m.flax != "ln/bias"] + [
      weights.Mapping("nothere/kernel", "ln.bias")]
  with pytest.raises(weights.WeightImportError) as info:
    weights.import_params(state, name_map, expected, ignore=["position_ids"], source="net.pt")
  message = str(info.value)
  assert message.startswith("net.pt does not fit the model")
  for needle in ["missing in the checkpoint (1):\n  conv1.bias (for conv1/bias)",
                 "unexpected in the checkpoint (not used by the model) (2):\n  extra.weight\n"
                 "  ln.bias",
                 "proj.weight -> proj/kernel: checkpoint (5, 3) gives (3, 5), model expects "
                 "(4, 5)",
                 "model params the name map does not cover (1):\n  ln/bias",
                 "nothere/kernel (mapped from ln.bias; the model has no such param)"]:
    assert needle in message, (needle, message)
  assert "position_ids" not in message


def test_pickle_without_torch_names_the_fix(tmp_path, monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  path = tmp_path / "w.pt"
  torch.save({"x": torch.ones(1)}, str(path))
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch":
      raise ImportError("no torch")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_torch)
  with pytest.raises(weights.WeightImportError, match="needs torch .* convert it once"):
    weights.load_state_dict(os.fspath(path))
