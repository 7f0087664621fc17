#!/usr/bin/env bash
# Launch run_train.py on every worker of a Cloud TPU VM slice (one process per host).
#
#   scripts/launch_tpu_vm.sh --tpu=NAME --zone=ZONE [--project=ID] [--repo=DIR] [--setup]
#       [--dry-run] -- --config=configs/pod.py --workdir=/mnt/shared/run [--config.x=...]
#
# The workdir must be a file system path every worker sees (NFS, Filestore or a gcsfuse
# mount of a bucket). Every worker runs the same command in DIR (default: gcm_jax, relative
# to the worker's home), where the repository must already be (e.g. cloned by a startup
# script); with --setup, `pip install -e .` runs there first. jax.distributed starts
# from the TPU environment (pod.py sets config.distributed.auto_detect). --dry-run prints the
# gcloud command instead of running it. Arguments after `--` go to run_train.py (default:
# --config=configs/pod.py).
set -euo pipefail

tpu="" zone="" project="" repo="gcm_jax" setup=0 dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --repo=*) repo="${1#*=}" ;;
    --setup) setup=1 ;;
    --dry-run) dry_run=1 ;;
    --) shift; break ;;
    *) echo "launch_tpu_vm.sh: unknown argument $1 (arguments for run_train.py go after --)" >&2
       exit 2 ;;
  esac
  shift
done
[[ -n "$tpu" && -n "$zone" ]] || { echo "launch_tpu_vm.sh: --tpu and --zone are required" >&2; exit 2; }
train_args=("$@")
[[ ${#train_args[@]} -gt 0 ]] || train_args=(--config=configs/pod.py)

remote="cd $(printf '%q' "$repo")"
[[ $setup -eq 1 ]] && remote+=" && python3 -m pip install -q -e ."
remote+=" && python3 run_train.py$(printf ' %q' "${train_args[@]}")"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone" --worker=all "--command=$remote")
[[ -n "$project" ]] && cmd+=("--project=$project")

if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
