"""The outbox's segment files: the segments on disk, the one that takes appends, and every fd on them.

`SegmentFiles` is the write side of one Outbox, held by it (composition, not a mixin). It owns:
- the segment list (oldest first, names strictly ascending) and the active segment;
- every file descriptor on them (append, read, ack log), opened, sealed and closed here only;
- `size`, the bytes the segments and ack logs take on disk, kept in step with the files at every byte.
It turns records and acks into bytes in files: `append` a held record to the active segment (sealing it
at `segment_bytes` and starting the next), `ack` a record (its ack log, or deleting its segment when
nothing in it is left to replay), `drop_oldest` for the size cap, `unsynced`/`sync` for fdatasync.

A refused write (ENOSPC, EIO, a short write: diskio cuts it back or says the file is torn, then the file
is sealed) never raises: it is reported to the DiskState passed in, which the Outbox owns and consults to
decide when to try again; acks the disk refused stay in their Segment until `write_refused_acks`.

The Outbox keeps what is not files: pending entries, records held in memory, sequence numbers (passed
in as `next_seq` where a new segment needs a name), caps and drop counts. A Segment's `live` set is the
link between the two: the seqs of pending entries in that segment, emptied through `ack`/`drop_oldest`.

Files removed or replaced under it (a cleanup script, a tmpfiles rule, an operator's `rm -rf`): `check`
compares the directory and the segments with the (st_dev, st_ino) they had when opened; `orphan` takes
those that are gone out of the directory's bookkeeping. An orphan keeps its read fd (the kernel keeps
the unlinked file's data while it is open), so its records are still sent and are written again by the
Outbox once `recreate_dir` has a directory again; it is never unlinked (its name may belong to another
file now) and acks of it are kept in memory only. A new segment never takes a name that exists.

Threading: every method is called under the Outbox's lock, except `sync`, which only fdatasyncs the
duplicated fds `unsynced` handed out (so a slow SD-card sync never holds the lock).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import Literal

from edged.fileio import fsync_dir
from edged.publish.outbox.diskio import DiskState, FileOps, TornWrite, append_all
from edged.publish.outbox.records import SEQ
from edged.publish.outbox.segments import Entry, Segment, identity

log = logging.getLogger("edged.publish.outbox")


class SegmentFiles:
    def __init__(
        self,
        directory: Path,
        *,
        ops: FileOps,
        fsync: Literal["always", "interval", "never"],
        segment_bytes: int,
        disk: DiskState,
        segments: list[Segment],
        size: int,
        next_seq: int,
    ) -> None:
        """Take over the segments `load` found (`size`: their bytes on disk), delete those with nothing
        left to replay, and start this run's first segment (a run never appends to a torn tail)."""
        self.dir = directory
        self.ops = ops
        self.fsync = fsync  # OutboxConfig.fsync
        self.segment_bytes = segment_bytes
        self._size = size
        self._disk = disk  # the Outbox's: refused writes are reported to it
        self._segments = segments
        self._orphans: list[Segment] = []  # segments whose files were removed or replaced under us
        self._dir_ident = identity(directory)
        self._dirty = False  # the active segment was written since the last `unsynced`
        for seg in list(segments):
            if not seg.live:
                self._delete(seg)
        try:
            self._active = self._new_segment(next_seq)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                raise  # e.g. permissions: a setup error the daemon reports at start
            # A full disk at start is weather, not configuration: the Outbox holds events in memory; the
            # first write that goes through makes the segment (a sealed placeholder until then).
            self._active = Segment(self.dir / f"{next_seq:020d}.seg", next_seq)
            self._disk.failed(f"cannot start a segment: {e.strerror or e}")

    # -- what the Outbox calls -----------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes the segments and ack logs take on disk."""
        return self._size

    def append(self, entry: Entry, next_seq: int) -> bool:
        """Write a held record to the active segment (starting one if it is sealed) and point `entry`
        at it. False if the disk refused it (reported to the DiskState): the record is still held."""
        assert entry.held is not None
        seg = self._active
        if seg.wfd < 0:
            try:
                self._active = seg = self._new_segment(next_seq)
            except OSError as e:
                self._disk.failed(f"cannot start a new segment: {e.strerror or e}")
                return False
        try:
            append_all(self.ops, seg.wfd, entry.held, seg.size, sync=self.fsync == "always")
        except TornWrite as e:
            # The tail is a partial record the load will skip as torn; append nothing more to it.
            self._disk.failed(f"{seg.path.name}: {e.strerror or e}")
            os.close(seg.wfd)
            seg.wfd = -1
            return False
        except OSError as e:
            self._disk.failed(f"{seg.path.name}: {e.strerror or e}")
            return False
        if self.fsync != "always":
            self._dirty = True
        entry.seg, entry.offset, entry.held = seg, seg.size, None
        seg.size += entry.length
        self._size += entry.length
        seg.live.add(entry.seq)
        if seg.size >= self.segment_bytes:
            self._rotate(next_seq)
        return True

    def read(self, entry: Entry) -> bytes:
        """The bytes of a record on disk (entry.seg is set). Raises OSError (EIO): the caller retries."""
        seg = entry.seg
        assert seg is not None
        if seg.fd < 0:  # only after a failed open at load or creation; an orphan always has its fd
            seg.fd = os.open(seg.path, os.O_RDONLY)
        return os.pread(seg.fd, entry.length, entry.offset)

    def ack(self, seg: Segment, seq: int) -> None:
        """Record `seq` of `seg` as done (delivered or dropped): delete the segment once nothing in it is
        left to replay, else append to its ack log (while the disk refuses: at `write_refused_acks`)."""
        seg.live.discard(seq)
        if seg.orphan:
            if not seg.live:  # every record of it delivered, dropped or written again: let its file go
                seg.close_fds()
                self._orphans.remove(seg)
        elif not seg.live and seg is not self._active:
            self._delete(seg)  # nothing left to replay: no need to record the ack
        else:
            seg.unwritten_acks.append(seq)
            if self._disk.error is None:
                self._write_acks(seg)

    def write_refused_acks(self) -> None:
        """Try again the acks the disk refused (not those of an ack log that ends in a partial entry)."""
        for seg in self._segments:
            if seg.unwritten_acks and seg.ack_fd != -2:
                self._write_acks(seg)

    def drop_oldest(self, next_seq: int) -> set[int] | None:
        """For the size cap: delete the oldest segment and return the seqs still live in it (the Outbox
        drops them). When the active segment is the only one it is sealed first and nothing is returned
        yet; None if that fails (the disk refuses a new file): nothing can be freed now."""
        if not self._segments:
            return None
        oldest = self._segments[0]
        if oldest is self._active:
            self._rotate(next_seq)
            return None if oldest is self._active else set()
        live = set(oldest.live)
        oldest.live.clear()
        self._delete(oldest)
        return live

    def unsynced(self) -> list[int]:
        """Duplicates of the fds written since the last call (the active segment, ack logs), for `sync`
        outside the lock; the caller owns them."""
        fds = [os.dup(self._active.wfd)] if self._dirty and self._active.wfd >= 0 else []
        self._dirty = False
        for seg in self._segments:
            if seg.ack_dirty and seg.ack_fd >= 0:
                fds.append(os.dup(seg.ack_fd))
                seg.ack_dirty = False
        return fds

    def sync(self, fds: list[int]) -> None:
        """fdatasync and close fds from `unsynced`; called without the Outbox's lock. Every fd is tried
        and closed; the first failure is raised after (OSError)."""
        failed: OSError | None = None
        for fd in fds:
            try:
                self.ops.fdatasync(fd)
            except OSError as e:
                failed = failed or e
            finally:
                os.close(fd)
        if failed is not None:
            raise failed

    def close(self) -> None:
        """Delete segments with nothing left to replay and close every fd of the others."""
        for seg in list(self._segments):
            if not seg.live:
                self._delete(seg)
            else:
                seg.close_fds()
        for seg in self._orphans:
            seg.close_fds()
        self._orphans.clear()

    # -- files removed or replaced under the outbox ----------------------------------------------

    @property
    def orphans(self) -> list[Segment]:
        """Segments whose files are gone from the directory, with records not yet written again."""
        return self._orphans

    def check(self, every: bool = True) -> tuple[str, list[Segment]] | None:
        """Whether the directory, or a segment in it (`every`: all of them, else only the one taking
        appends), is no longer the file it was: (why, the segments that are gone), else None. Errors
        other than "not there" (EIO, EACCES) are not a loss: the next write reports them."""
        try:
            gone = identity(self.dir) != self._dir_ident
        except (FileNotFoundError, NotADirectoryError):
            gone = True
        except OSError:
            return None
        if gone:
            return "the directory was removed or replaced", list(self._segments)
        lost: list[Segment] = []
        for seg in self._segments if every else [self._active]:
            if seg.ident == (0, 0):
                continue  # a placeholder: no file yet
            try:
                if identity(seg.path) == seg.ident:
                    continue
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError:
                continue
            lost.append(seg)
        if not lost:
            return None
        names = ", ".join(s.path.name for s in lost[:3]) + (
            f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        )
        return f"segment file(s) {names} removed or replaced", lost

    def orphan(self, segments: list[Segment]) -> None:
        """Take segments whose files are gone out of the directory's bookkeeping; their records stay
        readable through their read fds until written again (or acked)."""
        for seg in segments:
            if seg not in self._segments:
                continue
            self._segments.remove(seg)
            self._size -= seg.size + seg.ack_size
            for name in ("wfd", "ack_fd"):
                fd = getattr(seg, name)
                if fd >= 0:
                    os.close(fd)
                setattr(seg, name, -1)
            seg.ack_dirty = False
            seg.unwritten_acks.clear()  # an ack of an orphan only needs to reach its `live` set
            seg.orphan = True
            if seg is self._active:
                # The next append starts a new segment (a sealed placeholder until then).
                self._active = Segment(seg.path, seg.first_seq)
                self._dirty = False
            if seg.live:
                self._orphans.append(seg)
            else:
                seg.close_fds()

    def recreate_dir(self) -> bool:
        """Make sure the directory exists and is the one written to from now on; True if it had to be
        made. Raises OSError if it cannot be made (e.g. a file is in its place)."""
        made = False
        try:
            ident = identity(self.dir)
        except FileNotFoundError:
            self.dir.mkdir(parents=True, exist_ok=True)
            made = True
            if self.fsync != "never":
                with contextlib.suppress(OSError):
                    fsync_dir(self.dir.parent)
            ident = identity(self.dir)
        if not self.dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.dir))
        self._dir_ident = ident
        return made

    def reset_drained(self) -> None:
        """Empty the active segment (and its ack log) once every record in it is done, so acknowledged
        events leave the disk at once rather than when the segment fills up. The segment is cut first:
        a crash in between leaves stale acks of records that are gone (harmless), never the reverse."""
        seg = self._active
        if seg.wfd < 0 or seg.live or (seg.size == 0 and seg.ack_size == 0):
            return
        try:
            self.ops.truncate(seg.wfd, 0)
        except OSError:
            return  # tried again at the next tick
        self._size -= seg.size
        seg.size = 0
        if seg.ack_fd >= 0:
            os.close(seg.ack_fd)
        seg.ack_fd = -1
        seg.ack_dirty = False
        seg.unwritten_acks.clear()
        try:
            seg.ack_path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("outbox: cannot delete %s: %s", seg.ack_path, e.strerror or e)
            seg.ack_fd = -2  # stale acks stay in it: append no more (a restart's load reads them harmlessly)
            return
        self._size -= seg.ack_size
        seg.ack_size = 0

    # -- internals -----------------------------------------------------------------------------

    def _new_segment(self, next_seq: int) -> Segment:
        # Named by the next seq, but never by one in use: held records written in one go can fill two
        # segments before the next seq moves, and a directory from an older run may already hold it.
        # Appending to a file believed new misplaces records; deleting it then deletes the old one's.
        first = max(next_seq, self._segments[-1].first_seq + 1 if self._segments else 0)
        while os.path.lexists(self.dir / f"{first:020d}.seg"):  # an orphan's name, or a stranger's file
            first += 1
        seg = Segment(self.dir / f"{first:020d}.seg", first)
        seg.wfd = self.ops.open_append(seg.path)
        try:
            seg.fd = os.open(seg.path, os.O_RDONLY)
            seg.ident = identity(seg.wfd)
        except OSError:
            seg.close_fds()
            raise
        if self.fsync != "never":
            with contextlib.suppress(OSError):  # only the file's name is at stake, and only at a power cut
                fsync_dir(self.dir)
        self._segments.append(seg)
        return seg

    def _rotate(self, next_seq: int) -> None:
        """Seal the active segment and start a new one; keeps the old one if no new file can be made."""
        old = self._active
        try:
            self._active = self._new_segment(next_seq)
        except OSError as e:
            self._disk.failed(f"cannot start a new segment: {e.strerror or e}")
            return
        if self.fsync != "never":
            with contextlib.suppress(OSError):  # the interval thread or a restart's scan covers it
                self.ops.fdatasync(old.wfd)
        os.close(old.wfd)
        old.wfd = -1
        if not old.live:
            self._delete(old)

    def _delete(self, seg: Segment) -> None:
        seg.close_fds()
        try:
            seg.path.unlink(
                missing_ok=True
            )  # segment first: an orphan ack log is harmless, the reverse replays
            seg.ack_path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("outbox: cannot delete %s: %s", seg.path, e.strerror or e)
        self._size -= seg.size + seg.ack_size
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
        self._size += len(data)
        seg.ack_dirty = True
        seg.unwritten_acks.clear()
