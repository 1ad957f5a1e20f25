"""The one engine cache: built engines (TensorRT plans, ONNX Runtime optimized models), content-addressed.

Ownership: pure file-system code, no threads of its own. Any thread or process may call it; what keeps
them apart is a per-(model, builder) `fcntl` lock file, so two processes never build the same engine at
once: the second waits for the lock and then finds the first one's file. Files appear atomically (tmp
file in the same folder, fsync, rename, fsync of the folder), so a crash or SIGKILL mid-build leaves no
half engine under a real name, only a `.tmp` that the next build of that model removes.

Layout (docs/engines.md):

    <cache_dir>/<model stem>/<builder>-<key>.<ext>     the engine (ext: engine | onnx)
    <cache_dir>/<model stem>/<builder>-<key>.json      the model file, what the key was made of, build
                                                       time, the engine file's size and SHA-256
    <cache_dir>/<model stem>/<builder>-<key>.failed    why the last build of this key failed (no retry)
    <cache_dir>/<model stem>/<builder>.lock            the build lock
    <cache_dir>/<model stem>/quarantine/               damaged entries moved aside (the latest of each
                                                       name, with a .why file), for a post-mortem
    <cache_dir>/timing.cache                           TensorRT's timing cache (shared)

Entries are verified before use (`find`): the file's size and SHA-256 must be the ones recorded when it
was published. SD cards and power cuts truncate, empty or overwrite files; a damaged entry, or one that
its backend then fails to load (`quarantine`, called by the loader), is moved to `quarantine/` with one
WARNING, so the caller serves the shipped model and the next build writes a good entry. An entry from
before the checksums (no size in its record) is used unverified: its load is the check.

`engine_key` is the only key function: `edged build-engine`, the daemon's load path and the background
builder all call it, so what one writes the others find. The key covers everything that makes a built
engine invalid when it changes (model bytes, builder and its version, GPU + compute capability, DLA
core, precision, calibration cache, shape profiles); a JetPack/TensorRT upgrade therefore changes the
key, the old entry no longer matches (`changes_since` says what changed) and is pruned after the rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.fileio import atomic_write, fsync_dir

log = logging.getLogger(__name__)

Shapes = list[dict[str, tuple[int, ...]]]
# The inputs of the key that name the machine and toolchain, for the "what changed" message.
_LABELS = {
    "builder_version": "builder version",
    "device": "device",
    "model_sha256": "model file",
    "dla_core": "DLA core",
    "precision": "precision",
    "calibration_sha256": "calibration cache",
    "shapes": "shape profiles",
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Where one engine lives in the cache and what it was built from."""

    model: str  # the model file's stem: the cache folder
    builder: str  # "tensorrt" | "onnxruntime"
    suffix: str  # file extension of the engine, with the dot
    digest: str
    inputs: Mapping[str, Any] = field(compare=False)
    # The model file's absolute path: two models of the same file name (both `model.onnx`) share a
    # folder, and pruning or upgrade detection must only look at entries built from the same file.
    source: str = field(default="", compare=False)

    @property
    def stem(self) -> str:
        return f"{self.builder}-{self.digest}"


def engine_key(
    model: Path,
    *,
    builder: str,
    builder_version: str,
    device: str,
    dla_core: int | None,
    precision: str,
    calibration_cache: Path | None,
    shapes: Shapes,
    suffix: str,
    model_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> EngineKey:
    """The cache key of the engine `builder` makes from `model` for this device and settings.

    `device` is "<GPU name>/sm<major><minor>" for TensorRT, "<arch>/cpu" for ONNX Runtime's CPU
    optimization; `shapes` are the input shapes the engine must run (TensorRT: its optimization
    profiles). A calibration cache that does not exist counts as none (the builder reports it).
    """
    calib = file_sha256(calibration_cache) if calibration_cache and calibration_cache.is_file() else None
    inputs: dict[str, Any] = {
        "model_sha256": model_sha256 or file_sha256(model),
        "builder": builder,
        "builder_version": builder_version,
        "device": device,
        "dla_core": dla_core,
        "precision": precision,
        "calibration_sha256": calib,
        # Lists, not tuples: the same value before and after a JSON round trip (the .json sidecar).
        "shapes": [{k: [int(d) for d in v] for k, v in sorted(s.items())} for s in shapes],
    }
    if extra:  # other build settings (TensorRT's optimization level); absent keeps older keys valid
        inputs["extra"] = dict(sorted(extra.items()))
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    return EngineKey(model.stem, builder, suffix, digest, inputs, str(model.resolve()))


class EngineCache:
    """One cache folder (`tensorrt.cache_dir` of a model); see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: EngineKey) -> Path:
        return self.root / key.model / f"{key.stem}{key.suffix}"

    def find(self, key: EngineKey) -> Path | None:
        """The entry for `key` when it is there and intact; a damaged one is quarantined (None)."""
        p = self.path(key)
        if not p.is_file():
            return None
        problem = self.damage(p)
        if problem is not None:
            quarantine(p, problem)
            return None
        return p

    @staticmethod
    def damage(path: Path) -> str | None:
        """Why the engine file at `path` is not what was published there (size, SHA-256), or None. An
        entry without a record of its size (written before they were recorded) is not judged here."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            recorded = meta.get("file") or {}
        except FileNotFoundError:
            return "its record (.json) is missing"
        except (OSError, ValueError) as e:
            return f"its record (.json) is unreadable ({e})"
        if not isinstance(recorded, dict) or "size" not in recorded:
            return None
        try:
            size = path.stat().st_size
            if size != recorded["size"]:
                return f"{size} bytes where {recorded['size']} were published (truncated or overwritten)"
            if file_sha256(path) != recorded.get("sha256"):
                return "its content is not what was published (SHA-256 differs)"
        except OSError as e:
            return f"unreadable: {e.strerror or e}"
        return None

    def failure(self, key: EngineKey) -> str | None:
        """Why the last build of exactly this key failed, or None; a changed key starts clean."""
        p = self.path(key).with_suffix(".failed")
        try:
            return str(json.loads(p.read_text())["reason"])
        except (OSError, ValueError, KeyError):
            return None

    def record_failure(self, key: EngineKey, reason: str) -> None:
        record = {"reason": reason, "at": time.time(), "source": key.source}
        try:
            atomic_write(self.path(key).with_suffix(".failed"), json.dumps(record).encode())
        except OSError as e:  # an unwritable cache: the failure is still reported, only retried next start
            log.warning("engine %s: cannot record the failed build in %s: %s", key.model, self.root, e)

    def clear_failure(self, key: EngineKey) -> None:
        self.path(key).with_suffix(".failed").unlink(missing_ok=True)

    def _others(self, key: EngineKey) -> dict[str, dict[str, Any]]:
        """Other keys of the same model file and builder: stem -> its record (.json, else .failed)."""
        out: dict[str, dict[str, Any]] = {}
        for record in sorted((self.root / key.model).glob(f"{key.builder}-*")):
            stem = record.name.split(".", 1)[0]
            if stem == key.stem or record.suffix not in (".json", ".failed") or stem in out:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(record.read_text())
                if data.get("source") == key.source:
                    out[stem] = data
        return out

    def entries(self, key: EngineKey) -> list[dict[str, Any]]:
        """The sidecars of this model file's other engines from the same builder (older toolchain, settings)."""
        return [d for d in self._others(key).values() if "inputs" in d]

    def changes_since(self, key: EngineKey) -> list[str]:
        """What differs between `key` and the entry it replaces, e.g. ["builder version 10.3.0 -> 10.7.0"]."""
        olds = self.entries(key)
        if not olds:
            return []
        old = max(olds, key=lambda m: m.get("built_at", 0)).get("inputs", {})
        return [
            f"{label} {old.get(name)} -> {key.inputs.get(name)}"
            if name not in ("model_sha256", "shapes", "calibration_sha256")
            else f"{label} changed"
            for name, label in _LABELS.items()
            if old.get(name) != key.inputs.get(name)
        ]

    @contextlib.contextmanager
    def lock(self, key: EngineKey) -> Iterator[None]:
        """Hold this model's build lock (blocking): another process building it finishes first."""
        folder = self.root / key.model
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{key.builder}.lock").open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("engine %s: another process is building it; waiting for it", key.model)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def build(self, key: EngineKey, produce: Callable[[Path], None]) -> Path:
        """The engine file for `key`: found, or made by `produce(tmp_path)` under the lock and published
        atomically. Other entries of the same model and builder are pruned afterwards."""
        found = self.find(key)
        if found is not None:
            return found
        with self.lock(key):
            found = self.find(key)  # built by the process we waited for
            if found is not None:
                return found
            dest = self.path(key)
            for stale in dest.parent.glob(f"{key.builder}-*.tmp"):  # left by a killed build
                stale.unlink(missing_ok=True)
            changes = self.changes_since(key)
            if changes:
                log.info(
                    "engine %s: cached %s engine is out of date (%s); rebuilding",
                    key.model,
                    key.builder,
                    "; ".join(changes),
                )
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
            t0 = time.monotonic()
            try:
                produce(tmp)
                with tmp.open("rb+") as f:
                    os.fsync(f.fileno())
                meta = {
                    "source": key.source,
                    "inputs": dict(key.inputs),
                    "built_at": time.time(),
                    "build_s": round(time.monotonic() - t0, 3),
                    # What `find` verifies before every use.
                    "file": {"size": tmp.stat().st_size, "sha256": file_sha256(tmp)},
                }
                # The record first, then the engine: a reader never sees an engine without its record.
                atomic_write(dest.with_suffix(".json"), json.dumps(meta, indent=1).encode())
                os.replace(tmp, dest)
                fsync_dir(dest.parent)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self.clear_failure(key)
            self.prune(key)
        return dest

    def prune(self, keep: EngineKey) -> list[Path]:
        """Remove the other entries of this model file from the same builder (other toolchain or settings);
        entries of another file with the same name stay."""
        removed = []
        for stem in self._others(keep):
            for p in (self.root / keep.model).glob(f"{stem}.*"):
                if p.suffix != ".tmp":
                    p.unlink(missing_ok=True)
                    removed.append(p)
        if removed:
            log.info("engine %s: pruned %d old %s cache file(s)", keep.model, len(removed), keep.builder)
        return removed


def quarantine(path: Path, reason: str) -> Path | None:
    """Move a damaged engine file (and its record) out of the cache into `quarantine/` beside it, with
    one WARNING and a `.why` file; the next build of its key writes a good entry. Returns where it went
    (None when another process moved or removed it first)."""
    dest = path.parent / "quarantine" / path.name
    try:
        dest.parent.mkdir(exist_ok=True)
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    except OSError as e:  # an unwritable cache: at least stop using the entry
        log.warning("engine cache: %s is damaged (%s) and cannot be moved aside: %s", path, reason, e)
        path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):
        os.replace(path.with_suffix(".json"), dest.with_suffix(".json"))
    with contextlib.suppress(OSError):
        atomic_write(
            dest.with_name(dest.name + ".why"), json.dumps({"reason": reason, "at": time.time()}).encode()
        )
    log.warning(
        "engine cache: %s is damaged (%s); moved to %s. The shipped model serves meanwhile and the engine "
        "is rebuilt",
        path,
        reason,
        dest,
    )
    return dest
