"""SyncNet / text-video training: pair sampling, pure train steps, resume, save/load, the CLI,
a slow real run."""
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gcm_jax import config_rules
from gcm_jax.alignment import sync_loss
from gcm_jax.configs import syncnet as syncnet_config
from gcm_jax.models import trained_syncnet
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import state as state_lib
from gcm_jax.train import train_syncnet as ts


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  config = syncnet_config.get_config()
  config.data.num_train_clips = 8
  config.data.num_eval_clips = 4
  config.data.num_frames = 20
  config.data.eval_num_frames = 20
  config.model.embed_dim = 16
  config.model.visual_widths = (8, 16)
  config.model.audio_widths = (8, 16)
  config.train.batch_size = 8
  config.train.num_steps = 4
  config.train.log_every = 1
  config.checkpoint.every_steps = 2
  config.text_video.num_steps = 1
  config.text_video.batch_size = 4
  config.text_video.embed_dim = 16
  config.text_video.text_width = 16
  config.text_video.video_widths = (8,)
  return config


@pytest.fixture(scope="module")
def clips():
  config = _tiny_config()
  return ts.load_clips(config, "train", config.data.num_train_clips, config.data.num_frames, 0)


def test_clips_follow_pipeline_conventions(clips):
  n, t = 8, 20
  assert clips["video"].shape == (n, t, 32, 32, 3) and clips["video"].dtype == np.float32
  assert clips["video"].min() >= -1 and clips["video"].max() <= 1
  assert clips["mel"].shape == (n, t, 16, 80)
  assert clips["mel"].min() >= -4 and clips["mel"].max() <= 4
  assert clips["mouth_open"].shape == (n, t)
  assert clips["text_tokens"].dtype == np.int32 and clips["text_mask"].dtype == bool


def test_sample_sync_batch_pairs_are_in_and_off_sync(clips):
  rng = np.random.default_rng(0)
  clip_idx = np.array([0, 3, 5])
  starts = np.array([0, 7, 15])
  neg = ts._negative_starts(starts, 16, 3, 12, rng)
  assert np.all(np.abs(neg - starts) >= 3) and np.all(np.abs(neg - starts) <= 12)
  assert np.all((neg >= 0) & (neg < 16))
  batch = ts.make_pairs(clips, clip_idx, starts, neg, frame_offset=2)
  np.testing.assert_array_equal(batch["frames"][1], clips["video"][3, 7:12, 16:])
  np.testing.assert_array_equal(batch["mel_pos"][1], clips["mel"][3, 9])
  np.testing.assert_array_equal(batch["mel_neg"][2], clips["mel"][5, neg[2] + 2])
  with pytest.raises(ValueError, match="no off-sync window"):
    ts._negative_starts(np.array([0]), 3, 3, 12, rng)


def test_sync_train_step_is_pure_and_reduces_loss_on_a_fixed_batch(clips):
  config = _tiny_config()
  config.train.num_steps = 20
  model = trained_syncnet.build_syncnet(config)
  state = ts.create_sync_state(config, jax.random.PRNGKey(0))
  batch = ts.sample_sync_batch(clips, 8, 3, 12, 2, np.random.default_rng(0))
  step = jax.jit(functools.partial(ts.sync_train_step, model=model,
                                   optimizer=state_lib.make_optimizer(config.train),
                                   train_config=config.train))
  loss0, _ = jax.jit(lambda p, b: ts.sync_loss(p, model, b, 0.5))(state.params, batch)
  s1, out1 = step(state, batch)
  s1b, out1b = step(state, batch)  # same inputs -> same outputs (no hidden state)
  np.testing.assert_array_equal(out1["loss"], out1b["loss"])
  np.testing.assert_allclose(out1["loss"], loss0, rtol=1e-5)
  for _ in range(15):
    s1, out = step(s1, batch)
  assert float(out["loss"]) < float(loss0)
  assert int(s1.step) == 16
  assert set(out) == {"loss", "bce", "infonce", "acc", "logit_scale", "grad_norm",
                      "learning_rate", "skipped_steps"}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """(workdir, report) of an uninterrupted 4-step tiny run (checkpoints at steps 2, 4)."""
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, ts.train_and_evaluate(_tiny_config(), str(workdir))


def _final_state(workdir):
  """The TrainState of the newest SyncNet checkpoint in `workdir`."""
  config = _tiny_config()
  init_fn = functools.partial(ts.create_sync_state, config, jax.random.PRNGKey(0))
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             config.checkpoint)
  state, _ = checkpointer.restore(ts._abstract_state(init_fn))
  checkpointer.close()
  return state


def _logged_steps(directory):
  with open(os.path.join(directory, "logs", "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line)["step"] for line in f]


def test_rerun_resumes_from_the_checkpoint_bit_exactly(tmp_path, straight_run):
  """2 steps, stop, rerun for 2 more == 4 straight steps: same params, EMA, optimizer state,
  held-out report, and each step logged once."""
  straight_dir, straight_report = straight_run
  config = _tiny_config()
  assert ts.train_and_evaluate(config, str(tmp_path), stop_at_step=2) is None
  assert not (tmp_path / "report.json").exists()
  assert _logged_steps(tmp_path) == [1, 2]
  report = ts.train_and_evaluate(config, str(tmp_path))
  assert _logged_steps(tmp_path) == _logged_steps(straight_dir) == [1, 2, 3, 4]
  assert _logged_steps(tmp_path / "text_video") == [1]
  resumed, straight = _final_state(tmp_path), _final_state(straight_dir)
  assert int(resumed.step) == int(straight.step) == 4
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
  assert np.abs(np.asarray(jax.tree.leaves(straight.params)[0])).sum() > 0
  del report["syncnet_train_seconds"], straight_report["syncnet_train_seconds"]
  assert report == straight_report


def test_train_and_evaluate_writes_loadable_syncnet(straight_run):
  workdir, report = straight_run
  config = _tiny_config()
  for key in ("sync_acc", "lse_d", "lse_c", "offset_acc_k3", "text_video_score_matched",
              "text_video_top1_acc"):
    assert np.isfinite(report[key]), key
  assert (workdir / "report.json").exists() and (workdir / "text_video_params").is_dir()
  assert (workdir / trained_syncnet.SYNCNET_FILE).is_dir()  # Orbax exports.
  model, variables = trained_syncnet.load_syncnet(config, str(workdir))
  jax.tree.map(np.testing.assert_array_equal, variables["params"],
               _final_state(workdir).ema_params["syncnet"])
  video = jnp.zeros((1, 8, 32, 32, 3))
  mel = jnp.zeros((1, 8, 16, 80))
  loss = sync_loss.lipsync_loss(model, variables, video, mel, jax.random.PRNGKey(0))
  assert np.isfinite(loss)
  data = ml_collections.ConfigDict(dict(resolution=config.data.resolution, mel_window=16))
  _, matched = trained_syncnet.load_matching_syncnet(str(workdir), data)
  jax.tree.map(np.testing.assert_array_equal, matched, variables)
  # 64-px videos: the 32-px SyncNet sees them downsampled; 48 px is no multiple of 32.
  trained_syncnet.load_matching_syncnet(str(workdir), ml_collections.ConfigDict(dict(data, resolution=64)))
  with pytest.raises(ValueError, match="trained at 32px, the videos are 48px"):
    trained_syncnet.load_matching_syncnet(str(workdir), ml_collections.ConfigDict(dict(data, resolution=48)))
  with pytest.raises(ValueError, match="16-frame mel windows"):
    trained_syncnet.load_matching_syncnet(str(workdir), ml_collections.ConfigDict(dict(data, mel_window=8)))
  with pytest.raises(FileNotFoundError, match="train_syncnet"):
    trained_syncnet.load_matching_syncnet(str(workdir / "missing"), data)


def test_cli_trains_with_the_default_config(tmp_path):
  """No --config: configs/syncnet.py (found from any working directory), tiny overrides."""
  workdir = tmp_path / "run"
  overrides = ["--config.train.num_steps=2", "--config.train.batch_size=8",
               "--config.data.num_train_clips=8", "--config.data.num_eval_clips=2",
               "--config.data.eval_num_frames=20", "--config.text_video.num_steps=0"]
  proc = subprocess.run([sys.executable, "-m", "gcm_jax.train.train_syncnet",
                         f"--workdir={workdir}", *overrides], cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.loads((workdir / "report.json").read_text())
  assert saved["config"]["train"]["num_steps"] == 2
  default_model = json.loads(syncnet_config.get_config().model.to_json())
  assert saved["config"]["model"] == default_model
  assert json.loads(proc.stdout)["sync_acc"] == saved["report"]["sync_acc"]
  assert _logged_steps(workdir) == [2]
  trained_syncnet.load_matching_syncnet(str(workdir), ml_collections.ConfigDict(dict(resolution=32,
                                                                        mel_window=16)))


@pytest.mark.slow
def test_trained_syncnet_detects_sync_and_offsets(tmp_path):
  """A short real run (3-5 min on CPU): held-out pairs are classified well above chance and
  delaying the audio by 3 frames moves the measured offset to -3 on most clips."""
  config = syncnet_config.get_config()
  config.data.num_train_clips = 512
  config.data.num_eval_clips = 32
  config.train.num_steps = 600
  config.text_video.num_steps = 0
  report = ts.train_and_evaluate(config, str(tmp_path))
  assert report["sync_acc"] > 0.7
  assert report["offset_acc_k3"] > 0.5


def test_bad_config_and_a_changed_run_are_refused_before_any_work(tmp_path):
  """Every bad field named at once (then the constraints between fields), and a workdir
  holding a run of another config left untouched (as the other trainers do)."""
  config = _tiny_config()
  config.model.embed_dim, config.train.ema_decay = 0, 1.0
  with pytest.raises(config_rules.ConfigError) as e:
    ts.train_and_evaluate(config, str(tmp_path / "bad"))
  assert "config.model.embed_dim = 0: expected an integer >= 1" in str(e.value)
  assert "config.train.ema_decay = 1.0: expected a number in [0.0, 1.0)" in str(e.value)
  config = _tiny_config()
  config.train.min_shift, config.train.max_shift = 9, 4  # 20 frames: 16 windows, 8 at most.
  with pytest.raises(config_rules.ConfigError) as e:
    ts.train_and_evaluate(config, str(tmp_path / "bad"))
  assert "config.train.min_shift = 9 must be <= config.train.max_shift = 4" in str(e.value)
  assert "leaves 16 windows, too few for an off-sync window >= config.train.min_shift = 9" \
      in str(e.value)
  assert not (tmp_path / "bad").exists()
  assert ts.problems(syncnet_config.get_config()) == []

  run = tmp_path / "run"
  directory.write_config(_tiny_config(), str(run))
  changed = _tiny_config()
  changed.model.embed_dim = 32
  changed.train.num_steps = 8  # Resumable: training longer is not a difference.
  with pytest.raises(directory.ConfigMismatchError,
                     match=r"holds a SyncNet run .*\n  config.model.embed_dim: saved 16, now 32$"):
    ts.train_and_evaluate(changed, str(run))
  assert sorted(os.listdir(run)) == ["config.json"]
