"""Decoding a batch in worker processes, for when one Python thread cannot keep up with the GPU.

Decoding (DB contours for text detectors, NMS for YOLO) is Python and numpy on small arrays: it holds
the GIL, so with many cameras one decode thread becomes the limit long before the engine does. A
`DecodePool` spreads the rows of each batch over worker processes:

  - the batch's outputs are copied once into shared memory (no pickling of maps through pipes);
  - each worker gets a row range and the plans of those rows, decodes them with its own copy of the
    decoder (sent once, at start) and returns the detections (small);
  - the rows come back in order, so cameras see exactly what in-thread decoding gives.

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
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context, shared_memory

import numpy as np

from edged.models.base import Decoder
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
        for old in _blocks.values():
            old.close()
        _blocks.clear()
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


# Fewer rows than this per task cost more in inter-process hand-offs than they save.
MIN_ROWS_PER_TASK = 4


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
        self._shm: shared_memory.SharedMemory | None = None

    def start(self, sample: tuple[Mapping[str, np.ndarray], Sequence[Plan]] | None = None) -> None:
        """Start every worker now (spawning one takes a second or two: better at load than on the
        first live batches); each decodes `sample` (outputs, plans) once if given, to warm up."""
        for f in [self._pool.submit(_started, sample) for _ in range(self.workers)]:
            f.result()

    def _block(self, nbytes: int) -> shared_memory.SharedMemory:
        if self._shm is None or self._shm.size < nbytes:
            self._release()
            self._shm = shared_memory.SharedMemory(create=True, size=nbytes)  # grows at most a few times
        return self._shm

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        if self.broken is None:
            try:
                return self._decode_in_workers(outputs, plans)
            except BrokenProcessPool as e:
                self.broken = str(e)
                log.error("decode workers failed (%s): decoding in one thread from now on", e)
        return self.decoder.decode(outputs, plans)

    def _decode_in_workers(
        self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]
    ) -> list[list[Detection]]:
        rows = len(plans)
        layout: Layout = []
        offset = 0
        for name, arr in outputs.items():
            layout.append((name, arr.dtype.str, arr.shape, offset))
            offset += -(-arr.nbytes // 64) * 64  # keep every output 64-byte aligned
        shm = self._block(max(offset, 1))
        for (_, dtype, shape, off), arr in zip(layout, outputs.values(), strict=True):
            np.copyto(np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=off), arr)
        chunk = max(MIN_ROWS_PER_TASK, math.ceil(rows / self.workers))
        futures = [
            self._pool.submit(
                _decode_rows, shm.name, layout, a, min(a + chunk, rows), list(plans[a : a + chunk])
            )
            for a in range(0, rows, chunk)
        ]
        found: list[list[Detection]] = []
        for f in futures:  # in row order; the block is reused only after every worker has answered
            found.extend(f.result())
        return found

    def _release(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._release()
