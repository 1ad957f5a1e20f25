"""Engine builds in a separate builder process (`BackgroundBuild`); what a build is and building in
this process are in edged/infer/builds.py.

Processes and threads: `BackgroundBuild.start()` spawns one builder process (spawn, not fork: the
daemon has threads) and one watcher thread in the daemon. The builder reports over a pipe (key, phases,
result); a crash, OOM or SIGKILL of the builder only ends that process, and the watcher turns its exit
status into a failed state with the reason. When the build succeeds the watcher loads the engine (so
the model server never blocks on it; on the server's GPU lane, which stays in this process: only the
job crosses) and `poll()` hands it over exactly once, to be switched in between
batches by the model slot that owns the engine (edged.serving.slot). `status()` (any thread) is the state for /stats,
/metrics and the status page: queued -> building (phase, step/total) -> ready | failed (reason).

A failed build (an error, a crash, SIGKILL: the OOM killer's signal) is recorded in the cache under its
key and not retried until the key changes (new model file, TensorRT/JetPack, GPU, settings) or an
operator runs `edged build-engine`, which always builds. A builder stopped by `cancel()` or by SIGTERM,
SIGINT or SIGHUP (daemon shutdown, `systemctl stop`) records nothing: the next start builds again.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.infer.base import Engine, ModelLoadError
from edged.infer.builds import Build, BuildJob, load_engine, prepare
from edged.infer.engine_cache import EngineCache, EngineKey, quarantine
from edged.observability import threads

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)


@dataclass
class BuildStatus:
    model: str
    builder: str
    state: str = "queued"  # queued | building | ready | failed
    phase: str = ""
    step: int = 0
    total: int = 0
    reason: str = ""
    path: str = ""
    key: str = ""
    cached: bool = False  # ready from the cache / failed from an earlier attempt, without building now
    changes: list[str] = field(default_factory=list)  # why the previous entry no longer matches
    started_at: float = 0.0
    finished_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["progress"] = round(self.step / self.total, 3) if self.total else None
        return d


def _child(job: BuildJob, conn: Connection, prepare_fn: Callable[[BuildJob], Build]) -> None:
    """The builder process: key first (so the parent can record a failure if this process dies),
    then cache hit, recorded failure, or a build under the cache lock."""
    threads.rename(f"builder:{job.name}")  # this process, as ps and top show it
    key: EngineKey | None = None
    cache = EngineCache(job.options.cache_dir)
    try:
        build = prepare_fn(job)
        key = build.key
        conn.send(("key", key, cache.changes_since(key)))
        found = cache.find(key)
        if found is not None:
            conn.send(("ready", str(found), True))
            return
        previous = cache.failure(key)
        if previous is not None:
            conn.send(("failed", previous, True))
            return
        conn.send(("building",))
        path = cache.build(key, lambda dest: build.produce(dest, lambda *p: conn.send(("progress", *p))))
        conn.send(("ready", str(path), False))
    except Exception as e:  # the builder's whole job: report any failure as a reason, not a traceback
        reason = str(e) if isinstance(e, ModelLoadError) else f"{type(e).__name__}: {e}"
        if key is not None:
            cache.record_failure(key, reason)
        conn.send(("failed", reason, False))
    finally:
        conn.close()


# A builder stopped by these was asked to stop (daemon shutdown, systemd stop): not a failed build.
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = (
            " (the kernel's OOM killer sends it when memory runs out: check `journalctl -k`; a smaller"
            " tensorrt.workspace_mb or max_batch needs less)"
            if -code == signal.SIGKILL
            else ""
        )
        return f"the builder process was killed by {name}{hint}"
    return f"the builder process exited with status {code} without a result"


class BackgroundBuild:
    """One engine build in a separate process; see the module docstring for threads and states.
    `lane`: the GPU lane the built engine is loaded onto (its model server's; see `load_engine`)."""

    def __init__(
        self,
        job: BuildJob,
        *,
        lane: GpuLane | None = None,
        prepare_fn: Callable[[BuildJob], Build] = prepare,
        loader: Callable[[BuildJob, Path, GpuLane | None], Engine] = load_engine,
        on_change: Callable[[BuildStatus], None] | None = None,
    ) -> None:
        self.job = job
        self._lane = lane
        self._prepare = prepare_fn  # tests pass a module-level wrapper (it must pickle)
        self._loader = loader
        self._on_change = on_change
        self._lock = threading.Lock()
        self._status = BuildStatus(job.name, job.builder)
        self._engine: Engine | None = None
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._cancelled = False
        self._rebuilt = False  # a cached entry failed to load and was built again (once)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> BackgroundBuild:
        self._update(started_at=time.time())
        self._spawn()
        return self

    def _spawn(self) -> None:
        """The builder process and its watcher thread (again, once, after a cached entry failed to load)."""
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_child,
            args=(self.job, sender, self._prepare),
            name=f"builder:{self.job.name}",
            daemon=True,
        )
        self._proc.start()
        sender.close()  # the child's end: EOF here once the builder exits, however it exits
        self._thread = threading.Thread(
            target=self._watch, args=(receiver,), name=f"build:{self.job.name}", daemon=True
        )
        self._thread.start()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status.as_dict()

    def poll(self) -> Engine | None:
        """The newly built, loaded engine, exactly once; None before (and after) that. Never blocks."""
        with self._lock:
            engine, self._engine = self._engine, None
            return engine

    def wait(self, timeout: float | None = None) -> bool:
        """Until the build ended (ready or failed) and a built engine is loaded; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = self._thread
            if thread is None:
                return False
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
            if thread is self._thread:  # not replaced by a rebuild's watcher meanwhile
                return True

    def cancel(self, timeout: float = 30.0) -> None:
        """Stop the builder (daemon shutdown, a model that changed): its partial file is never published,
        nothing is recorded, and an engine it already loaded is closed here, never left to the
        interpreter's exit (an ONNX Runtime or TensorRT object destroyed then aborts the process).
        Waits for the watcher thread, which may be loading the built engine (bounded by `timeout`)."""
        with self._lock:
            self._cancelled = True
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if not self.wait(timeout) and self._thread is not None:
            log.warning(
                "model %s: the engine build's watcher did not stop within %.0f s", self.job.name, timeout
            )
        left = self.poll()
        if left is not None:
            left.close()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._status, k, v)
            status = BuildStatus(**{**self._status.__dict__, "changes": list(self._status.changes)})
        if self._on_change is not None:
            self._on_change(status)

    def _watch(self, conn: Connection) -> None:
        key: EngineKey | None = None
        result: tuple[Any, ...] | None = None
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "key":
                key = msg[1]
                self._update(key=msg[1].digest, changes=list(msg[2]))
                if msg[2]:
                    log.info(
                        "model %s: %s engine out of date: %s",
                        self.job.name,
                        self.job.builder,
                        "; ".join(msg[2]),
                    )
            elif msg[0] == "building":
                self._update(state="building")
                log.info(
                    "model %s: building the %s engine in the background", self.job.name, self.job.builder
                )
            elif msg[0] == "progress":
                self._update(state="building", phase=msg[1], step=msg[2], total=msg[3])
            else:
                result = msg
        conn.close()
        self._proc.join()
        if result is None:
            code = self._proc.exitcode
            reason = _exit_reason(code)
            stopped = self._cancelled or (code is not None and code < 0 and -code in _STOP_SIGNALS)
            if stopped:  # the next start builds again
                self._update(
                    state="failed", reason=f"stopped before it finished ({reason})", finished_at=time.time()
                )
                log.info(
                    "model %s: %s engine build stopped before it finished", self.job.name, self.job.builder
                )
                return
            if key is not None:
                EngineCache(self.job.options.cache_dir).record_failure(key, reason)
            result = ("failed", reason, False)
        if result[0] == "ready":
            loaded = self._finish_ready(Path(result[1]), cached=result[2])
            if not loaded and not self._rebuilt and not self._cancelled:
                # A cached entry that does not load was quarantined: build it again, once.
                self._rebuilt = True
                self._spawn()
        else:
            self._finish_failed(result[1], previous=result[2])

    def _finish_ready(self, path: Path, cached: bool) -> bool:
        """Load the engine; False when a cached entry did not load (quarantined: the caller rebuilds)."""
        if not self.job.load:  # the file is the product (status().path)
            self._update(state="ready", path=str(path), cached=cached, finished_at=time.time())
            log.info("model %s: %s build ready (%s)", self.job.name, self.job.builder, path.name)
            return True
        try:
            engine = self._loader(self.job, path, self._lane)
        except Exception as e:  # a built engine that does not load is a failed build, said once
            if cached and not self._rebuilt and path.exists():
                quarantine(path, f"it does not load: {e}")
                return False
            self._finish_failed(f"the built engine {path} does not load: {e}", previous=False)
            return True
        with self._lock:
            cancelled = self._cancelled
            if not cancelled:
                self._engine = engine
        if cancelled:  # cancelled while it loaded: nobody will adopt it
            engine.close()
            self._update(state="failed", reason="stopped before it was adopted", finished_at=time.time())
            return True
        self._update(state="ready", path=str(path), cached=cached, finished_at=time.time())
        log.info("model %s: %s engine ready (%s)", self.job.name, self.job.builder, path.name)
        return True

    def _finish_failed(self, reason: str, previous: bool) -> None:
        self._update(state="failed", reason=reason, cached=previous, finished_at=time.time())
        when = "an earlier build of this exact engine failed" if previous else "engine build failed"
        log.error(
            "model %s: %s %s: %s. The current engine keeps serving; the build is retried when the model "
            "file, TensorRT/JetPack, the GPU or the model's settings change, or now with "
            "`edged build-engine --model %s`",
            self.job.name,
            self.job.builder,
            when,
            reason,
            self.job.name,
        )
