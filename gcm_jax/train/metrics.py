"""Metric writers: JSONL (one record per logged step) and TensorBoard event files.

Only process 0 writes. TensorBoard files come from tensorboardX (no TensorFlow needed);
view with `tensorboard --logdir <workdir>/logs`.
"""
import json
import os
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `<workdir>/logs/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    self.jsonl_path = os.path.join(log_dir, "metrics.jsonl")
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    self._tb = SummaryWriter(log_dir)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tb.close()
