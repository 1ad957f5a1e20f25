"""`ModelSlot`: which engine and decoder a model runs now, and every way that changes. A *switch*
replaces the engine: a background build's better engine, a new file (SIGHUP, MQTT `set/update`) or a
lower precision after the shadow check agrees, a forced switch (`set/force`), a rollback (`set/rollback`).
Nothing else assigns a model's engine; docs/engines.md tells the story for operators.

One slot per model server, made by it. Who does what, and on which thread:

  any thread      `request` (the daemon's main loop: SIGHUP reload, MQTT command) records what to do;
                  `check_file` reads only what never changes (declared shapes, input name); `status`.
  adopt thread    waits for a background build and warms its engine (edged.serving.slot.builds).
  load thread     loads and warms a candidate file (edged.serving.slot.candidates).
  batch thread    `between_batches(jobs)`, the server's one hook, after each batch and before its outputs
                  go to the decode thread: marks the first outputs of a new engine for the decoder
                  switch, runs the candidate on the rows the serving engine just ran (the shadow run,
                  edged.serving.slot.shadow_run) and feeds EngineSwitch.observe, then switches in a built
                  engine, rolls back, or installs a loaded candidate for the next batch. So after the
                  warm-up every call of an engine, and every close of one that has served, is on this
                  thread, and no batch runs half on one engine.

The decode thread keeps decoding in order: a `SwitchableDecoder` (edged.serving.slot.decoder) is told
which batch outputs are the first of the new engine, so batches of the old engine are decoded by the old
decoder (a recognizer's character set comes from its file) and none is lost, repeated or reordered. The
shadow work costs the batch thread one more preprocessing, engine call and two decodes per batch, for
`shadow_frames` requests only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edged.decoders.base import Decoder
from edged.infer.base import Engine
from edged.infer.engine_cache import file_sha256
from edged.serving.outputs import Outputs
from edged.serving.slot.builds import BuildAdopter, Guard, drop_build
from edged.serving.slot.candidates import CandidateLoader, check_file
from edged.serving.slot.decoder import SwitchableDecoder
from edged.serving.slot.requests import RESULTS, FileSwitching, SlotEntry, SwitchEvent, SwitchRequest
from edged.serving.slot.shadow import ShadowTolerance
from edged.serving.slot.shadow_run import ShadowRun
from edged.serving.slot.switch import Decision, EngineSwitch
from edged.serving.warming import Warmer

log = logging.getLogger(__name__)

_DECISIVE = frozenset(RESULTS) - {"shadow_started"}
Jobs = Sequence[tuple[list[Any], Outputs | None, Any]]  # ModelServer's jobs of one batch


class ModelSlot:
    """One model's engine now; see the module docstring for threads. `files`: how it switches to other
    files of the model (None: only to its own background build). `in_thread`: the server decodes in its
    decode thread (a new file may bring a new decoder); `guard` runs the adopt threads' loops."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        decoder: Decoder,
        *,
        warmer: Warmer,
        guard: Guard,
        files: FileSwitching | None = None,
        in_thread: bool = True,
    ) -> None:
        self.name = name
        self.engine = engine  # what the batch thread runs now
        self.decoder = SwitchableDecoder.wrap(decoder) if files and in_thread else decoder
        self.switches = 0  # built engines switched in
        self.on_event: Callable[[SwitchEvent], None] | None = None
        self.last: dict[str, Any] | None = None  # the last decisive event
        self._warmer = warmer
        self._files = files
        self.precision = files.precision if files is not None else None
        self._lane = files.lane if files is not None else None
        self.builds = BuildAdopter(
            name, warmer, guard, self.propose_engine if files else None, self._build_failed
        )
        self.switch: EngineSwitch | None = None
        self._entries: list[SlotEntry] = []
        self._decoder_now = decoder  # what the batches run from now on are decoded with
        self._decoder_next: Decoder | None = None  # ... once the next batch's outputs are marked
        self._shadow: ShadowRun | None = None  # the candidate's shadow run, while there is a candidate
        self._trigger = ""
        self._rollback: SwitchRequest | None = None
        self._lock = threading.Lock()  # guards `_rollback`, handed over by another thread
        self.loader: CandidateLoader | None = None
        if files is not None:
            entry = SlotEntry(engine, decoder, files.path, files.sha256)
            self._entries = [entry]
            self.switch = EngineSwitch(
                name,
                engine,
                entry.label,
                frames=files.frames,
                tolerance=files.tolerance,
                on_event=self._decided,
            )
            self.loader = CandidateLoader(
                name,
                files.open_engine,
                warmer,
                files.lane,
                lambda: self._decoder_now,
                self._load_failed,
                switchable=isinstance(self.decoder, SwitchableDecoder),
            )

    def attach(self, on_event: Callable[[SwitchEvent], None]) -> None:
        """Who hears of every step (the daemon's reports, edged.daemon.switching): set once the model
        loaded, since the daemon's reporter is made after the supervisor that loads models. Called on
        the batch, load, adopt or main thread."""
        self.on_event = on_event

    def wrap(self, wrapper: Callable[[Engine], Engine]) -> None:
        """Before the first request (tests, benchmarks): the serving engine becomes `wrapper(engine)`
        (a spy, a timer, injected faults); the wrapper is the model's engine from then on."""
        wrapped = wrapper(self.engine)
        for entry in self._entries:
            if entry.engine is self.engine:
                entry.engine = wrapped
        if self.switch is not None:
            self.switch.adopt(wrapped)
        self.engine = wrapped

    # -- any thread ------------------------------------------------------------------------------

    def _need_files(self) -> tuple[FileSwitching, EngineSwitch, CandidateLoader]:
        if self._files is None or self.switch is None or self.loader is None:
            raise RuntimeError(f"model {self.name}: switching to other files is not set up")
        return self._files, self.switch, self.loader

    def configure(self, frames: int, tolerance: ShadowTolerance) -> None:
        """New settings (a reload); a check under way uses the new count, its tolerance stays."""
        _, switch, _ = self._need_files()
        switch.frames, switch.tolerance = frames, tolerance

    @property
    def active_sha256(self) -> str:
        _, switch, _ = self._need_files()
        return self._entry(switch.active).sha256

    def check_file(self, path: Path) -> str | None:
        """Why `path` cannot replace the serving model (not ONNX, another input), or None."""
        files, _, _ = self._need_files()
        return check_file(path, files.model_input, self._warmer.shapes, self._warmer.spec)

    def request(self, req: SwitchRequest) -> None:
        """Queue a switch to a file (loads now, on its own thread) or a rollback (at the next batch)."""
        _, _, loader = self._need_files()
        if req.action == "rollback":
            with self._lock:
                self._rollback = req
            log.info(
                "model %s: rollback requested (%s); done between the next two batches", self.name, req.trigger
            )
            return
        assert req.path is not None
        log.info(
            "model %s: loading %s beside the running engine (%s%s)",
            self.name,
            req.path,
            req.trigger,
            ", forced" if req.action == "force" else "",
        )
        loader.load(req)

    def propose_engine(self, engine: Engine, path: Path, trigger: str = "precision") -> None:
        """An engine already made and loaded (a background build in lower precision, e.g. a TensorRT
        plan with FP16) as a candidate, like a new file: warmed on a load thread, shadow-checked against
        the serving engine, switched in only when they agree (else closed)."""
        _, _, loader = self._need_files()
        log.info("model %s: %s beside the running engine (%s)", self.name, path.name, trigger)
        loader.load(
            SwitchRequest("update", path, file_sha256(path), trigger), (engine, self._decoder_now, None)
        )

    def adopt_when_built(self, build: Any, shadow: bool = False) -> None:
        """Serve on until `build` (an edged.infer.builder.BackgroundBuild) has an engine, warm it beside
        the serving one, then switch it in between two batches (edged.serving.slot.builds). `shadow`:
        it computes differently (lower precision): it goes through the shadow check instead."""
        self.builds.adopt(build, self._lane, shadow)

    def reject(self, req: SwitchRequest, reason: str) -> None:
        """A request refused before anything was loaded (the daemon's checks of the file)."""
        label = req.path.name if req.path is not None else ""
        log.warning("model %s: %s of %s refused: %s", self.name, req.action, label or "the model", reason)
        self._emit("rejected", label, req.trigger, reason, path=str(req.path or ""))

    def status(self) -> dict[str, Any]:
        """The server's /stats entries about its engine: which, switches, build, update, precision."""
        info = self.engine.info
        out: dict[str, Any] = {"engine": f"{info.backend}/{info.device}", "swaps": self.switches}
        if self.builds.build is not None:
            out["build"] = self.builds.build.status()
        if self.switch is not None and self.loader is not None:
            st, loading = self.switch.status(), self.loader.loading
            out["update"] = {
                "state": "loading" if loading else "shadowing" if st["candidate"] else "idle",
                "shadow": st["shadow_frames"],
                "active": st["active"],
                "candidate": st["candidate"] or (loading.path.name if loading and loading.path else None),
                "previous": st["previous"],
                "shadow_frames": self.switch.frames,
                "last": self.last,
            }
        if self.precision is not None:
            out["precision"] = self.precision.as_dict()
        return out

    # -- batch thread ----------------------------------------------------------------------------

    def between_batches(self, jobs: Jobs) -> None:
        """The server's one hook: the batch just ran (`ModelServer._run`'s jobs, before they go to the
        decode thread); whatever switch is due happens now, for the next batch."""
        if self._decoder_next is not None and isinstance(self.decoder, SwitchableDecoder):
            first = next((outputs for _, outputs, _ in jobs if outputs is not None), None)
            if first is not None:
                self.decoder.switch_at(first.arrays, self._decoder_next)
                self._decoder_next = None
        if self._shadow is not None:
            self._shadow_check(jobs)
        built = self.builds.take()
        if built is not None:
            self._switch_in_build(built)
        if self.switch is None or self.loader is None:
            return
        with self._lock:
            rollback, self._rollback = self._rollback, None
        if rollback is not None:
            self._roll_back(rollback)
        # Not while the serving engine still warms its declared shapes: it may become `previous` (a
        # rollback target), which must be warm on all of them.
        loaded = None if self._warmer.warming else self.loader.take()
        if loaded is not None:
            self._install(*loaded)

    def _shadow_check(self, jobs: Jobs) -> None:
        assert self._shadow is not None and self.switch is not None
        if self.switch.candidate is None:
            return
        for rows, outputs, _error in jobs:
            # While shadowing, the batch thread waits for the served batch's download (the decode
            # thread gets the job only after this returns).
            if outputs is not None and self._shadow.run(rows, outputs.wait()):
                self._after_decision()
                return

    def _switch_in_build(self, new: Engine) -> None:
        """The warmed engine of the serving model's build takes over; the old one closes."""
        old, self.engine = self.engine, new
        for entry in self._entries:
            if entry.engine is old:
                entry.engine, entry.build = new, None
        if self.switch is not None:
            self.switch.adopt(new)
        self._warmer.all_warm()
        self.switches += 1
        log.info(
            "model %s: now serving on %s/%s%s (swapped between batches)",
            self.name,
            new.info.backend,
            new.info.device,
            f", {new.info.detail}" if new.info.detail else "",
        )
        old.close()

    def _install(self, entry: SlotEntry, req: SwitchRequest) -> None:
        assert self.switch is not None
        replaced = self.switch.candidate
        self._entries.append(entry)
        self._trigger = req.trigger
        served = self._entry(self.switch.active).decoder
        self._shadow = ShadowRun(self._warmer, self.switch, served, entry.decoder)
        self.switch.propose(entry.engine, entry.label, force=req.action == "force")
        if replaced is not None:
            log.info("model %s: the candidate before it was closed", self.name)
        self._after_decision()

    def _roll_back(self, req: SwitchRequest) -> None:
        assert self.switch is not None
        self._trigger = req.trigger
        if self.switch.candidate is not None:
            self.reject(
                req,
                f"{self.switch.candidate_label} is under shadow check ({self.switch.status()['shadow_frames']}); "
                "roll back after its result",
            )
            return
        self.switch.rollback()
        self._after_decision()

    def _after_decision(self) -> None:
        """Serve the EngineSwitch's active engine; drop what can no longer be reached."""
        assert self.switch is not None
        active = self.switch.active
        if self.engine is not active:
            left, now = self._entry(self.engine), self._entry(active)
            self.engine = active
            self._warmer.all_warm()  # candidates and previous engines are warm on every declared shape
            left.build = None  # replace() stops it: the left model's build must not switch in
            self.builds.replace(now.build, self._lane)
            if now.decoder is not self._decoder_now:
                self._decoder_now = self._decoder_next = now.decoder
        if self.switch.candidate is None:
            self._shadow = None
        reachable = [e for e in (active, self.switch.candidate, self.switch.previous) if e is not None]
        for entry in [v for v in self._entries if not any(v.engine is e for e in reachable)]:
            self._entries.remove(entry)  # the EngineSwitch closed its engine
            if entry.build is not None and entry.build is not self.builds.build:
                drop_build(entry.build)

    def _entry(self, engine: Engine) -> SlotEntry:
        return next(v for v in self._entries if v.engine is engine)

    # -- reports (batch, load, adopt or main thread) ---------------------------------------------

    def _load_failed(self, req: SwitchRequest, reason: str) -> None:
        self._emit("failed", req.path.name if req.path else "", req.trigger, reason, path=str(req.path))

    def _build_failed(self, reason: str) -> None:
        if self.precision is not None:
            self.precision.record("failed", reason)

    def _decided(self, event: Decision) -> None:
        """The EngineSwitch's decisions (it logged them) -> the daemon's counters and replies."""
        result = "rejected" if event.what == "rollback_refused" else event.what
        if result not in RESULTS:
            return
        entry = next((v for v in self._entries if v.label == event.label), None)
        self._emit(
            result,
            event.label,
            self._trigger,
            event.reason or (event.report.summary() if event.report is not None else ""),
            event.report.as_dict() if event.report is not None else None,
            str(entry.path) if entry is not None else "",
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
                self.on_event(SwitchEvent(self.name, result, label, trigger, reason, report, path))
            except Exception:  # reporting must never stop the batch thread
                log.exception("model %s: reporting the switch event %s failed", self.name, result)

    # -- shutdown (after the server's threads stopped) -------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop the load threads, then close every engine and build this slot holds: the serving one, a
        candidate, the previous one, a built engine waiting to be switched in, the builds."""
        if self.loader is not None:
            self.loader.close(timeout)
        if self.precision is not None and self.precision.build is not None:
            drop_build(self.precision.build)  # the fp16 version's build, if it still runs
        if self.switch is not None:
            for engine in (self.switch.candidate, self.switch.previous):
                if engine is not None and engine is not self.engine:
                    engine.close()
        for entry in self._entries:
            if entry.build is not None and entry.build is not self.builds.build:
                drop_build(entry.build)
        self.engine.close()
        self.builds.close()
        if self._lane is not None:
            with self._warmer.lock:  # a build's warm-up may still be running on it
                self._lane.close()
