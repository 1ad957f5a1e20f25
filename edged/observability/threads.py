"""Threads the OS can name: every Python thread of the daemon carries its role name into the kernel
(`/proc/<pid>/task/*/comm`, what `top -H`, `ps -L` and py-spy's native view show), and `/stats` lists
them with the CPU each has used, so "which thread eats the CPU" has an answer without a profiler.

CPython (before 3.14) does not tell the OS its threads' names. `install()` sets a one-shot profile hook
for threads started afterwards (`threading.setprofile`): its first call, on the new thread, names the
thread with prctl(PR_SET_NAME) (15 bytes: the kernel's limit) and removes itself, so the thread runs
unprofiled from then on. A name given later from another thread (`thread.name = ...`, e.g. an abandoned
capture thread) stays Python's; `rename` names the calling thread for both. Linux only; elsewhere the
OS names stay as they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Any

PR_SET_NAME = 15
_libc: Any = None
_installed = False


def _prctl_name(name: str) -> None:
    global _libc
    if not sys.platform.startswith("linux"):
        return
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    with contextlib.suppress(Exception):
        _libc.prctl(PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)


def rename(name: str) -> None:
    """Name the calling thread, for Python and for the OS."""
    threading.current_thread().name = name
    _prctl_name(name)


def _first_call(frame: Any, event: str, arg: Any) -> None:
    sys.setprofile(None)  # one shot: this thread is not profiled
    _prctl_name(threading.current_thread().name)


def install() -> None:
    """Name every thread started from now on after its Python name (idempotent)."""
    global _installed
    if not _installed:
        _installed = True
        threading.setprofile(_first_call)


def _cpu_s(tid: int) -> float | None:
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table() -> list[dict[str, Any]]:
    """The live Python threads: name, OS thread id, daemon flag and CPU seconds used so far."""
    out = []
    for t in threading.enumerate():
        tid = t.native_id
        cpu = _cpu_s(tid) if tid is not None else None
        out.append(
            {"name": t.name, "tid": tid, "daemon": t.daemon, "cpu_s": None if cpu is None else round(cpu, 2)}
        )
    return sorted(out, key=lambda r: r["name"])
