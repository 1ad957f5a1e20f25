"""edged.cli.progress: a bar on a real pseudo-terminal, throttled plain log lines when stderr is a pipe."""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
import time

import pytest

from edged.cli.progress import Progress
from tests.support.paths import ROOT

# The child reports 200 steps of a 200-step job, then a second job of unknown length.
CHILD = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from edged.cli.progress import Progress
    with Progress("extract models", total=200, unit="MiB") as p:
        for i in range(200):
            p.update(i + 1)
    with Progress("engine text_det") as p:
        cb = p.phase_callback()
        for step in range(5):
            cb("Building engine", step + 1, 5)
    """
)


def _run_child(stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _read_all(fd: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end of the pty
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_tty_draws_one_redrawn_bar_line() -> None:
    master, slave = pty.openpty()
    try:
        proc = _run_child(slave)
        os.close(slave)
        raw = _read_all(master, proc)
        assert proc.wait(30) == 0, raw.decode(errors="replace")
    finally:
        os.close(master)
    text = raw.decode()
    # The pty turns \n into \r\n; strip that so only the bar's own carriage returns remain.
    lines = text.replace("\r\n", "\n").split("\n")
    bar_line = lines[0]
    assert bar_line.count("\r") >= 10, "the bar must redraw in place"
    assert "[##############################] 100.0% 200/200 MiB" in bar_line
    assert "extract models [" in bar_line and "done in" in bar_line
    # Only changed lines are drawn: 200 updates, one per 0.5 %, each draw distinct.
    assert bar_line.count("\r") <= 201
    assert "engine text_det [##############################] 100.0% 5/5 Building engine" in lines[1]
    assert "INFO" not in text, "no log lines on a terminal"


def test_pipe_logs_plain_throttled_lines() -> None:
    proc = _run_child(subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    text = err.decode()
    assert "\r" not in text, "journald must not get carriage returns"
    lines = [ln for ln in text.splitlines() if "extract models" in ln]
    # start, every 10 % (10..100) and the closing line: a dozen lines, not 200.
    assert 10 <= len(lines) <= 13, lines
    assert lines[0].startswith("INFO edged.cli.progress: extract models: 0% (1/200 MiB)")
    assert any("50% (100/200 MiB)" in ln for ln in lines)
    assert "done in" in lines[-1]
    engine = [ln for ln in text.splitlines() if "engine text_det" in ln]
    assert engine[0].endswith("20% (1/5) Building engine") and "done in" in engine[-1]


def test_time_based_lines_without_a_total(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    p = Progress("bench", tty=False, every_s=5.0, clock=lambda: now[0], logger=logging.getLogger("t"))
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(60):  # one update per simulated second
            now[0] = float(i)
            p.update(i + 1)
        p.close()
    msgs = [r.getMessage() for r in caplog.records]
    # first update, then one every 5 simulated seconds (t=5..55), then the end
    assert msgs[0] == "bench: 1" and msgs[1] == "bench: 6" and msgs[-1] == "bench: done in 59.0 s"
    assert len(msgs) == 13, msgs


def test_exception_marks_failure_and_updates_after_close_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="edged.cli.progress"):
        with pytest.raises(KeyError), Progress("job", total=4, tty=False) as p:
            p.update(2)
            raise KeyError("x")
        p.update(3)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["job: 50% (2/4)", "job: failed (KeyError)"]
