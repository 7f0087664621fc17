"""Safe resume: a mismatched config changes nothing, an unreadable newest checkpoint falls
back to the newest readable one, and metrics.jsonl keeps one record per logged step."""
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from gcm_jax.data import pipeline
from gcm_jax.models import diffusion_model
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.train import trainer


from tests import train_utils


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def _config(data_dir, **train):
  config = train_utils.micro_config()
  config.data.data_dir = data_dir
  config.mesh.shape = dict(data=2, fsdp=4, tensor=1)  # Sharded parameters and optimizer.
  config.train.update(**train)
  return config


def _snapshot(directory):
  """{relative path: bytes} of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def _logged_steps(workdir):
  with open(os.path.join(workdir, "logs", "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line)["step"] for line in f]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, data_dir):
  """A 6-step run stopped at step 4, with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("stopped") / "run")
  trainer.train(_config(data_dir, num_steps=6), workdir, stop_at_step=4)
  return workdir


def _copy_with_corrupt_step_4(stopped_run, tmp_path):
  """A copy of the stopped run whose step-4 checkpoint has garbage in every state file (as
  after a damaged disk or a copy cut short)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(stopped_run, workdir)
  for root, _, names in os.walk(os.path.join(workdir, "checkpoints", "4", "state")):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  return workdir


def _fallback_warning(caplog):
  return " ".join(m for m in caplog.messages if "could not be read" in m)


def test_resume_with_a_changed_model_names_the_fields_and_changes_nothing(
    tmp_path, data_dir, stopped_run):
  workdir = str(tmp_path / "run")
  shutil.copytree(stopped_run, workdir)
  before = _snapshot(workdir)
  config = _config(data_dir, num_steps=8)  # num_steps may change on resume: not reported.
  config.model.width = 48
  config.diffusion.p_drop_text = 0.3
  with pytest.raises(directory.ConfigMismatchError) as error:
    trainer.train(config, workdir)
  message = str(error.value)
  assert "config.model.width: saved 32, now 48" in message
  assert "config.diffusion.p_drop_text: saved 0.1, now 0.3" in message
  assert "num_steps" not in message and "delete" not in message
  assert _snapshot(workdir) == before  # config.json, checkpoints and logs untouched.


def test_unreadable_newest_checkpoint_falls_back_and_logs_stay_unique(
    tmp_path, data_dir, stopped_run, caplog):
  """Resuming to step 6 restores step 2, moves step 4 aside, trains steps 3-6 again and
  logs each step once; the result (parameters and EMA) equals a straight 6-step run bit for
  bit, so a stop-and-resume is exact too (the stopped run's first 4 steps are the straight
  run's)."""
  assert _logged_steps(stopped_run) == [1, 2, 3, 4]
  workdir = _copy_with_corrupt_step_4(stopped_run, tmp_path)
  with caplog.at_level(logging.WARNING):
    resumed = trainer.train(_config(data_dir, num_steps=6), workdir)
  warning = _fallback_warning(caplog)
  assert "step 4" in warning and "Using step 2" in warning and "nothing was deleted" in warning
  assert len(warning) < 1500  # One paragraph, not a TensorStore dump.
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "4"))
  assert _logged_steps(workdir) == [1, 2, 3, 4, 5, 6]
  assert int(resumed.step) == 6
  straight = trainer.train(_config(data_dir, num_steps=6), str(tmp_path / "straight"))
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)
  assert np.abs(np.asarray(jax.tree.leaves(straight.params)[0])).sum() > 0
  assert checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     _config(data_dir).checkpoint).latest_step() == 6


def test_generate_loads_the_newest_readable_checkpoint(tmp_path, stopped_run, caplog):
  workdir = _copy_with_corrupt_step_4(stopped_run, tmp_path)
  with caplog.at_level(logging.WARNING):
    trained = diffusion_model.load_trained(workdir)
  assert "Using step 2" in _fallback_warning(caplog)
  expected = diffusion_model.load_trained(stopped_run, step=2)
  jax.tree.map(np.testing.assert_array_equal, trained.params, expected.params)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))  # Read-only: left in place.
  with pytest.raises(checkpoint_lib.CheckpointError, match="step 4 .* unreadable"):
    diffusion_model.load_trained(workdir, step=4)


def test_runs_saved_before_the_layers_axis_rule_resume():
  """Axis rules only place the parameters (checkpoints restore onto any sharding), so a run
  saved before the 'layers' rule and `model.scan_blocks` existed resumes; switching the
  block layout of a run does not."""
  config = _config("")
  saved = json.loads(config.to_json())
  saved["mesh"]["logical_axis_rules"] = [
      rule for rule in saved["mesh"]["logical_axis_rules"] if rule[0] != "layers"]
  del saved["model"]["scan_blocks"]
  assert directory.config_differences(saved, config, trainer.RESUMABLE_FIELDS) == {}
  saved["model"]["scan_blocks"] = True
  assert directory.config_differences(saved, config, trainer.RESUMABLE_FIELDS) == {"model.scan_blocks": (True, False)}


def test_iterator_state_only_when_saving_and_sampler_compiled_once(tmp_path, data_dir,
                                                                    monkeypatch):
  """6 steps, checkpoints every 2, samples every 2 and at the end: the data-iterator state is
  serialized 3 times (once per save), and the sampler is compiled once for its 3 calls."""
  calls = {"get_state": 0}
  get_state = pipeline.DataIterator.get_state

  def counted_get_state(self):
    calls["get_state"] += 1
    return get_state(self)

  writers = []

  class RecordedSampleWriter(trainer.SampleWriter):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      writers.append(self)

  monkeypatch.setattr(pipeline.DataIterator, "get_state", counted_get_state)
  monkeypatch.setattr(trainer, "SampleWriter", RecordedSampleWriter)
  config = _config(data_dir, num_steps=6)
  config.log.update(num_samples=1, sample_every_steps=2)
  trainer.train(config, str(tmp_path / "run"))
  assert calls["get_state"] == 3
  assert len(writers) == 1
  assert writers[0]._sample._cache_size() == 1  # pylint: disable=protected-access
  assert sorted(os.listdir(tmp_path / "run" / "samples")) == [
      f"step_{s:07d}_0.mp4" for s in (2, 4, 6)]
