"""The outbox under a real `edged run`: its directory removed, then replaced by a file, while the broker
(a real mosquitto) is down; and the outbox's drop reasons as /metrics and /stats show them.

Counting as in test_faults.py: every event edged produces is also written to its --stdout sink just
before it is queued; a persistent QoS 1 subscriber on a broker with persistence receives them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from edged.observability.metrics import OUTBOX_DROP_REASONS
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    FAULT_S,
    EdgedProcess,
    camera,
    http_get,
    metric,
    small_sample,
    stats,
    up,
    wait_until,
    write_config,
)
from tests.test_faults import DETECTIONS, delivered_all, figures, outbox_ids


def test_outbox_directory_removed_under_a_running_daemon_loses_nothing(
    tmp_path: Path, persistent_mosquitto: Mosquitto
) -> None:
    """Broker down; `rm -rf` of the outbox directory: one ERROR, the directory is back at once with every
    undelivered event on disk. Then a file in its place: /readyz 503 naming the outbox, events held in
    memory; the file goes: ready again, written. Broker back: every event produced is delivered."""
    broker = persistent_mosquitto
    health = free_port()
    outbox = tmp_path / "outbox"
    config = write_config(
        tmp_path, {"a": camera(small_sample(tmp_path), fps=5)}, health_port=health, broker_port=broker.port
    )
    cfg = json.loads(config.read_text())
    cfg["mqtt"]["outbox"]["max_bytes"] = 512 * 1024  # 32 KiB segments: the removal takes several
    config.write_text(json.dumps(cfg))
    sub = Subscriber(broker, DETECTIONS, persistent=True).start()
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        # Every drop reason has its series at 0 from the first scrape, under the names /stats uses.
        zero = dict.fromkeys(OUTBOX_DROP_REASONS, 0)
        assert {r: metric(health, "edged_outbox_dropped_total", f'reason="{r}"') for r in zero} == zero
        assert ob(health)["outbox_dropped"] == zero
        assert sub.wait_for(lambda m: len(m) >= 5, 30), proc.text()
        broker.kill()
        assert wait_until(lambda: ob(health).get("outbox_events", 0) >= 10, 30)

        shutil.rmtree(outbox)
        n_removed = len(proc.events())
        got = {json.loads(m.payload)["id"] for m in list(sub.messages)}
        undelivered = {e["id"] for e in proc.events()[:n_removed]} - got
        assert len(undelivered) >= 10
        # Back at once: the directory exists again and holds every event not yet delivered.
        assert wait_until(lambda: outbox.is_dir() and undelivered <= outbox_ids(outbox), 5), proc.text()
        assert ob(health)["outbox_losses"] == 1
        after_rm = ob(health)
        assert after_rm["outbox_lost"] is None and "removed or replaced" in after_rm["outbox_last_loss"]

        shutil.rmtree(outbox)
        outbox.write_text("in the way")
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 503, 5), proc.text()
        _code, body = http_get(health, "/readyz")
        assert "outbox" in json.loads(body)["publisher"]["reason"], body
        assert wait_until(lambda: ob(health).get("outbox_held_in_memory", 0) >= 3, 10), proc.text()
        lost = ob(health)
        assert lost["outbox_lost"] and "cannot recreate" in lost["outbox_disk_error"], lost
        assert lost["healthy"] is True  # the watchdog keeps pinging: a restart cannot recreate it better
        outbox.unlink()
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 200, 10), proc.text()
        assert ob(health)["outbox_held_in_memory"] == 0
        time.sleep(FAULT_S / 4)

        broker.start()
        n = len(proc.events())
        assert wait_until(lambda: len(proc.events()) >= n + 5, 30), proc.text()
        assert proc.stop() == 0, proc.text()
        produced = proc.events()
        assert sub.wait_for(lambda m: delivered_all(sub, produced), 30), proc.text()
        f = figures("outbox directory removed", produced, sub)
        print(
            f"{len(undelivered)} undelivered events in the directory when it was removed, all back on disk "
            f"at once; {lost['outbox_held_in_memory']} held in memory while a file was in its place"
        )
        assert f["produced"] >= 20
        assert stats_dropped_none(proc.text())
    finally:
        sub.stop()
        proc.kill()
    text = proc.text()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if " ERROR " in line and "outbox" in line]
    # One ERROR per loss (the rm -rf, then the rm -rf that left a file), never one per event.
    assert len(errors) == 2 and all("by something other than edged" in e for e in errors), errors


def ob(health: int) -> dict[str, Any]:
    """/stats' mqtt section (outbox_* fields); {} while it cannot be read."""
    return dict(stats(health).get("mqtt") or {})


def stats_dropped_none(log: str) -> bool:
    return "event(s) dropped" not in log
