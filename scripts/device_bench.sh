#!/usr/bin/env bash
# Pipeline-level GPU benchmarks on the lent device machine (docs/benchmarks.md). Usage: STEP = 1..7.
# 1-4: stage the onnxruntime-gpu parts (.oc0-.oc3, carried one per call; /tmp lives while the machine is warm)
# 5: last part + models + OpenCV-CUDA (.oc4): assemble and install; 6: RapidOCR wheels (.whlpeer) and the
# chain + many-stream benchmarks; 7: the soak.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
step=${1:?step}
mkdir -p /tmp/ort /tmp/site "$OUT"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
if [ "$step" -le 5 ]; then
  cp .oc$((step - 1))/p-* /tmp/ort/ && ls /tmp/ort
  [ "$step" = 1 ] && pipi .oc0/*.whl
  if [ "$step" = 5 ]; then
    whl=$(cut -d' ' -f3 .oc4/SHA256)
    (cd /tmp/ort && cat p-* > "$whl" && sha256sum -c "$OLDPWD/.oc4/SHA256") || exit 3
    pipi "/tmp/ort/$whl" .oc4/*.whl || exit 4
    mkdir -p /tmp/cv2cuda /tmp/ocv/site /tmp/models && tar xJf .oc4/cv2-*.tar.xz -C /tmp/cv2cuda
    ln -sfn /tmp/cv2cuda/cv2 /tmp/ocv/site/cv2
    cp .oc4/*.onnx /tmp/models/
  fi
  exit 0
fi
export PYTHONPATH=/tmp/cv2cuda:/tmp/site:$PWD
mkdir -p models && cp /tmp/models/*.onnx models/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "$step" = 6 ]; then
  pipi .whlpeer/*.whl
  python3 scripts/make_sample.py --out samples/plates.avi --codec mjpg --frames 60 >/dev/null || exit 5
  timeout 200 python3 scripts/bench_chain.py --config configs/examples/gpu.yaml --video samples/plates.avi \
    --frames 60 --repeat 2 --peer-cuda 2>&1 | grep -v -e '^\[' -e 'Warning' | tee "$OUT/chain.log"
  timeout 300 python3 scripts/bench_streams.py --models models --streams 1 4 16 64 --seconds 4 \
    --json "$OUT/streams.json" 2>&1 | tee "$OUT/streams.log"
fi
if [ "$step" = 7 ]; then
  timeout 560 python3 scripts/bench_streams.py --models models --streams 16 --chains det --soak "${SOAK:-480}" \
    --json "$OUT/soak.json" 2>&1 | tee "$OUT/soak.log"
fi
