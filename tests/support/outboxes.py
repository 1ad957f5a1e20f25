"""Outbox test helpers: a config on a folder, numbered events, and reading what an outbox holds.

`reopened` opens the folder as the next start would and closes it again: an outbox left open keeps
its `outbox:io` thread watching the folder (tests/conftest.py fails the test that leaves one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edged.config.schema import OutboxConfig
from edged.publish.outbox.store import Outbox


def cfg(path: Path, **kw: Any) -> OutboxConfig:
    return OutboxConfig(dir=path, fsync=kw.pop("fsync", "never"), **kw)


def event(i: int, camera: str = "cam", label_len: int = 20) -> dict[str, Any]:
    return {
        "id": f"dev:{camera}:run:{i}",
        "camera": camera,
        "seq": i,
        "detections": [{"label": "x" * label_len}],
    }


def ids(box: Outbox) -> list[int]:
    """The numbers of the events `box` still holds, in order."""
    return [int(r.id.rsplit(":", 1)[1]) for r in box.pending(10_000)]


def reopened(directory: Path) -> list[int]:
    """What an outbox opened on `directory` (as at the next start) holds."""
    with Outbox(cfg(directory)) as box:
        return ids(box)
