"""Serve at once: the engine a model starts with, and the background build that will replace it.

`open_engine` is what a model server calls at load instead of `create_engine` (the wiring is the model
servers' job, edged/serving/). It returns an engine that serves now and, where a better engine is not
in the cache yet, a started `BackgroundBuild`; the model slot (edged.serving.slot) waits for it and
switches in the engine it returns (see edged/infer/builder.py for its process, thread and states).

- `backend: tensorrt` (strict) keeps its meaning: the TensorRT engine, built now when missing, or a
  ModelLoadError; no fallback, no background build.
- `backend: auto` where TensorRT runs: ONNX Runtime serves (CUDA provider where it runs, else CPU)
  while the TensorRT engine builds in the builder process; a cached engine comes back from the builder
  within seconds, without a build.
- ONNX Runtime on the CPU: the model serves as shipped the first time, while its offline-optimized copy
  is built and cached; later starts load the cached copy directly (no build).

A cache folder that cannot be written means every start would rebuild (jetson-inference #1031): said
once, with the fix, and no background build is started.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edged.infer.base import Engine, EngineOptions, ModelLoadError
from edged.infer.builder import BackgroundBuild
from edged.infer.builds import BuildJob
from edged.infer.factory import choose_backend, create_engine
from edged.infer.onnxruntime import cpu_only
from edged.infer.onnxruntime_cuda import cuda_engine_reason

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)


def cache_unwritable(cache_dir: Path) -> str | None:
    """Why engines cannot be cached in `cache_dir`, or None."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {cache_dir}: {e.strerror}"
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        return f"{cache_dir} is not writable by this user (uid {os.getuid()})"
    return None


def runs_on_gpu(backend: str, options: EngineOptions) -> bool:
    """Whether an engine `open_engine` makes for `backend` (the one serving now, or the one built in
    the background) runs on the GPU. Asked before any exists: an engine is given its server's GPU lane
    at construction, so the lane is made first."""
    try:
        chosen, _ = choose_backend(backend)
    except ModelLoadError:
        return False  # open_engine raises it, with the reason
    return chosen == "tensorrt" or cuda_engine_reason(options) is None


def open_engine(
    name: str, path: Path, backend: str, options: EngineOptions, lane: GpuLane | None = None
) -> tuple[Engine, BackgroundBuild | None]:
    """(engine serving now, the started build of its replacement or None). Raises ModelLoadError.
    `lane`: the model server's GPU lane, given to both engines (the built one when it is loaded)."""
    if backend == "tensorrt":
        return create_engine(name, path, "tensorrt", options, lane), None
    chosen, _ = choose_backend(backend)
    builder = "tensorrt" if chosen == "tensorrt" else "onnxruntime"
    engine = create_engine(name, path, "onnxruntime", options, lane)
    if builder == "onnxruntime" and (not cpu_only(options) or engine.info.detail):
        return engine, None  # CUDA sessions optimize at load; a cached optimized model is loaded already
    reason = cache_unwritable(options.cache_dir)
    if reason is not None:
        log.warning(
            "model %s: engines cannot be cached (%s), so none is built and every start costs the full "
            "load; fix: make tensorrt.cache_dir writable (systemd: CacheDirectory=edged)",
            name,
            reason,
        )
        return engine, None
    return engine, BackgroundBuild(BuildJob(name, path, builder, options), lane=lane).start()
