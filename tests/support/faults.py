"""Fault hooks passed in by tests (never read from the environment by the daemon)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from edged.publish.outbox.diskio import FileOps


class FailingDisk(FileOps):
    """Fake disk (fault hook): once `budget` bytes have gone to files of suffix `kind`, writes to them
    fail with `err` (a write that straddles the budget is short, as on a full Linux filesystem)."""

    def __init__(
        self, err: int = errno.ENOSPC, *, kind: str = ".seg", chunk: int = 0, cut_fails: bool = False
    ) -> None:
        self.err, self.kind, self.chunk, self.cut_fails = err, kind, chunk, cut_fails
        self.budget: int | None = None  # None: no fault
        self.sync_fails = False
        self.refuse_new_files = False  # creating a file fails too while the budget is spent
        self._kinds: dict[int, str] = {}

    def full_after(self, n: int | None) -> None:
        self.budget = n

    def open_append(self, path: Path) -> int:
        if self.budget == 0 and self.refuse_new_files:
            raise OSError(self.err, os.strerror(self.err))
        fd = super().open_append(path)
        self._kinds[fd] = path.suffix
        return fd

    def write(self, fd: int, data: memoryview) -> int:
        n = len(data) if not self.chunk else min(self.chunk, len(data))
        if self._kinds.get(fd) == self.kind and self.budget is not None:
            if self.budget == 0:
                raise OSError(self.err, os.strerror(self.err))
            n = min(n, self.budget)
            self.budget -= n
        return os.write(fd, data[:n])

    def truncate(self, fd: int, size: int) -> None:
        if self.cut_fails and self.budget == 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().truncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        if self.sync_fails:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)
