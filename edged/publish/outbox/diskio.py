"""The outbox's file operations, as one object so a test can pass in one that fails.

`FileOps` is what the outbox's SegmentFiles calls for every write-side operation; the default does
plain os calls. Tests subclass it to fail with ENOSPC/EIO or write short at chosen byte offsets: the
fault is always passed in by the caller, never read from the environment. `append_all` is the one place
that turns a failed or short append back into "nothing happened" by truncating to the size before it, so
the file and the caller's bookkeeping agree at every byte. `DiskState` tracks a stretch of refused
writes: the Outbox owns it and decides from it when to try again, SegmentFiles reports failures to it.
All of it is called under the Outbox's lock, except the fdatasync of duplicated fds at a flush.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("edged.publish.outbox")


class FileOps:
    """Plain os calls. Subclass to inject faults (tests only)."""

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)


class TornWrite(OSError):
    """An append failed and could not be cut back: the file ends in a partial record (seal it)."""


def append_all(ops: FileOps, fd: int, data: bytes, size: int, *, sync: bool = False) -> None:
    """Append all of `data` to a file of `size` bytes, or leave it at `size` and raise the OSError.

    Raises TornWrite when the cut back failed too, so the caller stops appending to that file.
    """
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            n = ops.write(fd, view[written:])
            if n <= 0:  # a 0-byte write would loop forever; treat it as the device refusing
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += n
        if sync:
            # After a failed fdatasync the kernel may have dropped the dirty pages: the bytes are no
            # longer known to be on disk, so the record is undone like a failed write.
            ops.fdatasync(fd)
    except OSError as e:
        if written:
            try:
                ops.truncate(fd, size)
            except OSError as cut:
                raise TornWrite(
                    e.errno, f"{e.strerror or e}; cutting back failed: {cut.strerror or cut}"
                ) from e
        raise


class DiskState:
    """Whether the disk takes the outbox's writes, when to try again, and the two log lines per stretch.

    A nearly full disk flaps (an append still fits in a file's last, partly used page), so recovery is
    announced only once writes have gone through for `settle_s`: one "write failed" line when a stretch
    starts and one "takes writes again" when it is over, however often it flapped in between.
    """

    def __init__(self, where: str, hold_bytes: int, retry_s: float, settle_s: float = 5.0) -> None:
        self.where, self.hold_bytes, self.retry_s, self.settle_s = where, hold_bytes, retry_s, settle_s
        self.error: str | None = None  # why the disk refuses writes now (kept during a retry: no flicker)
        self.attempt_ok = True  # nothing failed since begin()
        self._failing = False  # "write failed" was logged and "takes writes again" not yet
        self._last = ""
        self._recovered_at = 0.0
        self._next_try = 0.0

    def failed(self, why: str) -> None:
        if not self._failing:
            log.error(
                "outbox %s: write failed (%s); holding events in memory (up to %d bytes) until the disk "
                "takes writes again",
                self.where,
                why,
                self.hold_bytes,
            )
        self.error = self._last = why
        self._failing = True
        self.attempt_ok = False

    def lost(self, why: str) -> None:
        """Like `failed`, for a loss the Outbox has logged itself (its directory or a segment removed or
        replaced): no line of its own here, nor for the failures that follow until the stretch is over."""
        self.error = self._last = why
        self._failing = True
        self.attempt_ok = False

    def due(self, force: bool = False) -> bool:
        return self.error is None or force or time.monotonic() >= self._next_try

    def begin(self) -> str | None:
        """Start an attempt; returns the error it follows (None if there was none)."""
        self.attempt_ok = True
        return self.error

    def end(self, was: str | None) -> None:
        now = time.monotonic()
        if not self.attempt_ok:
            self._next_try = now + self.retry_s
        elif was is not None:
            self.error = None
            self._recovered_at = now
        self.settled()

    def settled(self) -> None:
        if self._failing and self.error is None and time.monotonic() - self._recovered_at >= self.settle_s:
            self._failing = False
            log.warning("outbox %s: the disk takes writes again (after: %s)", self.where, self._last)
