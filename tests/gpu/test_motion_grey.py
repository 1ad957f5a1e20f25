"""Motion gating on device frames: the small grey frame made by edged.gpu.motion's kernel agrees with
the CPU path (cv2.cvtColor + cv2.resize INTER_AREA, edged.pipeline.motion.small_grey) on real frames,
bgr8 and rgb8, odd sizes, packed and pitched device buffers, 3 and 4 channels; only the small frame
is downloaded; and a MotionGate fed device frames decides like one fed the same frames on the host.

Tolerance: OpenCV rounds its area sums in fixed point (integer scales) or float order of its own;
the kernel sums in float and rounds once, so a pixel may differ by one grey level (two allowed)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from edged.demo.sample_gate import make_gate_sample
from edged.demo.truth import read_video
from edged.pipeline.motion import MotionGate, small_grey
from edged.types import Frame
from tests.support.gpu import astronaut_bgr

pytestmark = pytest.mark.gpu

SIZES = {"native": None, "1080p": (1920, 1080), "odd": (1001, 563), "w637": (637, 481), "4k": (3840, 2160)}


@pytest.fixture(scope="module")
def gate_frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    # MJPEG: the GPU machine's OpenCV with CUDA has no FFmpeg, so it writes no mp4 (found there).
    path = tmp_path_factory.mktemp("gate") / "gate.avi"
    make_gate_sample(path, seconds=40.0, fps=5.0, gap_s=(6.0, 9.0), codec="mjpg")
    return read_video(path)


class Pitched:
    """A uint8 HWC image in a pitched device allocation (rows padded, as cudaMallocPitch lays them)."""

    def __init__(self, host: np.ndarray) -> None:
        import pycuda.driver as cuda

        h, w = host.shape[:2]
        c = 1 if host.ndim == 2 else host.shape[2]
        self.alloc, self.pitch = cuda.mem_alloc_pitch(w * c, h, 4)  # rows padded for the odd widths
        copy = cuda.Memcpy2D()
        copy.set_src_host(np.ascontiguousarray(host))
        copy.set_dst_device(self.alloc)
        copy.src_pitch, copy.dst_pitch = w * c, self.pitch
        copy.width_in_bytes, copy.height = w * c, h
        copy(aligned=True)
        self.shape = host.shape

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        c = 1 if len(self.shape) == 2 else self.shape[2]
        strides = (self.pitch, c, 1) if len(self.shape) == 3 else (self.pitch, 1)
        return {
            "shape": tuple(self.shape),
            "typestr": "|u1",
            "data": (int(self.alloc), False),
            "strides": strides,
            "version": 3,
        }


def packed(host: np.ndarray) -> Any:
    import pycuda.driver as cuda

    from edged.gpu.buffers import DeviceTensor

    host = np.ascontiguousarray(host)
    alloc = cuda.mem_alloc(host.nbytes)
    cuda.memcpy_htod(alloc, host)
    return DeviceTensor(int(alloc), host.shape, np.dtype(np.uint8), owner=alloc)


def frames_for(gate_frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, size in SIZES.items():
        img = gate_frames[30]  # a car with its plate in the frame
        out[f"gate-{name}"] = img if size is None else cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    out["astronaut"] = astronaut_bgr()
    return out


@pytest.mark.parametrize("fmt", ["bgr8", "rgb8"])
@pytest.mark.parametrize("layout", ["packed", "pitched"])
def test_device_small_grey_matches_the_cpu_path(
    gpu: Any, gate_frames: list[np.ndarray], fmt: str, layout: str
) -> None:
    from edged.gpu.motion import DeviceGrey

    grey = DeviceGrey("test")
    for name, host in frames_for(gate_frames).items():
        for height in (120, 97):
            for channels in (3, 4):
                img = host if channels == 3 else cv2.cvtColor(host, cv2.COLOR_BGR2BGRA)
                dev = packed(img) if layout == "packed" else Pitched(img)
                before = grey.pipe.d2h
                got = grey(dev, fmt, height)
                want = small_grey(img, fmt, height)
                assert got is not None and got.shape == want.shape and got.dtype == np.uint8, (name, height)
                assert grey.pipe.d2h - before == want.size  # only the small frame came down
                diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
                assert diff.max() <= 2 and diff.mean() < 0.1, (
                    name,
                    height,
                    channels,
                    diff.max(),
                    diff.mean(),
                )
    grey.close()


def test_a_frame_smaller_than_the_small_one_goes_to_the_cpu_path(gpu: Any) -> None:
    from edged.gpu.motion import DeviceGrey

    grey = DeviceGrey("test")
    assert grey(packed(np.zeros((100, 160, 3), np.uint8)), "bgr8", 120) is None
    grey.close()


def test_a_gate_fed_device_frames_decides_like_one_fed_host_frames(
    gpu: Any, gate_frames: list[np.ndarray]
) -> None:
    host_gate, dev_gate = MotionGate(region=True), MotionGate(region=True)
    host_res, dev_res = [], []
    for i, img in enumerate(gate_frames):
        host_res.append(host_gate.check(Frame("cam", i, img)))
        dev_res.append(dev_gate.check(Frame("cam", i, packed(img))))
    assert dev_gate._device is not None  # the kernel path ran, not the download fallback
    same = sum(a.run_detector == b.run_detector for a, b in zip(host_res, dev_res, strict=True))
    assert same >= 0.98 * len(host_res) and sum(r.reason == "motion" for r in dev_res) > 20
    assert dev_gate._device.pipe.d2h == len(gate_frames) * 160 * 120  # 19 KB a frame, not 900 KB
