#!/usr/bin/env bash
# Install everything (mosquitto included) and run the demo: edged reads the plates in the bundled
# sample video and publishes them to a local broker; the detections are shown as they arrive.
# Ctrl-C stops it: edged first (it finishes in-flight frames and flushes its outbox to the broker), then
# the viewer and the broker. EDGED_DEMO_SETUP=0 skips scripts/setup-env.sh (an environment that already
# has edged, e.g. the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${EDGED_DEMO_SETUP:-1}" != 0 ]; then
  ./scripts/setup-env.sh
  . .venv/bin/activate
fi
PORT=${EDGED_MQTT_PORT:-18830}
mkdir -p var
EDGED="" SUB=""
stop() {
  trap - EXIT INT TERM
  if [ -n "$EDGED" ]; then
    kill -TERM "$EDGED" 2>/dev/null || true
    wait "$EDGED" 2>/dev/null || true
  fi
  if [ -n "$SUB" ]; then kill "$SUB" 2>/dev/null || true; fi
  kill "$BROKER" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "demo: stopped"
}
# The broker and the viewer run in sessions of their own (setsid), so the terminal's Ctrl-C reaches
# only edged and this script; stop() then ends them after edged has flushed.
setsid /usr/sbin/mosquitto -p "$PORT" >var/mosquitto.log 2>&1 &
BROKER=$!
trap stop EXIT INT TERM
sleep 0.5
setsid python scripts/show_detections.py --port "$PORT" &
SUB=$!
EDGED_MQTT_PORT=$PORT edged run --config configs/edged.yaml &
EDGED=$!
echo "demo: edged running (status page http://127.0.0.1:${EDGED_HEALTH_PORT:-8089}/); Ctrl-C to stop"
wait "$EDGED" || true
