"""Metric writers: JSONL (one record per logged step) and TensorBoard event files.

Only process 0 writes. TensorBoard files come from tensorboardX (no TensorFlow needed);
view with `tensorboard --logdir <workdir>/logs`. A run resumed from step s first drops the
records of steps > s (logged after the checkpoint it resumes from), so `metrics.jsonl` has
one record per logged step after any number of restarts, and TensorBoard purges those
steps too (`purge_step`).
"""
import json
import os
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `<workdir>/logs/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, start_step: int = 0):
    """`start_step`: the step training (re)starts from; records past it are dropped."""
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    self.jsonl_path = os.path.join(log_dir, "metrics.jsonl")
    _drop_records_after(self.jsonl_path, start_step)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    self._tb = SummaryWriter(log_dir, purge_step=start_step + 1)

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


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites the JSONL file at `path` without records of steps > `step` (atomically)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
  if len(kept) == len(lines):
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in kept)
  os.replace(path + ".tmp", path)
