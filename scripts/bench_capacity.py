"""Real-time capacity: how many cameras one machine keeps up with, as cameras send (a 1080p H.264 file
played at its own rate and looped, per camera), with GPU and CPU decoding side by side.

For each camera count and decode mode it starts `edged run --stdout` on N such cameras, waits until it is
ready and `--warm` seconds more, then over `--seconds` reads from outside:
  kept        frames the chains finished / frames the cameras delivered (edged_frame_latency_seconds_count
              over edged_frames_total + stale drops, from /metrics): 1.0 = every frame processed;
  latency     capture -> event of the events in the window (their latency_ms.total), p50 / p99;
  GPU busy    nvidia-smi's utilization.gpu, mean over the window; host CPU busy (/proc/stat) and the
              daemon's CPU ms per delivered frame (/proc).
A count keeps up when kept >= 0.99 and p99 <= 150 ms; the table ends with the largest such count per
decode mode.

Usage: python scripts/bench_capacity.py --config configs/examples/gpu.yaml --video samples/plates-1080.mp4 \\
           --cameras 8 12 16 --decode cpu gpu [--seconds 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_run import GpuBusy, busy_share, cpu_jiffies, get, gpu_share, tree_cpu, write_config  # noqa: E402

KEEP, P99_MS = 0.99, 150.0


def counters(port: int) -> dict[str, float]:
    """Frames delivered by the cameras and finished by the chains, summed over cameras (/metrics)."""
    out = {"done": 0.0, "taken": 0.0, "stale": 0.0}
    for line in get(port, "/metrics").splitlines():
        if line.startswith("edged_frame_latency_seconds_count"):
            out["done"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edged_frames_total{"):
            out["taken"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edged_frames_dropped_total{") and 'reason="stale"' in line:
            out["stale"] += float(line.rsplit(" ", 1)[1])
    return out


def measure(cfg: Path, port: int, warm_s: float, seconds: float, timeout_s: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--config", str(cfg), "--stdout"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    events: list[tuple[float, float]] = []  # (arrival, capture -> event ms)
    log: list[str] = []
    ready = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append((time.monotonic(), float(json.loads(line)["latency_ms"]["total"])))

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "startup summary" in line:
                ready.set()

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for t in readers:
        t.start()
    gpu = GpuBusy()
    t_spawn = time.monotonic()
    try:
        while not ready.wait(0.5):
            if proc.poll() is not None or time.monotonic() - t_spawn > timeout_s:
                raise RuntimeError("the daemon never became ready:\n" + "".join(log[-30:]))
        startup = time.monotonic() - t_spawn
        time.sleep(warm_s)
        t0, c0, j0, p0 = time.monotonic(), counters(port), cpu_jiffies(), tree_cpu(proc.pid)
        time.sleep(seconds)
        t1, c1, j1, p1 = time.monotonic(), counters(port), cpu_jiffies(), tree_cpu(proc.pid)
    finally:
        gpu.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    (cfg.parent / f"{cfg.stem}.log").write_text("".join(log))
    delivered = (c1["taken"] - c0["taken"]) + (c1["stale"] - c0["stale"])
    done = c1["done"] - c0["done"]
    lat = sorted(ms for t, ms in events if t0 <= t <= t1)
    host = busy_share([(t0, *j0), (t1, *j1)], t0, t1)
    return {
        "startup_s": round(startup, 1),
        "delivered_fps": round(delivered / (t1 - t0), 1),
        "processed_fps": round(done / (t1 - t0), 1),
        "kept": round(done / delivered, 4) if delivered else None,
        "latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "latency_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else None,
        "gpu_busy": gpu_share(gpu.samples, t0, t1),
        "host_cpu_busy": None if host is None else round(host, 3),
        "cpu_ms_per_frame": round(((p1[0] + p1[1]) - (p0[0] + p0[1])) * 1000 / max(delivered, 1.0), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/examples/gpu.yaml"), help="models come from here")
    ap.add_argument("--video", default=str(ROOT / "samples/plates-1080.mp4"))
    ap.add_argument("--cameras", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--decode", nargs="+", choices=("auto", "cpu", "gpu"), default=["cpu", "gpu"])
    ap.add_argument("--chain", choices=("ocr", "det"), default="ocr")
    ap.add_argument("--seconds", type=float, default=30.0, help="the measured window")
    ap.add_argument("--warm", type=float, default=5.0, help="seconds after ready before the window")
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--timeout", type=float, default=180, help="most seconds to become ready")
    ap.add_argument("--out", default="/tmp/edged-capacity")
    ap.add_argument("--json", help="append the results here (one JSON object per run)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import cv2

    cap = cv2.VideoCapture(a.video)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    print(
        f"video {Path(a.video).name}: {w}x{h} at {fps:g} fps, looped, realtime; chain {a.chain}", flush=True
    )
    rows = []
    for decode in a.decode:
        for n in a.cameras:
            cfg = write_config(
                Path(a.config), Path(a.video), (w, h), n, a.chain, a.port, out, decode=decode, realtime=True
            )
            row = {
                "cameras": n,
                "decode": decode,
                "chain": a.chain,
                **measure(cfg, a.port, a.warm, a.seconds, a.timeout),
            }
            row["keeps_up"] = bool(
                row["kept"] is not None and row["kept"] >= KEEP and (row["latency_p99_ms"] or 1e9) <= P99_MS
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(
        "\n| decode | cameras | delivered fps | processed fps | kept | p50 / p99 ms | GPU busy | host CPU busy | CPU ms/frame | keeps up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['decode']} | {r['cameras']} | {r['delivered_fps']} | {r['processed_fps']} | {r['kept']} | "
            f"{r['latency_p50_ms']} / {r['latency_p99_ms']} | {r['gpu_busy']} | {r['host_cpu_busy']} | "
            f"{r['cpu_ms_per_frame']} | {'yes' if r['keeps_up'] else 'no'} |"
        )
    for decode in a.decode:
        ok = [r["cameras"] for r in rows if r["decode"] == decode and r["keeps_up"]]
        print(f"decode {decode}: keeps up with {max(ok) if ok else 'none'} of {a.cameras} cameras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
