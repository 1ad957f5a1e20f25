"""Log output of the CLI: text or JSON lines on stderr, with journald priorities under systemd.

Owned by the CLI layer: `setup_logging()` is called once per command, on the main thread, before any
other thread starts; the handler it installs is thread-safe (logging's own lock), so every thread logs
through it.

- JSON (`logging.json_format: true`): one object per line from python-json-logger's formatter, with
  the field names log shippers map without rules (Vector's and Datadog's defaults, Loki's and Fluent
  Bit's usual ones): `timestamp` (RFC 3339, UTC, milliseconds, `Z`), `level` (`INFO`, `WARNING`, ...),
  `logger`, `message`, `thread`, `exception` (a traceback, one string) and any structured field a
  call passes with `extra=` (e.g. `camera`). docs/operations.md has the mapping and a `jq` example.
- Under systemd (`JOURNAL_STREAM` set) each line starts with the sd-daemon priority prefix `<N>`
  (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald strips and records as the
  entry's PRIORITY, so `journalctl -u edged -p warning` works; the unit's `SyslogIdentifier=edged`
  names the entries. journald adds its own timestamps, so the text format leaves them out there.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, date, datetime, time
from typing import IO

from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.json import JsonFormatter as _LibJsonFormatter

LEVELS = ("debug", "info", "warning", "error")

# sd-daemon(3) priorities: the syslog levels journald understands in a "<N>" line prefix.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level; a custom level between two named ones takes the lower one's."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def iso_utc(created: float) -> str:
    """`2026-11-30T12:15:39.630Z`: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The record attributes a JSON line carries, and their names there; `extra=` fields follow as they are.
JSON_FIELDS = {"levelname": "level", "name": "logger", "message": "message", "threadName": "thread"}
JSON_RENAMES = {**JSON_FIELDS, "exc_info": "exception", "stack_info": "stack"}


class _Encoder(JsonEncoder):
    """python-json-logger's encoder (datetimes, exceptions, dataclasses...; anything else as its repr)
    with times as `2026-11-30T12:15:39.630Z`, like the events' `captured_at`."""

    def format_datetime_obj(self, o: time | date | datetime) -> str:
        if isinstance(o, datetime):
            return iso_utc(o.timestamp())
        return super().format_datetime_obj(o)


class JsonFormatter(_LibJsonFormatter):
    """One JSON object per record: timestamp, level, logger, message, thread (+ exception, stack and
    the record's `extra=` fields)."""

    def __init__(self) -> None:
        super().__init__(
            list(JSON_FIELDS),
            rename_fields=JSON_RENAMES,
            timestamp=True,
            defaults={"timestamp": None},  # the first key (the library fills it in last)
            json_encoder=_Encoder,
            json_ensure_ascii=False,
        )


class JournalPrefix(logging.Formatter):
    """Wraps another formatter and prefixes `<N>`; a multi-line message keeps the prefix on each line,
    because journald reads every line of the stream as its own entry."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def make_formatter(json_format: bool, under_journal: bool) -> logging.Formatter:
    if json_format:
        fmt: logging.Formatter = JsonFormatter()
    elif under_journal:
        fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JournalPrefix(fmt) if under_journal else fmt


def parse_level(level: str) -> int:
    """`DEBUG`, `debug`, `Warning`... -> the logging level; ValueError names the accepted ones."""
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LEVELS)})")
    return int(getattr(logging, name.upper()))


def setup_logging(level: str = "info", json_format: bool = False, stream: IO[str] | None = None) -> None:
    """Replace the root handlers with one stderr handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(json_format, bool(os.environ.get("JOURNAL_STREAM"))))
    logging.basicConfig(level=parse_level(level), handlers=[handler], force=True)
