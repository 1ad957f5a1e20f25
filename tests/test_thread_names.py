"""`edged run` with 8 cameras (a real subprocess, the real PP-OCR models, a real mosquitto, a real sd_notify
socket): every thread the OS lists for the process (/proc/<pid>/task/*/comm, what top -H, ps -L and
py-spy show) is named by its role, and /stats lists the Python ones under the same names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, free_port
from tests.support.edged import (
    OCR_CHAIN,
    EdgedProcess,
    NotifySocket,
    camera,
    det_model,
    small_sample,
    stats,
    up,
    wait_until,
)
from tests.support.paths import need_models

CAMERAS = [f"cam{i}" for i in range(8)]
# <role>[:<owner>], the roles of docs/operations.md ("Threads").
ROLE = re.compile(
    r"^(cap|stuck|watch|disp|deliv|outbox|mqtt|http|post|wdog|stats|thumbs|build|srv|dec|adopt|load)(:\S+)?$"
)
EXPECTED = {
    *(f"cap:{c}" for c in CAMERAS),
    "watch:cams",
    "disp",
    *(f"{role}:{model}" for role in ("srv", "dec") for model in ("text_det", "text_rec")),
    "deliv:0",
    "outbox:io",
    "mqtt:send",
    "mqtt:net",
    "http",
    "http:0",
    "wdog",
    "stats",
    "thumbs",
}


def os_name(name: str) -> str:
    return name.encode()[:15].decode(errors="ignore")  # the kernel keeps 15 bytes


def import_threads() -> int:
    """Native threads the libraries start on the main thread at import (OpenBLAS's pool with numpy,
    OpenCV's, ONNX Runtime's): they carry the main thread's name, and no Python code can name them."""
    code = (
        "import os, numpy, cv2, onnxruntime, av, paho.mqtt.client\n"
        "print(len(os.listdir('/proc/self/task')) - 1)"
    )
    return int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def task_names(pid: int) -> dict[int, str]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:  # a thread that just ended
            continue
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names in /proc: Linux")
def test_every_thread_of_edged_run_with_8_cameras_has_a_role_name(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = small_sample(tmp_path)
    health = free_port()
    rec = {**det_model(), "path": str(need_models() / "PP-OCRv6_rec_small.onnx"), "kind": "ppocr_rec"}
    rec.pop("preprocess")
    cfg = {
        "device": {"name": "threads"},
        "state_dir": str(tmp_path / "state"),
        "health": {"port": health},
        "models": {"text_det": det_model(), "text_rec": rec},
        "cameras": {c: {**camera(src, fps=2, chain=False), "chain": OCR_CHAIN} for c in CAMERAS},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "commands": True,
            "hass": {"enabled": True},
            "stats_interval_s": 1,
            "outbox": {"dir": str(tmp_path / "outbox")},
        },
    }
    path = tmp_path / "edged.yaml"
    path.write_text(json.dumps(cfg))
    notify = NotifySocket()  # so the systemd watchdog thread runs too
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    proc = EdgedProcess(path, env=env)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()

        def every_camera_delivered() -> bool:
            cams = stats(health).get("cameras", {})
            return all(cams.get(c, {}).get("frames_processed", 0) >= 1 for c in CAMERAS)

        assert wait_until(every_camera_delivered, 60), proc.text()
        python = {r["tid"]: r["name"] for r in stats(health)["threads"]}
        tasks = task_names(proc.proc.pid)
    finally:
        proc.stop()
        notify.close()

    pid = proc.proc.pid
    main_name = tasks[pid]  # the process's name (`python`, or `edged` under systemd): never renamed,
    # since ps, pgrep, killall and the journal name the process by it
    assert python.get(pid) == "MainThread"
    names = {n for t, n in python.items() if t != pid}
    assert names >= EXPECTED, f"missing: {sorted(EXPECTED - names)}"
    wrong = sorted(n for n in names if not ROLE.match(n))
    assert not wrong, f"Python threads without a role name: {wrong}"
    unnamed = sorted(
        f"{n} (OS: {tasks[t]})"
        for t, n in python.items()
        if t in tasks and t != pid and tasks[t] != os_name(n)
    )
    assert not unnamed, f"Python threads the OS knows by another name: {unnamed}"

    capture = {os_name(f"cap:{c}") for c in CAMERAS}
    native = [n for t, n in tasks.items() if t not in python]
    left = [
        n
        for n in native
        # FFmpeg names its frame threads av:<codec>:df<n>; its other workers (libavcodec's slice
        # threads, libswscale's) are started by the camera's capture thread and inherit its name.
        if not n.startswith("av:") and n not in capture
    ]
    # What remains: the libraries' import-time threads under the main thread's name (ONNX Runtime's
    # intra-op pool would join them: 1 thread per session in this config, so none), and nothing else.
    assert all(n == main_name for n in left), f"native threads without a role name: {sorted(left)}"
    assert len(left) <= import_threads(), f"{len(left)} native threads named like the process"
    assert not any(n.startswith("Thread-") for n in tasks.values())
    print(
        f"\n[threads] {len(tasks)} in all: {len(python)} Python, {len(native)} native ({len(left)} at import)"
    )
