"""What an operator's tools read from a real `edged run`: /metrics through prometheus_client's own
parser (no `_created` series, every label set there from the first scrape, renamed metrics with their
deprecated duplicates), the honest rates in /stats, and the Home Assistant switch and button driving
the daemon over a real mosquitto."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edged.observability.metrics import Metrics
from edged.observability.rates import CameraRates, RatesCollector
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    EdgedProcess,
    NotifySocket,
    camera,
    http_get,
    small_sample,
    stats,
    up,
    wait_until,
    write_config,
)


def scrape(port: int) -> dict[str, Any]:
    """name -> family, as Prometheus would read /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def label_sets(family: Any, sample_name: str | None = None) -> set[tuple[tuple[str, str], ...]]:
    return {
        tuple(sorted(s.labels.items()))
        for s in family.samples
        if sample_name is None or s.name == sample_name
    }


@pytest.fixture
def daemon(tmp_path: Path, mosquitto: Mosquitto) -> Any:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(
        tmp_path,
        {"gate": camera(video, fps=5), "yard": camera(tmp_path / "missing.mp4", fps=5)},
        health_port=health,
        broker_port=mosquitto.port,
        commands=True,
    )
    cfg = json.loads(config.read_text())
    cfg["mqtt"]["hass"] = {"enabled": True, "state_interval_s": 1}
    config.write_text(json.dumps(cfg))
    notify = NotifySocket()
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    yield proc, health, notify
    proc.kill()
    notify.close()


def test_metrics_have_every_label_set_from_the_first_scrape_and_no_created(daemon: Any) -> None:
    proc, health, _ = daemon
    assert wait_until(lambda: up(health), 60), proc.text()
    first = scrape(health)  # before any event, error or drop could have created a series
    assert not [s.name for f in first.values() for s in f.samples if s.name.endswith("_created")]
    cams = {(("camera", "gate"),), (("camera", "yard"),)}
    for name in (
        "edged_source_errors",
        "edged_source_reconnects",
        "edged_events",
        "edged_frames",
        "edged_gpu_h2d_bytes",
        "edged_gpu_d2h_bytes",
    ):
        assert label_sets(first[name], name + "_total") == cams, name
    assert label_sets(first["edged_frames_dropped"]) == {
        (("camera", c), ("reason", r)) for c in ("gate", "yard") for r in ("stale", "error")
    }
    assert label_sets(first["edged_outbox_dropped"]) == {
        (("reason", r),) for r in ("disk_full", "size_cap", "age_cap", "corrupt", "refused")
    }
    assert label_sets(first["edged_detections"]) == {
        (("camera", c), ("stage", "text_det")) for c in ("gate", "yard")
    }
    assert {(("camera", c), ("stage", "text_det")) for c in ("gate", "yard")} <= {
        tuple((k, v) for k, v in ls if k != "le")
        for ls in label_sets(first["edged_stage_latency_seconds"], "edged_stage_latency_seconds_count")
    }
    assert label_sets(first["edged_batch_rows"], "edged_batch_rows_count") == {(("model", "text_det"),)}
    for name in ("edged_camera_source_fps", "edged_camera_processed_fps", "edged_camera_drop_ratio"):
        assert first[name].type == "gauge" and label_sets(first[name]) == cams, name

    # The yard's file is missing: its error counter goes from a present 0 to 1+, which increase() sees.
    def yard_errors() -> float:
        fam = scrape(health)["edged_source_errors"]
        return next(
            s.value for s in fam.samples if s.labels == {"camera": "yard"} and s.name.endswith("_total")
        )

    assert wait_until(lambda: yard_errors() >= 1, 20)
    # Renamed counters: the old name is served too, same samples, help saying what replaces it.
    later = scrape(health)
    for old, new in (
        ("edged_gpu_bytes_h2d", "edged_gpu_h2d_bytes"),
        ("edged_gpu_bytes_d2h", "edged_gpu_d2h_bytes"),
    ):
        assert later[old].documentation.startswith(
            f"DEPRECATED, removed in the next release: use {new}_total"
        )
        assert [(s.labels, s.value) for s in later[old].samples] == [
            (s.labels, s.value) for s in later[new].samples if s.name == new + "_total"
        ]
    assert proc.stop(signal.SIGTERM) == 0


def test_stats_rates_and_home_assistant_controls(daemon: Any, mosquitto: Mosquitto) -> None:
    proc, health, notify = daemon
    ha, prefix = "homeassistant", "edged/test"
    with Subscriber(mosquitto, [f"{ha}/#", f"{prefix}/#"]) as sub:
        assert wait_until(lambda: up(health), 60), proc.text()

        def gate() -> dict[str, Any]:
            return dict(stats(health).get("cameras", {}).get("gate", {}))

        # Both rates need a few frames (the source's needs two hand-offs within 5 s).
        assert wait_until(lambda: min(gate().get("processed_fps", 0), gate().get("source_fps", 0)) > 0, 30)
        g = gate()
        assert 0.0 <= g["drop_ratio"] <= 1.0
        assert g["processed_fps"] <= g["source_fps"]  # one definition, one window
        # Prometheus shows the same numbers as /stats.
        fam = scrape(health)["edged_camera_processed_fps"]
        assert any(s.labels == {"camera": "gate"} and s.value > 0 for s in fam.samples)

        switch_topic = f"{ha}/switch/test/gate_enabled/config"
        button_topic = f"{ha}/button/test/gate_snapshot/config"
        assert sub.wait_for(lambda ms: {m.topic for m in ms} >= {switch_topic, button_topic}, 20)
        switch = json.loads(sub.on(switch_topic)[-1].payload)
        button = json.loads(sub.on(button_topic)[-1].payload)
        state = json.loads(sub.on(f"{ha}/sensor/test/gate_processed_fps/config")[-1].payload)
        assert state["json_attributes_topic"] == f"{prefix}/gate/state"

        # What HA does when the switch is turned off: publish payload_off to command_topic.
        sub.client.publish(switch["command_topic"], switch["payload_off"], qos=1).wait_for_publish(5)
        assert sub.wait_for(
            lambda ms: any(
                m.topic == switch["state_topic"] and m.payload == switch["payload_off"].encode() for m in ms
            ),
            15,
        ), proc.text()
        assert wait_until(lambda: gate().get("state") == "disabled", 10)  # listed, not gone
        sub.client.publish(switch["command_topic"], switch["payload_on"], qos=1).wait_for_publish(5)
        assert wait_until(lambda: gate().get("state") == "streaming", 20), proc.text()

        # And when the button is pressed: payload_press to command_topic -> a JPEG on <camera>/snapshot.
        assert wait_until(lambda: gate().get("frames_processed", 0) > 0, 20)
        sub.client.publish(button["command_topic"], button["payload_press"], qos=1).wait_for_publish(5)
        assert sub.wait_for(lambda ms: any(m.topic == f"{prefix}/gate/snapshot" for m in ms), 15)
        assert sub.on(f"{prefix}/gate/snapshot")[0].payload[:2] == b"\xff\xd8"

        # The HA state carries the three numbers.
        assert sub.wait_for(
            lambda ms: any(
                m.topic == f"{prefix}/gate/state" and json.loads(m.payload).get("processed_fps", 0) > 0
                for m in ms
            ),
            15,
        )
    # systemctl status shows processed/delivered per camera too.
    status = re.compile(
        r"^STATUS=2 camera\(s\) .*\bgate:streaming:(\d+\.\d)/(\d+\.\d)fps\b.*; broker connected$"
    )
    assert wait_until(
        lambda: any((m := status.match(line)) and float(m.group(1)) > 0 for _, line in notify.lines()), 15
    ), notify.lines()
    assert proc.stop(signal.SIGTERM) == 0
    assert "Traceback" not in proc.text()


def test_rates_window() -> None:
    t = [100.0]
    rates = CameraRates(clock=lambda: t[0])
    rates.reset("a")
    t[0] = 102.0
    r = rates.with_rates("a", {"fps": 15.0, "frames_processed": 6, "drops": {"stale": 24, "error": 0}})
    assert (r["source_fps"], r["processed_fps"], r["drop_ratio"]) == (15.0, 3.0, 0.8)
    t[0] = 112.5  # 10.5 s later: the window now starts at the previous reading
    r = rates.with_rates("a", {"fps": 15.0, "frames_processed": 27, "drops": {"stale": 24, "error": 0}})
    assert (r["source_fps"], r["processed_fps"], r["drop_ratio"]) == (2.0, 2.0, 0.0)
    t[0] = 122.5  # motion gating skipped 30 frames: delivered, neither processed nor dropped
    r = rates.with_rates(
        "a", {"frames_processed": 37, "frames_skipped": 30, "drops": {"stale": 34, "error": 0}}
    )
    assert (r["source_fps"], r["processed_fps"], r["drop_ratio"]) == (5.0, 1.0, 0.2)
    t[0] = 123.0  # the camera restarted: counters back to zero start a new window
    r = rates.with_rates("a", {"fps": 0.0, "frames_processed": 0, "drops": {}})
    assert (r["source_fps"], r["processed_fps"], r["drop_ratio"]) == (0.0, 0.0, 0.0)


def test_rates_collector_survives_a_status_that_walks_the_registry() -> None:
    # A camera status that read counters with registry.get_sample_value would walk every collector,
    # the rates collector included; a sample it does not find must not recurse forever.
    metrics = Metrics()

    def cameras() -> dict[str, dict[str, Any]]:
        assert metrics.registry.get_sample_value("edged_no_such_total", {"camera": "a"}) is None
        return {"a": {"source_fps": 4.0, "processed_fps": 1.0, "drop_ratio": 0.75}}

    metrics.registry.register(RatesCollector(cameras, lambda: ["a", "b"]))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert [(s.labels["camera"], s.value) for s in fams["edged_camera_drop_ratio"].samples] == [
        ("a", 0.75),
        ("b", 0.0),
    ]
