#!/usr/bin/env bash
# The GPU check: the CUDA-dependent tests, then training throughput of the paper preset on the GPU (bf16
# autocast, the trainer's own step) beside the same measurement on the CPU, each printed as a `train-speed:` line.
# Under 8 minutes on one H200-class GPU.
#
#   scripts/gpu_check.sh IU_FOLDER [GPU_SECONDS]
#
# IU_FOLDER holds annotation.json + images/; a subset is enough (scripts/iu_subset.py: 400 studies, 13 MiB).
# PYTHON picks the interpreter (default python3; it needs the project's dependencies, the project itself is
# found from this checkout). GPU_CHECK_TINY=1 is the CPU-only form the test suite runs so the script cannot rot:
# cpu preset, batch 2, two timed steps, no pytest.
set -euo pipefail
data=${1:?usage: scripts/gpu_check.sh IU_FOLDER [GPU_SECONDS]}
gpu_seconds=${2:-180}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
"$py" -c 'import revtaf_train' 2>/dev/null || "$py" -m pip install -q --no-deps --no-build-isolation -e .

cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))')
"$py" -c 'import torch; print("torch", torch.__version__, "·", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
speed() { "$py" -m revtaf_cli bench --train-speed --data-root "$data" "$@"; }

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    speed --preset cpu --device cpu --batch-size 2 --max-steps 2
    exit 0
fi
if [ "$cuda" = 1 ]; then
    "$py" -m pytest -q -m cuda tests
    speed --preset paper --device cuda --seconds "$gpu_seconds"
else
    echo "no CUDA device: the CUDA tests and the GPU figures are skipped"
fi
speed --preset paper --device cpu --seconds 60
