"""Threads named for the OS: after `install()`, a new thread's kernel name (/proc/self/task/<tid>/comm,
what top -H and ps -L show) is its Python name, and `table()` lists it with its CPU time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edged.observability import threads


def test_new_threads_carry_their_names_to_the_kernel() -> None:
    threads.install()
    seen: dict[str, str] = {}
    go = threading.Event()

    def work() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:  # some CPU, so cpu_s can show it
            pass
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
        go.wait(5)

    t = threading.Thread(target=work, name="srv:text_det-long-name", daemon=True)
    t.start()
    while "comm" not in seen:
        time.sleep(0.01)
    row = next(r for r in threads.table() if r["name"] == "srv:text_det-long-name")
    go.set()
    t.join(5)
    assert seen["comm"] == "srv:text_det-lo"  # the kernel keeps 15 bytes
    assert row["tid"] == t.native_id and row["daemon"] is True and row["cpu_s"] is not None


def test_rename_names_the_calling_thread() -> None:
    out: list[str] = []

    def work() -> None:
        threads.rename("cap:gate")
        out.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        out.append(threading.current_thread().name)

    t = threading.Thread(target=work)
    t.start()
    t.join(5)
    assert out == ["cap:gate", "cap:gate"]


def comm(tid: int | None) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def test_pool_workers_library_threads_and_renamed_threads_carry_role_names() -> None:
    from concurrent.futures import ThreadPoolExecutor

    threads.install()
    with ThreadPoolExecutor(2, thread_name_prefix="deliv", initializer=threads.pool_worker) as pool:
        seen = set(
            pool.map(lambda _: (threading.current_thread().name, comm(threading.get_native_id())), [0])
        )
    assert seen == {("deliv:0", "deliv:0")}

    threads.library_threads({"paho-mqtt-client-": "mqtt:net"})
    out: list[tuple[str, str]] = []
    go = threading.Event()

    def work() -> None:
        out.append((threading.current_thread().name, comm(threading.get_native_id())))
        go.wait(5)

    lib = threading.Thread(target=work, name="paho-mqtt-client-edged-gate", daemon=True)
    lib.start()
    while not out:
        time.sleep(0.01)
    assert out == [("mqtt:net", "mqtt:net")]
    threads.rename_thread(lib, "stuck:gate:1")  # from another thread: Python's name and the OS's
    assert lib.name == "stuck:gate:1" and comm(lib.native_id) == "stuck:gate:1"
    go.set()
    lib.join(5)
