"""`FrameDispatcher`: one thread that hands every camera's newest frame to its chain.

Without it each camera needs a loop thread that waits for its capture slot and then for room in its
chain. Here captures and chains only signal (`wake`): a frame arrived, or a frame left the chain; the
dispatcher then offers each camera's waiting frame to its chain. Offering is cheap (a queue put on a
model server), so one thread serves any number of cameras.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# A camera's pump: offers its waiting frames to its chain while there is room; never blocks.
Pump = Callable[[], None]
# Safety net: look at every camera this often even without a signal.
IDLE_POLL_S = 0.25


class FrameDispatcher:
    def __init__(self) -> None:
        self._pumps: dict[str, Pump] = {}
        self._cond = threading.Condition()
        self._signalled = False
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="disp", daemon=True)
        self._thread.start()

    def add(self, camera: str, pump: Pump) -> None:
        with self._cond:
            self._pumps[camera] = pump
        self.wake()

    def remove(self, camera: str) -> None:
        with self._cond:
            self._pumps.pop(camera, None)

    def wake(self) -> None:
        with self._cond:
            self._signalled = True
            self._cond.notify()

    def alive(self) -> tuple[bool, str]:
        ok = self._stopped or self._thread.is_alive()
        return ok, "" if ok else "the frame dispatcher thread exited"

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._signalled and not self._stopped:
                    self._cond.wait(IDLE_POLL_S)
                if self._stopped:
                    return
                self._signalled = False
                pumps = list(self._pumps.items())
            for camera, pump in pumps:
                try:
                    pump()
                except Exception:  # one camera's failure must not starve the others
                    log.exception("camera %s: handing a frame to the chain failed", camera)
