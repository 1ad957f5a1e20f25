"""Sources as jetson-utils spells them (bare paths, `file://dir/`, globs), per-camera RTSP options on a
real RTSP server, and jittered reconnects. Real OpenCV, real files, a real `edged run`; jetson-utils
itself cannot run here, so only its argv mapping is checked (as in test_capture)."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.capture.base import SourceError
from edged.capture.jetson import video_source_argv
from edged.capture.opencv import FFMPEG_ENV, ImageFolderSource, OpenCVSource, ffmpeg_env
from edged.capture.sources import make_source
from edged.capture.worker import jittered
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, camera, small_sample, stats, wait_until, write_config
from tests.support.rtsp import RtspServer, rtsp_server_missing


def images(folder: Path, n: int = 3, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = np.full((24, 32, 3), 40 * (i + 1), np.uint8)  # each image its own gray level
        p = folder / f"{i:03d}{suffix}"
        cv2.imwrite(str(p), img)
        out.append(p)
    return out


def read_all(src: object) -> list[int]:
    """The gray level of every image the source yields, in order."""
    from edged.capture.base import SourceEnded

    levels = []
    src.open()  # type: ignore[attr-defined]
    try:
        while True:
            try:
                img = src.read(1.0)  # type: ignore[attr-defined]
            except SourceEnded:
                return levels
            levels.append(int(img[0, 0, 0]))
    finally:
        src.close()  # type: ignore[attr-defined]


def test_bare_paths_folders_and_globs_as_jetson_utils_reads_them(tmp_path: Path) -> None:
    images(tmp_path / "frames", 3, ".png")
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    video = small_sample(tmp_path, frames=5)
    # Bare paths are file:// (absolute, and relative to base_dir like any file:// path).
    for uri in (str(video), video.name):
        src = make_source(uri, backend="opencv", base_dir=tmp_path)
        assert isinstance(src, OpenCVSource) and src.uri == f"file://{video}"
        assert len(read_all(src)) == 5
    # file://dir/ (and a bare dir/) is the folder's images in name order; other files are skipped.
    for uri in ("file://frames/", "frames/", f"file://{tmp_path}/frames"):
        src = make_source(uri, backend="opencv", base_dir=tmp_path)
        assert isinstance(src, ImageFolderSource), uri
        assert read_all(src) == [40, 80, 120], uri
    # A file whose name only looks like a glob is that file.
    odd = tmp_path / "cam[1].mp4"
    odd.symlink_to(video)
    assert isinstance(make_source(str(odd), backend="opencv"), OpenCVSource)
    # A glob takes exactly what it matches.
    src = make_source("frames/00[12].png", backend="opencv", base_dir=tmp_path)
    assert read_all(src) == [80, 120]
    with pytest.raises(SourceError, match=r"no file matches .*/frames/\*\.jpg$"):
        make_source("frames/*.jpg", backend="opencv", base_dir=tmp_path).open()


def test_config_accepts_bare_paths_and_keeps_the_folder_slash(tmp_path: Path) -> None:
    cfg_file = tmp_path / "edged.yaml"
    cfg_file.write_text(
        "cameras:\n"
        "  a: {source: clip.mp4}\n"
        "  b: {source: /data/clip.mp4}\n"
        "  c: {source: 'frames/'}\n"
        "  d: {source: 'frames/*.jpg'}\n"
        "  e: {source: rtsp://cam/x, rtsp: {transport: tcp, latency_ms: 200}}\n"
    )
    cfg = load_config(cfg_file)
    src = {n: c.source for n, c in cfg.cameras.items()}
    assert src == {
        "a": f"file://{tmp_path}/clip.mp4",
        "b": "file:///data/clip.mp4",
        "c": f"file://{tmp_path}/frames/",
        "d": f"file://{tmp_path}/frames/*.jpg",
        "e": "rtsp://cam/x",
    }
    assert (cfg.cameras["e"].rtsp.transport, cfg.cameras["e"].rtsp.latency_ms) == ("tcp", 200)
    cfg_file.write_text(
        "cameras:\n  a: {source: 'ftp://x/y'}\n  b: {source: rtsp://c/x, rtsp: {transport: quic}}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file)
    text = str(e.value)
    assert "cameras.a.source: source must be a path, or start with file://" in text
    assert "cameras.b.rtsp.transport: Input should be 'auto', 'tcp' or 'udp'" in text


def test_daemon_runs_a_bare_path_a_folder_and_a_glob(tmp_path: Path) -> None:
    images(tmp_path / "frames", 4, ".jpg")
    small_sample(tmp_path)
    port = free_port()
    cfg = write_config(
        tmp_path,
        {
            "bare": camera("plates.mp4", chain=False),  # relative to the config file
            "folder": camera("file://frames/", chain=False),
            "glob": camera("frames/*.jpg", chain=False),
        },
        health_port=port,
    )
    proc = EdgedProcess(cfg)
    try:
        streaming = lambda: {  # noqa: E731
            n for n, c in stats(port).get("cameras", {}).items() if c.get("state") == "streaming"
        }
        assert wait_until(lambda: streaming() == {"bare", "folder", "glob"}, 60), proc.text()
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()


def test_rtsp_transport_is_per_camera(tmp_path: Path) -> None:
    why = rtsp_server_missing()
    if why:
        pytest.skip(why)
    server = RtspServer(free_port(), tmp_path / "rtsp.log", tcp_only=True)
    server.start()
    try:
        # Two cameras of one process on a server that refuses RTP over UDP: only the tcp one opens.
        tcp = make_source(server.url, backend="opencv", timeout_s=5, rtsp_transport="tcp")
        udp = make_source(server.url, backend="opencv", timeout_s=3, rtsp_transport="udp")
        tcp.open()
        try:
            frame = None
            for _ in range(50):
                frame = tcp.read(1.0)
                if frame is not None:
                    break
            assert frame is not None and frame.shape == (240, 320, 3)
        finally:
            tcp.close()
        with pytest.raises(SourceError, match="could not open"):
            udp.open()
            try:  # some FFmpeg builds open, then deliver nothing
                udp.read(1.0)
            finally:
                udp.close()
        assert FFMPEG_ENV not in os.environ  # the per-camera options did not leak into the process
    finally:
        server.stop()


def test_ffmpeg_options_merge_over_the_operators_and_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FFMPEG_ENV, "rtsp_transport;udp|stimeout;5000000")
    with ffmpeg_env({"rtsp_transport": "tcp", "max_delay": "200000"}):
        assert os.environ[FFMPEG_ENV] == "rtsp_transport;tcp|stimeout;5000000|max_delay;200000"
    assert os.environ[FFMPEG_ENV] == "rtsp_transport;udp|stimeout;5000000"
    src = make_source("rtsp://cam/x", backend="opencv", rtsp_transport="tcp", rtsp_latency_ms=150)
    assert isinstance(src, OpenCVSource)
    assert src.ffmpeg_options == {"rtsp_transport": "tcp", "max_delay": "150000"}
    assert make_source("rtsp://cam/x", backend="opencv").ffmpeg_options == {}  # type: ignore[attr-defined]


def test_jetson_argv_carries_the_rtsp_latency() -> None:
    assert "--input-latency=200" in video_source_argv("rtsp://cam/x", latency_ms=200)
    assert not any(
        a.startswith("--input-latency") for a in video_source_argv("file:///a.mp4", latency_ms=200)
    )


def test_reconnect_delays_are_jittered() -> None:
    rngs = [random.Random(seed) for seed in range(20)]
    delays = [jittered(8.0, rng) for rng in rngs]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 3) for d in delays}) == len(delays)  # 20 cameras, 20 different retry times
