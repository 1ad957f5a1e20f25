"""`edged doctor` as a real subprocess: the table on this machine, configs good and bad, a real broker
up, down and refusing credentials, and a machine with no inference backend at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.broker import Mosquitto, free_port
from tests.support.paths import ROOT, need_models

ROW = re.compile(r"^(  ok|info|warn|FAIL)  (\S.*?)\s{2,}(\S.*)$")


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run it; returns (exit code, {check name: (status, detail)}, full output)."""
    r = subprocess.run(
        [sys.executable, "-m", "edged", "doctor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    rows = {}
    for line in r.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(2).strip()] = (m.group(1).strip(), m.group(3))
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r.returncode, rows, r.stdout


def write_config(tmp: Path, port: int, **mqtt: object) -> Path:
    models = need_models()
    cfg = {
        "device": {"name": "doc"},
        "mqtt": {"host": "127.0.0.1", "port": port, "outbox": {"dir": str(tmp / "outbox")}, **mqtt},
        "models": {
            "text_det": {
                "path": str(models / "PP-OCRv6_det_small.onnx"),
                "kind": "ppocr_det",
                "tensorrt": {"cache_dir": str(tmp / "engines")},
            }
        },
        "cameras": {"gate": {"source": "file:///nonexistent.mp4", "chain": [{"model": "text_det"}]}},
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_plain_machine_table_and_exit_0() -> None:
    rc, rows, out = doctor()
    assert rc == 0, out
    for name in ("Python", "JetPack / L4T", "CUDA driver", "pycuda", "CUDA context (pycuda)", "TensorRT",
                 "jetson-utils", "OpenCV", "ONNX Runtime", "inference backend", "accelerations",
                 "device telemetry", "cameras", "disk", "systemd unit"):  # fmt: skip
        assert name in rows, f"{name} missing from:\n{out}"
    assert rows["inference backend"][0] == "ok" and "ONNX Runtime" in rows["inference backend"][1]
    assert out.rstrip().endswith("all required checks passed")
    # No FAIL for what a plain PC lacks: absent accelerations are info, and said so in one line.
    assert not [n for n, (st, _) in rows.items() if st == "FAIL"], out
    if not Path("/etc/nv_tegra_release").exists():
        assert rows["JetPack / L4T"] == ("info", "not a Jetson (no /etc/nv_tegra_release)")
        assert rows["device telemetry"][1].startswith("not a Jetson")
    if rows["CUDA driver"][0] != "ok":
        assert rows["accelerations"][0] == "info"
        assert "CUDA driver" in rows["accelerations"][1] and "CPU paths are used" in rows["accelerations"][1]
        assert rows["CUDA context (pycuda)"][0] in ("info", "warn")
    # A failed check prints its fix under it
    fixes = [ln for ln in out.splitlines() if ln.strip().startswith("fix:")]
    assert fixes, out


def test_good_config_with_the_broker_up(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rc, rows, out = doctor("--config", str(write_config(tmp_path, mosquitto.port)))
    assert rc == 0, out
    assert rows["config"][0] == "ok" and "1 model(s), 1 camera(s)" in rows["config"][1]
    assert rows["broker"] == ("ok", f"127.0.0.1:{mosquitto.port}: MQTT connect accepted"), out
    assert rows["outbox disk"][0] == "ok" and rows["engine cache disk"][0] == "ok"
    assert "disk" not in rows, "the default state dir is only checked without a config"
    # The doctor connects under its own client id: it never kicks a running edged off the broker.
    assert re.search(r"New client connected from .* as edged-doctor-\d+", mosquitto.log_tail(20000))


def test_broker_down_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    port = free_port()
    rc, rows, out = doctor("--config", str(write_config(tmp_path, port)))
    assert rc == 0, out
    status, detail = rows["broker"]
    assert status == "warn" and detail.startswith(f"127.0.0.1:{port}: ") and "refused" in detail.lower(), out
    assert "fix: check host/port/firewall; events wait in the outbox meanwhile" in out


def test_broker_refusing_the_credentials(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users={"edge": "right"}) as broker:
        cfg = write_config(tmp_path, broker.port, username="edge", password="wrong")
        rc, rows, out = doctor("--config", str(cfg))
    assert rc == 0, out
    status, detail = rows["broker"]
    assert status == "warn" and "refused:" in detail, out
    assert "Not authorized" in detail or "Bad user name or password" in detail
    assert "fix: check mqtt.username/password" in out


def test_invalid_config_fails_with_its_location(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("mqtt:\n  port: 99999\ncameras:\n  gate:\n    source: ftp://nowhere\n")
    rc, rows, out = doctor("--config", str(cfg))
    assert rc != 0, out
    status, detail = rows["config"]
    assert status == "FAIL" and detail.startswith(f"{cfg}:") and "(+1 more)" in detail, out
    assert f"fix: edged check-config {cfg}" in out
    assert out.rstrip().endswith("1 required check(s) failed")


def test_missing_config_file_fails(tmp_path: Path) -> None:
    rc, rows, out = doctor("--config", str(tmp_path / "nope.yaml"))
    assert rc != 0 and rows["config"][0] == "FAIL", out


def test_no_inference_backend_fails(tmp_path: Path) -> None:
    # Packages that shadow the real ones and fail to import, as on a machine where neither is installed.
    for pkg in ("onnxruntime", "tensorrt"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"raise ImportError('no {pkg} here')\n")
    rc, rows, out = doctor(env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert rc == 1, out
    assert (
        rows["inference backend"][0] == "FAIL"
        and "neither TensorRT nor ONNX Runtime" in rows["inference backend"][1]
    )
    assert rows["ONNX Runtime"][0] == "warn"
    assert "fix: pip install onnxruntime" in out
    assert out.rstrip().endswith("1 required check(s) failed")
