"""Live model update of one model server: a new file's engine loaded beside the running one, run on the
same requests, switched in between batches when the shadow check agrees (docs/engines.md).

Who does what, and on which thread:

  any thread     `request` (the daemon's main loop: SIGHUP reload, MQTT command) records what to do;
                 `check_file` reads only what never changes (declared shapes, input name); `status`.
  loader thread  one per request (`update-<model>`): creates the candidate through the model's own
                 engine factory (the same options, declared shapes and GPU lane as the running engine)
                 and warms it on every declared shape, its preprocessing and downloads on the swap lane,
                 as `ModelServer.adopt_when_built` does for a built engine. It never runs a real request.
  batch thread   `between_batches` installs a loaded candidate (ModelSwap.propose) or rolls back;
                 `after_batch` runs the candidate on the rows the active engine just ran (preprocessed
                 again into the same shape), decodes both with private decoder copies, and feeds
                 ModelSwap.observe per request (a frame, or all crops of one frame): the shadow run
                 (edged.serving.shadow_run). So after the warm-up every call of an engine, and every
                 close of one that has served, is on this thread.

The decode thread keeps decoding in order: a `SwitchableDecoder` (edged.serving.live_decoder) is told
which batch outputs are the first of the new engine, so batches of the old engine are decoded by the old
decoder (a recognizer's character set comes from its file) and none is lost, repeated or reordered. The shadow work costs the
batch thread one more preprocessing, engine call and two decodes per batch, for `shadow_frames`
requests only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.decoders.base import Decoder
from edged.infer.base import Engine, ModelLoadError, TensorSpec
from edged.infer.engine_cache import file_sha256
from edged.infer.onnxruntime import model_inputs
from edged.infer.shadow import ShadowTolerance
from edged.infer.swap import ModelSwap, SwapEvent
from edged.serving.live_decoder import SwitchableDecoder
from edged.serving.outputs import Outputs
from edged.serving.precision import PrecisionState
from edged.serving.shadow_run import ShadowRun
from edged.serving.shapes import ShapeError, check_model_input
from edged.serving.versions import RESULTS, OpenVersion, UpdateEvent, UpdateRequest, Version
from edged.serving.warmup import WarmUpCancelled

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane
    from edged.serving.server import ModelServer

log = logging.getLogger(__name__)

_DECISIVE = frozenset(RESULTS) - {"shadow_started"}


class LiveUpdate:
    """The update side of one ModelServer; see the module docstring for threads."""

    def __init__(
        self,
        server: ModelServer,
        open_version: OpenVersion,
        version: Version,
        model_input: TensorSpec,
        *,
        frames: int = 20,
        tolerance: ShadowTolerance | None = None,
        swap_lane: GpuLane | None = None,
        on_event: Callable[[UpdateEvent], None] | None = None,
        precision: PrecisionState | None = None,
    ) -> None:
        """`precision`: the model's lower-precision candidate, if any (edged.serving.precision): its
        update events (trigger "precision") are recorded there too."""
        self.server = server
        self.name = server.name
        self.precision = precision
        self.on_event = on_event
        self._open = open_version
        self._lane = swap_lane
        self.swap = ModelSwap(
            server.name,
            server.engine,
            version.label,
            frames=frames,
            tolerance=tolerance,
            on_event=self._swapped,
        )
        self._versions = [version]
        self._input = model_input  # what the declared shapes were made for
        self._decoder_now = version.decoder  # what the batches run from now on are decoded with
        self._decoder_next: Decoder | None = None  # ... once the next batch's outputs are marked
        self._shadow: ShadowRun | None = None  # the candidate's shadow run, while there is a candidate
        self._trigger = ""
        self._lock = threading.Lock()  # guards what other threads hand over or read
        self._generation = 0
        self._loading: UpdateRequest | None = None
        self._loaded: tuple[Version, UpdateRequest] | None = None
        self._rollback: UpdateRequest | None = None
        self._closed = False
        self._loaders: list[threading.Thread] = []  # `update-<model>` threads, joined by close()
        self.last: dict[str, Any] | None = None

    # -- any thread ------------------------------------------------------------------------------

    def configure(self, frames: int, tolerance: ShadowTolerance) -> None:
        """New settings (a reload); a check under way uses the new count, its tolerance stays."""
        self.swap.frames, self.swap.tolerance = frames, tolerance

    @property
    def active_sha256(self) -> str:
        return self._version(self.swap.active).sha256

    def check_file(self, path: Path) -> str | None:
        """Why `path` cannot replace the running model (not ONNX, another input), or None."""
        try:
            inputs = model_inputs(path)
        except ModelLoadError as e:
            return f"not an ONNX model that ONNX Runtime can load ({e})"
        want = self._input
        if len(inputs) != 1 or inputs[0].name != want.name or inputs[0].dtype != want.dtype:
            got = ", ".join(f"{i.name} {i.dtype} {list(i.shape)}" for i in inputs)
            return (
                f"its input ({got}) is not the running model's ({want.name} {want.dtype} {list(want.shape)})"
            )
        try:
            check_model_input(self.server.shapes, self.server.spec, inputs[0].shape, f"{path.name}")
        except ShapeError as e:
            return str(e)
        return None

    def request(self, req: UpdateRequest) -> None:
        """Queue an update (loads now, on its own thread) or a rollback (done at the next batch)."""
        if req.action == "rollback":
            with self._lock:
                self._rollback = req
            log.info(
                "model %s: rollback requested (%s); done between the next two batches", self.name, req.trigger
            )
            return
        assert req.path is not None
        with self._lock:
            self._generation += 1
            generation, self._loading = self._generation, req
        log.info(
            "model %s: loading %s beside the running engine (%s%s)",
            self.name,
            req.path,
            req.trigger,
            ", forced" if req.action == "force" else "",
        )
        self._start_loader(req, generation, None)

    def propose_engine(self, engine: Engine, path: Path, trigger: str = "precision") -> None:
        """An engine already made and loaded (a background build in lower precision, e.g. a TensorRT
        plan with FP16) as a candidate, like a new file: warmed on a loader thread, shadow-checked
        against the serving engine, switched in only when they agree (else closed)."""
        req = UpdateRequest("update", path, file_sha256(path), trigger)
        with self._lock:
            self._generation += 1
            generation, self._loading = self._generation, req
        log.info("model %s: %s beside the running engine (%s)", self.name, path.name, trigger)
        self._start_loader(req, generation, (engine, self._decoder_now, None))

    def _start_loader(self, req: UpdateRequest, generation: int, opened: Any) -> None:
        loader = threading.Thread(
            target=self._load, args=(req, generation, opened), name=f"update-{self.name}", daemon=True
        )
        with self._lock:
            self._loaders = [t for t in self._loaders if t.is_alive()] + [loader]
        loader.start()

    def reject(self, req: UpdateRequest, reason: str) -> None:
        """A request refused before anything was loaded (the daemon's checks of the file)."""
        label = req.path.name if req.path is not None else ""
        log.warning("model %s: %s of %s refused: %s", self.name, req.action, label or "the model", reason)
        self._emit("rejected", label, req.trigger, reason, path=str(req.path or ""))

    def status(self) -> dict[str, Any]:
        swap = self.swap.status()
        with self._lock:
            loading = self._loading
        state = "loading" if loading else "shadowing" if swap["candidate"] else "idle"
        return {
            "state": state,
            "shadow": swap["shadow_frames"],
            "active": swap["active"],
            "candidate": swap["candidate"] or (loading.path.name if loading and loading.path else None),
            "previous": swap["previous"],
            "shadow_frames": self.swap.frames,
            "last": self.last,
        }

    # -- loader thread ---------------------------------------------------------------------------

    def _load(self, req: UpdateRequest, generation: int, opened: Any = None) -> None:
        assert req.path is not None
        try:
            engine, decoder, build = opened if opened is not None else self._open(req.path)
        except Exception as e:
            self._fail(req, generation, f"cannot load {req.path}: {e}")
            return
        version = Version(engine, decoder, req.path, req.sha256, build)
        now = self._decoder_now
        if decoder.metadata == now.metadata:
            version.decoder = now  # the same decoder: nothing to switch on the decode thread
        elif not isinstance(self.server.decoder, SwitchableDecoder):
            self._discard(version)
            self._fail(
                req,
                generation,
                "its metadata (e.g. a recognizer's characters) needs another decoder, and "
                f"models.{self.name}.batching.decode_workers > 0 decodes in worker processes: restart to load it",
            )
            return
        try:
            self.server.warm_up(
                engine=engine,
                lane=self._lane,
                cancel=lambda: self._stale(generation),
                steps=self.server.warm_steps(engine),
            )
        except WarmUpCancelled:  # a newer request or shutdown: nothing to report
            self._discard(version)
            return
        except Exception as e:
            self._discard(version)
            self._fail(req, generation, f"{req.path} failed while warming up: {type(e).__name__}: {e}")
            return
        with self._lock:
            current = generation == self._generation and not self._closed
            if current:
                self._loaded = (version, req)
        if not current:  # a newer request (or shutdown) came while this one loaded
            self._discard(version)
            return
        log.info(
            "model %s: %s loaded on %s/%s and warmed; the shadow check starts with the next batch",
            self.name,
            version.label,
            engine.info.backend,
            engine.info.device,
        )

    def _stale(self, generation: int) -> bool:
        with self._lock:
            return generation != self._generation or self._closed

    def _fail(self, req: UpdateRequest, generation: int, reason: str) -> None:
        with self._lock:
            if generation == self._generation:
                self._loading = None
        log.warning("model %s: update failed, the running engine keeps serving: %s", self.name, reason)
        self._emit("failed", req.path.name if req.path else "", req.trigger, reason, path=str(req.path))

    # -- batch thread ----------------------------------------------------------------------------

    def between_batches(self) -> None:
        """Follow a build swapped in by the server, then a rollback or a loaded candidate."""
        self._follow_server()
        with self._lock:
            rollback, self._rollback = self._rollback, None
            # Not while the serving engine still warms its declared shapes: it may become `previous`
            # (a rollback target), which must be warm on all of them.
            loaded = None if self.server.warming else self._loaded
            if loaded is not None:
                self._loaded = self._loading = None
        if rollback is not None:
            self._roll_back(rollback)
        if loaded is not None:
            self._install(*loaded)

    def after_batch(self, jobs: Sequence[tuple[list[Any], Outputs | None, Any]]) -> None:
        """The batch just ran (`ModelServer._run`'s jobs, before they go to the decode thread)."""
        if self._decoder_next is not None and isinstance(self.server.decoder, SwitchableDecoder):
            first = next((outputs for _, outputs, _ in jobs if outputs is not None), None)
            if first is not None:
                self.server.decoder.switch_at(first.arrays, self._decoder_next)
                self._decoder_next = None
        if self.swap.candidate is None:
            return
        assert self._shadow is not None  # made with the candidate (`_install`)
        for rows, outputs, _error in jobs:
            # While shadowing, the batch thread waits for the served batch's download (the decode
            # thread gets the job only after this returns).
            if outputs is not None and self._shadow.run(rows, outputs.wait()):
                self._after_decision()
                return

    def _install(self, version: Version, req: UpdateRequest) -> None:
        replaced = self.swap.candidate
        self._versions.append(version)
        self._trigger = req.trigger
        served = self._version(self.swap.active).decoder
        self._shadow = ShadowRun(self.server, self.swap, served, version.decoder)
        self.swap.propose(version.engine, version.label, force=req.action == "force")
        if replaced is not None:
            log.info("model %s: the candidate before it was closed", self.name)
        self._after_decision()

    def _roll_back(self, req: UpdateRequest) -> None:
        self._trigger = req.trigger
        if self.swap.candidate is not None:
            self.reject(
                req,
                f"{self.swap.candidate_label} is under shadow check ({self.swap.status()['shadow_frames']}); "
                "roll back after its result",
            )
            return
        self.swap.rollback()
        self._after_decision()

    def _follow_server(self) -> None:
        """The server swapped in a better build of the active model (or a test wrapped its engine)."""
        engine = self.server.engine
        if engine is self.swap.active:
            return
        version = self._version(self.swap.active)
        version.engine, version.build = engine, None
        self.swap.adopt(engine)

    def _after_decision(self) -> None:
        """Make the server follow ModelSwap's active engine; drop what can no longer be reached."""
        active = self.swap.active
        if self.server.engine is not active:
            left, now = self._version(self.server.engine), self._version(active)
            self.server.engine = active
            self.server.all_warm()  # candidates and previous engines are warm on every declared shape
            left.build = None  # ModelServer.replace_build stops it: the left model's build must not swap in
            self.server.replace_build(now.build, self._lane)
            if now.decoder is not self._decoder_now:
                self._decoder_now = self._decoder_next = now.decoder
        if self.swap.candidate is None:
            self._shadow = None
        reachable = [e for e in (active, self.swap.candidate, self.swap.previous) if e is not None]
        for v in [v for v in self._versions if not any(v.engine is e for e in reachable)]:
            self._versions.remove(v)  # ModelSwap closed its engine
            if v.build is not None and v.build is not self.server.build:
                _drop_build(v.build)

    def _version(self, engine: Engine) -> Version:
        return next(v for v in self._versions if v.engine is engine)

    def _swapped(self, event: SwapEvent) -> None:
        """ModelSwap's events (it logged them) -> the daemon's counters and replies."""
        result = "rejected" if event.what == "rollback_refused" else event.what
        if result not in RESULTS:
            return
        version = next((v for v in self._versions if v.label == event.label), None)
        self._emit(
            result,
            event.label,
            self._trigger,
            event.reason or (event.report.summary() if event.report is not None else ""),
            event.report.as_dict() if event.report is not None else None,
            str(version.path) if version is not None else "",
        )

    def _emit(
        self,
        result: str,
        label: str,
        trigger: str,
        reason: str = "",
        report: dict[str, Any] | None = None,
        path: str = "",
    ) -> None:
        if trigger == "precision" and self.precision is not None:
            self.precision.record(result, reason)
        if result in _DECISIVE:
            self.last = {
                "result": result,
                "label": label,
                "reason": reason,
                "trigger": trigger,
                "at": time.time(),
            }
        if self.on_event is not None:
            try:
                self.on_event(UpdateEvent(self.name, result, label, trigger, reason, report, path))
            except Exception:  # reporting must never stop the batch thread
                log.exception("model %s: reporting the update event %s failed", self.name, result)

    # -- shutdown (after the server's threads stopped) -------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """After the server's threads stopped: stop the loaders (a warm-up stops at its next shape;
        opening an engine is waited for) and close every engine and build only this side holds."""
        with self._lock:
            self._closed = True
            loaders = list(self._loaders)
        deadline = time.monotonic() + timeout
        for t in loaders:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.precision is not None and self.precision.build is not None:
            _drop_build(self.precision.build)  # the fp16 version's build, if it still runs
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            self._discard(loaded[0])
        for engine in (self.swap.candidate, self.swap.previous):
            if engine is not None and engine is not self.server.engine:
                engine.close()
        for v in self._versions:
            if v.build is not None and v.build is not self.server.build:
                _drop_build(v.build)
        if self._lane is not None:
            with self.server.warm_lock:  # a build's warm-up may still be running on it
                self._lane.close()

    @staticmethod
    def _discard(version: Version) -> None:
        version.engine.close()
        if version.build is not None:
            _drop_build(version.build)


def _drop_build(build: Any) -> None:
    """Stop a build whose model no longer serves; close its engine if it was already loaded."""
    build.cancel()
    engine = build.poll()
    if engine is not None:
        engine.close()
