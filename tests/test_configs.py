"""Every config loads, its model builds (abstractly), and its mesh rules name real axes."""
import importlib

import jax
import pytest

from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import trainer


@pytest.mark.parametrize("name", ["tiny", "talking_faces", "pod", "cpu_recipe", "video_folder"])
def test_config_builds_model(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  model = trainer.make_model(config)
  inputs = trainer.example_inputs(config, batch_size=1)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs["x"], inputs["t"],
                             inputs["cond"])
  assert jax.tree.leaves(variables)
  assert config.data.mel_window == config.model.mel_window
  assert config.data.text_max_len == config.model.text_max_len
  assert config.data.batch_size > 0 and config.train.num_steps > 0
  for _, mesh_axes in config.mesh.logical_axis_rules:
    names = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
    assert all(n is None or n in mesh_lib.MESH_AXES for n in names)


def test_field_references_keep_data_and_model_in_sync():
  config = importlib.import_module("configs.tiny").get_config()
  config.model.mel_window = 20
  assert config.data.mel_window == 20
