"""The engine cache and the background builder, with real builds (ONNX Runtime's offline optimization
of the real PP-OCR models) in real builder processes: key, atomic publish, pruning after an upgrade,
serving while a build runs, SIGKILL of the builder, a failure not retried, concurrent builders, and
`edged build-engine` writing what the daemon's load path loads.

TensorRT builds go through the same cache and builder process but cannot run here (no TensorRT):
tests/gpu/test_tensorrt.py covers them on a device.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edged.infer.base import EngineOptions, ModelLoadError
from edged.infer.builder import BackgroundBuild
from edged.infer.builds import BuildJob, build_now
from edged.infer.engine_cache import EngineCache, engine_key
from edged.infer.factory import create_engine
from edged.infer.onnxruntime import optimize, optimized_key
from tests.support.builders import GatedPrepare
from tests.support.paths import ROOT, need_models

REC = "PP-OCRv6_rec_small.onnx"
CLS = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def wait_for(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """The real recognizer under a test-owned name (the cache folder is named after it)."""
    dest = tmp_path / "models" / "rec.onnx"
    dest.parent.mkdir()
    shutil.copyfile(need_models() / REC, dest)
    return dest


@pytest.fixture
def options(tmp_path: Path) -> EngineOptions:
    return EngineOptions(
        providers=("CPUExecutionProvider",), intra_op_threads=1, cache_dir=tmp_path / "cache"
    )


@pytest.fixture
def gated(tmp_path: Path) -> GatedPrepare:
    return GatedPrepare(tmp_path / "gate", tmp_path / "builds.log")


def rec_input(width: int = 160) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, width)).astype(np.float32)}


def key_for(model: Path, **changes: object) -> str:
    args: dict = dict(
        builder="tensorrt",
        builder_version="10.3.0",
        device="Orin/sm87",
        dla_core=None,
        precision="fp16",
        calibration_cache=None,
        shapes=[{"x": (1, 3, 48, 320)}],
        suffix=".engine",
    )
    args.update(changes)
    return engine_key(model, **args).digest


def test_key_covers_every_input(model: Path, tmp_path: Path) -> None:
    calib = tmp_path / "int8.calib"
    calib.write_bytes(b"TRT-8601-EntropyCalibration2\n")
    base = key_for(model)
    assert key_for(model) == base  # a function of its inputs only
    variants = {
        "builder_version": key_for(model, builder_version="10.7.0"),
        "device": key_for(model, device="Orin Nano/sm87"),
        "dla": key_for(model, dla_core=0),
        "precision": key_for(model, precision="int8"),
        "calibration": key_for(model, calibration_cache=calib),
        "shapes": key_for(model, shapes=[{"x": (1, 3, 48, 320)}, {"x": (8, 3, 48, 320)}]),
        "builder": key_for(model, builder="onnxruntime"),
    }
    other = tmp_path / "rec.onnx"
    shutil.copyfile(need_models() / CLS, other)  # same name, other bytes
    variants["model bytes"] = key_for(other)
    assert base not in variants.values() and len(set(variants.values())) == len(variants), variants
    calib.write_bytes(b"TRT-8601-EntropyCalibration2\nchanged\n")
    assert key_for(model, calibration_cache=calib) != variants["calibration"]


def test_upgrade_detected_rebuilt_and_old_entry_pruned(model: Path, tmp_path: Path, caplog) -> None:
    """A new builder version (a JetPack/TensorRT upgrade) gives a new key: the old entry is reported as
    out of date, the new one built, the old one pruned."""
    cache = EngineCache(tmp_path / "cache")

    def key(version: str):  # type: ignore[no-untyped-def]
        return engine_key(
            model,
            builder="onnxruntime",
            builder_version=version,
            device="x86_64/cpu",
            dla_core=None,
            precision="fp32",
            calibration_cache=None,
            shapes=[],
            suffix=".onnx",
        )

    old = cache.build(key("1.31.0"), lambda dest: optimize(model, dest))
    assert old.is_file() and old.with_suffix(".json").is_file()
    new_key = key("1.32.0")
    assert cache.find(new_key) is None
    assert cache.changes_since(new_key) == ["builder version 1.31.0 -> 1.32.0"]
    with caplog.at_level("INFO", logger="edged.infer.engine_cache"):
        new = cache.build(new_key, lambda dest: optimize(model, dest))
    assert "out of date (builder version 1.31.0 -> 1.32.0); rebuilding" in caplog.text
    assert new != old and new.is_file() and not old.exists() and not old.with_suffix(".json").exists()
    assert sorted(p.name for p in new.parent.iterdir()) == sorted(
        [new.name, new.with_suffix(".json").name, "onnxruntime.lock"]
    )
    meta = json.loads(new.with_suffix(".json").read_text())
    assert meta["inputs"]["builder_version"] == "1.32.0" and meta["build_s"] >= 0


def test_a_failed_produce_publishes_nothing(model: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    key = optimized_key(model)

    def half_then_crash(dest: Path) -> None:
        dest.write_bytes(b"half an engine")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.build(key, half_then_crash)
    assert cache.find(key) is None and list((tmp_path / "cache" / "rec").glob("*.tmp")) == []


def test_serves_while_building_then_hands_over_the_engine_once(
    model: Path, options: EngineOptions, gated: GatedPrepare
) -> None:
    serving = create_engine("rec", model, "onnxruntime", options)
    assert serving.info.detail == ""  # nothing in the cache yet: the model as shipped
    expected = serving.infer(rec_input())
    seen: list[str] = []
    build = BackgroundBuild(
        BuildJob("rec", model, "onnxruntime", options),
        prepare_fn=gated,
        on_change=lambda s: seen.append(s.state),
    ).start()
    wait_for(lambda: gated.builds() != [], what="the builder to start")
    served_during_build = 0
    for _ in range(5):  # the caller (a model server) keeps running batches and polling between them
        assert build.poll() is None
        serving.infer(rec_input())
        served_during_build += 1
    status = build.status()
    assert status["state"] == "building" and status["phase"] == "held by the test", status
    assert served_during_build == 5 and gated.builds() == [build.pid]

    gated.gate.touch()
    assert build.wait(60)
    engine = build.poll()
    assert engine is not None and build.poll() is None  # exactly once
    status = build.status()
    assert status["state"] == "ready" and not status["cached"] and status["progress"] == 1.0, status
    assert engine.info.detail == f"optimized model {status['path']}"
    name = serving.outputs[0].name
    np.testing.assert_allclose(engine.infer(rec_input())[name], expected[name], rtol=1e-4, atol=1e-5)
    assert seen[0] == "queued" and "building" in seen and seen[-1] == "ready"


def test_builder_sigkill_leaves_the_caller_serving_with_a_clear_error(
    model: Path, options: EngineOptions, gated: GatedPrepare, tmp_path: Path, caplog
) -> None:
    serving = create_engine("rec", model, "onnxruntime", options)
    job = BuildJob("rec", model, "onnxruntime", options)
    build = BackgroundBuild(job, prepare_fn=gated).start()
    wait_for(lambda: build.status()["phase"] == "held by the test", what="the build to be running")
    with caplog.at_level("ERROR", logger="edged.infer.builder"):
        os.kill(build.pid or 0, signal.SIGKILL)
        assert build.wait(30)
    status = build.status()
    assert status["state"] == "failed" and "killed by SIGKILL" in status["reason"], status
    assert build.poll() is None
    assert serving.infer(rec_input())[serving.outputs[0].name].shape[0] == 1  # still serving
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "killed by SIGKILL" in errors[0].getMessage()
    assert (
        "keeps serving" in errors[0].getMessage()
        and "edged build-engine --model rec" in errors[0].getMessage()
    )
    cache = EngineCache(options.cache_dir)
    assert cache.find(optimized_key(model)) is None and list((options.cache_dir / "rec").glob("*.tmp")) == []

    # Not retried while nothing changed (a restart of the daemon included) ...
    gated.gate.touch()
    again = BackgroundBuild(job, prepare_fn=gated).start()
    assert again.wait(60)
    assert again.status()["state"] == "failed" and again.status()["cached"] and len(gated.builds()) == 1
    # ... retried once the key changes (here: a new model file).
    shutil.copyfile(need_models() / CLS, model)
    changed = BackgroundBuild(job, prepare_fn=gated).start()
    assert changed.wait(60)
    assert changed.status()["state"] == "ready" and len(gated.builds()) == 2
    # The old key's failure record is pruned with the rest of the old entry.
    assert sorted(p.suffix for p in (options.cache_dir / "rec").glob("onnxruntime-*")) == [".json", ".onnx"]


def test_cache_hit_on_the_next_start_builds_nothing(
    model: Path, options: EngineOptions, gated: GatedPrepare
) -> None:
    gated.gate.touch()
    job = BuildJob("rec", model, "onnxruntime", options)
    first = BackgroundBuild(job, prepare_fn=gated).start()
    assert first.wait(60) and first.status()["state"] == "ready"
    second = BackgroundBuild(job, prepare_fn=gated).start()  # as after a daemon restart
    assert second.wait(60)
    assert second.status()["state"] == "ready" and second.status()["cached"]
    assert second.status()["path"] == first.status()["path"] and len(gated.builds()) == 1
    assert second.poll() is not None


def test_two_concurrent_builders_of_one_key_build_once(
    model: Path, options: EngineOptions, gated: GatedPrepare
) -> None:
    job = BuildJob("rec", model, "onnxruntime", options)
    a = BackgroundBuild(job, prepare_fn=gated).start()
    b = BackgroundBuild(job, prepare_fn=gated).start()
    # Both processes get past the cache lookup; one holds the lock and builds, the other waits on it.
    wait_for(lambda: a.status()["state"] == b.status()["state"] == "building", what="both builders")
    wait_for(lambda: len(gated.builds()) == 1, what="one build to start")
    time.sleep(0.5)  # give the second one every chance to (wrongly) start its own build
    assert len(gated.builds()) == 1
    gated.gate.touch()
    assert a.wait(60) and b.wait(60)
    sa, sb = a.status(), b.status()
    assert sa["state"] == sb["state"] == "ready" and sa["path"] == sb["path"], (sa, sb)
    assert len(gated.builds()) == 1 and gated.builds()[0] in (a.pid, b.pid)
    assert a.poll() is not None and b.poll() is not None


def test_a_model_that_cannot_build_fails_with_the_reason(tmp_path: Path, options: EngineOptions) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    build = BackgroundBuild(BuildJob("broken", bad, "onnxruntime", options)).start()
    assert build.wait(60)
    status = build.status()
    assert status["state"] == "failed" and status["reason"].startswith(
        f"{bad}: ONNX Runtime cannot optimize it"
    )
    assert "Traceback" not in status["reason"]
    with pytest.raises(ModelLoadError, match="cannot optimize it"):
        build_now(BuildJob("broken", bad, "onnxruntime", options))  # the operator's retry builds again


def _config(tmp_path: Path, model: Path, backend: str = "onnxruntime") -> Path:
    cfg = {
        "device": {"name": "test"},
        "models": {
            "text_rec": {
                "path": str(model),
                "kind": "ppocr_rec",
                "backend": backend,
                "onnxruntime": {"providers": ["CPUExecutionProvider"]},
                "tensorrt": {"cache_dir": str(tmp_path / "cache")},
            }
        },
        "cameras": {},
    }
    path = tmp_path / "edged.yaml"
    path.write_text(json.dumps(cfg))
    return path


def build_engine_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edged", "build-engine", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def test_build_engine_writes_what_the_daemon_loads(model: Path, tmp_path: Path) -> None:
    from edged.config.loader import load_config
    from edged.serving.loading import load_model

    config = _config(tmp_path, model)
    done = build_engine_cli(config)
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.split("onnxruntime engine ")[-1].strip())
    assert written.is_file() and written.parent == tmp_path / "cache" / "rec"
    built_at = json.loads(written.with_suffix(".json").read_text())["built_at"]

    loaded = load_model("text_rec", load_config(config).models["text_rec"])  # the daemon's load path
    try:
        assert loaded.engine.info.detail == f"optimized model {written}"
        x = np.full((1, 3, 48, 160), 0.5, np.float32)
        plain = create_engine("plain", need_models() / REC, "onnxruntime")
        name = plain.outputs[0].name
        np.testing.assert_allclose(
            loaded.engine.infer({"x": x})[name], plain.infer({"x": x})[name], atol=1e-5
        )
    finally:
        loaded.close()

    again = build_engine_cli(config)  # cache hit: nothing rebuilt
    assert again.returncode == 0 and Path(again.stdout.split("onnxruntime engine ")[-1].strip()) == written
    assert json.loads(written.with_suffix(".json").read_text())["built_at"] == built_at


def test_build_engine_names_a_bad_model_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "rec.onnx"
    bad.write_bytes((need_models() / REC).read_bytes()[:65536])  # truncated: a valid header, no model
    done = build_engine_cli(_config(tmp_path, bad))
    assert done.returncode == 78, done.stderr
    # The config check loads every model, so build-engine refuses it before building, with its location.
    assert "models.text_rec.path" in done.stderr and str(bad) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    unknown = build_engine_cli(_config(tmp_path, need_models() / REC), "--model", "nope")
    assert unknown.returncode == 78 and "no model 'nope'" in unknown.stderr


def test_open_engine_serves_at_once_then_starts_from_the_cache(model: Path, options: EngineOptions) -> None:
    from edged.infer.lifecycle import open_engine

    engine, build = open_engine("rec", model, "onnxruntime", options)
    assert engine.info.backend == "onnxruntime" and engine.info.detail == ""  # serving before any build
    assert build is not None and build.wait(60)
    swapped = build.poll()
    assert swapped is not None and swapped.info.detail.startswith("optimized model ")
    engine2, build2 = open_engine("rec", model, "onnxruntime", options)  # the next start
    assert build2 is None and engine2.info.detail == swapped.info.detail


def test_open_engine_with_an_unwritable_cache_serves_and_says_why(
    model: Path, tmp_path: Path, caplog
) -> None:
    from edged.infer.lifecycle import open_engine

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    opts = EngineOptions(providers=("CPUExecutionProvider",), cache_dir=blocker / "engines")
    with caplog.at_level("WARNING", logger="edged.infer.lifecycle"):
        engine, build = open_engine("rec", model, "onnxruntime", opts)
    assert build is None and engine.info.backend == "onnxruntime"
    assert (
        "engines cannot be cached (cannot create" in caplog.text
        and "make tensorrt.cache_dir writable" in caplog.text
    )


def test_strict_tensorrt_has_no_fallback(model: Path, options: EngineOptions) -> None:
    from edged.infer.lifecycle import open_engine

    with pytest.raises(ModelLoadError, match="backend 'tensorrt' is not available"):
        open_engine("rec", model, "tensorrt", options)


@pytest.mark.parametrize("how", ["SIGTERM", "cancel"])
def test_a_stopped_builder_records_nothing_and_the_next_start_builds(
    model: Path, options: EngineOptions, gated: GatedPrepare, how: str
) -> None:
    job = BuildJob("rec", model, "onnxruntime", options)
    build = BackgroundBuild(job, prepare_fn=gated).start()
    wait_for(lambda: build.status()["phase"] == "held by the test", what="the build to be running")
    if how == "SIGTERM":  # as systemd's stop sends to the whole service
        os.kill(build.pid or 0, signal.SIGTERM)
        assert build.wait(30)
    else:
        build.cancel()
    status = build.status()
    assert status["state"] == "failed" and status["reason"].startswith("stopped before it finished"), status
    assert EngineCache(options.cache_dir).failure(optimized_key(model)) is None
    gated.gate.touch()
    again = BackgroundBuild(job, prepare_fn=gated).start()
    assert again.wait(60) and again.status()["state"] == "ready" and len(gated.builds()) == 2


def test_a_running_daemon_loads_what_build_engine_wrote(tmp_path: Path) -> None:
    """`edged build-engine`, then `edged run` (real processes): the daemon's startup log names the very
    file build-engine wrote, and the camera's frames come through it."""
    from tests.support.broker import free_port
    from tests.support.edged import EdgedProcess, camera, small_sample, wait_until, write_config

    port = free_port()
    config = write_config(tmp_path, {"gate": camera(small_sample(tmp_path), fps=5)}, health_port=port)
    cfg = json.loads(config.read_text())
    cfg["models"]["text_det"]["onnxruntime"]["providers"] = ["CPUExecutionProvider"]
    cfg["models"]["text_det"]["tensorrt"] = {"cache_dir": str(tmp_path / "cache")}
    config.write_text(json.dumps(cfg))
    done = build_engine_cli(config)
    assert done.returncode == 0, done.stderr
    written = done.stdout.split("onnxruntime engine ")[-1].strip()
    assert Path(written).is_file() and Path(written).parent == tmp_path / "cache" / "PP-OCRv6_det_small"
    daemon = EdgedProcess(config)
    try:
        assert wait_until(lambda: len(daemon.events()) >= 2 or not daemon.alive, 60), daemon.text()
        assert daemon.alive, daemon.text()
        log = daemon.text()
        assert (
            "model text_det: backend onnxruntime on cpu (" in log and f"; optimized model {written})" in log
        )
    finally:
        assert daemon.stop() == 0


def test_two_model_files_of_the_same_name_keep_their_own_engines(tmp_path: Path) -> None:
    """`det/model.onnx` and `rec/model.onnx` share a cache folder; building one must not prune the other."""
    cache = EngineCache(tmp_path / "cache")
    paths = []
    for sub, name in (("a", REC), ("b", CLS)):
        model = tmp_path / sub / "model.onnx"
        model.parent.mkdir()
        shutil.copyfile(need_models() / name, model)
        paths.append(cache.build(optimized_key(model), lambda dest, m=model: optimize(m, dest)))
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)
    assert cache.changes_since(optimized_key(tmp_path / "a" / "model.onnx")) == []


def test_an_unwritable_cache_reports_the_failure_without_a_traceback(model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the cache dir would have to live inside a file: unwritable even for root
    opts = EngineOptions(providers=("CPUExecutionProvider",), cache_dir=blocker / "engines")
    build = BackgroundBuild(BuildJob("rec", model, "onnxruntime", opts)).start()
    assert build.wait(60)
    status = build.status()
    assert status["state"] == "failed" and str(blocker) in status["reason"], status
    assert status["reason"].startswith(("NotADirectoryError", "FileExistsError")), status
