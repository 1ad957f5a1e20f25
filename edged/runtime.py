"""Loaded models and camera runners: the parts app.py wires together, built from config.

A `LoadedModel` is one engine + decoder + preprocessing spec, shared by every camera whose chain
uses it. A `CameraRunner` is the detectnet-style loop for one camera: capture -> chain -> sink.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.capture import make_source
from edged.capture.worker import CameraCapture
from edged.chain.chain import Chain, RunPolicy, Stage
from edged.chain.filters import StageFilter
from edged.chain.motion import MotionGate, hold_tracks
from edged.chain.pipeline import Pipeline
from edged.chain.streammux import FrameBatcher
from edged.chain.tracker import IouTracker
from edged.config import CameraConfig, ModelConfig, effective_preprocess
from edged.config.models import PreprocessConfig
from edged.infer import EngineOptions, ModelLoadError, create_engine
from edged.infer.base import Engine
from edged.infer.batching import BatchingEngine
from edged.metrics import Metrics
from edged.models.base import Decoder, build_decoder
from edged.preprocess import CpuPreprocessor, Preprocessor, PreprocessSpec
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
    # With batching.max_batch > 1: the first stage of every camera whose chain starts with this model.
    batcher: FrameBatcher | None = None

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.engine.close()


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
    )


def make_preprocessor(device: str, metrics: Metrics | None = None) -> Preprocessor:
    """The preprocessing implementation for `preprocess.device` (GPU ones when edged.gpu can run)."""
    if device == "cpu":
        return CpuPreprocessor()
    from edged.gpu import make_preprocessor as make_gpu

    pre: Preprocessor = make_gpu(device, metrics=metrics)
    return pre


def uses_gpu(models: Mapping[str, LoadedModel], names: set[str]) -> bool:
    return any(models[n].preprocessor.name != "cpu" or models[n].engine.info.device == "cuda" for n in names)


def load_model(name: str, m: ModelConfig, metrics: Metrics | None = None) -> LoadedModel:
    """Engine + decoder for one configured model. Raises ModelLoadError with a clear message."""
    labels: list[str] = []
    if m.labels is not None:
        try:
            labels = [ln.strip() for ln in m.labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            raise ModelLoadError(f"models.{name}.labels: cannot read {m.labels}: {e.strerror}") from None
    engine: Engine = create_engine(name, m.model_file, m.backend, engine_options(m))
    if m.batching.max_batch > 1:
        engine = BatchingEngine(
            engine,
            max_batch=m.batching.max_batch,
            max_wait_ms=m.batching.max_wait_ms,
            pad_to_max=m.batching.pad_to_max,
            on_batch=_batch_observer(metrics, name) if metrics else None,
        )
    decoder = build_decoder(m.kind, m.decode, labels, engine.metadata)
    pre = make_preprocessor(m.preprocess.device, metrics)
    if metrics is not None:
        metrics.engine_info.labels(name).info(
            {
                "backend": engine.info.backend,
                "device": engine.info.device,
                "preprocess": pre.name,
                "kind": m.kind,
            }
        )
    spec = fit_to_engine(
        name, effective_preprocess(m), m.preprocess, engine.inputs[0].shape, engine.inputs[0].dtype
    )
    loaded = LoadedModel(name, m, engine, decoder, spec, pre)
    if isinstance(engine, BatchingEngine):
        loaded.batcher = _frame_batcher(loaded, engine, metrics)
    return loaded


def _frame_batcher(lm: LoadedModel, engine: BatchingEngine, metrics: Metrics | None) -> FrameBatcher:
    """Whole frames of all cameras that start with this model, batched before preprocessing; the
    BatchingEngine stays in front of the engine for crops when the model is also a later stage."""
    lane = None
    if uses_gpu({lm.name: lm}, {lm.name}):
        from edged.gpu import Pipeline as GpuLane

        lane = GpuLane(f"batch-{lm.name}", metrics=metrics)
    b = lm.config.batching
    return FrameBatcher(
        lm.name,
        engine.inner,
        lm.decoder,
        lm.spec,
        lm.preprocessor,
        max_batch=b.max_batch,
        max_wait_ms=b.max_wait_ms,
        pad_to_max=b.pad_to_max,
        on_batch=_batch_observer(metrics, lm.name) if metrics else None,
        thread_context=lane.active if lane is not None else None,
        decode_workers=b.decode_workers,
    )


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


def _batch_observer(metrics: Metrics, model: str) -> Callable[[int, float], None]:
    rows, wait = metrics.batch_rows.labels(model), metrics.batch_wait.labels(model)

    def observe(n: int, waited_s: float) -> None:
        rows.observe(n)
        wait.observe(waited_s)

    return observe


def build_chain(cam: CameraConfig, models: Mapping[str, LoadedModel]) -> Chain:
    stages = []
    for s in cam.chain:
        lm = models[s.model]
        flt = StageFilter(
            classes=frozenset(s.classes) if s.classes else None,
            min_score=s.min_score,
            min_size=s.min_size,
            roi=tuple(s.roi) if s.roi else None,
            max_count=s.max_crops if s.on is not None else None,
        )
        tr = cam.tracking
        stages.append(
            Stage(
                s.stage_name,
                lm.engine,
                lm.decoder,
                lm.spec,
                lm.preprocessor,
                on=s.on,
                filter=flt,
                batch_size=s.batch_size,
                tracker=IouTracker(tr.iou, tr.max_age, tr.high_score)
                if tr.enabled and s.on is None
                else None,
                policy=RunPolicy(s.run, s.every_k, s.grow_ratio),
            )
        )
    return Chain(stages)


class CameraRunner:
    """Capture -> chain -> sink for one camera, on its own threads."""

    def __init__(
        self,
        name: str,
        cam: CameraConfig,
        models: Mapping[str, LoadedModel],
        sink: Callable[[FrameResult], None],
        metrics: Metrics,
        base_dir: Path | None = None,
    ):
        self.name = name
        self.config = cam
        self.metrics = metrics
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
            ),
            fps=cam.fps,
            loop=cam.loop,
            realtime=cam.realtime,
            frame_timeout_s=cam.frame_timeout_s,
            reconnect_min_s=cam.reconnect.min_s,
            reconnect_max_s=cam.reconnect.max_s,
            metrics=metrics,
        )
        self.chain = build_chain(cam, models) if cam.chain else None
        self._sink = sink
        lane = None
        if self.chain is not None and uses_gpu(models, {st.model for st in cam.chain}):
            from edged.gpu import Pipeline as GpuLane

            lane = GpuLane(name, metrics=metrics)  # this camera's CUDA stream and byte counters
        self.pipeline = (
            Pipeline(
                self.chain,
                self._record,
                name=name,
                on_error=self._frame_failed,
                thread_context=lane.active if lane is not None else None,
                batcher=models[cam.chain[0].model].batcher,
            )
            if self.chain
            else None
        )
        self.last_result: FrameResult | None = None
        self.last_frame: Frame | None = None
        # Motion gating (issue 16): skips the chain on frames where nothing moves.
        mc = cam.motion
        self.motion = MotionGate(**mc.model_dump(exclude={"enabled"})) if mc.enabled and self.chain else None
        self._held_seq = -1
        # Metric children looked up once, not on every frame ("total" is the capture -> result latency).
        self._latency = {st.stage_name: metrics.stage_latency.labels(name, st.stage_name) for st in cam.chain}
        self._latency["total"] = metrics.frame_latency.labels(name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-loop", daemon=True)
        self._error_logged: str | None = None

    def start(self) -> None:
        if self.pipeline is not None:
            self.pipeline.start()
        self.capture.start()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capture, let in-flight frames finish (bounded), stop the pipeline."""
        self._stop.set()
        self.capture.stop()
        self._thread.join(timeout)
        if self.pipeline is not None and not self.pipeline.stop(timeout):
            log.warning("camera %s: in-flight frames did not finish within %.0f s", self.name, timeout)

    def _loop(self) -> None:
        # The whole loop, as in jetson-inference's detectnet.py: capture -> detect -> publish.
        while not self._stop.is_set():
            frame = self.capture.get(timeout_s=0.5)
            if frame is None:
                continue
            self.last_frame = frame
            if self.pipeline is None:
                self._record(FrameResult(frame, [], {}))
                continue
            if self.motion is not None and not self._motion_runs(frame):  # motion gating (issue 16)
                continue
            while not self._stop.is_set() and not self.pipeline.submit(frame, timeout=0.5):
                pass

    # --- motion gating (issue 16): the one hook into the loop; the logic lives in edged/chain/motion.py ---
    def _motion_runs(self, frame: Frame) -> bool:
        """Ask the gate; a frame it skips becomes an idle FrameResult (no detections) and the first
        stage's live tracks are held over it, so a parked car keeps its track."""
        assert self.motion is not None and self.pipeline is not None and self.chain is not None
        tracker = self.chain.stages[0].tracker
        decision = self.motion.check(frame, tracking=bool(tracker is not None and tracker.tracks))
        self.metrics.motion_frames.labels(self.name, decision.reason).inc()
        if decision.run_detector:
            self._held_seq = frame.seq
            return True
        while self.pipeline.in_flight and not self._stop.is_set():  # results stay in frame order
            time.sleep(0.005)
        if tracker is not None:
            hold_tracks(tracker.tracks, self._held_seq, frame.seq)
        self._held_seq = frame.seq
        self._record(FrameResult(frame, [], {}))
        return False

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
            "frames_processed": self.pipeline.completed if self.pipeline else None,
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

    def progressing(self, stall_s: float) -> tuple[bool, str]:
        """For the watchdog: frames arrive and the pipeline is not wedged on one."""
        now = time.monotonic()
        cap = self.capture
        if cap.state == "ended":
            return True, ""
        if not cap.last_frame_mono or now - cap.last_frame_mono > stall_s:
            return False, f"camera {self.name}: no frame for {stall_s:.0f} s ({cap.state})"
        p = self.pipeline
        if p is not None and p.in_flight > 0 and now - p.last_progress > stall_s:
            return False, f"camera {self.name}: chain made no progress for {now - p.last_progress:.0f} s"
        return True, ""
