"""Parts of edged.gpu that need no GPU (run everywhere, including CI): availability reasons, fallbacks,
device-array views, kernel parameter packing and the kernel source's presence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edged.gpu.context import gpu_available
from edged.gpu.kernels import CUDA_SOURCE, ITEM_DTYPE
from edged.gpu.preprocess import device_image, items_for, needs_swap
from edged.gpu.preprocessors import make_preprocessor
from edged.preprocess.cpu import CpuPreprocessor
from edged.preprocess.spec import PreprocessSpec, plan_crops, plan_frame


class FakeDeviceArray:
    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...] | None, typestr: str = "|u1") -> None:
        self.__cuda_array_interface__: dict[str, Any] = {
            "shape": shape,
            "strides": strides,
            "typestr": typestr,
            "data": (0x1000, False),
            "version": 3,
        }


def test_device_image_reads_pitch_and_rejects_bad_layouts() -> None:
    img = device_image(FakeDeviceArray((480, 637, 3), (1920, 3, 1)))
    assert (img.width, img.height, img.pitch, img.channels, img.ptr) == (637, 480, 1920, 3, 0x1000)
    assert device_image(FakeDeviceArray((480, 640, 4), None)).pitch == 2560
    assert device_image(FakeDeviceArray((10, 20), None)).channels == 1
    with pytest.raises(TypeError):
        device_image(FakeDeviceArray((10, 20, 3), None, "<f4"))
    with pytest.raises(ValueError):
        device_image(FakeDeviceArray((10, 20, 3), (60, 1, 20)))  # planar, not HWC
    with pytest.raises(ValueError):
        device_image(FakeDeviceArray((10, 20, 2), None))


def test_items_pack_homography_and_content_rect() -> None:
    spec = PreprocessSpec(resize="letterbox", size=(640, 640))
    plan = plan_frame(spec, 1920, 1080)
    items = items_for([plan])
    # The C struct Item { float h[9]; int cx, cy, cw, ch; unsigned long long src; int sw, sh, spitch,
    # sc, swap; unsigned long long uv; int uvpitch; float yuv[6]; }: src 8-byte aligned at 56, uv at 88,
    # the struct padded to 128 bytes (nvcc's offsetof agrees: checked when the NV12 fields came).
    offsets = {name: ITEM_DTYPE.fields[name][1] for name in ITEM_DTYPE.names}
    assert offsets == {"h": 0, "rect": 36, "src": 56, "src_dims": 64, "uv": 88, "uv_pitch": 96, "yuv": 100}
    assert ITEM_DTYPE.itemsize == 128 and items.nbytes == 128
    assert items[0]["uv"] == 0  # 0: packed pixels (an NV12 item names its chroma plane)
    assert items[0]["src"] == 0  # 0: the launch's own source image (single-frame and crop batches)
    assert tuple(items[0]["rect"]) == plan.content
    np.testing.assert_allclose(items[0]["h"].reshape(3, 3), plan.h_out_to_src, rtol=1e-6)
    quads = [np.array([[0, 0], [100, 0], [100, 20], [0, 20]], np.float32)] * 3
    assert len(items_for(plan_crops(PreprocessSpec(resize="fixed_height", size=(2048, 48)), quads))) == 3


def test_channel_swap_rule() -> None:
    assert needs_swap(PreprocessSpec(color="rgb"), "bgr8")
    assert not needs_swap(PreprocessSpec(color="rgb"), "rgb8")
    assert not needs_swap(PreprocessSpec(color="bgr"), "bgr8")
    assert needs_swap(PreprocessSpec(color="bgr"), "nv12") and not needs_swap(
        PreprocessSpec(color="rgb"), "nv12"
    )


def test_kernel_source_has_every_entry_point() -> None:
    for name in (
        "pp_nchw_f32",
        "pp_nchw_f16",
        "pp_nhwc_f32",
        "pp_nhwc_f16",
        "pp_nhwc_u8",
        "ctc_argmax",
        "threshold_bits",
    ):
        assert f"{name}" in CUDA_SOURCE


@pytest.mark.skipif(gpu_available() is None, reason="a GPU is available here: the fallback is not taken")
def test_without_gpu_everything_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    reason = gpu_available()
    assert reason  # says why, for logs and skips
    assert isinstance(make_preprocessor("auto"), CpuPreprocessor)
    assert isinstance(make_preprocessor("kernel"), CpuPreprocessor)
    assert "preprocessing on the CPU" in caplog.text
    with pytest.raises(RuntimeError, match=r"preprocess\.device=kernel"):
        make_preprocessor("kernel", strict=True)
    with pytest.raises(ValueError):
        make_preprocessor("tpu")
    from edged.infer.onnxruntime_cuda import cuda_unavailable_reason

    assert cuda_unavailable_reason()


def test_tensorrt_backend_reports_why_unavailable() -> None:
    from edged.infer.base import AVAILABILITY
    from edged.infer.tensorrt_build import tensorrt_missing

    missing = tensorrt_missing()
    if missing:  # CI: not installed, or only tensorrt-stubs (an importable empty namespace package)
        assert AVAILABILITY["tensorrt"]() == missing and "TensorRT" in missing
