"""The outbox when its files are removed or replaced under it (a cleanup script, a tmpfiles rule, an
operator's `rm -rf`), and what its byte counts mean.

Real files in tmp_path, real unlink/rename/rmtree; every scenario ends by reopening the directory with
a new Outbox, as the next start would, and checking which events it would still send.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.observability.health.server import HealthServer
from edged.observability.metrics import OUTBOX_DROP_REASONS, Metrics
from edged.publish.outbox.records import encode
from edged.publish.outbox.store import Outbox
from tests.support import outboxes
from tests.support.outboxes import cfg, ids, reopened


def event(i: int) -> dict[str, Any]:
    return outboxes.event(i, label_len=200)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("how", ["rmtree", "rmtree_mkdir", "segments_unlinked"])
def test_removed_directory_or_segments_lose_nothing(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Several sealed segments and the active one are removed; the outbox notices at the next append,
    says so in one ERROR, recreates the directory and writes every pending record to it again."""
    d = tmp_path / "ob"
    box = Outbox(cfg(d), segment_bytes=4096)
    for i in range(40):
        box.append("t", event(i))
    for rec in box.pending(5):
        box.ack(rec.seq)  # 0..4 delivered: they must not come back
    assert len(list(d.glob("*.seg"))) >= 4
    if how == "segments_unlinked":
        for p in d.glob("*.seg"):
            p.unlink()
    else:
        shutil.rmtree(d)
        if how == "rmtree_mkdir":
            d.mkdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
        box.append("t", event(40))
        assert box.lost is None  # recreated at once: the directory could be made
        assert (
            box.status()["outbox_losses"] == 1 and "removed or replaced" in box.status()["outbox_last_loss"]
        )
        for i in range(41, 50):
            box.append("t", event(i))
        assert ids(box) == list(range(5, 50))
        box.close()
    assert len(errors(caplog)) == 1, errors(caplog)
    assert "by something other than edged" in errors(caplog)[0]
    assert reopened(d) == list(range(5, 50))


def test_directory_replaced_by_a_file_holds_events_until_it_can_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "ob"
    box = Outbox(cfg(d, max_memory_bytes=64 * 1024), segment_bytes=4096, retry_s=0.05)
    for i in range(10):
        box.append("t", event(i))
    shutil.rmtree(d)
    d.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
        for i in range(10, 20):
            box.append("t", event(i))
        ok, why = box.health()
        assert not ok and box.lost and "removed or replaced" in why, why
        st = box.status()
        assert st["outbox_lost"] and st["outbox_held_in_memory"] == 10, st
        assert "cannot recreate the directory" in (st["outbox_disk_error"] or ""), st
        assert ids(box) == list(range(20))  # still sent meanwhile: orphans read through their fds
        d.unlink()
        time.sleep(0.1)
        box.append("t", event(20))
        assert box.lost is None and box.held == 0 and box.health() == (True, "")
        box.close()
    assert len(errors(caplog)) == 1, errors(caplog)
    assert reopened(d) == list(range(21))


def test_memory_bound_while_the_directory_is_gone_drops_oldest_held_and_counts(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    metrics = Metrics()
    box = Outbox(cfg(d, max_memory_bytes=4096), metrics, retry_s=60)
    box.append("t", event(0))
    shutil.rmtree(d)
    d.write_text("x")
    for i in range(1, 40):
        box.append("t", event(i))
    dropped = box.dropped["disk_full"]
    assert dropped > 0 and box.held * 300 < 4096 + 300
    assert metrics.registry.get_sample_value("edged_outbox_dropped_total", {"reason": "disk_full"}) == dropped
    got = ids(box)
    assert got[0] == 0 and got == [0, *range(1 + dropped, 40)]  # the orphaned record stays, oldest held go
    box.close()


def test_one_removed_sealed_segment_is_noticed_by_the_io_thread(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    box = Outbox(cfg(d), segment_bytes=4096, retry_s=0.05)
    for i in range(30):
        box.append("t", event(i))
    oldest = sorted(d.glob("*.seg"))[0]
    oldest.unlink()
    deadline = time.monotonic() + 5
    while box.status()["outbox_losses"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box.status()["outbox_losses"] == 1
    assert box.lost is None and ids(box) == list(range(30))
    box.close()
    assert reopened(d) == list(range(30))


def test_replaced_active_segment_is_not_appended_to(tmp_path: Path) -> None:
    """Someone copies a file over the active segment: edged's records go on to a new one and are all
    kept; the stranger's file is left alone (its bytes count as corrupt at the next open)."""
    d = tmp_path / "ob"
    box = Outbox(cfg(d))
    for i in range(5):
        box.append("t", event(i))
    (active,) = d.glob("*.seg")
    other = tmp_path / "other"
    other.write_bytes(b"garbage" * 10)
    other.rename(active)
    for i in range(5, 10):
        box.append("t", event(i))
    assert active.read_bytes() == b"garbage" * 10
    box.close()
    assert reopened(d) == list(range(10))


def test_bytes_are_what_is_unacknowledged_and_drained_segments_leave_the_disk(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    metrics = Metrics()
    box = Outbox(cfg(d), metrics, segment_bytes=8192, retry_s=0.05)
    for i in range(50):
        box.append("t", event(i))
    recs = box.pending(100)
    assert box.bytes == sum(len(encode(r)) for r in recs)
    for rec in recs[:30]:
        box.ack(rec.seq)
    assert box.bytes == sum(len(encode(r)) for r in recs[30:])
    assert box.disk_bytes > box.bytes  # acked records of the active segment, ack logs
    assert metrics.registry.get_sample_value("edged_outbox_bytes") == box.bytes
    for rec in recs[30:]:
        box.ack(rec.seq)
    assert box.bytes == 0 and box.depth == 0
    deadline = time.monotonic() + 5  # the io thread empties the active segment within a tick
    while box.disk_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box.disk_bytes == 0 and metrics.registry.get_sample_value("edged_outbox_disk_bytes") == 0
    assert sum(p.stat().st_size for p in d.iterdir()) == 0
    box.append("t", event(50))  # and the emptied segment takes appends again
    box.close()
    assert reopened(d) == [50]


def scrape_drops(port: int) -> dict[str, float]:
    """edged_outbox_dropped_total by reason, read from /metrics over HTTP (a real scrape)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        families = text_string_to_metric_families(r.read().decode())
    out = {}
    for family in families:
        if family.name == "edged_outbox_dropped":
            assert all(reason in family.documentation for reason in OUTBOX_DROP_REASONS), family.documentation
            out = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    return out


def scrape_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return dict(json.loads(r.read())["mqtt"]["outbox_dropped"])


def test_drop_reasons_and_counts_agree_in_metrics_stats_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Drops of every reason, each made for real (a corrupted record, a directory that cannot be
    made with no memory to hold, the size cap, the age cap, a record the MQTT client refused): /metrics and /stats, scraped over HTTP from
    the health server, name the same reasons with the same counts, zero before any drop; each drop's
    log line names its reason."""
    d = tmp_path / "ob"
    metrics = Metrics()
    box = Outbox(
        cfg(d, max_bytes=20_000, max_age_s=1.0, max_memory_bytes=0), metrics, segment_bytes=4096, retry_s=0.05
    )
    server = HealthServer(
        "127.0.0.1",
        0,
        metrics,
        status=lambda: {"mqtt": box.status()},
        ready=lambda: (True, {}),
        snapshot=lambda cam: None,
    )
    server.start()
    try:
        zero = dict.fromkeys(OUTBOX_DROP_REASONS, 0)
        assert scrape_drops(server.port) == zero and scrape_stats(server.port) == zero
        with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
            # corrupt: a byte of a sealed segment's first record flipped in place (same file, same inode)
            for i in range(20):
                box.append("t", event(i))
            first = sorted(d.glob("*.seg"))[0]
            with first.open("r+b") as f:
                f.seek(40)
                byte = f.read(1)
                f.seek(40)
                f.write(bytes([byte[0] ^ 0xFF]))
            assert ids(box)[0] == 1
            # disk_full: the directory replaced by a file, no memory to hold events in
            shutil.rmtree(d)
            d.write_text("x")
            for i in range(20, 23):
                box.append("t", event(i))
            d.unlink()
            time.sleep(0.1)  # the next append recreates the directory
            # size_cap: 20 kB of events at once
            for i in range(23, 120):
                box.append("t", event(i))
            # age_cap: what is left grows older than max_age_s
            time.sleep(1.1)
            box.append("t", event(120))
            # refused: the publisher's call when paho refuses a record's topic or payload
            refused = box.append("t/+/x", event(121))
            assert box.drop(refused.seq, "refused") and not box.drop(refused.seq, "refused")
        want = {r: box.dropped[r] for r in OUTBOX_DROP_REASONS}
        assert all(want[r] > 0 for r in OUTBOX_DROP_REASONS), want
        assert scrape_drops(server.port) == want
        assert scrape_stats(server.port) == want
        logged = " ".join(r.getMessage() for r in caplog.records if "dropped" in r.getMessage())
        for reason, why in OUTBOX_DROP_REASONS.items():
            assert f"reason {reason} ({why})" in logged, (reason, logged)
    finally:
        server.stop()
        box.close()


def test_a_dead_outbox_io_thread_is_not_healthy(tmp_path: Path) -> None:
    """The outbox-io thread (fsync, retries, loss checks) is supervised through the publisher's health."""
    box = Outbox(cfg(tmp_path / "ob"))
    assert box.health() == (True, "")
    box._stop.set()  # what ends the thread at close; here the outbox stays open without it
    box._flusher.join()
    ok, why = box.health()
    assert not ok and "outbox-io thread has ended" in why
    box.close()
