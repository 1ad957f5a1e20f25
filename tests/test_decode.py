"""Where frames are decoded (`decode: auto | cpu | gpu`) and the NV12 colour maths, on a machine without a
GPU: the choice, its fallback and its reasons, the config rules, and the CPU reference of the NV12
conversion the fused kernel is tested against on the GPU (tests/gpu/test_decode_gpu.py).

The GPU decoders themselves cannot run here; `FakeGpuDecoder` below stands in for one at that boundary
(it opens or fails as told) so the selection logic is exercised the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged.capture.base import SourceError
from edged.capture.decode import DecodeChoice
from edged.capture.ffmpeg import FFmpegSource
from edged.capture.nvdec import UseJpeg
from edged.capture.opencv import OpenCVSource
from edged.capture.sources import make_source
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from edged.demo.sample import make_sample
from edged.preprocess.nv12 import nv12_to_rgb, rgb_to_nv12, split_nv12, yuv_coefficients
from edged.types import Frame, host_fmt


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("decode") / "v.mp4"
    make_sample(path, frames=4, size=(320, 240))
    return path


def test_cpu_is_ffmpeg_or_opencv_as_before(video: Path) -> None:
    assert isinstance(make_source(str(video), decode="cpu"), FFmpegSource)  # PyAV (edged.capture.ffmpeg)
    assert isinstance(make_source(str(video), decode="cpu", backend="opencv"), OpenCVSource)


def test_auto_falls_back_to_opencv_and_says_why_once(video: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.capture.decode")
    for _ in range(2):  # every reopen makes a new source: the reason is logged at INFO only the first time
        src = make_source(str(video), decode="auto")
        assert isinstance(src, DecodeChoice)
        src.open()
        image = src.read(1.0)
        src.close()
        assert isinstance(image, np.ndarray) and image.shape == (240, 320, 3)
        assert src.decoder == "ffmpeg" and src.fmt == "bgr8"
        assert src.note is not None and src.note.startswith("decoding on the CPU: ")
        assert "pycuda" in src.note or "GPU" in src.note or "CUDA" in src.note
    said = [r for r in caplog.records if "decoding on the CPU" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO, logging.DEBUG]


def test_gpu_without_a_gpu_fails_the_open_with_the_reason(video: Path) -> None:
    src = make_source(str(video), decode="gpu")
    with pytest.raises(SourceError, match=r"decode: gpu: .*(pycuda|CUDA|GPU)"):
        src.open()
    with pytest.raises(SourceError, match="V4L2 cameras decode on the CPU"):
        make_source("/dev/video0", decode="gpu")
    assert isinstance(make_source("/dev/video0", decode="auto"), OpenCVSource)


class FakeGpuDecoder:
    """Stands in for a GPU decoder (NVDEC, nvJPEG) at the boundary that cannot run here."""

    live = False
    nominal_fps = 25.0

    def __init__(self, outcome: BaseException | None, decoder: str, fmt: str = "nv12") -> None:
        self.outcome, self.decoder, self.fmt, self.codec = outcome, decoder, fmt, "h264"
        self.uri = "file://x.mp4"
        self.closed = False

    def open(self) -> None:
        if self.outcome is not None:
            raise self.outcome

    def read(self, timeout_s: float) -> Any:
        return "device-frame"

    def close(self) -> None:
        self.closed = True


def test_choice_order_motion_jpeg_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import edged.capture.decode as decode

    monkeypatch.setattr(decode, "unavailable", lambda folder: None)
    # Motion-JPEG: NVDEC steps aside (UseJpeg), nvJPEG takes it.
    c = DecodeChoice(
        "file://x.avi",
        "gpu",
        [lambda: FakeGpuDecoder(UseJpeg("mjpeg"), "nvdec"), lambda: FakeGpuDecoder(None, "nvjpeg", "rgb8")],
        None,
    )  # type: ignore[list-item]
    c.open()
    assert (c.decoder, c.fmt, c.note) == ("nvjpeg", "rgb8", None)
    assert c.grab(0.1) and c.retrieve() == "device-frame"
    # A decoder that fails: auto falls back to OpenCV with that failure as the reason...
    c = DecodeChoice(
        "file://x.mp4",
        "auto",
        [lambda: FakeGpuDecoder(SourceError("x.mp4: NVDEC cannot decode it (AV1 on a T4)"), "nvdec")],
        lambda: FakeGpuDecoder(None, "opencv", "bgr8"),
    )  # type: ignore[list-item]
    c.open()
    assert c.decoder == "opencv" and c.note is not None and "AV1 on a T4" in c.note
    # ...and gpu fails the open with it.
    c = DecodeChoice(
        "file://x.mp4",
        "gpu",
        [lambda: FakeGpuDecoder(SourceError("x.mp4: NVDEC cannot decode it"), "nvdec")],
        None,
    )  # type: ignore[list-item]
    with pytest.raises(SourceError, match=r"decode: gpu: x\.mp4: NVDEC cannot decode it"):
        c.open()


def test_config_rules_and_auto_on_a_cpu_chain(tmp_path: Path) -> None:
    from edged.pipeline.runner import decode_mode

    def cfg(extra: str) -> Path:
        p = tmp_path / "c.yaml"
        p.write_text(
            "models: {}\ncameras:\n  gate:\n    source: rtsp://cam/1\n" + extra,
            encoding="utf-8",
        )
        return p

    with pytest.raises(ConfigError, match=r"c.yaml:\d+:\d+: cameras.gate: .*decode: gpu needs backend: auto"):
        load_config(cfg("    backend: opencv\n    decode: gpu\n"))
    with pytest.raises(ConfigError, match="jetson-utils decodes on the Jetson's NVDEC itself"):
        load_config(cfg("    backend: jetson\n    decode: cpu\n"))
    cam = load_config(cfg("")).cameras["gate"]
    assert cam.decode == "auto" and decode_mode(cam, []) == "cpu"  # no GPU chain: OpenCV


def test_nv12_reference_is_opencv_for_bt601_limited() -> None:
    rng = np.random.default_rng(0)
    nv = rng.integers(0, 256, (96 * 3 // 2, 128), dtype=np.uint8)
    ours = nv12_to_rgb(*split_nv12(nv, 128, 96))
    ref = cv2.cvtColor(nv, cv2.COLOR_YUV2RGB_NV12)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1  # fixed point vs float rounding
    ys, yo, rv, gu, gv, bu = yuv_coefficients("bt601", False)
    assert (round(ys, 3), yo, round(rv, 3), round(gu, 3), round(gv, 3), round(bu, 3)) == (
        1.164,
        16.0,
        1.596,
        0.392,
        0.813,
        2.017,
    )


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full", [False, True])
def test_nv12_round_trip(matrix: str, full: bool) -> None:
    rgb = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8), (9, 9), 4)
    back = nv12_to_rgb(*split_nv12(rgb_to_nv12(rgb, matrix, full), 96, 64), matrix, full)
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 3.0  # 4:2:0 chroma, 8-bit rounding
    other = "bt601" if matrix != "bt601" else "bt709"
    wrong = nv12_to_rgb(*split_nv12(rgb_to_nv12(rgb, matrix, full), 96, 64), other, full)
    assert (
        np.abs(wrong.astype(int) - rgb.astype(int)).mean() > np.abs(back.astype(int) - rgb.astype(int)).mean()
    )


def test_stream_colour_and_formats() -> None:
    from edged.capture.nvdec import colour

    class Demuxer:  # PyNvVideoCodec's demuxer answers with enums; their names are what is read
        def __init__(self, space: str, rng: str) -> None:
            self.space, self.rng = space, rng

        def ColorSpace(self) -> str:
            return self.space

        def ColorRange(self) -> str:
            return self.rng

    assert colour(Demuxer("ColorSpace.BT_709", "ColorRange.JPEG")) == ("bt709", True)
    assert colour(Demuxer("ColorSpace.UNSPEC", "ColorRange.UDEF")) == ("bt601", False)  # as FFmpeg
    assert colour(Demuxer("ColorSpace.BT_601", "ColorRange.MPEG")) == ("bt601", False)
    assert (host_fmt("nv12"), host_fmt("rgb8"), host_fmt("bgr8")) == ("rgb8", "rgb8", "bgr8")
    with pytest.raises(ValueError, match="unknown YUV matrix"):
        yuv_coefficients("bt999", False)

    class Planar:  # what edged.gpu.frames.Nv12Frame looks like to the layers above it
        frame_shape = (1080, 1920, 3)

    f = Frame("c", 0, Planar(), fmt="nv12")
    assert f.on_device and f.shape == (1080, 1920, 3) and (f.width, f.height) == (1920, 1080)
