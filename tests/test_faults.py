"""Fault injection on real processes: broker SIGKILL, edged SIGKILL with the broker down, the outbox's
disk full (a 2 MiB tmpfs in a private mount namespace), a source that vanishes and returns, a stage that
hangs under the systemd watchdog.

Each test prints its figures (run `pytest -s tests/test_faults.py`). EDGED_FAULT_SECONDS (default 8)
sets how long each fault lasts; the full-length run uses 60 (see docs/operations.md).

Counting. Every event edged produces is also written to its --stdout sink just before it is queued in
the outbox, so the stdout lines are the events produced, in production order. A persistent subscriber
(clean_session=False, QoS 1) on a broker with persistence receives them; "delivered" is the set of ids
it got, "duplicates" the extra copies (at-least-once), "lost" produced minus delivered.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edged.publish.outbox.store import HEADER, Outbox
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    FAULT_S,
    EdgedProcess,
    NotifySocket,
    camera,
    http_get,
    metric,
    small_sample,
    stats,
    up,
    wait_until,
    write_config,
)
from tests.support.rtsp import RtspServer, rtsp_server_missing

DETECTIONS = "edged/test/+/detections"


def figures(
    name: str, produced: list[dict[str, Any]], sub: Subscriber, allowed: set[str] | None = None
) -> dict[str, Any]:
    """Compare what edged produced with what the subscriber got; print and return the figures."""
    allowed = allowed or set()
    got = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/detections")]
    ids = Counter(e["id"] for e in got)
    produced_ids = [e["id"] for e in produced]
    lost = [i for i in produced_ids if i not in ids and i not in allowed]
    extra = set(ids) - set(produced_ids)
    out = {
        "produced": len(produced_ids),
        "delivered": len(ids),
        "received": len(got),
        "duplicates": len(got) - len(ids),
        "lost": len(lost),
        "unknown": len(extra),
        "never_queued": len(allowed - set(ids)),
    }
    print(f"\n[{name}] fault {FAULT_S:g} s: " + ", ".join(f"{k} {v}" for k, v in out.items()))
    assert len(set(produced_ids)) == len(produced_ids), "edged produced the same id twice"
    assert not lost, f"lost events: {lost[:10]}"
    assert not extra, f"events nobody produced: {sorted(extra)[:10]}"
    # Per camera, the first copy of each event arrives in production order.
    for cam in {e["camera"] for e in produced}:
        want = [e["id"] for e in produced if e["camera"] == cam and e["id"] in ids]
        first: list[str] = []
        for e in got:
            if e["camera"] == cam and e["id"] not in first:
                first.append(e["id"])
        assert first == want, f"camera {cam}: events out of order"
    return out


def delivered_all(sub: Subscriber, produced: list[dict[str, Any]], allowed: set[str] | None = None) -> bool:
    want = {e["id"] for e in produced} - (allowed or set())
    return want <= {
        json.loads(m.payload)["id"] for m in list(sub.messages) if m.topic.endswith("/detections")
    }


def fault_config(tmp_path: Path, broker: Mosquitto, health: int) -> Path:
    video = small_sample(tmp_path)
    return write_config(
        tmp_path,
        {"a": camera(video, fps=5), "b": camera(video, fps=5)},
        health_port=health,
        broker_port=broker.port,
    )


def outbox_ids(directory: Path) -> set[str]:
    """Ids of every record in the outbox segments on disk (acknowledged or not)."""
    ids: set[str] = set()
    for seg in directory.glob("*.seg"):
        data = seg.read_bytes()
        records, _bad = Outbox._scan(data)
        for _seq, _ts, offset, length in records:
            ids.add(json.loads(data[offset + HEADER.size : offset + length])["id"])
    return ids


def test_broker_killed_while_publishing(tmp_path: Path, persistent_mosquitto: Mosquitto) -> None:
    broker = persistent_mosquitto
    health = free_port()
    config = fault_config(tmp_path, broker, health)
    sub = Subscriber(broker, DETECTIONS, persistent=True).start()
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        assert sub.wait_for(lambda m: len(m) >= 10, 30), proc.text()
        broker.kill()
        time.sleep(FAULT_S)
        waiting = metric(health, "edged_outbox_events") or 0
        broker.start()
        t_up = time.monotonic()
        assert waiting > 0, "no event waited in the outbox while the broker was down"
        # The backlog drains and live events flow again.
        assert wait_until(lambda: (metric(health, "edged_outbox_events") or 0) <= 2, 60), proc.text()
        drained = time.monotonic() - t_up
        n = len(proc.events())
        assert wait_until(lambda: len(proc.events()) >= n + 10, 30)
        assert proc.stop() == 0, proc.text()
        produced = proc.events()
        assert sub.wait_for(lambda m: delivered_all(sub, produced), 30)
        print(
            f"\n{waiting:.0f} events queued while the broker was down; backlog drained {drained:.1f} s after"
        )
        f = figures("broker SIGKILL", produced, sub)
        assert f["produced"] >= 20
    finally:
        sub.stop()
        proc.kill()
    assert "Traceback" not in proc.text()


def test_edged_killed_while_broker_down(tmp_path: Path, persistent_mosquitto: Mosquitto) -> None:
    broker = persistent_mosquitto
    health = free_port()
    config = fault_config(tmp_path, broker, health)
    sub = Subscriber(broker, DETECTIONS, persistent=True).start()
    first = EdgedProcess(config, tag="-1")
    second: EdgedProcess | None = None
    try:
        assert wait_until(lambda: up(health), 60), first.text()
        assert sub.wait_for(lambda m: len(m) >= 10, 30), first.text()
        broker.kill()
        time.sleep(FAULT_S)
        waiting = metric(health, "edged_outbox_events") or 0
        first.kill()  # SIGKILL mid-stream: no flush, no goodbye
        assert waiting > 0
        # An event written to stdout in the instant before the kill may never have reached the outbox:
        # it was never queued, so it cannot be owed. Only a camera's very last event can be in that state.
        on_disk = outbox_ids(tmp_path / "outbox")
        produced_1 = first.events()
        last = {cam: [e["id"] for e in produced_1 if e["camera"] == cam][-1] for cam in ("a", "b")}
        never_queued = {i for i in last.values() if i not in on_disk}
        broker.start()
        second = EdgedProcess(config, tag="-2")
        assert wait_until(lambda: up(health), 60), second.text()
        assert "unacknowledged events to replay" in second.text()
        assert wait_until(lambda: delivered_all(sub, produced_1, never_queued), 60), second.text()
        n = len(second.events())
        assert wait_until(lambda: len(second.events()) >= n + 10, 30)
        assert second.stop() == 0, second.text()
        produced = produced_1 + second.events()
        assert sub.wait_for(lambda m: delivered_all(sub, produced, never_queued), 30)
        print(f"\n{waiting:.0f} events waiting in the outbox at the SIGKILL")
        f = figures("edged SIGKILL, broker down", produced, sub, never_queued)
        assert f["produced"] >= 20
    finally:
        sub.stop()
        first.kill()
        if second is not None:
            second.kill()
    assert "Traceback" not in second.text()


TMPFS_BYTES = 2 * 1024 * 1024


def private_tmpfs_missing(probe: Path) -> str | None:
    """Why a tmpfs cannot be mounted in a private mount namespace here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe.mkdir(exist_ok=True)
    r = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            str(probe),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}"
    return None


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem is full; returns the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return filler


def test_outbox_disk_full_window_loses_nothing(tmp_path: Path, persistent_mosquitto: Mosquitto) -> None:
    """The disk fills; half-way through the broker goes down too, so events pile up in memory; space
    returns (they are written), then the broker: every event produced is delivered."""
    why = private_tmpfs_missing(tmp_path / "probe")
    if why:
        pytest.skip(why)
    broker = persistent_mosquitto
    health = free_port()
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    config = write_config(
        tmp_path, {"a": camera(small_sample(tmp_path), fps=5)}, health_port=health, broker_port=broker.port
    )
    sub = Subscriber(broker, DETECTIONS, persistent=True).start()
    # edged's outbox directory is a 2 MiB tmpfs that only edged's mount namespace sees; the test reaches
    # it through /proc/<pid>/root (unshare and sh exec, so the pid is edged's).
    mount = f'mount -t tmpfs -o size={TMPFS_BYTES} tmpfs {outbox} && exec "$@"'
    proc = EdgedProcess(config, wrap=["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"])
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        seen = Path(f"/proc/{proc.proc.pid}/root") / str(outbox).lstrip("/")
        assert wait_until(lambda: len(sub.messages) >= 5, 30), proc.text()
        filler = fill(seen)
        n_full = len(proc.events())
        time.sleep(FAULT_S / 2)
        # While the broker acknowledges every event, the outbox empties its active segment each second,
        # so it may keep writing into the little space that frees; with the broker down it cannot.
        broker.kill()
        time.sleep(FAULT_S / 2)
        full = stats(health)["mqtt"]
        ready = http_get(health, "/readyz")[0]
        held = full["outbox_held_in_memory"]
        filler.unlink()  # space returns: what was held in memory goes to disk
        n_freed = len(proc.events())
        assert wait_until(lambda: stats(health)["mqtt"]["outbox_held_in_memory"] == 0, 10), proc.text()
        on_disk = stats(health)["mqtt"]["outbox_events"]
        broker.start()
        assert wait_until(lambda: len(proc.events()) >= n_freed + 10, 30), proc.text()
        produced_so_far = proc.events()
        assert sub.wait_for(lambda m: delivered_all(sub, produced_so_far), 30), proc.text()
        after = stats(health)["mqtt"]
        assert proc.stop() == 0, proc.text()
        produced = proc.events()
        assert sub.wait_for(lambda m: delivered_all(sub, produced), 30)
        print(
            f"\n{n_freed - n_full} events produced while the disk was full ({FAULT_S:g} s, the broker down for "
            f"the second half: {held} held in memory, {on_disk} on disk once space returned), "
            f"{len(produced) - n_freed} after space returned"
        )
        f = figures("outbox disk full", produced, sub)
        assert f["produced"] >= 20 and held > 0 and on_disk >= held
        assert full["outbox_disk_error"] and "No space left on device" in full["outbox_disk_error"]
        assert full["healthy"] is True and ready == 200
        assert after["outbox_disk_error"] is None and after["outbox_held_in_memory"] == 0
        assert after["outbox_dropped"] == {
            "disk_full": 0,
            "size_cap": 0,
            "age_cap": 0,
            "corrupt": 0,
            "refused": 0,
        }
        text = proc.text()
        # One line for the full stretch (and one when it is over), never one per event.
        assert text.count("write failed") == 1 and text.count("takes writes again") <= 1, text
    finally:
        sub.stop()
        proc.kill()
    assert "Traceback" not in proc.text()


def test_file_source_vanishes_and_returns(tmp_path: Path) -> None:
    video = small_sample(tmp_path, frames=20)  # a 2 s loop: the open file ends soon after the rename
    away = video.with_name("away.mp4")
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5, chain=False)}, health_port=health)
    frames = lambda: metric(health, "edged_frames_total", 'camera="gate"') or 0.0  # noqa: E731
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        assert wait_until(lambda: frames() >= 5, 30), proc.text()
        video.rename(away)
        assert wait_until(lambda: stats(health)["cameras"]["gate"]["state"] == "backoff", 15), proc.text()
        gone = frames()
        time.sleep(FAULT_S)
        assert frames() == gone, "frames while the file was away"
        assert proc.alive and up(health)
        ready = stats(health)["cameras"]["gate"]
        away.rename(video)
        t_back = time.monotonic()
        assert wait_until(lambda: frames() > gone, 10, step=0.05), proc.text()
        resumed = time.monotonic() - t_back
        print(
            f"\n[file source away {FAULT_S:g} s] frames resumed {resumed:.2f} s after it came back; state while away: {ready['state']}, error: {ready['source_error']}"
        )
        assert resumed < 5.0
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()
    assert "plates.mp4" in proc.text()


def test_rtsp_server_goes_away_and_returns(tmp_path: Path) -> None:
    why = rtsp_server_missing()
    if why:
        pytest.skip(why)
    server = RtspServer(free_port(), tmp_path / "rtsp.log")
    server.start()
    health = free_port()
    cam = camera(server.url, fps=5, chain=False, frame_timeout_s=4.0)
    config = write_config(tmp_path, {"cam": cam}, health_port=health)
    frames = lambda: metric(health, "edged_frames_total", 'camera="cam"') or 0.0  # noqa: E731
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        assert wait_until(lambda: frames() >= 5, 30), proc.text()
        server.stop()
        assert wait_until(lambda: stats(health)["cameras"]["cam"]["state"] == "backoff", 15), proc.text()
        gone = frames()
        time.sleep(FAULT_S)
        assert proc.alive and up(health)
        away = stats(health)["cameras"]["cam"]
        assert frames() == gone
        server.start()
        t_back = time.monotonic()
        assert wait_until(lambda: frames() > gone, 15, step=0.05), proc.text()
        resumed = time.monotonic() - t_back
        print(
            f"\n[RTSP server away {FAULT_S:g} s] frames resumed {resumed:.2f} s after it came back; "
            f"while away: {away['state']}, error: {away['source_error']}"
        )
        assert resumed < 5.0
        assert proc.stop() == 0
    finally:
        proc.kill()
        server.stop()
    assert "Traceback" not in proc.text()


def test_watchdog_pings_stop_when_a_stage_hangs(tmp_path: Path) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5)}, health_port=health)
    notify = NotifySocket()
    interval = 0.5  # WATCHDOG_USEC=1 s: edged pings every half of it
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    # The hang is injected by the test: edged run through tests/support/hang_run.py with the daemon's engine_wrap.
    proc = EdgedProcess(
        config, env=env, module=["tests.support.hang_run", "--model", "text_det", "--after", "20"]
    )
    try:
        assert wait_until(lambda: "fault injection: model text_det hangs now" in proc.text(), 60), proc.text()
        t_hang = time.monotonic()
        hang_at = proc.text().index("fault injection: model text_det hangs now")
        # Before the hang frames flowed from the start: no stall may have been reported (a camera that
        # has just started is not late yet).
        assert "withholding systemd watchdog pings" not in proc.text()[:hang_at], proc.text()
        assert wait_until(lambda: "withholding systemd watchdog pings" in proc.text()[hang_at:], 40), (
            proc.text()
        )
        t_withheld = time.monotonic()
        time.sleep(4 * interval + 1)
        t_end = time.monotonic()
        assert proc.alive
        assert proc.stop() == 0, proc.text()  # the hang is released at shutdown
        lines = notify.lines()
        pings = [t for t, line in lines if line == "WATCHDOG=1"]
        ready = [t for t, line in lines if line == "READY=1"]
        assert ready, lines
        before = [t for t in pings if t < t_hang]
        between = [t for t in pings if t_hang <= t < t_withheld]
        after = [t for t in pings if t_withheld <= t <= t_end]
        silence = t_end - max(pings)
        print(
            f"\n[watchdog] pings before the hang {len(before)}, between the hang and the stall verdict "
            f"{len(between)} ({t_withheld - t_hang:.1f} s), after {len(after)}; silent for {silence:.1f} s "
            f"(> {3 * interval:g} s = 3 intervals)"
        )
        assert ready[0] < min(pings) and len(before) >= 3
        assert not after and silence > 3 * interval
    finally:
        proc.kill()
        notify.close()
    assert "Traceback" not in proc.text()
