"""Frames born on the GPU: the NV12 path of the fused kernel against the CPU reference, and the NVDEC and
nvJPEG sources on real files against OpenCV's CPU decode of the same files.

The kernel tests need only pycuda. The source tests need NVIDIA's PyNvVideoCodec / nvImageCodec and
video files made with ffmpeg beforehand (the GPU machine has no ffmpeg): `$EDGED_VIDEOS` (default
`.probe/`) holding h264.mp4 (1080p H.264 as cameras send it), h265.mp4, mjpeg.avi and jpegs/*.jpg;
scripts/device_run.sh makes and carries them. Each test skips with the reason where its part is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.preprocess.cpu import preprocess_crops, preprocess_frame
from edged.preprocess.nv12 import nv12_to_rgb, rgb_to_nv12, split_nv12
from edged.preprocess.spec import PreprocessSpec
from edged.types import Frame
from tests.support.gpu import HALF, REPO, textured

pytestmark = pytest.mark.gpu

VIDEOS = Path(os.environ.get("EDGED_VIDEOS", REPO / ".probe"))
DET = PreprocessSpec(resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF)
REC = PreprocessSpec(resize="fixed_height", size=(320, 48), color="bgr", mean=HALF, std=HALF)


def device_nv12(rgb: np.ndarray, matrix: str, full: bool) -> tuple[Any, np.ndarray]:
    """An Nv12Frame in device memory of `rgb` (via rgb_to_nv12), and the RGB the CPU reference makes of it."""
    import pycuda.driver as cuda

    from edged.gpu.frames import FrameMemory, Nv12Frame

    h, w = rgb.shape[:2]
    packed = rgb_to_nv12(rgb, matrix, full)
    host_rgb = nv12_to_rgb(*split_nv12(packed, w, h), matrix, full)
    staging = cuda.mem_alloc(packed.nbytes)
    cuda.memcpy_htod(staging, packed)
    stream = cuda.Stream()
    frame = Nv12Frame.copy_of(
        FrameMemory(), int(staging), int(staging) + w * h, w, w, w, h, stream, matrix, full
    )
    stream.synchronize()
    staging.free()
    return frame, host_rgb


def levels(got: np.ndarray, ref: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    a, _ = spec.scale_bias
    shape = (1, 3, 1, 1) if spec.layout == "nchw" else (1, 1, 1, 3)
    return np.abs(got.astype(np.float64) - ref.astype(np.float64)) / a.reshape(shape)


@pytest.mark.parametrize(
    ("matrix", "full"), [("bt601", False), ("bt709", False), ("bt709", True), ("bt2020", False)]
)
def test_nv12_frame_through_the_kernel_matches_the_cpu_reference(gpu: Any, matrix: str, full: bool) -> None:
    """NV12 sampled by the kernel = the reference RGB (nearest chroma, clamped) preprocessed on the CPU."""
    from edged.gpu.preprocess import GpuPreprocessor

    rgb = textured(1080, 1920, seed=3)[:, :, ::-1].copy()
    frame, ref_rgb = device_nv12(rgb, matrix, full)
    pre = GpuPreprocessor()
    got, plan = pre.frame(Frame("cam", 0, frame, fmt="nv12"), DET)
    ref, ref_plan = preprocess_frame(ref_rgb, DET, "rgb8")
    assert (plan.out_w, plan.out_h) == (ref_plan.out_w, ref_plan.out_h)
    d = levels(got.to_host(), ref[None], DET)
    print(f"NV12 {matrix} full={full}: max {d.max():.2f} mean {d.mean():.3f} levels")
    # The reference rounds the converted RGB to 8 bits before sampling (+-0.5 level), the kernel does not.
    assert d.mean() < 0.45 and d.max() <= 1.5
    quads = [np.array([[100, 200], [400, 210], [398, 260], [98, 250]], np.float32)]
    crops, _ = pre.crops(Frame("cam", 0, frame, fmt="nv12"), quads, REC)
    ref_crops, _ = preprocess_crops(ref_rgb, quads, REC, "rgb8")
    dc = levels(crops.to_host(), ref_crops, REC)
    print(f"NV12 crop: max {dc.max():.2f} mean {dc.mean():.3f}")
    assert dc.mean() < 1.0 and dc.max() <= 8.0  # warpPerspective's 1/32-pixel grid on the CPU side


def test_nv12_and_bgr_frames_in_one_batch(gpu: Any) -> None:
    """A cross-camera batch may mix NV12 (GPU-decoded) and BGR (CPU-decoded) frames: each row as alone."""
    from edged.gpu.preprocess import GpuPreprocessor
    from edged.preprocess.spec import plan_frame

    rgb = textured(720, 1280, seed=5)[:, :, ::-1].copy()
    nv12, ref_rgb = device_nv12(rgb, "bt709", False)
    bgr = textured(720, 1280, seed=6)
    pre = GpuPreprocessor()
    plan = plan_frame(DET, 1280, 720)
    frames = [(Frame("a", 0, nv12, fmt="nv12"), plan), (Frame("b", 0, bgr), plan)]
    out = pre.rows(frames, DET, rows=4).to_host()
    ref_a, _ = preprocess_frame(ref_rgb, DET, "rgb8")
    ref_b, _ = preprocess_frame(bgr, DET, "bgr8")
    assert levels(out[:1], ref_a[None], DET).mean() < 0.45  # the reference's 8-bit RGB, as above
    assert levels(out[1:2], ref_b[None], DET).mean() < 0.3
    assert not out[2:].any()  # padding rows zeroed


def test_nv12_host_views(gpu: Any) -> None:
    """get() and region() convert on the device: the reference RGB, exactly (rounding aside)."""
    rgb = textured(480, 640, seed=9)[:, :, ::-1].copy()
    frame, ref = device_nv12(rgb, "bt601", False)
    whole = frame.get()
    assert whole.shape == (480, 640, 3) and np.abs(whole.astype(int) - ref.astype(int)).max() <= 1
    part = frame.region((101.4, 50.2, 300.6, 120.9))
    assert part.shape == (71, 200, 3)
    assert np.abs(part.astype(int) - ref[50:121, 101:301].astype(int)).max() <= 1
    assert Frame("c", 0, frame, fmt="nv12").shape == (480, 640, 3)


def _video(name: str) -> Path:
    path = VIDEOS / name
    if not path.exists():
        pytest.skip(f"{path} missing (made with ffmpeg and carried by scripts/device_run.sh)")
    return path


def _cpu_frames(path: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    if not out:
        pytest.skip(f"this OpenCV cannot read {path.name} (no FFmpeg): nothing to compare with")
    return out


@pytest.mark.parametrize("name", ["h264.mp4", "h265.mp4"])
def test_nvdec_source_reads_every_frame_like_opencv(gpu: Any, name: str) -> None:
    from edged.capture import nvdec

    reason = nvdec.available()
    if reason:
        pytest.skip(reason)
    path = _video(name)
    src = nvdec.NvdecSource(f"file://{path}", target=str(path), live=False)
    src.open()
    frames: list[Any] = []
    try:
        while True:
            src.grab(0.5)
            frames.append(src.retrieve())
    except Exception as exc:
        from edged.capture.base import SourceEnded

        assert isinstance(exc, SourceEnded), exc
    finally:
        src.close()
    cpu = _cpu_frames(path, 10**6)
    print(f"{name}: {len(frames)} NVDEC frames, {len(cpu)} OpenCV frames, codec {src.codec}")
    assert len(frames) == len(cpu)
    # Each frame owns its copy: an early frame still holds its picture after every later decode.
    for i in (0, len(frames) // 2, len(frames) - 1):
        rgb = frames[i].get()
        d = np.abs(rgb[:, :, ::-1].astype(int) - cpu[i].astype(int))
        print(f"  frame {i}: NVDEC+ours vs OpenCV mean {d.mean():.2f} p99 {np.percentile(d, 99):.0f}")
        assert d.mean() < 2.0


def test_mjpeg_and_jpeg_folder_on_nvjpeg(gpu: Any) -> None:
    import cv2

    from edged.capture import nvjpeg

    reason = nvjpeg.available()
    if reason:
        pytest.skip(reason)
    folder = _video("jpegs")
    src = nvjpeg.JpegFolderSource(f"file://{folder}/", path=f"{folder}/")
    src.open()
    first = src.read(0.5)
    src.close()
    assert first is not None
    ref = cv2.imread(str(sorted(folder.glob("*.jpg"))[0]))
    assert np.abs(first.get()[:, :, ::-1].astype(int) - ref.astype(int)).mean() < 2.0
    path = _video("mjpeg.avi")
    mj = nvjpeg.MjpegSource(f"file://{path}", target=str(path))
    mj.open()
    n = 0
    try:
        while mj.grab(0.5):
            n += 1
            last = mj.retrieve() if n == 1 else None
            if last is not None:
                assert last.frame_shape[2] == 3
    except Exception as exc:
        from edged.capture.base import SourceEnded

        assert isinstance(exc, SourceEnded), exc
    mj.close()
    assert n == len(_cpu_frames(path, 10**6))


def test_auto_decode_takes_the_gpu_and_says_so(gpu: Any) -> None:
    from edged.capture import nvdec
    from edged.capture.sources import make_source

    if nvdec.available():
        pytest.skip(str(nvdec.available()))
    path = _video("h264.mp4")
    src = make_source(str(path), decode="auto")
    src.open()
    image = src.read(0.5)
    assert getattr(src, "decoder", None) == "nvdec" and getattr(src, "note", "x") is None
    assert Frame("c", 0, image, fmt=src.fmt).shape[:2] == (1080, 1920)
    src.close()
