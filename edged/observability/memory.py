"""The process's own memory, for /stats and the start-up summary: resident set size from /proc (Linux).

`process_rss_mb()` is VmRSS of this process (what `top` shows as RES, what the issue's figures quote);
the supervisor records it around each model's load, so /stats can say what a model took when it loaded
(its sessions, weights and first warm-up; the arena grows later with the shapes it runs: the total is
the process figure). Threads: any; it reads a file.
"""

from __future__ import annotations

from pathlib import Path


def process_rss_mb() -> float | None:
    """This process's resident set size in MiB, or None where /proc has no VmRSS (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb() -> float | None:
    """The largest resident set size this process had (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
