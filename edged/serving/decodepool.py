"""Decoding a batch in worker processes, for when one Python thread cannot keep up with the GPU.

Decoding (DB contours for text detectors, NMS for YOLO) is Python and numpy on small arrays: it holds
the GIL, so with many cameras one decode thread becomes the limit long before the engine does. A
`DecodePool` spreads the rows of each batch over worker processes:

  - the batch's outputs are copied once into shared memory (no pickling of maps through pipes);
  - each worker gets a row range and the plans of those rows, decodes them with its own copy of the
    decoder (sent once, at start) and returns the detections (small);
  - the rows come back in order, so cameras see exactly what in-thread decoding gives;
  - `submit` returns at once, so a caller can hand over batch k+1 while batch k's rows are still being
    decoded (up to `DEPTH` batches, each in its own shared block); it collects them in order.

Workers are started with "spawn": the parent holds a CUDA context and threads, which must not be forked.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context, shared_memory
from typing import Any

import numpy as np

from edged.decoders.base import Decoder
from edged.preprocess.spec import Plan
from edged.types import Detection

log = logging.getLogger(__name__)

# (output name, dtype, shape of the whole batch, byte offset in the shared block)
Layout = list[tuple[str, str, tuple[int, ...], int]]

_decoder: Decoder | None = None
_blocks: dict[str, mmap.mmap] = {}
PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it still lives


def _init_worker(decoder: Decoder, parent: int) -> None:
    global _decoder
    _decoder = decoder
    import cv2

    # The workers are the parallelism. OpenCV's own pool would start a thread per core in every worker,
    # and its threads spin between calls: measured on the H200 host (16 cores, 8 workers), 47-56 ms of
    # CPU per frame in the workers at one camera, for a decode of a few milliseconds.
    cv2.setNumThreads(1)
    # Stopping is the parent's job: it finishes the frames in flight, then shuts the pool down. So a
    # Ctrl-C or systemd's SIGTERM to the whole cgroup must not kill workers under it; and should the
    # parent die without a shutdown (SIGKILL, crash), nothing would tell the workers, so they watch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _decode_rows(
    block: str, layout: Layout, start: int, stop: int, plans: Sequence[Plan]
) -> list[list[Detection]]:
    """In a worker: decode rows [start, stop) of the batch in shared block `block`."""
    buf = _blocks.get(block)
    if buf is None:
        # Mapped read-only straight from /dev/shm: the parent owns and unlinks the block, and
        # attaching through SharedMemory would register it with the resource tracker a second time.
        # The parent uses DEPTH blocks in turn; older ones (replaced when a batch outgrew them) go.
        while len(_blocks) >= 2 * DEPTH:
            _blocks.pop(next(iter(_blocks))).close()
        fd = os.open(f"/dev/shm/{block}", os.O_RDONLY)
        try:
            buf = _blocks[block] = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
    outputs = {
        name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset)[start:stop]
        for name, dtype, shape, offset in layout
    }
    assert _decoder is not None
    return _decoder.decode(outputs, plans)


def _started(sample: tuple[Mapping[str, np.ndarray], Sequence[Plan]] | None = None) -> int:
    if sample is not None and _decoder is not None:
        _decoder.decode(*sample)  # imports (cv2) and lookup tables now, not on a live batch
    time.sleep(0.2)  # busy long enough that every warm-up task needs a worker of its own
    return os.getpid()


# Less output than this per task costs more in the inter-process hand-off than it saves (decoding
# cost follows the bytes a row's outputs hold: a 1080p detector map is 2 MB, a 320x240 one 0.3 MB).
MIN_BYTES_PER_TASK = 1 << 20
DEPTH = 2  # batches in the workers at once


def rows_per_task(rows: int, workers: int, bytes_per_row: int) -> int:
    """Rows per worker task: spread over every worker, but never below MIN_BYTES_PER_TASK a task."""
    need = max(math.ceil(rows / workers), math.ceil(MIN_BYTES_PER_TASK / max(bytes_per_row, 1)))
    return max(1, min(rows, need))


class PoolBatch:
    """One submitted batch: its tasks (in row order) or, when decoded in the calling thread, its
    result. `result()` gives every row's detections in order (a decoder error is raised here); if the
    pool broke under the batch, `fallback` decodes it in the calling thread instead."""

    def __init__(
        self,
        tasks: list[Future[list[list[Detection]]]],
        done: list[list[Detection]] | None = None,
        error: BaseException | None = None,
        fallback: Callable[[BaseException], list[list[Detection]]] | None = None,
    ) -> None:
        self.tasks, self._done, self._error, self._fallback = tasks, done, error, fallback

    def done(self) -> bool:
        return all(t.done() for t in self.tasks)

    def result(self) -> list[list[Detection]]:
        if self._error is not None:
            raise self._error
        if self._done is not None:
            return self._done
        found: list[list[Detection]] = []
        try:
            for t in self.tasks:
                found.extend(t.result())
        except BrokenProcessPool as e:
            if self._fallback is None:
                raise
            return self._fallback(e)
        return found


class DecodePool:
    """`decode(outputs, plans)` like `Decoder.decode`, on `workers` processes. If the pool breaks (a
    worker killed), decoding goes on in the calling thread and the failure is logged once."""

    def __init__(self, decoder: Decoder, workers: int):
        self.decoder = decoder
        self.workers = max(1, workers)
        self.broken: str | None = None
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(decoder, os.getpid()),
        )
        # One shared block per batch that may be in the workers at once, used in turn.
        self._shm: list[shared_memory.SharedMemory | None] = [None] * DEPTH
        self._turn = 0

    def start(self, sample: tuple[Mapping[str, np.ndarray], Sequence[Plan]] | None = None) -> None:
        """Start every worker now (spawning one takes a second or two: better at load than on the
        first live batches); each decodes `sample` (outputs, plans) once if given, to warm up."""
        for f in [self._pool.submit(_started, sample) for _ in range(self.workers)]:
            f.result()

    def _block(self, slot: int, nbytes: int) -> shared_memory.SharedMemory:
        shm = self._shm[slot]
        if shm is None or shm.size < nbytes:
            self._release(slot)
            shm = self._shm[slot] = shared_memory.SharedMemory(create=True, size=nbytes)  # grows rarely
        return shm

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        return self.submit(outputs, plans).result()

    def submit(
        self,
        outputs: Mapping[str, np.ndarray],
        plans: Sequence[Plan],
        on_done: Callable[[], None] | None = None,
    ) -> PoolBatch:
        """Copy the batch into the next shared block and hand its rows to the workers; returns at once
        (`outputs` may be reused then). The caller collects batches in order and has at most DEPTH
        outstanding. `on_done` is called (from a pool thread) when every row is decoded. If the pool
        breaks, this batch and every later one are decoded in the calling thread."""
        if self.broken is None:
            try:
                batch = self._submit(outputs, plans)
            except BrokenProcessPool as e:
                self._broke(e)
            else:
                if on_done is not None:
                    left = [len(batch.tasks)]
                    lock = threading.Lock()

                    def one_done(_: Future[Any]) -> None:
                        with lock:
                            left[0] -= 1
                            last = left[0] == 0
                        if last:
                            on_done()

                    for t in batch.tasks:
                        t.add_done_callback(one_done)
                return batch
        try:
            done = PoolBatch([], self.decoder.decode(outputs, plans))
        except Exception as e:
            done = PoolBatch([], error=e)
        if on_done is not None:
            on_done()
        return done

    def _submit(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> PoolBatch:
        rows = len(plans)
        layout: Layout = []
        offset = 0
        for name, arr in outputs.items():
            layout.append((name, arr.dtype.str, arr.shape, offset))
            offset += -(-arr.nbytes // 64) * 64  # keep every output 64-byte aligned
        slot, self._turn = self._turn, (self._turn + 1) % DEPTH
        shm = self._block(slot, max(offset, 1))
        for (_, dtype, shape, off), arr in zip(layout, outputs.values(), strict=True):
            np.copyto(np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=off), arr)
        chunk = rows_per_task(rows, self.workers, offset // max(rows, 1))
        tasks = [
            self._pool.submit(
                _decode_rows, shm.name, layout, a, min(a + chunk, rows), list(plans[a : a + chunk])
            )
            for a in range(0, rows, chunk)
        ]
        views = {
            name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=off)
            for name, dtype, shape, off in layout
        }

        def in_thread(e: BaseException) -> list[list[Detection]]:
            # The block is reused only after this batch is collected, so its outputs are still there.
            self._broke(e)
            return self.decoder.decode(views, plans)

        return PoolBatch(tasks, fallback=in_thread)

    def _broke(self, e: BaseException) -> None:
        if self.broken is None:
            self.broken = str(e)
            log.error("decode workers failed (%s): decoding in one thread from now on", e)

    def _release(self, slot: int) -> None:
        shm = self._shm[slot]
        if shm is not None:
            shm.close()
            shm.unlink()
            self._shm[slot] = None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for slot in range(DEPTH):
            self._release(slot)
