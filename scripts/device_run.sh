#!/usr/bin/env bash
# GPU tests and benchmarks on the lent device machine (development only; see docs/gpu.md).
# Usage: bash scripts/device_run.sh STEP
#
# What the machine lacks travels in the git-ignored folder .carry (one call carries at most ~60 MB), filled
# here by scripts/device_carry.sh before each call. The machine keeps /tmp only while it stays warm (~30 s
# after a call), so the calls go back to back:
#   stage      copy .carry/* into /tmp/stage (the parts of onnxruntime-gpu, wheels, models, videos);
#   setup      assemble and install what was staged into /tmp/site, copy models and videos into place;
# then, on the same warm machine (each step runs `setup` first if it has not run):
#   tests      the GPU tests (tests/gpu);
#   run        scripts/bench_run.py: `edged run` on CAMS cameras (default "1 16") of VIDEO (default the 1080p
#              H.264 plate sample) for CHAINS (default ocr), DECODE (default "cpu gpu") side by side, beside
#              the engines-only rate; FP16=text_det, INFLIGHT=N as before;
#   capacity   scripts/bench_capacity.py: real-time capacity, CAMS cameras (default "8 16") at the video's
#              rate for SECONDS (default 30), DECODE side by side;
#   chain      scripts/compare_paths.py (CPU vs GPU path on identical frames);
#   explore    EXPLORE=script VIDEO: an exploration script (e.g. scripts/explore_fp16.py), not a product figure.
# Results go to $OUT (the tool brings back at most 8 files).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
step=${1:?step}
mkdir -p /tmp/stage /tmp/site "$OUT"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
setup() {
  [ -f /tmp/stage/.done ] && return 0
  cd /tmp/stage || return 3
  if ls ort.part-* >/dev/null 2>&1; then
    whl=$(cut -d' ' -f3 ort.SHA256)
    cat ort.part-* > "/tmp/$whl" && (cd /tmp && sha256sum -c /tmp/stage/ort.SHA256) || return 3
    pipi "/tmp/$whl" || return 4
  fi
  ls ./*.whl >/dev/null 2>&1 && { pipi ./*.whl || return 4; }
  if ls cv2-*.tar.xz >/dev/null 2>&1; then  # OpenCV with CUDA (cv2.cuda path; its video input has no FFmpeg)
    mkdir -p /tmp/cv2cuda /tmp/ocv/site && tar xJf cv2-*.tar.xz -C /tmp/cv2cuda && ln -sfn /tmp/cv2cuda/cv2 /tmp/ocv/site/cv2
  fi
  mkdir -p /tmp/models /tmp/videos && cp ./*.onnx /tmp/models/ 2>/dev/null
  cp -r videos/. /tmp/videos/ 2>/dev/null
  cd - >/dev/null && touch /tmp/stage/.done
}
case $step in
  stage) cp -r .carry/. /tmp/stage/ && ls -la /tmp/stage && exit 0 ;;
  *) setup || { echo "setup failed ($?): staged parts missing? (the machine forgets /tmp ~30 s after a call)"; exit 3; } ;;
esac
export PYTHONPATH=/tmp/site:$PWD
[ -n "${CV2CUDA:-}" ] && [ -d /tmp/cv2cuda ] && export PYTHONPATH=/tmp/cv2cuda:$PYTHONPATH
export EDGED_MODELS_DIR=/tmp/models EDGED_VIDEOS=/tmp/videos
mkdir -p models samples && cp /tmp/models/*.onnx models/ 2>/dev/null
cp /tmp/videos/plates-1080.* samples/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
VIDEO=${VIDEO:-samples/plates-1080.mp4}
case $step in
  setup) python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" ;;
  tests) python3 -m pytest -m gpu -p no:cacheprovider -rs -s -q ${TESTS:-tests/gpu} 2>&1 | tee "$OUT/tests.log" | tail -40 ;;
  run)
    for chain in ${CHAINS:-ocr}; do
      timeout "${LIMIT:-540}" python3 scripts/bench_run.py --config "${CONFIG:-configs/examples/gpu.yaml}" \
        --video "$VIDEO" --cameras ${CAMS:-1 16} --decode ${DECODE:-cpu gpu} --chain "$chain" --json "$OUT/run.json" \
        ${FP16:+--fp16 $FP16} ${INFLIGHT:+--frames-in-flight $INFLIGHT} 2>&1 | grep -v "plugin EP" | tee -a "$OUT/run-$chain.log"
    done
    (cd /tmp/edged-bench && tar czf "$OUT/logs.tgz" ./*.log) ;;
  capacity)
    timeout "${LIMIT:-540}" python3 scripts/bench_capacity.py --config "${CONFIG:-configs/examples/gpu.yaml}" \
      --video "$VIDEO" --cameras ${CAMS:-8 16} --decode ${DECODE:-cpu gpu} --seconds "${SECONDS_RT:-30}" \
      --json "$OUT/capacity.json" 2>&1 | grep -v "plugin EP" | tee "$OUT/capacity.log"
    (cd /tmp/edged-capacity && tar czf "$OUT/capacity-logs.tgz" ./*.log) ;;
  chain)
    timeout 200 python3 scripts/compare_paths.py --config configs/examples/gpu.yaml --video "$VIDEO" --frames 60 \
      2>&1 | grep -v -e "plugin EP" -e '^\[' | tee "$OUT/compare.log" ;;
  explore)  # EXPLORE=script (carried in .carry): an exploration, not a product figure
    timeout "${LIMIT:-540}" python3 "$EXPLORE" "$VIDEO" 2>&1 | grep -v "plugin EP" | tee "$OUT/explore.log" ;;
  *) echo "unknown step $step"; exit 2 ;;
esac
