#!/usr/bin/env bash
# Install everything (mosquitto included) and run the demo: edged reads the plates in the bundled
# sample video and publishes them to a local broker; the detections are shown as they arrive.
# Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-env.sh
. .venv/bin/activate
PORT=${EDGED_MQTT_PORT:-18830}
mkdir -p var
/usr/sbin/mosquitto -p "$PORT" >var/mosquitto.log 2>&1 &
BROKER=$!
trap 'kill $EDGED $SUB $BROKER 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM
sleep 0.5
python scripts/show_detections.py --port "$PORT" &
SUB=$!
EDGED_MQTT_PORT=$PORT edged run --config configs/edged.yaml &
EDGED=$!
echo "demo: edged running (status page http://127.0.0.1:${EDGED_HEALTH_PORT:-8089}/); Ctrl-C to stop"
wait $EDGED
