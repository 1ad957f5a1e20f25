"""Which PUBACK acknowledges what: paho's message ids (mids) of the events in flight (-> their outbox
sequence numbers), of messages sent outside the outbox, and PUBACKs that came before their mid was
recorded.

paho can run on_publish (its network thread) before `publish()` has returned the mid to the thread that
sent the message; such an early PUBACK is kept and matched when the sender records the mid. Used by
MqttPublisher from its sender thread, the callers of publish_raw and paho's network thread. on_publish
runs under paho's message lock, so this lock is never held across a paho call (that order would
deadlock).
"""

from __future__ import annotations

import threading


class MidBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, int] = {}  # mid -> outbox seq
        self._untracked: set[int] = set()
        self._early: set[int] = set()  # PUBACKs that beat the sender's bookkeeping of their mid

    def __len__(self) -> int:
        """Events in flight (sent, not acknowledged)."""
        return len(self._events)

    def sent_untracked(self, mid: int) -> None:
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
            else:
                self._untracked.add(mid)

    def sent_event(self, mid: int, seq: int) -> bool:
        """Record an event's mid; True when its PUBACK came already (the caller acks it now)."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                return True
            self._events[mid] = seq
            return False

    def acked(self, mid: int) -> int | None:
        """The outbox seq a PUBACK acknowledges; None for an untracked message or an early PUBACK."""
        with self._lock:
            seq = self._events.pop(mid, None)
            if seq is None:
                if mid in self._untracked:
                    self._untracked.discard(mid)
                else:
                    self._early.add(mid)
            return seq
