"""Start-up in stages (issue 28, item 4), on a real `edged run` with the real PP-OCR models.

The health server answers before the models load (`/healthz` 200, `/readyz` 503 saying what loads or
warms), each model serves after its first warm shape, `READY=1` goes to systemd then, and the other
declared shapes are warmed between batches while the camera runs (`/readyz` 200 with `warming`, the
progress in /stats). The recognizer is set to `batching.warm_up: all`, so its 9 shapes are staged on
the CPU as they would be on a GPU backend. Times are printed, not asserted: scripts/bench_startup.py
measures them (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, NotifySocket, wait_until, warm_all_config


def get(port: int, path: str) -> tuple[int | None, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read()) if path != "/healthz" else r.read()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return None, None


def test_health_answers_first_ready_after_one_shape_per_model_rest_warmed_live(
    tmp_path: Path, notify: NotifySocket
) -> None:
    health = free_port()
    config = warm_all_config(tmp_path, "start", health)
    t0 = time.monotonic()
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    t_health = None
    before_ready: list[str] = []  # /readyz reasons seen while /healthz already answered
    try:
        while True:
            assert proc.alive and time.monotonic() - t0 < 90, proc.text()
            code, _ = get(health, "/healthz")
            if code == 200 and t_health is None:
                t_health = time.monotonic() - t0
            if t_health is None:
                time.sleep(0.01)
                continue
            code, body = get(health, "/readyz")
            if code == 200:
                t_ready = time.monotonic() - t0
                ready_body = body
                break
            assert code == 503, (code, body)
            before_ready += [r for r in body["reasons"] if r.startswith(("starting", "model"))]
            time.sleep(0.02)
        # Before ready, /readyz said what was still loading: the daemon starting, a model warming.
        assert before_ready, "no /readyz answer before the models were loaded"
        assert any(r.startswith("starting") or "warming" in r or "loading" in r for r in before_ready)
        lines = notify.lines()
        ready = [t for t, line in lines if line == "READY=1"]
        assert ready, lines
        # Ready while the recognizer's other shapes are still being warmed between batches.
        assert ready_body["warming"].get("text_rec"), ready_body
        log = proc.text()
        assert "model text_rec: every declared shape is warm" not in log.split("startup summary")[0]
        rec: dict[str, Any] = {}

        def warm_done() -> bool:
            rec.update(get(health, "/stats")[1]["models"]["text_rec"]["warm"])
            return bool(rec["finished"])

        assert wait_until(warm_done, 90), rec
        assert rec["done"] == rec["total"] == 9 and rec["every_shape"] and not rec["failed"], rec
        assert get(health, "/readyz")[1]["warming"] == {}
        assert "model text_rec: every declared shape is warm" in proc.text()
        t_warm = time.monotonic() - t0
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()
    # The camera's real size was learnt from its frames: the next start declares only it.
    learnt = json.loads((tmp_path / "state" / "source_sizes.json").read_text())
    assert learnt["gate"]["width"] == 320 and learnt["gate"]["height"] == 240, learnt
    again = EdgedProcess(config, tag="-2")
    try:
        assert wait_until(lambda: get(health, "/readyz")[0] == 200, 60), again.text()
        shapes = get(health, "/stats")[1]["models"]["text_det"]["shapes"]
        assert shapes == "rows [1, 2, 4] x sizes [320x256] = 3 shapes", shapes  # was 2 default sizes
        assert again.stop() == 0
    finally:
        again.kill()
    print(
        f"\n[start-up] /healthz {t_health:.2f} s after spawn, READY=1 {ready[0] - t0:.1f} s, /readyz 200 "
        f"{t_ready:.1f} s, all 9 recognizer shapes warm {t_warm:.1f} s (shared 2-core machine)"
    )
