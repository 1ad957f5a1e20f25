"""edged's jetson-utils source on the real NVIDIA jetson-utils, wherever it imports: a Jetson, or a GPU
machine where it was built by hand (docs/jetson.md says how it ran on an x86 H100). Skipped elsewhere.

videoSource on an H.264 file -> cudaImage frames -> the fused preprocessing kernel, compared with the
same frame decoded by OpenCV and preprocessed on the CPU. jetson-utils plays files in real time and hands
over the newest frame, so each cudaImage's frame index comes from its timestamp.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.capture import jetson
from edged.preprocess.cpu import preprocess_frame
from edged.preprocess.spec import PreprocessSpec
from edged.types import Frame
from tests.support.gpu import HALF, REPO

pytestmark = pytest.mark.gpu
VIDEOS = Path(os.environ.get("EDGED_VIDEOS", REPO / ".probe"))
DET = PreprocessSpec(resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF)


def test_jetson_source_frames_through_the_kernel(gpu: Any) -> None:
    if jetson.available():
        pytest.skip(str(jetson.available()))
    import cv2

    from edged.gpu.preprocess import GpuPreprocessor

    path = VIDEOS / "h264.mp4"
    if not path.exists():
        pytest.skip(f"{path} missing")
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cpu = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        cpu.append(img)
    cap.release()
    src = jetson.JetsonSource(f"file://{path}", target=f"file://{path}")
    src.open()
    pre = GpuPreprocessor()
    compared = 0
    try:
        for _ in range(40):
            image = src.read(1.0)
            if image is None:
                continue
            index = round(int(getattr(image, "timestamp", 0)) * fps / 1e9)
            if not 0 <= index < len(cpu):
                continue
            frame = Frame("j", index, image, fmt=src.fmt)
            assert frame.on_device and frame.shape == (*cpu[index].shape[:2], 3)
            got, _ = pre.frame(frame, DET)
            ref, _ = preprocess_frame(cpu[index], DET, "bgr8")
            a, _ = DET.scale_bias
            d = np.abs(got.to_host()[0].astype(np.float64) - ref) / a.reshape(3, 1, 1)
            print(f"jetson frame {index}: {d.mean():.2f} levels mean vs OpenCV")
            assert d.mean() < 3.0  # two YUV->RGB conversions (jetson-utils' kernel, FFmpeg's swscale)
            compared += 1
    finally:
        src.close()
    assert compared >= 10
