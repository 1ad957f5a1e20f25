"""A throwaway mosquitto for the scripts (soak, status screenshot): a subprocess on a free local port,
anonymous, no queue limit, its log in the folder given. Scripts never import tests/ (tests have their own
restartable broker in tests/support/broker.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

MOSQUITTO = os.environ.get("EDGED_MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(folder: Path, binary: str = MOSQUITTO) -> Iterator[int]:
    """Run mosquitto until the block ends; yields its port once it accepts connections."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    with (folder / "mosquitto.log").open("wb") as log:
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if broker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: see {folder / 'mosquitto.log'}")
            time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            broker.wait(5)
        if broker.poll() is None:
            broker.kill()
