"""Crash-safe disk outbox: events wait here until the broker acknowledges them (store and forward).

On disk, in OutboxConfig.dir (record format in outbox_format):
- `<n>.seg` segments, append-only, named by the next seq when started (or one past the newest name, so
  names never repeat and sort in the order the segments were started). Every open starts a new segment,
  so a torn tail left by a crash is never appended to; a segment is sealed and a new one started once it
  reaches `segment_bytes`.
- `<n>.ack` beside each segment: 8-byte sequence numbers of records that are done (delivered, or
  deliberately dropped and counted). A record listed there is never replayed. A segment whose records
  are all done is deleted with its ack log.

Disk errors (ENOSPC, EIO, short writes) never reach the caller nor desynchronise the bookkeeping (the
files are SegmentFiles', the fault hook and cut-back in diskio): a failed append is cut back to the size
before it (diskio.append_all), or if that fails too the segment is sealed. The event keeps its seq and
is held in memory (still pending, still sent) up to max_memory_bytes, then written once the disk takes
writes again (tried every retry_s, by the outbox:io thread or an append); past the bound the oldest held
events are dropped (disk_full). Acks the disk refuses are kept and retried the same way (a lost ack only
means a duplicate). A record is done only when delivered or dropped and counted by reason (disk_full,
size_cap, age_cap, corrupt), logged once per burst (drops.DropLog). On open, corrupt and torn records
are skipped and counted; the scan resynchronises on the next magic.

fsync (OutboxConfig.fsync), i.e. what survives a power cut (a process crash loses nothing written, since
writes go straight to the kernel): always = fdatasync per append; interval = the outbox:io thread
fdatasyncs segments and ack logs every fsync_interval_s; never = the OS decides. Ack logs are synced by
that thread and at close only: a lost ack means an event is sent twice, which QoS 1 consumers handle by
`id`.

Caps: beyond max_bytes on disk whole oldest segments are dropped (size_cap); events older than max_age_s
are dropped (age_cap), on the monotonic clock for events of this run (a Jetson without RTC battery can
step its wall clock by years at NTP sync).

The directory or a segment removed or replaced under the running outbox (outbox_loss.Losses): every
append checks the directory and the active segment, the outbox:io thread every segment about once a
second. On a loss: one ERROR; the segments that are gone become orphans, still read (and sent) through
the fds the outbox holds open; new events are held in memory (up to max_memory_bytes, then disk_full
drops); the directory is recreated (at once, then every retry_s while that fails) and the orphans'
records and the held events are written to it. `lost` says why until then (/readyz is 503 meanwhile:
events are not durable), `status()` carries it to /stats.

Bytes: `bytes` is what the unacknowledged events take (on disk or held in memory: what an alert on a
backlog wants); `disk_bytes` what the files take in the directory. Segments whose records are all done
are deleted at once, and the active one is emptied within a second of its last record being done.

Who owns what: the Outbox owns the pending entries (seq order), the records held in memory and their
bytes, the sequence numbers, the DiskState (is the disk refusing writes, when to try again), the caps and
drop counts, its lock and the outbox:io thread. It holds one SegmentFiles (segment_files), which owns
the segment files: the segment list, the active segment, every fd and the bytes on disk; the Outbox
tells it what to write and passes in what it needs (the held entry, the next seq for a new segment's
name). Refused writes are reported by SegmentFiles to the Outbox's DiskState.

Threading: every public method takes one lock; the outbox:io thread (fsync every fsync_interval_s with
`interval`, retries of refused writes) syncs duplicated fds outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from edged.config.schema import OutboxConfig
from edged.observability.metrics import Metrics
from edged.publish.outbox.diskio import DiskState, FileOps
from edged.publish.outbox.drops import DropLog
from edged.publish.outbox.loss import Losses
from edged.publish.outbox.records import HEADER, MAGIC, OutboxRecord, decode, encode, scan
from edged.publish.outbox.segment_files import SegmentFiles
from edged.publish.outbox.segments import Entry, load

__all__ = ["HEADER", "MAGIC", "FileOps", "Outbox", "OutboxRecord"]

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        cfg: OutboxConfig,
        metrics: Metrics | None = None,
        *,
        segment_bytes: int | None = None,
        ops: FileOps | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self._lock = threading.RLock()
        self._held_bytes = 0
        self._held: dict[int, Entry] = {}  # seq order; each also in _pending
        self._closed = False
        self._disk = DiskState(str(self.dir), cfg.max_memory_bytes, retry_s)
        self._read_error: str | None = None
        self.drops = DropLog(str(self.dir), metrics)
        loaded = load(self.dir)
        self._pending: dict[int, Entry] = loaded.pending  # insertion order == seq order
        self._pending_bytes = sum(e.length for e in self._pending.values())
        self._next_seq = loaded.next_seq
        self.drops.add("corrupt", loaded.corrupt, len(self._pending))
        self._files = SegmentFiles(
            self.dir,
            ops=ops or FileOps(),
            fsync=cfg.fsync,
            segment_bytes=segment_bytes or max(16 * 1024, min(cfg.max_bytes // 16, 4 * 1024 * 1024)),
            disk=self._disk,
            segments=loaded.segments,
            size=loaded.bytes,
            next_seq=self._next_seq,
        )
        self._losses = Losses(str(self.dir), self._files, self._disk, cfg.max_memory_bytes)
        self._stop = threading.Event()
        # Syncs (fsync: interval) and retries refused writes when no append or send comes to do it.
        self._flusher = threading.Thread(target=self._background, name="outbox:io", daemon=True)
        self._flusher.start()
        if metrics is not None:
            metrics.outbox_depth.set_function(lambda: self.depth)
            metrics.outbox_bytes.set_function(lambda: self.bytes)
            metrics.outbox_disk_bytes.set_function(lambda: self.disk_bytes)
            metrics.outbox_age.set_function(lambda: self.oldest_age)
        if self._pending:
            log.info(
                "outbox %s: %d unacknowledged events to replay (%d bytes)", self.dir, self.depth, self.bytes
            )

    @staticmethod
    def _scan(data: bytes) -> tuple[list[tuple[int, float, int, int]], int]:
        return scan(data)

    # -- public API ----------------------------------------------------------------------------

    def append(
        self, topic: str, payload: Mapping[str, Any], camera: str = "", event_id: str = ""
    ) -> OutboxRecord:
        """Store one event (durably per the fsync policy, or in memory while the disk refuses) and give
        it the next sequence number. Never raises for disk errors."""
        camera = camera or str(payload.get("camera", ""))
        event_id = event_id or str(payload.get("id", ""))
        ts = time.time()
        with self._lock:
            if self._closed:
                raise RuntimeError("outbox is closed")
            seq = self._next_seq
            self._next_seq += 1
            rec = OutboxRecord(seq, event_id, camera, topic, ts, dict(payload))
            data = encode(rec)
            entry = Entry(seq, None, 0, len(data), time.monotonic(), data)
            self._pending[seq] = entry
            self._pending_bytes += len(data)
            self._held[seq] = entry
            self._held_bytes += len(data)
            self._losses.check(every=False)
            self._retry()
            self._enforce_caps()
            self.drops.tick()
            return rec

    def pending(self, limit: int = 100, after: int = 0) -> list[OutboxRecord]:
        """Up to `limit` unacknowledged records with seq > after, oldest first (so per camera in order)."""
        out: list[OutboxRecord] = []
        with self._lock:
            self._retry()
            self._expire()
            broken: list[int] = []
            for entry in self._pending.values():
                if entry.seq <= after:
                    continue
                try:
                    rec = self._read(entry)
                except OSError as e:  # EIO on read: the record may be fine later; never drop it for this
                    if self._read_error is None:
                        log.error("outbox %s: cannot read a pending record: %s", self.dir, e.strerror or e)
                    self._read_error = str(e)
                    break
                self._read_error = None
                if rec is None:
                    broken.append(entry.seq)
                    continue
                out.append(rec)
                if len(out) >= limit:
                    break
            for seq in broken:
                self._done(seq)
            self.drops.add("corrupt", len(broken), len(self._pending))
            self.drops.tick()
        return out

    def ack(self, seq: int) -> bool:
        """Mark a record delivered; False if it was not pending (already acked or dropped)."""
        with self._lock:
            return self._done(seq)

    def drop(self, seq: int, reason: str) -> bool:
        """Mark a record done undelivered and count it under `reason` (REASONS), e.g. "refused" by the
        MQTT client; False if it was not pending."""
        with self._lock:
            if not self._done(seq):
                return False
            self.drops.add(reason, 1, len(self._pending))
            return True

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def bytes(self) -> int:
        """Bytes of the events not yet acknowledged (records on disk or held in memory)."""
        return self._pending_bytes

    @property
    def disk_bytes(self) -> int:
        """Bytes the segments and ack logs take in the directory."""
        return self._files.size

    @property
    def held(self) -> int:
        """Events held in memory because the disk refused them."""
        return len(self._held)

    @property
    def dropped(self) -> dict[str, int]:
        return self.drops.counts

    @property
    def state(self) -> Literal["ok", "disk_error"]:
        return "ok" if self._disk.error is None else "disk_error"

    @property
    def disk_error(self) -> str | None:
        """Why the disk refuses writes now (events are held in memory meanwhile), else None."""
        return self._disk.error

    @property
    def lost(self) -> str | None:
        """Why the directory or a segment is gone (removed or replaced) and not yet recreated, else None."""
        return self._losses.lost

    def health(self) -> tuple[bool, str]:
        """Whether accepted events are durable now (False while `lost`), and what is wrong or degraded."""
        if self._losses.lost is not None:
            return False, (
                f"outbox {self.dir}: {self._losses.lost}; {self.held} event(s) held in memory until it is "
                f"recreated ({self._disk.error})"
            )
        if not self._flusher.is_alive() and not self._closed:
            return False, f"outbox {self.dir}: its outbox-io thread has ended"
        if self._disk.error is not None:
            return True, f"outbox disk error ({self._disk.error}), {self.held} events held in memory"
        return True, ""

    def status(self) -> dict[str, Any]:
        """The outbox's part of /stats (mqtt.outbox_*)."""
        with self._lock:
            return {
                "outbox_events": self.depth,
                "outbox_bytes": self.bytes,
                "outbox_disk_bytes": self.disk_bytes,
                "outbox_oldest_age_s": round(self.oldest_age, 1),
                "outbox_held_in_memory": self.held,
                "outbox_disk_error": self._disk.error,
                "outbox_lost": self._losses.lost,
                "outbox_losses": self._losses.count,
                "outbox_last_loss": self._losses.last,
                "outbox_dropped": dict(self.dropped),
            }

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
            self._losses.check(every=True)
            self._retry()
            self._files.reset_drained()
            fds = self._files.unsynced()
            self.drops.tick()
        # Outside the lock: an SD card fsync can take tens of ms and appends must not wait for it.
        self._files.sync(fds)

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        with self._lock:
            if self._closed:
                return
            self._losses.check(every=True)
            self._retry(force=True)
        if self.cfg.fsync != "never":
            try:
                self.flush()
            except OSError as e:
                log.warning("outbox %s: final fsync failed: %s", self.dir, e.strerror or e)
        with self._lock:
            self._closed = True
            unwritten = len(self._held) + sum(len(seg.live) for seg in self._files.orphans)
            if unwritten:
                log.error(
                    "outbox %s: %d event(s) held in memory or in removed files could not be written "
                    "before exit (%s)",
                    self.dir,
                    unwritten,
                    self._disk.error,
                )
            self._files.close()
            self.drops.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _background(self) -> None:
        sync_every = self.cfg.fsync_interval_s if self.cfg.fsync == "interval" else float("inf")
        next_sync = time.monotonic() + sync_every
        failing = False
        while not self._stop.wait(min(sync_every, max(0.05, self._disk.retry_s))):
            try:
                if time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + sync_every
                    self.flush()
                    failing = False
                else:
                    with self._lock:
                        if not self._closed:
                            self._losses.check(every=True)
                            self._retry()
                            self._files.reset_drained()
                            self.drops.tick()
            except OSError as e:
                if not failing:  # once per stretch of failures, not once a second
                    log.error("outbox %s: fsync failed: %s", self.dir, e.strerror or e)
                failing = True
            except Exception:  # a bug here must not end durability silently
                log.exception("outbox %s: background thread error", self.dir)

    def _retry(self, force: bool = False) -> None:
        """Write held records (and, after a disk error, unwritten acks); while the disk refuses, try
        again at most every retry_s (or now, with force)."""
        if self._disk.due(force) and (self._disk.error is not None or self._held or self._files.orphans):
            was = self._disk.begin()
            if self._losses.lost is not None or self._files.orphans:
                self._losses.recover(self._pending.values(), self._next_seq, len(self._held))
            if was is not None and self._disk.attempt_ok:
                self._files.write_refused_acks()
            while self._held and self._disk.attempt_ok:  # a refused write ends the attempt
                entry = next(iter(self._held.values()))
                if self._files.append(entry, self._next_seq):
                    del self._held[entry.seq]
                    self._held_bytes -= entry.length
            self._disk.end(was)
        self._disk.settled()
        self._drop_over_memory()

    def _drop_over_memory(self) -> None:
        n = 0
        while self._held_bytes > self.cfg.max_memory_bytes and self._held:
            entry = next(iter(self._held.values()))
            self._done(entry.seq)
            n += 1
        self.drops.add("disk_full", n, len(self._pending))

    def _read(self, entry: Entry) -> OutboxRecord | None:
        data = entry.held if entry.held is not None else self._files.read(entry)
        return decode(data, entry.seq)

    def _done(self, seq: int) -> bool:
        entry = self._pending.pop(seq, None)
        if entry is None:
            return False
        self._pending_bytes -= entry.length
        if entry.seg is None:  # held in memory: nothing on disk to mark
            del self._held[seq]
            self._held_bytes -= entry.length
        else:
            self._files.ack(entry.seg, seq)
        return True

    def _enforce_caps(self) -> None:
        self._expire()
        if self._files.size <= self.cfg.max_bytes:
            return
        dropped = 0
        while self._files.size > self.cfg.max_bytes and self._pending:
            gone = self._files.drop_oldest(self._next_seq)  # whole segments, oldest first
            if gone is None:
                break  # the active segment alone is over the cap and no new one could be made
            for seq in gone:
                entry = self._pending.pop(seq, None)
                if entry is not None:
                    self._pending_bytes -= entry.length
            dropped += len(gone)
        self.drops.add("size_cap", dropped, len(self._pending))

    def _expire(self) -> None:
        limit = time.monotonic() - self.cfg.max_age_s
        n = 0
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.t_mono >= limit:
                break
            self._done(first.seq)
            n += 1
        self.drops.add("age_cap", n, len(self._pending))
