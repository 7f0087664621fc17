"""Autoencoder training (gcm_jax/train/train_autoencoder.py): SSIM against scikit-image, config
checks, a short run on the synthetic talking faces (beats a held-out PSNR an untrained
autoencoder does not reach), resume, latent scale / shift, loading and identity."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from gcm_jax import config_rules
from gcm_jax import image_quality
from gcm_jax.configs import autoencoder as autoencoder_config
from gcm_jax.data import pipeline
from gcm_jax.models import autoencoder as ae
from gcm_jax.models import trained_autoencoder
from gcm_jax.runs import directory
from gcm_jax.runs import export
from gcm_jax.train import train_autoencoder as ta


# Held-out PSNR (dB) of the short run below: measured 8.5 untrained, 12.3 after the 40 steps
# (EMA off). The trained run must beat TRAINED_PSNR_MIN, the untrained one stay 1 dB below it.
TRAINED_PSNR_MIN = 10.5
# Scaled held-out latents: |mean| and |std - 1| within this (the statistics come from training
# frames; measured mean 0.015, std 1.035 on the held-out frames).
LATENT_TOLERANCE = 0.15
NUM_STEPS = 40
STOP_STEP = 20


def _config(data_dir: str) -> ml_collections.ConfigDict:
  """configs/autoencoder.py shrunk: a 2-level (2x) autoencoder on 32x32 clips, 40 steps."""
  config = autoencoder_config.get_config()
  config.num_devices = 1  # Compiles twice as fast as the tests' 8 CPU devices.
  config.model.update(block_out_channels=(8, 16), norm_num_groups=4)
  config.data.update(resolution=32, num_frames=4, num_train=32, num_validation=8, num_test=8,
                     batch_size=8, data_dir=data_dir)
  config.train.update(num_steps=NUM_STEPS, warmup_steps=5, frames_per_clip=1,
                      learning_rate=1e-2, ema_decay=0.0)
  config.latent_stats.num_batches = 4
  config.checkpoint.update(every_steps=10, keep=5)
  config.log.every_steps = 10
  return config


def _held_out(config: ml_collections.ConfigDict) -> list[dict]:
  mesh = ta.make_mesh(config.num_devices)
  data = pipeline.make_dataset(ml_collections.ConfigDict({"data": config.data.to_dict()}),
                               "validation", mesh, num_epochs=1, device_keys=("video", "mask"))
  return [{k: b[k] for k in ("video", "mask")} for b in data]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A straight run (`straight`) and one stopped at step 20 and rerun (`resumed`); the
  second compiles nothing (the step and evaluation are compiled once per process)."""
  root = tmp_path_factory.mktemp("ae_train")
  config = _config(str(root / "data"))
  straight, resumed = str(root / "straight"), str(root / "resumed")
  report = ta.train_and_evaluate(config, straight)
  assert ta.train_and_evaluate(config, resumed, stop_at_step=STOP_STEP) is None
  assert not os.path.exists(os.path.join(resumed, trained_autoencoder.AUTOENCODER_FILE))
  resumed_report = ta.train_and_evaluate(config, resumed)
  return {"config": config, "straight": straight, "resumed": resumed, "report": report,
          "resumed_report": resumed_report}


@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("size", [16, 33])
def test_ssim_matches_skimage(kind, size):
  rng = np.random.default_rng(size)
  if kind == "random":
    x = rng.uniform(-1, 1, (2, size, size, 3))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1)
  else:
    g = np.linspace(0, 1, size)
    x = np.sin(4 * g[:, None, None] + rng.uniform(0, 3, 3)) * np.cos(3 * g[None, :, None])
    x = np.broadcast_to(x, (2, size, size, 3)) * np.array([1.0, 0.7])[:, None, None, None]
    y = 0.8 * x + 0.1 * np.sin(9 * g)[None, :, None, None]
  x, y = x.astype(np.float32), y.astype(np.float32)
  ours = np.asarray(image_quality.ssim(jnp.asarray(x), jnp.asarray(y)))
  reference = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=2.0,
                                     channel_axis=-1) for a, b in zip(x, y)]
  assert ours.shape == (2,)
  np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_ssim_and_psnr_basics():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 2, 12, 12, 3)), jnp.float32)
  np.testing.assert_allclose(image_quality.ssim(x, x), np.ones((3, 2)), atol=1e-5)
  np.testing.assert_allclose(image_quality.psnr(x, x + 0.2), np.full((3, 2), 20.0), atol=1e-3)
  with pytest.raises(ValueError, match="at least 11x11"):
    image_quality.ssim(x[..., :10, :, :], x[..., :10, :, :])


def test_default_config_is_valid_and_problems_are_named():
  assert ta.problems(autoencoder_config.get_config()) == []
  config = autoencoder_config.get_config()
  config.loss.reconstruction = "l3"
  config.train.lr = 1.0
  config.model.block_out_channels = ()
  with pytest.raises(config_rules.ConfigError) as e:
    ta.validate(config)
  for text in ("config.loss.reconstruction = 'l3'", "config.train.lr is not a known field",
               "config.model.block_out_channels = ()"):
    assert text in str(e.value)
  config = autoencoder_config.get_config()
  config.data.resolution = 32
  config.train.frames_per_clip = 9
  config.model.norm_num_groups = 5
  found = ta.problems(config)
  assert len(found) == 1 and "norm_num_groups" in found[0]
  config.model.norm_num_groups = 8
  config.model.block_out_channels = (16, 32, 32, 32, 32, 32, 32)
  found = "\n".join(ta.problems(config))
  assert "multiple of the autoencoder's downsampling 64" in found
  assert "frames_per_clip = 9 must be <= config.data.num_frames = 8" in found
  config = autoencoder_config.get_config()
  config.data.resolution = 48
  assert "expected one of (32, 64, 128)" in "\n".join(ta.problems(config))


def test_short_run_beats_untrained_psnr(runs):
  config = runs["config"]
  report = runs["report"]
  assert report["validation_psnr"] > TRAINED_PSNR_MIN, report
  assert report["validation_frames"] == 8 * 4
  with open(os.path.join(runs["straight"], ta.REPORT_FILE)) as f:
    assert json.load(f)["report"]["validation_psnr"] == pytest.approx(report["validation_psnr"])
  ae_config = ta.autoencoder_config(config)
  untrained = trained_autoencoder.init_params(ae_config, jax.random.PRNGKey(config.seed))
  quality = ta.evaluate(ae_config, untrained, _held_out(config))
  assert quality["psnr"] < TRAINED_PSNR_MIN - 1.0, quality


def test_resume_reproduces_the_straight_run(runs):
  straight, resumed = (trained_autoencoder.load_trained_autoencoder(runs[k])[1] for k in ("straight", "resumed"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               straight, resumed)
  with open(os.path.join(runs["resumed"], "logs", "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [10, 20, 30, 40]  # Each logged step once.
  assert sorted(int(s) for s in os.listdir(os.path.join(runs["resumed"], directory.CHECKPOINT_DIR))
                ) == [10, 20, 30, 40]
  assert runs["resumed_report"]["validation_psnr"] == pytest.approx(
      runs["report"]["validation_psnr"], abs=1e-3)


def test_resume_refuses_a_different_config(runs):
  config = ml_collections.ConfigDict(runs["config"].to_dict())
  config.loss.kl_weight = 1e-3
  with pytest.raises(directory.ConfigMismatchError, match="config.loss.kl_weight: saved 1e-06"):
    ta.train_and_evaluate(config, runs["straight"])


def test_load_trained_autoencoder_scales_held_out_latents(runs):
  config, params = trained_autoencoder.load_trained_autoencoder(runs["straight"])
  report = runs["report"]
  assert config.scaling_factor == pytest.approx(report["scaling_factor"])
  assert config.shift_factor == pytest.approx(report["shift_factor"])
  assert config.block_out_channels == (8, 16) and config.norm_num_groups == 4
  with open(os.path.join(runs["straight"], trained_autoencoder.AUTOENCODER_FILE)) as f:
    saved = json.load(f)
  assert saved["step"] == NUM_STEPS and saved["params"] == "ema"
  model = ae.AutoencoderKL(config)
  encode = jax.jit(lambda p, v: model.apply({"params": p}, v, method="encode")[0])
  latents = np.concatenate([np.asarray(ae.scale_latents(encode(params, b["video"]), config))
                            for b in _held_out(runs["config"])])
  assert latents.shape == (8, 4, 16, 16, 4)
  assert abs(latents.mean()) < LATENT_TOLERANCE, latents.mean()
  assert abs(latents.std() - 1.0) < LATENT_TOLERANCE, latents.std()


def _copy_export(workdir: str, copy: str) -> str:
  """`copy` holding the autoencoder exported in `workdir` (its json and params folder)."""
  os.makedirs(copy)
  shutil.copy(os.path.join(workdir, trained_autoencoder.AUTOENCODER_FILE), copy)
  shutil.copytree(os.path.join(workdir, trained_autoencoder.PARAMS_FILE),
                  os.path.join(copy, trained_autoencoder.PARAMS_FILE))
  return copy


def test_identity_follows_the_params(runs, tmp_path):
  identity = trained_autoencoder.autoencoder_identity(runs["straight"])
  assert identity.startswith("own:") and identity == trained_autoencoder.autoencoder_identity(runs["straight"])
  copy = _copy_export(runs["straight"], str(tmp_path / "copy"))
  assert trained_autoencoder.autoencoder_identity(copy) == identity  # Content, not location.
  _, params = trained_autoencoder.load_trained_autoencoder(copy)
  params = jax.tree.map(np.asarray, params)
  params["decoder"]["conv_out"]["bias"] = params["decoder"]["conv_out"]["bias"] + 1e-3
  export.save_params(os.path.join(copy, trained_autoencoder.PARAMS_FILE), params)
  assert trained_autoencoder.autoencoder_identity(copy) != identity


def test_load_errors(runs, tmp_path):
  with pytest.raises(FileNotFoundError, match="no trained autoencoder"):
    trained_autoencoder.load_trained_autoencoder(str(tmp_path))
  copy = _copy_export(runs["straight"], str(tmp_path / "copy"))
  with open(os.path.join(copy, trained_autoencoder.AUTOENCODER_FILE)) as f:
    saved = json.load(f)
  saved["config"]["latent_channels"] = 8
  with open(os.path.join(copy, trained_autoencoder.AUTOENCODER_FILE), "w") as f:
    json.dump(saved, f)
  with pytest.raises(ValueError, match=r"\['quant_conv'\]\['kernel'\]: \(1, 1, 8, 8\), "
                                       r"expected \(1, 1, 16, 16\)"):
    trained_autoencoder.load_trained_autoencoder(copy)


def test_mouth_weight_weighs_the_mouth_reconstruction():
  """The reconstruction term with loss.mouth_weight = w is the float64 mean of |recon - x|
  with the mouth region's values weighted w (recon: the same posterior sample's decoding)."""
  config = _config("unused")
  model = ae.AutoencoderKL(ta.autoencoder_config(config))
  params = trained_autoencoder.init_params(model.config, jax.random.PRNGKey(0))
  frames = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 32, 32, 3), minval=-1, maxval=1)
  mouth = jax.random.bernoulli(jax.random.PRNGKey(2), 0.1, (2, 3, 32, 32))
  key = jax.random.PRNGKey(3)
  recon = np.asarray(model.apply({"params": params}, frames, key)[0], np.float64)
  error = np.abs(recon - np.asarray(frames, np.float64))
  loss_config = dict(config.loss.to_dict(), mouth_weight=7.0)
  _, out = ta.autoencoder_loss(params, model, frames, key, loss_config, mouth)
  weights = np.where(np.asarray(mouth), 7.0, 1.0)[..., None]
  np.testing.assert_allclose(out["reconstruction"], np.mean(weights * error), rtol=1e-5)
  _, plain = ta.autoencoder_loss(params, model, frames, key, config.loss.to_dict())
  np.testing.assert_allclose(plain["reconstruction"], error.mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="needs the batch's 'mouth_region'"):
    ta.autoencoder_loss(params, model, frames, key, loss_config)


def test_select_frames_picks_the_same_frames_of_every_array():
  video = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 4, 4, 3))
  region = video[..., 0] > 0
  key = jax.random.PRNGKey(5)
  picked, picked_region = ta.select_frames(video, 2, key), ta.select_frames(region, 2, key)
  np.testing.assert_array_equal(picked_region, picked[..., 0] > 0)
  for clip, frames in zip(np.asarray(video), np.asarray(picked)):
    index = [int(np.flatnonzero((clip == f).all(axis=(1, 2, 3)))[0]) for f in frames]
    assert len(set(index)) == 2


def test_a_mouth_weighted_run_reads_the_mouth_region(tmp_path):
  config = _config(str(tmp_path / "data"))
  config.loss.mouth_weight = 5.0
  config.train.num_steps = 2
  config.latent_stats.num_batches = 1
  report = ta.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(report["validation_psnr"])
  config.loss.mouth_weight = 0.0
  assert any("loss.mouth_weight" in p for p in ta.problems(config))
