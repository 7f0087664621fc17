"""Shared check for the BatchNorm-network loaders (syncnet_python, Wav2Lip, Inception, I3D)."""
import numpy as np
import pytest

from gcm_jax import weights


def check_loader_names_every_problem(import_variables, state: dict, flax_module) -> None:
  """A state dict with a missing running_var, a mis-shaped conv and an extra key: one
  `WeightImportError` naming all three (and never the ignored num_batches_tracked)."""
  state = dict(state)
  bn_key = next(k for k in state if k.endswith("running_var"))
  conv_key = next(k for k in state if k.endswith(".weight") and state[k].ndim >= 4)
  del state[bn_key]
  state[conv_key] = state[conv_key][:1]
  state["extra.weight"] = np.zeros(2)
  with pytest.raises(weights.WeightImportError) as info:
    import_variables(state, flax_module, source="net.pth")
  message = str(info.value)
  for needle in ["net.pth does not fit the model", f"missing in the checkpoint (1):\n  {bn_key}",
                 f"{conv_key} -> params/", "unexpected in the checkpoint", "extra.weight"]:
    assert needle in message, (needle, message)
  assert "num_batches_tracked" not in message
