"""The disk outbox: durability across reopen, torn and corrupt records, caps, and a property test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.observability.metrics import Metrics
from edged.publish.outbox.store import HEADER, Outbox
from tests.support.outboxes import cfg, event


def ids(records: list[Any]) -> list[str]:
    return [r.id for r in records]


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_unacked_events_survive_reopen_in_order(tmp_path: Path, fsync: str) -> None:
    box = Outbox(cfg(tmp_path, fsync=fsync, fsync_interval_s=0.05))
    recs = [box.append("t/cam/detections", event(i)) for i in range(10)]
    assert [r.seq for r in recs] == sorted({r.seq for r in recs})
    for r in [*recs[:3], recs[5]]:
        assert box.ack(r.seq)
    assert not box.ack(recs[0].seq)  # second ack of the same record is a no-op
    assert box.depth == 6
    box.close()

    box = Outbox(cfg(tmp_path))
    got = box.pending(100)
    assert ids(got) == [f"dev:cam:run:{i}" for i in (3, 4, 6, 7, 8, 9)]
    assert got[0].topic == "t/cam/detections" and got[0].payload == event(3)
    # New appends continue after the replayed ones, never reusing a sequence number.
    new = box.append("t", event(10))
    assert new.seq > got[-1].seq
    assert ids(box.pending(100, after=got[2].seq))[0] == "dev:cam:run:7"
    box.close()


def test_fully_acked_segments_are_deleted(tmp_path: Path) -> None:
    box = Outbox(cfg(tmp_path), segment_bytes=2000)
    recs = [box.append("t", event(i)) for i in range(50)]
    assert len(list(tmp_path.glob("*.seg"))) > 5
    for r in recs:
        box.ack(r.seq)
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the active one
    box.close()
    assert list(tmp_path.iterdir()) == []
    with Outbox(cfg(tmp_path)) as reopened:
        assert reopened.depth == 0


def test_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    box = Outbox(cfg(tmp_path))
    for i in range(5):
        box.append("t", event(i))
    box.close()
    seg = next(tmp_path.glob("*.seg"))
    size = seg.stat().st_size
    with seg.open("r+b") as f:
        f.truncate(size - 7)  # the last record loses its end, as in a crash mid-write

    box = Outbox(cfg(tmp_path), metrics)
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in range(4)]
    assert box.dropped["corrupt"] == 1
    assert metrics.registry.get_sample_value("edged_outbox_dropped_total", {"reason": "corrupt"}) == 1
    box.close()


def test_corrupt_crc_is_skipped_and_scan_resyncs(tmp_path: Path) -> None:
    box = Outbox(cfg(tmp_path))
    for i in range(5):
        box.append("t", event(i))
    box.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    rec_len = len(data) // 5  # records are the same size here
    data[2 * rec_len + HEADER.size + 10] ^= 0xFF  # flip a byte in the body of the third record
    seg.write_bytes(bytes(data))

    box = Outbox(cfg(tmp_path))
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in (0, 1, 3, 4)]
    assert box.dropped["corrupt"] == 1
    box.close()


def test_byte_cap_drops_oldest_first(tmp_path: Path) -> None:
    metrics = Metrics()
    box = Outbox(cfg(tmp_path, max_bytes=20_000), metrics, segment_bytes=2_000)
    n = 200
    for i in range(n):
        box.append("t", event(i))
        assert box.bytes <= 20_000 + 2_000
    kept = ids(box.pending(n))
    first = int(kept[0].rsplit(":", 1)[1])
    assert kept == [f"dev:cam:run:{i}" for i in range(first, n)]  # a contiguous newest tail
    assert 0 < box.dropped["size_cap"] == first == n - box.depth
    assert metrics.registry.get_sample_value("edged_outbox_dropped_total", {"reason": "size_cap"}) == first
    assert metrics.registry.get_sample_value("edged_outbox_events") == box.depth
    box.close()


def test_age_cap_drops_oldest_first(tmp_path: Path) -> None:
    max_age = 0.3
    box = Outbox(cfg(tmp_path, max_age_s=max_age))
    for i in range(5):
        box.append("t", event(i))
    time.sleep(max_age + 0.1)
    for i in range(5, 8):
        box.append("t", event(i))
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in range(5, 8)]
    assert box.dropped["age_cap"] == 5
    box.close()
    # Dropped by age means done: they do not come back after a reopen either.
    box = Outbox(cfg(tmp_path, max_age_s=3600))
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in range(5, 8)]
    box.close()


def test_ack_log_torn_write_is_tolerated(tmp_path: Path) -> None:
    box = Outbox(cfg(tmp_path))
    recs = [box.append("t", event(i)) for i in range(4)]
    box.ack(recs[0].seq)
    box.close()
    ack = next(tmp_path.glob("*.ack"))
    with ack.open("ab") as f:
        f.write(b"\x00\x00\x00")  # a partial 8-byte entry
    box = Outbox(cfg(tmp_path))
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in (1, 2, 3)]
    box.ack(box.pending()[0].seq)
    box.close()
    box = Outbox(cfg(tmp_path))
    assert ids(box.pending()) == [f"dev:cam:run:{i}" for i in (2, 3)]
    box.close()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("ack"), st.integers(0, 10_000)),
        st.tuples(st.just("reopen"), st.just("")),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_property_never_loses_unacked_nor_replays_acked(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any]]
) -> None:
    d = tmp_path_factory.mktemp("box")
    box = Outbox(cfg(d), segment_bytes=600)  # tiny segments: rotation and deletion happen a lot
    model: dict[str, int] = {}  # id -> seq of unacked events, in append order
    counter = 0
    try:
        for op, arg in ops:
            if op == "append":
                counter += 1
                rec = box.append(f"t/{arg}", event(counter, arg))
                model[rec.id] = rec.seq
            elif op == "ack" and model:
                pend = box.pending(1000)
                victim = pend[arg % len(pend)]
                assert box.ack(victim.seq)
                del model[victim.id]
            elif op == "reopen":
                box.close()
                box = Outbox(cfg(d), segment_bytes=600)
            got = box.pending(10_000)
            assert ids(got) == list(model), "pending must be exactly the unacked events, in append order"
            assert box.depth == len(model)
    finally:
        box.close()
