"""Damaged engine-cache entries and models that cannot load (issue 27, item 2), on real processes.

SD cards and power cuts truncate, empty or overwrite files. The engine cache records each entry's size
and SHA-256 when it publishes it and verifies them before use; a damaged entry (or one its backend
fails to load) is moved to `quarantine/` with one WARNING, the shipped model serves at once, and the
background builder writes a good entry again. `edged build-engine` verifies and repairs. A model that
cannot load at all makes the daemon not ready, and withholds the watchdog's pings only when a restart
could help (a machine state such as GPU memory), never for a bad file a restart cannot fix.

Real `edged run` and `edged build-engine` subprocesses, the real PP-OCR models, ONNX Runtime's real
offline-optimized models in a real cache, real HTTP and a real sd_notify socket.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edged.infer.engine_cache import file_sha256
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, NotifySocket, http_get, metric, small_sample, wait_until
from tests.support.paths import ROOT, need_models

MODELS = {  # name -> (file, kind)
    "text_det": ("PP-OCRv6_det_small.onnx", "ppocr_det"),
    "text_cls": ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", "ppocr_cls"),
    "text_rec": ("PP-OCRv6_rec_small.onnx", "ppocr_rec"),
}


def ocr_config(tmp: Path, health: int, files: dict[str, Path] | None = None) -> Path:
    """det -> cls, rec on one camera; `files`: other model files by model name."""
    src = need_models()
    one_thread = {"intra_op_threads": 1, "inter_op_threads": 1}
    files = files or {}
    cfg = {
        "device": {"name": "cache"},
        "state_dir": str(tmp / "state"),
        "mqtt": {"enabled": False},
        "health": {"port": health},
        "models": {
            name: {
                "path": str(files.get(name, src / file)),
                "kind": kind,
                "onnxruntime": one_thread,
                "tensorrt": {"cache_dir": str(tmp / "engines")},
                **({"preprocess": {"limit_side": 320, "limit_type": "max"}} if kind == "ppocr_det" else {}),
            }
            for name, (file, kind) in MODELS.items()
        },
        "cameras": {
            "gate": {
                "source": f"file://{small_sample(tmp)}",
                "loop": True,
                "fps": 5,
                "chain": [
                    {"model": "text_det", "min_score": 0.5},
                    {"model": "text_cls", "on": "text_det"},
                    {"model": "text_rec", "on": "text_det"},
                ],
            }
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def build_engine(config: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "edged", "build-engine", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout + r.stderr


def entry(tmp: Path, model_file: str) -> Path:
    (path,) = (tmp / "engines" / Path(model_file).stem).glob("onnxruntime-*.onnx")
    return path


def intact(path: Path) -> bool:
    record = json.loads(path.with_suffix(".json").read_text())["file"]
    return path.is_file() and path.stat().st_size == record["size"] and file_sha256(path) == record["sha256"]


def damage(tmp: Path) -> dict[str, Path]:
    """Truncate the detector's entry, empty the classifier's, overwrite the recognizer's with garbage of
    the same size (only the checksum tells that one)."""
    det, cls, rec = (entry(tmp, f) for f, _ in MODELS.values())
    with det.open("r+b") as f:
        f.truncate(det.stat().st_size // 3)
    cls.write_bytes(b"")
    rec.write_bytes(os.urandom(rec.stat().st_size))
    return {"text_det": det, "text_cls": cls, "text_rec": rec}


def test_truncated_empty_and_garbage_entries_are_quarantined_served_and_rebuilt(tmp_path: Path) -> None:
    health = free_port()
    config = ocr_config(tmp_path, health)
    out = build_engine(config)
    assert out.count(" (built): ") == 3, out
    entries = damage(tmp_path)
    assert not any(intact(p) for p in entries.values())

    proc = EdgedProcess(config)
    t0 = time.monotonic()
    try:
        assert wait_until(lambda: (metric(health, "edged_frames_total", 'camera="gate"') or 0) >= 3, 60), (
            proc.text()
        )
        running_s = time.monotonic() - t0
        # Each model's entry rebuilt by the background builder and swapped in.
        assert wait_until(
            lambda: (
                all(p.is_file() and intact(p) for p in entries.values())
                and proc.text().count("now serving on") >= 3
            ),
            90,
        ), proc.text()
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 200, 30), proc.text()
        assert proc.stop() == 0
    finally:
        proc.kill()
    log = proc.text()
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 3 and all("engine cache:" in w and "is damaged" in w for w in warnings), warnings
    assert " ERROR " not in log and "Traceback" not in log, log
    for name, path in entries.items():
        assert (path.parent / "quarantine" / path.name).is_file(), name
        assert f"model {name}: onnxruntime engine ready" in log
    why = {
        n: json.loads((p.parent / "quarantine" / f"{p.name}.why").read_text())["reason"]
        for n, p in entries.items()
    }
    assert "truncated" in why["text_det"] and "0 bytes" in why["text_cls"], why
    assert "SHA-256" in why["text_rec"], why
    print(f"\n[damaged cache] cameras ran {running_s:.1f} s after spawn; the 3 entries were rebuilt")

    # The rebuilt cache is good: build-engine verifies it without building.
    assert build_engine(config).count(" (verified): ") == 3


def test_build_engine_repairs_damage_and_entries_that_do_not_load(tmp_path: Path) -> None:
    config = ocr_config(tmp_path, free_port())
    build_engine(config)
    entries = damage(tmp_path)
    # An entry whose record matches its bytes but which its backend cannot load (e.g. copied in from
    # elsewhere): only the load check finds it.
    rec = entries["text_rec"]
    meta = json.loads(rec.with_suffix(".json").read_text())
    meta["file"] = {"size": rec.stat().st_size, "sha256": file_sha256(rec)}
    rec.with_suffix(".json").write_text(json.dumps(meta))
    out = build_engine(config)
    assert out.count(" (repaired: ") == 3, out
    assert "does not load" in out or "cannot load" in out, out
    assert all(intact(p) for p in entries.values())
    assert build_engine(config).count(" (verified): ") == 3


def watchdog_pings(notify: NotifySocket, since: float) -> list[float]:
    return [t for t, line in notify.lines() if line == "WATCHDOG=1" and t >= since]


def test_a_model_that_cannot_load_is_not_ready_and_the_watchdog_pings_on_when_a_restart_cannot_help(
    tmp_path: Path, notify: NotifySocket
) -> None:
    health = free_port()
    src = need_models()
    bad = tmp_path / "models" / "rec.onnx"
    bad.parent.mkdir()
    # A loadable ONNX file that is not a recognizer (the classifier: no character set, another output):
    # `edged run` accepts the config, the model fails at load. No restart fixes that.
    bad.write_bytes((src / MODELS["text_cls"][0]).read_bytes())
    config = ocr_config(tmp_path, health, {"text_rec": bad})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    proc = EdgedProcess(config, env=env)
    try:
        assert wait_until(lambda: "startup summary" in proc.text() or not proc.alive, 60), proc.text()
        assert proc.alive, proc.text()
        t_up = time.monotonic()
        time.sleep(3)
        code, body = http_get(health, "/readyz")
        reasons = json.loads(body)["reasons"]
        assert code == 503, body
        assert any(r.startswith("model text_rec: not loaded:") and "will not help" in r for r in reasons), (
            reasons
        )
        stats = json.loads(http_get(health, "/stats")[1])["models"]["text_rec"]
        assert stats["state"] == "failed" and stats["restart_may_help"] is False, stats
        # The broken file replaced by a good one: SIGHUP loads it and starts the camera.
        bad.write_bytes((src / MODELS["text_rec"][0]).read_bytes())
        proc.send_signal(1)  # SIGHUP
        assert wait_until(lambda: (metric(health, "edged_frames_total", 'camera="gate"') or 0) >= 2, 60), (
            proc.text()
        )
        t_end = time.monotonic()
        assert proc.stop() == 0
    finally:
        proc.kill()
    pings = watchdog_pings(notify, t_up)
    gaps = [b - a for a, b in itertools.pairwise(pings) if b <= t_end]
    assert pings and max(gaps) < 1.5, f"the watchdog stopped for a model a restart cannot fix: {gaps}"
    log = proc.text()
    assert "withholding systemd watchdog pings" not in log and "Traceback" not in log, log
    assert "A restart will not help" in log and "reload: starting camera gate (its models loaded)" in log


def test_a_model_that_failed_for_a_machine_state_stops_the_watchdog(
    tmp_path: Path, notify: NotifySocket
) -> None:
    health = free_port()
    config = ocr_config(tmp_path, health)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    # The CUDA out-of-memory error cannot happen here (no GPU): tests.support.fail_run injects it.
    proc = EdgedProcess(config, env=env, module=["tests.support.fail_run", "--model", "text_cls"])
    try:
        assert wait_until(lambda: "withholding systemd watchdog pings" in proc.text(), 60), proc.text()
        code, body = http_get(health, "/readyz")
        reasons = json.loads(body)["reasons"]
        assert code == 503 and any("text_cls" in r and "restart may help" in r for r in reasons), reasons
        t_stalled = time.monotonic()
        time.sleep(2)
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert not watchdog_pings(notify, t_stalled + 0.1), "pings went on for a model a restart may load"
    log = proc.text()
    assert "model loading: model text_cls could not be loaded" in log, log
    assert "Traceback" not in log, log
