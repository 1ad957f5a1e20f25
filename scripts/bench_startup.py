#!/usr/bin/env python3
"""Start-up and memory of `edged run` as a user runs it: spawn -> /healthz -> READY=1 -> /readyz 200,
resident memory (VmRSS) after ready and while it runs, and the time SIGTERM takes.

    python scripts/bench_startup.py [--config configs/edged.yaml] [--runs 3] [--cache warm|cold]
                                    [--run-s 60] [--set models.text_det.batching.warm_up=all ...]

The config is copied with MQTT off (unless --mqtt), the health port moved to a free one, file:// sources
and model paths made absolute, and the engine cache put in a temporary folder: `cold` empties it before
every run (a first start: models serve as shipped while their optimized copies build in the background),
`warm` builds it once with `edged build-engine` first. `--set KEY=VALUE` overrides one config value
(dotted path, YAML value). It prints one line per run and the medians, as JSON with --json.
Measure the peer's memory with `scripts/bench_chain.py` (RapidOCR); machine, date and command go into
docs/benchmarks.md beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get(port: int, path: str) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def prepare(src: Path, tmp: Path, overrides: list[str], mqtt: bool) -> tuple[Path, int, Path]:
    cfg = yaml.safe_load(src.read_text())
    base = src.parent
    port = free_port()
    cache = tmp / "engines"
    if not mqtt:
        cfg["mqtt"] = {"enabled": False}
    cfg["health"] = {**(cfg.get("health") or {}), "port": port, "bind": "127.0.0.1"}
    cfg["state_dir"] = str(tmp / "state")
    for m in cfg.get("models", {}).values():
        m["path"] = str((base / m["path"]).resolve())
        m.setdefault("tensorrt", {})["cache_dir"] = str(cache)
    for cam in cfg.get("cameras", {}).values():
        s = cam["source"]
        if s.startswith("file://") and not s.startswith("file:///"):
            cam["source"] = "file://" + str((base / s[len("file://") :]).resolve())
        for st in cam.get("chain", []):  # YAML 1.1 reads the key `on` as True
            if True in st:
                st["on"] = st.pop(True)
    for item in overrides:
        key, value = item.split("=", 1)
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path, port, cache


class Notify:
    """A real sd_notify socket: when READY=1 arrived."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.ready_at: float | None = None
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            if b"READY=1" in data.split(b"\n") and self.ready_at is None:
                self.ready_at = time.monotonic()

    def close(self) -> None:
        self._stop = True
        self._t.join(1)
        self.sock.close()


def one_run(config: Path, port: int, run_s: float, tmp: Path, tree: Path = ROOT) -> dict[str, Any]:
    notify = Notify(Path(tempfile.mkdtemp(prefix="edn-")))
    log = (tmp / "edged.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--config", str(config)],
        cwd=tree,  # `python -m edged` imports the edged of this tree
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
    )
    out: dict[str, Any] = {"healthz_s": None, "ready_s": None}
    try:
        while time.monotonic() - t0 < 300 and proc.poll() is None:
            if out["healthz_s"] is None and get(port, "/healthz")[0] == 200:
                out["healthz_s"] = round(time.monotonic() - t0, 2)
            if out["healthz_s"] is not None and get(port, "/readyz")[0] == 200:
                out["ready_s"] = round(time.monotonic() - t0, 2)
                break
            time.sleep(0.02)
        if notify.ready_at is not None:
            out["ready1_s"] = round(notify.ready_at - t0, 2)
        out["rss_ready_mb"] = round(rss_mb(proc.pid))
        peak, end = out["rss_ready_mb"], time.monotonic() + run_s
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(1)
            peak = max(peak, round(rss_mb(proc.pid)))
        out["rss_end_mb"], out["rss_peak_mb"] = round(rss_mb(proc.pid)), peak
        status = json.loads(get(port, "/stats")[1] or b"{}")
        out["frames"] = sum(c.get("frames_processed", 0) for c in status.get("cameras", {}).values())
        out["memory"] = {n: m.get("memory") for n, m in status.get("models", {}).items() if m.get("memory")}
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out["exit"] = proc.wait(60)
        out["stop_s"] = round(time.monotonic() - t_stop, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        log.close()
    out["aborted"] = "terminate called" in (tmp / "edged.log").read_text(errors="replace")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/edged.yaml"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm")
    ap.add_argument("--run-s", type=float, default=60.0, help="seconds to run after ready (RSS sampled)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--mqtt", action="store_true", help="keep the config's MQTT section")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--tree",
        default=str(ROOT),
        help="the source tree whose edged runs (e.g. an older commit: git archive REV | tar -x -C DIR)",
    )
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edged-startup-"))
    try:
        config, port, cache = prepare(Path(a.config).resolve(), tmp, a.set, a.mqtt)
        if a.cache == "warm":
            subprocess.run(
                [sys.executable, "-m", "edged", "build-engine", "--config", str(config)],
                cwd=a.tree,
                check=True,
                capture_output=True,
            )
        runs = []
        for i in range(a.runs):
            if a.cache == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            r = one_run(config, port, a.run_s, tmp, Path(a.tree))
            runs.append(r)
            if not a.json:
                print(f"run {i + 1}: {json.dumps(r)}", flush=True)
        keys = ("healthz_s", "ready1_s", "ready_s", "rss_ready_mb", "rss_end_mb", "rss_peak_mb", "stop_s")
        med = {
            k: statistics.median([r[k] for r in runs if r.get(k) is not None] or [float("nan")]) for k in keys
        }
        load = os.getloadavg()
        summary = {"cache": a.cache, "runs": len(runs), "median": med, "loadavg": [round(x, 1) for x in load]}
        print(json.dumps({"runs": runs, **summary}) if a.json else f"median: {json.dumps(summary)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
