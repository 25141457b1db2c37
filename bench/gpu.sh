#!/usr/bin/env bash
# The GPU check of issue #14, in one script, on a fresh GPU machine (NVIDIA driver, this checkout):
#   1. installs what it needs: a venv (.venv-gpu) with requirements.lock + motops[tensorrt,dev]
#      (TensorRT 10 + cuda-bindings, no pycuda) from PyPI -- skipped when $PYTHON already has
#      torch with CUDA, ultralytics, tensorrt and cuda-python (an image that ships them, no network);
#   2. runs the `gpu` tests (TensorRT FP16/INT8 plans built with tensorrt + cuda-python, run against
#      ONNX Runtime; a plan for another GPU refused);
#   3. measures end-to-end FPS at 640 of `motops track` with a TensorRT FP16 plan against Ultralytics'
#      own `YOLO(w).export(format="engine", half=True)` + `track()` (bench/gpu_speed.py), one table.
# Usage: bench/gpu.sh            (about 5-8 minutes: install 2-4, tests 1-2, bench 2)
# Writes bench/results/gpu_speed.json and bench/results/gpu_tests.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 GX_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
start=$(date +%s)

if ! nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader; then
  echo "bench/gpu.sh: nvidia-smi failed: this machine has no NVIDIA GPU or driver" >&2
  exit 2
fi

PY=${PYTHON:-python3}
have_all() {
  "$1" - <<'PY' 2>/dev/null
import importlib.util, sys
import torch
need = ("ultralytics", "tensorrt", "cuda.bindings", "onnxruntime", "pytest", "motops")
missing = [m for m in need if importlib.util.find_spec(m) is None]
sys.exit(0 if torch.cuda.is_available() and not missing else 1)
PY
}
if have_all "$PY"; then
  echo "== using $PY: torch (CUDA), ultralytics, tensorrt, cuda-python and motops are already installed"
else
  VENV=${VENV:-.venv-gpu}
  echo "== installing into $VENV (requirements.lock, then motops[tensorrt,dev])"
  test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements.lock          # torch 2.14.1 (CUDA 13 wheels), ...
  "$VENV/bin/python" -m pip install --quiet -c requirements.lock -e ".[train,tensorrt,dev]"
  PY="$VENV/bin/python"
fi
echo "== install: $(( $(date +%s) - start )) s"
"$PY" -c "from motops.runtime.tensorrt import tensorrt_status; ok, why = tensorrt_status(); print(why); raise SystemExit(0 if ok else 2)"

echo "== gpu tests"
mkdir -p bench/results
tests_rc=0
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee bench/results/gpu_tests.log || tests_rc=$?
echo "== gpu tests: exit $tests_rc, $(( $(date +%s) - start )) s"

echo "== end-to-end FPS at 640 (motops TensorRT FP16 vs Ultralytics TensorRT FP16)"
"$PY" bench/gpu_speed.py --frames 300 --repeats 3 --out bench/results/gpu_speed.json
echo "== bench/gpu.sh done in $(( $(date +%s) - start )) s (gpu tests exit $tests_rc)"
exit "$tests_rc"
