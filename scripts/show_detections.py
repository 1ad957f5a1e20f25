"""Print edged's detections as they arrive over MQTT (used by scripts/demo.sh): one line per event
under a header, with what the later stages read, or "(nothing read)" when they read nothing."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import paho.mqtt.client as mqtt

HEADER = f"{'camera':<12} {'frame':>7} {'latency':>8}  read"
NOTHING = "(nothing read)"


def reads(event: dict[str, Any]) -> str:
    """The texts read in an event; a detector-only chain shows its labels instead."""
    dets = event.get("detections", [])
    texts = [
        k["label"] for d in dets for kids in d.get("children", {}).values() for k in kids if k.get("label")
    ]
    if texts:
        return ", ".join(texts)
    # latency_ms has one key per stage (and "total"): more than one stage means something should have read.
    stages = [k for k in event.get("latency_ms", {}) if k != "total"]
    if len(stages) > 1 or any(d.get("children") for d in dets):
        return NOTHING
    return ", ".join(str(d.get("label", "?")) for d in dets) or NOTHING


def line(event: dict[str, Any]) -> str:
    total = event.get("latency_ms", {}).get("total", 0.0)
    return f"{event.get('camera', '?'):<12} {'#' + str(event.get('seq', '?')):>7} {total:5.0f} ms  {reads(event)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="broker host")
    ap.add_argument("--port", type=int, default=1883, help="broker port")
    ap.add_argument("--topic", default="edged/#", help="topic filter to subscribe to")
    a = ap.parse_args()
    print(HEADER, flush=True)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/detections"):
            body = msg.payload.decode(errors="replace")
            print(f"{msg.topic}: {body if len(body) < 200 else body[:200] + '...'}", flush=True)
            return
        try:
            ev = json.loads(msg.payload)
        except ValueError:
            print(f"{msg.topic}: not JSON ({len(msg.payload)} bytes)", flush=True)
            return
        print(line(ev), flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe(a.topic, qos=1)
    c.connect(a.host, a.port)
    with contextlib.suppress(KeyboardInterrupt):
        c.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
