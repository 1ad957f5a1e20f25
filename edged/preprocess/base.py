"""The `Preprocessor` protocol: what the chain and the model servers call, on the CPU or the GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edged.preprocess.spec import Plan, PreprocessSpec
from edged.types import Frame


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
