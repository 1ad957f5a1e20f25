"""The outbox's file operations, as one object so a test can pass in one that fails.

`FileOps` is what the outbox calls for every write-side operation; the default does plain os calls.
Tests subclass it to fail with ENOSPC/EIO or write short at chosen byte offsets: the fault is always
passed in by the caller, never read from the environment. `append_all` is the one place that turns a
failed or short append back into "nothing happened" by truncating to the size before it, so the file and
the caller's bookkeeping agree at every byte. Stateless apart from what a subclass keeps; the outbox
calls it under its own lock.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


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
                raise TornWrite(e.errno, f"{e.strerror or e}; cutting back failed: {cut.strerror or cut}") from e
        raise
