"""Preprocessing: one spec per model (spec.py), implemented on the CPU (cpu.py, the reference) and on
the GPU (edged.gpu: fused CUDA kernel, cv2.cuda). The chain only sees the `Preprocessor` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edged.preprocess.cpu import preprocess_crops, preprocess_frame, render_rows
from edged.preprocess.spec import Plan, PreprocessSpec, plan_crops, plan_frame
from edged.types import Frame

__all__ = ["CpuPreprocessor", "Plan", "PreprocessSpec", "Preprocessor", "plan_crops", "plan_frame"]


class Preprocessor(Protocol):
    """Turns a frame (or crops of it) into a model input tensor, host or device memory."""

    name: str

    def frame(self, frame: Frame, spec: PreprocessSpec) -> tuple[Any, Plan]: ...

    def crops(
        self, frame: Frame, quads: Sequence[np.ndarray], spec: PreprocessSpec
    ) -> tuple[Any, list[Plan]]: ...

    def rows(self, items: Sequence[tuple[Frame, Plan]], spec: PreprocessSpec, rows: int = 0) -> Any:
        """Any frames' regions (whole frames or crops, of any cameras; all plans of one output size)
        as the rows of one tensor, zero rows after them up to `rows` (a model server's batch)."""
        ...


class CpuPreprocessor:
    """The reference implementation on host memory (OpenCV)."""

    name = "cpu"

    def frame(self, frame: Frame, spec: PreprocessSpec) -> tuple[np.ndarray, Plan]:
        return preprocess_frame(_host(frame), spec, frame.fmt)

    def crops(
        self, frame: Frame, quads: Sequence[np.ndarray], spec: PreprocessSpec
    ) -> tuple[np.ndarray, list[Plan]]:
        return preprocess_crops(_host(frame), quads, spec, frame.fmt)

    def rows(self, items: Sequence[tuple[Frame, Plan]], spec: PreprocessSpec, rows: int = 0) -> np.ndarray:
        return render_rows([(_host(f), p, f.fmt) for f, p in items], spec, rows)


def _host(frame: Frame) -> np.ndarray:
    if isinstance(frame.image, np.ndarray):
        return frame.image
    raise TypeError(
        f"camera {frame.camera}: the CPU preprocessor needs a host frame, got {type(frame.image).__name__}"
    )
