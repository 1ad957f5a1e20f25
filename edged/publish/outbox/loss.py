"""The outbox's files removed or replaced under it: noticing it, and writing the records back.

A cleanup script, a tmpfiles rule or an operator may delete or replace the outbox directory (or a
segment) while edged runs. `Losses` notices it through SegmentFiles.check (each append checks the
directory and the active segment, the outbox-io thread every segment about once a second), makes the
segments that are gone orphans (still read, and sent, through the fds the outbox holds open), says so in
one ERROR per loss and keeps why until the records are written again; `recover` recreates the
directory and writes every orphaned record to it, one record at a time (never the whole backlog in
memory). Events appended meanwhile are held by the Outbox like any refused write.

Called under the Outbox's lock only (it passes in its pending entries, SegmentFiles and DiskState).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from edged.publish.outbox.diskio import DiskState
from edged.publish.outbox.segment_files import SegmentFiles
from edged.publish.outbox.segments import Entry

log = logging.getLogger("edged.publish.outbox")


class Losses:
    def __init__(self, where: str, files: SegmentFiles, disk: DiskState, hold_bytes: int) -> None:
        self.where, self.files, self.disk, self.hold_bytes = where, files, disk, hold_bytes
        self.lost: str | None = None  # why the directory or a segment is gone, until written again
        self.count = 0
        self.last: str | None = None  # the last loss and when it was noticed (for /stats)

    def check(self, every: bool) -> None:
        """Notice a loss (`every`: check all segments, else the directory and the active one)."""
        if self.lost is not None:
            return  # noticed already: recover() is on it
        found = self.files.check(every)
        if found is None:
            return
        if not every:  # a loss usually takes more than the active segment: one ERROR for all of it
            found = self.files.check(True) or found
        why, segments = found
        kept = sum(len(seg.live) for seg in segments)
        self.files.orphan(segments)
        self.count += 1
        self.last = f"{why} (noticed at {time.strftime('%Y-%m-%dT%H:%M:%S%z')})"
        log.error(
            "outbox %s: %s by something other than edged; its %d unacknowledged event(s) are kept "
            "(edged holds the files open) and new events are held in memory (up to %d bytes) until "
            "they are written to the recreated directory",
            self.where,
            why,
            kept,
            self.hold_bytes,
        )
        self.lost = why
        self.disk.lost(why)

    def recover(self, pending: Iterable[Entry], next_seq: int, held: int) -> None:
        """Recreate the directory and write the orphans' records to it (the held ones follow)."""
        try:
            made = self.files.recreate_dir()
        except OSError as e:
            self.disk.failed(f"cannot recreate the directory: {e.strerror or e}")
            return
        moved = 0
        for entry in [e for e in pending if e.seg is not None and e.seg.orphan]:
            old = entry.seg
            assert old is not None
            try:
                entry.held = self.files.read(entry)
            except OSError as e:  # EIO: tried again with the next attempt
                self.disk.failed(f"cannot read back {old.path.name}: {e.strerror or e}")
                break
            if not self.files.append(entry, next_seq):  # points the entry at its new segment
                entry.held = None
                break
            self.files.ack(old, entry.seq)  # done in the orphan; its fds close with its last record
            moved += 1
        if self.lost is not None and not self.files.orphans and self.disk.attempt_ok:
            log.warning(
                "outbox %s: %s the directory; %d event(s) written to it again, %d held in memory follow",
                self.where,
                "recreated" if made else "writing to",
                moved,
                held,
            )
            self.lost = None
