"""Identity conditioning: reference frames and the masked source (dubbing) in the model, the
data, guidance and a run end to end (docs/models.md, "Identity")."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from benchmarks import reference_ablation
from gcm_jax import config_validation
from gcm_jax import evaluate
from gcm_jax import generate
from gcm_jax import sampling
from gcm_jax.data import contract
from gcm_jax.data import datasets
from gcm_jax.data import pipeline
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import example
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.data.talking_faces import identity
from gcm_jax.data.talking_faces import renderer
from gcm_jax.diffusion import samplers
from gcm_jax.models import diffusion_model
from gcm_jax.models import stdit
from gcm_jax.train import step as step_lib
from gcm_jax.train import trainer
from tests import train_utils

B, T, R, K = 2, 4, 16, 2


@pytest.fixture(scope="module", params=stdit.REFERENCE_INPUTS)
def model_and_params(request):
  """A small STDiT with reference frames (as context frames, as input channels) and the
  masked source, its params perturbed so the zero-initialized output layers pass signal (at
  init every output is 0)."""
  model = stdit.STDiT(in_channels=3, patch_size=4, width=32, depth=2, num_heads=2,
                      text_max_len=8, reference_frames=K, masked_source=True,
                      reference_inputs=request.param)
  cond = _cond(np.random.default_rng(0))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((B, T, R, R, 3)), jnp.zeros((B,)),
                      cond)["params"]
  return model, _perturbed(params)


def _perturbed(params, scale: float = 0.05):
  """`params` plus seeded Gaussian noise: the zero-initialized output layers pass signal."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(tree, [
      leaf + scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def _cond(rng: np.random.Generator) -> dict:
  mask = np.zeros((B, T, R, R, 1), np.float32)
  mask[:, :, R // 2:] = 1.0
  return {
      "text_tokens": jnp.asarray(rng.integers(1, 200, (B, 8)), jnp.int32),
      "text_mask": jnp.ones((B, 8), bool),
      "mel": jnp.asarray(rng.normal(size=(B, T, 16, 80)), jnp.float32),
      "reference": jnp.asarray(rng.uniform(-1, 1, (B, K, R, R, 3)), jnp.float32),
      "drop_reference": jnp.zeros((B,), bool),
      "source": jnp.asarray(rng.uniform(-1, 1, (B, T, R, R, 3)), jnp.float32),
      "source_mask": jnp.asarray(mask),
  }


def _apply(model_and_params, cond, x=None):
  model, params = model_and_params
  x = jnp.ones((B, T, R, R, 3)) * 0.1 if x is None else x
  return np.asarray(model.apply({"params": params}, x, jnp.full((B,), 0.5), cond))


def test_model_reads_the_reference_unless_dropped(model_and_params):
  cond = _cond(np.random.default_rng(1))
  out = _apply(model_and_params, cond)
  assert out.shape == (B, T, R, R, 3)
  model, params = model_and_params
  as_frames = model.reference_inputs == "frames"  # A marker, or R C more input channels.
  assert ("reference_embedding" in params) == as_frames
  kernel = params["patch_embed"]["kernel"]
  kernel = getattr(kernel, "value", kernel)
  assert kernel.shape[0] == 4 * 4 * (3 + 3 + 1 + 3 + 1 + (0 if as_frames else K * 3))
  other = dict(cond, reference=-cond["reference"])
  assert np.abs(_apply(model_and_params, other) - out).max() > 1e-3
  dropped = dict(cond, drop_reference=jnp.ones((B,), bool))
  # A dropped reference is the null reference, whatever frames are passed.
  np.testing.assert_array_equal(_apply(model_and_params, dropped),
                                _apply(model_and_params, dict(other, drop_reference=dropped[
                                    "drop_reference"])))
  # Dropping only example 0's reference changes only example 0.
  half = _apply(model_and_params, dict(cond, drop_reference=jnp.array([True, False])))
  assert np.abs(half[0] - out[0]).max() > 1e-3
  np.testing.assert_allclose(half[1], out[1], atol=1e-6)


def test_model_never_sees_the_source_inside_the_mask(model_and_params):
  """The masked area of the source (the mouth to generate) cannot reach the output: changing
  it changes nothing, while changing the visible part does."""
  cond = _cond(np.random.default_rng(2))
  out = _apply(model_and_params, cond)
  inside = cond["source_mask"] > 0
  noise = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, cond["source"].shape), jnp.float32)
  np.testing.assert_array_equal(
      _apply(model_and_params, dict(cond, source=jnp.where(inside, noise, cond["source"]))), out)
  changed = _apply(model_and_params, dict(cond, source=jnp.where(inside, cond["source"], noise)))
  assert np.abs(changed - out).max() > 1e-3


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "ddpm"])
def test_keep_source_samples_the_source_outside_the_mask(model_and_params, sampler):
  """`model.keep_source`: the sampled video is the source wherever the dubbing mask is 0 (to
  float rounding, deterministic and stochastic samplers), the network's drawing inside it;
  without it the network redraws everything."""
  model, params = model_and_params
  config = train_utils.micro_config()
  config.model.update(reference_frames=K, masked_source=True)
  config.diffusion.keep_source = True
  config.sampling.update(sampler=sampler, num_steps=4)
  cond = {**_cond(np.random.default_rng(5)), **sampling.keep_all(config, B)}
  apply_fn = lambda p, x, t, c: model.apply({"params": p}, x, t, c)
  x_T = jax.random.normal(jax.random.PRNGKey(2), (B, T, R, R, 3))
  run = lambda cfg: np.asarray(samplers.sample(sampling.denoiser(apply_fn, params, cfg),
                                               jax.random.PRNGKey(3), x_T, cond,
                                               sampling.sampler_config(cfg)))
  kept = run(config)
  outside = np.broadcast_to(np.asarray(cond["source_mask"]) == 0, kept.shape)
  source = np.asarray(cond["source"])
  np.testing.assert_allclose(kept[outside], source[outside], atol=1e-5)
  assert np.abs(kept[~outside] - source[~outside]).mean() > 0.1
  config.diffusion.keep_source = False
  assert np.abs(run(config)[outside] - source[outside]).mean() > 0.1


def test_model_input_errors_name_the_key(model_and_params):
  cond = _cond(np.random.default_rng(4))
  with pytest.raises(ValueError, match=r"cond\['reference'\] must be \[2, 2, 16, 16, 3\]"):
    _apply(model_and_params, dict(cond, reference=cond["reference"][:, :1]))
  without = {k: v for k, v in cond.items() if k != "source_mask"}
  with pytest.raises(ValueError, match=r"cond\['source_mask'\] must be .* got none"):
    _apply(model_and_params, without)


def test_reference_guidance_with_every_scale_zero_is_the_unconditional_output():
  """Nested CFG over (reference, audio, text) with all scales 0 is the model with all three
  dropped; with all scales 1 it is the fully conditional model (guidance.nested_guidance)."""
  config = train_utils.micro_config()
  config.model.update(reference_frames=1, width=16)
  config.sampling.update(reference_scale=0.0, audio_scale=0.0, text_scale=0.0)
  model = diffusion_model.make_model(config)
  inputs = diffusion_model.example_inputs(config, 2)
  rng = np.random.default_rng(5)
  cond = {k: jnp.asarray(rng.uniform(-1, 1, v.shape), v.dtype) if v.dtype == jnp.float32
          else v for k, v in inputs["cond"].items()}
  params = model.init(jax.random.PRNGKey(0), inputs["x"], inputs["t"], cond)["params"]
  params = _perturbed(params)
  apply_fn = diffusion_model.model_apply_fn(model)
  x = jnp.asarray(rng.normal(size=inputs["x"].shape), jnp.float32)
  t = jnp.full((2,), 0.6)
  guided = sampling.guided_denoiser(apply_fn, params, config)(x, t, cond)
  none = {**cond, **{k: jnp.ones((2,), bool)
                     for k in ("drop_reference", "drop_audio", "drop_text")}}
  plain = sampling.denoiser(apply_fn, params, config)
  np.testing.assert_allclose(guided, plain(x, t, none), atol=1e-5)
  config.sampling.update(reference_scale=1.5, audio_scale=1.0, text_scale=1.0)
  full = sampling.denoiser(apply_fn, params, config)(x, t, cond)
  guided = sampling.guided_denoiser(apply_fn, params, config)(x, t, cond)
  assert np.abs(np.asarray(guided - full)).max() > 1e-4  # The reference scale is applied.


@pytest.fixture(scope="module")
def record():
  ex = example.generate_example("the quick brown fox jumps", captions.Attributes(
      "red", "blue", "left"), resolution=32, num_frames=12, seed=4)
  return ex.features()


def test_reference_frames_are_the_person_at_other_times(record):
  """Same person (colors, head size), never one of the clip's frames (LatentSync draws the
  reference from another segment, so the model cannot copy the mouth)."""
  frames = identity.reference_frames(record, 3, 32)
  assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(identity.reference_frames(record, 3, 32), frames)  # Resumable.
  video = record["video"].astype(np.int32)
  for frame in frames.astype(np.int32):
    closest = np.abs(video - frame).mean(axis=(1, 2, 3)).min()
    assert closest > 1.0, closest  # Mean level difference to the nearest clip frame.
  # The person: colors by the talking faces' own read-out (inside the head drawn at the
  # clip's first position: the references' heads overlap it), head size as the clip's.
  _, clip_scale = renderer.head_geometry(record["keypoints"])
  face = (frames.astype(np.float32) / 127.5 - 1.0)[None]
  keypoints = np.repeat(record["keypoints"][:1], 3, axis=0)[None]
  got_face, got_bg = ground_truth.read_colors(face, keypoints)
  assert (got_face == record["face_color"]).all() and (got_bg == record["background_color"]).all()
  assert np.ptp(clip_scale) < 1e-5


def test_source_mask_covers_every_mouth_and_no_eye(record):
  mask = identity.source_mask(record, 32)
  assert mask.shape == (12, 32, 32)
  kp = np.clip((record["keypoints"] * 32).astype(int), 0, 31)  # [T, 8, (x, y)] pixels
  names = renderer.KEYPOINT_NAMES
  for t in range(12):
    for name in ("mouth_left", "mouth_right", "mouth_top", "mouth_bottom"):
      x, y = kp[t, names.index(name)]
      assert mask[t, y, x], (t, name)
    for name in ("left_eye", "right_eye", "nose"):
      x, y = kp[t, names.index(name)]
      assert not mask[t, y, x], (t, name)
  # Its shape does not follow the mouth: the same area in every frame up to one row or column
  # of pixel rounding as the head moves (the head does not scale).
  rows, cols = mask[0].any(axis=1).sum(), mask[0].any(axis=0).sum()
  assert np.ptp(mask.sum(axis=(1, 2))) <= max(rows, cols)


def test_lower_half_is_the_default_mask_of_face_crops():
  mask = contract.lower_half({"video": np.zeros((3, 8, 8, 3))}, 8)
  assert mask[:, 4:].all() and not mask[:, :4].any()


def test_config_checks_name_what_identity_needs(monkeypatch):
  config = train_utils.micro_config()
  config.model.update(reference_frames=2, masked_source=True)
  assert config_validation.problems(config) == []
  config.data.update(name="video_folder", resolution=32)
  assert config_validation.problems(config) == []  # Built clips store reference frames.
  monkeypatch.setitem(datasets.DATASETS, "video_folder", dataclasses.replace(
      datasets.DATASETS["video_folder"], reference=None))
  assert any("config.model.reference_frames = 2 needs reference frames, which "
             "config.data.name = 'video_folder' does not give" in p
             for p in config_validation.problems(config))
  config.data.name = "talking_faces"
  config.model.masked_source = False
  config.diffusion.keep_source = True
  assert any("config.diffusion.keep_source keeps the source outside the dubbing mask: it needs "
             "config.model.masked_source" in p for p in config_validation.problems(config))
  config.model.update(masked_source=True, frame_conditioning=False)
  config.diffusion.keep_source = False
  assert any("needs config.model.frame_conditioning" in p
             for p in config_validation.problems(config))


def test_step_batch_keys_and_masked_loss_weight():
  config = train_utils.micro_config()
  config.model.update(reference_frames=1, masked_source=True)
  config.diffusion.masked_loss_weight = 3.0
  assert {"reference", "source_mask"} <= set(step_lib.batch_keys(config))
  mask = np.zeros((1, 2, 4, 4), bool)
  mask[:, :, 2:] = True
  weights = np.asarray(step_lib.loss_weights({"source_mask": jnp.asarray(mask)},
                                             jnp.zeros((1, 2), bool),
                                             step_lib.region_weights(config.diffusion)))
  np.testing.assert_array_equal(weights, np.where(mask, 3.0, 1.0))


def test_a_dubbing_run_trains_and_evaluates(tmp_path):
  """Reference frames + masked source on the talking faces, end to end: the pipeline gives
  'reference' and 'source_mask', two train steps, then evaluation generates the test clips
  re-voiced (each clip's own frames masked) and reads them with the ground truth; the
  trainer's end-of-run sample re-voices a training clip."""
  config = train_utils.micro_config()
  config.log.num_samples = 1
  config.model.update(reference_frames=1, masked_source=True)
  config.diffusion.update(masked_loss_weight=3.0, p_drop_reference=0.5)
  config.train.num_steps = 2
  config.sampling.update(num_steps=3, reference_scale=1.5)
  clips = pipeline.load_clips(config.data, "test", 2, 6, 0, ("video", "reference", "source_mask"),
                              96, reference_frames=1)
  assert clips["reference"].shape == (2, 1, 32, 32, 3) and clips["source_mask"].dtype == bool
  workdir = str(tmp_path / "dub")
  trainer.train(config, workdir)
  assert os.listdir(os.path.join(workdir, "samples")) == ["step_0000002_0.mp4"]
  report = evaluate.evaluate(workdir, num_clips=4, clip_frames=8, noise_levels=(0.5,))
  assert report["color_accuracy"]["ground_truth"]["face"] == 1.0
  assert np.isfinite(report["fidelity"]["generated"]["hf_ratio"])
  # The reference ablation's table reads the same run's frames vs own / another's reference.
  rows = reference_ablation.ablation_rows([workdir], num_clips=4, clip_frames=4)
  assert [r["run"] for r in rows] == ["ground truth (the real clip)",
                                      "1 reference frames as frames (dub)"]
  assert rows[0]["psnr"] > rows[0]["floor_psnr"]  # The real clip is its own person.
  assert "| run | PSNR vs own reference |" in reference_ablation.markdown(rows)


def test_animate_a_photo_with_the_python_api(tmp_path, record):
  """A run of a given person generates from one photo: a square crop given as it is
  (`reference_is_crop`) fills the K reference frames; the errors name what is wrong."""
  config = train_utils.micro_config()
  config.model.update(reference_frames=2)
  config.sampling.update(num_steps=2)
  inputs = diffusion_model.example_inputs(config, 1)
  model = diffusion_model.make_model(config)
  params = _perturbed(model.init(jax.random.PRNGKey(0), inputs["x"], inputs["t"],
                                 inputs["cond"])["params"])
  trained = diffusion_model.TrainedModel(config, diffusion_model.model_apply_fn(model), params)
  path = str(tmp_path / "face.png")
  Image.fromarray(record["video"][3]).save(path)
  reference = generate.load_reference(path, config, is_crop=True)
  np.testing.assert_array_equal(reference, record["video"][3:4])
  cond = generate.reference_cond(config, reference)["reference"]
  assert cond.shape == (1, 2, 32, 32, 3)
  np.testing.assert_array_equal(cond[0, 0], cond[0, 1])
  audio = record["audio"][:8 * 640]
  video, _ = generate.generate(trained, "a red face says: hi", audio, 16000,
                               jax.random.PRNGKey(0), progress=False, reference=reference)
  other, _ = generate.generate(trained, "a red face says: hi", audio, 16000,
                               jax.random.PRNGKey(0), progress=False,
                               reference=255 - reference)
  assert video.shape == (8, 32, 32, 3) and np.abs(video - other).max() > 1e-3
  with pytest.raises(ValueError, match="draws a given person .* pass --reference"):
    generate.reference_cond(config, None)
  with pytest.raises(ValueError, match=r"must be uint8 \[N, 32, 32, 3\]"):
    generate.reference_cond(config, np.zeros((1, 16, 16, 3), np.uint8))
  plain = train_utils.micro_config()
  with pytest.raises(ValueError, match="takes no reference frames"):
    generate.reference_cond(plain, reference)
  Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(tmp_path / "wall.png")
  with pytest.raises(ValueError, match=r"--reference .*wall.png: no face found"):
    generate.load_reference(str(tmp_path / "wall.png"), config)
  with pytest.raises(ValueError, match="needs a square image, got 300x200"):
    generate.load_reference(str(tmp_path / "wall.png"), config, is_crop=True)
