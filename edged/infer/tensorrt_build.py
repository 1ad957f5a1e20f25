"""TensorRT 10 engine building for edged: ONNX -> serialized plan, cached on disk.

NEVER EXECUTED in development (no TensorRT on any machine this was written on); written against the
TensorRT 10 Python API and type-checked with tensorrt-stubs 10.13 (see edged/infer/tensorrt.py).

Engines live in the one engine cache (edged/infer/engine_cache.py: content-addressed key, build lock,
atomic publish, pruning). `TensorRTBuild` parses once, then gives the cache key and `produce`s the plan;
the background builder (edged/infer/builder.py) runs it in a separate process, the strict `backend:
tensorrt` load path and `edged build-engine` run it in-process through `build_engine`. A persistent
timing cache (<cache_dir>/timing.cache) speeds rebuilds. Logger bridged to `logging`. No threads here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.fileio import atomic_write
from edged.infer.base import EngineOptions, ModelLoadError
from edged.infer.engine_cache import EngineCache, EngineKey, engine_key

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("edged.infer.tensorrt")

Progress = Callable[[str, int, int], None]  # (phase, step, total)


def tensorrt_missing() -> str | None:
    """Why TensorRT's Python bindings are not usable here, or None.

    `import tensorrt` alone is not proof: a stubs-only install (tensorrt-stubs) leaves a `tensorrt/`
    folder of .pyi files that Python imports as an empty namespace package.
    """
    try:
        import tensorrt
    except ImportError:
        return "TensorRT is not importable (it ships with JetPack / the TensorRT SDK)"
    if not hasattr(tensorrt, "Builder"):
        return "only TensorRT type stubs are installed here, not TensorRT (JetPack / the TensorRT SDK)"
    return None


def unavailable_reason() -> str | None:
    reason = tensorrt_missing()
    if reason:
        return reason
    from edged.gpu.context import gpu_available

    return gpu_available()


def _make_logger() -> trt.ILogger:
    import tensorrt as trt_mod

    levels = {
        trt_mod.ILogger.INTERNAL_ERROR: logging.CRITICAL,
        trt_mod.ILogger.ERROR: logging.ERROR,
        trt_mod.ILogger.WARNING: logging.WARNING,
        trt_mod.ILogger.INFO: logging.DEBUG,  # TRT's INFO is build chatter
        trt_mod.ILogger.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt_mod.ILogger):  # type: ignore[misc, name-defined]
        """Bridges TensorRT messages into Python logging (logger `edged.infer.tensorrt`)."""

        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


_LOGGER: list[Any] = []


def trt_logger() -> Any:
    if not _LOGGER:
        _LOGGER.append(_make_logger())
    return _LOGGER[0]


def _progress_monitor(callback: Progress) -> Any:
    """An IProgressMonitor (TRT >= 10) forwarding build phases to `callback`; None if unsupported."""
    import tensorrt as trt_mod

    if not hasattr(trt_mod, "IProgressMonitor"):
        return None

    class _Monitor(trt_mod.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_mod.IProgressMonitor.__init__(self)
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.totals[phase_name] = num_steps
            callback(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            callback(phase_name, step + 1, self.totals.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            total = self.totals.get(phase_name, 0)
            callback(phase_name, total, total)

    return _Monitor()


def _cache_only_calibrator(cache: Path) -> Any:
    """INT8 calibrator that only reads an existing calibration cache (no calibration data on devices)."""
    import tensorrt as trt_mod

    if not cache.is_file():
        raise ModelLoadError(f"INT8 needs a calibration cache; {cache} does not exist")
    blob = cache.read_bytes()

    class _Calibrator(trt_mod.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_mod.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            return []  # no data: TensorRT must take every scale from the cache

        def read_calibration_cache(self) -> bytes:
            return blob

        def write_calibration_cache(self, cache_data: Any) -> None:
            return None

    return _Calibrator()


def _gpu_tag() -> str:
    from edged.gpu.context import device_info

    info = device_info()
    return f"{info['name']}/sm{info['sm']}"


ProfileShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _declared_profile(network: Any, shapes: tuple[dict[str, tuple[int, ...]], ...]) -> ProfileShapes:
    """One profile spanning the model server's declared input shapes; opt = the largest (the batch
    it runs under load)."""
    out: ProfileShapes = {}
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        dims = [tuple(s[name]) for s in shapes if name in s]
        if not dims:
            raise ModelLoadError(f"input {name} has no declared shape (declared: {sorted(shapes[0])})")
        lo = tuple(min(d[k] for d in dims) for k in range(len(dims[0])))
        hi = tuple(max(d[k] for d in dims) for k in range(len(dims[0])))
        out[name] = (lo, hi, hi)
    return out


def _default_profile(
    network: Any, options: EngineOptions, dynamic_hw: Mapping[str, tuple[int, int, int]]
) -> ProfileShapes:
    """min/opt/max per dynamic input: batch 1..max_batch; H/W from `dynamic_hw` (min, opt, max)."""
    shapes: ProfileShapes = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        if all(d > 0 for d in dims):
            continue
        lo, opt, hi = list(dims), list(dims), list(dims)
        for k, d in enumerate(dims):
            if d > 0:
                continue
            if k == 0:
                lo[k], opt[k], hi[k] = 1, max(1, options.max_batch // 2), options.max_batch
            elif k in (len(dims) - 2, len(dims) - 1):
                rng = dynamic_hw.get("h" if k == len(dims) - 2 else "w", (32, 640, 1280))
                lo[k], opt[k], hi[k] = rng
            else:
                raise ModelLoadError(f"input {t.name} has a dynamic dimension {k} edged cannot range")
        shapes[t.name] = (tuple(lo), tuple(opt), tuple(hi))
    return shapes


class TensorRTBuild:
    """One model parsed into a TensorRT network: its cache `key`, and `produce` to build the plan."""

    def __init__(
        self,
        model: Path,
        options: EngineOptions,
        dynamic_hw: Mapping[str, tuple[int, int, int]] | None = None,
    ) -> None:
        import tensorrt as trt_mod

        self.model, self.options = model, options
        data = model.read_bytes()
        self.builder = trt_mod.Builder(trt_logger())
        self.network = self.builder.create_network(0)  # TRT 10: always explicit batch
        self._parser = trt_mod.OnnxParser(self.network, trt_logger())
        if not self._parser.parse(data, str(model)):
            errors = "; ".join(str(self._parser.get_error(i)) for i in range(self._parser.num_errors))
            raise ModelLoadError(f"{model}: TensorRT cannot parse it: {errors or 'unknown parser error'}")
        if options.shapes:
            self.profile = _declared_profile(self.network, options.shapes)
            shapes = [dict(s) for s in options.shapes]
        else:
            hw = dynamic_hw if dynamic_hw is not None else DYNAMIC_HW.get(options.model_kind, {})
            self.profile = _default_profile(self.network, options, hw)
            shapes = [{n: p[i] for n, p in self.profile.items()} for i in range(3)] if self.profile else []
        self.key: EngineKey = engine_key(
            model,
            builder="tensorrt",
            builder_version=str(trt_mod.__version__),
            device=f"{_gpu_tag()}/dla{options.dla_core}" if options.dla_core is not None else _gpu_tag(),
            dla_core=options.dla_core,
            precision=options.precision,
            calibration_cache=self._calibration_path() if options.precision == "int8" else None,
            shapes=shapes,
            suffix=".engine",
            # conv_algo_search: exhaustive maps onto TensorRT's most thorough tactic search.
            extra={"optimization_level": 5} if options.conv_algo_search == "exhaustive" else None,
        )

    def _calibration_path(self) -> Path:
        return self.options.calibration_cache or self.model.with_suffix(".calib")

    def check(self, path: Path) -> str | None:
        """Why the cached plan at `path` does not deserialize here, or None (`edged build-engine`)."""
        import tensorrt as trt_mod

        runtime = trt_mod.Runtime(trt_logger())
        if runtime.deserialize_cuda_engine(path.read_bytes()) is None:
            return "TensorRT cannot deserialize it"
        return None

    def produce(self, dest: Path, progress: Progress | None = None) -> None:
        """Build the serialized plan into `dest` (the cache's temporary file)."""
        import tensorrt as trt_mod

        model, options, builder = self.model, self.options, self.builder
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt_mod.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        if options.conv_algo_search == "exhaustive":  # the default level is 3; 5 tries every tactic
            config.builder_optimization_level = 5
        if options.precision in ("fp16", "int8"):
            if hasattr(trt_mod.BuilderFlag, "FP16") and builder.platform_has_fast_fp16:
                config.set_flag(trt_mod.BuilderFlag.FP16)
            else:
                log.warning("%s: FP16 not available here; building FP32", model.name)
        if options.precision == "int8":
            if not builder.platform_has_fast_int8:
                raise ModelLoadError(f"{model}: INT8 requested but this GPU has no fast INT8")
            config.set_flag(trt_mod.BuilderFlag.INT8)
            config.int8_calibrator = _cache_only_calibrator(self._calibration_path())
        if options.dla_core is not None:
            if builder.num_DLA_cores <= options.dla_core:
                raise ModelLoadError(
                    f"DLA core {options.dla_core} requested; this device has {builder.num_DLA_cores}"
                )
            config.default_device_type = trt_mod.DeviceType.DLA
            config.DLA_core = options.dla_core
            config.set_flag(trt_mod.BuilderFlag.GPU_FALLBACK)
        if self.profile:
            prof = builder.create_optimization_profile()
            for name, (lo, opt, hi) in self.profile.items():
                prof.set_shape(name, trt_mod.Dims(list(lo)), trt_mod.Dims(list(opt)), trt_mod.Dims(list(hi)))
            config.add_optimization_profile(prof)
        timing_path = options.cache_dir / "timing.cache"
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        if progress is not None:
            monitor = _progress_monitor(progress)
            if monitor is not None:
                config.progress_monitor = monitor
        log.info("building TensorRT engine for %s (%s); this takes minutes", model.name, options.precision)
        plan = builder.build_serialized_network(self.network, config)
        if plan is None:
            raise ModelLoadError(
                f"{model}: TensorRT failed to build an engine (see the TensorRT log lines above)"
            )
        dest.write_bytes(bytes(plan))
        atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))


def build_engine(
    model: Path,
    options: EngineOptions,
    dynamic_hw: Mapping[str, tuple[int, int, int]] | None = None,
    progress: Progress | None = None,
) -> Path:
    """The cached engine file for `model` (built now, in this process, when missing): the strict
    `backend: tensorrt` load path and `edged build-engine`."""
    build = TensorRTBuild(model, options, dynamic_hw)
    return EngineCache(options.cache_dir).build(build.key, lambda dest: build.produce(dest, progress))


# H/W ranges (min, opt, max) for dynamic spatial inputs, per model kind; others default to 32..1280.
DYNAMIC_HW: dict[str, dict[str, tuple[int, int, int]]] = {
    "ppocr_det": {"h": (32, 736, 2048), "w": (32, 1312, 2048)},
    "ppocr_rec": {"h": (48, 48, 48), "w": (48, 320, 2048)},
    "ppocr_cls": {"h": (48, 48, 48), "w": (192, 192, 192)},
}
