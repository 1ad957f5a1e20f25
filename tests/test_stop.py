"""A clean stop at any moment of a cold start (issue 27, item 3), on a real `edged run` subprocess.

A cold start (empty engine cache) runs the real PP-OCR detector and recognizer and, beside them, one
background engine build per model (ONNX Runtime's offline optimization, in builder processes); each
built engine is loaded, warmed and swapped in while the cameras run. SIGTERM lands at one of five
points of that: before any model, while a model warms up, at the start-up summary (builds in flight),
when a built engine has just been loaded (its warm-up and swap under way), and after the swaps. Every
time the process must exit 0 within a few seconds, without the C++ runtime's abort ("terminate called
without an active exception", exit -6: an ONNX Runtime session still alive on a thread at interpreter
exit) and without a traceback.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, wait_until, warm_all_config

STOP_LIMIT_S = 8.0  # "within a few seconds" on a shared 2-core machine


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


POINTS = {
    # what has happened when SIGTERM is sent (a log line, or the signal handlers being in place)
    "before the models": None,
    "while a model warms up": "model text_rec: warming",
    "at the start-up summary": "startup summary",
    "a built engine just loaded": "model text_rec: onnxruntime engine ready",
    "after the swaps": "model text_rec: now serving on",
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigterm_at_any_point_of_a_cold_start_exits_0_without_abort(tmp_path: Path, point: str) -> None:
    config = warm_all_config(tmp_path, "stop", free_port())
    proc = EdgedProcess(config)
    marker = POINTS[point]
    try:
        if marker is None:
            assert wait_until(lambda: _catches_sigterm(proc.proc.pid), 30, step=0.005), proc.text()
        else:
            assert wait_until(lambda: marker in proc.text() or not proc.alive, 120, step=0.02), proc.text()
            assert proc.alive, proc.text()
            if point == "after the swaps":
                time.sleep(2.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    log = proc.text()
    assert "terminate called" not in log and code != -signal.SIGABRT, f"aborted ({code}):\n{log[-3000:]}"
    assert code == 0, f"exit {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert took <= STOP_LIMIT_S, f"the stop took {took:.1f} s:\n{log[-3000:]}"
    print(f"\n[stop] SIGTERM {point}: exit 0 after {took:.1f} s")
