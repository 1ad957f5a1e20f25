"""Loading a configured model: engine + decoder + declared input shapes + a started, warmed `ModelServer`.

A `LoadedModel` is a configured model and its `ModelServer`, the engine's only caller (its slot holds
the engine: edged.serving.slot), shared by every camera whose chain uses the model.

Why here, beside the model servers, and not in infer/'s factory: a loaded model *is* its server (the
loader declares the server's shapes, starts and warms it, and hands its slot a background-built
engine to switch in), and the engine is only one of its parts next to the decoder (models/) and the preprocessor
(gpu/, preprocess/). infer/ stays below all of that and free of config objects: `engine_options` turns
a model's config into the plain `EngineOptions` that infer/'s one factory (`open_engine`) takes and
that cross into the engine builder process. This module is the one place where a `ModelConfig` meets
the backends.

Threads: `load_model` runs on the daemon's main thread (start and reload); it starts the server's
threads and, where one is needed, the background engine build (edged/infer/builder.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from edged.config.inference import ModelConfig, PreprocessConfig, effective_preprocess
from edged.decoders.base import Decoder
from edged.decoders.registry import build_decoder
from edged.gpu.context import GpuLane, gpu_available
from edged.gpu.preprocessors import make_preprocessor
from edged.infer.base import Engine, EngineOptions, ModelLoadError, TensorSpec
from edged.infer.builder import BackgroundBuild, BuildStatus
from edged.infer.builds import FP16_BUILDER, BuildJob
from edged.infer.engine_cache import file_sha256
from edged.infer.lifecycle import open_engine, runs_on_gpu
from edged.infer.onnxruntime import model_inputs
from edged.infer.quantize import fp16_path, int8_path
from edged.observability.metrics import Metrics
from edged.preprocess.base import Preprocessor
from edged.preprocess.spec import PreprocessSpec
from edged.serving.precision import PrecisionState, plan_precision
from edged.serving.server import ModelServer
from edged.serving.shapes import ShapeError, ShapeSet, check_model_input, declare_shapes
from edged.serving.slot.requests import FileSwitching, OpenEngine, SwitchRequest
from edged.serving.slot.shadow import ShadowTolerance
from edged.serving.slot.slot import ModelSlot
from edged.serving.warmup import WarmUpCancelled

log = logging.getLogger(__name__)
T = TypeVar("T")


class _OfServer(Generic[T]):
    """A `LoadedModel` attribute that is its server's, read through it (never a copy)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, model: Any, owner: type | None = None) -> T:
        return cast(T, getattr(model.server, self.name))

    def __set__(self, model: Any, value: T) -> None:
        raise AttributeError(f"LoadedModel.{self.name} is its server's: read-only")


@dataclass
class LoadedModel:
    """A configured model and its server; everything else is the server's, read through it: a switch
    (edged.serving.slot) changes the engine and decoder, and nothing here would follow a copy."""

    name: str
    config: ModelConfig
    server: ModelServer
    slot = _OfServer[ModelSlot]()
    engine = _OfServer[Engine]()
    decoder = _OfServer[Decoder]()
    spec = _OfServer[PreprocessSpec]()
    preprocessor = _OfServer[Preprocessor]()
    shapes = _OfServer[ShapeSet]()
    lane = _OfServer["GpuLane | None"]()  # the server's GPU lane, when it runs on a GPU

    def close(self) -> None:
        self.server.close()
        if self.server.lane is not None:
            self.server.lane.close()


def engine_options(m: ModelConfig) -> EngineOptions:
    return EngineOptions(
        intra_op_threads=m.onnxruntime.intra_op_threads,
        inter_op_threads=m.onnxruntime.inter_op_threads,
        providers=tuple(m.onnxruntime.providers) if m.onnxruntime.providers else None,
        tf32=m.onnxruntime.tf32,
        conv_algo_search=m.onnxruntime.conv_algo_search,
        cpu_memory=m.onnxruntime.cpu_memory,
        cuda_graph=m.onnxruntime.cuda_graph,
        trt_cuda_graph=m.tensorrt.cuda_graph,
        precision=m.trt_precision,
        workspace_mb=m.tensorrt.workspace_mb,
        dla_core=m.tensorrt.dla_core,
        calibration_cache=m.tensorrt.calibration_cache,
        max_batch=m.tensorrt.max_batch,
        cache_dir=m.tensorrt.cache_dir,
        model_kind=m.kind,
    )


def load_model(
    name: str,
    m: ModelConfig,
    metrics: Metrics | None = None,
    *,
    source_sizes: Sequence[tuple[int, int]] = (),
    regions: bool = False,
    wrap: Callable[[Engine], Engine] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> LoadedModel:
    """Engine + decoder + declared shapes + a started (warmed) model server for one configured model.
    `source_sizes`: resolutions of the cameras that use it (limit_side detectors declare those).
    `regions`: a camera runs it on motion regions (limit_side detectors declare smaller canvases too).
    `wrap`: wraps the engine once warmed, before live requests (tests inject faults this way).
    `cancel()`: asked between warm-up shapes; true stops the load (WarmUpCancelled), leaving nothing
    running: no server thread, no engine, no build. Raises ModelLoadError with a clear message."""
    labels: list[str] = []
    if m.labels is not None:
        try:
            labels = [ln.strip() for ln in m.labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            raise ModelLoadError(f"models.{name}.labels: cannot read {m.labels}: {e.strerror}") from None
    pre: Preprocessor = make_preprocessor(m.preprocess.device, metrics)
    options = engine_options(m)
    model_input, spec, shapes = _declared(name, m, source_sizes, regions)
    lane: GpuLane | None = None
    if pre.name != "cpu" or (gpu_available() is None and runs_on_gpu(m.backend, options)):
        # The server's own CUDA stream and byte counters, made first: its engines are given it.
        lane = GpuLane(f"model-{name}", metrics=metrics)
    try:
        b = m.batching
        options = dataclasses.replace(
            options, shapes=tuple({model_input.name: s} for s in shapes.input_shapes(spec))
        )
        opener = _opener(name, m, options, labels, lane)
        engine, decoder, build = opener(m.model_file)
        if m.onnxruntime.fp16 and "CUDAExecutionProvider" not in engine.info.providers:
            # Not an error: it runs (the CPU provider upcasts float16), only slower than the float32 model.
            log.warning(
                "model %s: onnxruntime.fp16 is meant for ONNX Runtime's CUDA provider, but %s runs on %s "
                "(%s), where it gains nothing (on a CPU it is slower than the float32 model); set "
                "onnxruntime.fp16: false",
                name,
                m.model_file.name,
                engine.info.device,
                ", ".join(engine.info.providers) or engine.info.backend,
            )
        if metrics is not None:
            metrics.engine_info.labels(name).info(
                {
                    "backend": engine.info.backend,
                    "device": engine.info.device,
                    "preprocess": pre.name,
                    "kind": m.kind,
                }
            )
        trt_build = build is not None and build.job.builder == "tensorrt"
        precision = PrecisionState(
            plan_precision(
                m.precision,
                backend=engine.info.backend,
                device=engine.info.device,
                switch="fp16" if m.onnxruntime.fp16 else "int8" if m.onnxruntime.int8 else None,
                int8_file=int8_path(m.path),
                fp16_file=fp16_path(m.path),
                trt_precision=m.trt_precision,
                background_build=trt_build,
            )
        )
        files = FileSwitching(
            opener,
            m.model_file,
            file_sha256(m.model_file),
            model_input,
            frames=m.update.shadow_frames,
            tolerance=update_tolerance(m),
            lane=_switch_lane(name, lane, metrics),
            precision=precision,
        )
        server = ModelServer(
            name,
            engine,
            decoder,  # batches of an old and a new engine decode with their own decoders (the slot's)
            spec,
            pre,
            shapes,
            max_wait_ms=b.max_wait_ms,
            decode_workers=b.decode_workers,
            lane=lane,
            on_batch=_batch_observer(metrics, name) if metrics else None,
            warm_every_shape=b.warm_up == "all",
            files=files,
        )
        log.info(
            "model %s: warming %s (%s)",
            name,
            shapes.describe(),
            "each before a batch uses it; serving after the first"
            if server.warmer.needs_every_shape(engine)
            else f"one call: {engine.info.backend} on the {engine.info.device} pays nothing for a new shape",
        )
        try:
            server.start(progress, cancel)
        except BaseException as e:
            server.close()
            if build is not None:  # the better engine of a model that did not load is not wanted
                build.cancel()
            if not isinstance(e, Exception) or isinstance(e, WarmUpCancelled):
                raise
            raise ModelLoadError(
                f"models.{name}: the engine failed on a declared input shape while warming up: {e}"
            ) from None
        if wrap is not None:  # after warm-up: a wrapper counts live calls only (or fails the load)
            try:
                server.slot.wrap(wrap)
            except BaseException:
                server.close()
                if build is not None:
                    build.cancel()
                raise
        log.info("model %s: precision %s: %s", name, m.precision, precision.plan.reason)
        if build is not None:
            # A lower-precision TensorRT plan is shadow-checked before it serves; an fp32 one (or ONNX
            # Runtime's optimized copy: the same arithmetic) is switched in directly.
            server.slot.adopt_when_built(build, shadow=precision.plan.source == "tensorrt")
        _reach_precision(name, m, options, server.slot, precision)
        return LoadedModel(name, m, server)
    except BaseException:
        if lane is not None:  # a model that failed to load leaves no stream behind
            lane.close()
        raise


def _reach_precision(
    name: str, m: ModelConfig, options: EngineOptions, slot: ModelSlot, state: PrecisionState
) -> None:
    """Start what brings the model to its planned precision (edged.serving.precision): the int8 file's
    shadow check, or the fp16 version's background build, whose file then gets one. A TensorRT plan
    is handled by the slot's adoption of its build."""
    plan = state.plan
    if plan.source == "file" and plan.path is not None:
        problem = slot.check_file(plan.path)
        if problem is not None:
            state.record("failed", f"{plan.path.name}: {problem}")
            log.warning("model %s: precision %s not reached: %s", name, plan.target, state.detail)
            return
        slot.request(SwitchRequest("update", plan.path, file_sha256(plan.path), "precision"))
    elif plan.source == "build":
        asked: list[bool] = []

        def built(status: BuildStatus) -> None:  # the build's watcher thread
            if status.state == "ready" and not asked:
                asked.append(True)
                path = Path(status.path)
                slot.request(SwitchRequest("update", path, file_sha256(path), "precision"))
            elif status.state == "failed" and not asked:
                asked.append(True)
                state.record("failed", status.reason)

        job = BuildJob(name, m.model_file, FP16_BUILDER, options, load=False)
        state.build = BackgroundBuild(job, on_change=built).start()


def _declared(
    name: str, m: ModelConfig, source_sizes: Sequence[tuple[int, int]], regions: bool
) -> tuple[TensorSpec, PreprocessSpec, ShapeSet]:
    """The model's input, its preprocessing fitted to it, and its declared input shapes. Shapes come
    from what the model file says, before any engine exists: a TensorRT profile and the engine-cache
    key are built from them. Raises ModelLoadError."""
    model_input = model_inputs(m.model_file)[0]
    b = m.batching
    try:
        spec = fit_to_engine(
            name, effective_preprocess(m), m.preprocess, model_input.shape, model_input.dtype
        )
        # A model exported with a fixed batch of N takes exactly N rows per call; one exported with a
        # fixed width takes crops of that width only.
        dims = model_input.shape if len(model_input.shape) == 4 else (-1, -1, -1, -1)
        fixed_rows, fixed_w = dims[0], dims[3] if spec.layout == "nchw" else dims[2]
        shapes = declare_shapes(
            spec,
            max_batch=fixed_rows if fixed_rows > 0 else b.max_batch,
            pad_to_max=b.pad_to_max or fixed_rows > 0,
            source_sizes=[(int(w), int(h)) for w, h in b.source_sizes] or list(source_sizes),
            widths=b.widths or ([fixed_w] if fixed_w > 0 else []),
            regions=regions,
        )
        check_model_input(shapes, spec, model_input.shape, f"models.{name}.batching")
    except (ShapeError, ValueError) as e:
        raise ModelLoadError(str(e)) from None
    return model_input, spec, shapes


def update_tolerance(m: ModelConfig) -> ShadowTolerance:
    u = m.update
    return ShadowTolerance(u.min_iou, u.max_score_drift, u.max_disagreeing_frames)


def _opener(
    name: str, m: ModelConfig, options: EngineOptions, labels: list[str], lane: GpuLane | None
) -> OpenEngine:
    """The one way an engine of this model is made, at load and for a candidate of a switch: the
    same backend, options, declared shapes and GPU lane (the server's: every engine it runs is on its
    stream); a decoder built from the file's own metadata."""

    def opener(path: Path) -> tuple[Engine, Decoder, Any]:
        engine, build = open_engine(name, path, m.backend, options, lane)
        try:
            decoder = build_decoder(m.kind, m.decode, labels, engine.metadata)
        except ValueError as e:
            engine.close()
            if build is not None:
                build.cancel()
            raise ModelLoadError(str(e)) from None
        return engine, decoder, build

    return opener


def fit_to_engine(
    name: str, spec: PreprocessSpec, overrides: PreprocessConfig, shape: tuple[int, ...], dtype: str
) -> PreprocessSpec:
    """Take what the model itself declares (fixed input size, NHWC layout, fp16) unless the config
    says otherwise; a config that contradicts a fixed input is an error, not a failure on every frame."""
    if len(shape) != 4:
        return spec
    changes: dict[str, Any] = {}
    nchw_like, nhwc_like = shape[1] in (1, 3), shape[3] in (1, 3)
    layout = overrides.layout or (
        "nhwc" if nhwc_like and not nchw_like else "nchw" if nchw_like else spec.layout
    )
    if layout != spec.layout:
        changes["layout"] = layout
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
    if c not in (3, -1):
        raise ModelLoadError(
            f"models.{name}: the model takes {c}-channel input; edged feeds 3-channel images"
        )
    if h > 0 and w > 0 and spec.resize in ("letterbox", "stretch"):
        if overrides.size is not None and tuple(overrides.size) != (w, h):
            raise ModelLoadError(
                f"models.{name}.preprocess.size: {list(overrides.size)} does not match the model's fixed input "
                f"{w}x{h} (width x height); remove it or set [{w}, {h}]"
            )
        if spec.size != (w, h):
            changes["size"] = (w, h)
    elif h > 0 and spec.resize == "fixed_height" and spec.size[1] != h:
        changes["size"] = (spec.size[0] if w <= 0 else w, h)
    if dtype == "float16" and overrides.dtype is None:
        changes["dtype"] = "float16"
    if changes:
        log.info(
            "model %s: preprocessing adapted to the model's declared input %s: %s", name, list(shape), changes
        )
        spec = dataclasses.replace(spec, **changes)
    return spec


def _switch_lane(name: str, lane: GpuLane | None, metrics: Metrics | None) -> GpuLane | None:
    """The lane a built engine or a candidate is warmed on before the switch, beside the
    serving one: its preprocessing, reductions and downloads (the engine itself runs on the stream it
    was given, the server's). A lane of its own, so the warm-up never writes the serving lane's buffers."""
    if lane is None:
        return None
    return GpuLane(f"model-{name}-swap", metrics=metrics)


def _batch_observer(metrics: Metrics, model: str) -> Callable[[int, int, float], None]:
    rows, wait = metrics.batch_rows.labels(model), metrics.batch_wait.labels(model)

    def observe(n: int, padded: int, waited_s: float) -> None:
        rows.observe(n)
        wait.observe(waited_s)

    return observe
