"""Faults of the daemon itself, on a real `edged run` subprocess (issue 12, items 3, 4, 6 and 7).

An emptied config is refused at start and on SIGHUP; a retained command message never acts; a camera
without frames is healed in-process while the systemd watchdog keeps being fed; a SIGHUP during start-up
is caught and applied after start. Real mosquitto, real sd_notify socket, real signals and HTTP.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from edged.config.schema import MqttConfig
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    EdgedProcess,
    NotifySocket,
    SocketFlood,
    camera,
    http_get,
    metric,
    probe,
    small_sample,
    up,
    wait_until,
    write_config,
)
from tests.support.paths import ROOT


def frames(health: int, cam: str) -> float:
    return metric(health, "edged_frames_total", f'camera="{cam}"') or 0.0


# --- item 3: a config without cameras -------------------------------------------------------------


def test_run_refuses_a_config_without_cameras_unless_opted_in(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "edged", "run", "--config", str(empty)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78, r.stderr
    assert f"{empty}: cameras: no cameras configured" in r.stderr
    assert "allow_no_cameras: true" in r.stderr and "Traceback" not in r.stderr

    health = free_port()
    dark = tmp_path / "dark.yaml"
    dark.write_text(
        json.dumps(
            {
                "mqtt": {"enabled": False},
                "health": {"port": health},
                "state_dir": str(tmp_path / "state"),
                "cameras": {},
                "allow_no_cameras": True,
            }
        )
    )
    proc = EdgedProcess(dark)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        assert http_get(health, "/readyz")[0] == 200  # dark on purpose: nothing is missing
        assert proc.stop() == 0
    finally:
        proc.kill()


def test_reload_to_no_cameras_keeps_the_running_config(tmp_path: Path, notify: NotifySocket) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5, chain=False)}, health_port=health)
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        assert wait_until(lambda: frames(health, "gate") >= 3, 60), proc.text()
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "cameras": {}}))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "no cameras configured" in proc.text(), 20), proc.text()
        assert "rejected, keeping the running one" in proc.text()
        before = frames(health, "gate")
        assert wait_until(lambda: frames(health, "gate") >= before + 3, 20), "the camera stopped"
        code, body = http_get(health, "/readyz")
        assert code == 200 and "gate" in json.loads(body)["cameras"]

        # Explicitly dark: the reload applies and the camera stops.
        config.write_text(json.dumps({**data, "cameras": {}, "allow_no_cameras": True}))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload: stopping camera gate" in proc.text(), 20), proc.text()
        assert wait_until(lambda: json.loads(http_get(health, "/readyz")[1])["cameras"] == {}, 20)
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()


# --- item 4: retained commands --------------------------------------------------------------------


def test_retained_command_is_ignored_live_one_acts(tmp_path: Path, mosquitto: Mosquitto) -> None:
    assert MqttConfig().commands is False  # commands stay off unless the config turns them on
    video = small_sample(tmp_path)
    health = free_port()
    cams = {"gate": camera(video, fps=4, chain=False)}
    config = write_config(tmp_path, cams, health_port=health, broker_port=mosquitto.port, commands=True)
    topic = "edged/test/gate/set/enabled"
    with Subscriber(mosquitto, ["edged/test/#"]) as sub:
        # An old order left on the broker: it would keep the camera off through every restart.
        sub.client.publish(topic, b"OFF", qos=1, retain=True).wait_for_publish(5)

        def state() -> bytes | None:
            msgs = sub.on("edged/test/gate/enabled")
            return msgs[-1].payload if msgs else None

        proc = EdgedProcess(config)
        try:
            line = f"MQTT command on {topic} ignored: it is a retained message"
            assert wait_until(lambda: line in proc.text(), 60), proc.text()
            assert f"mosquitto_pub -r -n -t '{topic}'" in proc.text()
            assert wait_until(lambda: state() == b"ON" and frames(health, "gate") >= 3, 30), proc.text()
            n = frames(health, "gate")
            assert wait_until(lambda: frames(health, "gate") > n, 10), "the retained OFF stopped the camera"
            # A live command still acts.
            sub.client.publish(topic, b"OFF", qos=1).wait_for_publish(5)
            assert wait_until(lambda: state() == b"OFF", 15), proc.text()
            assert proc.stop() == 0
        finally:
            proc.kill()
    log = proc.text()
    assert "Traceback" not in log and log.count("command: stopping camera gate") == 1


# --- item 6: a camera without frames is healed in-process, the watchdog keeps being fed ----------------


def test_dark_camera_is_reopened_in_process_and_the_watchdog_keeps_pinging(
    tmp_path: Path, notify: NotifySocket
) -> None:
    video_a = small_sample(tmp_path, name="a.mp4")
    video_b = small_sample(tmp_path, frames=20, name="b.mp4")  # a 2 s loop: the open file ends soon
    away = tmp_path / "b-away.mp4"
    health = free_port()
    cams = {
        "a": camera(video_a, fps=5, chain=False, frame_timeout_s=1.0),
        # With a chain: when b's frames return, its chain's last result is old only because b was dark.
        "b": camera(video_b, fps=5, chain=True, frame_timeout_s=1.0),
    }
    config = write_config(tmp_path, cams, health_port=health)
    interval = 0.5  # WATCHDOG_USEC=1 s: edged pings every half of it
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    proc = EdgedProcess(config, env=env)
    try:
        assert wait_until(lambda: frames(health, "a") >= 3 and frames(health, "b") >= 3, 60), proc.text()
        video_b.rename(away)
        assert wait_until(lambda: metric(health, "edged_camera_up", 'camera="b"') == 0, 15), proc.text()
        t_dark = time.monotonic()
        a_before = frames(health, "a")
        # Longer than the old stall verdict (max(2 x frame_timeout_s, 10 s)) that withheld the pings.
        time.sleep(12)
        code, body = http_get(health, "/readyz")
        detail = json.loads(body)
        assert code == 503 and detail["cameras"]["b"]["ok"] is False and detail["cameras"]["a"]["ok"]
        assert any(r.startswith("camera b: no frame for") for r in detail["reasons"]), detail
        assert not any("camera a" in r for r in detail["reasons"]), detail
        reopened = metric(health, "edged_source_reconnects_total", 'camera="b"') or 0
        assert reopened >= 2, "camera b was not being reopened"
        assert frames(health, "a") >= a_before + 30, "camera a did not keep running"
        away.rename(video_b)
        assert wait_until(lambda: metric(health, "edged_camera_up", 'camera="b"') == 1, 15), proc.text()
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 200, 15)
        t_end = time.monotonic()
        assert proc.stop() == 0
    finally:
        proc.kill()
    pings = [t for t, line in notify.lines() if line == "WATCHDOG=1"]
    during = [t for t in pings if t_dark <= t <= t_end]
    gaps = [b - a for a, b in itertools.pairwise(pings) if a >= t_dark and b <= t_end]
    print(
        f"\n[dark camera {t_end - t_dark:.1f} s] {len(during)} watchdog pings meanwhile, longest gap "
        f"{max(gaps):.2f} s; camera b reopened {reopened:g} times"
    )
    assert max(gaps) < 3 * interval, "watchdog pings were withheld for a camera without frames"
    log = proc.text()
    assert "withholding systemd watchdog pings" not in log and "Traceback" not in log


# --- item 7: signals during start-up ------------------------------------------------------------------

_SLOW_LIBS = ("onnxruntime", "cv2", "libopencv")  # loading these is the slow part of start-up


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_sighup_during_start_up_is_applied_after_start(tmp_path: Path, notify: NotifySocket) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5, chain=True)}, health_port=health)
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    t_spawn = time.monotonic()
    pid = proc.proc.pid
    slow_before_handler: list[str] = []
    try:
        # Poll as fast as possible; send SIGHUP the moment edged can take it. Each round reads the maps
        # first: a slow library mapped while SIGHUP is not yet caught is the bug (a SIGHUP then kills).
        while True:
            maps = Path(f"/proc/{pid}/maps").read_text()
            if _catches_sighup(pid):
                break
            slow_before_handler += [lib for lib in _SLOW_LIBS if lib in maps]
            assert proc.alive and time.monotonic() - t_spawn < 30, proc.text()
        t_handler = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert not slow_before_handler, f"loaded before the SIGHUP handler: {set(slow_before_handler)}"
        assert wait_until(lambda: "reload: done" in proc.text(), 60), proc.text()
        assert proc.alive
        lines = notify.lines()
        ready = [t for t, line in lines if line == "READY=1"]
        reloading = [t for t, line in lines if line == "RELOADING=1"]
        # Sent during start-up (before READY=1), applied after it.
        assert ready and reloading and t_handler < ready[0] < reloading[0], lines
        log = proc.text()
        assert log.index("startup summary") < log.index("reload: done")
        assert wait_until(lambda: frames(health, "gate") >= 3, 30), "the camera does not run after the reload"
        print(
            f"\n[start-up] SIGHUP handler in place {1000 * (t_handler - t_spawn):.0f} ms after spawn, "
            f"READY=1 after {ready[0] - t_spawn:.1f} s; the SIGHUP was applied after start"
        )
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()


def test_sigterm_during_start_up_stops_without_starting(tmp_path: Path) -> None:
    video = small_sample(tmp_path)
    config = write_config(tmp_path, {"gate": camera(video, fps=5)}, health_port=free_port())
    proc = EdgedProcess(config)
    try:
        while not _catches_sighup(proc.proc.pid):  # the three handlers are installed together
            assert proc.alive, proc.text()
        proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0, proc.text()
    finally:
        proc.kill()
    log = proc.text()
    assert "startup summary" not in log and "Traceback" not in log, log


# --- item 5: the health endpoint of a running daemon under a socket flood -------------------------------


def test_running_daemon_answers_probes_within_1s_under_200_idle_and_slowloris_sockets(tmp_path: Path) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5)}, health_port=health)
    proc = EdgedProcess(config)
    try:
        assert wait_until(lambda: up(health) and http_get(health, "/readyz")[0] == 200, 60), proc.text()
        with SocketFlood(health, idle=200, loris=200) as flood:
            results = []
            for i in range(36):
                results.append(probe(health, "/healthz" if i % 2 == 0 else "/readyz"))
                time.sleep(0.2)
            assert flood.reopened > 0
        assert [code for code, _ in results] == [200] * 36, results
        slowest = max(t for _, t in results)
        print(
            f"\n[edged run] 36 probes under 200 idle + 200 slowloris sockets: all 200, slowest {slowest * 1000:.0f} ms"
        )
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()
