"""`make_preprocessor`: the Preprocessor for `preprocess.device` (fused kernel, cv2.cuda or the CPU), one
instance per implementation."""

from __future__ import annotations

import logging
import threading
from typing import Any

from edged.gpu.context import GpuLane, gpu_available, gpu_thread, in_gpu_thread, init

log = logging.getLogger(__name__)

__all__ = [
    "GpuLane",
    "gpu_available",
    "gpu_thread",
    "in_gpu_thread",
    "init",
    "make_preprocessor",
]

_lock = threading.Lock()
# One instance per implementation: the kernel preprocessor caches each camera's uploaded frame, so the
# detector and the crop stages must share it (and cv2cuda reads through it too).
_instances: dict[str, Any] = {}


def make_preprocessor(device: str = "auto", metrics: Any = None, strict: bool = False) -> Any:
    """A Preprocessor for `preprocess.device`: auto | kernel | cv2cuda | cpu.

    auto = the fused kernel when pycuda works (fastest: one launch per frame or crop batch), else CPU.
    kernel/cv2cuda without a usable GPU: CPU with a warning, or RuntimeError when `strict`.
    """
    from edged.preprocess.cpu import CpuPreprocessor

    if device not in ("auto", "kernel", "cv2cuda", "cpu"):
        raise ValueError(f"unknown preprocess device {device!r} (auto, kernel, cv2cuda, cpu)")
    if device == "cpu":
        return CpuPreprocessor()
    reason = gpu_available()
    if reason is None and device == "cv2cuda":
        from edged.gpu.cv2cuda import unavailable_reason

        reason = unavailable_reason()
    if reason is not None:
        if strict:
            raise RuntimeError(f"preprocess.device={device}: {reason}")
        (log.info if device == "auto" else log.warning)("preprocessing on the CPU: %s", reason)
        return CpuPreprocessor()
    with _lock:
        if "kernel" not in _instances:
            from edged.gpu.preprocess import GpuPreprocessor

            _instances["kernel"] = GpuPreprocessor(metrics=metrics)
        if device == "cv2cuda":
            if "cv2cuda" not in _instances:
                from edged.gpu.cv2cuda import Cv2CudaPreprocessor

                _instances["cv2cuda"] = Cv2CudaPreprocessor(_instances["kernel"])
            return _instances["cv2cuda"]
        return _instances["kernel"]
