"""MQTT publishing against a real mosquitto: order, status/last will, outages, restarts, commands.

EDGED_FAULT_SECONDS (default 5) sets how long the broker stays down in the outage test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edged.config.schema import MqttConfig, OutboxConfig
from edged.publish.event import EventBuilder, event_schema
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.outbox.store import Outbox
from edged.publish.stdout import StdoutSink
from edged.types import Detection, Frame, FrameResult
from tests.support.broker import Mosquitto
from tests.support.clients import Message, PublisherFactory, Subscriber

FAULT_S = float(os.environ.get("EDGED_FAULT_SECONDS", "5"))
PREFIX = "edged/test-dev"
REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def mqtt_cfg(broker: Mosquitto, outbox_dir: Path, **kw: Any) -> MqttConfig:
    return MqttConfig(
        host=broker.host,
        port=broker.port,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        keepalive_s=5,
        outbox=OutboxConfig(dir=outbox_dir, fsync="never", replay_rate=kw.pop("replay_rate", 1000.0)),
        **kw,
    )


def make_result(camera: str, seq: int, n_det: int = 1) -> FrameResult:
    img = np.zeros((48, 64, 3), np.uint8)
    dets = [
        Detection(
            "plate",
            0.9,
            (1.0, 2.0, 30.0, 12.0),
            class_id=0,
            children={"text_rec": [Detection(f"AB{seq}", 0.8, (1.0, 2.0, 30.0, 12.0))]},
        )
        for _ in range(n_det)
    ]
    return FrameResult(Frame(camera, seq, img), dets, {"text_det": 3.2, "text_rec": 1.1})


@pytest.fixture
def publisher_factory(tmp_path: Path) -> Iterator[Any]:
    with PublisherFactory() as factory:

        def make(
            broker: Mosquitto, outbox_dir: Path | None = None, **kw: Any
        ) -> tuple[MqttPublisher, Outbox]:
            return factory.make(mqtt_cfg(broker, outbox_dir or tmp_path / "outbox", **kw), "test-dev", PREFIX)

        yield make


def wait_state(pub: MqttPublisher, state: str, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while pub.state != state and time.monotonic() < deadline:
        time.sleep(0.02)
    return pub.state == state


def events_of(msgs: list[Message], camera: str | None = None) -> list[dict[str, Any]]:
    out = [json.loads(m.payload) for m in msgs if m.topic.endswith("/detections")]
    return [e for e in out if camera is None or e["camera"] == camera]


def unique_ids(msgs: list[Message]) -> set[str]:
    return {e["id"] for e in events_of(msgs)}


def test_events_validate_against_schema() -> None:
    builder = EventBuilder("dev-1", run_id="r1")
    ev = builder.build(make_result("gate", 7, n_det=2))
    jsonschema.Draft202012Validator.check_schema(event_schema())
    jsonschema.validate(ev, event_schema())
    assert ev["id"] == "dev-1:gate:r1:7"
    assert ev["detections"][0]["children"]["text_rec"][0]["label"] == "AB7"
    missing_box = dict(ev, detections=[{"label": "x", "score": 0.5}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(missing_box, event_schema())
    assert ev["latency_ms"]["text_det"] == 3.2 and ev["latency_ms"]["total"] >= 0
    assert ev["captured_at"].endswith("Z") and len(ev["captured_at"]) == 24
    assert "published_at" not in ev
    # Replays send the stored payload, so the id is the one built; a new run gives new ids.
    assert EventBuilder("dev-1", run_id="r2").build(make_result("gate", 7))["id"] != ev["id"]
    # A camera that restarts its numbering gets a new epoch instead of repeating ids.
    assert builder.build(make_result("gate", 0))["id"] == "dev-1:gate:r1.1:0"
    bad = dict(ev, detections=[{"label": "x", "score": 2.0, "box": [0, 0, 1, 1]}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, event_schema())


def test_stdout_sink_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with path.open("w") as f:
        sink = StdoutSink(f)
        for i in range(3):
            sink.publish("gate", {"id": str(i)})
        assert path.read_text().count("\n") == 3  # flushed per event, not at close
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["0", "1", "2"]


def test_events_arrive_in_order_with_status(mosquitto: Mosquitto, publisher_factory: Any) -> None:
    with Subscriber(mosquitto, "edged/#") as sub:
        pub, box = publisher_factory(mosquitto)
        pub.start()
        assert sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms)), "no online status"
        builder = EventBuilder("test-dev")
        for seq in range(40):
            for cam in ("gate", "yard"):
                ev = builder.build(make_result(cam, seq))
                pub.publish(cam, ev)
        assert sub.wait_for(lambda ms: len(unique_ids(ms)) == 80), f"got {len(unique_ids(sub.messages))}/80"
        for cam in ("gate", "yard"):
            got = events_of(sub.messages, cam)
            assert [e["seq"] for e in got] == list(range(40))
            assert {m.qos for m in sub.messages if m.topic == f"{PREFIX}/{cam}/detections"} == {1}
            jsonschema.validate(got[0], event_schema())
        assert pub.wait_drained(5.0) and box.depth == 0
        assert pub.metrics.registry.get_sample_value("edged_mqtt_published_total") == 80
        assert pub.metrics.registry.get_sample_value("edged_events_total", {"camera": "gate"}) == 40
        pub.stop()
        assert sub.wait_for(lambda ms: ms[-1].payload == b"offline")
    # Both status values are retained: a late subscriber learns the device is offline.
    with Subscriber(mosquitto, f"{PREFIX}/status") as late:
        assert late.wait_for(lambda ms: len(ms) == 1)
        assert late.messages[0].payload == b"offline" and late.messages[0].retain


def test_an_event_paho_refuses_is_dropped_counted_and_the_rest_go_on(
    mosquitto: Mosquitto, publisher_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic paho's publish raises ValueError for (a wildcard in it) cannot succeed on retry: it is
    logged with its topic, counted as dropped for reason "refused" (metrics and /stats' outbox_dropped),
    and the events after it are delivered, in order."""
    with Subscriber(mosquitto, f"{PREFIX}/+/detections") as sub:
        pub, box = publisher_factory(mosquitto)
        pub.start()
        assert wait_state(pub, "connected")
        with caplog.at_level(logging.ERROR, logger="edged.publish.mqtt.publisher"):
            pub.publish("gate", {"id": "before", "camera": "gate"})
            pub.publish("ga+te", {"id": "refused", "camera": "ga+te"})
            pub.publish("gate", {"id": "after", "camera": "gate"})
            assert sub.wait_for(lambda ms: len(unique_ids(ms)) >= 2, 10), sub.messages
            assert pub.wait_drained(5.0) and box.depth == 0
        assert [e["id"] for e in events_of(sub.messages)] == ["before", "after"]
        assert box.dropped["refused"] == 1 and box.status()["outbox_dropped"]["refused"] == 1
        reg = pub.metrics.registry
        assert reg.get_sample_value("edged_outbox_dropped_total", {"reason": "refused"}) == 1
        assert reg.get_sample_value("edged_mqtt_published_total") == 2
        assert any(
            "cannot be published" in r.getMessage() and f"{PREFIX}/ga+te/detections" in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        pub.stop()


def test_last_will_when_the_process_is_killed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from edged.config.schema import MqttConfig, OutboxConfig
        from edged.observability.metrics import Metrics
        from edged.publish.mqtt.publisher import MqttPublisher
        from edged.publish.outbox.store import Outbox
        cfg = MqttConfig(host="{mosquitto.host}", port={mosquitto.port},
                         outbox=OutboxConfig(dir="{tmp_path}/ob"))
        m = Metrics()
        MqttPublisher(cfg, "test-dev", "{PREFIX}", Outbox(cfg.outbox, m), m).start()
        time.sleep(120)
    """)
    with Subscriber(mosquitto, f"{PREFIX}/status") as sub:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
        try:
            came_online = sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms), 20)
            assert came_online, "child never came online"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            will = sub.wait_for(lambda ms: ms[-1].payload == b"offline")
            assert will, "broker did not publish the last will"
        finally:
            proc.kill()
            proc.wait()
    with Subscriber(mosquitto, f"{PREFIX}/status") as late:
        assert late.wait_for(lambda ms: len(ms) == 1) and late.messages[0].payload == b"offline"
        assert late.messages[0].retain


def test_broker_down_at_start_never_raises_and_logs_once(
    mosquitto: Mosquitto, publisher_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mosquitto.stop()
    caplog.set_level(logging.INFO, logger="edged.publish")
    pub, box = publisher_factory(mosquitto)
    pub.start()
    for i in range(5):
        pub.publish("gate", {"id": f"e{i}", "camera": "gate"})
    time.sleep(1.5)  # several retries at 0.2..1 s backoff
    assert pub.state in ("disconnected", "connecting") and "refused" in (pub.last_error or "").lower()
    lines = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert f"{mosquitto.host}:{mosquitto.port}" in lines[0].getMessage()
    assert box.depth == 5
    with Subscriber(mosquitto.start(), f"{PREFIX}/+/detections") as sub:
        assert sub.wait_for(lambda ms: len(unique_ids(ms)) == 5, 15)
    assert pub.wait_drained(5) and pub.state == "connected" and pub.last_error is None


def test_broker_outage_every_event_exactly_once_in_order(
    persistent_mosquitto: Mosquitto, publisher_factory: Any
) -> None:
    broker = persistent_mosquitto
    sub = Subscriber(broker, f"{PREFIX}/+/detections", persistent=True).start()
    time.sleep(0.3)  # let the broker save the subscription (autosave on every change)
    pub, box = publisher_factory(broker, replay_rate=200.0)
    pub.start()
    builder = EventBuilder("test-dev")
    produced = {"gate": 0, "yard": 0}
    stop = threading.Event()

    def produce() -> None:  # a steady 40 events/s over two cameras, as the pipeline would
        while not stop.is_set():
            for cam in produced:
                pub.publish(cam, builder.build(make_result(cam, produced[cam])))
                produced[cam] += 1
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.0)
        broker.kill()
        time.sleep(FAULT_S)
        depth_during = box.depth
        broker.start()
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join()
    total = sum(produced.values())
    ok = sub.wait_for(lambda ms: len(unique_ids(ms)) >= total, 30 + FAULT_S)
    sub.stop()
    evs = events_of(sub.messages)
    dupes = len(evs) - len(unique_ids(sub.messages))
    print(
        f"\noutage {FAULT_S:g}s: produced={total} delivered={len(unique_ids(sub.messages))} "
        f"duplicates={dupes} outbox_depth_during_outage={depth_during}"
    )
    assert ok, f"delivered {len(unique_ids(sub.messages))} of {total}"
    assert depth_during > 0  # the outage really held events back
    for cam, n in produced.items():
        first_seen: list[int] = []
        seen: set[int] = set()
        for e in events_of(sub.messages, cam):
            if e["seq"] not in seen:
                seen.add(e["seq"])
                first_seen.append(e["seq"])
        assert first_seen == list(range(n)), f"{cam}: lost or out of order"
    assert pub.wait_drained(5) and box.depth == 0


def test_backlog_replay_is_rate_limited(mosquitto: Mosquitto, publisher_factory: Any) -> None:
    rate, n = 40.0, 60
    mosquitto.stop()
    pub, _ = publisher_factory(mosquitto, replay_rate=rate)
    pub.start()
    for i in range(n):
        pub.publish("gate", {"id": f"e{i}", "camera": "gate", "seq": i})
    with Subscriber(mosquitto.start(), f"{PREFIX}/+/detections") as sub:
        assert sub.wait_for(lambda ms: len(unique_ids(ms)) == n, 30)
        arrivals = [m.t for m in sub.messages]
    # A lower bound only: the limiter must have spread the backlog (burst of rate/10, then `rate` per s).
    assert arrivals[-1] - arrivals[0] >= (n - rate / 10 - 1) / rate * 0.9
    assert [e["seq"] for e in events_of(sub.messages)] == list(range(n))


def test_restarted_publisher_replays_only_unacked(
    mosquitto: Mosquitto, publisher_factory: Any, tmp_path: Path
) -> None:
    outbox_dir = tmp_path / "shared-outbox"
    pub, box = publisher_factory(mosquitto, outbox_dir)
    pub.start()
    assert wait_state(pub, "connected")
    for i in range(10):
        pub.publish("gate", {"id": f"acked-{i}", "camera": "gate"})
    assert pub.wait_drained(10), "first batch not acknowledged"
    mosquitto.stop()
    for i in range(15):
        pub.publish("gate", {"id": f"kept-{i}", "camera": "gate"})
    pub.stop(flush_timeout_s=0.5)  # the process ends while the broker is away
    box.close()
    with Outbox(OutboxConfig(dir=outbox_dir, fsync="never")) as reopened:  # closed: one outbox per folder
        assert reopened.depth == 15

    mosquitto.start()
    with Subscriber(mosquitto, f"{PREFIX}/+/detections") as sub:
        pub2, _ = publisher_factory(mosquitto, outbox_dir)
        pub2.start()
        assert sub.wait_for(lambda ms: len(unique_ids(ms)) >= 15, 15)
        assert pub2.wait_drained(5)
        time.sleep(0.3)  # anything wrongly replayed would show up by now
        assert [e["id"] for e in events_of(sub.messages)] == [f"kept-{i}" for i in range(15)]


def test_commands_reach_callback_and_errors_do_not_kill_the_loop(
    mosquitto: Mosquitto, publisher_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pub, _ = publisher_factory(mosquitto, commands=True)
    got: list[tuple[str, str, bytes]] = []

    def on_cmd(camera: str, command: str, payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("bad command")
        got.append((camera, command, payload))

    pub.on_command(on_cmd)
    with Subscriber(mosquitto, f"{PREFIX}/status") as sub:
        pub.start()
        assert sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
        time.sleep(0.3)  # the command subscription follows the CONNACK
        sub.client.publish(f"{PREFIX}/gate/set/enable", b"boom", qos=1)
        sub.client.publish(f"{PREFIX}/gate/set/enable", b"false", qos=1)
        sub.client.publish(f"{PREFIX}/yard/set/snapshot/now", b"", qos=1)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert got == [("gate", "enable", b"false"), ("yard", "snapshot/now", b"")]
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert pub.state == "connected"
