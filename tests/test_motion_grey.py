"""The motion gate's small grey frame on machines without a GPU (tests/gpu/test_motion_grey.py runs the
kernel itself): the kernel's arithmetic, written out in numpy, agrees with the CPU path on real gate
frames (so a kernel that does what its source says passes the GPU test), and a device frame with no
usable GPU falls back to downloading it, deciding exactly as the host frame does."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pytest

from edged.demo.sample_gate import make_gate_sample
from edged.demo.truth import read_video
from edged.gpu.context import gpu_available
from edged.gpu.motion import small_size
from edged.pipeline.motion import MotionGate, small_grey
from edged.types import Frame


@pytest.fixture(scope="module")
def gate_frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    path = tmp_path_factory.mktemp("gate") / "gate.mp4"
    make_gate_sample(path, seconds=12.0, fps=5.0, gap_s=(1.0, 9.0))
    return read_video(path)


def area_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, the overlap of each source pixel with [o*f, (o+1)*f) (float32 f, as the kernel)."""
    f = np.float32(src / dst)
    lo = np.arange(dst, dtype=np.float32) * f
    hi = np.minimum((np.arange(dst, dtype=np.float32) + 1) * f, np.float32(src))
    px = np.arange(src, dtype=np.float32)
    w = np.minimum(px[None, :] + 1, hi[:, None]) - np.maximum(px[None, :], lo[:, None])
    return np.clip(w, 0, None), hi - lo


def kernel_in_numpy(img: np.ndarray, fmt: str, rows: int) -> np.ndarray:
    """edged.gpu.motion's area_grey, line by line: 15-bit fixed-point grey, area-weighted mean, round."""
    h, w = img.shape[:2]
    r, b = (0, 2) if fmt == "rgb8" else (2, 0)
    p = img.astype(np.int64)
    grey = (p[..., r] * 9798 + p[..., 1] * 19235 + p[..., b] * 3735 + 16384) >> 15
    dw, dh = small_size(w, h, rows)
    wx, span_x = area_weights(w, dw)
    wy, span_y = area_weights(h, dh)
    v = (wy @ grey.astype(np.float32) @ wx.T) / (span_y[:, None] * span_x[None, :])
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["bgr8", "rgb8"])
@pytest.mark.parametrize("size", [None, (1920, 1080), (1001, 563), (637, 481)])
def test_the_kernels_arithmetic_matches_opencv(
    gate_frames: list[np.ndarray], fmt: str, size: tuple[int, int] | None
) -> None:
    img = gate_frames[20]
    if size is not None:
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    for rows in (120, 97):
        want = small_grey(img, fmt, rows)
        got = kernel_in_numpy(img, fmt, rows)
        assert got.shape == want.shape
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.05, (size, rows, diff.max(), diff.mean())
    # The grey weights are OpenCV's exactly: on unscaled pixels the two agree to the level.
    assert np.array_equal(
        kernel_in_numpy(img[:120], fmt, 120),
        cv2.cvtColor(img[:120], cv2.COLOR_RGB2GRAY if fmt == "rgb8" else cv2.COLOR_BGR2GRAY),
    )


class HostBackedDeviceArray:
    """A frame that says it lives in GPU memory (as jetson-utils and CuPy arrays do) but is a host array
    underneath: with no usable GPU the gate must download it (`get()`) instead of reading it in place."""

    def __init__(self, host: np.ndarray) -> None:
        self.host = host

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.host.shape, "typestr": "|u1", "data": (0, False), "version": 3}

    def get(self) -> np.ndarray:
        return self.host


def test_without_a_gpu_device_frames_are_downloaded_and_judged_like_host_frames(
    gate_frames: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    if gpu_available() is None:
        pytest.skip("a GPU is usable here: tests/gpu/test_motion_grey.py covers device frames")
    host_gate, dev_gate = MotionGate(region=True), MotionGate(region=True)
    with caplog.at_level(logging.INFO, logger="edged.pipeline.motion"):
        for i, img in enumerate(gate_frames):
            frame = Frame("cam", i, HostBackedDeviceArray(img))
            assert frame.on_device
            a, b = host_gate.check(Frame("cam", i, img)), dev_gate.check(frame)
            assert (a.reason, a.boxes, a.region) == (b.reason, b.boxes, b.region), i
    assert sum(host_gate.counts[r] for r in ("motion",)) > 5
    logged = [r.getMessage() for r in caplog.records if "downloads device frames" in r.getMessage()]
    assert len(logged) == 1 and ("pycuda" in logged[0] or "CUDA" in logged[0]), logged
