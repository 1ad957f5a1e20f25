"""CPU reference implementation of the preprocessing contract (OpenCV + numpy).

This is the specification the GPU implementations are tested against: bilinear sampling through
the plan's homography (cv2.warpPerspective / cv2.resize, border replicated), padding with
`pad_value`, channel order, (x/255 - mean)/std, layout and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edged.preprocess.spec import Plan, PreprocessSpec, plan_crops, plan_frame
from edged.types import Frame, host_fmt


def _cv2():  # type: ignore[no-untyped-def]
    import cv2  # deferred: config checks and tests of pure logic need no OpenCV

    return cv2


def _is_axis_scale(h: np.ndarray) -> bool:
    return bool(
        abs(h[0, 1]) < 1e-12 and abs(h[1, 0]) < 1e-12 and abs(h[2, 0]) < 1e-12 and abs(h[2, 1]) < 1e-12
    )


def render(image: np.ndarray, plan: Plan, spec: PreprocessSpec, fmt: str = "bgr8") -> np.ndarray:
    """One output image as HWC float32 in the model's channel order, normalized, padding included."""
    cv2 = _cv2()
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    x, y, cw, ch = plan.content
    # Content pixels are sampled on the source at h_out_to_src(out) for out inside the content box.
    to_content = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)
    h_content = plan.h_out_to_src @ to_content
    src_h, src_w = image.shape[:2]
    if (
        _is_axis_scale(h_content)
        and abs(h_content[0, 0] - src_w / cw) < 1e-9
        and abs(h_content[1, 1] - src_h / ch) < 1e-9
    ):
        content = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    else:
        content = cv2.warpPerspective(
            image,
            h_content,
            (cw, ch),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    out = np.full((plan.out_h, plan.out_w, 3), spec.pad_value, dtype=np.float32)
    out[y : y + ch, x : x + cw] = content
    src_is_rgb = host_fmt(fmt) == "rgb8"
    if (spec.color == "rgb") != src_is_rgb:
        out = out[:, :, ::-1]
    a, b = spec.scale_bias
    return out * a + b


def _pack(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    batch = np.stack(images, axis=0)
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float16 if spec.dtype == "float16" else np.float32)


def render_rows(
    items: Sequence[tuple[np.ndarray, Plan, str]], spec: PreprocessSpec, rows: int = 0
) -> np.ndarray:
    """(image, plan, pixel format) items, one output size, as one batch; zero rows up to `rows`."""
    if len({(p.out_w, p.out_h) for _, p, _ in items}) != 1:
        raise ValueError("a batch needs one output size")
    batch = _pack([render(img, p, spec, fmt) for img, p, fmt in items], spec)
    if rows > len(items):
        batch = np.concatenate([batch, np.zeros((rows - len(items), *batch.shape[1:]), batch.dtype)])
    return batch


def preprocess_frame(image: np.ndarray, spec: PreprocessSpec, fmt: str = "bgr8") -> tuple[np.ndarray, Plan]:
    """Whole frame -> (1, C, H, W) (or NHWC) tensor and the plan that maps results back."""
    plan = plan_frame(spec, image.shape[1], image.shape[0])
    return _pack([render(image, plan, spec, fmt)], spec), plan


def preprocess_crops(
    image: np.ndarray, quads: Sequence[np.ndarray], spec: PreprocessSpec, fmt: str = "bgr8"
) -> tuple[np.ndarray, list[Plan]]:
    """Crops of `image` at the given quadrilaterals -> one batch tensor (N, C, H, W) and their plans."""
    plans = plan_crops(spec, quads)
    if not plans:
        return np.zeros(spec.batch_shape(0), dtype=np.float32), []
    return _pack([render(image, p, spec, fmt) for p in plans], spec), plans


class CpuPreprocessor:
    """The reference implementation on host memory (OpenCV); it has no use for a GPU lane."""

    name = "cpu"

    def stage(self, frame: Frame) -> None:
        pass

    def forget(self, camera: str) -> None:
        pass

    def frame(self, frame: Frame, spec: PreprocessSpec, lane: Any = None) -> tuple[np.ndarray, Plan]:
        return preprocess_frame(_host(frame), spec, frame.fmt)

    def crops(
        self, frame: Frame, quads: Sequence[np.ndarray], spec: PreprocessSpec, lane: Any = None
    ) -> tuple[np.ndarray, list[Plan]]:
        return preprocess_crops(_host(frame), quads, spec, frame.fmt)

    def rows(
        self, items: Sequence[tuple[Frame, Plan]], spec: PreprocessSpec, rows: int = 0, lane: Any = None
    ) -> np.ndarray:
        return render_rows([(_host(f), p, f.fmt) for f, p in items], spec, rows)


def _host(frame: Frame) -> np.ndarray:
    if isinstance(frame.image, np.ndarray):
        return frame.image
    raise TypeError(
        f"camera {frame.camera}: the CPU preprocessor needs a host frame, got {type(frame.image).__name__}"
    )
