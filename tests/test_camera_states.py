"""A real `edged run` with a camera at 2 fps and one disabled in the config: the rates agree with each
other on every read (`processed_fps <= source_fps`, one window, one set of counters), and the disabled
camera stays listed as `disabled` in /stats, /readyz, /metrics and the systemd STATUS line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tests.support.broker import free_port
from tests.support.edged import (
    EdgedProcess,
    NotifySocket,
    camera,
    http_get,
    metric,
    small_sample,
    stats,
    wait_until,
    write_config,
)


def test_rates_agree_at_2_fps_and_a_disabled_camera_stays_listed(
    tmp_path: Path, notify: NotifySocket
) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(
        tmp_path,
        {"gate": camera(video, fps=2), "off": camera(video, fps=2, enabled=False)},
        health_port=health,
    )
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:

        def gate() -> dict[str, Any]:
            return dict(stats(health).get("cameras", {}).get("gate", {}))

        assert wait_until(lambda: gate().get("frames_processed", 0) >= 2, 60), proc.text()
        reads = []
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            g = gate()
            reads.append((g["processed_fps"], g["source_fps"]))
            time.sleep(0.25)
        assert all(p <= s for p, s in reads), reads
        processed, source = reads[-1]
        assert 1.0 <= source <= 2.5 and processed > 0.5, reads  # a 2 fps camera that keeps up, mostly

        cams = stats(health)["cameras"]
        assert cams["off"]["state"] == "disabled" and cams["off"]["disabled_by"] == "config", cams["off"]
        assert cams["off"]["processed_fps"] == cams["off"]["source_fps"] == 0.0
        code, body = http_get(health, "/readyz")
        ready = json.loads(body)
        assert code == 200 and ready["cameras"]["off"] == {
            "ok": True,
            "state": "disabled",
            "disabled_by": "config",
        }
        assert metric(health, "edged_camera_processed_fps", 'camera="off"') == 0.0
        line = re.compile(r"^STATUS=1 camera\(s\) gate:streaming:\S+fps off:disabled; broker mqtt off$")
        assert wait_until(lambda: any(line.match(x) for _, x in notify.lines()), 5), notify.lines()
        assert proc.stop() == 0
    finally:
        proc.kill()
