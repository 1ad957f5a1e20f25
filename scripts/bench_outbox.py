"""The outbox's store, measured: edged's segment log against SQLite (stdlib sqlite3, WAL) on this disk.

Three figures per store, each in a fresh process:
- events/s: appends with acks trailing 100 behind (a connected broker's in-flight window), unpaced;
- bytes written per event: /proc/self/io write_bytes (pages dirtied for the block layer, i.e. what
  reaches flash) over a paced run at 16 cameras x 15 fps = 240 events/s, broker connected;
- recovery after SIGKILL: a process appends a backlog (broker down) and SIGKILLs itself; the time a new
  process takes to open the store and read the first 100 pending events, and how many came back.

The SQLite store is a prototype with the Outbox's interface (append/pending/ack/close): one row per event,
one transaction per append and per ack (so a SIGKILL loses nothing, the segment log's contract),
journal_mode=WAL, synchronous=NORMAL (the counterpart of fsync: interval) or FULL (fsync: always).

Usage: python scripts/bench_outbox.py [--dir DIR] [--events 20000] [--seconds 10] [--backlog 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.config.schema import OutboxConfig  # noqa: E402
from edged.publish.outbox.store import Outbox  # noqa: E402

STORES = [
    "segments/interval",
    "sqlite-wal/normal",
    "sqlite-wal-1k/normal",
    "segments/always",
    "sqlite-wal/full",
]
RATE = 16 * 15  # 16 cameras at 15 fps, one event per frame (the worst case: every frame has detections)
WINDOW = 100  # acks trail appends by the publisher's max_inflight


class Store(Protocol):
    def append(self, topic: str, payload: dict[str, Any], camera: str = "", event_id: str = "") -> Any: ...
    def pending(self, limit: int = 100, after: int = 0) -> list[Any]: ...
    def ack(self, seq: int) -> bool: ...
    def close(self) -> None: ...


class SqliteOutbox:
    """Prototype outbox on SQLite in WAL mode (the alternative weighed in docs/operations.md)."""

    def __init__(self, directory: Path, synchronous: str, page_size: int = 4096) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(directory / "outbox.db", isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA page_size={page_size}")  # before WAL: fewer bytes per committed page
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT, camera TEXT, topic TEXT,"
            " ts REAL, payload TEXT)"
        )

    def append(self, topic: str, payload: dict[str, Any], camera: str = "", event_id: str = "") -> int:
        cur = self.db.execute(
            "INSERT INTO events (id, camera, topic, ts, payload) VALUES (?, ?, ?, ?, ?)",
            (event_id, camera, topic, time.time(), json.dumps(payload, separators=(",", ":"))),
        )
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = 100, after: int = 0) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT seq, id, camera, topic, ts, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()

    def ack(self, seq: int) -> bool:
        return self.db.execute("DELETE FROM events WHERE seq = ?", (seq,)).rowcount == 1

    def close(self) -> None:
        self.db.close()


def open_store(kind: str, directory: Path) -> Store:
    name, mode = kind.split("/")
    if name.startswith("sqlite-wal"):
        return SqliteOutbox(directory, mode.upper(), 1024 if name.endswith("-1k") else 4096)
    return Outbox(OutboxConfig(dir=directory, fsync=mode))  # type: ignore[arg-type]


def event(i: int) -> dict[str, Any]:
    """An event the size of a real one: a plate with its text, a car, a person (about 700 bytes)."""
    dets = [
        {
            "label": label,
            "score": 0.91,
            "box": [412.5, 233.0, 530.25, 268.5],
            "class_id": k,
            "track_id": i % 97,
            "children": {"text_rec": [{"label": "AB123CD", "score": 0.88, "box": [1.0, 2.0, 117.0, 34.0]}]},
        }
        for k, label in enumerate(("plate", "car", "person"))
    ]
    return {
        "schema": 1,
        "id": f"gate-01:cam{i % 16}:r1:{i}",
        "device": "gate-01",
        "camera": f"cam{i % 16}",
        "seq": i,
        "ts": time.time(),
        "frame": {"width": 1920, "height": 1080},
        "detections": dets,
        "latency_ms": {"text_det": 4.1, "text_rec": 2.2},
    }


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def run(store: Store, n: int, rate: float | None) -> float:
    """Append n events (paced at `rate`/s if given), acking each WINDOW appends later; elapsed seconds."""
    inflight: deque[int] = deque()
    t0 = time.perf_counter()
    for i in range(n):
        if rate is not None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        rec = store.append(f"edged/gate-01/cam{i % 16}/detections", event(i), f"cam{i % 16}", str(i))
        inflight.append(rec if isinstance(rec, int) else rec.seq)
        if len(inflight) > WINDOW:
            store.ack(inflight.popleft())
    while inflight:
        store.ack(inflight.popleft())
    return time.perf_counter() - t0


def worker(kind: str, what: str, directory: Path, n: int) -> dict[str, Any]:
    if what == "recover":
        t0 = time.perf_counter()
        store = open_store(kind, directory)
        first = store.pending(100)
        opened = time.perf_counter() - t0
        depth = len(store.pending(10**9))
        store.close()
        return {"recovery_s": opened, "recovered": depth, "first": len(first)}
    store = open_store(kind, directory)
    if what == "kill":  # a backlog (broker down), then SIGKILL: no close, no flush
        for i in range(n):
            store.append("edged/gate-01/cam0/detections", event(i), "cam0", str(i))
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "throughput":
        elapsed = run(store, n, None)
        store.close()
        return {"events_per_s": n / elapsed}
    before = write_bytes()
    elapsed = run(store, n, RATE)
    store.close()
    os.sync()
    return {"bytes_per_event": (write_bytes() - before) / n, "paced_s": elapsed}


def child(kind: str, what: str, directory: Path, n: int) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, __file__, "--worker", kind, what, str(directory), str(n)],
        capture_output=True,
        text=True,
    )
    if what == "kill":
        assert r.returncode == -signal.SIGKILL, r.stderr
        return {}
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--events", type=int, default=20000, help="events for the throughput run")
    ap.add_argument("--seconds", type=float, default=10, help="length of the paced run")
    ap.add_argument("--backlog", type=int, default=50000, help="events waiting at the SIGKILL")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, what, directory, n = args.worker
        print(json.dumps(worker(kind, what, Path(directory), int(n))))
        return
    base = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=args.dir))
    print(f"stores in {base}; event JSON {len(json.dumps(event(1)))} bytes; paced at {RATE} events/s")
    for kind in STORES:
        tag = kind.replace("/", "-")
        out = child(kind, "throughput", base / f"{tag}-t", args.events)
        out |= child(kind, "paced", base / f"{tag}-p", int(RATE * args.seconds))
        recovery = "same format as above"
        if kind.endswith("/interval") or kind.endswith("/normal"):  # the sync mode does not change a load
            child(kind, "kill", base / f"{tag}-k", args.backlog)
            out |= child(kind, "recover", base / f"{tag}-k", 0)
            assert out["recovered"] == args.backlog, out
            recovery = f"{out['recovery_s'] * 1000:6.0f} ms ({out['recovered']} recovered)"
        print(
            f"{kind:21s} {out['events_per_s']:7.0f} events/s  {out['bytes_per_event']:7.0f} B written/event  "
            f"paced run {out['paced_s']:5.1f} s for {args.seconds:g} s of events  "
            f"open after SIGKILL with {args.backlog} waiting: {recovery}"
        )


if __name__ == "__main__":
    main()
