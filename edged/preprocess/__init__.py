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
    """Turns a frame (or crops of it) into a model input tensor, host or device memory.

    `lane`: the caller's GPU lane (an edged.gpu GpuLane; a model server passes its own): a GPU
    implementation runs on its stream and counts the bytes it moves there, and without one uses a lane
    of its own per camera. The CPU implementation takes and ignores it."""

    name: str

    def stage(self, frame: Frame) -> None:
        """Work for `frame` that can run ahead, on the submitting thread (a GPU implementation copies a
        host frame into page-locked memory there); nothing on the CPU."""
        ...

    def forget(self, camera: str) -> None:
        """Free what is held for `camera` (a GPU implementation: its frame buffers in device and
        page-locked memory), once it has stopped and every frame of it has left; nothing on the CPU."""
        ...

    def frame(self, frame: Frame, spec: PreprocessSpec, lane: Any = None) -> tuple[Any, Plan]: ...

    def crops(
        self, frame: Frame, quads: Sequence[np.ndarray], spec: PreprocessSpec, lane: Any = None
    ) -> tuple[Any, list[Plan]]: ...

    def rows(
        self, items: Sequence[tuple[Frame, Plan]], spec: PreprocessSpec, rows: int = 0, lane: Any = None
    ) -> Any:
        """Any frames' regions (whole frames or crops, of any cameras; all plans of one output size)
        as the rows of one tensor, zero rows after them up to `rows` (a model server's batch)."""
        ...


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
