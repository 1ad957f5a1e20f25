"""Preprocessing: one spec per model (spec.py), implemented on the CPU (cpu.py, the reference) and on
the GPU (edged.gpu: fused CUDA kernel, cv2.cuda). The chain only sees the `Preprocessor` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edged.preprocess.cpu import preprocess_crops, preprocess_frame
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

    def frames(self, frames: Sequence[Frame], spec: PreprocessSpec, rows: int = 0) -> tuple[Any, list[Plan]]:
        """Several cameras' frames (same output size) as rows of one tensor, zero rows up to `rows`."""
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

    def frames(
        self, frames: Sequence[Frame], spec: PreprocessSpec, rows: int = 0
    ) -> tuple[np.ndarray, list[Plan]]:
        done = [preprocess_frame(_host(f), spec, f.fmt) for f in frames]
        tensors = [t for t, _ in done]
        if rows > len(tensors):
            tensors.append(np.zeros((rows - len(tensors), *tensors[0].shape[1:]), tensors[0].dtype))
        return np.concatenate(tensors), [p for _, p in done]


def _host(frame: Frame) -> np.ndarray:
    if isinstance(frame.image, np.ndarray):
        return frame.image
    raise TypeError(
        f"camera {frame.camera}: the CPU preprocessor needs a host frame, got {type(frame.image).__name__}"
    )
