"""The whole multi-host path: two `run_train.py` processes (gloo on 127.0.0.1, 2 CPU devices
each, a data 2 x fsdp 2 mesh, so parameters and optimizer state are sharded across the
processes) train, checkpoint, are killed with SIGKILL, restart, finish and write samples;
their loss curve equals one process's with 4 devices over the same global batches."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from tests import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 12


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_train(workdir, data_dir, local_devices, process_id=0, num_processes=1, port=0):
  """Starts one run_train.py process of the micro config (tests/train_utils.py)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
             JAX_PLATFORMS="cpu")
  flags = [f"--workdir={workdir}", "--config=tests/train_utils.py",
           f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={NUM_STEPS}",
           "--config.checkpoint.every_steps=4", "--config.log.num_samples=2",
           "--config.mesh.shape.data=2", "--config.mesh.shape.fsdp=2"]
  if num_processes > 1:
    flags += [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
              f"--config.distributed.num_processes={num_processes}",
              f"--config.distributed.process_id={process_id}"]
  return subprocess.Popen([sys.executable, "run_train.py", *flags], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_processes(workdir, data_dir):
  port = _free_port()
  return [_run_train(workdir, data_dir, 2, i, 2, port) for i in range(2)]


def _finish(procs, timeout=600):
  outputs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outputs]


def _losses(workdir):
  with open(os.path.join(workdir, "logs", "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  return [r["step"] for r in records], np.array([r["loss"] for r in records])


def test_two_hosts_killed_and_restarted_match_one_host(tmp_path):
  data_dir, workdir = str(tmp_path / "data"), str(tmp_path / "two_hosts")
  procs = _two_processes(workdir, data_dir)
  checkpoints = os.path.join(workdir, "checkpoints")
  while not os.path.isdir(os.path.join(checkpoints, "4")):  # However long it takes.
    assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
    time.sleep(0.02)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    p.communicate()
    assert p.returncode == -signal.SIGKILL
  killed_at = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert killed_at < NUM_STEPS, "both processes finished before the kill"

  outputs = _finish(_two_processes(workdir, data_dir))
  assert "sample:" in outputs[0] and "sample:" not in outputs[1]
  for i in range(2):
    assert os.path.getsize(os.path.join(workdir, "samples",
                                        f"step_{NUM_STEPS:07d}_{i}.mp4")) > 0
  one_host = str(tmp_path / "one_host")
  _finish([_run_train(one_host, data_dir, 4)])
  steps, losses = _losses(workdir)
  reference_steps, reference = _losses(one_host)
  assert steps == reference_steps == list(range(1, NUM_STEPS + 1))
  # Step 1's loss comes from the same initial params and global batch on both meshes: only
  # the order of the float32 tree reductions over its N terms differs (~log2(N) eps each; a
  # process's rows dropped or counted twice would change the mean itself, by percents).
  config = train_utils.micro_config()
  n = config.data.batch_size * config.data.num_frames * config.data.resolution**2 * 3
  np.testing.assert_allclose(losses[0], reference[0],
                             rtol=16 * np.ceil(np.log2(n)) * np.finfo(np.float32).eps)
  # Later steps: Adam divides the gradients by their running RMS, which turns reduction-order
  # differences in small gradients into update differences up to the learning-rate scale.
  np.testing.assert_allclose(losses, reference, rtol=1e-3)
