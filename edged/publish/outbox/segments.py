"""The outbox's in-memory view of its directory: segments, pending entries, and loading them at open.

Data only, touched under one Outbox's lock: its SegmentFiles owns the Segments, the Outbox the Entries
(an Entry points into its Segment; a Segment's `live` holds the seqs of its pending Entries). `load`
reads a directory left by an earlier run (or a crash): ack logs cut to whole entries, segments scanned
(torn and corrupt stretches counted, never fatal), records listed in an ack log skipped.

Every segment keeps a read fd open from the moment it is opened or made until it is deleted, so the
records of a segment that someone deletes or replaces under a running outbox stay readable (the
kernel keeps an unlinked file while an fd is open): such a segment is an `orphan`, read through its fd
until its records are written again (segment_files.SegmentFiles.orphan, Outbox._recover).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edged.publish.outbox.records import SEQ, scan

log = logging.getLogger("edged.publish.outbox")


@dataclass
class Segment:
    path: Path
    first_seq: int  # the number in its name: the next seq when it was started, not always its first record
    size: int = 0
    ack_size: int = 0
    live: set[int] = field(default_factory=set)
    fd: int = -1  # read fd, open from the segment's open or creation until its deletion
    wfd: int = -1  # append fd, only for the active segment
    ack_fd: int = -1  # -2: the ack log has a partial entry that could not be cut: append no more
    ack_dirty: bool = False
    unwritten_acks: list[int] = field(default_factory=list)  # acks the disk refused, retried later
    ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of its file: the file at `path` must be this one
    orphan: bool = False  # its file is no longer at `path` (removed or replaced): read through `fd` only

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")

    def close_fds(self) -> None:
        for fd in (self.fd, self.wfd, self.ack_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.wfd = self.ack_fd = -1


@dataclass
class Entry:
    seq: int
    seg: Segment | None  # None: held in memory, not (yet) on disk
    offset: int
    length: int
    t_mono: float
    held: bytes | None = None  # the encoded record while it is held in memory


@dataclass
class Loaded:
    segments: list[Segment] = field(default_factory=list)
    pending: dict[int, Entry] = field(default_factory=dict)  # seq order
    next_seq: int = 1
    bytes: int = 0
    corrupt: int = 0


def load(directory: Path) -> Loaded:
    out = Loaded()
    for ack in directory.glob("*.ack"):
        if not ack.with_suffix(".seg").exists():
            ack.unlink()  # a crash between deleting a segment and its ack log
    now_mono, now_wall = time.monotonic(), time.time()
    for path in sorted(directory.glob("*.seg"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        if not path.stem.isdigit():
            log.warning("outbox: ignoring stray file %s", path)
            continue
        seg = Segment(path, int(path.stem))
        acked = read_acks(seg)
        seg.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(seg.fd)
        seg.ident = (st.st_dev, st.st_ino)
        data = read_all(seg.fd, st.st_size)
        seg.size = len(data)
        records, bad = scan(data)
        if bad:
            log.warning("outbox %s: %d corrupt or torn stretch(es) skipped", path, bad)
            out.corrupt += bad
        for seq, ts, offset, length in records:
            out.next_seq = max(out.next_seq, seq + 1)
            if seq in acked or seq in out.pending:
                continue
            seg.live.add(seq)
            out.pending[seq] = Entry(seq, seg, offset, length, now_mono - max(0.0, now_wall - ts))
        out.segments.append(seg)
        out.bytes += seg.size + seg.ack_size
    # Segments are ordered by first seq, but a resync can surface records out of order; keep seq order.
    out.pending = dict(sorted(out.pending.items()))
    return out


def read_all(fd: int, size: int) -> bytes:
    """`size` bytes from offset 0 of fd (fewer if the file is shorter)."""
    parts, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def identity(path: Path | int) -> tuple[int, int]:
    """(st_dev, st_ino) of a path or fd; raises OSError (FileNotFoundError when it is gone)."""
    st = os.stat(path) if isinstance(path, Path) else os.fstat(path)
    return st.st_dev, st.st_ino


def read_acks(seg: Segment) -> set[int]:
    try:
        raw = seg.ack_path.read_bytes()
    except FileNotFoundError:
        return set()
    whole = len(raw) - len(raw) % SEQ.size
    if whole != len(raw):  # torn ack write: cut it so later appends stay aligned
        os.truncate(seg.ack_path, whole)
    seg.ack_size = whole
    return {SEQ.unpack_from(raw, i)[0] for i in range(0, whole, SEQ.size)}
