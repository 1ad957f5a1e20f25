"""sd_notify and the watchdog against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.observability.health.notify import Notifier, Watchdog, watchdog_interval


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a bound SOCK_DGRAM socket, read one datagram at a time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.settimeout(10)

    def recv(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def drain(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(4096).decode()
                except BlockingIOError:
                    return out
                out.append(dict(line.split("=", 1) for line in data.split("\n")))
        finally:
            self.sock.settimeout(10)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    if len(str(path)) > 100:  # sun_path holds 108 bytes; pytest's tmp_path can be longer
        path = Path(tempfile.mkdtemp(prefix="edged-", dir="/tmp")) / "notify"
    fake = FakeSystemd(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()


def test_unset_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_messages_arrive(systemd: FakeSystemd) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready("2 cameras running")
    assert systemd.recv() == {"READY": "1", "STATUS": "2 cameras running"}
    assert n.status("gate: 15 fps\nwith a second line")
    assert systemd.recv() == {"STATUS": "gate: 15 fps with a second line"}  # a newline must not split fields
    assert n.stopping()
    assert systemd.recv() == {"STOPPING": "1"}
    assert n.watchdog()
    assert systemd.recv() == {"WATCHDOG": "1"}
    assert n.extend_timeout(90)
    assert systemd.recv() == {"EXTEND_TIMEOUT_USEC": "90000000"}
    n.close()


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    n = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = systemd.recv()
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"@edged-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fake = FakeSystemd(name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert Notifier().ready()
        assert fake.recv() == {"READY": "1"}
    finally:
        fake.close()


def test_missing_socket_fails_softly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="edged.observability.health.notify"):
        assert n.watchdog() is False
        assert n.watchdog() is False
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1  # said once, not per ping


def test_full_socket_never_blocks_the_sender(systemd: FakeSystemd) -> None:
    n = Notifier()
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(n.watchdog() for _ in range(2000)), daemon=True)
    sender.start()
    sender.join(timeout=30)  # a hang guard: a blocking sendto would never return here
    assert not sender.is_alive()
    assert True in results and False in results  # the queue filled (nobody read) and sends were dropped


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),
        ("garbage", None, None),
        ("0", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for var, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert watchdog_interval() == expected


class Progress:
    """A progress probe whose answer the test flips, counting how often the watchdog asked."""

    def __init__(self) -> None:
        self.ok = True
        self.lock = threading.Lock()
        self.true_calls = 0
        self.false_calls = 0

    def __call__(self) -> tuple[bool, str]:
        with self.lock:
            if self.ok:
                self.true_calls += 1
                return True, ""
            self.false_calls += 1
            return False, "camera gate: no frame for 12 s"


def _wait_calls(progress: Progress, false_calls: int) -> None:
    deadline = time.monotonic() + 10  # hang guard only
    while progress.false_calls < false_calls:
        assert time.monotonic() < deadline, "watchdog thread stopped asking for progress"
        time.sleep(0.01)


def test_watchdog_pings_only_while_progressing(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    progress = Progress()
    wd = Watchdog(Notifier(), progress, interval_s=0.05)
    caplog.set_level(logging.INFO, logger="edged.observability.health.notify")
    wd.start()
    try:
        # Progressing: pings arrive.
        for _ in range(3):
            assert systemd.recv() == {"WATCHDOG": "1"}

        # Wedged: the probe keeps being asked, but nothing is sent.
        with progress.lock:
            progress.ok = False
            pings_before = progress.true_calls
        _wait_calls(progress, 5)
        late = [m for m in systemd.drain() if m == {"WATCHDOG": "1"}]
        # Each ping answers one True probe: the pings still queued are exactly those from before the stall.
        assert 3 + len(late) == pings_before
        _wait_calls(progress, 10)
        assert systemd.drain() == []
        stalls = [r for r in caplog.records if r.levelno == logging.WARNING and "withholding" in r.message]
        assert len(stalls) == 1 and "no frame for 12 s" in stalls[0].getMessage()

        # Recovered: pings resume.
        with progress.lock:
            progress.ok = True
        for _ in range(3):
            assert systemd.recv() == {"WATCHDOG": "1"}
        assert any("resuming" in r.getMessage() for r in caplog.records)
    finally:
        wd.stop()
    assert wd.pings == progress.true_calls


def test_watchdog_of_another_pid_never_pings(systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    progress = Progress()
    # The summary keeps the thread busy, so the absence of pings is not just an idle thread.
    wd = Watchdog(Notifier(), progress, summary=lambda: "ok", summary_interval_s=0.01)
    assert wd.interval_s is None
    wd.start()
    try:
        msgs = [systemd.recv() for _ in range(5)]
    finally:
        wd.stop()
    assert msgs == [{"STATUS": "ok"}] * 5
    assert progress.true_calls == 0
    assert all("WATCHDOG" not in m for m in systemd.drain())


def test_watchdog_interval_from_environment(systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    wd = Watchdog(Notifier(), Progress())
    assert wd.interval_s == pytest.approx(0.05)
    wd.start()
    try:
        assert systemd.recv() == {"WATCHDOG": "1"}
    finally:
        wd.stop()


def test_summary_and_pings_interleave(systemd: FakeSystemd) -> None:
    summaries = iter(f"frames {i}" for i in range(10**6))
    wd = Watchdog(
        Notifier(), Progress(), interval_s=0.02, summary=lambda: next(summaries), summary_interval_s=0.0
    )
    wd.start()
    try:
        msgs = [systemd.recv() for _ in range(6)]
    finally:
        wd.stop()
    assert {"WATCHDOG": "1"} in msgs
    statuses = [m["STATUS"] for m in msgs if "STATUS" in m]
    assert statuses[:2] == ["frames 0", "frames 1"]


def test_progress_probe_that_raises_counts_as_stall(systemd: FakeSystemd) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("probe bug")

    wd = Watchdog(Notifier(), broken, interval_s=1.0)
    assert wd.check() is False
    assert wd.check() is False
    assert systemd.drain() == []


def test_no_socket_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    progress = Progress()
    wd = Watchdog(Notifier(), progress, interval_s=0.01)
    assert not wd.active
    wd.start()
    wd.stop()
    assert progress.true_calls == 0
