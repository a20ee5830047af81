#!/usr/bin/env bash
# The GPU check on the device machine: no network, no install, a hard wall-clock limit.
#
#   bash benchmarks/gpu_check.sh [--minutes 8] [--parts abcdef] [...]     (from anywhere)
#
# Arguments go to benchmarks/gpu_check.py (its docstring says what each row measures). pydantic,
# which rl.config needs and that machine lacks, comes from benchmarks/.gpu_wheels (`make
# gpu-wheels` here; the device run carries the folder, which git ignores): the script unpacks
# the wheels that machine lacks into a temporary folder and puts it on the path, nothing is
# installed. With $OUT set (the device run's output folder) the figures and the whole log land
# there as gpu_check.json and gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
minutes=8
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --minutes) minutes=${args[i + 1]:-8} ;;
        --minutes=*) minutes=${args[i]#--minutes=} ;;
    esac
done
# the script stops starting measurements at --minutes; this limit is for a hang past that (a
# stuck kernel, a deadlocked subprocess). SIGINT first, so the script can still print its table.
limit=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 75 }')

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -n "${OUT:-}" ]; then
    timeout --signal=INT --kill-after=30 "$limit" "$PY" benchmarks/gpu_check.py --json "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
else
    timeout --signal=INT --kill-after=30 "$limit" "$PY" benchmarks/gpu_check.py "$@"
fi
