"""The outbox against a failing disk: ENOSPC/EIO and short writes at every byte offset of a record and
of an ack log, a failed fdatasync, the in-memory hold and its bound, and drops logged once per burst.

Faults come from `FailingDisk`, a fake at the one boundary that cannot be made to fail on demand here
(the kernel's write path): a FileOps subclass passed to the Outbox by the test. Everything else is real
files in tmp_path; every scenario ends by reopening the directory with plain file operations.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.observability.metrics import Metrics
from edged.publish.outbox.records import OutboxRecord, encode, scan
from edged.publish.outbox.store import Outbox
from tests.support.faults import FailingDisk
from tests.support.outboxes import cfg, event, ids, reopened


def record_len(tmp: Path) -> int:
    box = Outbox(cfg(tmp / "probe"))
    rec = box.append("t", event(0))
    box.close()
    return len(encode(rec))


def on_disk_bad(directory: Path) -> int:
    return sum(scan(p.read_bytes())[1] for p in directory.glob("*.seg"))


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_append_at_every_offset_loses_nothing(tmp_path: Path, err: int) -> None:
    rec_len = record_len(tmp_path)
    for offset in range(rec_len + 2):  # record lengths vary by a byte or two (the ts digits)
        d = tmp_path / f"{err}-{offset}"
        disk = FailingDisk(err)
        box = Outbox(cfg(d), ops=disk, retry_s=0)
        for i in range(3):
            box.append("t", event(i))
        disk.full_after(offset)  # the 4th record breaks off after `offset` bytes
        for i in range(3, 7):
            box.append("t", event(i))  # held in memory; never raises
        assert box.state == "disk_error" and box.held in (3, 4)  # 3 when the 4th fit exactly
        assert ids(box) == list(range(7)), f"offset {offset}"
        disk.full_after(None)  # space returns
        for i in range(7, 9):
            box.append("t", event(i))
        assert box.held == 0 and box.state == "ok"
        assert ids(box) == list(range(9))
        box.ack(next(r.seq for r in box.pending(100) if r.id.endswith(":4")))  # written after the failure
        box.close()
        assert on_disk_bad(d) == 0, f"offset {offset}: the segment holds a partial record"
        box = Outbox(cfg(d))
        assert ids(box) == [0, 1, 2, 3, 5, 6, 7, 8], f"offset {offset}"
        assert box.dropped == {"disk_full": 0, "size_cap": 0, "age_cap": 0, "corrupt": 0, "refused": 0}
        box.close()


def test_short_writes_are_completed(tmp_path: Path) -> None:
    box = Outbox(cfg(tmp_path), ops=FailingDisk(chunk=7))  # never fails, writes at most 7 bytes a call
    for i in range(20):
        box.append("t", event(i))
    assert box.state == "ok" and box.held == 0
    box.close()
    assert reopened(tmp_path) == list(range(20))


def test_append_that_cannot_be_cut_back_seals_the_segment(tmp_path: Path) -> None:
    rec_len = record_len(tmp_path)
    # A record's length varies by a few bytes with its timestamp's digits: stay clear of its end so the
    # write really is torn (at rec_len - 1 a 1-byte shorter record fit whole, 1 run in ~30).
    for offset in (1, 27, 28, rec_len // 2, rec_len - 12):
        d = tmp_path / str(offset)
        disk = FailingDisk(cut_fails=True)
        box = Outbox(cfg(d), ops=disk, retry_s=0)
        box.append("t", event(0))
        disk.full_after(offset)
        box.append("t", event(1))
        box.append("t", event(2))
        disk.full_after(None)
        box.append("t", event(3))
        assert ids(box) == [0, 1, 2, 3]
        box.close()
        assert len(list(d.glob("*.seg"))) == 2  # the torn one was sealed, the rest went to a new one
        box = Outbox(cfg(d))
        assert ids(box) == [0, 1, 2, 3], f"offset {offset}"
        assert box.dropped["corrupt"] == 1  # the torn stretch, skipped: its event was written again
        box.close()


@pytest.mark.parametrize("cut_fails", [False, True])
def test_acks_while_the_disk_is_full_never_raise_and_are_written_later(
    tmp_path: Path, cut_fails: bool
) -> None:
    for offset in range(9):  # every byte of an 8-byte ack entry
        d = tmp_path / f"{cut_fails}-{offset}"
        disk = FailingDisk(kind=".ack", cut_fails=cut_fails)
        box = Outbox(cfg(d), ops=disk, retry_s=0)
        recs = [box.append("t", event(i)) for i in range(6)]
        assert box.ack(recs[0].seq)
        disk.full_after(offset)
        assert all(box.ack(r.seq) for r in recs[1:4])  # as paho's on_publish would: must not raise
        assert ids(box) == [4, 5]
        disk.full_after(None)
        box.append("t", event(6))  # the next write retries the acks
        box.close()
        box = Outbox(cfg(d))
        got = ids(box)
        if cut_fails and offset < 8:
            # A partial entry could not be cut off: later acks of that segment were kept in memory
            # only, so they come back as duplicates (never as losses).
            assert set(got) >= {4, 5, 6} and 0 not in got
        else:
            assert got == [4, 5, 6], f"offset {offset}"
        box.close()


def test_failed_fdatasync_undoes_the_append(tmp_path: Path) -> None:
    disk = FailingDisk()
    box = Outbox(cfg(tmp_path, fsync="always"), ops=disk, retry_s=0)
    box.append("t", event(0))
    disk.sync_fails = True
    box.append("t", event(1))
    assert box.held == 1 and "Input/output error" in (box.disk_error or "")
    disk.sync_fails = False
    box.append("t", event(2))
    assert box.held == 0
    box.close()
    assert on_disk_bad(tmp_path) == 0
    assert reopened(tmp_path) == [0, 1, 2]


def test_a_failed_interval_fsync_closes_every_fd_it_was_given(tmp_path: Path) -> None:
    """The interval flush syncs duplicates of the active segment's and the ack log's fds outside the
    lock: when fdatasync fails, every one is still closed (none leak), and the error is raised once."""
    disk = FailingDisk()
    box = Outbox(cfg(tmp_path, fsync="interval", fsync_interval_s=3600), ops=disk, retry_s=0)
    for i in range(3):
        box.append("t", event(i))
    assert box.ack(box.pending(1)[0].seq)  # the ack log has unsynced writes too
    before = len(os.listdir("/proc/self/fd"))
    disk.sync_fails = True
    with pytest.raises(OSError, match="Input/output error"):
        box.flush()
    assert len(os.listdir("/proc/self/fd")) == before  # both duplicates were closed
    disk.sync_fails = False
    box.close()
    assert reopened(tmp_path) == [1, 2]


def test_memory_hold_is_bounded_and_drops_are_counted_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec_len = record_len(tmp_path)
    metrics = Metrics()
    disk = FailingDisk()
    box = Outbox(cfg(tmp_path / "box", max_memory_bytes=10 * rec_len + 50), metrics, ops=disk, retry_s=0)
    disk.full_after(0)
    with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
        for i in range(100):
            box.append("t", event(i))
    assert box.held == 10
    assert ids(box) == list(range(90, 100))  # the newest are kept
    assert box.dropped["disk_full"] == 90
    assert metrics.registry.get_sample_value("edged_outbox_dropped_total", {"reason": "disk_full"}) == 90
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 1, [r.getMessage() for r in drop_lines]
    disk.full_after(None)
    box.append("t", event(100))
    box.close()
    assert reopened(tmp_path / "box") == list(range(90, 101))


def test_age_expiry_one_at_a_time_logs_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(cfg(tmp_path, max_age_s=0.2))
    with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
        t_end = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < t_end:  # each append expires the one or two that just got too old
            box.append("t", event(i))
            i += 1
            time.sleep(0.01)
    assert box.dropped["age_cap"] >= 20
    age_lines = [r for r in caplog.records if "age_cap" in r.getMessage()]
    assert len(age_lines) == 1, [r.getMessage() for r in age_lines]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edged.publish.outbox"):
        box.close()  # the burst's summary
    summary = [r.getMessage() for r in caplog.records if "age_cap" in r.getMessage()]
    assert len(summary) == 1 and "more event(s) dropped" in summary[0]


def test_outbox_opened_on_a_full_disk_holds_events_until_space_returns(tmp_path: Path) -> None:
    disk = FailingDisk()
    disk.refuse_new_files = True
    disk.full_after(0)
    box = Outbox(cfg(tmp_path), ops=disk, retry_s=0)  # no segment can be made: must not raise
    for i in range(5):
        box.append("t", event(i))
    assert box.state == "disk_error" and box.held == 5 and ids(box) == list(range(5))
    assert list(tmp_path.glob("*.seg")) == []
    disk.full_after(None)
    box.append("t", event(5))
    assert box.held == 0
    box.close()
    assert reopened(tmp_path) == list(range(6))


def test_held_events_that_fill_several_segments_at_once_are_all_kept(tmp_path: Path) -> None:
    # Found by the property test below: held records written in one go rotated twice before the next
    # seq moved, so two segments got one name; the second opened the first's file and deleting it (empty
    # at close) deleted the first's records.
    disk = FailingDisk()
    box = Outbox(cfg(tmp_path), ops=disk, segment_bytes=1, retry_s=0)  # a new segment after every record
    box.append("t", event(0))
    disk.full_after(0)
    for i in range(1, 5):
        box.append("t", event(i))
    assert box.held == 4
    disk.full_after(None)
    box.close()  # writes the four held records: four segments
    assert len(list(tmp_path.glob("*.seg"))) == 5
    box = Outbox(cfg(tmp_path))
    assert ids(box) == list(range(5))
    assert box.dropped == {"disk_full": 0, "size_cap": 0, "age_cap": 0, "corrupt": 0, "refused": 0}
    box.close()


def test_a_new_segment_never_reuses_the_name_of_one_left_on_disk(tmp_path: Path) -> None:
    # A directory from a run with the naming bug above: segment "5" holds records 1-4, so the next seq
    # after the load is 5 too. The new segment must not append to that file.
    recs = [
        encode(OutboxRecord(s, f"dev:cam:run:{s}", "cam", "t", time.time(), event(s))) for s in range(1, 5)
    ]
    (tmp_path / f"{5:020d}.seg").write_bytes(b"".join(recs))
    box = Outbox(cfg(tmp_path))
    assert box.last_seq == 4
    box.append("t", event(5))
    assert ids(box) == [1, 2, 3, 4, 5]
    box.close()
    assert len(list(tmp_path.glob("*.seg"))) == 2
    box = Outbox(cfg(tmp_path))
    assert ids(box) == [1, 2, 3, 4, 5]
    assert box.dropped["corrupt"] == 0
    box.close()


fault_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 0)),
        st.tuples(st.just("ack"), st.integers(0, 10_000)),
        st.tuples(st.just("full_seg"), st.integers(0, 400)),  # the segment breaks off after n more bytes
        st.tuples(st.just("full_ack"), st.integers(0, 20)),
        st.tuples(st.just("free"), st.integers(0, 0)),
        st.tuples(st.just("reopen"), st.integers(0, 0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=fault_ops)
def test_property_disk_faults_never_lose_or_replay(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    d = tmp_path_factory.mktemp("box")
    disks = {".seg": FailingDisk(), ".ack": FailingDisk(kind=".ack")}

    class Both(FailingDisk):  # faults on segments and ack logs, each with its own budget
        def open_append(self, path: Path) -> int:
            return disks[path.suffix].open_append(path)

        def write(self, fd: int, data: memoryview) -> int:
            for disk in disks.values():
                if fd in disk._kinds:
                    return disk.write(fd, data)
            raise AssertionError("unknown fd")

    box = Outbox(cfg(d), ops=Both(), segment_bytes=600, retry_s=0)
    model: list[int] = []  # unacked event numbers, in append order
    counter = 0
    try:
        for op, arg in ops:
            if op == "append":
                counter += 1
                box.append("t", event(counter))
                model.append(counter)
            elif op == "ack" and model:
                victim = box.pending(1000)[arg % len(model)]
                assert box.ack(victim.seq)
                model.remove(int(victim.id.rsplit(":", 1)[1]))
            elif op == "full_seg":
                disks[".seg"].full_after(arg)
            elif op == "full_ack":
                disks[".ack"].full_after(arg)
            elif op == "free":
                for disk in disks.values():
                    disk.full_after(None)
            elif op == "reopen" and all(disk.budget is None for disk in disks.values()):
                box.close()  # writes what was held before it closes
                box = Outbox(cfg(d), ops=Both(), segment_bytes=600, retry_s=0)
            assert ids(box) == model
        for disk in disks.values():
            disk.full_after(None)
    finally:
        box.close()
    box = Outbox(cfg(d))
    assert ids(box) == model, "after the disk freed up and a reopen, exactly the unacked events remain"
    assert box.dropped == {"disk_full": 0, "size_cap": 0, "age_cap": 0, "corrupt": 0, "refused": 0}
    box.close()
