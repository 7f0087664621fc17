#!/usr/bin/env bash
# GPU benchmark suite: installs the GPU extra, then runs benchmarks/gpu_suite.py (train-step
# MFU, pod single-chip slice, sampling speed, profile summary) within a time budget.
#
# Usage, from the repository root:
#   bash benchmarks/gpu_suite.sh --out /tmp/gpu_suite           # GPU box
#   bash benchmarks/gpu_suite.sh --cpu --out /tmp/gpu_suite_cpu  # CPU smoke, tiny shapes
#
# Options (all others, e.g. --rows, --repeats, --pod_batch, go to the driver: see
# `python -m benchmarks.gpu_suite --help`):
#   --cpu          smoke mode on the CPU backend (JAX_PLATFORMS=cpu, fast-compile XLA flags);
#                  installs nothing
#   --no-install   skip `pip install -e '.[gpu]'` (a machine whose jax already sees the GPU,
#                  e.g. one without network access)
#   --total_s N    seconds for the whole script, install included (default 480): the driver
#                  starts no row in the last quarter of the time left after the install and
#                  is stopped at N; the output files keep the rows finished by then
# Environment: PYTHON, the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
total=480
install=1
smoke=0
args=()
while (($#)); do
  case "$1" in
    --cpu) install=0; smoke=1; args+=("$1");;
    --no-install) install=0;;
    --total_s) total="$2"; shift;;
    *) args+=("$1");;
  esac
  shift
done
python="${PYTHON:-python3}"
if ((smoke)); then
  # The options of benchmarks.common.FAST_COMPILE, for every compile of the run.
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 \
--xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false"
fi
if ((install)); then
  "$python" -m pip install -q -e ".[gpu]"
fi
left=$((total - (SECONDS - start)))
if ((left < 1)); then
  echo "gpu_suite.sh: no time left of --total_s $total after the install" >&2
  exit 1
fi
timeout -k 10 "$left" "$python" -m benchmarks.gpu_suite --budget_s "$((left * 3 / 4))" \
    "${args[@]}"
