#!/usr/bin/env bash
# Fill the git-ignored .carry folder for scripts/device_run.sh, one device call at a time (development only).
#   bash scripts/device_carry.sh prepare   # once: download and split what the GPU machine lacks into
#                                          # .carry-parts/1 .. N, each under ~61 MB (one call's carry)
#   bash scripts/device_carry.sh K         # before call K: .carry = part K (then: run "bash scripts/device_run.sh stage")
# What travels: onnxruntime-gpu (CUDA 13, 255 MB, in pieces), pycuda and its pure deps (../shared/wheels),
# NVIDIA's PyNvVideoCodec, edged's pure dependencies, the PP-OCR models, and the 1080p H.264 plate sample
# with its truth plus small test videos (made here with ffmpeg: the GPU machine has none).
set -euo pipefail
cd "$(dirname "$0")/.."
P=.carry-parts
for d in /.carry/ /.carry-parts/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$P/pool" "$@"; }
if [ "${1:?prepare or K}" = prepare ]; then
  rm -rf "$P" && mkdir -p "$P/pool/videos"
  dl onnxruntime-gpu==1.31.1 pynvvideocodec==2.2.4 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types \
    typing-inspection typing-extensions paho-mqtt==2.2.0 prometheus-client
  cp ../shared/wheels/device-cp312/*.whl "$P/pool/"
  (cd "$P/pool" && ort=$(ls onnxruntime_gpu-*.whl) && sha256sum "$ort" > ort.SHA256 && split -b 52m -d -a 2 "$ort" ort.part- && rm "$ort")
  cp models/PP-OCRv6_det_small.onnx models/PP-OCRv6_rec_small.onnx "$P/pool/"
  [ -f samples/plates-1080.mp4 ] || "${PYTHON:-.venv/bin/python}" scripts/make_sample.py --codec h264 --size 1920x1080 --frames 240 --fps 25 --out samples/plates-1080.mp4
  cp samples/plates-1080.mp4 samples/plates-1080.json "$P/pool/videos/"
  v=$P/pool/videos; src="-f lavfi -i testsrc2=size=1920x1080:rate=25"
  ffmpeg -hide_banner -loglevel error -y $src -t 2 -c:v libx265 -preset ultrafast -pix_fmt yuv420p -tag:v hvc1 "$v/h265.mp4"
  ffmpeg -hide_banner -loglevel error -y $src -t 1 -c:v mjpeg -q:v 3 -pix_fmt yuvj420p "$v/mjpeg.avi"
  mkdir -p "$v/jpegs" && ffmpeg -hide_banner -loglevel error -y $src -t 0.4 -q:v 3 "$v/jpegs/f%03d.jpg"
  (cd "$v" && ln -sf plates-1080.mp4 h264.mp4)
  # Bin-pack the pool into calls of at most 61 MB; the videos folder travels whole, last.
  python3 - "$P" <<'PY'
import os, shutil, sys
root = sys.argv[1]; pool = os.path.join(root, "pool"); limit = 61 * 10**6
files = sorted((f for f in os.listdir(pool) if f != "videos"), key=lambda f: -os.path.getsize(os.path.join(pool, f)))
calls: list[list[str]] = []; sizes: list[int] = []
for f in files:
    s = os.path.getsize(os.path.join(pool, f))
    i = next((k for k, used in enumerate(sizes) if used + s <= limit), None)
    if i is None:
        calls.append([]); sizes.append(0); i = len(calls) - 1
    calls[i].append(f); sizes[i] += s
vsize = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(pool, "videos")) for f in fs)
i = next((k for k, used in enumerate(sizes) if used + vsize <= limit), None)
if i is None:
    calls.append([]); sizes.append(0); i = len(calls) - 1
calls[i].append("videos"); sizes[i] += vsize
for k, names in enumerate(calls, 1):
    d = os.path.join(root, str(k)); os.makedirs(d)
    for n in names:
        shutil.move(os.path.join(pool, n), os.path.join(d, n))
    print(f"call {k}: {sizes[k - 1] / 1e6:.1f} MB: {', '.join(sorted(names))}")
shutil.rmtree(pool)
PY
  exit 0
fi
[ -d "$P/$1" ] || { echo "no part $1 in $P (run: bash scripts/device_carry.sh prepare)"; exit 2; }
rm -rf .carry && cp -r "$P/$1" .carry && du -sh .carry
