"""Loaded models and camera runners: the parts app.py wires together, built from config.

A `LoadedModel` is one engine + decoder + preprocessing spec behind its `ModelServer`, the engine's only
caller, shared by every camera whose chain uses the model. A `CameraRunner` is one camera: its capture
thread, its chain (a `CameraFlow` over the model servers, no thread of its own) and its sink; the one
`FrameDispatcher` thread hands each camera's newest frame to its chain (capture -> chain -> sink, as in
jetson-inference's detectnet.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.capture import make_source
from edged.capture.worker import CameraCapture
from edged.chain.chain import RunPolicy, Stage
from edged.chain.delivery import Delivery
from edged.chain.dispatch import FrameDispatcher
from edged.chain.filters import StageFilter
from edged.chain.flow import CameraFlow
from edged.chain.motion import MotionGate, MotionResult, hold_tracks
from edged.chain.tracker import IouTracker
from edged.config import CameraConfig, ModelConfig, effective_preprocess
from edged.config.models import PreprocessConfig
from edged.infer import EngineOptions, ModelLoadError
from edged.infer.base import Engine
from edged.infer.lifecycle import open_engine
from edged.infer.onnxruntime import model_inputs
from edged.metrics import Metrics
from edged.models.base import Decoder, build_decoder
from edged.preprocess import CpuPreprocessor, Preprocessor, PreprocessSpec
from edged.serving import ModelServer, ShapeError, ShapeSet, declare_shapes
from edged.serving.shapes import check_model_input
from edged.types import Frame, FrameResult

log = logging.getLogger(__name__)
_DROPS = "edged_frames_dropped_total"


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    engine: Engine
    decoder: Decoder
    spec: PreprocessSpec
    preprocessor: Preprocessor
    shapes: ShapeSet
    server: ModelServer
    lane: Any = None  # the server's GPU lane (edged.gpu.Pipeline), when it runs on a GPU

    def close(self) -> None:
        self.server.close()
        if self.lane is not None:
            self.lane.close()


def engine_options(m: ModelConfig) -> EngineOptions:
    return EngineOptions(
        intra_op_threads=m.onnxruntime.intra_op_threads,
        inter_op_threads=m.onnxruntime.inter_op_threads,
        providers=tuple(m.onnxruntime.providers) if m.onnxruntime.providers else None,
        tf32=m.onnxruntime.tf32,
        precision=m.tensorrt.precision,
        workspace_mb=m.tensorrt.workspace_mb,
        dla_core=m.tensorrt.dla_core,
        calibration_cache=m.tensorrt.calibration_cache,
        max_batch=m.tensorrt.max_batch,
        cache_dir=m.tensorrt.cache_dir,
        model_kind=m.kind,
    )


def make_preprocessor(device: str, metrics: Metrics | None = None) -> Preprocessor:
    """The preprocessing implementation for `preprocess.device` (GPU ones when edged.gpu can run)."""
    if device == "cpu":
        return CpuPreprocessor()
    from edged.gpu import make_preprocessor as make_gpu

    pre: Preprocessor = make_gpu(device, metrics=metrics)
    return pre


def load_model(
    name: str,
    m: ModelConfig,
    metrics: Metrics | None = None,
    *,
    source_sizes: Sequence[tuple[int, int]] = (),
    regions: bool = False,
    wrap: Callable[[Engine], Engine] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> LoadedModel:
    """Engine + decoder + declared shapes + a started (warmed) model server for one configured model.
    `source_sizes`: resolutions of the cameras that use it (limit_side detectors declare those).
    `regions`: a camera runs it on motion regions (limit_side detectors declare smaller canvases too).
    `wrap`: wraps the engine once warmed, before live requests (tests inject faults this way).
    Raises ModelLoadError with a clear message."""
    labels: list[str] = []
    if m.labels is not None:
        try:
            labels = [ln.strip() for ln in m.labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            raise ModelLoadError(f"models.{name}.labels: cannot read {m.labels}: {e.strerror}") from None
    pre = make_preprocessor(m.preprocess.device, metrics)
    lane = None
    options = engine_options(m)
    if pre.name != "cpu":
        from edged.gpu import Pipeline as GpuLane

        lane = GpuLane(f"model-{name}", metrics=metrics)  # the server's own CUDA stream
        options = dataclasses.replace(options, cuda_stream=lane.handle)
    # Shapes are declared from what the model file says, before any engine exists: a TensorRT
    # profile and the engine-cache key are built from them.
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
    options = dataclasses.replace(
        options, shapes=tuple({model_input.name: s} for s in shapes.input_shapes(spec))
    )
    engine, build = open_engine(name, m.model_file, m.backend, options)
    if lane is None and engine.info.device == "cuda":
        from edged.gpu import Pipeline as GpuLane

        lane = GpuLane(f"model-{name}", metrics=metrics)  # counts the engine's host<->device bytes
    try:
        decoder = build_decoder(m.kind, m.decode, labels, engine.metadata)
    except ValueError as e:
        engine.close()
        if build is not None:
            build.cancel()
        raise ModelLoadError(str(e)) from None
    if metrics is not None:
        metrics.engine_info.labels(name).info(
            {
                "backend": engine.info.backend,
                "device": engine.info.device,
                "preprocess": pre.name,
                "kind": m.kind,
            }
        )
    server = ModelServer(
        name,
        engine,
        decoder,
        spec,
        pre,
        shapes,
        max_wait_ms=b.max_wait_ms,
        decode_workers=b.decode_workers,
        lane=lane.active if lane is not None else None,
        on_batch=_batch_observer(metrics, name) if metrics else None,
    )
    log.info("model %s: warming %s", name, shapes.describe())
    try:
        server.start(progress)
    except Exception as e:
        server.close()
        raise ModelLoadError(
            f"models.{name}: the engine failed on a declared input shape while warming up: {e}"
        ) from None
    if wrap is not None:  # after warm-up: a wrapper counts live calls only
        server.engine = wrap(engine)
    if build is not None:
        server.adopt_when_built(build, lane=_swap_lane(name, lane, metrics))
    return LoadedModel(name, m, engine, decoder, spec, pre, shapes, server, lane)


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


def _swap_lane(
    name: str, lane: Any, metrics: Metrics | None
) -> Callable[[], AbstractContextManager[Any]] | None:
    """The lane a built engine is warmed on before the swap: its own, so the server's keeps serving."""
    if lane is None:
        return None
    from edged.gpu import Pipeline as GpuLane

    return GpuLane(f"model-{name}-swap", metrics=metrics).active


def _batch_observer(metrics: Metrics, model: str) -> Callable[[int, int, float], None]:
    rows, wait = metrics.batch_rows.labels(model), metrics.batch_wait.labels(model)

    def observe(n: int, padded: int, waited_s: float) -> None:
        rows.observe(n)
        wait.observe(waited_s)

    return observe


def build_stages(cam: CameraConfig, models: Mapping[str, LoadedModel]) -> list[Stage]:
    stages = []
    tr = cam.tracking
    for s in cam.chain:
        flt = StageFilter(
            classes=frozenset(s.classes) if s.classes else None,
            min_score=s.min_score,
            min_size=s.min_size,
            roi=tuple(s.roi) if s.roi else None,
            max_count=s.max_crops if s.on is not None else None,
        )
        stages.append(
            Stage(
                s.stage_name,
                models[s.model].server,
                on=s.on,
                filter=flt,
                tracker=IouTracker(tr.iou, tr.max_age, tr.high_score)
                if tr.enabled and s.on is None
                else None,
                policy=RunPolicy(s.run, s.every_k, s.grow_ratio),
            )
        )
    return stages


class CameraRunner:
    """One camera: capture thread -> chain over the model servers -> sink (no thread of its own)."""

    def __init__(
        self,
        name: str,
        cam: CameraConfig,
        models: Mapping[str, LoadedModel],
        sink: Callable[[FrameResult], None],
        metrics: Metrics,
        dispatcher: FrameDispatcher,
        delivery: Delivery,
        base_dir: Path | None = None,
    ):
        self.name = name
        self.config = cam
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.capture = CameraCapture(
            name,
            lambda: make_source(
                cam.source,
                backend=cam.backend,
                width=cam.width,
                height=cam.height,
                fps=cam.fps,
                loop=cam.loop,
                base_dir=base_dir,
                rtsp_transport=cam.rtsp.transport,
                rtsp_latency_ms=cam.rtsp.latency_ms,
            ),
            fps=cam.fps,
            loop=cam.loop,
            realtime=cam.realtime,
            frame_timeout_s=cam.frame_timeout_s,
            reconnect_min_s=cam.reconnect.min_s,
            reconnect_max_s=cam.reconnect.max_s,
            metrics=metrics,
        )
        self.capture.on_frame = dispatcher.wake
        self._sink = sink
        self.flow = (
            CameraFlow(
                name,
                build_stages(cam, models),
                self._record,
                on_error=self._frame_failed,
                on_free=dispatcher.wake,
                lane=delivery.lane(f"camera {name}"),
            )
            if cam.chain
            else None
        )
        self.last_result: FrameResult | None = None
        self.last_frame: Frame | None = None
        # Motion gating (issue 16): skips the chain on frames where nothing moves.
        mc = cam.motion
        self.motion = MotionGate(**mc.model_dump(exclude={"enabled"})) if mc.enabled and self.flow else None
        # Metric children looked up once, not on every frame ("total" is the capture -> result latency).
        self._latency = {st.stage_name: metrics.stage_latency.labels(name, st.stage_name) for st in cam.chain}
        self._latency["total"] = metrics.frame_latency.labels(name)
        self._error_logged: str | None = None
        self._stopping = False

    def start(self) -> None:
        if self.flow is not None:
            self.flow.attach()
        self.capture.start()
        self.dispatcher.add(self.name, self.pump)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capture, let in-flight frames finish (bounded)."""
        self._stopping = True
        self.dispatcher.remove(self.name)
        self.capture.stop()
        if self.flow is not None:
            if not self.flow.drain(timeout):
                log.warning("camera %s: in-flight frames did not finish within %.0f s", self.name, timeout)
            self.flow.detach()

    def pump(self) -> None:
        """The dispatcher's call: hand waiting frames to the chain while it has room (never blocks)."""
        while not self._stopping and (self.flow is None or self.flow.in_flight < self.flow.depth):
            frame = self.capture.get(timeout_s=0)
            if frame is None:
                return
            self.last_frame = frame
            if self.flow is None:
                self._record(FrameResult(frame, [], {}))
            elif self.motion is None:
                self.flow.offer(frame)
            else:  # motion gating (issue 16): skip, or run on the whole frame or a region of it
                decision = self._motion_check(frame)
                if decision.run_detector:
                    self.flow.offer(frame, decision.region)
                else:
                    self.flow.skip(frame, self._hold_tracks(frame.seq))

    # --- motion gating (issue 16): the logic lives in edged/chain/motion.py ---
    def _motion_check(self, frame: Frame) -> MotionResult:
        """Ask the gate whether (and where) the chain runs on this frame, and count its reason."""
        assert self.motion is not None and self.flow is not None
        tracker = self.flow.stages[0].tracker
        decision = self.motion.check(frame, tracking=bool(tracker is not None and tracker.tracks))
        self.metrics.motion_frames.labels(self.name, decision.reason).inc()
        return decision

    def _hold_tracks(self, seq: int) -> Callable[[], None]:
        """For a skipped frame, run once every older frame has left the chain: the first stage's live
        tracks are held over it (a parked car keeps its track), then it leaves as an idle result."""

        def hold() -> None:
            assert self.flow is not None
            tracker = self.flow.stages[0].tracker
            if tracker is not None:
                hold_tracks(tracker, seq)

        return hold

    def _record(self, result: FrameResult) -> None:
        for stage, ms in result.latency_ms.items():
            self._latency[stage].observe(ms / 1000.0)
        self.last_result = result
        self._sink(result)

    def _frame_failed(self, frame: Frame, error: BaseException) -> None:
        msg = f"{type(error).__name__}: {error}"
        self.metrics.drops.labels(self.name, "error").inc()
        if msg != self._error_logged:  # the same failure on every frame is logged once
            log.error("camera %s: frame %d failed in the chain: %s", self.name, frame.seq, msg)
            self._error_logged = msg

    def status(self) -> dict[str, Any]:
        cap = self.capture
        age = time.monotonic() - cap.last_frame_mono if cap.last_frame_mono else None
        out: dict[str, Any] = {
            "state": cap.state,
            "source_error": cap.last_error,
            "fps": round(cap.fps_measured, 2),
            "last_frame_age_s": round(age, 2) if age is not None else None,
            "frames_processed": self.flow.completed if self.flow else None,
            "motion": self.motion.status() if self.motion is not None else None,
            "drops": {
                reason: int(
                    self.metrics.registry.get_sample_value(_DROPS, {"camera": self.name, "reason": reason})
                    or 0
                )
                for reason in ("stale", "error")
            },
        }
        if self.last_result is not None:
            out["latency_ms"] = {k: round(v, 2) for k, v in self.last_result.latency_ms.items()}
            out["last_seq"] = self.last_result.frame.seq
            out["detections"] = [d.to_dict() for d in self.last_result.detections]
        return out
