"""Ports of config-less checkpoints read their numbers from the tensors' shapes.

syncnet_python's `syncnet_v2.model` is a bare state dict of `S(num_layers_in_fc_layers)`:
the embedding width is the rows of the heads' last Linear, not a constant. Reference: the
torch `S` of `tests/syncnet_references.py` on random weights.
"""
import numpy as np
import pytest
import torch

from gcm_jax import weights
from gcm_jax.models.pretrained import syncnet_python as snp
from tests import syncnet_references as ref


@pytest.fixture(scope="module")
def narrow_syncnet(tmp_path_factory):
  """(torch `S(256)`, the path of its state dict saved as syncnet_python does)."""
  net = ref.randomize(ref.S(embedding_dim=256), seed=3)
  mfcc = torch.from_numpy(np.random.default_rng(3).normal(0, 10, (4, 1, 13, 20)))
  ref.calibrate(net, [lambda: net.forward_aud(mfcc.float())])
  path = str(tmp_path_factory.mktemp("w") / "syncnet_256.model")
  torch.save(net.state_dict(), path)
  return net, path


def test_syncnet_python_embedding_width_is_read_from_the_checkpoint(narrow_syncnet):
  """A 256-d `S` loads as a 256-d port and embeds audio as torch does (tolerance 1e-4 of the
  largest reference magnitude, as the 1024-d parity test: float32 convolutions on CPU)."""
  net, path = narrow_syncnet
  module, variables = snp.load_syncnet_python(path)
  assert module.embed_dim == 256
  mfcc = np.random.default_rng(4).normal(0, 10, (3, 13, 20)).astype(np.float32)
  with torch.no_grad():
    want = net.forward_aud(torch.from_numpy(mfcc)[:, None]).numpy()
  got = np.asarray(module.apply(variables, mfcc, method="embed_audio"), np.float64)
  assert got.shape == (3, 256) and np.abs(want).max() > 0.1
  assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_syncnet_python_heads_of_different_widths_are_refused(narrow_syncnet):
  """The width comes from the audio head; a lip head of another width is named, not loaded."""
  _, path = narrow_syncnet
  state = weights.load_state_dict(path)
  state["netfclip.3.weight"] = np.zeros((1024, 512), np.float32)
  state["netfclip.3.bias"] = np.zeros((1024,), np.float32)
  module = snp.SyncNetPython(embed_dim=snp.checkpoint_embed_dim(state))
  with pytest.raises(weights.WeightImportError) as info:
    snp.import_variables(state, module, source="syncnet_256.model")
  message = str(info.value)
  assert "netfclip.3.weight -> params/netfclip/fc3/kernel: checkpoint (1024, 512)" in message
  assert "model expects (512, 256)" in message
