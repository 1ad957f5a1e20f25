"""Event thumbnails: best crop choice on real images, the JPEG files (cap, oldest first, restarts), the
bounded queue, per-track best crops and the MQTT thumbnail topic on a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edged.config.schema import ThumbnailsConfig
from edged.pipeline.tracker import IouTracker
from edged.publish.event import EventBuilder, event_schema
from edged.publish.thumbnails.store import ThumbnailStore
from edged.publish.thumbnails.thumbnailer import Thumbnailer, quality, topic_label
from edged.publish.tracks import TrackEventBuilder
from edged.types import Detection, Frame, FrameResult
from tests.support.broker import Mosquitto
from tests.support.clients import Subscriber, running_publisher


def plate(text: str = "AB 1234", scale: float = 1.0, blur: int = 0) -> np.ndarray:
    """A white plate with black text, `scale` times 200x60 px, optionally blurred (a moving car)."""
    w, h = int(200 * scale), int(60 * scale)
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(
        img, text, (int(8 * scale), int(42 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * scale, (0, 0, 0), 3
    )
    if blur:
        img = cv2.GaussianBlur(img, (blur, blur), 0)
    return img


def scene(plates: list[tuple[np.ndarray, int, int]], size: tuple[int, int] = (640, 480)) -> np.ndarray:
    img = np.full((size[1], size[0], 3), 90, np.uint8)
    for p, x, y in plates:
        img[y : y + p.shape[0], x : x + p.shape[1]] = p
    return img


def det(x: int, y: int, img: np.ndarray, label: str = "text", read: str = "AB 1234") -> Detection:
    d = Detection(label, 0.9, (x, y, x + img.shape[1], y + img.shape[0]))
    d.children["text_rec"] = [Detection(read, 0.95, d.box)]
    return d


def thumbnailer(tmp: Path, registry: CollectorRegistry | None = None, **cfg: Any) -> Thumbnailer:
    return Thumbnailer(
        ThumbnailsConfig(**cfg),
        tmp / "thumbs",
        registry or CollectorRegistry(),
        cameras=["gate"],
        prefix="edged/d",
    )


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


def test_quality_prefers_sharp_and_large_crops() -> None:
    assert quality(plate()) > quality(plate(blur=9))
    assert quality(plate(scale=2)) > quality(plate())
    assert quality(np.zeros((0, 0, 3), np.uint8)) == 0


def test_frame_event_names_the_crop_of_its_largest_detection_which_is_served(tmp_path: Path) -> None:
    big, small = plate("BIG 1", scale=1.2), plate("SMALL 2")
    frame = Frame("gate", 7, scene([(small, 20, 20), (big, 300, 300)]))
    result = FrameResult(frame, [det(20, 20, small, read="SMALL 2"), det(300, 300, big, read="BIG 1")])
    event = EventBuilder("dev", run_id="r1").build(result)
    t = thumbnailer(tmp_path)
    t.start()
    t.attach(event, result)
    t.stop()  # drains the queue
    assert event["thumbnail"] == "dev:gate:r1:7.jpg"
    jsonschema.validate(event, event_schema())
    img = decode(t.get(event["thumbnail"]) or b"")
    # The big plate (240x72) with a margin of 8 % of its width (19.2 px, rounded outwards) on every side.
    assert img.shape == (72 + 2 * 20, 240 + 2 * 20, 3), img.shape
    assert (tmp_path / "thumbs" / "dev:gate:r1:7.jpg").read_bytes() == t.get(event["thumbnail"])
    inner = img[20 : 20 + 72, 20 : 20 + 240].astype(int)
    assert np.abs(inner - big.astype(int)).mean() < 12


def test_rgb_frames_and_large_crops_are_scaled_to_max_side(tmp_path: Path) -> None:
    big = plate("WIDE 99", scale=4)  # 800x240
    frame = Frame("gate", 1, cv2.cvtColor(scene([(big, 0, 0)], (1000, 400)), cv2.COLOR_BGR2RGB), fmt="rgb8")
    frame.image[300:, :, 0] = 255  # red in RGB below the plate: must stay red in the JPEG
    result = FrameResult(frame, [Detection("text", 0.9, (0, 200, 1000, 400))])
    event: dict[str, Any] = {"id": "dev:gate:r:1"}
    t = thumbnailer(tmp_path, max_side=160)
    t.start()
    t.attach(event, result)
    t.stop()
    img = decode(t.get("dev:gate:r:1.jpg") or b"")
    assert max(img.shape[:2]) == 160
    b, g, r = img[-5, 80].astype(int)
    assert r > 200 and r - b > 120, (b, g, r)  # grey 90 with red at 255: swapped channels would fail


def test_full_queue_drops_and_counts_and_names_no_file(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    t = thumbnailer(tmp_path, registry, queue=1)  # not started: nothing takes from the queue
    img = plate()
    events = []
    for seq in range(3):
        frame = Frame("gate", seq, scene([(img, 10, 10)]))
        event: dict[str, Any] = {"id": f"dev:gate:r:{seq}"}
        t.attach(event, FrameResult(frame, [det(10, 10, img)]))
        events.append(event)
    assert [("thumbnail" in e) for e in events] == [True, False, False]
    assert registry.get_sample_value("edged_thumbnails_dropped_total", {"reason": "queue_full"}) == 2
    t.start()
    t.stop()
    assert t.get("dev:gate:r:0.jpg") is not None and t.get("dev:gate:r:1.jpg") is None
    assert registry.get_sample_value("edged_thumbnails_written_total", {"camera": "gate"}) == 1


def test_no_detections_no_thumbnail(tmp_path: Path) -> None:
    t = thumbnailer(tmp_path)
    event: dict[str, Any] = {"id": "dev:gate:r:0"}
    t.attach(event, FrameResult(Frame("gate", 0, scene([])), []))
    assert "thumbnail" not in event


def test_store_cap_deletes_oldest_first_counts_and_survives_restart(tmp_path: Path) -> None:
    deleted: list[int] = []
    store = ThumbnailStore(tmp_path, max_bytes=2500, on_delete=deleted.append)
    for i in range(5):
        store.put(f"d:c:r:{i}.jpg", bytes(1000))
    # 5000 bytes written under a 2500 cap: the three oldest went, in order.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d:c:r:3.jpg", "d:c:r:4.jpg"]
    assert sum(deleted) == 3 and store.total_bytes == 2000
    assert store.get("d:c:r:0.jpg") is None and store.get("d:c:r:4.jpg") == bytes(1000)
    store.put("d:c:r:3.jpg", bytes(1200))  # a track's better crop: replaced, and now the newest
    store.put("d:c:r:5.jpg", bytes(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d:c:r:3.jpg", "d:c:r:5.jpg"]
    (tmp_path / "d:c:r:6.jpg.tmp").write_bytes(b"half")  # a write cut short by a crash
    again = ThumbnailStore(tmp_path, max_bytes=2500)
    assert again.total_bytes == 2200 and again.get("d:c:r:5.jpg") == bytes(1000)
    assert not (tmp_path / "d:c:r:6.jpg.tmp").exists()


@pytest.mark.parametrize(
    "name", ["../x.jpg", "..jpg", ".hidden.jpg", "a/b.jpg", "/etc/passwd", "x.png", "a..b.jpg", "", "x" * 300]
)
def test_store_refuses_names_outside_its_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "x.jpg").write_bytes(b"secret")
    store = ThumbnailStore(tmp_path / "store", max_bytes=10_000)
    assert store.get(name) is None
    with pytest.raises(ValueError):
        store.put(name, b"x")


def test_track_keeps_its_sharpest_largest_crop_in_one_file(tmp_path: Path) -> None:
    tracker, builder = IouTracker(max_age=1), TrackEventBuilder("dev", run_id="r1")
    t = thumbnailer(tmp_path)
    t.start()
    # The car approaches: the plate grows and is blurred (motion) except in frame 2.
    frames = [(plate(scale=1.0, blur=9), "AB 1234"), (plate(scale=1.1, blur=9), "AB 1234"),
              (plate(scale=1.2), "AB 1235"), (plate(scale=1.25, blur=15), "AB 1235")]  # fmt: skip
    events: list[dict[str, Any]] = []
    best_image = None
    for seq, (img, read) in enumerate([*frames, (None, "")]):
        dets = [det(100, 100, img, read=read)] if img is not None else []
        upd = tracker.update(dets, seq)
        result = FrameResult(
            Frame("gate", seq, scene([(img, 100, 100)] if img is not None else [])), dets, {}, upd
        )
        t.observe(result)
        for event in builder.build(result):
            t.attach_track(event)
            events.append(event)
        if seq == 2:
            best_image = img
    t.stop()
    assert [e["type"] for e in events] == ["new", "update", "end"]
    assert {e["thumbnail"] for e in events} == {"dev:gate:r1:t1.jpg"}
    for e in events:
        jsonschema.validate(e, event_schema("track"))
    img = decode(t.get("dev:gate:r1:t1.jpg") or b"")
    assert best_image is not None
    # The file holds frame 2's sharp plate (240x72 + margin), not the later, larger but blurred one.
    assert abs(img.shape[1] - best_image.shape[1]) <= 45, img.shape
    assert quality(img) > 0.5 * quality(best_image)


def test_thumbnails_are_published_retained_and_size_capped(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with (
        running_publisher(mosquitto, tmp_path / "outbox", prefix="edged/d") as pub,
        Subscriber(mosquitto, "edged/d/+/+/thumbnail") as sub,
    ):
        assert sub.wait_for(lambda _: pub.connected)
        registry = CollectorRegistry()
        cfg = ThumbnailsConfig(publish=True, publish_max_bytes=16384, quality=95)
        t = Thumbnailer(
            cfg,
            tmp_path / "thumbs",
            registry,
            cameras=["gate"],
            prefix="edged/d",
            publish=lambda topic, data: pub.publish_raw(topic, data, retain=True) is not None,
        )
        t.start()
        small, noisy = plate(), np.random.default_rng(1).integers(0, 255, (300, 300, 3), np.uint8)
        for seq, (img, label) in enumerate([(small, "text"), (noisy, "car/+#")]):
            event: dict[str, Any] = {"id": f"d:gate:r:{seq}"}
            t.attach(
                event, FrameResult(Frame("gate", seq, scene([(img, 0, 0)])), [det(0, 0, img, label=label)])
            )
        t.stop()
        assert sub.wait_for(lambda m: len(m) >= 1)
        msg = sub.messages[0]
        assert msg.topic == "edged/d/gate/text/thumbnail" and msg.payload == t.get("d:gate:r:0.jpg")
        decode(msg.payload)
        # The noisy crop encodes far above 16 KB: on disk, not published.
        assert len(t.get("d:gate:r:1.jpg") or b"") > 16384
        assert registry.get_sample_value("edged_thumbnails_published_total", {"camera": "gate"}) == 1
    with Subscriber(mosquitto, "edged/d/+/+/thumbnail") as late:  # retained: a late subscriber gets it
        assert late.wait_for(lambda m: len(m) >= 1) and late.messages[0].retain
    assert topic_label("car/+#") == "car___"


def test_metrics_label_sets_exist_from_the_start(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    thumbnailer(tmp_path, registry)
    for reason in ("queue_full", "no_host_image", "error"):
        assert registry.get_sample_value("edged_thumbnails_dropped_total", {"reason": reason}) == 0
    assert registry.get_sample_value("edged_thumbnails_written_total", {"camera": "gate"}) == 0
    assert registry.get_sample_value("edged_thumbnails_bytes") == 0
    assert registry.get_sample_value("edged_thumbnails_deleted_total") == 0


def test_track_crops_come_from_the_frame_even_when_the_tracker_ran_ahead(tmp_path: Path) -> None:
    """Pipelined chains track frame N+1 before frame N reaches the sink: the crop must still be cut
    from frame N's detection, not from the track's newer one (which lies elsewhere in frame N)."""
    tracker = IouTracker(max_age=1)
    t = thumbnailer(tmp_path)
    sharp, blurred = plate(scale=1.3), plate(scale=1.0, blur=15)
    results = []
    for seq, (img, x) in enumerate([(sharp, 100), (blurred, 110)]):
        dets = [det(x, 100, img)]
        results.append(
            FrameResult(Frame("gate", seq, scene([(img, x, 100)])), dets, {}, tracker.update(dets, seq))
        )
    for r in results:  # both frames tracked before either reaches the sink
        t.observe(r)
    event = {"id": "dev:gate:r1:t1:end:2", "type": "end", "camera": "gate", "track_id": 1}
    t.start()
    t.attach_track(event)
    t.stop()
    img = decode(t.get(event["thumbnail"]) or b"")
    assert abs(img.shape[1] - 260 * 1.16) <= 6, img.shape  # frame 0's sharp 260 px plate plus margins
    assert quality(img) > quality(blurred)
