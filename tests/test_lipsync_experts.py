"""Lip-sync experts of the train step (`config.lipsync.expert`): Wav2Lip's SyncNet_color loaded
from a `.pth` (random weights; torch is a test-only extra), its audio timing vs Wav2Lip's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax import config_validation
from gcm_jax.alignment import experts
from gcm_jax.data import audio
from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.train import trainer

from tests import train_utils


def test_mel_windows_vs_wav2lip_crop_audio_window():
  """Wav2Lip's window for the 5 frames from t: mel frames int(80 t / 25) .. + 16. The batch's
  window (`mel[:, t + offset]`) is that one with 'start' and 0 or 1 mel frame later with
  'center' (both cases occur)."""
  t = np.arange(200)
  wav2lip = (80 * t / 25).astype(int)
  start = audio.window_starts(200 + 2, 16, "start")[t + syncnet_lib.frame_offset_for_alignment(
      "start")]
  np.testing.assert_array_equal(start, wav2lip)
  center = audio.window_starts(200 + 2, 16, "center")[t + syncnet_lib.frame_offset_for_alignment(
      "center")]
  assert set(center - wav2lip) == {0, 1}


@pytest.fixture(scope="module")
def wav2lip_weights(tmp_path_factory):
  """A random-weight SyncNet_color saved as Wav2Lip's checkpoint (`lipsync_expert.pth`)."""
  torch = pytest.importorskip("torch")
  from tests import syncnet_references as ref  # pylint: disable=g-import-not-at-top
  net = ref.randomize(ref.SyncNet_color().eval(), seed=1)
  path = str(tmp_path_factory.mktemp("w2l") / "lipsync_expert.pth")
  torch.save({"state_dict": net.state_dict(), "optimizer": None, "global_step": 0,
              "global_epoch": 0}, path)
  return path


def _wav2lip_config(path):
  config = train_utils.micro_config()
  config.data.update(num_frames=6, batch_size=2)
  config.lipsync.update(weight=0.5, expert="wav2lip", expert_weights=path)
  return config


def test_train_step_with_the_wav2lip_expert(wav2lip_weights):
  """The loaded expert is an input of the jitted step; its term is finite, > 0, and changes
  with the audio."""
  config = _wav2lip_config(wav2lip_weights)
  config_validation.validate(config)
  net, variables = trainer.load_lipsync_expert(config)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  state, shardings = trainer.init_state(config, mesh)
  batch = jax.tree.map(jnp.asarray, train_utils.synthetic_batch(config))
  other_audio = dict(batch, mel=jnp.asarray(train_utils.synthetic_batch(config, seed=1)["mel"]))
  jitted = trainer.jit_train_step(config, mesh, shardings, lipsync_net=net)
  with jax.set_mesh(mesh):
    _, metrics = jitted(jax.tree.map(jnp.copy, state), batch, {"lipsync": variables})
    _, other = jitted(state, other_audio, {"lipsync": variables})
  assert np.isfinite(float(metrics["lipsync_loss"])) and float(metrics["lipsync_loss"]) > 0
  np.testing.assert_allclose(metrics["loss"], metrics["denoising_loss"] + metrics["lipsync_loss"],
                             rtol=1e-6)
  assert float(other["lipsync_loss"]) != float(metrics["lipsync_loss"])
  assert jitted._cache_size() == 1  # pylint: disable=protected-access


def test_wav2lip_loss_sees_the_lower_half_of_one_window(wav2lip_weights):
  """Gradients reach the x0 estimate only in the chosen 5 frames' lower half (after the
  resize to 96x96 a few rows above the middle contribute through the bilinear kernel)."""
  config = _wav2lip_config(wav2lip_weights)
  net, variables = experts.EXPERTS["wav2lip"].load(config)
  batch = train_utils.synthetic_batch(config)
  video, mel = jnp.asarray(batch["video"]), jnp.asarray(batch["mel"])
  key = jax.random.PRNGKey(3)
  grad = jax.grad(lambda v: experts.wav2lip_lipsync_loss(net, variables, v, mel, key))(video)
  starts = jax.random.randint(key, (2,), 0, 6 - syncnet_lib.SYNC_FRAMES + 1)
  seen = np.abs(np.asarray(grad)).sum(axis=(2, 3, 4)) > 0
  np.testing.assert_array_equal(seen, (np.arange(6)[None] >= np.asarray(starts)[:, None])
                                & (np.arange(6)[None] < np.asarray(starts)[:, None] + 5))
  np.testing.assert_array_equal(grad[:, :, :config.data.resolution // 2 - 1], 0.0)


def test_wav2lip_expert_config_errors(tmp_path):
  config = _wav2lip_config("")
  assert any("with expert 'wav2lip' needs config.lipsync.expert_weights" in p
             for p in config_validation.problems(config))
  config.lipsync.expert_weights = str(tmp_path)  # A folder, not the .pth file.
  assert any("expert_weights" in p and "does not exist" in p
             for p in config_validation.problems(config))
  config.lipsync.expert = "latentsync"
  assert any("config.lipsync.expert = 'latentsync'" in p
             for p in config_validation.problems(config))
