"""`CaptureWatcher`: one thread that watches every camera's capture for stalled opens and reads.

Why a watcher at all: a camera's own thread cannot notice that it is stuck — `cv2.VideoCapture.read`
has no timeout, and closing a capture from another thread while it reads is unsafe. So another thread
looks at each camera's current session every `interval_s` and, when an open or a read has made no
progress for too long, has the camera abandon it and carry on in a fresh thread
(`CameraCapture.watch`). One watcher serves all cameras of the process: 16 cameras cost one thread
waking 20 times a second, not 16.

Ownership and lifetime. `WATCHER` is the process-wide default that every `CameraCapture` registers
with on `start()` and leaves on `stop()` (or when its file ends). Its daemon thread starts with the
first camera and exits when the last one leaves, so nothing outlives the cameras and no one has to stop
it; a later camera starts a new thread. A thread that died anyway (a bug) is restarted by the next
`add()`, and `healthy()` — registered by the daemon as the "capture watcher" liveness check — fails
meanwhile, so the systemd watchdog restarts the daemon rather than leave every camera unwatched.

Threads: `add`/`remove` run on any thread (the list is guarded by a lock); `watch(now)` of each camera
runs on the watcher thread and must not block (it takes the camera's small ownership lock only).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

# How often each camera's session is looked at: well under any sensible frame_timeout_s.
WATCH_INTERVAL_S = 0.05
# A round that has not come for this long means the watcher is wedged (a round takes microseconds).
STUCK_AFTER_S = 10.0


class Watched(Protocol):
    name: str

    def watch(self, now: float) -> None:
        """Look at the current session at monotonic time `now`; abandon it if it stalled."""


class CaptureWatcher:
    """One daemon thread calling `watch(now)` on every registered camera every `interval_s`."""

    def __init__(self, interval_s: float = WATCH_INTERVAL_S, name: str = "watch:cams") -> None:
        self.interval_s = interval_s
        self.name = name
        self._lock = threading.Lock()
        self._cams: list[Watched] = []
        self._thread: threading.Thread | None = None
        self._last_round = time.monotonic()

    def add(self, cam: Watched) -> None:
        with self._lock:
            if cam not in self._cams:
                self._cams.append(cam)
            if self._thread is None or not self._thread.is_alive():
                self._last_round = time.monotonic()
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def remove(self, cam: Watched) -> None:
        with self._lock:
            if cam in self._cams:
                self._cams.remove(cam)

    @property
    def cameras(self) -> int:
        with self._lock:
            return len(self._cams)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def healthy(self) -> tuple[bool, str]:
        """Liveness: (True, "") while no camera needs watching or the thread goes round; else why not."""
        with self._lock:
            cams, thread = len(self._cams), self._thread
        if cams == 0:
            return True, ""
        if thread is None or not thread.is_alive():
            return False, f"thread died; {cams} camera(s) unwatched for stalls"
        late = time.monotonic() - self._last_round
        if late > max(STUCK_AFTER_S, 10 * self.interval_s):
            return False, f"no round for {late:.0f} s; {cams} camera(s) unwatched for stalls"
        return True, ""

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                if not self._cams or self._thread is not me:
                    if self._thread is me:
                        self._thread = None  # the next add() starts a new thread
                    return
                cams = list(self._cams)
            now = time.monotonic()
            self._last_round = now
            for cam in cams:
                try:
                    cam.watch(now)
                except Exception:  # one camera's bug must not leave the others unwatched
                    log.exception("capture watcher: camera %s", cam.name)
            time.sleep(self.interval_s)


WATCHER = CaptureWatcher()
