"""Print edged's detections as they arrive over MQTT (used by scripts/demo.sh)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import paho.mqtt.client as mqtt


def texts(dets: list[dict[str, Any]]) -> list[str]:
    out = []
    for d in dets:
        kids = [k for stage in d.get("children", {}).values() for k in stage]
        out.extend(k["label"] for k in kids if k.get("label")) if kids else out.append(d["label"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--topic", default="edged/#")
    a = ap.parse_args()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/detections"):
            print(f"{msg.topic}: {msg.payload.decode(errors='replace')}", flush=True)
            return
        ev = json.loads(msg.payload)
        print(
            f"{ev['camera']} #{ev['seq']:<5} {ev['latency_ms'].get('total', 0):6.0f} ms  {texts(ev['detections'])}",
            flush=True,
        )

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe(a.topic, qos=1)
    c.connect(a.host, a.port)
    with contextlib.suppress(KeyboardInterrupt):
        c.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
