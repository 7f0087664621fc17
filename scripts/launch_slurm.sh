#!/usr/bin/env bash
# Submit run_train.py as a SLURM job: one process per node (srun), all of a node's GPUs each.
#
#   scripts/launch_slurm.sh --nodes=N [--gpus_per_node=8] [--partition=P] [--time=HH:MM:SS]
#       [--job_name=gcm_jax] [--dry-run] -- --config=configs/pod.py --workdir=/shared/run
#
# Run it from the repository root on a login node whose file system the compute nodes share
# (the repository, its virtual environment and the workdir). jax.distributed starts from
# the SLURM environment that srun sets (pod.py sets config.distributed.auto_detect). Rerun
# the same command to resume: the newest readable checkpoint in the workdir is restored.
# --dry-run prints the sbatch command instead of submitting it. Arguments after `--` go to
# run_train.py (default: --config=configs/pod.py). PYTHON overrides the interpreter
# (default: .venv/bin/python if present, else python3).
set -euo pipefail

nodes="" gpus=8 partition="" time_limit="" job_name="gcm_jax" dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --job_name=*) job_name="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    --) shift; break ;;
    *) echo "launch_slurm.sh: unknown argument $1 (arguments for run_train.py go after --)" >&2
       exit 2 ;;
  esac
  shift
done
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { echo "launch_slurm.sh: --nodes=N (N >= 1) is required" >&2; exit 2; }
[[ "$gpus" =~ ^[0-9]+$ ]] || { echo "launch_slurm.sh: --gpus_per_node must be a number" >&2; exit 2; }
train_args=("$@")
[[ ${#train_args[@]} -gt 0 ]] || train_args=(--config=configs/pod.py)
python="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"

wrap="srun --ntasks-per-node=1 $(printf '%q' "$python") run_train.py$(printf ' %q' "${train_args[@]}")"
cmd=(sbatch "--job-name=$job_name" "--nodes=$nodes" --ntasks-per-node=1 "--gpus-per-node=$gpus"
     "--chdir=$(pwd)" "--output=$job_name-%j.log")
[[ -n "$partition" ]] && cmd+=("--partition=$partition")
[[ -n "$time_limit" ]] && cmd+=("--time=$time_limit")
cmd+=("--wrap=$wrap")

if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
