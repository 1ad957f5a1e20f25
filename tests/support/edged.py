"""Helpers for tests that run `edged run` as a real subprocess (commands, reload, faults).

The camera setups are made cheap for 2-core CI: a 320x240 sample video, the real PP-OCR detector
limited to 320 px on one thread (about 70 ms a frame on a laptop core), and a few frames per second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.demo.sample import make_sample
from tests.support.paths import ROOT, need_models

# Length of each fault (broker down, source gone); EDGED_FAULT_SECONDS=60 for the full-length run.
FAULT_S = float(os.environ.get("EDGED_FAULT_SECONDS", "8"))


def small_sample(directory: Path, frames: int = 30, name: str = "plates.mp4") -> Path:
    path = directory / name
    if not path.exists():
        make_sample(path, frames=frames, size=(320, 240), fps=10)
    return path


def det_model() -> dict[str, Any]:
    return {
        "path": str(need_models() / "PP-OCRv6_det_small.onnx"),
        "kind": "ppocr_det",
        "preprocess": {"limit_side": 320, "limit_type": "max"},
        "onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1},
    }


OCR_CHAIN = [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}]


def write_ocr_config(
    tmp: Path,
    source: Path | str,
    *,
    broker_port: int,
    health_port: int,
    device: str = "test",
    mqtt: dict[str, Any] | None = None,
    **camera: Any,
) -> Path:
    """edged.yaml with the real PP-OCR det -> rec chain on one camera `gate`, publishing to a local broker."""
    models = need_models()
    cfg = {
        "device": {"name": device},
        "state_dir": str(tmp / "state"),
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "outbox": {"dir": str(tmp / "outbox")},
            **(mqtt or {}),
        },
        "health": {"port": health_port},
        "models": {
            "text_det": {"path": str(models / "PP-OCRv6_det_small.onnx"), "kind": "ppocr_det"},
            "text_rec": {"path": str(models / "PP-OCRv6_rec_small.onnx"), "kind": "ppocr_rec"},
        },
        "cameras": {
            "gate": {
                "source": source if isinstance(source, str) else f"file://{source}",
                **camera,
                "chain": OCR_CHAIN,
            }
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def camera(source: Path | str, fps: float = 5, chain: bool = True, **extra: Any) -> dict[str, Any]:
    cam: dict[str, Any] = {
        "source": source if isinstance(source, str) else f"file://{source}",
        "fps": fps,
        "loop": True,
        "realtime": True,
        "reconnect": {"min_s": 0.2, "max_s": 1.0},
        **extra,
    }
    if chain:
        cam["chain"] = [{"model": "text_det", "min_score": 0.5}]
    return cam


def write_config(
    tmp: Path,
    cameras: dict[str, dict[str, Any]],
    *,
    health_port: int,
    broker_port: int | None = None,
    commands: bool = False,
    name: str = "edged.yaml",
) -> Path:
    cfg: dict[str, Any] = {
        "device": {"name": "test"},
        "state_dir": str(tmp / "state"),
        "health": {"port": health_port},
        "models": {"text_det": det_model()},
        "cameras": cameras,
    }
    if broker_port is None:
        cfg["mqtt"] = {"enabled": False}
    else:
        cfg["mqtt"] = {
            "host": "127.0.0.1",
            "port": broker_port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "commands": commands,
            "outbox": {"dir": str(tmp / "outbox")},
        }
    path = tmp / name
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


class EdgedProcess:
    """`python -m edged run --stdout`: stdout (one JSON event per line) and stderr (the log) go to files."""

    def __init__(
        self,
        config: Path,
        *,
        env: dict[str, str] | None = None,
        tag: str = "",
        wrap: list[str] | None = None,
        module: list[str] | None = None,
    ) -> None:
        """`wrap`: a command that ends by exec'ing its arguments (e.g. a mount namespace), same pid.
        `module`: run `python -m <module...>` instead of `edged run` (a test entry point that wires a
        fault into the daemon, e.g. tests.support.hang_run); `--stdout --config FILE` follow either way."""
        self.config = config
        self.log = config.parent / f"edged{tag}.log"
        self.out = config.parent / f"events{tag}.jsonl"
        with self.log.open("wb") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(wrap or []),
                    sys.executable,
                    "-m",
                    *(module or ["edged", "run"]),
                    "--stdout",
                    "--config",
                    str(config),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                env={**os.environ, **(env or {})},
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """Every event the process produced, in order (the --stdout sink writes one before queueing it)."""
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):  # a line torn by SIGKILL
                out.append(json.loads(line))
        return out


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stats(port: int) -> dict[str, Any]:
    try:
        status, body = http_get(port, "/stats")
    except OSError:
        return {}
    return json.loads(body) if status == 200 else {}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def metric(port: int, name: str, labels: str = "") -> float | None:
    """One sample of /metrics, e.g. metric(p, "edged_frames_total", 'camera="a"'); None if absent."""
    try:
        _status, body = http_get(port, "/metrics")
    except OSError:
        return None
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and (m.group(2) or "") == (f"{{{labels}}}" if labels else ""):
            return float(m.group(3))
    return None


def up(port: int) -> bool:
    """The daemon has started: /healthz answers (it does from the first second) and /stats no longer
    says "starting" (models loaded, cameras started)."""
    try:
        if http_get(port, "/healthz")[0] != 200:
            return False
        status, body = http_get(port, "/stats")
    except OSError:
        return False
    return status == 200 and json.loads(body).get("state") != "starting"


def wait_until(pred: Callable[[], Any], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


class NotifySocket:
    """A real sd_notify socket (AF_UNIX datagram) that records each message with its arrival time."""

    def __init__(self) -> None:
        # sun_path is limited to 107 bytes and pytest's tmp_path can be longer: use a short folder.
        self.dir = Path(tempfile.mkdtemp(prefix="edn-"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace").split("\n")))

    def lines(self) -> list[tuple[float, str]]:
        """Every KEY=VALUE line received, in order, with its datagram's arrival time."""
        with self._lock:
            return [(t, line) for t, lines in self.messages for line in lines]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()


class SocketFlood:
    """`idle` connections that never send a byte and `loris` ones that send half a request, then one more
    header byte per socket every 0.1 s (re-opened when the server drops them): a slowloris."""

    def __init__(self, port: int, idle: int = 200, loris: int = 200) -> None:
        self.port = port
        self.idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(idle)]
        self.loris = [self._loris() for _ in range(loris)]
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _loris(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        return s

    def _dribble(self) -> None:
        while not self._stop.is_set():
            for i, s in enumerate(self.loris):
                try:
                    s.sendall(b"X")
                except OSError:
                    s.close()
                    self.loris[i] = self._loris()
                    self.reopened += 1
            self._stop.wait(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.idle + self.loris:
            s.close()

    def __enter__(self) -> SocketFlood:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe(port: int, path: str, timeout_s: float = 1.0) -> tuple[int, float]:
    """(status, seconds) of one GET with a probe's client timeout; raises on a timeout."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - t0
    finally:
        conn.close()


def repo_copy(tmp: Path) -> Path:
    """The tracked files of this checkout, with the models and a small sample video (demo.sh writes var/)."""
    dest = tmp / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in files.splitlines():
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    (dest / "models").symlink_to(need_models())
    small_sample(dest / "samples", frames=40)
    return dest


def wait_for(cond: Callable[[], bool], what: str) -> None:
    # Waits for a state the test set up to be reached; the deadline only guards against hanging forever.
    deadline = time.monotonic() + 10
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def warm_all_config(tmp: Path, device: str, health_port: int) -> Path:
    """The OCR chain (detector at 320 px, one ORT thread) on one looping small sample, with every declared
    shape warmed ("warm_up: all", 3 + 9 shapes: slow enough that start-up and stop tests can act while
    warm-ups run) and the engine cache in `tmp`: the config of the start-up and stop tests."""
    models = need_models()
    one_thread = {"intra_op_threads": 1, "inter_op_threads": 1}
    cfg = {
        "device": {"name": device},
        "state_dir": str(tmp / "state"),
        "mqtt": {"enabled": False},
        "health": {"port": health_port},
        "models": {
            "text_det": {
                "path": str(models / "PP-OCRv6_det_small.onnx"),
                "kind": "ppocr_det",
                "preprocess": {"limit_side": 320, "limit_type": "max"},
                "onnxruntime": one_thread,
                "tensorrt": {"cache_dir": str(tmp / "engines")},
            },
            "text_rec": {
                "path": str(models / "PP-OCRv6_rec_small.onnx"),
                "kind": "ppocr_rec",
                "onnxruntime": one_thread,
                "batching": {"warm_up": "all", "widths": [320, 640]},  # + 2048: 9 shapes
                "tensorrt": {"cache_dir": str(tmp / "engines")},
            },
        },
        "cameras": {
            "gate": {
                "source": f"file://{small_sample(tmp)}",
                "loop": True,
                "fps": 5,
                "chain": [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}],
            }
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path
