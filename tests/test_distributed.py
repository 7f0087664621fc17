"""Two `jax.distributed` processes on localhost (4 CPU devices each, gloo) == one process."""
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _parse(stdout: str) -> np.ndarray:
  rows = [line.split() for line in stdout.splitlines() if line.startswith("loss ")]
  return np.array([[float(r[1]), float(r[3])] for r in rows])


def test_two_processes_match_one_process():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "tests.distributed_worker", str(i), "2",
                             str(port), "4"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  single = subprocess.run([sys.executable, "-m", "tests.distributed_worker", "0", "1",
                           str(_free_port()), "8"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  expected = _parse(single.stdout)
  assert expected.shape == (2, 2)
  for out, _ in outputs:
    np.testing.assert_allclose(_parse(out), expected, rtol=1e-5)
