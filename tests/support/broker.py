"""A real broker for tests: a mosquitto subprocess on a free local port (clients: clients.py).

`Mosquitto` writes a config file, starts /usr/sbin/mosquitto (or $EDGED_MOSQUITTO) on a free local port
and can be stopped, killed and started again on the SAME port, so that clients reconnect to it as they
would to a rebooted broker. Test support only: the daemon never imports it; scripts/status_screenshot.py
does, to run a demo broker beside a real `edged run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.tls import TlsFiles

log = logging.getLogger(__name__)

MOSQUITTO = os.environ.get("EDGED_MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto broker subprocess on 127.0.0.1:<port>, restartable on the same port.

    `users` (name → password) turns on a password file and disables anonymous access; `tls` makes the
    listener TLS-only; `persistence` keeps retained messages, sessions and queued QoS 1 messages across
    restarts, saved after every change so that even `kill()` (SIGKILL) loses nothing.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = tls
        self.users = users
        self.persistence = persistence
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type all",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto", which cannot read a root-only tmp dir.
            lines.append("user root")
        if self.users is not None:
            pw_file = self.workdir / "passwords"
            pw_file.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                flag = ["-c"] if i == 0 else []
                subprocess.run(
                    ["mosquitto_passwd", *flag, "-b", str(pw_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                "tls_version tlsv1.2",
            ]
        if self.persistence:
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {data}/",
                "autosave_interval 1",
                "autosave_on_changes true",
            ]
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Mosquitto:
        if self.running:
            return self
        logf = self.log_file.open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_file)], stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            # A bound port may still belong to the previous process in TIME_WAIT; connect proves it is ours.
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port}: {self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful shutdown (SIGTERM): clients see a disconnect, persistence is saved."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a power cut; no will of its own, no goodbye to clients."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
