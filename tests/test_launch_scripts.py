"""Pod launch scripts: --dry-run prints the command each would run, bad arguments fail."""
import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
  return subprocess.run(["bash", os.path.join("scripts", script), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=60)


def test_tpu_vm_dry_run_runs_the_training_command_on_every_worker():
  proc = _run("launch_tpu_vm.sh", "--tpu=v5p-64", "--zone=us-east5-a", "--project=p",
              "--setup", "--dry-run", "--", "--config=configs/pod.py",
              "--workdir=/mnt/shared/run", "--config.train.num_steps=10")
  assert proc.returncode == 0, proc.stderr
  argv = shlex.split(proc.stdout)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v5p-64"]
  assert {"--zone=us-east5-a", "--worker=all", "--project=p"} <= set(argv)
  remote = next(a for a in argv if a.startswith("--command="))[len("--command="):]
  steps = [shlex.split(s) for s in remote.split(" && ")]
  assert steps[0] == ["cd", "gcm_jax"]
  assert steps[1] == ["python3", "-m", "pip", "install", "-q", "-e", "."]
  assert steps[2] == ["python3", "run_train.py", "--config=configs/pod.py",
                      "--workdir=/mnt/shared/run", "--config.train.num_steps=10"]


def test_slurm_dry_run_submits_one_process_per_node():
  proc = _run("launch_slurm.sh", "--nodes=4", "--gpus_per_node=8", "--partition=gpu",
              "--time=12:00:00", "--dry-run", "--", "--workdir=/shared/run name")
  assert proc.returncode == 0, proc.stderr
  argv = shlex.split(proc.stdout)
  assert argv[0] == "sbatch"
  assert {"--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu",
          "--time=12:00:00", f"--chdir={REPO}"} <= set(argv)
  wrap = shlex.split(next(a for a in argv if a.startswith("--wrap="))[len("--wrap="):])
  assert wrap[:2] == ["srun", "--ntasks-per-node=1"]
  assert wrap[3:] == ["run_train.py", "--workdir=/shared/run name"]  # Quoting survives.


def test_default_training_arguments_are_the_pod_config():
  proc = _run("launch_slurm.sh", "--nodes=2", "--dry-run")
  wrap = shlex.split(next(a for a in shlex.split(proc.stdout) if a.startswith("--wrap="))[7:])
  assert wrap[-2:] == ["run_train.py", "--config=configs/pod.py"]


@pytest.mark.parametrize("script, args, message", [
    ("launch_tpu_vm.sh", ["--zone=z", "--dry-run"], "--tpu and --zone are required"),
    ("launch_tpu_vm.sh", ["--tpu=t", "--zone=z", "--workdir=x"], "unknown argument --workdir"),
    ("launch_slurm.sh", ["--dry-run"], "--nodes=N (N >= 1) is required"),
    ("launch_slurm.sh", ["--nodes=0", "--dry-run"], "--nodes=N (N >= 1) is required"),
    ("launch_slurm.sh", ["--nodes=2", "--gpus_per_node=x", "--dry-run"], "must be a number"),
])
def test_bad_arguments_fail_with_a_message(script, args, message):
  proc = _run(script, *args)
  assert proc.returncode == 2 and message in proc.stderr
