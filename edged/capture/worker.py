"""`CameraCapture`: one camera's capture thread — pacing, latest-frame handoff, stalls and reconnects.

Threads. Each camera has one long-lived daemon thread, `capture-<camera>`: it opens the source, reads
it, and on an error or the end of a file sleeps the jittered backoff and reopens (`_run`). One
`CaptureWatcher` thread shared by every camera of the process (`edged.capture.watcher`) judges stalls:
a blocking read cannot time itself out (`cv2.VideoCapture.read` has no timeout, and closing a capture
from another thread while it reads is unsafe), so every 50 ms the watcher looks at each camera's
current session ("one opened source") and, when its open has not finished within `open_timeout_s` or
no frame came for `frame_timeout_s`, *abandons* it (`watch`): marks it cancelled and hands the camera
to a replacement thread of the same name, which backs off and reopens. The abandoned thread is renamed
`capture-<camera>-abandoned-<n>`; if its read ever returns it sees the mark, publishes nothing, closes
its own source and exits. If its read never returns, that daemon thread (and its source) is leaked;
this is rare (FFmpeg's read timeout ends RTSP reads) and better than a camera that never recovers.
So 16 cameras run 16 capture threads + 1 watcher (before: a supervisor and a reader per camera).

Ownership. Exactly one thread owns a camera at a time (`_thread`): the loop state (backoff delay,
session number) is touched by the owner only, and the handoff is decided under `_own`: a session ends
either by its thread finishing it or by the watcher abandoning it, never both. Only the thread of the
current, uncancelled session publishes frames (`_publish` checks the mark under the slot's lock), and
`seq` keeps increasing across reopens.

Pacing. Files and folders are decimated by frame index (a 30 fps file at fps=10 gives every third
frame), and with `realtime=True` they play at their own rate like a camera. Live sources are read
continuously (so the driver's buffer never fills with old frames) and the newest frame is taken each
time the fps interval has elapsed (`edged.capture.pacing`).

Decoding. A source that can grab a frame without decoding it (OpenCV: `grab`/`retrieve`) has every
frame grabbed and only the taken ones decoded: a 30 fps camera at fps=5 costs 5 decodes a second.

Handoff. One slot: `get()` takes the newest frame not yet taken; a frame replaced before it was taken
is counted as a "stale" drop. With `realtime=False` a file or folder waits for the consumer instead,
so nothing is dropped (benchmarks, tests). Live sources never wait: a camera does not pause.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from edged.capture.base import Source, SourceEnded, SourceError, Splittable, redact
from edged.capture.pacing import Pacer, jittered
from edged.capture.watcher import WATCHER, CaptureWatcher
from edged.observability import threads
from edged.observability.metrics import Metrics
from edged.types import Frame, PixelFormat

log = logging.getLogger(__name__)

State = Literal["connecting", "streaming", "backoff", "ended", "stopped"]

# The timeout handed to Source.read: sources that honour it (jetson-utils, grab on OpenCV's own
# timeout) return None this often, so an abandoned or stopped thread notices promptly.
READ_TIMEOUT_S = 0.5


class _Session:
    """One opened source, read on the camera's thread and watched by the shared watcher."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = time.monotonic()
        self.progress = self.started  # last sign of life from the source (a frame, or open finishing)
        self.opened = False
        self.live = False
        self.waiting = False  # blocked on the consumer or on realtime pacing: not the source's fault
        self.frames = 0
        self.uri = "?"
        self.cancelled = threading.Event()  # stop, or abandoned: its thread must not publish any more
        self.outcome: tuple[str, str] = ("error", "reader exited without a reason")
        # Set under CameraCapture._own: exactly one of them ends a session (see the module docstring).
        self.finished = False  # its thread got out of it and carries on with the camera
        self.abandoned = False  # the watcher gave up on it and handed the camera to a new thread


class CameraCapture:
    """Capture thread of one camera; `get()` hands the newest frame to the pipeline.

    `source_factory` builds a fresh (unopened) Source for every (re)open. `fps` is the rate taken
    from the source. Public state for health checks: `state`, `last_frame_mono` (time.monotonic()
    of the last frame handed off, or None), `last_error`, `fps_measured`. `watcher` watches it for
    stalls while started (default: the process-wide `WATCHER`).
    """

    def __init__(
        self,
        name: str,
        source_factory: Callable[[], Source],
        *,
        fps: float,
        loop: bool = False,
        realtime: bool = True,
        frame_timeout_s: float = 5.0,
        open_timeout_s: float | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        metrics: Metrics | None = None,
        watcher: CaptureWatcher | None = None,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.name = name
        self.fps = fps
        self.loop = loop
        self.realtime = realtime
        self.frame_timeout_s = frame_timeout_s
        self.open_timeout_s = open_timeout_s if open_timeout_s is not None else frame_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_max_s, reconnect_min_s)
        self._factory = source_factory
        self._metrics = metrics or Metrics()
        self._watcher = watcher or WATCHER
        self._cond = threading.Condition(threading.RLock())
        self._own = threading.Lock()  # who owns the camera: the session's end, the thread handoff
        self._stop = threading.Event()
        self._slot: Frame | None = None
        self._seq = 0
        self.stale_drops = 0  # frames replaced by a newer one before the chain took them
        self._state: State = "stopped"
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None  # the owning thread (replaced after a stall)
        self._abandoned = 0
        # Loop state, touched by the owning thread only (a replacement thread takes it over).
        self._number = 0  # sessions opened so far
        self._delay = reconnect_min_s  # the next backoff before jitter
        self._after_failure = False
        self._times: collections.deque[float] = collections.deque(maxlen=128)
        self._said_paced = False
        self.last_frame_mono: float | None = None
        self.last_error: str | None = None
        # What decodes the frames of the current (last) open: decoder (nvdec, nvjpeg, opencv, jetson-utils),
        # codec, and why not the GPU when the camera could have used it (edged.capture.decode).
        self.decoding: dict[str, str | None] = {"decoder": None, "codec": None, "note": None}
        self.on_frame = on_frame  # called on the capture thread (no lock held) after each frame lands
        self._metrics.camera_up.labels(name).set(0)

    # -- public API -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def fps_measured(self) -> float:
        """Frames handed off per second over the last 5 s (0 when fewer than two)."""
        now = time.monotonic()
        with self._cond:
            recent = [t for t in self._times if now - t <= 5.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-6)

    def start(self) -> CameraCapture:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} already started")
        self._set_state("connecting")
        with self._own:
            self._thread = threading.Thread(
                target=self._run, args=(None,), name=f"cap:{self.name}", daemon=True
            )
            self._thread.start()
        self._watcher.add(self)
        return self

    def get(self, timeout_s: float) -> Frame | None:
        """The newest frame not yet taken; None after `timeout_s`, or at once once ended/stopped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._slot is None:
                remaining = deadline - time.monotonic()
                if self._state in ("ended", "stopped") or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a blocking (realtime=False) reader waits for the empty slot
        self._metrics.frames.labels(self.name).inc()
        return frame

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop capturing and close the source; returns within about `timeout_s` even mid-backoff."""
        deadline = time.monotonic() + timeout_s
        with self._own:  # after this no replacement thread is started (watch() checks _stop under _own)
            self._stop.set()
            thread, session = self._thread, self._session
        self._watcher.remove(self)
        if session is not None:
            session.cancelled.set()
        with self._cond:
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            # Let it close its source; a thread stuck in read() is abandoned (daemon).
            thread.join(max(0.0, deadline - time.monotonic()))
        self._set_state("stopped")

    def __enter__(self) -> CameraCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the watcher's call (on the shared watcher thread; must not block) ------------------------

    def watch(self, now: float) -> None:
        """Abandon the current session if its open or its reads stalled, and hand the camera to a new
        thread that backs off and reopens. The stuck thread keeps its source (see the module docstring)."""
        s = self._session
        if s is None or s.finished or s.abandoned or s.waiting or self._stop.is_set():
            return
        idle = now - s.progress
        if not s.opened and idle > self.open_timeout_s:
            msg = f"{s.uri}: open did not finish within {self.open_timeout_s:g} s (abandoned)"
        elif s.opened and idle > self.frame_timeout_s:
            msg = f"{s.uri}: no frame for {self.frame_timeout_s:g} s (stalled, reader left)"
        else:
            return
        with self._own:
            if s.finished or s.abandoned or s is not self._session or self._stop.is_set():
                return  # its thread got out by itself meanwhile, or the camera is stopping
            s.abandoned = True
            s.cancelled.set()
            self._abandoned += 1
            if self._thread is not None:  # the stuck thread keeps its source: named so, for top -H too
                threads.rename_thread(self._thread, f"stuck:{self.name}:{self._abandoned}")
            self._thread = threading.Thread(
                target=self._run, args=(("error", msg, s),), name=f"cap:{self.name}", daemon=True
            )
            self._thread.start()

    # -- the camera's thread ----------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        with self._cond:
            if self._state == state:
                return
            self._state = state
            self._metrics.camera_up.labels(self.name).set(1 if state == "streaming" else 0)
            self._cond.notify_all()

    def _run(self, taken_over: tuple[str, str, _Session] | None) -> None:
        """Open, read, and on error/end back off and reopen, until stopped or ended. `taken_over` is the
        abandoned session's outcome when the watcher started this thread to replace a stuck one."""
        while not self._stop.is_set():
            session: _Session | None = None
            if taken_over is not None:
                kind, msg, session = taken_over
                taken_over = None
            else:
                try:
                    if self._after_failure:
                        self._metrics.source_reconnects.labels(self.name).inc()
                    if self._after_failure or self._number == 0:
                        # A loop restart keeps "streaming": readiness should not flap at each file end.
                        self._set_state("connecting")
                    quiet = not self._after_failure and self._number > 0
                    self._number += 1
                    session = _Session(self._number)
                    self._session = session
                    self._read(session, quiet)
                except Exception as exc:  # a bug here must not kill the camera for good
                    log.exception("camera %s: capture thread error", self.name)
                    if session is not None:
                        session.cancelled.set()
                        session.outcome = ("error", f"internal error: {exc}")
                if session is not None and not self._finish(session):
                    return  # abandoned by the watcher: the camera is another thread's now
                kind, msg = session.outcome if session is not None else ("error", "internal error")
            if kind == "stopped":
                break
            if kind == "ended" and session is not None:
                if session.frames == 0:
                    kind, msg = "error", f"{msg} before any frame"
                elif session.live:
                    kind, msg = "error", f"{msg} (a live source ended)"
            if kind == "ended":
                if self.loop:
                    self._delay, self._after_failure = self.reconnect_min_s, False
                    continue
                self._set_state("ended")
                log.info("camera %s: %s; no more frames (loop is off)", self.name, msg)
                self._watcher.remove(self)
                return
            self._metrics.source_errors.labels(self.name).inc()
            self.last_error = msg
            if session is not None and session.frames > 0:
                self._delay = self.reconnect_min_s  # it worked until now: retry quickly
            self._set_state("backoff")
            wait = jittered(self._delay)
            log.warning("camera %s: %s; reopening in %.3g s", self.name, msg, wait)
            if self._stop.wait(wait):
                break
            self._delay = min(self._delay * 2.0, self.reconnect_max_s)
            self._after_failure = True
        self._set_state("stopped")

    def _finish(self, s: _Session) -> bool:
        """End the session on its own thread; False if the watcher abandoned it first."""
        with self._own:
            if s.abandoned:
                return False
            s.finished = True
            return True

    def _read(self, s: _Session, quiet: bool) -> None:
        """Open the source and read it until it ends, fails, stops or is abandoned; sets `s.outcome`."""
        src: Source | None = None
        try:
            src = self._factory()
            s.uri = redact(src.uri)
            src.open()
            self.decoding = {
                "decoder": str(getattr(src, "decoder", type(src).__name__)),
                "codec": getattr(src, "codec", None),
                "note": getattr(src, "note", None),
            }
            s.live = bool(src.live)
            s.progress = time.monotonic()
            s.opened = True
            self._pump(s, src, quiet)
            s.outcome = ("stopped", "")
        except SourceEnded as exc:
            s.outcome = ("ended", str(exc) or f"{s.uri}: ended")
        except SourceError as exc:
            s.outcome = ("error", str(exc) or f"{s.uri}: source error")
        except Exception as exc:  # a backend raising something unexpected is a failure like any other
            log.debug("camera %s: unexpected source exception", self.name, exc_info=True)
            s.outcome = ("error", f"{s.uri}: {type(exc).__name__}: {exc}")
        finally:
            if src is not None:
                try:
                    src.close()
                except Exception as exc:
                    log.debug("camera %s: close of %s failed: %s", self.name, s.uri, exc)

    def _pump(self, s: _Session, src: Source, quiet: bool) -> None:
        # A source that plays at its own rate (jetson-utils files) is paced like a live one: by time.
        paced = s.live or bool(getattr(src, "self_paced", False))
        if paced and not s.live and not self.realtime and not self._said_paced:
            self._said_paced = True
            log.warning(
                "camera %s: %s plays in real time (jetson-utils): realtime: false is not honoured, frames the "
                "chain cannot take are dropped",
                self.name,
                s.uri,
            )
        pacer = Pacer(self.fps, src.nominal_fps, paced)
        block = not paced and not self.realtime
        play = not paced and self.realtime
        index = 0
        # Grab every frame (a live source's buffer never fills with old ones), decode only the taken.
        grabber = src if isinstance(src, Splittable) else None
        while not (s.cancelled.is_set() or self._stop.is_set()):
            if grabber is not None:
                if not grabber.grab(READ_TIMEOUT_S):
                    continue
                image = None
            else:
                image = src.read(READ_TIMEOUT_S)
                if image is None:
                    continue
            now = time.monotonic()
            s.progress = now
            i, index = index, index + 1
            if not pacer.take(i, now):
                continue
            if grabber is not None:
                image = grabber.retrieve()
            if play:
                wait = pacer.due(i, now) - now
                if wait > 0:
                    s.waiting = True
                    interrupted = s.cancelled.wait(wait) or self._stop.is_set()
                    s.progress = time.monotonic()
                    s.waiting = False
                    if interrupted:
                        return
            if self._publish(s, image, src.fmt, block) and s.frames == 1:
                (log.debug if quiet else log.info)(
                    "camera %s: streaming %s (source %s fps, taking %g fps)",
                    self.name,
                    s.uri,
                    f"{src.nominal_fps:g}" if src.nominal_fps else "?",
                    self.fps,
                )

    def _publish(self, s: _Session, image: Any, fmt: PixelFormat, block: bool) -> bool:
        t_mono_ns, t_wall = time.monotonic_ns(), time.time()
        with self._cond:
            if block and self._slot is not None:
                s.waiting = True
                while self._slot is not None and not (s.cancelled.is_set() or self._stop.is_set()):
                    self._cond.wait(0.1)
                s.progress = time.monotonic()
                s.waiting = False
                t_mono_ns, t_wall = time.monotonic_ns(), time.time()
            if s.cancelled.is_set() or self._stop.is_set():
                return False
            if self._slot is not None:
                self.stale_drops += 1
                self._metrics.drops.labels(self.name, "stale").inc()
            self._slot = Frame(self.name, self._seq, image, fmt, t_mono_ns, t_wall)
            self._seq += 1
            s.frames += 1
            now = t_mono_ns / 1e9
            self.last_frame_mono = now
            self._times.append(now)
            self._set_state("streaming")
            self._cond.notify_all()
        if self.on_frame is not None:
            self.on_frame()
        return True
