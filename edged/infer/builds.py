"""What a build is, and building in this process (`build_now`, `verify_and_build` for `edged build-engine`).

A build turns a model file into a cached engine (edged/infer/engine_cache.py): a TensorRT plan
(`tensorrt_build.TensorRTBuild`, not executable without TensorRT), ONNX Runtime's offline-optimized
model (`OrtOptimizeBuild`, runs anywhere and is worth caching on CPU devices) or the fp16 version of a
model for ONNX Runtime's CUDA provider (`OrtFp16Build`). `BuildJob` is the plain data that names one;
the daemon runs builds in a separate process through edged/infer/builder.py (`BackgroundBuild`).
No threads of its own: everything here runs on its caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edged.infer.base import Engine, EngineOptions, ModelLoadError
from edged.infer.engine_cache import EngineCache, EngineKey, engine_key, quarantine

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

PhaseCallback = Callable[[str, int, int], None]  # (phase, step, total), as TensorRT's progress monitor


@dataclass(frozen=True)
class BuildJob:
    """What to build: plain, picklable data (it crosses into the builder process)."""

    name: str  # the configured model name, for messages
    model: Path  # the ONNX file
    builder: str  # "tensorrt" | "onnxruntime" | FP16_BUILDER
    options: EngineOptions = field(default_factory=EngineOptions)
    # Load the built engine in the watcher (for `poll`); False: only the file is wanted (the fp16
    # version goes through the model slot's shadow check, which opens it itself).
    load: bool = True


# The fp16 version of an ONNX model for ONNX Runtime's CUDA provider (edged.infer.quantize.convert_fp16).
# Not prefixed "onnxruntime": the cache treats entries whose name starts with the builder as its own.
FP16_BUILDER = "ort-fp16"


class Build(Protocol):
    key: EngineKey

    def produce(self, dest: Path, progress: PhaseCallback | None = None) -> None: ...

    def check(self, path: Path) -> str | None:
        """Why the cached engine at `path` does not load, or None (its checksum already matched)."""
        ...


class OrtOptimizeBuild:
    """ONNX Runtime offline optimization of one model for this CPU (shape-independent)."""

    def __init__(self, job: BuildJob) -> None:
        from edged.infer.onnxruntime import optimized_key

        self.model = job.model
        self.key = optimized_key(job.model)

    def produce(self, dest: Path, progress: PhaseCallback | None = None) -> None:
        from edged.infer.onnxruntime import optimize

        if progress is not None:
            progress("optimize", 0, 1)
        optimize(self.model, dest)
        if progress is not None:
            progress("optimize", 1, 1)

    def check(self, path: Path) -> str | None:
        from edged.infer.onnxruntime import load_problem

        return load_problem(path)


class OrtFp16Build:
    """The fp16 version of a model (float16 weights and activations, the fragile operators of
    FP16_KEEP_FP32 in fp32, float32 inputs and outputs), for ONNX Runtime's CUDA provider. Needs the
    `onnx` package in the builder process; without it the build fails with that reason."""

    def __init__(self, job: BuildJob) -> None:
        import onnxruntime as ort

        from edged.infer.quantize import FP16_KEEP_FP32

        self.model = job.model
        self.key = engine_key(
            job.model,
            builder=FP16_BUILDER,
            builder_version=f"onnxruntime {ort.__version__}; fp32 kept: {','.join(FP16_KEEP_FP32)}",
            device="any",
            dla_core=None,
            precision="fp16",
            calibration_cache=None,
            shapes=[],
            suffix=".onnx",
        )

    def produce(self, dest: Path, progress: PhaseCallback | None = None) -> None:
        import importlib.util

        from edged.infer.quantize import convert_fp16

        if importlib.util.find_spec("onnx") is None:
            raise ModelLoadError(
                f"{self.model}: making its fp16 version needs the `onnx` package (pip install onnx)"
            )
        if progress is not None:
            progress("fp16", 0, 1)
        work = dest.with_name(dest.name + ".fp16")  # convert_fp16 writes beside its target, then renames
        try:
            convert_fp16(self.model, work)
            work.replace(dest)
        except ModelLoadError:
            raise
        except Exception as e:  # the converter's own errors name the model, once
            raise ModelLoadError(
                f"{self.model}: cannot make its fp16 version: {type(e).__name__}: {e}"
            ) from None
        finally:
            work.unlink(missing_ok=True)
        if progress is not None:
            progress("fp16", 1, 1)

    def check(self, path: Path) -> str | None:
        from edged.infer.onnxruntime import load_problem

        return load_problem(path)


def prepare(job: BuildJob) -> Build:
    """The build for `job` with its cache key (TensorRT parses the model here)."""
    if job.builder == "tensorrt":
        from edged.infer.tensorrt_build import TensorRTBuild

        return TensorRTBuild(job.model, job.options)
    if job.builder == "onnxruntime":
        return OrtOptimizeBuild(job)
    if job.builder == FP16_BUILDER:
        return OrtFp16Build(job)
    raise ModelLoadError(f"model {job.name}: no engine builder {job.builder!r}")


def build_now(job: BuildJob, progress: PhaseCallback | None = None) -> Path:
    """Build (or find) the engine in this process. Ignores a recorded failure (the operator asked),
    records a new one."""
    return verify_and_build(job, progress)[0]


def verify_and_build(job: BuildJob, progress: PhaseCallback | None = None) -> tuple[Path, str]:
    """`edged build-engine`: (the engine file, what was done). A cached entry is verified (checksum, then
    a load by its backend): "verified"; a damaged one is quarantined and built again: "repaired: why";
    a missing one is built: "built". Raises ModelLoadError (recorded as the key's failure)."""
    build = prepare(job)
    cache = EngineCache(job.options.cache_dir)
    entry = cache.path(build.key)
    present = entry.is_file()
    damage = cache.damage(entry) if present else None
    try:
        if present and damage is None:
            found = cache.find(build.key)
            damage = build.check(found) if found is not None else "it vanished while being verified"
            if damage is None and found is not None:
                return found, "verified"
            quarantine(entry, damage or "")
        path = cache.build(build.key, lambda dest: build.produce(dest, progress))
    except ModelLoadError as e:
        cache.record_failure(build.key, str(e))
        raise
    return path, (f"repaired: {damage}" if present else "built")


def load_engine(job: BuildJob, path: Path, lane: GpuLane | None = None) -> Engine:
    """The engine a finished build made, loaded through the backend's own load path; `lane`: the GPU
    lane of the server it will serve (a TensorRT engine runs on it; ONNX Runtime's optimized model is
    a host engine)."""
    if job.builder == "tensorrt":
        from edged.infer.tensorrt import TensorRTEngine

        return TensorRTEngine(job.name, path, job.options, lane)
    from edged.infer.onnxruntime import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(job.name, job.model, job.options)  # finds `path` in the cache
    if engine.path != path:
        raise ModelLoadError(f"model {job.name}: the ONNX Runtime backend did not load the built {path}")
    return engine
