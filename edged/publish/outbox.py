"""Crash-safe disk outbox: events wait here until the broker acknowledges them (store and forward).

On disk, in OutboxConfig.dir:
- `<first seq>.seg` segments, append-only, of records: a 28-byte header (magic, body length, CRC32 of
  seq+ts+body, seq, ts) followed by a JSON body {"id", "camera", "topic", "ts", "payload"}. Every open
  starts a new segment, so a torn tail left by a crash is never appended to; a segment is closed and a new
  one started once it reaches `segment_bytes`.
- `<first seq>.ack` beside each segment: 8-byte sequence numbers of records that are done (acknowledged
  by the broker, or dropped by the age cap). A record listed there is never replayed. Acks cost one 8-byte
  append, never a rewrite; a segment whose records are all done is deleted with its ack log.

On open, records with a bad CRC or magic and a torn tail (partial write at a crash) are skipped, counted
as edged_outbox_dropped_total{reason="corrupt"} and logged; the scan resynchronises on the next magic.

fsync policy (OutboxConfig.fsync), i.e. what survives a power cut (a process crash loses nothing: writes
go straight to the kernel with os.write):
- always: each appended record is fdatasync'ed before append() returns.
- interval: a background thread fdatasyncs segments and ack logs at most every fsync_interval_s, so a
  power cut loses at most that much.
- never: the OS writes back when it likes.
Ack logs are synced only by the interval thread (always and interval) and at close: a lost ack means an
event is sent twice, which QoS 1 consumers already handle by `id`.

Caps: beyond max_bytes on disk, whole oldest segments are dropped (reason "bytes"); events older than
max_age_s are dropped (reason "age"). Each batch gives one log line. Ages run on the monotonic clock for
events of this run, since a Jetson without RTC battery can step its wall clock by years at NTP sync.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.config.models import OutboxConfig
from edged.metrics import Metrics

log = logging.getLogger(__name__)

MAGIC = b"\xedOB\x01"  # 0xED never occurs in ASCII JSON, so a resync cannot lock onto a body byte
HEADER = struct.Struct(">4sIIQd")  # magic, body length, crc32(seq, ts, body), seq, ts
SEQ = struct.Struct(">Q")
MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    id: str
    camera: str
    topic: str
    ts: float
    payload: dict[str, Any]

    def payload_bytes(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class _Segment:
    path: Path
    first_seq: int
    size: int = 0
    ack_size: int = 0
    live: set[int] = field(default_factory=set)
    fd: int = -1  # read fd, opened on demand
    wfd: int = -1  # append fd, only for the active segment
    ack_fd: int = -1
    ack_dirty: bool = False

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")


@dataclass
class _Entry:
    seq: int
    seg: _Segment
    offset: int
    length: int
    t_mono: float


def _crc(seq: int, ts: float, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack(">Qd", seq, ts)))


class Outbox:
    def __init__(
        self, cfg: OutboxConfig, metrics: Metrics | None = None, *, segment_bytes: int | None = None
    ) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self.segment_bytes = segment_bytes or max(16 * 1024, min(cfg.max_bytes // 16, 4 * 1024 * 1024))
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._pending: dict[int, _Entry] = {}  # insertion order == seq order
        self._bytes = 0
        self._next_seq = 1
        self._dirty = False
        self._closed = False
        self.dropped: dict[str, int] = {"corrupt": 0, "bytes": 0, "age": 0}
        self._load()
        self._active = self._new_segment()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if cfg.fsync == "interval":
            self._flusher = threading.Thread(target=self._flush_loop, name="outbox-fsync", daemon=True)
            self._flusher.start()
        if metrics is not None:
            metrics.outbox_depth.set_function(lambda: self.depth)
            metrics.outbox_bytes.set_function(lambda: self.bytes)
            metrics.outbox_age.set_function(lambda: self.oldest_age)
        if self._pending:
            log.info(
                "outbox %s: %d unacknowledged events to replay (%d bytes)", self.dir, self.depth, self.bytes
            )

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> None:
        for ack in self.dir.glob("*.ack"):
            if not ack.with_suffix(".seg").exists():
                ack.unlink()  # a crash between deleting a segment and its ack log
        now_mono, now_wall = time.monotonic(), time.time()
        for path in sorted(self.dir.glob("*.seg"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
            if not path.stem.isdigit():
                log.warning("outbox: ignoring stray file %s", path)
                continue
            seg = _Segment(path, int(path.stem))
            acked = self._read_acks(seg)
            data = path.read_bytes()
            seg.size = len(data)
            records, bad = self._scan(data)
            if bad:
                self._count_drop("corrupt", bad, f"{path.name}: corrupt or torn records skipped")
            for seq, ts, offset, length in records:
                self._next_seq = max(self._next_seq, seq + 1)
                if seq in acked:
                    continue
                seg.live.add(seq)
                self._pending[seq] = _Entry(seq, seg, offset, length, now_mono - max(0.0, now_wall - ts))
            self._segments.append(seg)
            self._bytes += seg.size + seg.ack_size
        # Segments are ordered by first seq, but a resync can surface records out of order; keep seq order.
        self._pending = dict(sorted(self._pending.items()))
        for seg in list(self._segments):
            if not seg.live:
                self._delete(seg)

    def _read_acks(self, seg: _Segment) -> set[int]:
        try:
            raw = seg.ack_path.read_bytes()
        except FileNotFoundError:
            return set()
        whole = len(raw) - len(raw) % SEQ.size
        if whole != len(raw):  # torn ack write: cut it so later appends stay aligned
            os.truncate(seg.ack_path, whole)
        seg.ack_size = whole
        return {SEQ.unpack_from(raw, i)[0] for i in range(0, whole, SEQ.size)}

    @staticmethod
    def _scan(data: bytes) -> tuple[list[tuple[int, float, int, int]], int]:
        """Valid records as (seq, ts, offset, total length) and the number of bad stretches."""
        out: list[tuple[int, float, int, int]] = []
        bad = 0
        pos, end = 0, len(data)
        while pos < end:
            ok = False
            if end - pos >= HEADER.size:
                magic, length, crc, seq, ts = HEADER.unpack_from(data, pos)
                body_end = pos + HEADER.size + length
                if magic == MAGIC and length <= MAX_RECORD and body_end <= end:
                    body = data[pos + HEADER.size : body_end]
                    ok = _crc(seq, ts, body) == crc
            if ok:
                out.append((seq, ts, pos, HEADER.size + length))
                pos = body_end
                continue
            bad += 1
            nxt = data.find(MAGIC, pos + 1)
            pos = end if nxt < 0 else nxt
        return out, bad

    # -- segments ------------------------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        seg = _Segment(self.dir / f"{self._next_seq:020d}.seg", self._next_seq)
        seg.wfd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self.cfg.fsync != "never":
            self._fsync_dir()
        self._segments.append(seg)
        return seg

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        old = self._active
        if self.cfg.fsync != "never":
            os.fdatasync(old.wfd)
        os.close(old.wfd)
        old.wfd = -1
        self._active = self._new_segment()
        if not old.live:
            self._delete(old)

    def _delete(self, seg: _Segment) -> None:
        for fd in (seg.fd, seg.wfd, seg.ack_fd):
            if fd >= 0:
                os.close(fd)
        seg.fd = seg.wfd = seg.ack_fd = -1
        seg.path.unlink(missing_ok=True)  # segment first: an orphan ack log is harmless, the reverse replays
        seg.ack_path.unlink(missing_ok=True)
        self._bytes -= seg.size + seg.ack_size
        self._segments.remove(seg)

    def _write_ack(self, seg: _Segment, seq: int) -> None:
        if seg.ack_fd < 0:
            seg.ack_fd = os.open(seg.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(seg.ack_fd, SEQ.pack(seq))
        seg.ack_size += SEQ.size
        self._bytes += SEQ.size
        seg.ack_dirty = True

    # -- public API ----------------------------------------------------------------------------

    def append(
        self, topic: str, payload: Mapping[str, Any], camera: str = "", event_id: str = ""
    ) -> OutboxRecord:
        """Store one event durably (per the fsync policy) and give it the next sequence number."""
        camera = camera or str(payload.get("camera", ""))
        event_id = event_id or str(payload.get("id", ""))
        ts = time.time()
        with self._lock:
            if self._closed:
                raise RuntimeError("outbox is closed")
            seq = self._next_seq
            self._next_seq += 1
            rec = OutboxRecord(seq, event_id, camera, topic, ts, dict(payload))
            body = json.dumps(
                {"id": event_id, "camera": camera, "topic": topic, "ts": ts, "payload": rec.payload},
                separators=(",", ":"),
            ).encode()
            data = HEADER.pack(MAGIC, len(body), _crc(seq, ts, body), seq, ts) + body
            seg = self._active
            offset = seg.size
            os.write(seg.wfd, data)
            if self.cfg.fsync == "always":
                os.fdatasync(seg.wfd)
            else:
                self._dirty = True
            seg.size += len(data)
            self._bytes += len(data)
            seg.live.add(seq)
            self._pending[seq] = _Entry(seq, seg, offset, len(data), time.monotonic())
            if seg.size >= self.segment_bytes:
                self._rotate()
            self._enforce_caps()
            return rec

    def pending(self, limit: int = 100, after: int = 0) -> list[OutboxRecord]:
        """Up to `limit` unacknowledged records with seq > after, oldest first (so per camera in order)."""
        out: list[OutboxRecord] = []
        with self._lock:
            self._expire()
            broken: list[_Entry] = []
            for entry in self._pending.values():
                if entry.seq <= after:
                    continue
                rec = self._read(entry)
                if rec is None:
                    broken.append(entry)
                    continue
                out.append(rec)
                if len(out) >= limit:
                    break
            if broken:
                for entry in broken:
                    self._done(entry.seq)
                self._count_drop("corrupt", len(broken), "records unreadable since they were written")
        return out

    def ack(self, seq: int) -> bool:
        """Mark a record delivered; False if it was not pending (already acked or dropped)."""
        with self._lock:
            return self._done(seq)

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def oldest_age(self) -> float:
        with self._lock:
            first = next(iter(self._pending.values()), None)
            return 0.0 if first is None else max(0.0, time.monotonic() - first.t_mono)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def flush(self) -> None:
        """fdatasync what was written since the last flush (the interval thread calls this)."""
        with self._lock:
            if self._closed:
                return
            fds = [os.dup(self._active.wfd)] if self._dirty else []
            self._dirty = False
            for seg in self._segments:
                if seg.ack_dirty and seg.ack_fd >= 0:
                    fds.append(os.dup(seg.ack_fd))
                    seg.ack_dirty = False
        # Outside the lock: an SD card fsync can take tens of ms and appends must not wait for it.
        for fd in fds:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
        with self._lock:
            if self._closed:
                return
        if self.cfg.fsync != "never":
            self.flush()
        with self._lock:
            self._closed = True
            for seg in list(self._segments):
                if not seg.live:
                    self._delete(seg)
                else:
                    for fd in (seg.fd, seg.wfd, seg.ack_fd):
                        if fd >= 0:
                            os.close(fd)
                    seg.fd = seg.wfd = seg.ack_fd = -1

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.cfg.fsync_interval_s):
            try:
                self.flush()
            except OSError:
                log.exception("outbox fsync failed")

    def _read(self, entry: _Entry) -> OutboxRecord | None:
        seg = entry.seg
        if seg.fd < 0:
            seg.fd = os.open(seg.path, os.O_RDONLY)
        data = os.pread(seg.fd, entry.length, entry.offset)
        if len(data) != entry.length:
            return None
        magic, _length, crc, seq, ts = HEADER.unpack_from(data)
        body = data[HEADER.size :]
        if magic != MAGIC or seq != entry.seq or _crc(seq, ts, body) != crc:
            return None
        try:
            d = json.loads(body)
            return OutboxRecord(seq, d["id"], d["camera"], d["topic"], float(d["ts"]), d["payload"])
        except (ValueError, KeyError, TypeError):
            return None

    def _done(self, seq: int) -> bool:
        entry = self._pending.pop(seq, None)
        if entry is None:
            return False
        seg = entry.seg
        seg.live.discard(seq)
        if not seg.live and seg is not self._active:
            self._delete(seg)  # nothing left to replay: no need to record the ack
        else:
            self._write_ack(seg, seq)
        return True

    def _enforce_caps(self) -> None:
        self._expire()
        if self._bytes <= self.cfg.max_bytes:
            return
        dropped = 0
        while self._bytes > self.cfg.max_bytes and self._pending:
            oldest = self._segments[0]
            if oldest is self._active:
                self._rotate()  # only the active segment is left and it alone is over the cap
                continue
            for seq in oldest.live:
                self._pending.pop(seq, None)
            dropped += len(oldest.live)
            oldest.live.clear()
            self._delete(oldest)
        if dropped:
            self._count_drop(
                "bytes", dropped, f"outbox over max_bytes={self.cfg.max_bytes}; oldest events dropped"
            )

    def _expire(self) -> None:
        limit = time.monotonic() - self.cfg.max_age_s
        n = 0
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.t_mono >= limit:
                break
            self._done(first.seq)
            n += 1
        if n:
            self._count_drop("age", n, f"events older than max_age_s={self.cfg.max_age_s:g} dropped")

    def _count_drop(self, reason: str, n: int, what: str) -> None:
        self.dropped[reason] += n
        if self.metrics is not None:
            self.metrics.outbox_dropped.labels(reason=reason).inc(n)
        log.warning("%s: %d (%s); %d events left", what, n, self.dir, len(self._pending))
