"""Checkpoints: crashes keep the last good checkpoint, re-sharding restore, clear errors
(bit-exact resume: tests/test_resume.py)."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import state as state_lib
from gcm_jax.train import trainer


from tests import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kill_during_async_save_keeps_previous_checkpoint(tmp_path):
  directory = str(tmp_path / "ckpt")
  proc = subprocess.run([sys.executable, "-m", "tests.checkpoint_worker", directory], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == -9, proc.stderr[-2000:]
  assert "saving step 2" in proc.stdout
  checkpointer = checkpoint_lib.Checkpointer(directory, dict(every_steps=1, keep=3,
                                                             async_save=False))
  latest = checkpointer.latest_step()
  assert latest in (1, 2)  # 2 only if its save was committed before the kill.
  abstract = jax.eval_shape(lambda: state_lib.TrainState(
      step=jnp.int32(0), params={"w": jnp.zeros((4096, 4096))},
      ema_params={"w": jnp.zeros((4096, 4096))}, opt_state={"mu": {"w": jnp.zeros((4096, 4096))}}))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          abstract)
  state, data_state = checkpointer.restore(abstract, step=1)
  assert float(state.params["w"][0, 0]) == 1.0 and data_state == {"iterator": "one"}


def _save_initial_state(directory):
  """Initializes the micro model on an 8-way data mesh and checkpoints it as step 2."""
  config = train_utils.micro_config()
  config.mesh.shape = dict(data=8, fsdp=1, tensor=1)
  state, shardings = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  checkpointer = checkpoint_lib.Checkpointer(str(directory), config.checkpoint)
  assert checkpointer.maybe_save(2, state, {"iterator": "x"})
  checkpointer.wait()
  return config, state, shardings, checkpointer


def test_restore_onto_a_different_mesh(tmp_path):
  config, state, _, checkpointer = _save_initial_state(tmp_path)
  config.mesh.shape = dict(data=1, fsdp=4, tensor=2)
  target, target_shardings = diffusion_model.state_shardings(config, mesh_lib.make_mesh(config.mesh))
  restored, _ = checkpointer.restore(
      checkpoint_lib.abstract_with_shardings(target, target_shardings))
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  restored_specs = [x.sharding.spec for x in jax.tree.leaves(restored.params)]
  target_specs = [s.spec for s in jax.tree.leaves(target_shardings.params)]
  assert restored_specs == target_specs
  assert any("fsdp" in str(spec) for spec in restored_specs)


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
  _, state, shardings, checkpointer = _save_initial_state(tmp_path)
  for root, _, files in os.walk(tmp_path / "2" / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(checkpoint_lib.CheckpointError, match="step 2 .* unreadable"):
    checkpointer.restore(checkpoint_lib.abstract_with_shardings(state, shardings))


def test_restore_for_resume_skips_unreadable_newer_checkpoints(tmp_path, caplog):
  """None without checkpoints; else the newest readable one, newer unreadable ones moved aside."""
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"),
                                             dict(every_steps=1, keep=3, async_save=False))
  make = lambda v: state_lib.TrainState(step=jnp.int32(v), params={"w": jnp.full(3, float(v))},
                                        ema_params={"w": jnp.zeros(3)}, opt_state=())
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = checkpoint_lib.abstract_with_shardings(
      jax.eval_shape(lambda: make(0)), jax.tree.map(lambda _: sharding, make(0)))
  assert checkpoint_lib.restore_for_resume(checkpointer, abstract) is None
  for step in (1, 2):
    checkpointer.maybe_save(step, make(step), {"iterator": str(step)})
  checkpointer.wait()
  for root, _, files in os.walk(tmp_path / "ckpt" / "2" / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with caplog.at_level("WARNING"):
    state, data_state = checkpoint_lib.restore_for_resume(checkpointer, abstract)
  assert int(state.step) == 1 and data_state == {"iterator": "1"}
  np.testing.assert_array_equal(state.params["w"], [1.0, 1.0, 1.0])
  assert any("Using step 1" in m for m in caplog.messages)
  assert os.path.isdir(tmp_path / "ckpt_unreadable" / "2") and checkpointer.latest_step() == 1
  checkpointer.close()
