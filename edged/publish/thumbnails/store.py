"""Event thumbnails on disk: one JPEG per event (or track) in one folder, capped in bytes.

The folder survives restarts (it lives under state_dir), so files from earlier runs count against the
cap and are served as long as they are kept. When the total goes over `max_bytes` the oldest files
(by modification time, i.e. by when they were written) are deleted first, each deletion reported to
`on_delete` so the daemon can count it.

Threading: `put` runs on the thumbnail worker thread, `get` on HTTP handler threads; the index is
guarded by a lock, file reads are not (a file deleted between lookup and read is simply not found).
Names are checked against a strict pattern and must resolve inside the folder, so an HTTP path can
never read anything else (no `..`, no slashes, no absolute paths).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# Event and track ids ("gate-01:gate:3f2a9c1b0d4e:17", "...:t4") plus ".jpg"; no leading dot.
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,199}\.jpg$")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and ".." not in name


class ThumbnailStore:
    def __init__(self, directory: Path, max_bytes: int, on_delete: Callable[[int], None] | None = None):
        self.dir = directory
        self.max_bytes = max_bytes
        self.on_delete = on_delete
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()  # name -> size, oldest first
        self._bytes = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        found: list[tuple[float, str, int]] = []
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".tmp"):  # a write cut short by a crash
                Path(entry.path).unlink(missing_ok=True)
            elif entry.is_file() and valid_name(entry.name):
                st = entry.stat()
                found.append((st.st_mtime, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._files[name] = size
            self._bytes += size
        if found:
            log.info(
                "thumbnails: %d file(s), %d bytes kept from earlier runs in %s",
                len(found),
                self._bytes,
                self.dir,
            )
        self._prune()

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def count(self) -> int:
        return len(self._files)

    def path(self, name: str) -> Path | None:
        """The file for `name`, or None when the name is not one this store could have written."""
        if not valid_name(name):
            return None
        path = self.dir / name
        return path if path.parent == self.dir else None

    def put(self, name: str, data: bytes) -> None:
        """Write (or replace) one thumbnail atomically, then delete the oldest ones over the cap."""
        path = self.path(name)
        if path is None:
            raise ValueError(f"invalid thumbnail name {name!r}")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._lock:
            self._bytes += len(data) - self._files.pop(name, 0)
            self._files[name] = len(data)  # a replaced track thumbnail becomes the newest
        self._prune()

    def get(self, name: str) -> bytes | None:
        path = self.path(name)
        if path is None:
            return None
        with self._lock:
            if name not in self._files:
                return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._files

    def _prune(self) -> None:
        deleted = 0
        while True:
            with self._lock:
                # The newest file always stays, even alone over the cap: it is the one just written.
                if self._bytes <= self.max_bytes or len(self._files) <= 1:
                    break
                name, size = self._files.popitem(last=False)
                self._bytes -= size
            try:
                (self.dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("thumbnails: cannot delete %s: %s", name, e)
            deleted += 1
        if deleted and self.on_delete is not None:
            self.on_delete(deleted)
