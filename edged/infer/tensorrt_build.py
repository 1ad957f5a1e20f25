"""TensorRT 10 engine building for edged: ONNX -> serialized plan, cached on disk.

NEVER EXECUTED in development (no TensorRT on any machine this was written on); written against the
TensorRT 10 Python API and type-checked with tensorrt-stubs 10.13 (see edged/infer/tensorrt.py).

Engine files: <cache_dir>/<model stem>-<key>.engine where key = sha256 over (model bytes, TRT version,
GPU name + SM, DLA core, precision, optimization profile); written atomically (tmp + os.replace).
A persistent timing cache (<cache_dir>/timing.cache) speeds rebuilds. Logger bridged to `logging`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.infer.base import EngineOptions, ModelLoadError

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


def engine_key(model_bytes: bytes, options: EngineOptions, profile: Mapping[str, Any]) -> str:
    import tensorrt as trt_mod

    h = hashlib.sha256(model_bytes)
    meta = {
        "trt": trt_mod.__version__,
        "gpu": _gpu_tag(),
        "dla": options.dla_core,
        "precision": options.precision,
        "profile": profile,
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _profile_for(
    network: Any, options: EngineOptions, dynamic_hw: Mapping[str, tuple[int, int, int]]
) -> dict[str, Any]:
    """min/opt/max per dynamic input: batch 1..max_batch; H/W from `dynamic_hw` (min, opt, max)."""
    shapes: dict[str, Any] = {}
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


def build_engine(
    model: Path,
    options: EngineOptions,
    dynamic_hw: Mapping[str, tuple[int, int, int]] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Build (or find cached) the engine file for `model`; returns its path. Used by `edged build-engine`."""
    import tensorrt as trt_mod

    data = model.read_bytes()
    logger = trt_logger()
    builder = trt_mod.Builder(logger)
    network = builder.create_network(0)  # TRT 10: always explicit batch
    parser = trt_mod.OnnxParser(network, logger)
    if not parser.parse(data, str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"{model}: TensorRT cannot parse it: {errors or 'unknown parser error'}")
    profile_shapes = _profile_for(network, options, dynamic_hw or {})
    key = engine_key(data, options, profile_shapes)
    out = options.cache_dir / f"{model.stem}-{key}.engine"
    if out.is_file():
        return out
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt_mod.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.precision in ("fp16", "int8"):
        if hasattr(trt_mod.BuilderFlag, "FP16") and builder.platform_has_fast_fp16:
            config.set_flag(trt_mod.BuilderFlag.FP16)
        else:
            log.warning("%s: FP16 not available here; building FP32", model.name)
    if options.precision == "int8":
        if not builder.platform_has_fast_int8:
            raise ModelLoadError(f"{model}: INT8 requested but this GPU has no fast INT8")
        config.set_flag(trt_mod.BuilderFlag.INT8)
        cache = options.calibration_cache or model.with_suffix(".calib")
        config.int8_calibrator = _cache_only_calibrator(cache)
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise ModelLoadError(
                f"DLA core {options.dla_core} requested; this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt_mod.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt_mod.BuilderFlag.GPU_FALLBACK)
    if profile_shapes:
        prof = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.items():
            prof.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(prof)
    timing_path = options.cache_dir / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    if progress is not None:
        monitor = _progress_monitor(progress)
        if monitor is not None:
            config.progress_monitor = monitor
    log.info("building TensorRT engine for %s (%s); this takes minutes", model.name, options.precision)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelLoadError(
            f"{model}: TensorRT failed to build an engine (see the TensorRT log lines above)"
        )
    _atomic_write(out, bytes(plan))
    _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    return out


# H/W ranges (min, opt, max) for dynamic spatial inputs, per model kind; others default to 32..1280.
DYNAMIC_HW: dict[str, dict[str, tuple[int, int, int]]] = {
    "ppocr_det": {"h": (32, 736, 2048), "w": (32, 1312, 2048)},
    "ppocr_rec": {"h": (48, 48, 48), "w": (48, 320, 2048)},
    "ppocr_cls": {"h": (48, 48, 48), "w": (192, 192, 192)},
}


def build_engine_for_config(cfg: Any, only: list[str] | None = None) -> int:
    """`edged build-engine`: build (or find cached) engines for the configured TensorRT/auto models.

    Takes the loaded Config (duck-typed: .models name -> ModelConfig) so the CLI stays thin; progress
    goes to stderr. Returns the process exit code (0, or 78 when a model cannot be built).
    """
    import sys

    from edged import EX_CONFIG
    from edged.runtime import engine_options

    reason = unavailable_reason()
    if reason:
        log.error("cannot build TensorRT engines: %s", reason)
        return 1
    names = only or [n for n, m in cfg.models.items() if m.backend in ("auto", "tensorrt")]
    for name in names:
        m = cfg.models.get(name)
        if m is None:
            log.error("no model %r in the config", name)
            return EX_CONFIG

        from edged.progress import Progress

        # A bar on a terminal, plain throttled lines under systemd (journald).
        with Progress(f"TensorRT engine {name}", stream=sys.stderr) as progress:
            try:
                path = build_engine(
                    m.path, engine_options(m), DYNAMIC_HW.get(m.kind), progress=progress.phase_callback()
                )
            except ModelLoadError as e:
                progress.close("failed")
                log.error("model %s: %s", name, e)
                return EX_CONFIG
        log.info("model %s: engine %s", name, path)
    return 0
