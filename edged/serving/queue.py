"""Oldest-first gathering of requests into batches (what DeepStream's nvstreammux and Triton's dynamic
batcher do): a model server's one queue, shared by every camera that uses the model, and the cameras
it waits for."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar


class ServerClosed(RuntimeError):
    """A request arrived after its model server was closed (shutdown or reload)."""


class Queued(Protocol):
    @property
    def key(self) -> Hashable:  # only items with the head's key join its batch (same input size)
        ...

    @property
    def t_enqueued(self) -> float: ...


Q = TypeVar("Q", bound=Queued)


class BatchQueue(Generic[Q]):
    """`take` blocks for the oldest item, then adds later items with the same key until `max_rows`,
    waiting at most `max_wait_s` after the oldest was enqueued for more to arrive. It never waits for
    more when no producer could add any (`expect_more` says so): a lone camera is not slowed down."""

    def __init__(self) -> None:
        self._items: deque[Q] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: list[Q]) -> None:
        with self._cond:
            if self.closed:
                raise ServerClosed("the model server is closed")
            self._items.extend(items)
            self._cond.notify_all()

    def put_back(self, items: list[Q]) -> None:
        """Return items a batch did not keep to the front, in their order: they are still the oldest."""
        with self._cond:
            self._items.extendleft(reversed(items))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(
        self,
        max_rows: int,
        max_wait_s: float,
        expect_more: Callable[[list[Q]], bool] | None = None,
        *,
        block: bool = True,
    ) -> list[Q] | None:
        """The next batch, or None once closed and empty. `expect_more(batch)`: whether anyone could
        still add to it (False: do not wait). `block=False`: an empty list at once when nothing waits."""
        with self._cond:
            while not self._items:
                if self.closed:
                    return None
                if not block:
                    return []
                self._cond.wait()
            head = self._items.popleft()
            batch = [head]
            deadline = head.t_enqueued + max_wait_s
            while len(batch) < max_rows:
                match = next((r for r in self._items if r.key == head.key), None)
                if match is not None:
                    self._items.remove(match)
                    batch.append(match)
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.closed or (expect_more is not None and not expect_more(batch)):
                    break
                self._cond.wait(remaining)
            return batch


class Clients:
    """The cameras that send requests to one server (counted: two stages of one chain attach twice).
    A batch waits for more only while some attached camera has nothing in it yet (`expect_more`)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def attach(self, camera: str) -> None:
        with self._lock:
            self._count[camera] = self._count.get(camera, 0) + 1

    def detach(self, camera: str) -> None:
        with self._lock:
            left = self._count.get(camera, 0) - 1
            if left > 0:
                self._count[camera] = left
            else:
                self._count.pop(camera, None)

    def expect_more(self, batch: Sequence[Any]) -> bool:
        """`batch`: rows (with `frame.camera`)."""
        with self._lock:
            clients = len(self._count)
        return len({r.frame.camera for r in batch}) < clients
