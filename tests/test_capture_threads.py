"""Capture threads: one per camera plus one shared watcher, the watcher's stall verdicts among many cameras,
its lifetime and its liveness check. Real video files through OpenCV, real threads counted by name."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.capture.sources import make_source
from edged.capture.watcher import WATCHER, CaptureWatcher
from edged.capture.worker import CameraCapture
from edged.observability.metrics import Metrics
from tests.support.edged import wait_until
from tests.support.sources import LiveSources, SyntheticSource, write_test_video

wait_for = functools.partial(wait_until, timeout=5.0, step=0.01)


def thread_names() -> list[str]:
    return [t.name for t in threading.enumerate()]


@pytest.fixture
def cams() -> Iterator[list[CameraCapture]]:
    started: list[CameraCapture] = []
    yield started
    for cam in started:
        cam.stop()


def test_n_cameras_run_on_n_threads_and_one_watcher_which_reopens_a_stalled_one(
    tmp_path: Path, cams: list[CameraCapture]
) -> None:
    video = write_test_video(tmp_path / "gate.mp4", 30, fps=30, size=(64, 48))
    metrics = Metrics()
    files = [f"thr{i}" for i in range(7)]
    for name in files:
        cam = CameraCapture(
            name, lambda: make_source(str(video)), fps=10, loop=True, frame_timeout_s=2.0, metrics=metrics
        )
        cams.append(cam.start())
    live = LiveSources(fps=100)
    made = live.made
    dark = CameraCapture("thr-dark", live, fps=10, frame_timeout_s=0.3, reconnect_min_s=0.05, metrics=metrics)
    cams.append(dark.start())
    names = [*files, "thr-dark"]
    mine = {f"capture-{n}" for n in names}

    def ours() -> list[str]:
        return [t for t in thread_names() if t.startswith("capture-thr")]

    # Every camera streams on exactly one thread of its own, and one watcher serves them all.
    assert all(c.get(5.0) is not None for c in cams)
    assert sorted(ours()) == sorted(mine)
    assert thread_names().count("capture-watcher") == 1
    assert (
        WATCHER.thread is not None and WATCHER.thread.name == "capture-watcher" and WATCHER.thread.is_alive()
    )

    # One camera's read blocks for good: the watcher abandons it and a new thread reopens the camera.
    last = {c.name: -1 for c in cams}

    def consume() -> None:
        for c in cams:
            f = c.get(0.0)
            if f is not None:
                assert f.seq > last[c.name]
                last[c.name] = f.seq

    consume()
    before = dict(last)
    made[0].stall(block=True)

    def reopened() -> bool:
        consume()
        return len(made) >= 2 and dark.state == "streaming"

    assert wait_for(reopened)
    assert "no frame for 0.3 s (stalled, reader left)" in (dark.last_error or "")
    assert metrics.registry.get_sample_value("edged_source_errors_total", {"camera": "thr-dark"}) == 1
    # The stuck thread is still in read() and owns its source; the camera runs on its replacement.
    assert made[0].closes == 0
    assert sorted(ours()) == sorted([*mine, "capture-thr-dark-abandoned-1"])
    assert thread_names().count("capture-watcher") == 1
    # The other cameras kept streaming meanwhile (1 s at 10 fps each) and never reopened.
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        consume()
        time.sleep(0.02)
    for name in files:
        assert last[name] >= before[name] + 5, (name, before[name], last[name])
        assert metrics.registry.get_sample_value("edged_source_errors_total", {"camera": name}) in (None, 0)
    assert last["thr-dark"] > before["thr-dark"]

    # When its read returns, the abandoned thread publishes nothing, closes its own source and exits.
    made[0].resume()
    assert wait_for(lambda: made[0].closes == 1)
    assert wait_for(lambda: sorted(ours()) == sorted(mine))
    frame = dark.get(2.0)
    assert frame is not None and frame.seq > last["thr-dark"]


# The watcher thread killed on purpose below is reported by pytest as an unhandled thread exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_watcher_thread_lives_while_cameras_do_and_liveness_sees_it_die() -> None:
    metrics = Metrics()
    watcher = CaptureWatcher(interval_s=0.02, name="capture-watcher-test")

    def src() -> SyntheticSource:
        return SyntheticSource(live=True, fps=50, paced=True, width=32, height=24, text=False)

    cams = [CameraCapture(f"wl{i}", src, fps=5, metrics=metrics, watcher=watcher) for i in range(2)]
    assert watcher.healthy() == (True, "") and watcher.thread is None  # nothing to watch, no thread
    for cam in cams:
        cam.start()
    first = watcher.thread
    assert first is not None and first.is_alive() and watcher.cameras == 2
    assert watcher.healthy() == (True, "")
    cams[0].stop()
    assert first.is_alive()  # one camera is left to watch
    cams[1].stop()
    assert wait_for(lambda: not first.is_alive())  # the last camera gone, the thread exits
    assert watcher.cameras == 0 and watcher.healthy() == (True, "")

    # A bug that gets past the per-camera guard kills the thread: liveness reports it, add() restarts it.
    class Broken:
        name = "broken"

        def watch(self, now: float) -> None:
            raise SystemExit  # not an Exception: escapes the loop's guard as a real bug in it would

    broken = Broken()
    watcher.add(broken)
    assert wait_for(lambda: watcher.thread is not None and not watcher.thread.is_alive())
    ok, why = watcher.healthy()
    assert not ok and why.startswith("thread died"), why
    watcher.remove(broken)
    cam = CameraCapture("wl-again", src, fps=5, metrics=metrics, watcher=watcher).start()
    try:
        assert watcher.thread is not None and watcher.thread.is_alive()
        assert watcher.healthy() == (True, "") and cam.get(2.0) is not None
    finally:
        cam.stop()


def test_ended_file_leaves_the_watcher(tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "short.mp4", 3, fps=30, size=(32, 24))
    watcher = CaptureWatcher(interval_s=0.02, name="capture-watcher-test")
    cam = CameraCapture("ends", lambda: make_source(str(video)), fps=30, realtime=False, watcher=watcher)
    cam.start()
    try:
        while cam.get(2.0) is not None:
            pass
        assert cam.state == "ended"
        assert wait_for(lambda: watcher.cameras == 0)
        assert wait_for(lambda: watcher.thread is None or not watcher.thread.is_alive())
        assert cam._thread is not None and not cam._thread.is_alive()
    finally:
        cam.stop()


def test_a_self_paced_file_is_paced_by_time_not_blocked(caplog: pytest.LogCaptureFixture) -> None:
    """A file the source plays in real time itself (jetson-utils: `self_paced`) is neither blocked for the
    consumer with realtime: false (frames nobody takes are stale drops, as a camera's) nor paced again; the
    setting it cannot honour is said once."""

    class SelfPaced(SyntheticSource):
        self_paced = True

    src = SelfPaced(count=None, fps=100.0, paced=True)
    cam = CameraCapture("jf", lambda: src, fps=100, realtime=False, watcher=CaptureWatcher(interval_s=0.05))
    with caplog.at_level(logging.WARNING, logger="edged.capture.worker"):
        cam.start()
        try:
            assert wait_for(lambda: src.reads >= 30)  # nobody takes a frame: a blocked reader would stop at 2
            assert cam.stale_drops > 0
        finally:
            cam.stop()
    said = [r for r in caplog.records if "realtime: false is not honoured" in r.getMessage()]
    assert len(said) == 1
