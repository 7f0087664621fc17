"""Latent diffusion runs (`config.latent`): checks, cached latents, the step, sampling, generate.

The autoencoder is the tiny config at seeded random weights (`config.latent.source =
"random"`): enough to check that every path encodes, trains on and decodes latents.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import config_validation
from gcm_jax import frozen_encoders
from gcm_jax import generate
from gcm_jax import latents
from gcm_jax.data import feature_cache
from gcm_jax.models import autoencoder as ae
from gcm_jax.models import diffusion_model
from gcm_jax.models import trained_autoencoder
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import state as state_lib
from gcm_jax.train import step as step_lib
from gcm_jax.train import trainer


from tests import train_utils
from tests.test_train_step import _random_syncnet


def _config():
  config = train_utils.micro_config()
  config.latent.update(source="random", config="tiny", seed=0)
  config.model.update(in_channels=4, patch_size=2)  # 32 px -> a 4x4 latent grid
  return config


def test_latent_config_checks():
  config_validation.validate(_config())
  config = _config()
  config.model.in_channels = 3
  config.model.patch_size = 8
  found = "\n".join(config_validation.problems(config))
  assert "config.model.in_channels = 3 must equal the autoencoder's latent channels 4" in found
  assert "the latent grid 4 (config.data.resolution / 8) must be divisible by " \
         "config.model.patch_size = 8" in found
  config = _config()
  config.latent.update(source="diffusers", path="")
  assert config_validation.problems(config) == [
      "config.latent.source = 'diffusers' needs config.latent.path"]
  config.latent.path = "/nonexistent/vae"
  assert config_validation.problems(config) == [
      "config.latent.path = '/nonexistent/vae' does not exist"]


def test_cached_latents_equal_fresh_encodes(tmp_path):
  config = _config()
  encoders = frozen_encoders.FrozenEncoders(config)
  rng = np.random.default_rng(0)
  records = [{"video": rng.integers(0, 256, (4, 32, 32, 3), np.uint8)} for _ in range(3)]
  cached = feature_cache.load_or_compute(records, "train", encoders, str(tmp_path), 4)
  assert cached["latents"].shape == (3, 4, 4, 4, 4)
  autoencoder = latents.load(config)
  video = jnp.asarray(np.stack([r["video"] for r in records]), jnp.float32) / 127.5 - 1.0
  mean, _ = autoencoder.module.apply({"params": autoencoder.params}, video,
                                     method=ae.AutoencoderKL.encode)
  np.testing.assert_allclose(cached["latents"], 0.18215 * np.asarray(mean),
                             atol=1e-5 * max(1.0, float(np.abs(0.18215 * np.asarray(mean)).max())))
  other = _config()
  other.latent.seed = 1  # Another autoencoder: its own cache folder and values.
  again = feature_cache.load_or_compute(records, "train", frozen_encoders.FrozenEncoders(other),
                                        str(tmp_path), 4)
  assert np.abs(np.asarray(again["latents"]) - cached["latents"]).max() > 1e-3
  assert len(os.listdir(tmp_path)) == 2


def test_mouth_region_pools_to_the_latent_grid():
  region = np.zeros((1, 1, 32, 32), bool)
  region[0, 0, 20, 9] = True  # One pixel -> latent cell (2, 1) of a 4x4 grid.
  weights = step_lib.loss_weights({"mouth_region": jnp.asarray(region)},
                                  jnp.zeros((1, 1), bool), {"mouth_region": 5.0},
                                  size=4)
  expected = np.ones((1, 1, 4, 4))
  expected[0, 0, 2, 1] = 5.0
  np.testing.assert_array_equal(weights, expected)


def test_lipsync_loss_decodes_the_latent_estimate():
  """The SyncNet sees decoded pixels: the loss depends on the autoencoder's params (an
  input of the compiled step) and is finite."""
  config = _config()
  config.data.num_frames = 6
  config.lipsync.update(weight=0.5)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  state, shardings = trainer.init_state(config, mesh)
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  batch["latents"] = jax.random.normal(jax.random.PRNGKey(3), (8, 6, 4, 4, 4))
  net, variables = _random_syncnet(config.data.resolution)
  autoencoder = latents.load(config)
  jitted = trainer.jit_train_step(config, mesh, shardings, lipsync_net=net,
                                  autoencoder=autoencoder.module)
  other = jax.tree.map(lambda v: 1.5 * v, autoencoder.params)
  with jax.set_mesh(mesh):
    _, metrics = jitted(jax.tree.map(jnp.copy, state), batch,
                        {"lipsync": variables, "autoencoder": autoencoder.params})
    _, other_metrics = jitted(state, batch, {"lipsync": variables, "autoencoder": other})
  assert np.isfinite(float(metrics["lipsync_loss"])) and float(metrics["lipsync_loss"]) > 0
  assert float(other_metrics["lipsync_loss"]) != float(metrics["lipsync_loss"])
  assert jitted._cache_size() == 1  # pylint: disable=protected-access


def test_sync_window_gives_the_expert_the_same_pairs_as_the_full_clip():
  """The 5-frame window a latent run decodes: the SyncNet input cut from it (start 0) is the
  one cut from the full clip at the window's start, for both mel alignments."""
  from gcm_jax.models import syncnet as syncnet_lib  # pylint: disable=g-import-not-at-top
  b, t = 64, 9
  video = jnp.broadcast_to(jnp.arange(b * t, dtype=jnp.float32).reshape(b, t, 1, 1, 1),
                           (b, t, 4, 2, 3))
  mel = jax.random.normal(jax.random.PRNGKey(0), (b, t, 16, 80))
  window, window_mel = step_lib.sync_window(jax.random.PRNGKey(1), video, mel)
  assert window.shape == (b, 5, 4, 2, 3) and window_mel.shape == (b, 5, 16, 80)
  starts = np.asarray(window[:, 0, 0, 0, 0]).astype(int) - t * np.arange(b)
  assert starts.min() >= 0 and starts.max() <= t - 5
  assert len(np.unique(starts)) == t - 4  # Every start drawn among 64 clips.
  for offset in (0, 2):  # mel_alignment 'start' / 'center'.
    full = syncnet_lib.sync_windows(video, mel, jnp.asarray(starts), offset)
    cut = syncnet_lib.sync_windows(window, window_mel, jnp.zeros(b, int), offset)
    for a, c in zip(full, cut):
      np.testing.assert_array_equal(a, c)


def test_latent_run_trains_samples_and_generates(tmp_path):
  config = _config()
  config.train.num_steps = 2
  config.sampling.num_steps = 2
  config.log.num_samples = 1
  workdir = str(tmp_path / "run")
  state = trainer.train(config, workdir)
  assert int(state.step) == 2
  assert state.params["patch_embed"]["kernel"].shape[0] == 2 * 2 * (4 + 4 + 1)
  samples = os.listdir(os.path.join(workdir, "samples"))
  assert samples, "no sample video written"
  cache = [root for root, dirs, _ in os.walk(os.path.join(workdir, "data"))
           if any(d.startswith("latents-") for d in dirs)]
  assert cache, "no latent cache in the dataset folder"

  trained = diffusion_model.load_trained(workdir)
  voice = np.sin(np.linspace(0, 300, 16000)).astype(np.float32)
  video, _ = generate.generate(trained, "a green face on a purple background, moving left, "
                               "says: hi", voice, 16000, jax.random.PRNGKey(0), progress=False)
  assert video.shape == (25, 32, 32, 3)
  assert video.min() >= -1.0 and video.max() <= 1.0 and video.std() > 0.0


def test_a_trained_autoencoder_workdir_brings_its_scale_and_shift(tmp_path):
  """source 'workdir': the autoencoder saved by train_autoencoder (written here by hand in
  its format: autoencoder.json + the params as Orbax, or as the msgpack file earlier versions
  wrote) encodes with its own scale and shift; both formats of the same params are the same
  autoencoder (one identity, so one latent cache)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from gcm_jax.runs import export  # pylint: disable=g-import-not-at-top
  base = latents.load(_config())
  trained = dataclasses.replace(base.config, scaling_factor=0.5, shift_factor=0.25)
  orbax_run, msgpack_run = tmp_path / "orbax", tmp_path / "msgpack"
  export.save_params(str(orbax_run / trained_autoencoder.PARAMS_FILE), base.params)
  msgpack_run.mkdir()
  (msgpack_run / "autoencoder.msgpack").write_bytes(serialization.msgpack_serialize(
      serialization.to_state_dict(jax.device_get(base.params))))
  identities = []
  for run, params_file in ((orbax_run, trained_autoencoder.PARAMS_FILE),
                           (msgpack_run, "autoencoder.msgpack")):
    (run / trained_autoencoder.AUTOENCODER_FILE).write_text(json.dumps(
        {"config": dataclasses.asdict(trained), "params_file": params_file}))
    config = _config()
    config.latent.update(source="workdir", path=str(run))
    config_validation.validate(config)
    own = latents.load(config)
    video = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 32, 32, 3), minval=-1, maxval=1)
    mean, _ = base.module.apply({"params": base.params}, video, method=ae.AutoencoderKL.encode)
    np.testing.assert_allclose(own.encode(video), (mean - 0.25) * 0.5, atol=1e-5)
    assert own.identity.startswith("own:") and own.identity != base.identity
    identities.append(own.identity)
  assert identities[0] == identities[1]


def test_decoded_pixel_loss_compares_the_decoded_estimate_with_the_frames():
  """latent.pixel_loss_weight: a model whose x0 estimate is a fixed latent z gets
  weight x the MSE of decode(z) against the clip's frames (float64 numpy; static clips, so
  any 5-frame window gives the same value); padding clips and clips past clips_per_step
  do not count; without the weight the term is 0."""
  config = _config()
  config.data.num_frames = 6
  config.diffusion.parameterization = "x0"
  config.latent.pixel_loss_weight = 2.5
  config.lipsync.clips_per_step = 3
  config_validation.validate(config)
  autoencoder = latents.load(config)
  z = jax.random.normal(jax.random.PRNGKey(5), (1, 1, 4, 4, 4))
  decoded = np.clip(np.asarray(autoencoder.decode(z), np.float64), -1, 1)[0, 0]  # [32, 32, 3]
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  frames = np.random.default_rng(0).uniform(-1, 1, (8, 1, 32, 32, 3)).astype(np.float32)
  batch["video"] = jnp.asarray(np.repeat(frames, 6, axis=1))
  batch["latents"] = jax.random.normal(jax.random.PRNGKey(3), (8, 6, 4, 4, 4))
  batch["mask"] = jnp.asarray([True, False] + [True] * 6)
  optimizer = diffusion_model.make_optimizer(config)
  state = state_lib.create_state({"z": z}, optimizer)
  apply_fn = lambda params, x, t, cond: jnp.broadcast_to(params["z"], x.shape)
  step = lambda c: jax.jit(lambda s, b: step_lib.train_step(
      s, b, {"autoencoder": autoencoder.params}, apply_fn=apply_fn, optimizer=optimizer,
      config=c, autoencoder=autoencoder.module))(state, batch)
  _, metrics = step(config)
  errors = [np.mean((decoded - frames[i, 0]) ** 2) for i in (0, 2)]  # clips 0-2, 1 padding
  np.testing.assert_allclose(float(metrics["pixel_loss"]), 2.5 * np.mean(errors), rtol=1e-4)
  config.latent.pixel_loss_weight = 0.0
  _, metrics = step(config)
  assert float(metrics["pixel_loss"]) == 0.0


def test_decoded_pixel_loss_needs_a_latent_run():
  config = train_utils.micro_config()
  config.data.num_frames = 6
  config.latent.pixel_loss_weight = 1.0
  assert config_validation.problems(config) == [
      "config.latent.pixel_loss_weight = 1.0 needs a latent run (config.latent.source = "
      "'none' diffuses pixels)"]
  config = _config()
  config.latent.pixel_loss_weight = 1.0
  config.data.num_frames = 4
  assert any("need clips of >= 5 frames" in p for p in config_validation.problems(config))
