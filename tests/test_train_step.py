"""Train step and state: sharding invariance, FSDP memory, non-finite skipping, mesh errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gcm_jax import config_validation
from gcm_jax.data import datasets
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import visemes
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import state as state_lib
from gcm_jax.train import step as step_lib
from gcm_jax.train import trainer


from tests import train_utils


def _run_steps(config, mesh_shape, num_steps=2, devices=None):
  config.mesh.shape = mesh_shape
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  state, shardings = trainer.init_state(config, mesh)
  step = trainer.compile_train_step(config, mesh, shardings)
  losses = []
  for i in range(num_steps):
    batch = jax.device_put(train_utils.synthetic_batch(config, seed=i),
                           mesh_lib.batch_sharding(mesh))
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses


def test_one_device_and_eight_devices_agree():
  """Same loss and params (atol 2e-5) on 1 device and on data x fsdp x tensor = 2 x 2 x 2."""
  assert len(jax.devices()) == 8
  config = train_utils.micro_config()
  ref_state, ref_losses = _run_steps(config, dict(data=1, fsdp=1, tensor=1),
                                     devices=jax.devices()[:1])
  state, losses = _run_steps(train_utils.micro_config(), dict(data=2, fsdp=2, tensor=2))
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5),
               state.params, ref_state.params)
  assert ref_losses[0] > 0 and np.isfinite(ref_losses).all()


def test_fsdp_shards_parameters():
  """With fsdp=8 each device holds about 1/8 of the parameter bytes (at most 20%)."""
  config = train_utils.micro_config()
  config.mesh.shape = dict(data=1, fsdp=8, tensor=1)
  state, _ = trainer.init_state(config, mesh_lib.make_mesh(config.mesh))
  leaves = jax.tree.leaves(state.params)
  total = sum(x.nbytes for x in leaves)
  device0 = jax.devices()[0]
  on_device0 = sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                   if s.device == device0)
  assert on_device0 <= 0.2 * total, (on_device0, total)
  opt_leaves = jax.tree.leaves(state.opt_state)
  opt_total = sum(x.nbytes for x in opt_leaves)
  opt_device0 = sum(s.data.nbytes for x in opt_leaves for s in x.addressable_shards
                    if s.device == device0)
  assert opt_device0 <= 0.2 * opt_total


def test_non_finite_gradients_skip_update_and_are_counted():
  config = train_utils.micro_config()
  config.train.warmup_steps = 0
  params = {"w": jnp.ones((3, 3)), "b": jnp.zeros((3,))}
  optimizer = state_lib.make_optimizer(config.train)
  state = state_lib.create_state(params, optimizer)
  bad = {"w": jnp.full((3, 3), jnp.nan), "b": jnp.ones((3,))}
  new = state_lib.apply_gradients(state, bad, optimizer, ema_decay=0.9)
  jax.tree.map(np.testing.assert_array_equal, new.params, params)
  jax.tree.map(np.testing.assert_array_equal, new.ema_params, params)
  assert int(state_lib.skipped_steps(new)) == 1 and int(new.step) == 1
  good = {"w": jnp.ones((3, 3)), "b": jnp.ones((3,))}
  newer = state_lib.apply_gradients(new, good, optimizer, ema_decay=0.9, ema_warmup=False)
  assert int(state_lib.skipped_steps(newer)) == 1
  assert np.abs(np.asarray(newer.params["w"]) - 1.0).max() > 0
  # EMA moved 10% of the way towards the new params.
  np.testing.assert_allclose(newer.ema_params["w"], 0.9 + 0.1 * newer.params["w"], rtol=1e-6)


def _ema_after(num_steps, ema_decay, ema_warmup):
  """EMA of a parameter that jumps from 0 to 1 at the first update and stays there."""
  optimizer = optax.apply_if_finite(optax.sgd(1.0), max_consecutive_errors=10)
  state = state_lib.create_state({"w": jnp.zeros(())}, optimizer)
  update = jax.jit(lambda s, g: state_lib.apply_gradients(s, g, optimizer, ema_decay,
                                                          ema_warmup))
  grad = {"w": jnp.full((), -1.0)}
  state = update(state, grad)
  zero = {"w": jnp.zeros(())}
  for _ in range(num_steps - 1):
    state = update(state, zero)
  return float(state.ema_params["w"])


def test_ema_warmup_forgets_the_initial_weights():
  """After 200 updates the EMA holds < 1e-6 of the initial weights with warm-up (float64
  product of the decays (1 + s) / (10 + s), s = 0..199), but 0.999^200 = 82% without it."""
  reference = 1.0 - np.prod([(1.0 + s) / (10.0 + s) for s in range(200)], dtype=np.float64)
  assert reference > 1 - 1e-6
  np.testing.assert_allclose(_ema_after(200, 0.999, True), reference, atol=1e-6)
  np.testing.assert_allclose(_ema_after(200, 0.999, False), 1.0 - 0.999**200, rtol=1e-4)


@pytest.mark.parametrize("shape, message", [
    (dict(data=3), "needs 3 devices but 8 are available"),
    (dict(data=-1, fsdp=3), "do not divide the 8 available devices"),
    (dict(data=-1, fsdp=-1), "at most one mesh axis may be -1"),
    (dict(data=2, pipeline=4), "unknown mesh axes"),
    (dict(data=0, fsdp=-1), "must be positive"),
])
def test_bad_mesh_shapes_raise_clear_errors(shape, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.make_mesh(dict(shape=shape))


def test_mesh_fills_remaining_axis():
  mesh = mesh_lib.make_mesh(dict(shape=dict(data=-1, fsdp=2, tensor=2)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def _mouth_disc(keypoints, r, margin_pixels=2.0):
  """Float64 reference `[B, T, R, R]`: pixel centers within half the mouth width + margin of
  the mouth center (keypoints `[B, T, K, 2]`)."""
  keypoints = np.asarray(keypoints, np.float64)
  left, right = keypoints[:, :, 3], keypoints[:, :, 4]  # mouth_left, mouth_right (x, y)
  cx, cy = [0.5 * (left[..., i] + right[..., i])[:, :, None, None] for i in (0, 1)]
  radius = (0.5 * (right[..., 0] - left[..., 0]) + margin_pixels / r)[:, :, None, None]
  centers = (np.arange(r) + 0.5) / r
  return (centers[None, :] - cx)**2 + (centers[:, None] - cy)**2 <= radius**2


def test_loss_weights_from_the_mouth_region_feature():
  from gcm_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from gcm_jax.data.talking_faces import captions  # pylint: disable=g-import-not-at-top
  from gcm_jax.data.talking_faces import generate_example  # pylint: disable=g-import-not-at-top
  from gcm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  t, r = 3, 32
  frame_mask = jnp.array([[True, False, False], [False, False, False]])
  synthetic = np.tile(np.array([0.3, 0.4, 0.5, 0.5, 0.5, 0.7, 0.4, 0.75, 0.6, 0.75,
                                0.5, 0.72, 0.5, 0.78, 0.5, 0.9]).reshape(1, 8, 2), (t, 1, 1))
  rendered = generate_example("papa bought a map", captions.Attributes("green", "purple", "left"),
                              resolution=r, num_frames=t, seed=3).keypoints
  keypoints = np.stack([synthetic, rendered]).astype(np.float32)
  batch = {"video": jnp.zeros((2, t, r, r, 3)),
           "mouth_region": np.stack([
               datasets.DATASETS["talking_faces"].derived["mouth_region"]({"keypoints": k}, r)
               for k in keypoints])}
  plain = step_lib.loss_weights(batch, frame_mask, {})
  np.testing.assert_array_equal(plain[..., 0, 0], ~frame_mask)
  weighted = np.asarray(step_lib.loss_weights(batch, frame_mask, {"mouth_region": 5.0}))
  disc = _mouth_disc(keypoints, r)
  assert disc.shape == (2, t, r, r) and 0 < disc[:, 1:].mean() < 0.2
  np.testing.assert_array_equal(weighted[0, 0], 0.0)
  np.testing.assert_array_equal(weighted[0, 1:], np.where(disc[0, 1:], 5.0, 1.0))
  np.testing.assert_array_equal(weighted[1], np.where(disc[1], 5.0, 1.0))
  with pytest.raises(ValueError, match="mouth_loss_weight != 1 needs the batch feature "
                                       "'mouth_region'"):
    step_lib.loss_weights({"video": batch["video"]}, frame_mask, {"mouth_region": 5.0})


def test_eye_region_covers_the_rendered_eyes_and_weighs_them():
  """The talking faces' 'eye_region' holds every pixel the renderer's eyes paint (the frame
  with the eyes vs the same frame with eye openness 0) and stays under 6% of the frame; the
  weights are `eye_loss_weight` there and 1 elsewhere, the two regions' weights multiply."""
  t, r = 4, 32
  attributes = captions.Attributes("pink", "blue", "up")
  track = visemes.MouthTrack(np.zeros(t, np.int32), np.full(t, 0.5, np.float32),
                             np.zeros(t, np.float32))
  centers = renderer.head_centers("up", t)
  eyes, keypoints = renderer.draw(attributes, centers, 1.05, track, np.ones(t, np.float32), r)
  no_eyes, _ = renderer.draw(attributes, centers, 1.05, track, np.zeros(t, np.float32), r)
  painted = np.any(eyes != no_eyes, axis=-1)
  region = datasets.DATASETS["talking_faces"].derived["eye_region"]({"keypoints": keypoints}, r)
  assert region.shape == (t, r, r) and painted.any()
  assert not (painted & ~region).any() and region.mean() < 0.06
  mouth = datasets.DATASETS["talking_faces"].derived["mouth_region"]({"keypoints": keypoints}, r)
  batch = {"eye_region": region[None], "mouth_region": mouth[None]}
  weights = np.asarray(step_lib.loss_weights(batch, jnp.zeros((1, t), bool),
                                             {"eye_region": 3.0, "mouth_region": 5.0}))
  np.testing.assert_array_equal(weights[0], np.where(region, 3.0, 1.0) * np.where(mouth, 5.0, 1.0))
  config = train_utils.micro_config()
  config.diffusion.update(eye_loss_weight=3.0, mouth_loss_weight=5.0)
  assert step_lib.region_weights(config.diffusion) == {"mouth_region": 5.0, "eye_region": 3.0}


def test_batch_keys_are_the_features_the_step_reads():
  from gcm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  base = ("video", "mel", "text_tokens", "text_mask", "mask")
  assert step_lib.batch_keys(config) == base
  config.diffusion.mouth_loss_weight = 5.0
  config.control.enabled = True
  assert step_lib.batch_keys(config) == base + ("mouth_region", "control_maps")
  config.diffusion.eye_loss_weight = 5.0
  assert step_lib.batch_keys(config) == base + ("mouth_region", "eye_region", "control_maps")
  config.diffusion.eye_loss_weight = 1.0
  config.model.update(text_encoder="minilm", audio_encoder="whisper")
  assert step_lib.batch_keys(config) == ("video", "mel", "text_embeddings", "text_mask", "mask",
                                         "whisper", "mouth_region", "control_maps")


def _random_syncnet(resolution):
  from gcm_jax.models import syncnet as syncnet_lib  # pylint: disable=g-import-not-at-top
  model = syncnet_lib.SyncNet(image_size=(resolution, resolution), embed_dim=16,
                              visual_widths=(8, 16), audio_widths=(8, 16))
  variables = model.init(jax.random.PRNGKey(0),
                         jnp.zeros((1, syncnet_lib.SYNC_FRAMES, resolution // 2, resolution, 3)),
                         jnp.zeros((1, syncnet_lib.MEL_FRAMES, syncnet_lib.NUM_MELS)))
  return model, variables


def test_lipsync_term_is_zero_without_audio_and_has_gradients_otherwise():
  from gcm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.num_frames = 6
  config.lipsync.update(weight=0.5)
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  b = config.data.batch_size
  expert = _random_syncnet(config.data.resolution)
  x0_hat = batch["video"]
  logsnr = jnp.zeros((b,))

  def term(x, drop_audio):
    cond = {"drop_audio": jnp.full((b,), drop_audio)}
    return step_lib.lipsync_term(expert, jax.random.PRNGKey(1), x, logsnr, batch, cond,
                                 jnp.array(0), config)

  assert float(term(x0_hat, True)) == 0.0
  value, grad = jax.value_and_grad(term)(x0_hat, False)
  assert float(value) > 0.0
  assert float(jnp.abs(grad).max()) > 0.0
  # Only a 5-frame window of the lower half is seen: the top rows get no gradient.
  np.testing.assert_array_equal(grad[:, :, : config.data.resolution // 2], 0.0)


def test_train_step_adds_the_lipsync_loss():
  config = train_utils.micro_config()
  config.data.num_frames = 6
  config.lipsync.update(weight=0.5)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  state, shardings = trainer.init_state(config, mesh)
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  net, variables = _random_syncnet(config.data.resolution)
  jitted = trainer.jit_train_step(config, mesh, shardings, lipsync_net=net)
  other = jax.tree.map(lambda v: 2.0 * v, variables)
  with jax.set_mesh(mesh):
    _, metrics = jitted(jax.tree.map(jnp.copy, state), batch, {"lipsync": variables})
    _, other_metrics = jitted(state, batch, {"lipsync": other})
  assert float(metrics["lipsync_loss"]) > 0.0
  np.testing.assert_allclose(metrics["loss"], metrics["denoising_loss"] + metrics["lipsync_loss"],
                             rtol=1e-6)
  # The SyncNet is an input of the compiled step, not a constant baked into it: other
  # variables change the loss without a new compilation.
  assert float(other_metrics["lipsync_loss"]) != float(metrics["lipsync_loss"])
  assert jitted._cache_size() == 1  # pylint: disable=protected-access


def test_lipsync_clips_per_step_reads_only_the_first_clips():
  """clips_per_step = 2: the lip-sync loss sees clips 0 and 1 only (other clips' audio may
  change without changing it); 0: every clip."""
  config = train_utils.micro_config()
  config.data.num_frames = 6
  config.lipsync.update(weight=0.5, clips_per_step=2)
  config.diffusion.update(p_drop_audio=0.0, p_drop_both=0.0)  # Every clip's loss counts.
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  state, shardings = trainer.init_state(config, mesh)
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  net, variables = _random_syncnet(config.data.resolution)

  def lipsync_losses(config, clips):
    """The lip-sync loss of the batch, then of the batch with each clip's audio changed."""
    jitted = trainer.jit_train_step(config, mesh, shardings, lipsync_net=net)
    batches = [batch] + [dict(batch, mel=batch["mel"].at[c].multiply(-1.0)) for c in clips]
    with jax.set_mesh(mesh):
      return [float(jitted(jax.tree.map(jnp.copy, state), b, {"lipsync": variables})[1][
          "lipsync_loss"]) for b in batches]

  last = config.data.batch_size - 1
  loss, last_audio, first_audio = lipsync_losses(config, [last, 0])
  assert loss == last_audio and loss != first_audio
  config.lipsync.clips_per_step = 0
  loss, last_audio = lipsync_losses(config, [last])
  assert loss != last_audio
  config.lipsync.clips_per_step = config.data.batch_size + 1
  config.lipsync.syncnet_workdir = "/"
  assert any("config.lipsync.clips_per_step" in p for p in config_validation.problems(config))


def test_lipsync_config_errors(tmp_path):
  config = train_utils.micro_config()
  config.lipsync.update(weight=0.5)
  assert any("needs config.lipsync.syncnet_workdir" in p
             for p in config_validation.problems(config))
  config.lipsync.syncnet_workdir = "/nonexistent"
  found = config_validation.problems(config)
  assert any("'/nonexistent' does not exist" in p for p in found)
  assert any(">= 5 frames" in p for p in found)
  config.data.num_frames = 8
  config.lipsync.syncnet_workdir = str(tmp_path)
  assert config_validation.problems(config) == []
  with pytest.raises(FileNotFoundError, match="train_syncnet"):
    trainer.load_lipsync_expert(config)
  config.lipsync.weight = 0.0
  assert trainer.load_lipsync_expert(config) is None
