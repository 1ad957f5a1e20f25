#!/usr/bin/env bash
# Prepare a development machine (Debian/Ubuntu): system packages, a virtualenv in .venv with edged
# and its dev tools, the bundled PP-OCR models and the sample video. Idempotent; used by the demo,
# the tests and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null || need+=(mosquitto-clients)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v openssl >/dev/null || need+=(openssl)
# tests/test_logs.py reads the JSON log lines with jq, as docs/operations.md shows.
command -v jq >/dev/null || need+=(jq)
# RTSP fault test: tests/support/rtsp_server.py serves a live stream with GStreamer's RTSP server (system python3)
for pkg in python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Headless Chromium renders the status page in tests/test_status_page.py (Debian's own build; no downloads).
command -v chromium >/dev/null || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the broker as a service on 1883; the demo and tests start their own.
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip runs only when what it installs may have changed: the stamp is a hash of pyproject.toml, this
# script and the interpreter, written after a good install. A missing stamp, a broken import, or an
# edged that is not this checkout's (the folder moved) installs again.
STAMP=.venv/.edged-setup-stamp
stamp=$( { cat pyproject.toml scripts/setup-env.sh scripts/constraints.txt; python -VV; } | sha256sum | cut -d' ' -f1 )
installed_ok() {
  python - <<'PY' 2>/dev/null
import importlib.util, pathlib
import cv2, edged, onnxruntime, paho.mqtt  # noqa: F401
assert pathlib.Path(edged.__file__).resolve().is_relative_to(pathlib.Path.cwd().resolve())
# Found, not imported (cheap): rapidocr (installed --no-deps) and the dev tools the tests and CI use.
dev = ("rapidocr", "rapidocr_onnxruntime", "pytest", "hypothesis", "mypy", "ruff", "jsonschema", "skimage", "cryptography", "onnx", "jinja2")
assert all(importlib.util.find_spec(m) is not None for m in dev)
PY
}
if [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ] && installed_ok; then
  echo "setup: .venv up to date (pyproject.toml unchanged since the last install)"
else
  rm -f "$STAMP"
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  echo "setup: installing edged and dev tools into .venv"
  # setuptools' "!! Editable installation ... !!" box (a BuildBackendWarning about import shadowing,
  # which is the point of an editable install here) is noise to someone starting the demo.
  export PYTHONWARNINGS="ignore:Editable installation"
  python -m pip install -q -c scripts/constraints.txt -e '.[cv,dev]' 2>&1 | grep -v -e '^WARNING: Location' -e 'pip as the .root. user' || true
  # rapidocr-onnxruntime only for its PP-OCRv4 recognizer: the "different model" of the shadow-check tests.
  python -m pip install -q --no-deps rapidocr==3.10.0 rapidocr-onnxruntime==1.4.4 tensorrt-stubs 2>&1 | grep -v -e '^WARNING: Location' -e 'pip as the .root. user' || true
  unset PYTHONWARNINGS
  python -c "import edged, cv2, onnxruntime, paho.mqtt" # fail loudly if the install is broken
  installed_ok && echo "$stamp" >"$STAMP"
fi
edged install-models --dest models >/dev/null
[ -f samples/plates.mp4 ] || edged make-sample --out samples/plates.mp4 >/dev/null
echo "setup: ready"
