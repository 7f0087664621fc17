"""Every config loads, its model builds (abstractly), and its mesh rules name real axes."""
import importlib

import jax
import pytest

from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib


@pytest.mark.parametrize("name", ["tiny", "quick_start", "talking_faces", "pod", "cpu_recipe",
                                  "video_folder"])
def test_config_builds_model(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  model = diffusion_model.make_model(config)
  inputs = diffusion_model.example_inputs(config, batch_size=1)
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


def test_latent_recipe_parts_are_consistent():
  """configs/cpu_latent_recipe.py: the autoencoder part passes the autoencoder trainer's
  checks; the diffusion part passes the run checks once its two paths (the autoencoder
  workdir, the SyncNet) are swapped for a random autoencoder of the same grid and no expert."""
  from gcm_jax.configs import cpu_latent_recipe  # pylint: disable=g-import-not-at-top
  from gcm_jax import config_validation  # pylint: disable=g-import-not-at-top
  from gcm_jax.train import train_autoencoder  # pylint: disable=g-import-not-at-top
  autoencoder = cpu_latent_recipe.get_config("autoencoder")
  assert train_autoencoder.problems(autoencoder) == []
  diffusion = cpu_latent_recipe.get_config()
  assert diffusion.latent.path == cpu_latent_recipe.AUTOENCODER_WORKDIR
  assert diffusion.data.data_dir.startswith(cpu_latent_recipe.AUTOENCODER_WORKDIR)
  assert diffusion.data.resolution == autoencoder.data.resolution == 64
  diffusion.latent.update(source="random", config="tiny", path="")
  diffusion.lipsync.weight = 0.0
  diffusion.data.resolution = 32  # The tiny 8x random autoencoder: a 4x4 grid (patch 2 fits).
  assert config_validation.problems(diffusion) == []
  with pytest.raises(ValueError, match="unknown part"):
    cpu_latent_recipe.get_config("decoder")


def test_quick_start_needs_no_other_run():
  """The README's first command passes the run checks on a fresh clone: no SyncNet, no
  autoencoder, the embedded synthetic dataset built on first use."""
  from gcm_jax.configs import quick_start  # pylint: disable=g-import-not-at-top
  from gcm_jax import config_validation  # pylint: disable=g-import-not-at-top
  config = quick_start.get_config()
  assert config_validation.problems(config) == []
  assert config.data.name == "talking_faces" and config.data.build_if_missing
  assert config.lipsync.weight == 0 and config.latent.source == "none"
