#!/usr/bin/env bash
# GPU tests + benchmark on the lent device machine (see docs/gpu.md). Usage: bash scripts/device_run.sh STEP
# Steps 1-4 each bring one part of the onnxruntime-gpu wheel (.ocK/p-*, carried; /tmp survives only while
# the machine stays warm) and run what needs no ORT; step 5 brings the last part, the PP-OCR models,
# OpenCV-CUDA and the pure-Python deps, assembles ORT and runs everything.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
step=${1:?step}
mkdir -p /tmp/ort /tmp/site "$OUT"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
d=.oc$((step - 1))
cp "$d"/p-* /tmp/ort/ 2>/dev/null
ls /tmp/ort
[ "$step" = 1 ] && pipi .oc0/*.whl
if [ "$step" = 5 ]; then
  whl=$(cut -d' ' -f3 .oc4/SHA256)
  (cd /tmp/ort && cat p-* > "$whl" && sha256sum -c "$OLDPWD/.oc4/SHA256") || exit 3
  pipi "/tmp/ort/$whl" .oc4/*.whl || exit 4
  mkdir -p /tmp/cv2cuda && tar xJf .oc4/cv2-*.tar.xz -C /tmp/cv2cuda
  # The OpenCV-CUDA build's loader config points at its build prefix (/tmp/ocv/site/cv2/python-3.12).
  mkdir -p /tmp/ocv/site && ln -sfn /tmp/cv2cuda/cv2 /tmp/ocv/site/cv2
fi
export PYTHONPATH=/tmp/site:$PWD
[ -d /tmp/cv2cuda ] && export PYTHONPATH=/tmp/cv2cuda:$PYTHONPATH
export EDGED_MODELS_DIR=$PWD/.oc4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
T="python3 -m pytest -m gpu -p no:cacheprovider -rs -s -q"
case $step in
  1) $T tests/gpu/test_kernel.py 2>&1 | tee "$OUT/kernel.log" ;;
  2) timeout 240 python3 scripts/bench_gpu.py --models /nonexistent 2>&1 | tee "$OUT/bench_kernel.log" ;;
  5) $T tests/gpu 2>&1 | tee "$OUT/tests.log"
     timeout 300 python3 scripts/bench_gpu.py --models .oc4 --out "$OUT/bench.md" 2>&1 | tee "$OUT/bench.log" ;;
  *) echo "part staged" ;;
esac
