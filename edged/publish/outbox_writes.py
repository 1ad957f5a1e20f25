"""The outbox's write side: segment files (start, seal, delete), appending held records and ack entries.

A mixin of Outbox, split off to keep each module to one job: these methods turn records and acks into
bytes in files and keep the sizes the Outbox books in step with the files at every byte, reporting a
refused write to DiskState instead of raising. Called only under the Outbox's lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from edged.config.schema import OutboxConfig
from edged.fileio import fsync_dir
from edged.publish.diskio import DiskState, FileOps, TornWrite, append_all
from edged.publish.outbox_format import SEQ
from edged.publish.segments import Entry, Segment

log = logging.getLogger("edged.publish.outbox")


class SegmentWrites:
    cfg: OutboxConfig
    dir: Path
    ops: FileOps
    segment_bytes: int
    _segments: list[Segment]
    _active: Segment
    _disk: DiskState
    _bytes: int
    _held: dict[int, Entry]
    _held_bytes: int
    _dirty: bool
    _next_seq: int

    def _new_segment(self) -> Segment:
        # Named by the next seq, but never by one in use: held records written in one go can fill two
        # segments before the next seq moves, and a directory from an older run may already hold it.
        # Appending to a file believed new misplaces records; deleting it then deletes the old one's.
        first = max(self._next_seq, self._segments[-1].first_seq + 1 if self._segments else 0)
        seg = Segment(self.dir / f"{first:020d}.seg", first)
        seg.wfd = self.ops.open_append(seg.path)
        if self.cfg.fsync != "never":
            with contextlib.suppress(OSError):  # only the file's name is at stake, and only at a power cut
                fsync_dir(self.dir)
        self._segments.append(seg)
        return seg

    def _rotate(self) -> None:
        """Seal the active segment and start a new one; keeps the old one if no new file can be made."""
        old = self._active
        try:
            self._active = self._new_segment()
        except OSError as e:
            self._disk.failed(f"cannot start a new segment: {e.strerror or e}")
            return
        if self.cfg.fsync != "never":
            with contextlib.suppress(OSError):  # the interval thread or a restart's scan covers it
                self.ops.fdatasync(old.wfd)
        os.close(old.wfd)
        old.wfd = -1
        if not old.live:
            self._delete(old)

    def _delete(self, seg: Segment) -> None:
        seg.close_fds()
        try:
            seg.path.unlink(missing_ok=True)  # segment first: an orphan ack log is harmless, the reverse replays
            seg.ack_path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("outbox: cannot delete %s: %s", seg.path, e.strerror or e)
        self._bytes -= seg.size + seg.ack_size
        self._segments.remove(seg)

    def _write_acks(self, seg: Segment) -> None:
        """Append seg.unwritten_acks to its ack log; on a disk error keep them for the next attempt."""
        if not seg.unwritten_acks:
            return
        data = b"".join(SEQ.pack(s) for s in seg.unwritten_acks)
        try:
            if seg.ack_fd < 0:
                seg.ack_fd = self.ops.open_append(seg.ack_path)
            append_all(self.ops, seg.ack_fd, data, seg.ack_size)
        except TornWrite as e:
            # A partial entry is left: a restart's load cuts it off (whole 8-byte entries only); stop
            # appending here, so later entries are not misaligned. Acks of this segment stay in memory.
            self._disk.failed(f"ack log {seg.ack_path.name}: {e.strerror or e}")
            os.close(seg.ack_fd)
            seg.ack_fd = -2  # never reopened in this run
            return
        except OSError as e:
            self._disk.failed(f"ack log {seg.ack_path.name}: {e.strerror or e}")
            return
        seg.ack_size += len(data)
        self._bytes += len(data)
        seg.ack_dirty = True
        seg.unwritten_acks.clear()

    def _write_held(self, entry: Entry) -> None:
        assert entry.held is not None
        seg = self._active
        if seg.wfd < 0:
            try:
                self._active = seg = self._new_segment()
            except OSError as e:
                self._disk.failed(f"cannot start a new segment: {e.strerror or e}")
                return
        try:
            append_all(self.ops, seg.wfd, entry.held, seg.size, sync=self.cfg.fsync == "always")
        except TornWrite as e:
            # The tail is a partial record the load will skip as torn; append nothing more to it.
            self._disk.failed(f"{seg.path.name}: {e.strerror or e}")
            os.close(seg.wfd)
            seg.wfd = -1
            return
        except OSError as e:
            self._disk.failed(f"{seg.path.name}: {e.strerror or e}")
            return
        if self.cfg.fsync != "always":
            self._dirty = True
        del self._held[entry.seq]
        self._held_bytes -= entry.length
        entry.seg, entry.offset, entry.held = seg, seg.size, None
        seg.size += entry.length
        self._bytes += entry.length
        seg.live.add(entry.seq)
        if seg.size >= self.segment_bytes:
            self._rotate()
