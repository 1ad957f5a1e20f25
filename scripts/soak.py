"""Soak: `edged run` as a real process for hours against a real mosquitto, sampled every few minutes.

It starts a mosquitto of its own on a free local port, a QoS 1 subscriber that counts every event id it
receives, and `python -m edged run --stdout` on a copy of --config (default configs/edged.yaml: the demo,
one camera) pointed at that broker, a free health port and a state folder under --workdir, with the
camera's fps set by --fps. Every --every seconds it writes one sample of what a user would watch:
  rss_mb, fds, threads   the daemon's resident memory, open fds and threads (/proc/<pid>/status, fd/);
  produced               events the daemon made (lines on its --stdout sink: each event is written there
                         just before it is queued in the outbox);
  delivered              distinct event ids the subscriber got; lost = produced - delivered (a few in
                         flight at a sample are normal; at the end, after the flush, it must be 0);
  acked, outbox          edged_mqtt_published_total, edged_outbox_events and edged_outbox_bytes (/metrics);
  frames, fps            edged_frames_total and the frame rate since the last sample.
Samples go to --out (JSON lines) and to stdout as a Markdown table. At the end the daemon gets SIGTERM
(it flushes), then the last sample is taken.

With --tracemalloc N the daemon runs with Python's tracemalloc (N frames per trace) and writes, at every
sample, the allocation sites that grew most since the first sample to <workdir>/tracemalloc.txt: where a
climbing RSS comes from. (It costs CPU: use it to explain a climb, not for the figures.)

Usage: nice -n 19 python scripts/soak.py --hours 2 --every 600 --fps 5 --workdir /tmp/edged-soak
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _broker import MOSQUITTO, free_port, mosquitto  # scripts/_broker.py

from edged.config.yaml_source import parse_yaml

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("t_min", "rss_mb", "fds", "threads", "produced", "delivered", "lost", "acked", "outbox", "fps")

# Run inside the daemon's interpreter with --tracemalloc: a thread that dumps the top growth.
TRACEMALLOC_RUNNER = """
import sys, threading, time, tracemalloc
frames, every, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sys.argv = ["edged", *sys.argv[4:]]
tracemalloc.start(frames)
def dump():
    first = None
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")])
        if first is None:
            first = snap
            continue
        top = snap.compare_to(first, "traceback")[:15]
        with open(out, "a") as f:
            cur, peak = tracemalloc.get_traced_memory()
            f.write(f"=== {time.strftime('%H:%M:%S')} traced {cur / 1e6:.1f} MB (peak {peak / 1e6:.1f} MB)\\n")
            for stat in top:
                f.write(f"{stat.size_diff / 1e3:+.1f} kB ({stat.count_diff:+d} blocks)\\n")
                for line in stat.traceback.format()[-8:]:
                    f.write(f"    {line}\\n")
threading.Thread(target=dump, name="soak-tracemalloc", daemon=True).start()
from edged.cli.main import main
raise SystemExit(main())
"""


class Counter:
    """A QoS 1 subscriber to every topic that keeps the set of detection event ids it received."""

    def __init__(self, port: int) -> None:
        self.ids: set[str] = set()
        self.received = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="edged-soak", clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/detections"):
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event_id = json.loads(msg.payload)["id"]
            with self._lock:
                self.ids.add(event_id)
                self.received += 1

    def delivered(self) -> set[str]:
        with self._lock:
            return set(self.ids)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def proc_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": round(rss / 1024, 1), "threads": threads, "fds": fds}


def scrape(port: int) -> dict[str, float]:
    """Sums of the samples of a few metrics (over their labels)."""
    want = {
        "edged_mqtt_published_total": "acked",
        "edged_outbox_events": "outbox",
        "edged_outbox_bytes": "outbox_bytes",
        "edged_frames_total": "frames",
        "edged_events_total": "events",
    }
    out = dict.fromkeys(want.values(), 0.0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name in want:
            with contextlib.suppress(ValueError):
                out[want[name]] += float(line.rsplit(" ", 1)[1])
    return out


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def produced(stdout: Path) -> list[str]:
    ids = []
    for line in stdout.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            ids.append(json.loads(line)["id"])
    return ids


def write_config(src: Path, work: Path, broker: int, health: int, fps: float) -> Path:
    cfg, _located = parse_yaml(src.read_text(), str(src), dict(os.environ))  # edged's YAML (`on:` is a key)
    base = src.resolve().parent

    def rel(p: str) -> str:
        return str((base / p).resolve()) if not os.path.isabs(p) else p

    for model in cfg.get("models", {}).values():
        model["path"] = rel(model["path"])
    for cam in cfg.get("cameras", {}).values():
        if cam["source"].startswith("file://"):
            cam["source"] = "file://" + rel(cam["source"][len("file://") :])
        cam["fps"] = fps
    cfg["state_dir"] = str(work / "state")
    mqtt_cfg = cfg.setdefault("mqtt", {})
    mqtt_cfg.update({"host": "127.0.0.1", "port": broker})
    mqtt_cfg.setdefault("outbox", {})["dir"] = str(work / "outbox")
    cfg.setdefault("health", {}).update({"bind": "127.0.0.1", "port": health})
    out = work / "edged.yaml"
    out.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/edged.yaml")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--every", type=float, default=600.0, help="seconds between samples")
    ap.add_argument("--fps", type=float, default=5.0, help="every camera's fps")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edged-soak"))
    ap.add_argument("--out", type=Path, help="JSON lines of the samples (default <workdir>/soak.jsonl)")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    ap.add_argument("--mosquitto", default=MOSQUITTO)
    args = ap.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = args.out or work / "soak.jsonl"
    broker = contextlib.ExitStack()
    broker_port, health_port = broker.enter_context(mosquitto(work, args.mosquitto)), free_port()
    cfg = write_config(args.config, work, broker_port, health_port, args.fps)
    counter = Counter(broker_port)
    stdout = work / "events.jsonl"
    run = ["run", "--stdout", "--config", str(cfg)]
    if args.tracemalloc:
        tm = str(work / "tracemalloc.txt")
        cmd = [sys.executable, "-c", TRACEMALLOC_RUNNER, str(args.tracemalloc), str(args.every), tm, *run]
    else:
        cmd = [sys.executable, "-m", "edged", *run]
    with stdout.open("wb") as so, (work / "edged.log").open("wb") as se:
        daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=so, stderr=se)
    print(
        f"soak: edged pid {daemon.pid}, broker :{broker_port}, health :{health_port}, work {work}", flush=True
    )
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    spawned = time.monotonic()
    while daemon.poll() is None and time.monotonic() - spawned < 900 and not ready(health_port):
        time.sleep(1)  # samples start once the models are loaded and warmed (/readyz 200)
    start = time.monotonic()
    print(f"soak: ready after {start - spawned:.0f} s", flush=True)
    last_frames, last_t = 0.0, start

    def sample(final: bool = False) -> dict[str, Any]:
        nonlocal last_frames, last_t
        now = time.monotonic()
        row: dict[str, Any] = {"t_min": round((now - start) / 60, 1), "final": final}
        if daemon.poll() is None:
            row.update(proc_figures(daemon.pid))
            row.update(scrape(health_port))
        made = produced(stdout)
        got = counter.delivered()
        row.update(produced=len(made), delivered=len(got & set(made)), lost=len(set(made) - got))
        frames = row.get("frames", last_frames)
        row["fps"] = round((frames - last_frames) / (now - last_t), 2) if now - last_t > 1 else 0.0
        last_frames, last_t = frames, now
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS) + " |", flush=True)
        return row

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sample()
        deadline = start + args.hours * 3600
        while not stop.is_set() and daemon.poll() is None and time.monotonic() < deadline:
            stop.wait(min(args.every, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < deadline and not stop.is_set():
                sample()
        before = sample()  # the last one under load
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        time.sleep(2)  # the last PUBACKed messages reach the subscriber
        last = sample(final=True)
        print(
            f"soak: {before['t_min']:.0f} min, edged exited {code}; produced {last['produced']}, "
            f"delivered {last['delivered']}, lost {last['lost']}",
            flush=True,
        )
        return 0 if code == 0 and last["lost"] == 0 else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()
        counter.stop()
        broker.close()


if __name__ == "__main__":
    raise SystemExit(main())
