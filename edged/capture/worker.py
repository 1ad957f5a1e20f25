"""`CameraCapture`: one camera's capture thread — pacing, latest-frame handoff, stalls and reconnects.

Threads. Each opened source ("session") is read by its own daemon reader thread; a supervisor thread
per camera starts sessions, watches them and sleeps the backoff. Blocking reads are unavoidable
(`cv2.VideoCapture.read` has no timeout, and closing a capture from another thread while it reads is
unsafe), so a stall is judged by the supervisor from the time since the session's last frame. A
session with no frame for `frame_timeout_s` is *abandoned*: it is marked cancelled, a new source is
opened, and the old reader — if its read ever returns — sees the mark, publishes nothing, closes its
own source and exits. If its read never returns, that daemon thread (and its source) is leaked; this
is rare (FFmpeg's read timeout ends RTSP reads) and better than a camera that never recovers.

Pacing. Files and folders are decimated by frame index (a 30 fps file at fps=10 gives every third
frame), and with `realtime=True` they play at their own rate like a camera. Live sources are read
continuously (so the driver's buffer never fills with old frames) and the newest frame is taken each
time the fps interval has elapsed.

Handoff. One slot: `get()` takes the newest frame not yet taken; a frame replaced before it was taken
is counted as a "stale" drop. With `realtime=False` a file or folder waits for the consumer instead,
so nothing is dropped (benchmarks, tests). Live sources never wait: a camera does not pause.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from edged.capture.base import Source, SourceEnded, SourceError, redact
from edged.observability.metrics import Metrics
from edged.types import Frame, PixelFormat

log = logging.getLogger(__name__)

State = Literal["connecting", "streaming", "backoff", "ended", "stopped"]

# How often the supervisor looks at a session, and the timeout handed to Source.read (sources that
# honour it, like jetson-utils, return None this often, so a cancelled reader exits promptly).
WATCH_INTERVAL_S = 0.05
READ_TIMEOUT_S = 0.5
# Live sources: a frame this early (fraction of the interval) still counts as on time (clock jitter).
LIVE_SLACK = 0.2
# Realtime file playback further behind than this re-anchors instead of bursting to catch up.
MAX_LAG_S = 1.0


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """The backoff `delay` spread over [delay/2, delay]: cameras that failed together (a switch or an RTSP
    server restarting) do not all reopen at the same instant."""
    return delay * (0.5 + 0.5 * (rng or random).random())


class _Pacer:
    """Decides which frames are taken, and when a realtime file's frame is due."""

    def __init__(self, fps: float, nominal_fps: float | None, live: bool) -> None:
        self.live = live
        self.interval = 1.0 / fps
        # A file without a known rate plays at the configured fps, one image per interval.
        self.rate = nominal_fps or fps
        self.ratio = min(1.0, fps / self.rate)
        self._last_bucket = -1
        self._next_due: float | None = None
        self._t0: float | None = None

    def take(self, index: int, now: float) -> bool:
        if self.live:
            if self._next_due is None:
                self._next_due = now
            if now < self._next_due - LIVE_SLACK * self.interval:
                return False
            self._next_due += self.interval
            if self._next_due < now:  # the source paused: restart the grid instead of bursting
                self._next_due = now + self.interval
            return True
        # Integer buckets of the output rate; the epsilon keeps 3 * (1/3) from landing in bucket 0.
        bucket = int(index * self.ratio + 1e-9)
        if bucket == self._last_bucket:
            return False
        self._last_bucket = bucket
        return True

    def due(self, index: int, now: float) -> float:
        """Monotonic time at which a realtime file shows frame `index`."""
        if self._t0 is None or now - (self._t0 + index / self.rate) > MAX_LAG_S:
            self._t0 = now - index / self.rate
        return self._t0 + index / self.rate


class _Session:
    """One opened source and the reader thread that owns it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = time.monotonic()
        self.progress = self.started  # last sign of life from the source (a frame, or open finishing)
        self.opened = False
        self.live = False
        self.waiting = False  # blocked on the consumer or on realtime pacing: not the source's fault
        self.frames = 0
        self.uri = "?"
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.outcome: tuple[str, str] = ("error", "reader exited without a reason")
        self.thread: threading.Thread | None = None


class CameraCapture:
    """Capture thread of one camera; `get()` hands the newest frame to the pipeline.

    `source_factory` builds a fresh (unopened) Source for every (re)open. `fps` is the rate taken
    from the source. Public state for health checks: `state`, `last_frame_mono` (time.monotonic()
    of the last frame handed off, or None), `last_error`, `fps_measured`.
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
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()
        self._slot: Frame | None = None
        self._seq = 0
        self._state: State = "stopped"
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._times: collections.deque[float] = collections.deque(maxlen=128)
        self.last_frame_mono: float | None = None
        self.last_error: str | None = None
        # Called (from the reader thread, no lock held) after each frame lands in the slot: the
        # dispatcher that feeds every camera's chain waits on it instead of a thread per camera.
        self.on_frame: Callable[[], None] | None = None
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
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()
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
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        session = self._session
        if session is not None:
            session.cancelled.set()
            if session.thread is not None:
                # Let the reader close its source; a reader stuck in read() is abandoned (daemon).
                session.thread.join(max(0.0, deadline - time.monotonic()))
        self._set_state("stopped")

    def __enter__(self) -> CameraCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- supervisor -------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        with self._cond:
            if self._state == state:
                return
            self._state = state
            self._metrics.camera_up.labels(self.name).set(1 if state == "streaming" else 0)
            self._cond.notify_all()

    def _run(self) -> None:
        delay = self.reconnect_min_s
        after_failure = False
        number = 0
        while not self._stop.is_set():
            try:
                if after_failure:
                    self._metrics.source_reconnects.labels(self.name).inc()
                if after_failure or number == 0:
                    # A loop restart keeps "streaming": readiness should not flap at each file end.
                    self._set_state("connecting")
                number += 1
                session = self._start_session(number, quiet=not after_failure and number > 1)
                kind, msg = self._watch(session)
            except Exception as exc:  # a bug here must not kill the camera for good
                log.exception("camera %s: capture supervisor error", self.name)
                if self._session is not None:
                    self._session.cancelled.set()
                kind, msg, session = "error", f"internal error: {exc}", None
            if kind == "stopped":
                break
            if kind == "ended" and session is not None:
                if session.frames == 0:
                    kind, msg = "error", f"{msg} before any frame"
                elif session.live:
                    kind, msg = "error", f"{msg} (a live source ended)"
            if kind == "ended":
                if self.loop:
                    delay, after_failure = self.reconnect_min_s, False
                    continue
                self._set_state("ended")
                log.info("camera %s: %s; no more frames (loop is off)", self.name, msg)
                return
            self._metrics.source_errors.labels(self.name).inc()
            self.last_error = msg
            if session is not None and session.frames > 0:
                delay = self.reconnect_min_s  # it worked until now: retry quickly
            self._set_state("backoff")
            wait = jittered(delay)
            log.warning("camera %s: %s; reopening in %.3g s", self.name, msg, wait)
            if self._stop.wait(wait):
                break
            delay = min(delay * 2.0, self.reconnect_max_s)
            after_failure = True
        self._set_state("stopped")

    def _start_session(self, number: int, quiet: bool) -> _Session:
        session = _Session(number)
        session.thread = threading.Thread(
            target=self._read_loop, args=(session, quiet), name=f"capture-{self.name}-{number}", daemon=True
        )
        self._session = session
        session.thread.start()
        return session

    def _watch(self, s: _Session) -> tuple[str, str]:
        """Wait for the session to end or stall; ("ended"|"error"|"stopped", cause)."""
        while True:
            if self._stop.is_set():
                s.cancelled.set()
                return "stopped", ""
            if s.done.wait(WATCH_INTERVAL_S):
                return s.outcome
            if s.waiting:
                continue
            idle = time.monotonic() - s.progress
            if not s.opened and idle > self.open_timeout_s:
                s.cancelled.set()
                return "error", f"{s.uri}: open did not finish within {self.open_timeout_s:g} s (abandoned)"
            if s.opened and idle > self.frame_timeout_s:
                s.cancelled.set()
                return "error", f"{s.uri}: no frame for {self.frame_timeout_s:g} s (stalled, reader left)"

    # -- reader (one thread per session) ----------------------------------------------------------

    def _read_loop(self, s: _Session, quiet: bool) -> None:
        src: Source | None = None
        try:
            src = self._factory()
            s.uri = redact(src.uri)
            src.open()
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
            s.done.set()

    def _pump(self, s: _Session, src: Source, quiet: bool) -> None:
        pacer = _Pacer(self.fps, src.nominal_fps, s.live)
        block = not s.live and not self.realtime
        play = not s.live and self.realtime
        index = 0
        while not (s.cancelled.is_set() or self._stop.is_set()):
            image = src.read(READ_TIMEOUT_S)
            if image is None:
                continue
            now = time.monotonic()
            s.progress = now
            i, index = index, index + 1
            if not pacer.take(i, now):
                continue
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
