"""ControlNet runs end to end: run_train's control mode, resume, sampling, generate, evaluate."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gcm_jax import config_validation
from gcm_jax import evaluate
from gcm_jax import generate
from gcm_jax import sampling
from gcm_jax.models import diffusion_model
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import directory
from gcm_jax.train import trainer


from tests import train_utils
from tests.test_stdit import _randomize


@pytest.fixture(scope="module")
def base_workdir(tmp_path_factory):
  """A plain run's workdir: config.json and a step-3 checkpoint whose params and EMA params
  are random (so the zero-initialized output layer does not hide the branch), and differ."""
  path = str(tmp_path_factory.mktemp("base"))
  config = train_utils.micro_config()
  state, _ = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  state = state.replace(params=_randomize(state.params, key=7),
                        ema_params=_randomize(state.params, key=8))
  return train_utils.write_workdir(path, config, state)


@pytest.fixture(scope="module")
def base_ema(base_workdir):
  """The base checkpoint's EMA params (numpy)."""
  trained = diffusion_model.load_trained(base_workdir)
  return jax.tree.map(np.asarray, trained.params)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def _control_config(base_workdir, data_dir=""):
  config = train_utils.micro_config()
  config.control.update(enabled=True, base_workdir=base_workdir)
  config.data.data_dir = data_dir
  config.train.num_steps = 2
  # No warm-up: the branch's zero layers start one per step, the output projections on the
  # first (the maps' embedding gets no gradient through them while they are zero), the
  # maps' embedding on the second.
  config.train.warmup_steps = 0
  config.sampling.num_steps = 2
  return config


@pytest.fixture(scope="module")
def control_run(tmp_path_factory, base_workdir, data_dir):
  """(workdir, final state) of a 2-step ControlNet run that writes one sample video."""
  workdir = str(tmp_path_factory.mktemp("control"))
  config = _control_config(base_workdir, data_dir)
  config.log.num_samples = 1
  return workdir, trainer.train(config, workdir)


def _sample(apply_fn, params, config, maps):
  batch = train_utils.synthetic_batch(config)
  cond = {k: jnp.asarray(batch[k][:2]) for k in ("text_tokens", "text_mask", "mel")}
  cond["control_maps"] = jnp.asarray(maps)
  return np.asarray(jax.jit(lambda p, c: sampling.sample_videos(
      apply_fn, p, c, jax.random.PRNGKey(0), config))(params, cond))


def _maps(config, seed=0):
  t, r = config.data.num_frames, config.data.resolution
  return np.random.default_rng(seed).uniform(0, 1, (2, t, r, r, 9)).astype(np.float32)


def test_control_run_trains_the_branch_on_the_frozen_base_ema(control_run, base_workdir,
                                                              base_ema):
  workdir, state = control_run
  assert int(state.step) == 2 and set(state.params) == {"base", "control"}
  jax.tree.map(np.testing.assert_array_equal, state.params["base"], base_ema)
  jax.tree.map(np.testing.assert_array_equal, state.ema_params["base"], base_ema)
  config = _control_config(base_workdir)
  initial, _ = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  for zero_layer in ("zero_proj_0", "control_embed"):
    np.testing.assert_array_equal(initial.params["control"][zero_layer]["kernel"], 0.0)
    assert float(jnp.abs(state.params["control"][zero_layer]["kernel"]).max()) > 0
  moved = optax.global_norm(jax.tree.map(lambda a, b: a - b, state.params["control"],
                                         initial.params["control"]))
  assert float(moved) > 1e-4
  assert os.listdir(os.path.join(workdir, "samples")) == ["step_0000002_0.mp4"]
  with open(os.path.join(workdir, directory.CONFIG_FILE), encoding="utf-8") as f:
    assert json.load(f)["control"]["enabled"]


def test_control_run_resumes_bit_exactly(tmp_path, control_run, base_workdir, data_dir):
  _, straight = control_run
  workdir = str(tmp_path / "resumed")
  trainer.train(_control_config(base_workdir, data_dir), workdir, stop_at_step=1)
  resumed = trainer.train(_control_config(base_workdir, data_dir), workdir)
  assert int(resumed.step) == 2
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)


def test_controlled_sample_is_the_base_sample_at_init_and_differs_after_training(
    control_run, base_workdir, base_ema):
  config = _control_config(base_workdir)
  initial, _ = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  apply_fn = diffusion_model.make_apply_fn(config)
  maps = _maps(config)
  base_sample = _sample(diffusion_model.model_apply_fn(diffusion_model.make_model(config)), base_ema, config,
                        maps)
  # Equal up to float rounding: XLA fuses the base's ops differently next to the branch.
  np.testing.assert_allclose(_sample(apply_fn, initial.ema_params, config, maps), base_sample,
                             atol=1e-5)
  _, trained = control_run
  trained_sample = _sample(apply_fn, trained.ema_params, config, maps)
  other_maps = _sample(apply_fn, trained.ema_params, config, _maps(config, seed=1))
  assert np.abs(trained_sample - base_sample).max() > 1e-3  # 0.08 on CPU.
  # The maps steer it: after one step of their embedding ~2e-4 on CPU, 20x the rounding.
  assert np.abs(other_maps - trained_sample).max() > 2e-5


def test_generate_and_evaluate_use_the_control_maps(control_run):
  workdir, state = control_run
  trained = diffusion_model.load_trained(workdir)
  jax.tree.map(np.testing.assert_array_equal, trained.params, jax.tree.map(np.asarray,
                                                                           state.ema_params))
  rate, r = 16000, trained.config.data.resolution
  voice = 0.3 * np.sin(np.arange(int(0.45 * rate)) / 5.0)  # 12 frames: three 4-frame windows
  maps = _maps(trained.config)[0]
  long_maps = np.concatenate([maps] * 4)  # 16 frames >= 12
  video, _ = generate.generate(trained, "a red face, says: hi", voice, rate,
                               jax.random.PRNGKey(0), progress=False, control_maps=long_maps)
  assert video.shape == (12, r, r, 3) and np.isfinite(video).all()
  with pytest.raises(ValueError, match="ControlNet run: give control maps"):
    generate.generate(trained, "hi", voice, rate, jax.random.PRNGKey(0), progress=False)
  with pytest.raises(ValueError, match="cover 4 frames but the audio needs 12"):
    generate.generate(trained, "hi", voice, rate, jax.random.PRNGKey(0), progress=False,
                      control_maps=maps)
  keys = evaluate.eval_keys(trained.config)
  assert "control_maps" in keys
  clips = train_utils.talking_faces_clips("test", 2, 6, r, "center",
                                          trained.config.model.text_max_len, seed=0, keys=keys)
  assert evaluate.cond_keys(trained.config)[-1] == "control_maps"
  videos = evaluate.generate_for_clips(trained, clips, jax.random.PRNGKey(0))
  assert videos.shape == (2, 6, r, r, 3)
  other = dict(clips, control_maps=clips["control_maps"][::-1])
  assert not np.array_equal(evaluate.generate_for_clips(trained, other, jax.random.PRNGKey(0)),
                            videos)


def _problems(config):
  return "\n".join(config_validation.problems(config))


def test_control_config_checks(tmp_path, base_workdir, control_run):
  assert not _problems(_control_config(base_workdir))
  config = _control_config("")
  assert "needs config.control.base_workdir" in _problems(config)
  assert "from scratch is not supported" in _problems(config)
  assert "is not a run_train.py workdir" in _problems(_control_config(str(tmp_path)))
  config = _control_config(base_workdir)
  config.model.width = 64
  assert ("config.model.width = 64 but the base run in" in _problems(config)
          and "has 32" in _problems(config))
  config = _control_config(base_workdir)
  config.control.num_blocks = 2
  assert "config.control.num_blocks = 2 must be <= config.model.depth = 1" in _problems(config)
  config = _control_config(control_run[0])
  assert "is a ControlNet run; its base must be a plain run" in _problems(config)
  config = _control_config(base_workdir)
  config.control.channels = 4
  assert ("config.control.channels = 4: config.data.name = 'talking_faces' makes control maps"
          " of 9 channels") in _problems(config)
