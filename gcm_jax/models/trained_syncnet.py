"""The SyncNet a `python -m gcm_jax.train.train_syncnet` run saved, and the network a SyncNet
config describes.

A finished run's workdir holds `syncnet_params/` (the final EMA variables, an Orbax folder:
`gcm_jax.runs.export`; runs of earlier versions wrote `syncnet.msgpack`, which still loads)
and `report.json` (held-out metrics and the run's config, from which the network is rebuilt).
"""
import json
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax.models import syncnet as syncnet_lib
from gcm_jax.runs import export


SYNCNET_FILE = "syncnet_params"
LEGACY_SYNCNET_FILE = "syncnet.msgpack"  # What earlier versions exported.
REPORT_FILE = "report.json"


def build_syncnet(config: ml_collections.ConfigDict) -> syncnet_lib.SyncNet:
  """SyncNet from `config.model` and `config.data.resolution`."""
  res = config.data.resolution
  return syncnet_lib.SyncNet(image_size=(res, res), embed_dim=config.model.embed_dim,
                             visual_widths=tuple(config.model.visual_widths),
                             audio_widths=tuple(config.model.audio_widths))


def load_syncnet(config: ml_collections.ConfigDict,
                 workdir: str) -> Tuple[syncnet_lib.SyncNet, Dict[str, Any]]:
  """(SyncNet, frozen variables) exported by `train_syncnet.train_and_evaluate`
  (`syncnet_params/` or an earlier `syncnet.msgpack`: the final EMA params) with the same
  config, ready for
  `sync_loss.lipsync_loss` and `sync_offsets.lse_metrics`."""
  model = build_syncnet(config)
  res = config.data.resolution
  # The variables' structure without running the initializers (an eager init takes seconds).
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, syncnet_lib.SYNC_FRAMES, res - res // 2, res, 3)),
                            jnp.zeros((1, syncnet_lib.MEL_FRAMES, syncnet_lib.NUM_MELS)))
  path = os.path.join(workdir, SYNCNET_FILE)
  if not os.path.exists(path) and os.path.exists(os.path.join(workdir, LEGACY_SYNCNET_FILE)):
    path = os.path.join(workdir, LEGACY_SYNCNET_FILE)
  return model, export.load_params(path, template)


def load_matching_syncnet(workdir: str, data_config: ml_collections.ConfigDict
                          ) -> Tuple[syncnet_lib.SyncNet, Dict[str, Any]]:
  """(SyncNet, frozen variables) saved by `train_syncnet.train_and_evaluate` in `workdir`,
  checked against a video model's `config.data` (resolution: the SyncNet's or a multiple of
  it, e.g. a 32-px SyncNet for 64-px videos, which it sees downsampled; per-frame mel window
  length).

  Raises:
    FileNotFoundError: nothing trained in `workdir`.
    ValueError: the SyncNet does not fit videos / mel windows of `data_config`.
  """
  path = os.path.join(workdir, REPORT_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no trained SyncNet in {workdir!r} ({REPORT_FILE} missing); train one with "
        f"python -m gcm_jax.train.train_syncnet --workdir={workdir}")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  if data_config.resolution % config.data.resolution:
    raise ValueError(f"the SyncNet in {workdir!r} was trained at {config.data.resolution}px, "
                     f"the videos are {data_config.resolution}px (need the SyncNet's "
                     f"resolution or a multiple of it, which `syncnet.to_image_size` "
                     f"downsamples)")
  if data_config.mel_window != syncnet_lib.MEL_FRAMES:
    raise ValueError(f"SyncNet needs {syncnet_lib.MEL_FRAMES}-frame mel windows, the data has "
                     f"mel_window={data_config.mel_window}")
  return load_syncnet(config, workdir)
