"""Config validation: every problem is named (field, value, allowed values) before any work."""
import importlib
import os
import subprocess
import sys

import pytest
import setuptools

from gcm_jax import config_rules
from gcm_jax import config_validation
from gcm_jax import configs
from gcm_jax import launch
from gcm_jax.configs import tiny

from tests import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("field, value, message", [
    ("sampling.sampler", "dpm", "config.sampling.sampler = 'dpm': expected one of ('ddpm'"),
    ("sampling.num_steps", 0, "config.sampling.num_steps = 0: expected an integer >= 1"),
    ("log.every_steps", 0, "config.log.every_steps = 0: expected an integer >= 1"),
    ("train.num_steps", 0, "config.train.num_steps = 0: expected an integer >= 1"),
    ("train.num_steps", -5, "config.train.num_steps = -5: expected an integer >= 1"),
    ("checkpoint.keep", 0, "config.checkpoint.keep = 0: expected an integer >= 1"),
    ("diffusion.schedule", "cosin", "config.diffusion.schedule = 'cosin': expected one of"),
    ("diffusion.p_drop_text", 1.5, "config.diffusion.p_drop_text = 1.5: expected a number in "
     "[0.0, 1.0]"),
    ("train.ema_decay", 1.0, "config.train.ema_decay = 1.0: expected a number in [0.0, 1.0)"),
    ("model.remat_policy", "all", "config.model.remat_policy = 'all': expected one of"),
    ("data.mel_alignment", "end", "config.data.mel_alignment = 'end': expected one of "
     "('center', 'start')"),
])
def test_bad_field_is_named_before_anything_is_built(tmp_path, field, value, message):
  config = train_utils.micro_config()
  section, name = field.split(".")
  config[section][name] = value
  workdir = tmp_path / "run"
  with pytest.raises(config_rules.ConfigError) as error:
    launch.train(config, str(workdir))
  assert message in str(error.value)
  assert not workdir.exists()  # No data built, no config.json written, nothing compiled.


def test_unknown_mesh_axis_and_unknown_field():
  config = tiny.get_config()
  config.mesh.shape = dict(data=-1, model=2)
  config.train.ema_decy = 0.9
  found = config_validation.problems(config)
  assert any(p.startswith("config.mesh.shape = {'data': -1, 'model': 2}: expected a dict over "
                          "axes ('data', 'fsdp', 'tensor')") for p in found), found
  assert any(p.startswith("config.train.ema_decy is not a known field") for p in found), found


def test_every_problem_is_listed_at_once():
  config = tiny.get_config()
  config.sampling.sampler = "dpm"
  config.log.every_steps = 0
  config.checkpoint.keep = 0
  assert len(config_validation.problems(config)) == 3


def test_cross_field_constraints():
  config = tiny.get_config()
  config.model.num_heads = 3
  config.diffusion.max_motion_frames = 8
  config.diffusion.update(noise_distribution="lognormal", time_shift=3.0)
  found = config_validation.problems(config)
  assert any("config.model.width = 64 must be divisible by config.model.num_heads = 3" in p
             for p in found)
  assert any("max_motion_frames = 8 must be < config.data.num_frames = 8" in p for p in found)
  assert any("time_shift = 3.0 shifts the 'uniform' noise distribution; "
             "config.diffusion.noise_distribution is 'lognormal'" in p for p in found)
  config = importlib.import_module("gcm_jax.configs.video_folder").get_config()
  config.diffusion.eye_loss_weight = 5.0  # Real clips carry no eye keypoints.
  assert any("config.diffusion.eye_loss_weight = 5.0 weighs the 'eye_region' region, which "
             "config.data.name = 'video_folder' does not make" in p
             for p in config_validation.problems(config))


def test_shipped_configs_are_valid():
  for name in ("tiny", "talking_faces", "pod", "video_folder", "quick_start"):
    assert config_validation.problems(importlib.import_module(f"gcm_jax.configs.{name}").get_config()) == []


@pytest.mark.parametrize("config_flag, override, message", [
    (["--config=configs/tiny.py"], "--config.mesh.shape.model=2",
     "error: config.mesh.shape has no field 'model' (its fields: data, fsdp, tensor)"),
    ([], "--config.train.num_step=2",  # The default config: overridden at flag definition.
     "error: config.train has no field 'num_step' (its fields: b1, b2, ema_decay"),
])
def test_command_line_override_of_an_unknown_field_names_it(tmp_path, config_flag, override,
                                                            message):
  proc = subprocess.run(
      [sys.executable, "run_train.py", *config_flag, f"--workdir={tmp_path}/run", override],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family, config_name", [
    ("diffusion", "quick_start"), ("autoencoder", "cpu_latent_recipe:autoencoder"),
    ("syncnet", "syncnet")])
def test_gcm_train_runs_each_family_from_an_installed_config_name(tmp_path, family,
                                                                   config_name):
  """`gcm-train FAMILY --config=NAME` outside the checkout finds the config inside the
  package: an override of an unknown field is checked against that config's fields."""
  proc = subprocess.run(
      [sys.executable, "-c", "from gcm_jax import launch; launch.main()", family,
       f"--config={config_name}", f"--workdir={tmp_path}/run", "--config.train.num_stepz=2"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "error: config.train has no field 'num_stepz' (its fields: " in proc.stderr, \
      proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_gcm_train_names_its_families(monkeypatch):
  monkeypatch.setattr(sys, "argv", ["gcm-train", "vae"])
  with pytest.raises(SystemExit, match=r"usage: gcm-train \{diffusion\|autoencoder\|syncnet\}"):
    launch.main()


def test_config_names_resolve_to_the_configs_inside_the_package(tmp_path):
  assert config_rules.config_file("quick_start") == os.path.join(configs.FOLDER,
                                                                 "quick_start.py")
  assert config_rules.config_file("cpu_latent_recipe:autoencoder") == os.path.join(
      configs.FOLDER, "cpu_latent_recipe.py") + ":autoencoder"
  own = tmp_path / "quick_start.py"  # A path is taken as it is, even with a known name.
  own.write_text("")
  assert config_rules.config_file(str(own)) == str(own)
  assert config_rules.config_file("no_such_config") == "no_such_config"
  assert "gcm_jax.configs" in setuptools.find_packages(REPO, include=["gcm_jax", "gcm_jax.*"])
