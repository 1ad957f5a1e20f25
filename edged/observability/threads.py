"""Threads the OS can name: every Python thread of the daemon carries its role name into the kernel
(`/proc/<pid>/task/*/comm`, what `top -H`, `ps -L` and py-spy's native view show), and `/stats` lists
them with the CPU each has used, so "which thread eats the CPU" has an answer without a profiler.

CPython (before 3.14) does not tell the OS its threads' names. `install()` sets a one-shot profile hook
for threads started afterwards (`threading.setprofile`): its first call, on the new thread, names the
thread with prctl(PR_SET_NAME) (15 bytes: the kernel's limit) and removes itself, so the thread runs
unprofiled from then on. A name given later from another thread (`thread.name = ...`, e.g. an abandoned
capture thread) stays Python's; `rename` names the calling thread for both, `rename_thread` another
thread of this process (through /proc/self/task/<tid>/comm). Thread pools take `pool_worker` as their
initializer (`deliv_0` becomes `deliv:0`); threads a library starts under its own name are renamed by
`library_threads` (paho's network loop becomes `mqtt:net`). Linux only; elsewhere the OS names stay.

Names follow `<role>:<owner>` (`cap:gate`, `srv:text_det`, `deliv:0`), or the role alone for the
one thread of its kind (`disp`, `http`, `wdog`); docs/operations.md ("Threads") lists them all.
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
MAX_BYTES = 15  # the kernel's limit (TASK_COMM_LEN 16, with its NUL)
_libc: Any = None
_installed = False
# Python name prefix of a thread a library starts -> the role name it gets (`library_threads`).
_library: dict[str, str] = {}


def _prctl_name(name: str) -> None:
    global _libc
    if not sys.platform.startswith("linux"):
        return
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    with contextlib.suppress(Exception):
        _libc.prctl(PR_SET_NAME, os_name(name), 0, 0, 0)


def os_name(name: str) -> bytes:
    """What the kernel keeps of a thread name: its first 15 bytes."""
    return name.encode("utf-8", "replace")[:MAX_BYTES]


def rename(name: str) -> None:
    """Name the calling thread, for Python and for the OS."""
    threading.current_thread().name = name
    _prctl_name(name)


def rename_thread(thread: threading.Thread, name: str) -> None:
    """Name another (started) thread of this process, for Python and for the OS."""
    thread.name = name
    if thread.native_id is not None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            Path(f"/proc/self/task/{thread.native_id}/comm").write_bytes(os_name(name))


def pool_worker() -> None:
    """ThreadPoolExecutor initializer: its worker `<prefix>_<n>` is named `<prefix>:<n>`."""
    prefix, _, n = threading.current_thread().name.rpartition("_")
    rename(f"{prefix}:{n}")


def library_threads(names: dict[str, str]) -> None:
    """Threads started later whose Python name begins with a key get its value as their name."""
    _library.update(names)


def _first_call(frame: Any, event: str, arg: Any) -> None:
    sys.setprofile(None)  # one shot: this thread is not profiled
    thread = threading.current_thread()
    for prefix, name in _library.items():
        if thread.name.startswith(prefix):
            thread.name = name
            break
    _prctl_name(thread.name)


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
