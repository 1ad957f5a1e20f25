"""Candidates of a model slot (edged.serving.slot.slot): another file of the model, or an engine made
beside it, loaded and warmed beside the serving engine before the shadow check may start.

Threads: one `load:<model>` thread per request creates the candidate through the model's own engine
factory (the same options, declared shapes and GPU lane as the serving engine) and warms it on every
declared shape, its preprocessing and downloads on the slot's lane (edged.serving.warming), as a built
engine is. It never runs a real request. The newest request wins: an older one still loading stops at
its next shape. The loaded candidate waits until the batch thread `take`s it. `check_file` says
beforehand why a file cannot be one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.decoders.base import Decoder
from edged.gpu.context import GpuLane
from edged.infer.base import ModelLoadError, TensorSpec
from edged.infer.onnxruntime import model_inputs
from edged.preprocess.spec import PreprocessSpec
from edged.serving.names import thread_name
from edged.serving.shapes import ShapeError, ShapeSet, check_model_input
from edged.serving.slot.builds import drop_build
from edged.serving.slot.requests import OpenEngine, SlotEntry, SwitchRequest
from edged.serving.warming import Warmer, WarmUpCancelled

log = logging.getLogger(__name__)


class CandidateLoader:
    """The loading side of one slot. `decoder_now()`: the decoder the serving engine's batches are decoded
    with; `switchable`: the decode thread can change decoders (in-thread decoding); `failed(req, why)`:
    reports a request that did not load."""

    def __init__(
        self,
        name: str,
        open_engine: OpenEngine,
        warmer: Warmer,
        lane: GpuLane | None,
        decoder_now: Callable[[], Decoder],
        failed: Callable[[SwitchRequest, str], None],
        *,
        switchable: bool,
    ) -> None:
        self.name = name
        self._open, self._warmer, self._lane = open_engine, warmer, lane
        self._decoder_now, self._failed, self._switchable = decoder_now, failed, switchable
        self._lock = threading.Lock()
        self._generation = 0
        self._loading: SwitchRequest | None = None
        self._loaded: tuple[SlotEntry, SwitchRequest] | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []  # joined by close()

    @property
    def loading(self) -> SwitchRequest | None:
        with self._lock:
            return self._loading

    def load(self, req: SwitchRequest, opened: Any = None) -> None:
        """Load `req.path` on a thread of its own (`opened`: (engine, decoder, build) made already)."""
        with self._lock:
            self._generation += 1
            generation, self._loading = self._generation, req
        t = threading.Thread(
            target=self._load,
            args=(req, generation, opened),
            name=thread_name("load", self.name),
            daemon=True,
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [t]
        t.start()

    def take(self) -> tuple[SlotEntry, SwitchRequest] | None:
        """(batch thread) The loaded candidate and its request, once; None before."""
        with self._lock:
            loaded, self._loaded = self._loaded, None
            if loaded is not None:
                self._loading = None
        return loaded

    def _load(self, req: SwitchRequest, generation: int, opened: Any) -> None:
        assert req.path is not None
        try:
            engine, decoder, build = opened if opened is not None else self._open(req.path)
        except Exception as e:
            self._fail(req, generation, f"cannot load {req.path}: {e}")
            return
        entry = SlotEntry(engine, decoder, req.path, req.sha256, build)
        now = self._decoder_now()
        if decoder.metadata == now.metadata:
            entry.decoder = now  # the same decoder: nothing to switch on the decode thread
        elif not self._switchable:
            discard(entry)
            self._fail(
                req,
                generation,
                "its metadata (e.g. a recognizer's characters) needs another decoder, and "
                f"models.{self.name}.batching.decode_workers > 0 decodes in worker processes: restart to load it",
            )
            return
        try:
            steps = self._warmer.steps_for(engine)
            self._warmer.run(engine, lane=self._lane, cancel=lambda: self._stale(generation), steps=steps)
        except WarmUpCancelled:  # a newer request or shutdown: nothing to report
            discard(entry)
            return
        except Exception as e:
            discard(entry)
            self._fail(req, generation, f"{req.path} failed while warming up: {type(e).__name__}: {e}")
            return
        with self._lock:
            current = generation == self._generation and not self._closed
            if current:
                self._loaded = (entry, req)
        if not current:  # a newer request (or shutdown) came while this one loaded
            discard(entry)
            return
        log.info(
            "model %s: %s loaded on %s/%s and warmed; the shadow check starts with the next batch",
            self.name,
            entry.label,
            engine.info.backend,
            engine.info.device,
        )

    def _stale(self, generation: int) -> bool:
        with self._lock:
            return generation != self._generation or self._closed

    def _fail(self, req: SwitchRequest, generation: int, reason: str) -> None:
        with self._lock:
            if generation == self._generation:
                self._loading = None
        log.warning("model %s: switch failed, the serving engine keeps serving: %s", self.name, reason)
        self._failed(req, reason)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the loaders (a warm-up stops at its next shape; opening an engine is waited for) and
        close a loaded candidate nobody took."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = self.take()
        if left is not None:
            discard(left[0])


def check_file(path: Path, want: TensorSpec, shapes: ShapeSet, spec: PreprocessSpec) -> str | None:
    """Why `path` cannot be a candidate of a model whose input is `want` (not ONNX, another input, a
    fixed size that does not take the declared `shapes`), or None."""
    try:
        inputs = model_inputs(path)
    except ModelLoadError as e:
        return f"not an ONNX model that ONNX Runtime can load ({e})"
    if len(inputs) != 1 or inputs[0].name != want.name or inputs[0].dtype != want.dtype:
        got = ", ".join(f"{i.name} {i.dtype} {list(i.shape)}" for i in inputs)
        return f"its input ({got}) is not the running model's ({want.name} {want.dtype} {list(want.shape)})"
    try:
        check_model_input(shapes, spec, inputs[0].shape, f"{path.name}")
    except ShapeError as e:
        return str(e)
    return None


def discard(entry: SlotEntry) -> None:
    """Close an entry's engine and stop its build."""
    entry.engine.close()
    if entry.build is not None:
        drop_build(entry.build)
