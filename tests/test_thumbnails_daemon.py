"""Thumbnails from a real `edged run` (sample video, real PP-OCR models) with per-track events: every
track event names its track's file, the health server serves it, and a restart keeps the files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np

from edged.infer.base import Engine
from edged.publish.event import event_schema
from tests.support.broker import free_port
from tests.support.chain import Camera, make_stage, reads_by_frame, serve
from tests.support.edged import EdgedProcess, http_get, small_sample, wait_until, write_ocr_config


def test_track_events_name_a_served_thumbnail_of_the_plate(
    tmp_path: Path, ocr_engines: dict[str, Engine]
) -> None:
    video = small_sample(tmp_path, frames=30)
    health = free_port()
    config = write_ocr_config(
        tmp_path,
        video,
        broker_port=free_port(),
        health_port=health,
        device="gate-01",
        mqtt={"enabled": False},
        fps=3,
        loop=True,  # each loop moves the plates back: their tracks end after max_age frames
        tracking={"enabled": True, "events": "tracks", "max_age": 2},
    )
    cfg = json.loads(config.read_text())
    cfg["models"]["text_det"]["preprocess"] = {"limit_side": 320, "limit_type": "max"}  # cheap on 2-core CI
    config.write_text(json.dumps(cfg))
    edged = EdgedProcess(config)
    try:
        assert wait_until(lambda: any(e.get("type") == "end" for e in edged.events()), 120), edged.text()[
            -3000:
        ]
        events = edged.events()
        assert all(e["schema"] == "edged.track/1" for e in events)
        named = [e for e in events if "thumbnail" in e]
        assert named and {e["type"] for e in named} >= {"new", "end"}, events
        for e in named:
            jsonschema.validate(e, event_schema("track"))
            assert e["thumbnail"] == f"gate-01:gate:{e['id'].split(':')[2]}:t{e['track_id']}.jpg"
        end = next(e for e in named if e["type"] == "end")
        assert wait_until(lambda: http_get(health, f"/events/{end['thumbnail']}")[0] == 200, 10)
        status, body = http_get(health, f"/events/{end['thumbnail']}")
        assert status == 200
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        # The plate crop: wider than tall, less than half the 320x240 frame's height (its width follows the
        # detector's box, whose exact extent varies with the machine's float kernels), and the real
        # PP-OCR chain reads from it the text the track's events report.
        h, w = img.shape[:2]
        assert w > 1.5 * h and h < 120 and w <= 320, img.shape
        track_reads = {
            k["label"] for e in events if e["track_id"] == end["track_id"]
            for k in e["detection"].get("children", {}).get("text_rec", [])
        }  # fmt: skip
        det, rec = serve("ppocr_det", ocr_engines["ppocr_det"]), serve("ppocr_rec", ocr_engines["ppocr_rec"])
        try:
            read = Camera("thumb", [make_stage("det", det), make_stage("rec", rec, on="det")]).run([img])
        finally:
            det.close()
            rec.close()
        thumb_reads = {r for _, rs in reads_by_frame(read) for r in rs}
        assert thumb_reads & track_reads, (thumb_reads, track_reads)
        metrics = http_get(health, "/metrics")[1].decode()
        assert 'edged_thumbnails_written_total{camera="gate"}' in metrics
    finally:
        rc = edged.stop()
    assert rc == 0 and "Traceback" not in edged.text()
    files = sorted(p.name for p in (tmp_path / "state" / "thumbnails").iterdir())
    assert end["thumbnail"] in files and not any(f.endswith(".tmp") for f in files)
