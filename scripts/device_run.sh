#!/usr/bin/env bash
# GPU tests and benchmarks on the lent device machine (see docs/gpu.md). Usage: bash scripts/device_run.sh STEP
# Steps 1-4 each bring one part of the onnxruntime-gpu wheel (.ocK/p-*, carried; /tmp survives only while
# the machine stays warm) and run what needs no ORT; step 5 brings the last part, the PP-OCR models,
# OpenCV-CUDA and the pure-Python deps, assembles ORT and runs the GPU tests + scripts/bench_gpu.py
# (STAGE_ONLY=1, any step: stage only, run nothing). Then, on the same warm machine:
#   chain  the CPU-vs-GPU path comparison on identical frames, and (PEER=1, carry .whlpeer: RapidOCR's
#          wheels) the whole-chain benchmark vs the peer;
#   tests  the GPU tests only;
#   run    the user-level benchmark (scripts/bench_run.py): `edged run` on CAMS cameras of a 1080p sample
#          (FP16="text_det": that model as its fp16 version, models/<stem>.fp16.onnx staged beforehand;
#          INFLIGHT=N: every camera's frames_in_flight) for CHAINS (det, ocr), beside the engines-only rate
#          in the same run. LIMIT (s) bounds each chain's
#          whole list of camera counts: on the H200 ocr at "1 4 16" took ~300 s and 64 cameras ~150 s more
#          (start-up ~40 s each), so run 64 in its own call (CAMS=64 LIMIT=300).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
step=${1:?step}
mkdir -p /tmp/ort /tmp/site "$OUT"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
case $step in
  [1-5])
    cp ".oc$((step - 1))"/p-* /tmp/ort/ 2>/dev/null
    ls /tmp/ort
    [ "$step" = 1 ] && pipi .oc0/*.whl
    if [ "$step" = 5 ]; then
      whl=$(cut -d' ' -f3 .oc4/SHA256)
      (cd /tmp/ort && cat p-* > "$whl" && sha256sum -c "$OLDPWD/.oc4/SHA256") || exit 3
      pipi "/tmp/ort/$whl" .oc4/*.whl || exit 4
      mkdir -p /tmp/cv2cuda /tmp/models && tar xJf .oc4/cv2-*.tar.xz -C /tmp/cv2cuda
      # The OpenCV-CUDA build's loader config points at its build prefix (/tmp/ocv/site/cv2/python-3.12).
      mkdir -p /tmp/ocv/site && ln -sfn /tmp/cv2cuda/cv2 /tmp/ocv/site/cv2
      cp .oc4/*.onnx /tmp/models/
    fi
    [ -n "${STAGE_ONLY:-}" ] && exit 0 ;;
esac
export PYTHONPATH=/tmp/site:$PWD
[ -d /tmp/cv2cuda ] && export PYTHONPATH=/tmp/cv2cuda:$PYTHONPATH
export EDGED_MODELS_DIR=/tmp/models
mkdir -p models && cp /tmp/models/*.onnx models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
T="python3 -m pytest -m gpu -p no:cacheprovider -rs -s -q"
case $step in
  1) $T tests/gpu/test_kernel.py 2>&1 | tee "$OUT/kernel.log" ;;
  2) timeout 240 python3 scripts/bench_gpu.py --models /nonexistent 2>&1 | tee "$OUT/bench_kernel.log" ;;
  5) $T tests/gpu 2>&1 | tee "$OUT/tests.log"
     timeout 300 python3 scripts/bench_gpu.py --models /tmp/models --out "$OUT/bench.md" 2>&1 | tee "$OUT/bench.log" ;;
  tests) $T tests/gpu 2>&1 | tee "$OUT/tests.log" ;;
  chain)  # CPU vs GPU path on identical frames; with PEER=1 (carry .whlpeer) the whole chain vs RapidOCR-CUDA
    python3 scripts/make_sample.py --out samples/plates.avi --codec mjpg --frames 60 >/dev/null || exit 5
    timeout 120 python3 scripts/compare_paths.py --config configs/examples/gpu.yaml --video samples/plates.avi \
      --frames 60 2>&1 | grep -v -e "plugin EP" -e '^\[' | tee "$OUT/compare.log"
    if [ -n "${PEER:-}" ]; then
      pipi .whlpeer/*.whl
      timeout 200 python3 scripts/bench_chain.py --config configs/examples/gpu.yaml --video samples/plates.avi \
        --frames 60 --repeat 2 --peer-cuda 2>&1 | grep -v -e "plugin EP" -e '^\[' | tee "$OUT/chain.log"
    fi ;;
  run)  # the user-level benchmark: `edged run` on CAMS cameras of a 1080p sample, CHAINS (det, ocr);
        # PROFILE=S (carry .prof: the py-spy wheel) samples the daemon's threads for S seconds per run
    prof=()
    if [ -n "${PROFILE:-}" ]; then
      pipi .prof/*.whl && export PATH=/tmp/site/bin:$PATH && prof=(--profile "$PROFILE")
    fi
    [ -f samples/plates-1080.avi ] || python3 scripts/make_sample.py --out samples/plates-1080.avi --codec mjpg \
      --size 1920x1080 --frames "${FRAMES:-240}" >/dev/null || exit 5
    for chain in ${CHAINS:-det ocr}; do
      timeout "${LIMIT:-280}" python3 scripts/bench_run.py --config "${CONFIG:-configs/examples/gpu.yaml}" \
        --video samples/plates-1080.avi --cameras ${CAMS:-1 4 16} --chain "$chain" --json "$OUT/run.json" ${FP16:+--fp16 $FP16} \
        ${INFLIGHT:+--frames-in-flight $INFLIGHT} ${SETS:+$(for kv in $SETS; do printf -- '--set %s ' "$kv"; done)} \
        "${prof[@]}" 2>&1 | grep -v "plugin EP" | tee -a "$OUT/run-$chain.log"
    done
    [ -n "${PROFILE:-}" ] && (cd /tmp/edged-bench && tar czf "$OUT/prof.tgz" prof-* metrics-* ./*.log) ;;
  detsizes)  # the detector input size table (issue 28.3): reads and frames/s of the OCR chain on the 1080p
             # sample at 1920x1088, 1280x736 and 960x544, and with motion regions on the gate sample
    [ -f samples/plates-1080.avi ] || python3 scripts/make_sample.py --out samples/plates-1080.avi --codec mjpg \
      --size 1920x1080 --frames "${FRAMES:-240}" >/dev/null || exit 5
    for side in 1920 1280 960; do
      timeout "${LIMIT:-280}" python3 scripts/bench_run.py --config "${CONFIG:-configs/examples/gpu.yaml}" \
        --video samples/plates-1080.avi --cameras ${CAMS:-1 8} --chain ocr --det-limit-side "$side" \
        --json "$OUT/detsizes.json" 2>&1 | grep -v "plugin EP" | tee -a "$OUT/detsizes.log"
    done
    [ -f samples/gate-1080.avi ] || python3 scripts/make_sample.py --scene gate --seconds 60 --out samples/gate-1080.avi \
      --codec mjpg --size 1920x1080 >/dev/null || exit 5
    timeout "${LIMIT:-280}" python3 scripts/bench_run.py --config "${CONFIG:-configs/examples/gpu.yaml}" \
      --video samples/gate-1080.avi --cameras ${CAMS:-1 8} --chain ocr --motion-region \
      --json "$OUT/detsizes.json" 2>&1 | grep -v "plugin EP" | tee -a "$OUT/detsizes.log" ;;
  explore)  # EXPLORE=script (carried with its folder): an exploration, not a product figure
    [ -f samples/plates-1080.avi ] || python3 scripts/make_sample.py --out samples/plates-1080.avi --codec mjpg \
      --size 1920x1080 --frames "${FRAMES:-240}" >/dev/null || exit 5
    timeout "${LIMIT:-280}" python3 "$EXPLORE" samples/plates-1080.avi 2>&1 | grep -v "plugin EP" | tee "$OUT/explore.log" ;;
  *) echo "part staged" ;;
esac
