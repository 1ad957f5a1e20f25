"""One camera at run time: its capture thread, its chain over the model servers and its sink.

A `CameraRunner` is one camera: its capture thread, its chain (a `CameraFlow` over the model servers, no
thread of its own) and its sink; the one `FrameDispatcher` thread hands each camera's newest frame to its
chain (capture -> chain -> sink, as in jetson-inference's detectnet.py). `build_stages` turns the
camera's configured chain into typed stages over the loaded models' servers.

Threads: `pump()` runs on the dispatcher thread; results reach the sink on the delivery lanes
(edged/pipeline/delivery.py); `start`/`stop`/`status` are called from the daemon's main and HTTP threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edged.analytics.counts import LineCounts
from edged.analytics.scene import SceneAnalytics
from edged.capture.decode import Decode
from edged.capture.sources import make_source
from edged.capture.worker import CameraCapture
from edged.config.cameras import CameraConfig
from edged.observability.metrics import Metrics
from edged.pipeline.chain import RunPolicy, Stage
from edged.pipeline.delivery import Delivery
from edged.pipeline.dispatch import FrameDispatcher
from edged.pipeline.filters import StageFilter
from edged.pipeline.flow import CameraFlow
from edged.pipeline.motion import MotionGate, MotionResult, hold_tracks
from edged.pipeline.tracker import IouTracker
from edged.serving.loading import LoadedModel
from edged.types import Frame, FrameResult

log = logging.getLogger(__name__)


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
                tracker=IouTracker(tr.iou, tr.max_age, tr.high_score, motion=tr.motion_model == "kalman")
                if (tr.enabled or cam.analytics.active) and s.on is None  # lines and zones need tracks
                else None,
                policy=RunPolicy(s.run, s.every_k, s.grow_ratio),
            )
        )
    return stages


# Frames in flight per camera when the config leaves it open. On a GPU, 4 keeps a shared GPU fed (H200,
# same lease, 16 cameras: 1.19x the rate of 2 on the detector, 1.25x on the OCR chain; docs/benchmarks.md
# run H). On the CPU the engine is the limit: more frames in flight would only add latency.
IN_FLIGHT_GPU, IN_FLIGHT_CPU = 4, 2


def decode_mode(cam: CameraConfig, stages: list[Stage]) -> Decode:
    """The camera's `decode`, with auto turned into cpu when its chain's first model preprocesses on the
    CPU (a frame decoded into device memory would only be downloaded again)."""
    if cam.decode != "auto":
        return cam.decode
    on_gpu = bool(stages) and getattr(stages[0].server.preprocessor, "name", "cpu") != "cpu"
    return "auto" if on_gpu else "cpu"


def frames_in_flight(cam: CameraConfig, stages: list[Stage]) -> int:
    """The camera's `frames_in_flight`, else by where its first model runs."""
    if cam.frames_in_flight is not None:
        return cam.frames_in_flight
    on_gpu = bool(stages) and stages[0].server.lane is not None
    return IN_FLIGHT_GPU if on_gpu else IN_FLIGHT_CPU


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
        line_counts: LineCounts | None = None,
    ):
        self.name = name
        self.config = cam
        self.metrics = metrics
        self.dispatcher = dispatcher
        stages = build_stages(cam, models)
        decode = decode_mode(cam, stages)
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
                decode=decode,
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
                stages,
                self._record,
                on_error=self._frame_failed,
                on_free=dispatcher.wake,
                lane=delivery.lane(f"camera {name}"),
                depth=frames_in_flight(cam, stages),
            )
            if cam.chain
            else None
        )
        self.last_result: FrameResult | None = None
        self.last_frame: Frame | None = None
        # Motion gating (issue 16): skips the chain on frames where nothing moves.
        mc = cam.motion
        self.motion = MotionGate(**mc.model_dump(exclude={"enabled"})) if mc.enabled and self.flow else None
        # Lines, zones, speeds (issue 25) over the tracks; counts live in the daemon's LineCounts.
        self.analytics = (
            SceneAnalytics(name, cam.analytics, line_counts or LineCounts())
            if cam.analytics.active and self.flow is not None
            else None
        )
        if self.analytics is None and line_counts is not None:
            line_counts.configure(name, [])  # lines removed by a reload stop being reported
        self._analytics_error: str | None = None
        # Metric children looked up once, not on every frame ("total" is the capture -> result latency).
        self._latency = {st.stage_name: metrics.stage_latency.labels(name, st.stage_name) for st in cam.chain}
        self._latency["total"] = metrics.frame_latency.labels(name)
        self._error_logged: str | None = None
        self.failed_frames = 0  # frames that failed in the chain (edged_frames_dropped_total{reason="error"})
        self.skipped_frames = 0  # frames motion gating kept from the chain (edged.observability.rates)
        self.recorded_frames = 0  # frames of a camera without a chain, handed to the sink as they are
        self._stopping = False
        self._pump_lock = threading.Lock()  # a stop waits for a pump under way (see stop)

    def start(self) -> None:
        if self.flow is not None:
            self.flow.attach()
        self.capture.start()
        self.dispatcher.add(self.name, self.pump)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capture, let in-flight frames finish (bounded)."""
        self._stopping = True
        with self._pump_lock:  # a pump under way ends here: no frame enters the flow after this
            pass
        self.dispatcher.remove(self.name)
        self.capture.stop()
        if self.flow is not None:
            drained = self.flow.drain(timeout)
            if not drained:
                log.warning(
                    "camera %s: in-flight frames did not finish within %.0f s",
                    self.name,
                    timeout,
                    extra={"camera": self.name},
                )
            self.flow.detach()
            if drained:  # a frame still in flight reads its buffers: then they are kept (a small leak)
                self._forget_buffers()

    def _forget_buffers(self) -> None:
        """The camera's frame buffers in its models' preprocessors (on a GPU: device and page-locked
        memory) go with it, so removing, renaming or restarting cameras does not pile them up."""
        assert self.flow is not None
        for pre in {id(s.server.preprocessor): s.server.preprocessor for s in self.flow.stages}.values():
            try:
                pre.forget(self.name)
            except Exception as e:  # freeing is housekeeping: never fail a stop or a reload over it
                log.warning("camera %s: freeing its frame buffers failed: %s", self.name, e)

    def pump(self) -> None:
        """The dispatcher's call: hand waiting frames to the chain while it has room (never blocks)."""
        with self._pump_lock:
            self._pump()

    def _pump(self) -> None:
        while not self._stopping and (self.flow is None or self.flow.in_flight < self.flow.depth):
            frame = self.capture.get(timeout_s=0)
            if frame is None:
                return
            self.last_frame = frame
            if self.flow is None:
                self.recorded_frames += 1
                self._record(FrameResult(frame, [], {}))
            elif self.motion is None:
                self.flow.offer(frame)
            else:  # motion gating (issue 16): skip, or run on the whole frame or a region of it
                decision = self._motion_check(frame)
                if decision.run_detector:
                    self.flow.offer(frame, decision.region)
                elif self.flow.skip(frame, self._hold_tracks(frame.seq)):
                    self.skipped_frames += 1

    # --- motion gating (issue 16): the logic lives in edged/pipeline/motion.py ---
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
        if self.analytics is not None:
            self._analyze(result)
        for stage, ms in result.latency_ms.items():
            self._latency[stage].observe(ms / 1000.0)
        self.last_result = result
        self._sink(result)

    def _analyze(self, result: FrameResult) -> None:
        """The frame's analytics events onto the result (its delivery lane, in capture order). Time is
        the capture clock, or for a file read faster than real time (realtime: false) its frame
        number / fps, so dwell and speed follow the video."""
        assert self.analytics is not None
        frame = result.frame
        t = frame.t_mono_ns / 1e9 if self.config.realtime else frame.seq / self.config.fps
        upd = result.tracks
        try:
            result.analytics = self.analytics.update(
                result.detections,
                frame.seq,
                t,
                [tr.id for tr in upd.ended] if upd is not None else (),
                (frame.width, frame.height),
                held=upd is None,  # the chain skipped the frame (motion gating): its tracks were held
            )
        except Exception as e:  # a bug here must not cost the frame its detections
            msg = f"{type(e).__name__}: {e}"
            if msg != self._analytics_error:
                log.exception("camera %s: analytics failed on frame %d: %s", self.name, frame.seq, msg)
                self._analytics_error = msg

    def _frame_failed(self, frame: Frame, error: BaseException) -> None:
        msg = f"{type(error).__name__}: {error}"
        self.failed_frames += 1
        self.metrics.drops.labels(self.name, "error").inc()
        if msg != self._error_logged:  # the same failure on every frame is logged once
            log.error(
                "camera %s: frame %d failed in the chain: %s",
                self.name,
                frame.seq,
                msg,
                extra={"camera": self.name},  # a structured field of the JSON log line
            )
            self._error_logged = msg

    def status(self) -> dict[str, Any]:
        cap = self.capture
        age = time.monotonic() - cap.last_frame_mono if cap.last_frame_mono else None
        out: dict[str, Any] = {
            "state": cap.state,
            "source_error": cap.last_error,
            "decode": cap.decoding,
            "fps": round(cap.fps_measured, 2),
            "last_frame_age_s": round(age, 2) if age is not None else None,
            # Without a chain, every frame taken goes through the (empty) chain as it is.
            "frames_processed": self.flow.completed if self.flow else self.recorded_frames,
            "frames_skipped": self.skipped_frames,
            "frames_in_flight": f"{self.flow.in_flight}/{self.flow.depth}" if self.flow else None,
            "motion": self.motion.status() if self.motion is not None else None,
            # Own counts, not the registry's: a lookup there walks every collector (16 cameras made
            # /stats the third-biggest GIL holder of a 16-camera run on an H200).
            "drops": {"stale": cap.stale_drops, "error": self.failed_frames},
        }
        if self.analytics is not None:
            out["analytics"] = self.analytics.status()
        if self.last_result is not None:
            out["latency_ms"] = {k: round(v, 2) for k, v in self.last_result.latency_ms.items()}
            out["last_seq"] = self.last_result.frame.seq
            out["detections"] = [d.to_dict() for d in self.last_result.detections]
        return out
