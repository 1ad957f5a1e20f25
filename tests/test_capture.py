"""Capture: real video files and image folders through OpenCV, and the CameraCapture worker."""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.capture import jetson
from edged.capture.base import SourceEnded, SourceError, redact
from edged.capture.pacing import Pacer, jittered
from edged.capture.sources import make_source
from edged.capture.worker import CameraCapture
from edged.observability.metrics import Metrics
from edged.types import Frame
from tests.support.edged import wait_until
from tests.support.sources import LiveSources, SyntheticSource, frame_index, synthetic_frame, write_test_video


def sample(metrics: Metrics, name: str, cam: str = "cam", **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"camera": cam, **labels})
    return float(value or 0.0)


wait_for = functools.partial(wait_until, timeout=5.0, step=0.01)


def drain(cam: CameraCapture, timeout_s: float = 5.0) -> list[Frame]:
    """All frames until the camera ends (files with loop off)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        f = cam.get(0.5)
        if f is not None:
            frames.append(f)
        elif cam.state == "ended":
            return frames
    raise AssertionError(f"camera did not end; state {cam.state}, {len(frames)} frames")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_test_video(tmp_path / "clip.mp4", 30, fps=30)


@pytest.fixture
def cams() -> Iterator[list[CameraCapture]]:
    started: list[CameraCapture] = []
    yield started
    for cam in started:
        cam.stop()


# -- sources -----------------------------------------------------------------------------------


def test_file_source_reads_every_frame_then_ends(video: Path) -> None:
    src = make_source(f"file://{video.name}", base_dir=video.parent)
    src.open()
    assert src.nominal_fps == pytest.approx(30.0)
    assert not src.live and src.fmt == "bgr8"
    got = []
    with pytest.raises(SourceEnded):
        while True:
            img = src.read(1.0)
            assert img is not None and img.shape == (240, 320, 3) and img.dtype == np.uint8
            got.append(frame_index(img))
    src.close()
    assert got == list(range(30))


def test_missing_file_error_names_uri_and_path(tmp_path: Path) -> None:
    src = make_source("file://nope/missing.mp4", base_dir=tmp_path)
    with pytest.raises(SourceError) as err:
        src.open()
    assert str(err.value) == f"file://nope/missing.mp4: no such file ({tmp_path / 'nope/missing.mp4'})"


def test_file_that_is_not_a_video_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"this is not a video\n" * 50)
    with pytest.raises(SourceError, match=r"^file://.*notes\.mp4: (FFmpeg|OpenCV) could not open it"):
        make_source(f"file://{bad}").open()


def test_unreachable_rtsp_error_hides_password() -> None:
    src = make_source("rtsp://admin:secret@127.0.0.1:9/stream")
    with pytest.raises(SourceError) as err:
        src.open()
    assert "secret" not in str(err.value)
    assert str(err.value).startswith("rtsp://admin:***@127.0.0.1:9/stream: ")


def test_rtsp_server_that_never_answers_times_out() -> None:
    # A real TCP server that accepts and then says nothing: FFmpeg's open timeout must end the wait.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True).start()
    port = srv.getsockname()[1]
    t0 = time.monotonic()
    try:
        with pytest.raises(
            SourceError, match=rf"^rtsp://127.0.0.1:{port}/live: (FFmpeg|OpenCV) could not open it"
        ):
            make_source(f"rtsp://127.0.0.1:{port}/live", timeout_s=1.0).open()
    finally:
        srv.close()
        for c in held:
            c.close()
    assert held, "the client never connected"
    assert time.monotonic() - t0 < 20  # bounded by the 1 s timeout, not hanging


def test_unsupported_scheme_and_missing_device(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported source"):
        make_source("gopher://x")
    with pytest.raises(SourceError, match=r"/dev/video99: no such device"):
        make_source("/dev/video99").open()
    with pytest.raises(SourceError, match=r"^v4l2:///dev/video98: no such device /dev/video98$"):
        make_source("v4l2:///dev/video98", width=640, height=480, fps=30).open()


def test_image_folder_in_name_order_skipping_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in [(2, "b.png"), (0, "0001.jpg"), (1, "a.bmp")]:
        cv2.imwrite(str(folder / name), synthetic_frame(i))
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    (folder / "readme.txt").write_text("ignored")
    src = make_source("dir://imgs", base_dir=tmp_path)
    src.open()
    got = []
    with caplog.at_level(logging.WARNING), pytest.raises(SourceEnded):
        while True:
            img = src.read(1.0)
            assert img is not None
            got.append(frame_index(img))
    assert got == [0, 1, 2]
    assert any("c.jpg" in r.getMessage() for r in caplog.records)


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        make_source("dir://absent", base_dir=tmp_path).open()
    with pytest.raises(SourceError, match="no jpg/jpeg/png/bmp images"):
        make_source(f"dir://{tmp_path}").open()


def test_redact() -> None:
    assert redact("rtsp://u:p@h:554/x") == "rtsp://u:***@h:554/x"
    assert redact("rtsp://h/x") == "rtsp://h/x"
    assert redact("file://a@b.mp4") == "file://a@b.mp4"


# -- jetson backend (the parts that run without a Jetson) -------------------------------------


def test_jetson_unavailable_is_reported() -> None:
    reason = jetson.available()
    assert reason is not None and "jetson_utils" in reason
    with pytest.raises(SourceError, match=r"^csi://0: csi:// needs jetson-utils \(JetPack\)"):
        make_source("csi://0")
    with pytest.raises(SourceError, match="backend jetson requested"):
        make_source("rtsp://cam/x", backend="jetson")
    # auto falls back to FFmpeg through PyAV for streams and files, to OpenCV when asked
    assert type(make_source("rtsp://cam/x")).__name__ == "FFmpegSource"
    assert type(make_source("rtsp://cam/x", backend="opencv")).__name__ == "OpenCVSource"


def test_jetson_argv_mapping() -> None:
    argv = jetson.video_source_argv(
        "file:///v.mp4", width=1280, height=720, fps=29.97, loop=True, num_buffers=8
    )
    assert argv == [
        "edged",
        "--log-level=error",  # its capture timeouts would flood stdout
        "--input-width=1280",
        "--input-height=720",
        "--input-rate=29.97",
        "--input-loop=-1",
        "--num-buffers=8",
    ]
    assert jetson.video_source_argv("csi://0", loop=True) == [
        "edged",
        "--log-level=error",
    ]  # loop: files only
    src = jetson.JetsonSource("file://rel.mp4", target="file:///abs/rel.mp4", fps=15)
    assert (src.uri, src.target) == ("file://rel.mp4", "file:///abs/rel.mp4")
    assert (src.live, src.fmt, src.self_paced) == (False, "rgb8", True)  # files play in real time there
    with pytest.raises(
        SourceError, match=r"jetson-utils is not importable \(jetson_utils: .*; jetson_utils_python: "
    ):
        src.open()


# -- pacing (pure, with made-up clocks) --------------------------------------------------------


def test_pacer_file_decimation() -> None:
    p = Pacer(fps=10, nominal_fps=30, live=False)
    assert [i for i in range(30) if p.take(i, 0.0)] == list(range(0, 30, 3))
    p = Pacer(fps=10, nominal_fps=25, live=False)
    assert len([i for i in range(100) if p.take(i, 0.0)]) == 40
    p = Pacer(fps=30, nominal_fps=15, live=False)
    assert all(p.take(i, 0.0) for i in range(20))


def test_pacer_live_takes_latest_on_interval_despite_jitter() -> None:
    p = Pacer(fps=10, nominal_fps=30, live=True)
    rng = np.random.default_rng(1)
    times = [i / 30 + float(rng.uniform(-0.004, 0.004)) for i in range(300)]
    taken = [t for t in times if p.take(0, t)]
    assert len(taken) == 100
    assert min(np.diff(taken)) > 0.06


# -- worker -------------------------------------------------------------------------------------


def file_camera(uri: str, base: Path, metrics: Metrics, **kw: object) -> CameraCapture:
    args: dict[str, object] = dict(
        fps=30,
        realtime=False,
        frame_timeout_s=2.0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        metrics=metrics,
    )
    args.update(kw)
    return CameraCapture("cam", lambda: make_source(uri, base_dir=base), **args)  # type: ignore[arg-type]


def test_worker_reads_whole_file_then_ends(video: Path, metrics: Metrics, cams: list[CameraCapture]) -> None:
    cam = file_camera(f"file://{video.name}", video.parent, metrics)
    cams.append(cam.start())
    frames = drain(cam)
    assert [f.seq for f in frames] == list(range(30))
    assert [frame_index(f.image) for f in frames] == list(range(30))
    assert all(f.camera == "cam" and f.fmt == "bgr8" and f.shape == (240, 320, 3) for f in frames)
    assert [f.t_mono_ns for f in frames] == sorted(f.t_mono_ns for f in frames)
    assert cam.state == "ended" and cam.get(0.1) is None
    assert sample(metrics, "edged_frames_total") == 30
    assert sample(metrics, "edged_frames_dropped_total", reason="stale") == 0
    assert sample(metrics, "edged_camera_up") == 0
    assert sample(metrics, "edged_source_errors_total") == 0


def test_worker_fps_takes_every_third_frame(video: Path, metrics: Metrics, cams: list[CameraCapture]) -> None:
    cam = file_camera(f"file://{video}", video.parent, metrics, fps=10)
    cams.append(cam.start())
    frames = drain(cam)
    assert [frame_index(f.image) for f in frames] == list(range(0, 30, 3))
    assert [f.seq for f in frames] == list(range(10))


def test_worker_decodes_only_the_frames_it_takes(
    video: Path, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    from edged.capture.opencv import OpenCVSource

    calls = {"grab": 0, "retrieve": 0}

    class Counting(OpenCVSource):  # the real OpenCV source, counting the calls the worker makes
        def grab(self, timeout_s: float) -> bool:
            calls["grab"] += 1
            return super().grab(timeout_s)

        def retrieve(self) -> np.ndarray:
            calls["retrieve"] += 1
            return super().retrieve()

    cam = CameraCapture("cam", lambda: Counting(f"file://{video}"), fps=10, realtime=False, metrics=metrics)
    cams.append(cam.start())
    frames = drain(cam)
    assert [frame_index(f.image) for f in frames] == list(range(0, 30, 3))  # the right images decoded
    assert calls["retrieve"] == 10  # one decode per frame taken
    assert calls["grab"] == 31  # every frame off the file, then the end


def test_worker_loop_restarts_and_seq_keeps_increasing(
    tmp_path: Path, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    write_test_video(tmp_path / "short.mp4", 5, fps=30)
    cam = file_camera("file://short.mp4", tmp_path, metrics, loop=True)
    cams.append(cam.start())
    frames = [cam.get(2.0) for _ in range(13)]
    assert all(f is not None for f in frames)
    assert [f.seq for f in frames if f] == list(range(13))
    assert [frame_index(f.image) for f in frames if f] == [0, 1, 2, 3, 4] * 2 + [0, 1, 2]
    assert cam.state == "streaming"
    assert sample(metrics, "edged_source_errors_total") == 0
    assert sample(metrics, "edged_source_reconnects_total") == 0


def test_realtime_file_plays_no_faster_than_its_rate(
    tmp_path: Path, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    write_test_video(tmp_path / "rt.mp4", 6, fps=20)
    cam = file_camera("file://rt.mp4", tmp_path, metrics, fps=20, realtime=True)
    cams.append(cam.start())
    frames = drain(cam)
    assert frames, "no frames"
    # Frames are stamped when shown; six frames at 20 fps span at least 5/20 s (minus scheduler slack).
    first, last = frames[0], frames[-1]
    shown = frame_index(last.image) - frame_index(first.image)
    assert (last.t_mono_ns - first.t_mono_ns) / 1e9 >= shown / 20 - 0.01


def test_slow_consumer_gets_latest_and_drops_are_counted(metrics: Metrics, cams: list[CameraCapture]) -> None:
    src = SyntheticSource(live=True, fps=None, text=False, width=64, height=48)
    cam = CameraCapture("cam", lambda: src, fps=1000, metrics=metrics)
    cams.append(cam.start())
    taken: list[Frame] = []
    for _ in range(5):
        f = cam.get(2.0)
        assert f is not None
        taken.append(f)
        assert wait_for(lambda: sample(metrics, "edged_frames_dropped_total", reason="stale") > len(taken))
    cam.stop()
    last = cam.get(0)  # the frame left in the slot, if any
    if last is not None:
        taken.append(last)
    seqs = [f.seq for f in taken]
    assert seqs == sorted(set(seqs))
    drops = sample(metrics, "edged_frames_dropped_total", reason="stale")
    assert drops > 0
    # every published frame was either taken or replaced (dropped)
    assert len(taken) + drops == cam._seq


def test_not_realtime_file_blocks_instead_of_dropping(metrics: Metrics, cams: list[CameraCapture]) -> None:
    src = SyntheticSource(count=8, fps=1000, width=64, height=48, text=False)
    cam = CameraCapture("cam", lambda: src, fps=1000, realtime=False, frame_timeout_s=0.2, metrics=metrics)
    cams.append(cam.start())
    got = []
    for _ in range(8):
        time.sleep(0.3)  # slower than frame_timeout_s: waiting on the consumer is not a stall
        f = cam.get(2.0)
        assert f is not None
        got.append(frame_index(f.image))
    assert got == list(range(8))
    assert drain(cam) == []
    assert sample(metrics, "edged_frames_dropped_total", reason="stale") == 0
    assert sample(metrics, "edged_source_errors_total") == 0


def test_file_removed_then_restored_resumes(
    tmp_path: Path, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    video = write_test_video(tmp_path / "gate.mp4", 4, fps=30)
    hidden = tmp_path / "gate.mp4.away"
    cam = file_camera("file://gate.mp4", tmp_path, metrics, loop=True)
    cams.append(cam.start())
    assert cam.get(2.0) is not None
    os.rename(video, hidden)
    last_seq = -1

    def failing() -> bool:
        nonlocal last_seq
        f = cam.get(0.05)  # keep consuming: the open file plays to its end first
        if f is not None:
            last_seq = f.seq
        return sample(metrics, "edged_source_errors_total") >= 2 and cam.state == "backoff"

    assert wait_for(failing)
    assert "no such file" in (cam.last_error or "") and "gate.mp4" in (cam.last_error or "")
    assert sample(metrics, "edged_camera_up") == 0
    assert sample(metrics, "edged_source_reconnects_total") >= 1
    os.rename(hidden, video)
    f = cam.get(5.0)
    assert f is not None and f.seq > last_seq
    assert cam.state == "streaming" and sample(metrics, "edged_camera_up") == 1
    assert cam._thread is not None and cam._thread.is_alive()


@pytest.mark.parametrize("blocking", [True, False], ids=["read-blocks", "read-times-out"])
def test_stalled_source_is_abandoned_and_reopened(
    blocking: bool, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    factory = LiveSources(fps=200)
    made = factory.made
    cam = CameraCapture("cam", factory, fps=50, frame_timeout_s=0.3, reconnect_min_s=0.05, metrics=metrics)
    cams.append(cam.start())
    assert cam.get(2.0) is not None
    made[0].stall(block=blocking)
    assert wait_for(lambda: len(made) >= 2 and cam.state == "streaming")
    assert "no frame for 0.3 s" in (cam.last_error or "")
    assert sample(metrics, "edged_source_errors_total") >= 1
    before = cam.get(2.0)
    assert before is not None
    if blocking:
        assert made[0].closes == 0  # its reader is still stuck in read() and owns it
        made[0].resume()
    # the abandoned reader gets out of read(), publishes nothing and closes its own source
    assert wait_for(lambda: made[0].closes == 1)
    after = cam.get(2.0)
    assert after is not None and after.seq > before.seq


def test_open_failure_backs_off_exponentially_and_logs_cause(
    metrics: Metrics, cams: list[CameraCapture], caplog: pytest.LogCaptureFixture
) -> None:
    src = SyntheticSource("synthetic://door", live=True)
    src.fail_open("camera unplugged")
    cam = CameraCapture(
        "cam", lambda: src, fps=10, reconnect_min_s=0.02, reconnect_max_s=0.08, metrics=metrics
    )
    with caplog.at_level(logging.WARNING, logger="edged.capture.worker"):
        cams.append(cam.start())
        assert wait_for(lambda: sample(metrics, "edged_source_errors_total") >= 5)
        src.fail_open(None)
        assert cam.get(3.0) is not None
    lines = [r for r in caplog.records if "camera unplugged" in r.getMessage()]
    assert len(lines) >= 5 and all(r.exc_info is None for r in lines)
    assert (
        lines[0].getMessage().startswith("camera cam: synthetic://door: camera unplugged; reopening in 0.0")
    )
    delays = [float(r.getMessage().rsplit("in ", 1)[1].removesuffix(" s")) for r in lines[:5]]
    # Doubling up to reconnect_max_s, each wait jittered down to half of it.
    for wait, base in zip(delays, [0.02, 0.04, 0.08, 0.08, 0.08], strict=True):
        assert base / 2 - 1e-3 <= wait <= base + 1e-3, delays


def test_backoff_jitter_spreads_reopens() -> None:
    rng = random.Random(7)
    waits = [jittered(8.0, rng) for _ in range(200)]
    assert all(4.0 <= w <= 8.0 for w in waits)
    assert max(waits) - min(waits) > 3.0  # spread over the range: cameras that failed together do not
    assert len({round(w, 3) for w in waits}) > 150  # reopen together


def test_read_errors_reopen_and_seq_never_resets(metrics: Metrics, cams: list[CameraCapture]) -> None:
    src = SyntheticSource(live=True, fps=200, paced=True, width=64, height=48, text=False)
    cam = CameraCapture("cam", lambda: src, fps=100, reconnect_min_s=0.02, metrics=metrics)
    cams.append(cam.start())
    first = cam.get(2.0)
    assert first is not None
    src.fail_reads("decoder error")
    assert wait_for(lambda: cam.state == "backoff" or sample(metrics, "edged_source_errors_total") >= 1)
    src.fail_reads(None)
    assert wait_for(lambda: src.opens >= 2)
    after = cam.get(2.0)
    assert after is not None and after.seq > first.seq
    assert cam.last_error == "synthetic://test: decoder error"


def test_empty_video_is_an_error_not_a_busy_loop(
    tmp_path: Path, metrics: Metrics, cams: list[CameraCapture]
) -> None:
    src = SyntheticSource(count=0)
    cam = CameraCapture(
        "cam", lambda: src, fps=10, loop=True, reconnect_min_s=0.05, reconnect_max_s=0.1, metrics=metrics
    )
    cams.append(cam.start())
    assert wait_for(lambda: sample(metrics, "edged_source_errors_total") >= 1)
    assert "before any frame" in (cam.last_error or "")
    time.sleep(0.3)
    assert src.opens < 10  # backoff between attempts, not a spin


def test_stop_is_prompt_during_backoff(metrics: Metrics) -> None:
    src = SyntheticSource()
    src.fail_open()
    cam = CameraCapture("cam", lambda: src, fps=10, reconnect_min_s=60, reconnect_max_s=60, metrics=metrics)
    cam.start()
    assert wait_for(lambda: cam.state == "backoff")
    t0 = time.monotonic()
    cam.stop()
    assert time.monotonic() - t0 < 30  # far less than the 60 s backoff it was sleeping
    assert cam.state == "stopped" and cam._thread is not None and not cam._thread.is_alive()
    assert cam.get(0.0) is None


def test_stop_closes_the_source_and_consumer_wakes(metrics: Metrics) -> None:
    src = SyntheticSource(live=True, fps=100, paced=True, width=64, height=48)
    cam = CameraCapture("cam", lambda: src, fps=10, metrics=metrics).start()
    assert cam.get(2.0) is not None
    assert cam.last_frame_mono is not None and cam.last_frame_mono <= time.monotonic()
    assert wait_for(lambda: cam.fps_measured > 0)
    assert cam.state == "streaming" and sample(metrics, "edged_camera_up") == 1
    woke = threading.Event()

    def consumer() -> None:
        while cam.get(10.0) is not None:
            pass
        woke.set()

    threading.Thread(target=consumer, daemon=True).start()
    cam.stop()
    assert woke.wait(5.0)
    assert src.closes == 1 and not src.is_open
    assert sample(metrics, "edged_camera_up") == 0
