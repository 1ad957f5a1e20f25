"""A source whose resolution changes mid-stream: a real H.264 file whose first part is 640x480 and
second part 1280x720 (two encodes by the ffmpeg CLI, joined as MPEG-TS the way a camera's stream
carries a new SPS), read by the capture sources and by a real `edged run`.

OpenCV's FFmpeg backend scales the second part to 640x480 (edged.capture.ffmpeg says why); the
default source decodes through PyAV and yields every frame at its real size, and the events' `frame`
field says so on both parts.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from edged.capture.base import SourceEnded
from edged.capture.ffmpeg import FFmpegSource
from edged.capture.opencv import OpenCVSource
from edged.capture.sources import make_source
from edged.demo.sample import make_sample
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, camera, wait_until, write_config

SMALL, LARGE = (640, 480), (1280, 720)
ENCODE = ["ffmpeg", "-v", "error", "-y", "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p"]


def two_size_video(tmp: Path, frames: int = 10) -> Path:
    """The plate sample at 640x480 then at 1280x720, one H.264 MPEG-TS stream."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup-env.sh installs it)")
    parts = []
    for size in (SMALL, LARGE):
        raw = tmp / f"plates-{size[0]}.mp4"
        make_sample(raw, frames=frames, size=size, fps=10)
        ts = raw.with_suffix(".ts")
        subprocess.run(
            [*ENCODE[:4], "-i", str(raw), *ENCODE[4:], "-bsf:v", "h264_mp4toannexb", str(ts)],
            check=True,
        )
        parts.append(ts.read_bytes())
    out = tmp / "two-sizes.ts"
    out.write_bytes(b"".join(parts))
    return out


def sizes(src: object) -> list[tuple[int, int]]:
    """(width, height) of every frame a source yields, in order."""
    src.open()  # type: ignore[attr-defined]
    out = []
    try:
        while True:
            image = src.read(1.0)  # type: ignore[attr-defined]
            out.append((image.shape[1], image.shape[0]))
    except SourceEnded:
        pass
    finally:
        src.close()  # type: ignore[attr-defined]
    return out


def test_the_default_source_yields_each_part_at_its_size_where_opencv_rescales(tmp_path: Path) -> None:
    video = two_size_video(tmp_path)
    src = make_source(str(video))
    assert isinstance(src, FFmpegSource)
    assert sizes(src) == [SMALL] * 10 + [LARGE] * 10
    # The reason for the PyAV source: OpenCV's FFmpeg backend keeps the first size for the whole stream.
    assert Counter(sizes(OpenCVSource(f"file://{video}", path=str(video)))) == {SMALL: 20}


def test_events_report_the_real_frame_size_on_both_parts(tmp_path: Path) -> None:
    """A real `edged run` on the file: events of the first part say 640x480, of the second 1280x720,
    and the detector ran on the real pixels (boxes inside each frame, some beyond 640x480 on the large
    part)."""
    video = two_size_video(tmp_path)
    health = free_port()
    config = write_config(
        tmp_path, {"gate": camera(video, fps=10, realtime=False, loop=False)}, health_port=health
    )
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: "end of file" in proc.text(), 60), proc.text()  # loop off: read once
        assert proc.stop() == 0, proc.text()  # finishes the frames in flight
    finally:
        proc.kill()
    events = proc.events()
    frames = [(e["frame"]["width"], e["frame"]["height"]) for e in events]
    assert set(frames) == {SMALL, LARGE}, (frames, proc.text())
    assert frames == sorted(frames), frames  # all of the first part, then all of the second
    for e in events:
        w, h = e["frame"]["width"], e["frame"]["height"]
        for d in e["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (d["box"], w, h)
    large = [d["box"] for e in events if e["frame"]["width"] == LARGE[0] for d in e["detections"]]
    assert large and (max(b[2] for b in large) > SMALL[0] or max(b[3] for b in large) > SMALL[1]), large
    print(f"\nevents: {Counter(frames)}")
    assert "resolution changed from 640x480 to 1280x720" in proc.text()
    assert "Traceback" not in proc.text()


def test_operator_ffmpeg_options_are_read_from_the_opencv_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from edged.capture.ffmpeg import operator_options

    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp|stimeout;5000000")
    assert operator_options() == {"rtsp_transport": "udp", "stimeout": "5000000"}
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    assert operator_options() == {}
