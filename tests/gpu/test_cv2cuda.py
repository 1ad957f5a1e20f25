"""The cv2.cuda path vs the CPU reference, with image-level tolerances: cv2.cuda.resize samples differently
from CPU cv2.resize (single pixels can differ a lot on noise), so we bound the mean and the 99th
percentile on natural and smooth images, not the maximum."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edged.preprocess.cpu import preprocess_crops, preprocess_frame, render_rows
from edged.preprocess.spec import PreprocessSpec, plan_crops
from edged.types import Frame
from tests.gpu.test_kernel import SPECS as KERNEL_SPECS
from tests.gpu.test_kernel import _quads, level_diff
from tests.support.gpu import HALF, IMAGENET_MEAN, IMAGENET_STD, astronaut_bgr

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cvpre(gpu: Any) -> Any:
    from edged.gpu.cv2cuda import Cv2CudaPreprocessor, unavailable_reason
    from edged.gpu.preprocess import GpuPreprocessor

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cv2.cuda unavailable: {reason}")
    return Cv2CudaPreprocessor(GpuPreprocessor())


def _big_natural() -> np.ndarray:
    import cv2

    return cv2.resize(astronaut_bgr(), (1920, 1080), interpolation=cv2.INTER_CUBIC)


SPECS = [
    PreprocessSpec(resize="letterbox", size=(640, 640), pad_value=114, color="rgb"),
    PreprocessSpec(resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF),
    PreprocessSpec(resize="letterbox", size=(320, 256), mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="nhwc"),
]


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_cv2cuda_frame_close_to_reference(cvpre: Any, i: int) -> None:
    spec = SPECS[i]
    image = _big_natural()
    ref, _ = preprocess_frame(image, spec)
    tensor, _ = cvpre.frame(Frame("cv", i, image), spec)
    d = level_diff(tensor.to_host(), ref, spec)
    p99 = float(np.percentile(d, 99))
    print(
        f"cv2cuda {spec.resize} {spec.size} {spec.layout}: mean {d.mean():.3f} levels, p99 {p99:.3f}, max {d.max():.1f}"
    )
    assert d.mean() <= 1.5 and p99 <= 12.0


def test_cv2cuda_crops_close_to_reference(cvpre: Any) -> None:
    spec = KERNEL_SPECS["fixed_height"]
    image = np.ascontiguousarray(np.concatenate([astronaut_bgr(), astronaut_bgr()], axis=1))
    quads = _quads(*image.shape[:2])
    ref, _ = preprocess_crops(image, quads, spec)
    tensor, _ = cvpre.crops(Frame("cv", 99, image), quads, spec)
    d = level_diff(tensor.to_host(), ref, spec)
    p99 = float(np.percentile(d, 99))
    print(f"cv2cuda crops: mean {d.mean():.3f} levels, p99 {p99:.3f}, max {d.max():.1f}")
    assert d.mean() <= 1.5 and p99 <= 12.0


def test_cv2cuda_rows_of_one_frame_and_of_several(cvpre: Any) -> None:
    """`rows()` with one camera's crops goes through cv2.cuda; rows of two frames (and padding rows)
    take the fused kernel. Both against the CPU reference's render_rows, with the zero padding row."""
    from edged.gpu.context import GpuLane, gpu_thread

    spec = KERNEL_SPECS["fixed_height"]
    image = np.ascontiguousarray(np.concatenate([astronaut_bgr(), astronaut_bgr()], axis=1))
    other = np.ascontiguousarray(astronaut_bgr()[::-1])
    quads = _quads(*image.shape[:2])
    plans = plan_crops(spec, quads)
    first, second = Frame("cv", 5, image), Frame("cv2", 6, other)
    one = [(first, p) for p in plans]
    two = [(first, plans[0]), (second, plan_crops(spec, _quads(*other.shape[:2]))[1])]
    lane = GpuLane("rows")
    with gpu_thread():
        got_one = cvpre.rows(one, spec, lane=lane).to_host(lane=lane)
        got_two = cvpre.rows(two, spec, rows=3, lane=lane).to_host(lane=lane)
    for label, got, items in (("one frame", got_one, one), ("two frames", got_two, two)):
        ref = render_rows([(f.image, p, f.fmt) for f, p in items], spec, rows=got.shape[0])
        d = level_diff(got[: len(items)], ref[: len(items)], spec)
        p99 = float(np.percentile(d, 99))
        print(f"cv2cuda rows ({label}): mean {d.mean():.3f} levels, p99 {p99:.3f}, max {d.max():.1f}")
        assert d.mean() <= 1.5 and p99 <= 12.0
    assert got_one.shape[0] == len(plans)
    assert got_two.shape[0] == 3 and not got_two[2].any()  # the padding row
